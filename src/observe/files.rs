//! The kubeadm layout on disk: PKI files, kubeconfigs, static pod manifests, kubelet config.

use super::{Listed, NodeTarget, ObserveError, RawNode};
use crate::pki::cert::pem_blocks;
use crate::pki::kubeconfig::{Kubeconfig, unb64};
use crate::pki::{
    Fingerprint, ParsedCert, PkiError, SecretPem, parse_certs, public_key_fingerprint,
};
use crate::redact::Redacted;
use crate::snapshot::Role;
use crate::snapshot::{
    CertEntry, Component, FileFact, KeyFact, KubeconfigFact, Kubelet, NodeSnapshot,
};
use crate::transport::cache::{self, Cached};
use crate::transport::{FileType, Stat, Transport, TransportError};
use crate::{input, layout};
use std::collections::{BTreeMap, HashMap};

struct Reader<'a> {
    target: &'a NodeTarget,
    certs: HashMap<Fingerprint, ParsedCert>,
    keys: Vec<Fingerprint>,
    /// The node as its trust trees were read in one go ([`Transport::read_tree`]): reads,
    /// stats and absences under them need no other round trip.
    tree: Cached,
}

impl Reader<'_> {
    fn abs(rel: &str) -> String {
        format!("/{}", rel.trim_start_matches('/'))
    }

    fn transport_error(&self, abs: &str, e: TransportError) -> ObserveError {
        Self::transport_error_of(&self.target.name, abs, e)
    }

    fn transport_error_of(node: &str, abs: &str, e: TransportError) -> ObserveError {
        let node = node.to_string();
        match e {
            TransportError::Path(cause) => ObserveError::Path { node, cause },
            TransportError::Input { reason, help, .. } => ObserveError::Input {
                node,
                path: abs.to_string(),
                reason,
                help,
            },
            TransportError::Io { reason, .. } => ObserveError::Io {
                node,
                path: abs.to_string(),
                source: std::io::Error::other(reason),
            },
            cause => ObserveError::Transport { node, cause },
        }
    }

    /// A node path's metadata (symlinks followed); `None` if nothing is there.
    fn stat(&self, abs: &str) -> Result<Option<Stat>, ObserveError> {
        self.tree
            .stat(abs)
            .map_err(|e| self.transport_error(abs, e))
    }

    /// Whether a node path exists.
    fn exists(&self, abs: &str) -> bool {
        matches!(self.stat(abs), Ok(Some(_)))
    }

    /// The bytes of a node file: a regular file, within the node file cap.
    fn bytes(&self, abs: &str) -> Result<Vec<u8>, ObserveError> {
        if let Some(f) = self.tree.entry(abs) {
            return match &f.bytes {
                Ok(b) => Ok(b.clone()),
                Err(TransportError::Input { reason, help, .. }) if reason != "does not exist" => {
                    Err(ObserveError::Input {
                        node: self.target.name.clone(),
                        path: abs.to_string(),
                        reason: reason.clone(),
                        help: help.clone(),
                    })
                }
                // Missing meanwhile, or another failure: ask again, for the full story.
                Err(_) => self.read_now(abs),
            };
        }
        self.read_now(abs)
    }

    fn read_now(&self, abs: &str) -> Result<Vec<u8>, ObserveError> {
        match self.target.transport.read(abs, input::Kind::NodeFile) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(ObserveError::Input {
                node: self.target.name.clone(),
                path: abs.to_string(),
                reason: match self.target.transport.read_link(abs) {
                    Ok(Some(to)) => {
                        format!("is a symlink to {to}, which does not exist on the node")
                    }
                    _ => "does not exist".into(),
                },
                help: None,
            }),
            Err(e) => Err(self.transport_error(abs, e)),
        }
    }

    fn read(&self, abs: &str) -> Result<String, ObserveError> {
        String::from_utf8(self.bytes(abs)?).map_err(|_| ObserveError::Io {
            node: self.target.name.clone(),
            path: abs.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        })
    }

    /// Permission bits of a node file that let others than its owner read it.
    fn loose_mode(&self, abs: &str) -> Option<u32> {
        let mode = match self.tree.entry(abs).and_then(|f| f.mode) {
            Some(m) => m,
            None => self.stat(abs).ok()??.mode,
        } & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }

    /// `abs` is broken at `line`. The text shown and the reason are redacted: no key
    /// material in the error (a parser's message can quote the file).
    fn corrupt(
        &self,
        abs: &str,
        text: &str,
        line: usize,
        reason: String,
        help: &str,
    ) -> ObserveError {
        let shown = Redacted::of(abs, text);
        ObserveError::Corrupt {
            node: self.target.name.clone(),
            path: abs.to_string(),
            span: shown.line_span(line),
            src: shown.source(format!("{}:{abs}", self.target.name)),
            reason: shown.message(&reason),
            help: help.to_string(),
        }
    }

    fn pki_error(&self, abs: &str, text: &str, e: PkiError) -> ObserveError {
        let line = match &e {
            PkiError::CorruptPem { line, .. } | PkiError::BadCertificate { line, .. } => *line,
            _ => 1,
        };
        let reason = match &e {
            PkiError::CorruptPem { .. } => "corrupt PEM block".to_string(),
            other => other.to_string(),
        };
        self.corrupt(
            abs,
            text,
            line,
            reason,
            "restore this file from a backup (kubeadm keeps none: check /etc/kubernetes/tmp) or re-issue it with `kubeadm certs renew`",
        )
    }

    /// Parse the certificates of a PEM text; remember them for issuer resolution.
    fn entries(&mut self, abs: &str, text: &str) -> Result<Vec<CertEntry>, ObserveError> {
        let parsed = parse_certs(text, abs).map_err(|e| self.pki_error(abs, text, e))?;
        Ok(parsed
            .into_iter()
            .map(|c| {
                let entry = CertEntry {
                    fingerprint: c.facts.fingerprint.clone(),
                    ca: c.facts.is_ca,
                    issued_by: None,
                    leaf: (!c.facts.is_ca).then(|| c.facts.clone()),
                };
                self.certs.insert(c.facts.fingerprint.clone(), c);
                entry
            })
            .collect())
    }

    /// A PEM file: certificates, a key, or a public key.
    fn pem_file(&mut self, abs: &str, text: &str) -> Result<Option<FileFact>, ObserveError> {
        let blocks = pem_blocks(text, abs).map_err(|e| self.pki_error(abs, text, e))?;
        let key_block = blocks.iter().find(|b| b.label.ends_with("PRIVATE KEY"));
        let private_key = match key_block {
            Some(b) => {
                let pem = crate::pki::cert::pem_block(&b.label, &b.der);
                let fp = public_key_fingerprint(&SecretPem::new(pem), abs).map_err(|e| {
                    self.corrupt(
                        abs,
                        text,
                        b.line,
                        e.to_string(),
                        "the key cannot be read; restore it from a backup",
                    )
                })?;
                self.keys.push(fp.clone());
                Some(KeyFact {
                    public_key: fp,
                    loose_mode: self.loose_mode(abs),
                })
            }
            None => None,
        };
        let certs = self.entries(abs, text)?;
        if !certs.is_empty() {
            return Ok(Some(FileFact::Certificates { certs, private_key }));
        }
        if let Some(k) = private_key {
            return Ok(Some(FileFact::PrivateKey(k)));
        }
        let keys = crate::pki::cert::public_key_fps(&blocks);
        if !keys.is_empty() {
            return Ok(Some(FileFact::PublicKeys { keys }));
        }
        Ok(None)
    }

    fn kubeconfig(&mut self, abs: &str, text: &str) -> Result<FileFact, ObserveError> {
        let kc: Kubeconfig = serde_saphyr::from_str(text).map_err(|e| {
            let line = e.location().map_or(1, |l| l.line() as usize);
            self.corrupt(
                abs,
                text,
                line,
                format!("not a kubeconfig: {}", e.without_snippet()),
                "fix the YAML syntax, or restore the file from a backup",
            )
        })?;
        let (cluster, user) = kc.current();
        let server_line = text
            .lines()
            .position(|l| l.trim_start().starts_with("server:"))
            .map_or(1, |i| i + 1);
        let Some(cluster) = cluster else {
            return Err(self.corrupt(
                abs,
                text,
                1,
                "no cluster entry".into(),
                "a kubeconfig needs a cluster with certificate-authority-data",
            ));
        };
        let (ca_text, ca_source) = match (
            &cluster.cluster.certificate_authority_data,
            &cluster.cluster.certificate_authority,
        ) {
            (Some(data), _) => {
                let Some(t) = unb64(data) else {
                    return Err(self.corrupt(
                        abs,
                        text,
                        server_line,
                        "certificate-authority-data is not base64 PEM".into(),
                        "re-encode the CA bundle with `base64 -w0`",
                    ));
                };
                (t, "data".to_string())
            }
            (None, Some(path)) => (self.read(path)?, path.clone()),
            (None, None) => {
                return Err(self.corrupt(
                    abs,
                    text,
                    server_line,
                    format!("cluster {} has no certificate-authority-data", cluster.name),
                    "add certificate-authority-data (base64 of the cluster CA bundle); trustform cannot rotate trust a kubeconfig does not hold",
                ));
            }
        };
        let ca: Vec<Fingerprint> = self
            .entries(abs, &ca_text)?
            .into_iter()
            .map(|e| e.fingerprint)
            .collect();
        if ca.is_empty() {
            return Err(self.corrupt(
                abs,
                text,
                server_line,
                "certificate-authority-data holds no certificate".into(),
                "put the cluster CA bundle (PEM, base64) in certificate-authority-data",
            ));
        }
        if let Some(key) = user.and_then(|u| u.user.client_key_data.as_ref())
            && !key.holds_private_key()
        {
            let line = text
                .lines()
                .position(|l| l.contains("client-key-data"))
                .map_or(1, |i| i + 1);
            return Err(self.corrupt(
                abs,
                text,
                line,
                "client-key-data is not base64 of a PEM private key".into(),
                "re-encode the client key with `base64 -w0 <key file>`, or restore the file from a backup",
            ));
        }
        let (client, client_source) = match user.map(|u| &u.user) {
            Some(u) => match (&u.client_certificate_data, &u.client_certificate) {
                (Some(data), _) => {
                    let t = unb64(data).unwrap_or_default();
                    (
                        self.entries(abs, &t)?.into_iter().next(),
                        Some("data".to_string()),
                    )
                }
                (None, Some(path)) => {
                    let t = self.read(path)?;
                    (
                        self.entries(path, &t)?.into_iter().next(),
                        Some(path.clone()),
                    )
                }
                _ => (None, None),
            },
            None => (None, None),
        };
        Ok(FileFact::Kubeconfig(Box::new(KubeconfigFact {
            cluster: cluster.name.clone(),
            server: cluster.cluster.server.clone(),
            ca,
            ca_source,
            user: user.map(|u| u.name.clone()).unwrap_or_default(),
            client,
            client_source,
        })))
    }

    /// A kubeconfig trustform.yaml lists: missing or not a kubeconfig is an error that
    /// points at its line in trustform.yaml.
    fn listed_kubeconfig(&mut self, listed: &Listed) -> Result<FileFact, ObserveError> {
        let (src, span) = match &listed.origin {
            Some(o) => (Some(o.src.clone()), Some(o.span)),
            None => (None, None),
        };
        let not_one = |reason: String| ObserveError::NotAKubeconfig {
            node: self.target.name.clone(),
            path: listed.path.clone(),
            reason,
            src: src.clone(),
            span,
        };
        let bytes = match self.bytes(&listed.path) {
            Ok(b) => b,
            Err(ObserveError::Input { reason, .. }) if reason == "does not exist" => {
                return Err(ObserveError::MissingKubeconfig {
                    node: self.target.name.clone(),
                    path: listed.path.clone(),
                    src,
                    span,
                });
            }
            Err(ObserveError::Input { reason, .. }) if reason.ends_with("not a regular file") => {
                let what = reason
                    .trim_start_matches("is ")
                    .trim_end_matches(", not a regular file");
                return Err(not_one(format!("it is {what}")));
            }
            Err(e) => return Err(e),
        };
        let Ok(text) = String::from_utf8(bytes) else {
            return Err(not_one("it is not UTF-8 text".into()));
        };
        if !text.contains("clusters:") {
            return Err(not_one("it has no `clusters:`".into()));
        }
        self.kubeconfig(&listed.path, &text).map_err(|e| match e {
            ObserveError::Corrupt {
                reason,
                span: at,
                src: shown,
                ..
            } => {
                // The span points into the redacted text the error carries.
                let line = shown
                    .inner()
                    .get(..at.offset())
                    .map_or(1, |t| t.matches('\n').count() + 1);
                not_one(format!("{reason} (line {line})"))
            }
            other => other,
        })
    }

    fn manifest(&self, abs: &str, text: &str) -> Result<(String, Component), ObserveError> {
        let pod = crate::manifest::parse(text).map_err(|e| {
            let line = e.location().map_or(1, |l| l.line() as usize);
            self.corrupt(
                abs,
                text,
                line,
                format!("not a static pod manifest: {}", e.without_snippet()),
                "fix the YAML; the kubelet cannot start this pod either",
            )
        })?;
        let flags = pod.flags;
        let mut inputs = Vec::new();
        for (flag, value) in &flags {
            if !value.starts_with("/etc/kubernetes/") {
                continue;
            }
            if !self.exists(value) {
                let line = crate::manifest::flag_line(text, flag).unwrap_or(1);
                let shown = Redacted::of(abs, text);
                return Err(ObserveError::MissingInput {
                    node: self.target.name.clone(),
                    manifest: abs.to_string(),
                    flag: flag.clone(),
                    missing: value.clone(),
                    span: shown.line_span(line),
                    src: shown.source(format!("{}:{abs}", self.target.name)),
                });
            }
            inputs.push(value.clone());
        }
        inputs.sort();
        inputs.dedup();
        Ok((
            pod.name,
            Component {
                manifest: abs.to_string(),
                flags,
                inputs,
            },
        ))
    }

    fn kubelet(
        &self,
        text: &str,
        files: &BTreeMap<String, FileFact>,
    ) -> Result<Kubelet, ObserveError> {
        let abs = Self::abs(layout::KUBELET_CONFIG);
        let cfg = crate::kubelet::Config::parse(text).map_err(|e| {
            let line = e.location().map_or(1, |l| l.line() as usize);
            self.corrupt(
                &abs,
                text,
                line,
                format!("not a KubeletConfiguration: {}", e.without_snippet()),
                "fix the YAML; the kubelet cannot start with it either",
            )
        })?;
        let kubeconfig = Self::abs(layout::KUBELET_CONF);
        let mut inputs = vec![abs.clone(), kubeconfig.clone()];
        inputs.extend(cfg.client_ca_file().map(str::to_string));
        if let Some(FileFact::Kubeconfig(k)) = files.get(&kubeconfig)
            && let Some(src) = k.client_source.as_ref().filter(|s| s.starts_with('/'))
        {
            inputs.push(src.clone());
        }
        // Its serving certificate, whichever it serves (a self-signed kubelet.crt not
        // made yet is made at its next start: not an input until then).
        let serving = cfg.serving();
        inputs.extend(
            serving
                .files()
                .into_iter()
                .filter(|p| files.contains_key(*p) || self.exists(p))
                .map(str::to_string),
        );
        inputs.sort();
        inputs.dedup();
        Ok(Kubelet {
            config: abs,
            client_ca_file: cfg.client_ca_file().map(str::to_string),
            rotate_certificates: cfg.rotate_certificates,
            server_tls_bootstrap: cfg.server_tls_bootstrap,
            serving,
            kubeconfig,
            inputs,
        })
    }
}

/// Where people copy admin.conf (`kubeadm init` tells them to): `/root/.kube/config` and
/// `/home/*/.kube/config` that exist on the node, as node paths, sorted.
pub fn user_kubeconfigs(t: &dyn Transport) -> Vec<String> {
    let is_file = |abs: &str| matches!(t.stat(abs), Ok(Some(s)) if s.kind == FileType::File);
    let mut out = Vec::new();
    if is_file("/root/.kube/config") {
        out.push("/root/.kube/config".to_string());
    }
    let mut homes: Vec<String> = t
        .list("/home")
        .unwrap_or_default()
        .into_iter()
        .map(|(u, _)| format!("/home/{u}/.kube/config"))
        .filter(|p| is_file(p))
        .collect();
    homes.sort();
    out.extend(homes);
    out
}

/// An observation error of `node` at `abs` from a transport's.
pub(super) fn transport_error_of(node: &str, abs: &str, e: TransportError) -> ObserveError {
    Reader::transport_error_of(node, abs, e)
}

/// Read one node.
pub(super) fn read_node(target: &NodeTarget) -> Result<RawNode, ObserveError> {
    let kubernetes = Reader::abs(layout::KUBERNETES);
    let not_a_node = || ObserveError::NotANode {
        node: target.name.clone(),
        root: match &target.root {
            Some(r) => r.display().to_string(),
            None => target.transport.describe(),
        },
    };
    // The node's trust trees and the kubelet's configuration, in one round trip.
    let read = Cached::read(target.transport.clone(), &cache::TRUST_DIRS);
    let under = |t: &crate::transport::TreeFile| t.path.starts_with(&format!("{kubernetes}/"));
    let tree = match read {
        Ok(tree) if tree.files().any(under) => tree,
        // Nothing under /etc/kubernetes: no node there, or no access to it.
        read => {
            let err = |e| Reader::transport_error_of(&target.name, &kubernetes, e);
            match target.transport.stat(&kubernetes).map_err(err)? {
                Some(s) if s.kind == FileType::Dir => read.map_err(err)?,
                _ => return Err(not_a_node()),
            }
        }
    };
    // In path order (the tree is sorted).
    let paths: Vec<String> = tree
        .files()
        .filter(|f| f.path != Reader::abs(layout::KUBELET_CONFIG))
        .map(|f| f.path.clone())
        .collect();
    let mut r = Reader {
        target,
        certs: HashMap::new(),
        keys: Vec::new(),
        tree,
    };
    let manifests_dir = format!("{}/", Reader::abs(layout::MANIFESTS));
    let mut files = BTreeMap::new();
    let mut manifests = Vec::new();
    for abs in paths {
        if abs
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(".trustform-"))
        {
            continue; // an interrupted atomic write: not part of the node
        }
        if layout::kubelet_history(&abs) {
            continue; // an earlier certificate the kubelet keeps: the live one is `-current`
        }
        if abs.starts_with(&manifests_dir) {
            if abs.ends_with(".yaml") || abs.ends_with(".yml") {
                manifests.push(abs);
            }
            continue;
        }
        let bytes = r.bytes(&abs)?;
        let pem_named = [".crt", ".key", ".pem", ".pub"]
            .iter()
            .any(|e| abs.ends_with(e));
        let not_pem = |what| ObserveError::NotPem {
            node: target.name.clone(),
            path: abs.clone(),
            what,
        };
        let Ok(text) = String::from_utf8(bytes) else {
            if pem_named {
                return Err(not_pem("binary data"));
            }
            continue;
        };
        if pem_named && !text.contains("-----BEGIN ") {
            return Err(not_pem(if text.trim().is_empty() {
                "it is empty"
            } else {
                "text with no PEM block"
            }));
        }
        let fact = if abs.ends_with(".conf") && text.contains("clusters:") {
            Some(r.kubeconfig(&abs, &text)?)
        } else if text.contains("-----BEGIN ") {
            r.pem_file(&abs, &text)?
        } else {
            None
        };
        if let Some(f) = fact {
            files.insert(abs, f);
        }
    }
    for listed in &target.kubeconfigs {
        let fact = r.listed_kubeconfig(listed)?;
        files.insert(listed.path.clone(), fact);
    }
    let mut components = BTreeMap::new();
    for abs in manifests {
        let text = r.read(&abs)?;
        let (name, c) = r.manifest(&abs, &text)?;
        components.insert(name, c);
    }
    let kubelet = if r.exists(&Reader::abs(layout::KUBELET_CONFIG)) {
        let text = r.read(&Reader::abs(layout::KUBELET_CONFIG))?;
        Some(r.kubelet(&text, &files)?)
    } else {
        None
    };
    let role = if r.exists(&Reader::abs(layout::APISERVER_MANIFEST)) {
        Role::ControlPlane
    } else {
        Role::Worker
    };
    Ok(RawNode {
        snapshot: NodeSnapshot {
            name: target.name.clone(),
            role,
            files,
            components,
            kubelet,
        },
        certs: r.certs,
        keys: r.keys,
    })
}
