//! Snapshot × desired → what must change.
//!
//! A *consumer* is one place that holds trust or a leaf for an authority (a bundle file,
//! a key file, a kubeconfig's CA data or client certificate, a component flag, an API
//! object). Each has a current [`State`] (from the snapshot) and a desired one for any
//! authority [`Target`]. The planner walks the procedures and moves consumers from one
//! to the other; this module only says what is and what should be.

use crate::config::{Authority, ConfigError, Loaded};
use crate::pki::{Fingerprint, parse_certs};
use crate::snapshot::Role;
use crate::snapshot::{FileFact, Snapshot};
use std::collections::BTreeMap;

/// Trustform's single-cert copy of the issuer, for the controller-manager flags that
/// cannot take a bundle (kubeadm issue 1350).
pub const SIGNER_COPY: &str = "/etc/kubernetes/pki/ca-signer.crt";
/// The controller-manager flags that must point at a single certificate.
pub const KCM_SINGLE_CERT_FLAGS: [&str; 2] = ["client-ca-file", "cluster-signing-cert-file"];
/// The controller-manager flag it publishes kube-root-ca.crt from.
pub const KCM_ROOT_CA_FLAG: &str = "root-ca-file";

/// Issuer and trust set of one authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The CA that signs.
    pub issuer: Fingerprint,
    /// The CAs verifiers accept, in bundle order.
    pub trust: Vec<Fingerprint>,
}

impl Target {
    /// Whether a single-cert copy of the issuer is needed (the bundle is not just it).
    pub fn needs_signer_copy(&self) -> bool {
        self.trust != [self.issuer.clone()]
    }
}

/// A CA known to the plan: fingerprint, public key, the name people use for it.
#[derive(Clone, Debug)]
pub struct CaInfo {
    /// Fingerprint.
    pub fingerprint: Fingerprint,
    /// Public key fingerprint.
    pub public_key: Fingerprint,
    /// Name from `cas`, or `CN=…` when the config does not name it.
    pub name: String,
    /// Whether trustform generated it (its key lives in `.trustform/keys`).
    pub generated: bool,
}

/// Everything desired, resolved to fingerprints.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Authority → (current, desired), for authorities the config lists.
    pub authorities: BTreeMap<Authority, (Target, Target)>,
    /// Every CA involved, by fingerprint.
    pub cas: BTreeMap<Fingerprint, CaInfo>,
    /// What the operator should know: `cas` entries that match nothing.
    pub notes: Vec<String>,
}

impl Desired {
    /// `kubernetes-2026 (sha256:9f3a…)`.
    pub fn label(&self, fp: &Fingerprint) -> String {
        match self.cas.get(fp) {
            Some(c) => format!("{} ({})", c.name, fp.short()),
            None => format!("CA {}", fp.short()),
        }
    }
}

/// Resolve the config's names against the snapshot: current and desired targets.
pub fn resolve(loaded: &Loaded, snap: &Snapshot) -> Result<Desired, ConfigError> {
    let c = &loaded.config;
    let mut cas: BTreeMap<Fingerprint, CaInfo> = snap
        .cas
        .iter()
        .map(|(fp, f)| {
            (
                fp.clone(),
                CaInfo {
                    fingerprint: fp.clone(),
                    public_key: f.cert.public_key.clone(),
                    name: format!("CN={}", f.cert.common_name),
                    generated: false,
                },
            )
        })
        .collect();
    let mut by_name: BTreeMap<&str, Fingerprint> = BTreeMap::new();
    let mut notes = vec![];
    for (name, spec) in &c.cas {
        let fp = if let Some(cert) = &spec.cert {
            let path = loaded.resolve_path(&cert.value);
            let text = crate::input::read_text(&path, crate::input::Kind::Config).map_err(|e| {
                loaded.invalid(
                    cert.referenced,
                    format!("CA {name}: cannot read {}: {e}", path.display()),
                    "missing file",
                    format!(
                        "restore {} or run `trustform rotate` again to generate the CA",
                        cert.value
                    ),
                )
            })?;
            let parsed = parse_certs(&text, &cert.value).map_err(|e| {
                loaded.invalid(cert.referenced, format!("CA {name}: {e}"), "corrupt certificate", "the file must hold one PEM CA certificate; regenerate it with `trustform rotate`".into())
            })?;
            let Some(first) = parsed.into_iter().next().filter(|p| p.facts.is_ca) else {
                return Err(loaded.invalid(
                    cert.referenced,
                    format!("CA {name}: {} holds no CA certificate", cert.value),
                    "not a CA",
                    "point `cert` at a CA certificate (basicConstraints CA:TRUE)".into(),
                ));
            };
            if let Some(fp) = &spec.fingerprint
                && Fingerprint::parse(&fp.value).as_ref() != Some(&first.facts.fingerprint)
            {
                return Err(loaded.invalid(
                    fp.referenced,
                    format!("CA {name}: the fingerprint does not match {}", cert.value),
                    "mismatch",
                    format!(
                        "the certificate's fingerprint is {}",
                        first.facts.fingerprint
                    ),
                ));
            }
            let fp = first.facts.fingerprint.clone();
            cas.insert(
                fp.clone(),
                CaInfo {
                    fingerprint: fp.clone(),
                    public_key: first.facts.public_key.clone(),
                    name: name.clone(),
                    generated: spec.key.is_some(),
                },
            );
            fp
        } else {
            let spanned = spec.fingerprint.as_ref().expect("checked by config::load");
            let fp = Fingerprint::parse(&spanned.value).expect("checked by config::load");
            let used = c
                .authorities
                .values()
                .any(|a| a.issuer.value == *name || a.trust.iter().any(|t| t.value == *name));
            let Some(info) = cas.get_mut(&fp) else {
                if !used {
                    // A retired CA: gone from the cluster, named by no authority.
                    notes.push(format!(
                        "{}:{}: CA {name} ({}) is on no node and no authority names it: it is ignored (remove it from `cas` once its rotation is done)",
                        loaded.path.display(),
                        spanned.referenced.line(),
                        fp.short()
                    ));
                    continue;
                }
                return Err(loaded.invalid(
                    spanned.referenced,
                    format!("CA {name} ({}) is not in the cluster", fp.short()),
                    "no such CA on any node",
                    "run `trustform snapshot` to list the cluster's CAs, or `trustform init` to start from the cluster as it is".into(),
                ));
            };
            info.name = name.clone();
            fp
        };
        by_name.insert(name, fp);
    }
    let mut authorities = BTreeMap::new();
    for (auth, spec) in &c.authorities {
        let current = current_target(snap, *auth).ok_or_else(|| {
            loaded.invalid_at_text(
                &format!("{auth}:"),
                format!("authority {auth}: no control plane holds {} with a matching {}", auth.ca_file(), auth.key_file()),
                "not found in the cluster",
                "check the inventory roots; trustform reads the CA bundle and key of the first control plane".into(),
            )
        })?;
        let desired = Target {
            issuer: by_name[spec.issuer.value.as_str()].clone(),
            trust: spec
                .trust
                .iter()
                .map(|t| by_name[t.value.as_str()].clone())
                .collect(),
        };
        authorities.insert(*auth, (current, desired));
    }
    Ok(Desired {
        authorities,
        cas,
        notes,
    })
}

/// The authority's state on the first control plane: trust = members of its CA file,
/// issuer = the CA whose public key matches its key file.
pub fn current_target(snap: &Snapshot, auth: Authority) -> Option<Target> {
    let cp = snap.nodes.iter().find(|n| n.role == Role::ControlPlane)?;
    let trust: Vec<Fingerprint> = cp
        .certs(auth.ca_file())?
        .iter()
        .map(|c| c.fingerprint.clone())
        .collect();
    let key = cp.key(auth.key_file())?;
    let issuer = trust
        .iter()
        .find(|fp| snap.cas.get(*fp).is_some_and(|c| &c.cert.public_key == key))?
        .clone();
    Some(Target { issuer, trust })
}

/// What a consumer holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// A set of CAs (bundle, CA data, API object), in order.
    Members(Vec<Fingerprint>),
    /// The key of this CA.
    KeyOf(Fingerprint),
    /// A key matching no known CA (its public-key fingerprint).
    UnknownKey(Fingerprint),
    /// A leaf issued by this CA.
    IssuedBy(Fingerprint),
    /// A leaf whose issuer is not known.
    UnknownIssuer,
    /// A file path (a flag's value).
    Path(String),
    /// Not there.
    Absent,
}

/// Which part of a node or cluster a consumer is.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Field {
    /// A CA bundle file.
    Bundle,
    /// The CA's private key file.
    SigningKey,
    /// The single-cert copy of the issuer (kubernetes only).
    SignerCopy,
    /// A flag of a static pod (component, flag).
    Flag(String, String),
    /// A kubeconfig's certificate-authority-data.
    KubeconfigCa,
    /// A kubeconfig's embedded client certificate.
    KubeconfigClient,
    /// A leaf certificate file.
    Leaf,
    /// `kube-root-ca.crt` in every namespace.
    KubeRootCa,
    /// `cluster-info` in kube-public.
    ClusterInfo,
    /// What running pods trust (their kube-root-ca.crt at start).
    PodTrust,
    /// `extension-apiserver-authentication` and the aggregated servers reading it.
    ExtensionAuth,
    /// The rotating part of a webhook's, APIService's or CRD conversion webhook's
    /// caBundle (path: `Kind/name#/json/pointer`); its other CAs stay.
    CaBundle,
}

/// One place that holds trust.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Consumer {
    /// The authority whose trust it holds.
    pub authority: Authority,
    /// Node name, or `None` for a cluster object.
    pub node: Option<String>,
    /// File path on the node, or the object's name.
    pub path: String,
    /// What part.
    pub field: Field,
}

impl Consumer {
    /// What it should hold under `t`.
    pub fn desired(&self, t: &Target) -> State {
        match &self.field {
            Field::Bundle
            | Field::KubeconfigCa
            | Field::KubeRootCa
            | Field::PodTrust
            | Field::CaBundle
            | Field::ExtensionAuth => State::Members(t.trust.clone()),
            Field::SigningKey => State::KeyOf(t.issuer.clone()),
            Field::SignerCopy => {
                if t.needs_signer_copy() {
                    State::Members(vec![t.issuer.clone()])
                } else {
                    State::Absent
                }
            }
            // --root-ca-file rests on the bundle; only step 11.1's helper moves it.
            Field::Flag(_, f) if f == KCM_ROOT_CA_FLAG => {
                State::Path(self.authority.ca_file().to_string())
            }
            Field::Flag(_, _) => State::Path(if t.needs_signer_copy() {
                SIGNER_COPY.to_string()
            } else {
                self.authority.ca_file().to_string()
            }),
            Field::KubeconfigClient | Field::Leaf => State::IssuedBy(t.issuer.clone()),
            // kubeadm join rejects a multi-PEM cluster-info (kubeadm#1399): keep it one
            // certificate, the one that signs the API server's serving certificate.
            Field::ClusterInfo => State::Members(vec![t.issuer.clone()]),
        }
    }

    /// A short human name: `cp-1:/etc/kubernetes/admin.conf (CA data)`.
    pub fn describe(&self) -> String {
        let what = match &self.field {
            Field::Bundle => "CA bundle".to_string(),
            Field::SigningKey => "CA key".to_string(),
            Field::SignerCopy => "single-cert copy of the issuer".to_string(),
            Field::Flag(c, f) => format!("{c} --{f}"),
            Field::KubeconfigCa => "certificate-authority-data".to_string(),
            Field::KubeconfigClient => "client certificate".to_string(),
            Field::Leaf => "certificate".to_string(),
            Field::KubeRootCa => "ConfigMap kube-root-ca.crt, every namespace".to_string(),
            Field::ClusterInfo => "ConfigMap kube-public/cluster-info".to_string(),
            Field::PodTrust => "running pods' in-memory trust".to_string(),
            Field::ExtensionAuth => {
                "ConfigMap kube-system/extension-apiserver-authentication".to_string()
            }
            Field::CaBundle => {
                let (object, pointer) = self.path.split_once('#').unwrap_or((&self.path, ""));
                return format!("{object} caBundle ({pointer})");
            }
        };
        match &self.node {
            Some(n) if self.node.is_some() && !self.path.is_empty() => {
                format!("{n}:{} ({what})", self.path)
            }
            _ => what,
        }
    }
}

/// Every consumer of `auth` in the snapshot, with its current state.
/// `lineage` is every CA of the authority (current and desired trust).
pub fn consumers(
    snap: &Snapshot,
    auth: Authority,
    current: &Target,
    lineage: &[Fingerprint],
) -> Vec<(Consumer, State)> {
    let in_lineage = |fp: &Fingerprint| lineage.contains(fp);
    let key_state = |pk: &Fingerprint| {
        lineage
            .iter()
            .find(|fp| snap.cas.get(*fp).is_some_and(|c| &c.cert.public_key == pk))
            .map_or_else(
                || State::UnknownKey(pk.clone()),
                |fp| State::KeyOf(fp.clone()),
            )
    };
    let mut out = Vec::new();
    for node in &snap.nodes {
        let at = |path: &str, field: Field| Consumer {
            authority: auth,
            node: Some(node.name.clone()),
            path: path.to_string(),
            field,
        };
        let kubelet_ca = node.kubelet.as_ref().and_then(|k| k.client_ca_file.clone());
        for (path, fact) in &node.files {
            match fact {
                FileFact::Certificates { certs, .. } => {
                    if certs.iter().all(|c| c.ca) {
                        let ours = certs.iter().any(|c| in_lineage(&c.fingerprint));
                        let known = path == auth.ca_file()
                            || path == SIGNER_COPY
                            || kubelet_ca.as_deref() == Some(path);
                        if ours && known {
                            let field = if path == SIGNER_COPY {
                                Field::SignerCopy
                            } else {
                                Field::Bundle
                            };
                            out.push((
                                at(path, field),
                                State::Members(
                                    certs.iter().map(|c| c.fingerprint.clone()).collect(),
                                ),
                            ));
                        }
                    } else if let Some(leaf) = certs.iter().find(|c| !c.ca)
                        && leaf.issued_by.as_ref().is_some_and(in_lineage)
                    {
                        out.push((
                            at(path, Field::Leaf),
                            State::IssuedBy(leaf.issued_by.clone().expect("checked")),
                        ));
                    }
                }
                FileFact::PrivateKey(k)
                    if path == auth.key_file() && node.role == Role::ControlPlane =>
                {
                    out.push((at(path, Field::SigningKey), key_state(&k.public_key)));
                }
                FileFact::Kubeconfig(k) => {
                    if k.ca.iter().any(in_lineage) {
                        out.push((at(path, Field::KubeconfigCa), State::Members(k.ca.clone())));
                    }
                    if let Some(c) = &k.client
                        && k.client_source.as_deref() == Some("data")
                        && c.issued_by.as_ref().is_some_and(in_lineage)
                    {
                        out.push((
                            at(path, Field::KubeconfigClient),
                            State::IssuedBy(c.issued_by.clone().expect("checked")),
                        ));
                    }
                }
                _ => {}
            }
        }
        if node.role == Role::ControlPlane && auth == Authority::Kubernetes {
            if !node.files.contains_key(SIGNER_COPY) {
                out.push((at(SIGNER_COPY, Field::SignerCopy), State::Absent));
            }
            if let Some(kcm) = node.components.get("kube-controller-manager") {
                for flag in KCM_SINGLE_CERT_FLAGS.into_iter().chain([KCM_ROOT_CA_FLAG]) {
                    if let Some(v) = kcm.flags.get(flag) {
                        out.push((
                            at(
                                &kcm.manifest,
                                Field::Flag("kube-controller-manager".into(), flag.into()),
                            ),
                            State::Path(v.clone()),
                        ));
                    }
                }
            }
        }
    }
    let cluster = |field: Field| Consumer {
        authority: auth,
        node: None,
        path: String::new(),
        field,
    };
    let trust = State::Members(current.trust.clone());
    match (&snap.kube, auth) {
        // Read from the API: what every namespace, pod and caBundle holds now.
        (Some(k), Authority::Kubernetes) => {
            let published: Vec<&Vec<Fingerprint>> = k
                .kube_root_ca
                .iter()
                .chain(&k.token_secrets)
                .map(|p| &p.cas)
                .collect();
            if !published.is_empty() || !k.kube_root_ca_missing.is_empty() {
                let everywhere = if k.kube_root_ca_missing.is_empty() {
                    common(published)
                } else {
                    vec![]
                };
                out.push((cluster(Field::KubeRootCa), State::Members(everywhere)));
            }
            if !k.pods.is_empty() {
                let trusted = common(
                    k.pods
                        .iter()
                        .map(|g| g.trust.as_ref().unwrap_or(&EMPTY))
                        .collect(),
                );
                out.push((cluster(Field::PodTrust), State::Members(trusted)));
            }
            if let Some(cas) = &k.cluster_info {
                out.push((cluster(Field::ClusterInfo), State::Members(cas.clone())));
            }
            for b in &k.ca_bundles {
                let ours: Vec<Fingerprint> =
                    b.cas.iter().filter(|f| in_lineage(f)).cloned().collect();
                if !ours.is_empty() {
                    out.push((
                        Consumer {
                            path: format!("{}#{}", b.object, b.pointer),
                            ..cluster(Field::CaBundle)
                        },
                        State::Members(ours),
                    ));
                }
            }
        }
        (Some(k), Authority::FrontProxy) => {
            if let Some(cas) = &k.extension_auth {
                out.push((cluster(Field::ExtensionAuth), State::Members(cas.clone())));
            }
        }
        // No API access: the API objects are assumed to follow the files.
        (None, Authority::Kubernetes) => {
            out.push((cluster(Field::KubeRootCa), trust.clone()));
            out.push((cluster(Field::PodTrust), trust));
            out.push((
                cluster(Field::ClusterInfo),
                State::Members(vec![current.issuer.clone()]),
            ));
        }
        (None, Authority::FrontProxy) => out.push((cluster(Field::ExtensionAuth), trust)),
        (_, Authority::Etcd) => {}
    }
    out
}

static EMPTY: Vec<Fingerprint> = Vec::new();

/// The CAs every list holds, in the first list's order.
fn common(lists: Vec<&Vec<Fingerprint>>) -> Vec<Fingerprint> {
    let Some(first) = lists.first() else {
        return vec![];
    };
    first
        .iter()
        .filter(|f| lists.iter().all(|l| l.contains(f)))
        .cloned()
        .collect()
}

/// A change of one consumer, final state against current.
#[derive(Clone, Debug)]
pub struct Change {
    /// Where.
    pub consumer: Consumer,
    /// Now.
    pub before: State,
    /// Wanted.
    pub after: State,
}

/// Every consumer whose current state differs from the desired one.
pub fn changes(snap: &Snapshot, desired: &Desired) -> Vec<Change> {
    let mut out = Vec::new();
    for (auth, (current, want)) in &desired.authorities {
        let lineage = lineage(current, want);
        for (consumer, before) in consumers(snap, *auth, current, &lineage) {
            let after = consumer.desired(want);
            if after != before {
                out.push(Change {
                    consumer,
                    before,
                    after,
                });
            }
        }
    }
    out
}

/// Every CA of an authority in a rotation, current first.
pub fn lineage(current: &Target, want: &Target) -> Vec<Fingerprint> {
    let mut v: Vec<Fingerprint> = Vec::new();
    for fp in current
        .trust
        .iter()
        .chain([&current.issuer])
        .chain(want.trust.iter())
        .chain([&want.issuer])
    {
        if !v.contains(fp) {
            v.push(fp.clone());
        }
    }
    v
}
