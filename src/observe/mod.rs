//! Readers that build a [`Snapshot`]. Observation never writes.

mod files;
pub mod kube;
pub mod tokens;

pub use files::user_kubeconfigs;

use crate::pki::{Fingerprint, ParsedCert};
use crate::snapshot::{CaFact, CertEntry, FileFact, NodeSnapshot, Snapshot, natural_key};
use miette::{Diagnostic, NamedSource, SourceSpan};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use thiserror::Error;

/// A node to read: its name and how it is reached.
#[derive(Clone, Debug)]
pub struct NodeTarget {
    /// Node name.
    pub name: String,
    /// How trustform reaches it.
    pub transport: std::sync::Arc<dyn crate::transport::Transport>,
    /// Its `/` on this machine, when it is reached through a local directory.
    pub root: Option<PathBuf>,
    /// Kubeconfig files outside `/etc/kubernetes` to read too (trustform.yaml's
    /// `kubeconfigs`: copies of admin.conf and the like).
    pub kubeconfigs: Vec<Listed>,
}

impl NodeTarget {
    /// A node whose `/` is the local directory `root`.
    pub fn local(name: &str, root: &std::path::Path) -> Self {
        Self {
            name: name.to_string(),
            transport: crate::transport::local(name, root),
            root: Some(root.to_path_buf()),
            kubeconfigs: vec![],
        }
    }
}

/// The nodes to observe, in inventory order.
pub fn targets(
    loaded: &crate::config::Loaded,
) -> Result<Vec<NodeTarget>, crate::config::ConfigError> {
    let transports = loaded.transports()?;
    Ok(loaded
        .config
        .inventory
        .nodes
        .iter()
        .zip(transports)
        .map(|(n, transport)| NodeTarget {
            name: n.name.clone(),
            transport,
            root: n
                .access
                .local
                .as_ref()
                .map(|l| loaded.resolve_path(&l.root)),
            kubeconfigs: n
                .kubeconfigs
                .iter()
                .map(|k| Listed {
                    path: k.value.clone(),
                    origin: Some(loaded.origin(k.referenced)),
                })
                .collect(),
        })
        .collect())
}

/// A kubeconfig file trustform.yaml lists under a node's `kubeconfigs`.
#[derive(Clone, Debug)]
pub struct Listed {
    /// Absolute node path.
    pub path: String,
    /// Where trustform.yaml lists it, for errors; `None` when no file lists it (yet).
    pub origin: Option<Origin>,
}

pub use crate::config::Origin;

/// Errors of observation. Each names the node, the file and, where there is one, the line.
#[derive(Debug, Error, Diagnostic)]
pub enum ObserveError {
    /// The node's root does not exist or is not a kubeadm node.
    #[error("node {node}: {root} is not a kubeadm node root (no etc/kubernetes)")]
    #[diagnostic(
        code(trustform::observe::not_a_node),
        help(
            "point `access.local.root` (or --root) at the directory that holds the node's etc/kubernetes"
        )
    )]
    NotANode {
        /// Node name.
        node: String,
        /// The root tried.
        root: String,
    },
    /// A file could not be read.
    #[error("node {node}: cannot read {path}")]
    #[diagnostic(
        code(trustform::observe::io),
        help(
            "check the path and its permissions (trustform reads keys: run as root on real nodes)"
        )
    )]
    Io {
        /// Node name.
        node: String,
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A node path that leaves the node (a symlink loop, a bad flag value).
    #[error("node {node}: {cause}")]
    #[diagnostic(code(trustform::observe::path))]
    Path {
        /// Node name.
        node: String,
        /// What is wrong.
        cause: crate::transport::PathError,
    },
    /// A file that is not a regular file, or larger than trustform reads.
    #[error("node {node}: {path} {reason}")]
    #[diagnostic(code(trustform::observe::unreadable))]
    Input {
        /// Node name.
        node: String,
        /// The node path.
        path: String,
        /// What is wrong.
        reason: String,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },
    /// The node could not be reached.
    #[error("node {node}: {cause}")]
    #[diagnostic(code(trustform::observe::transport))]
    Transport {
        /// Node name.
        node: String,
        /// What the transport said.
        #[diagnostic_source]
        cause: crate::transport::TransportError,
    },
    /// A certificate or key file that holds no PEM at all.
    #[error("node {node}: {path} is not a PEM file ({what})")]
    #[diagnostic(
        code(trustform::observe::not_pem),
        help(
            "a file named .crt, .key, .pem or .pub must hold PEM blocks (BEGIN and END lines around base64): restore it from a backup or re-issue it with `kubeadm certs renew`; the component that reads it cannot start either"
        )
    )]
    NotPem {
        /// Node name.
        node: String,
        /// File.
        path: String,
        /// What it holds instead.
        what: &'static str,
    },
    /// A file's content is broken at a known place.
    #[error("node {node}: {path}: {reason}")]
    #[diagnostic(code(trustform::observe::corrupt_file))]
    Corrupt {
        /// Node name.
        node: String,
        /// File.
        path: String,
        /// What is wrong.
        reason: String,
        /// The file's text.
        #[source_code]
        src: NamedSource<String>,
        /// Where.
        #[label("{reason}")]
        span: SourceSpan,
        /// How to fix it.
        #[help]
        help: String,
    },
    /// A component flag names a file that does not exist.
    #[error("node {node}: {manifest} points --{flag} at {missing}, which does not exist")]
    #[diagnostic(
        code(trustform::observe::missing_file),
        help(
            "restore {missing} from a backup, or fix the flag; trustform will not plan against a node whose components cannot start"
        )
    )]
    MissingInput {
        /// Node name.
        node: String,
        /// The manifest.
        manifest: String,
        /// The flag.
        flag: String,
        /// The missing file.
        missing: String,
        /// Manifest text.
        #[source_code]
        src: NamedSource<String>,
        /// The flag's line.
        #[label("this file is missing")]
        span: SourceSpan,
    },
    /// A kubeconfig trustform.yaml lists is not on the node.
    #[error("node {node}: {path} does not exist (listed under `kubeconfigs` in trustform.yaml)")]
    #[diagnostic(
        code(trustform::observe::missing_kubeconfig),
        help(
            "restore the file on {node} (e.g. `cp /etc/kubernetes/admin.conf {path}`), or remove it from the node's `kubeconfigs`"
        )
    )]
    MissingKubeconfig {
        /// Node name.
        node: String,
        /// The listed path.
        path: String,
        /// trustform.yaml.
        #[source_code]
        src: Option<NamedSource<String>>,
        /// Where it is listed.
        #[label("no such file on {node}")]
        span: Option<SourceSpan>,
    },
    /// A kubeconfig trustform.yaml lists is not a kubeconfig trustform can rotate.
    #[error("node {node}: {path} is not a kubeconfig: {reason}")]
    #[diagnostic(
        code(trustform::observe::not_a_kubeconfig),
        help(
            "list only kubeconfig files with certificate-authority-data (`kubectl config view --kubeconfig {path}` reads them), or remove it from the node's `kubeconfigs`"
        )
    )]
    NotAKubeconfig {
        /// Node name.
        node: String,
        /// The listed path.
        path: String,
        /// What is wrong with it.
        reason: String,
        /// trustform.yaml.
        #[source_code]
        src: Option<NamedSource<String>>,
        /// Where it is listed.
        #[label("not a kubeconfig")]
        span: Option<SourceSpan>,
    },
    /// The Kubernetes API could not be read.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Kube(#[from] crate::exec::kube::KubeError),
}

/// The span of 1-based `line` in `text`.
pub(crate) fn line_span(text: &str, line: usize) -> SourceSpan {
    crate::redact::line_span(text, line)
}

/// A node read from disk, before issuers are resolved across the cluster.
pub(crate) struct RawNode {
    pub snapshot: NodeSnapshot,
    /// Every certificate read, by fingerprint.
    pub certs: HashMap<Fingerprint, ParsedCert>,
    /// Fingerprints of the public halves of every private key read.
    pub keys: Vec<Fingerprint>,
}

/// Read every node (in parallel) and, when `kube` is given, the API (at the same
/// time) into one snapshot.
pub fn observe_with(
    targets: &[NodeTarget],
    kube: Option<&crate::exec::kube::Access>,
) -> Result<Snapshot, ObserveError> {
    std::thread::scope(|s| {
        let api = kube.map(|a| s.spawn(move || kube::read_blocking(a)));
        let files = observe(targets);
        let api = api
            .map(|h| h.join().expect("API observer panicked"))
            .transpose();
        let mut snap = files?;
        snap.kube = api?;
        Ok(snap)
    })
}

/// Read every node (in parallel) into one snapshot.
pub fn observe(targets: &[NodeTarget]) -> Result<Snapshot, ObserveError> {
    // Reading a node waits on its transport more than on the CPU (over SSH, mostly): up
    // to 16 nodes at once.
    let raws: Vec<RawNode> = crate::parallel::map(targets, 16, files::read_node)
        .into_iter()
        .collect::<Result<_, _>>()?;
    Ok(assemble(raws))
}

/// Resolve issuers across the whole cluster and collect the CAs.
fn assemble(raws: Vec<RawNode>) -> Snapshot {
    let mut all: HashMap<Fingerprint, &ParsedCert> = HashMap::new();
    for r in &raws {
        for (fp, c) in &r.certs {
            all.entry(fp.clone()).or_insert(c);
        }
    }
    let mut by_subject: HashMap<&str, Vec<&ParsedCert>> = HashMap::new();
    for c in all.values().filter(|c| c.facts.is_ca) {
        by_subject
            .entry(c.facts.subject.as_str())
            .or_default()
            .push(c);
    }
    let mut issuer_of: HashMap<Fingerprint, Option<Fingerprint>> = HashMap::new();
    for (fp, c) in &all {
        let found = by_subject
            .get(c.facts.issuer.as_str())
            .and_then(|cands| cands.iter().find(|ca| c.is_signed_by(ca)))
            .map(|ca| ca.facts.fingerprint.clone());
        issuer_of.insert(fp.clone(), found);
    }
    let keys: std::collections::HashSet<&Fingerprint> =
        raws.iter().flat_map(|r| r.keys.iter()).collect();
    let mut cas: BTreeMap<Fingerprint, CaFact> = BTreeMap::new();
    let mut nodes = Vec::new();
    for raw in &raws {
        let mut node = raw.snapshot.clone();
        let resolve =
            |e: &mut CertEntry| e.issued_by = issuer_of.get(&e.fingerprint).cloned().flatten();
        for (path, fact) in node.files.iter_mut() {
            let entries: Vec<&mut CertEntry> = match fact {
                FileFact::Certificates { certs, .. } => certs.iter_mut().collect(),
                FileFact::Kubeconfig(k) => k.client.iter_mut().collect(),
                _ => vec![],
            };
            for e in entries {
                resolve(e);
                if e.ca {
                    let c = all[&e.fingerprint];
                    let entry = cas.entry(e.fingerprint.clone()).or_insert_with(|| CaFact {
                        cert: c.facts.clone(),
                        key_present: keys.contains(&c.facts.public_key),
                        found_in: vec![],
                    });
                    entry.found_in.push(format!("{}:{}", node.name, path));
                }
            }
            if let FileFact::Kubeconfig(k) = fact {
                for fp in &k.ca {
                    let c = all[fp];
                    let entry = cas.entry(fp.clone()).or_insert_with(|| CaFact {
                        cert: c.facts.clone(),
                        key_present: keys.contains(&c.facts.public_key),
                        found_in: vec![],
                    });
                    entry.found_in.push(format!("{}:{}", node.name, path));
                }
            }
        }
        nodes.push(node);
    }
    nodes.sort_by_key(|n| (n.role, natural_key(&n.name)));
    Snapshot::new(cas, nodes)
}
