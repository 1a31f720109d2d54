//! Snapshot × desired → what must change.
//!
//! A *consumer* is one place that holds trust or a leaf for an authority (a bundle file,
//! a key file, a kubeconfig's CA data or client certificate, a component flag, an API
//! object). Each has a current [`State`] (from the snapshot) and a desired one for any
//! authority [`Target`]. The planner walks the procedures and moves consumers from one
//! to the other; this module only says what is and what should be.

use crate::config::{Authority, ConfigError, Loaded};
use crate::pki::Fingerprint;
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
    /// When the leaves of each listed authority are renewed.
    pub renewals: BTreeMap<Authority, crate::config::Renewal>,
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
/// `files`: the certificates of the `cas` entries that name a file, read beforehand
/// ([`Loaded::ca_files`]: diff does no I/O).
pub fn resolve(
    loaded: &Loaded,
    files: &BTreeMap<String, crate::config::Anchor>,
    snap: &Snapshot,
) -> Result<Desired, ConfigError> {
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
    // Service-account keys: in sa.pub, or signing in sa.key, on a control plane.
    let sa = Authority::ServiceAccount;
    for n in snap.nodes.iter().filter(|n| n.role == Role::ControlPlane) {
        let keys = n.public_keys(sa.ca_file()).unwrap_or_default();
        for pk in keys.iter().chain(n.key(sa.key_file())) {
            cas.entry(pk.clone()).or_insert_with(|| CaInfo {
                fingerprint: pk.clone(),
                public_key: pk.clone(),
                name: "service-account key".into(),
                generated: false,
            });
        }
    }
    let mut by_name: BTreeMap<&str, Fingerprint> = BTreeMap::new();
    let mut notes = vec![];
    for (name, spec) in &c.cas {
        let fp = if let Some(first) = files.get(name) {
            let fp = first.fingerprint.clone();
            cas.insert(
                fp.clone(),
                CaInfo {
                    fingerprint: fp.clone(),
                    public_key: first.public_key.clone(),
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
        if auth.keys_only() && current != desired && snap.kube.is_none() {
            notes.push(format!(
                "{}: authority {auth}: no API access (`inventory.kube`), so legacy token secrets (type kubernetes.io/service-account-token) are not seen: any the old key signed stop working when it leaves sa.pub; set `inventory.kube`, or list them (`kubectl get secrets -A --field-selector type=kubernetes.io/service-account-token`) and empty their `data.token` after the key switch",
                loaded.path.display()
            ));
        }
        authorities.insert(*auth, (current, desired));
    }
    Ok(Desired {
        authorities,
        cas,
        notes,
        renewals: c
            .authorities
            .iter()
            .map(|(a, spec)| (*a, spec.renewal()))
            .collect(),
    })
}

/// The authority's state on the first control plane: trust = members of its CA file,
/// issuer = the CA whose public key matches its key file. For the service-account key:
/// the public keys of sa.pub, and the one of sa.key.
pub fn current_target(snap: &Snapshot, auth: Authority) -> Option<Target> {
    let cp = snap.nodes.iter().find(|n| n.role == Role::ControlPlane)?;
    let trust: Vec<Fingerprint> = if auth.keys_only() {
        cp.public_keys(auth.ca_file())?.to_vec()
    } else {
        cp.certs(auth.ca_file())?
            .iter()
            .map(|c| c.fingerprint.clone())
            .collect()
    };
    let key = cp.key(auth.key_file())?;
    let issuer = trust
        .iter()
        .find(|fp| public_key_of(snap, auth, fp) == Some(key))?
        .clone();
    Some(Target { issuer, trust })
}

/// The public key of one of `auth`'s trust anchors: a CA's, or a service-account key
/// itself.
fn public_key_of<'s>(
    snap: &'s Snapshot,
    auth: Authority,
    fp: &'s Fingerprint,
) -> Option<&'s Fingerprint> {
    if auth.keys_only() {
        Some(fp)
    } else {
        snap.cas.get(fp).map(|c| &c.cert.public_key)
    }
}

/// What a consumer holds.
#[derive(
    Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
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
    /// A leaf issued by this CA that ends after `after` (RFC 3339): a renewal of a leaf
    /// that ended inside its window.
    Renewed {
        /// Its CA.
        issuer: Fingerprint,
        /// It ends later than this.
        after: String,
    },
    /// A leaf whose issuer is not known.
    UnknownIssuer,
    /// A file path (a flag's value).
    Path(String),
    /// Not there.
    Absent,
}

impl State {
    /// The CA of a leaf state (issued or renewed).
    pub fn issuer(&self) -> Option<&Fingerprint> {
        match self {
            State::IssuedBy(fp) | State::Renewed { issuer: fp, .. } => Some(fp),
            _ => None,
        }
    }

    /// Whether a leaf issued by `issuer` that ends at `not_after` (RFC 3339) is in this
    /// leaf state: from its CA, and for a renewal, ending after the window.
    pub fn holds_leaf(&self, issuer: Option<&Fingerprint>, not_after: &str) -> bool {
        match self {
            State::IssuedBy(fp) => issuer == Some(fp),
            State::Renewed { issuer: fp, after } => {
                issuer == Some(fp)
                    && matches!(
                        (crate::clock::parse(not_after), crate::clock::parse(after)),
                        (Some(end), Some(after)) if end > after
                    )
            }
            _ => false,
        }
    }
}

/// Which part of a node or cluster a consumer is.
#[derive(
    Clone,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
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
    /// The keys that signed the service-account tokens the kubelets hold for their pods
    /// (every node's projected tokens).
    Tokens,
    /// The keys that signed the tokens of legacy service-account token secrets.
    TokenSecrets,
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
            // Every token signed by the key that signs now.
            Field::Tokens | Field::TokenSecrets => State::Members(vec![t.issuer.clone()]),
        }
    }

    /// A short human name: `cp-1:/etc/kubernetes/admin.conf (CA data)`.
    pub fn describe(&self) -> String {
        let keys = self.authority.keys_only();
        let what = match &self.field {
            Field::Bundle if keys => "public keys".to_string(),
            Field::SigningKey if keys => "signing key".to_string(),
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
            Field::Tokens => "pods' service-account tokens (the keys that signed them)".into(),
            Field::TokenSecrets => {
                "legacy token secrets' tokens (the keys that signed them)".into()
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
            .find(|fp| public_key_of(snap, auth, fp) == Some(pk))
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
                FileFact::PublicKeys { keys }
                    if path == auth.ca_file() && node.role == Role::ControlPlane =>
                {
                    out.push((at(path, Field::Bundle), State::Members(keys.clone())));
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
        // Whatever the API shows, the tokens are on the nodes.
        (_, Authority::ServiceAccount) => {
            let mut keys: Vec<Fingerprint> = vec![];
            for k in snap.tokens.iter().filter_map(|t| t.key.as_ref()) {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
            if !snap.tokens.is_empty() {
                out.push((cluster(Field::Tokens), State::Members(keys)));
            }
            // A legacy token secret holds what the controller manager signed.
            if let Some(k) = &snap.kube
                && !k.legacy_tokens.is_empty()
            {
                // A token whose kid names no key stands as a key of its own, which no
                // target wants: it is re-issued with the others.
                let unknown = Fingerprint::of(b"a legacy token whose kid names no key");
                let mut keys: Vec<Fingerprint> = vec![];
                for p in &k.legacy_tokens {
                    let signed: Vec<&Fingerprint> = if p.cas.is_empty() {
                        vec![&unknown]
                    } else {
                        p.cas.iter().collect()
                    };
                    for fp in signed {
                        if !keys.contains(fp) {
                            keys.push(fp.clone());
                        }
                    }
                }
                out.push((cluster(Field::TokenSecrets), State::Members(keys)));
            }
        }
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

/// Unit tests, and the hand-built kubeadm cluster the planner's tests share
/// ([`tests::cluster`]): no I/O, every fingerprint made up.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kubelet::Serving;
    use crate::pki::CertFacts;
    use crate::snapshot::{
        CaFact, CertEntry, Component, KeyFact, KubeSnapshot, KubeconfigFact, Kubelet, NodeSnapshot,
        PodGroup, Published,
    };

    /// A made-up CA fingerprint: `sha256:cccc…`.
    pub(crate) fn fp(c: char) -> Fingerprint {
        Fingerprint::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }
    /// The cluster CA the fixture starts with.
    pub(crate) fn k_old() -> Fingerprint {
        fp('1')
    }
    /// The cluster CA a rotation moves to.
    pub(crate) fn k_new() -> Fingerprint {
        fp('2')
    }
    /// The front-proxy CA the fixture starts with.
    pub(crate) fn f_old() -> Fingerprint {
        fp('3')
    }
    /// The front-proxy CA a rotation moves to.
    pub(crate) fn f_new() -> Fingerprint {
        fp('4')
    }
    /// The etcd CA.
    pub(crate) fn e_old() -> Fingerprint {
        fp('5')
    }
    /// The service-account key the fixture starts with (a public key: its fingerprint is
    /// its own).
    pub(crate) fn s_old() -> Fingerprint {
        fp('6')
    }
    /// The service-account key a rotation moves to.
    pub(crate) fn s_new() -> Fingerprint {
        fp('7')
    }
    /// The public key of a made-up CA.
    pub(crate) fn public_key(ca: &Fingerprint) -> Fingerprint {
        Fingerprint::of(format!("public key of {ca}").as_bytes())
    }

    pub(crate) const CA: &str = "/etc/kubernetes/pki/ca.crt";
    pub(crate) const CA_KEY: &str = "/etc/kubernetes/pki/ca.key";
    pub(crate) const FP_CA: &str = "/etc/kubernetes/pki/front-proxy-ca.crt";
    pub(crate) const ETCD_CA: &str = "/etc/kubernetes/pki/etcd/ca.crt";
    pub(crate) const SA_PUB: &str = "/etc/kubernetes/pki/sa.pub";
    pub(crate) const SA_KEY: &str = "/etc/kubernetes/pki/sa.key";
    pub(crate) const APISERVER: &str = "/etc/kubernetes/pki/apiserver.crt";
    pub(crate) const APISERVER_KUBELET: &str = "/etc/kubernetes/pki/apiserver-kubelet-client.crt";
    pub(crate) const APISERVER_ETCD: &str = "/etc/kubernetes/pki/apiserver-etcd-client.crt";
    pub(crate) const FP_CLIENT: &str = "/etc/kubernetes/pki/front-proxy-client.crt";
    pub(crate) const ETCD_SERVER: &str = "/etc/kubernetes/pki/etcd/server.crt";
    pub(crate) const ETCD_PEER: &str = "/etc/kubernetes/pki/etcd/peer.crt";
    pub(crate) const ADMIN: &str = "/etc/kubernetes/admin.conf";
    pub(crate) const SUPER_ADMIN: &str = "/etc/kubernetes/super-admin.conf";
    pub(crate) const KCM_CONF: &str = "/etc/kubernetes/controller-manager.conf";
    pub(crate) const SCHED_CONF: &str = "/etc/kubernetes/scheduler.conf";
    pub(crate) const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
    pub(crate) const KUBELET_CLIENT: &str = "/var/lib/kubelet/pki/kubelet-client-current.pem";
    pub(crate) const KUBELET_SERVING: &str = "/var/lib/kubelet/pki/kubelet.crt";

    /// A CA bundle file.
    pub(crate) fn bundle(cas: &[Fingerprint]) -> FileFact {
        FileFact::Certificates {
            certs: cas
                .iter()
                .map(|f| CertEntry {
                    fingerprint: f.clone(),
                    ca: true,
                    issued_by: Some(f.clone()),
                    leaf: None,
                })
                .collect(),
            private_key: None,
        }
    }

    /// A leaf certificate file (`name` makes its fingerprint unique).
    pub(crate) fn leaf(name: &str, issuer: Option<&Fingerprint>) -> FileFact {
        FileFact::Certificates {
            certs: vec![CertEntry {
                fingerprint: Fingerprint::of(name.as_bytes()),
                ca: false,
                issued_by: issuer.cloned(),
                leaf: None,
            }],
            private_key: None,
        }
    }

    /// A kubeconfig trusting `ca`; its client certificate is embedded (issued by
    /// `client`) or, with `client_file`, that file.
    pub(crate) fn kubeconfig(
        ca: &[Fingerprint],
        client: &Fingerprint,
        client_file: Option<&str>,
    ) -> FileFact {
        FileFact::Kubeconfig(Box::new(KubeconfigFact {
            cluster: "kubernetes".into(),
            server: "https://127.0.0.1:6443".into(),
            ca: ca.to_vec(),
            ca_source: "data".into(),
            user: "u".into(),
            client: Some(CertEntry {
                fingerprint: Fingerprint::of(format!("client {client_file:?}").as_bytes()),
                ca: false,
                issued_by: Some(client.clone()),
                leaf: None,
            }),
            client_source: Some(client_file.unwrap_or("data").to_string()),
        }))
    }

    fn key(ca: &Fingerprint) -> FileFact {
        FileFact::PrivateKey(KeyFact {
            public_key: public_key(ca),
            loose_mode: None,
        })
    }

    fn component(name: &str, flags: &[(&str, &str)]) -> (String, Component) {
        let flags: BTreeMap<String, String> = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut inputs: Vec<String> = flags
            .values()
            .filter(|v| v.starts_with('/'))
            .cloned()
            .collect();
        inputs.sort();
        inputs.dedup();
        (
            name.to_string(),
            Component {
                manifest: crate::layout::manifest(name),
                flags,
                inputs,
            },
        )
    }

    fn kubelet() -> Kubelet {
        Kubelet {
            config: "/var/lib/kubelet/config.yaml".into(),
            client_ca_file: Some(CA.into()),
            rotate_certificates: true,
            server_tls_bootstrap: false,
            serving: Serving::SelfSigned {
                cert: KUBELET_SERVING.into(),
                key: "/var/lib/kubelet/pki/kubelet.key".into(),
            },
            kubeconfig: KUBELET_CONF.into(),
            inputs: vec![
                KUBELET_CONF.into(),
                CA.into(),
                "/var/lib/kubelet/config.yaml".into(),
                KUBELET_CLIENT.into(),
                KUBELET_SERVING.into(),
            ],
        }
    }

    /// A node as kubeadm leaves it: a control plane (API server, controller manager,
    /// scheduler, stacked etcd, kubelet) or a worker (kubelet), trusting the fixture's
    /// first CAs.
    pub(crate) fn node(name: &str, control_plane: bool) -> NodeSnapshot {
        let (k, f, e) = (k_old(), f_old(), e_old());
        let at = |p: &str| format!("{name}:{p}");
        let mut files: BTreeMap<String, FileFact> = BTreeMap::new();
        files.insert(CA.into(), bundle(std::slice::from_ref(&k)));
        files.insert(
            KUBELET_CONF.into(),
            kubeconfig(std::slice::from_ref(&k), &k, Some(KUBELET_CLIENT)),
        );
        files.insert(KUBELET_CLIENT.into(), leaf(&at(KUBELET_CLIENT), Some(&k)));
        // Self-signed by the kubelet's own CA, which no trust file holds.
        let own = Fingerprint::of(format!("{name} kubelet CA").as_bytes());
        files.insert(
            KUBELET_SERVING.into(),
            leaf(&at(KUBELET_SERVING), Some(&own)),
        );
        let mut components = BTreeMap::new();
        if control_plane {
            files.insert(CA_KEY.into(), key(&k));
            files.insert(FP_CA.into(), bundle(std::slice::from_ref(&f)));
            files.insert("/etc/kubernetes/pki/front-proxy-ca.key".into(), key(&f));
            files.insert(ETCD_CA.into(), bundle(std::slice::from_ref(&e)));
            files.insert("/etc/kubernetes/pki/etcd/ca.key".into(), key(&e));
            files.insert(
                SA_PUB.into(),
                FileFact::PublicKeys {
                    keys: vec![s_old()],
                },
            );
            files.insert(
                SA_KEY.into(),
                FileFact::PrivateKey(KeyFact {
                    public_key: s_old(),
                    loose_mode: None,
                }),
            );
            for (path, issuer) in [
                (APISERVER, &k),
                (APISERVER_KUBELET, &k),
                (APISERVER_ETCD, &e),
                (FP_CLIENT, &f),
                (ETCD_SERVER, &e),
                (ETCD_PEER, &e),
            ] {
                files.insert(path.into(), leaf(&at(path), Some(issuer)));
            }
            for path in [ADMIN, SUPER_ADMIN, KCM_CONF, SCHED_CONF] {
                files.insert(path.into(), kubeconfig(std::slice::from_ref(&k), &k, None));
            }
            components.extend([
                component(
                    "kube-apiserver",
                    &[
                        ("client-ca-file", CA),
                        ("tls-cert-file", APISERVER),
                        ("tls-private-key-file", "/etc/kubernetes/pki/apiserver.key"),
                        ("kubelet-client-certificate", APISERVER_KUBELET),
                        (
                            "kubelet-client-key",
                            "/etc/kubernetes/pki/apiserver-kubelet-client.key",
                        ),
                        ("etcd-cafile", ETCD_CA),
                        ("etcd-certfile", APISERVER_ETCD),
                        (
                            "etcd-keyfile",
                            "/etc/kubernetes/pki/apiserver-etcd-client.key",
                        ),
                        ("proxy-client-cert-file", FP_CLIENT),
                        (
                            "proxy-client-key-file",
                            "/etc/kubernetes/pki/front-proxy-client.key",
                        ),
                        ("requestheader-client-ca-file", FP_CA),
                        ("service-account-key-file", SA_PUB),
                        ("service-account-signing-key-file", SA_KEY),
                    ],
                ),
                component(
                    "kube-controller-manager",
                    &[
                        ("kubeconfig", KCM_CONF),
                        ("service-account-private-key-file", SA_KEY),
                        ("client-ca-file", CA),
                        ("cluster-signing-cert-file", CA),
                        ("cluster-signing-key-file", CA_KEY),
                        ("root-ca-file", CA),
                        ("requestheader-client-ca-file", FP_CA),
                    ],
                ),
                component("kube-scheduler", &[("kubeconfig", SCHED_CONF)]),
                component(
                    "etcd",
                    &[
                        ("cert-file", ETCD_SERVER),
                        ("key-file", "/etc/kubernetes/pki/etcd/server.key"),
                        ("trusted-ca-file", ETCD_CA),
                        ("peer-cert-file", ETCD_PEER),
                        ("peer-key-file", "/etc/kubernetes/pki/etcd/peer.key"),
                        ("peer-trusted-ca-file", ETCD_CA),
                    ],
                ),
            ]);
        }
        NodeSnapshot {
            name: name.into(),
            role: if control_plane {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            files,
            components,
            kubelet: Some(kubelet()),
        }
    }

    /// `cps` control planes `cp-1…` and `workers` workers `w-1…`, no API access.
    pub(crate) fn cluster(cps: usize, workers: usize) -> Snapshot {
        let nodes: Vec<NodeSnapshot> = (1..=cps)
            .map(|i| node(&format!("cp-{i}"), true))
            .chain((1..=workers).map(|i| node(&format!("w-{i}"), false)))
            .collect();
        let cas = [k_old(), f_old(), e_old()]
            .into_iter()
            .map(|f| (f.clone(), ca_fact(&f)))
            .collect();
        Snapshot::new(cas, nodes)
    }

    /// A CA as the snapshot lists it.
    pub(crate) fn ca_fact(f: &Fingerprint) -> CaFact {
        CaFact {
            cert: CertFacts {
                fingerprint: f.clone(),
                subject: format!("CN={}", f.short()),
                common_name: f.short(),
                organizations: vec![],
                issuer: format!("CN={}", f.short()),
                is_ca: true,
                not_before: "2026-01-01T00:00:00Z".into(),
                not_after: "2036-01-01T00:00:00Z".into(),
                sans: vec![],
                key_usage: vec![],
                ext_key_usage: vec![],
                public_key: public_key(f),
            },
            key_present: true,
            found_in: vec![],
        }
    }

    /// A target.
    pub(crate) fn target(issuer: &Fingerprint, trust: &[Fingerprint]) -> Target {
        Target {
            issuer: issuer.clone(),
            trust: trust.to_vec(),
        }
    }

    /// Desired state: each authority from `current` to `want`, CAs named by their digit.
    pub(crate) fn desired(moves: &[(Authority, Target, Target)]) -> Desired {
        let cas = (1..=7)
            .map(|d| {
                let f = fp(char::from_digit(d, 10).unwrap());
                let info = CaInfo {
                    fingerprint: f.clone(),
                    // 6 and 7 are service-account keys: their own public keys.
                    public_key: if d >= 6 { f.clone() } else { public_key(&f) },
                    name: format!("ca-{d}"),
                    generated: false,
                };
                (f, info)
            })
            .collect();
        Desired {
            authorities: moves
                .iter()
                .map(|(a, c, w)| (*a, (c.clone(), w.clone())))
                .collect(),
            cas,
            notes: vec![],
            renewals: moves
                .iter()
                .map(|(a, _, _)| (*a, crate::config::Renewal::default()))
                .collect(),
        }
    }

    /// The kubernetes CA from the fixture's old CA straight to the new one.
    pub(crate) fn kubernetes_to_new() -> Desired {
        desired(&[(
            Authority::Kubernetes,
            target(&k_old(), &[k_old()]),
            target(&k_new(), &[k_new()]),
        )])
    }

    // ---- diff's own tests ----

    fn kube(k: &Fingerprint) -> KubeSnapshot {
        KubeSnapshot {
            server: "https://127.0.0.1:6443".into(),
            namespaces: 2,
            kube_root_ca: vec![Published {
                cas: vec![k.clone()],
                holders: vec!["default".into(), "kube-system".into()],
            }],
            kube_root_ca_missing: vec![],
            token_secrets: vec![],
            legacy_tokens: vec![],
            cluster_info: Some(vec![k.clone()]),
            extension_auth: Some(vec![f_old()]),
            ca_bundles: vec![],
            workloads: 1,
            pods: vec![],
        }
    }

    fn group(trust: Option<&[Fingerprint]>, pod: &str) -> PodGroup {
        PodGroup {
            trust: trust.map(<[Fingerprint]>::to_vec),
            pods: vec![pod.into()],
            workloads: vec![],
            bare: vec![],
        }
    }

    /// The state of the consumer (node, path, field) of `auth`, at rest.
    fn state_of(
        snap: &Snapshot,
        auth: Authority,
        node: Option<&str>,
        path: &str,
        field: Field,
    ) -> Option<State> {
        let current = current_target(snap, auth).expect("current target");
        let lineage = vec![k_old(), k_new(), f_old(), f_new()];
        consumers(snap, auth, &current, &lineage)
            .into_iter()
            .find(|(c, _)| c.node.as_deref() == node && c.path == path && c.field == field)
            .map(|(_, s)| s)
    }

    fn change<'a>(all: &'a [Change], node: &str, path: &str, field: Field) -> &'a Change {
        all.iter()
            .find(|c| {
                c.consumer.node.as_deref() == Some(node)
                    && c.consumer.path == path
                    && c.consumer.field == field
            })
            .unwrap_or_else(|| panic!("no change of {node}:{path} {field:?}"))
    }

    #[test]
    fn nothing_changes_when_every_authority_is_desired_as_it_is() {
        let snap = cluster(3, 2);
        let d = desired(&[
            (
                Authority::Kubernetes,
                target(&k_old(), &[k_old()]),
                target(&k_old(), &[k_old()]),
            ),
            (
                Authority::FrontProxy,
                target(&f_old(), &[f_old()]),
                target(&f_old(), &[f_old()]),
            ),
            (
                Authority::Etcd,
                target(&e_old(), &[e_old()]),
                target(&e_old(), &[e_old()]),
            ),
        ]);
        assert!(changes(&snap, &d).is_empty());
    }

    #[test]
    fn a_new_cluster_ca_changes_fourteen_consumers_per_control_plane_three_per_worker_and_three_cluster_objects()
     {
        // Per control plane: ca.crt, ca.key, 4 kubeconfigs × (CA data + embedded client),
        // kubelet.conf's CA data (its client is a file), 3 leaves of the cluster CA
        // (apiserver, apiserver-kubelet-client, kubelet-client-current).
        // Per worker: ca.crt (the kubelet's clientCAFile), kubelet.conf's CA data, the
        // kubelet's client certificate. Cluster: kube-root-ca.crt, pods, cluster-info.
        for (cps, workers) in [(1, 1), (3, 2)] {
            let all = changes(&cluster(cps, workers), &kubernetes_to_new());
            let per_cp = 1 + 1 + 4 * 2 + 1 + 3;
            assert_eq!(all.len(), cps * per_cp + workers * 3 + 3, "{cps}+{workers}");
            let cluster_wide = all.iter().filter(|c| c.consumer.node.is_none()).count();
            assert_eq!(cluster_wide, 3);
        }
    }

    #[test]
    fn a_control_plane_bundle_moves_from_the_old_ca_to_the_new() {
        let all = changes(&cluster(1, 1), &kubernetes_to_new());
        let c = change(&all, "cp-1", CA, Field::Bundle);
        assert_eq!(c.before, State::Members(vec![k_old()]));
        assert_eq!(c.after, State::Members(vec![k_new()]));
        let w = change(&all, "w-1", CA, Field::Bundle);
        assert_eq!(w.after, State::Members(vec![k_new()]));
    }

    #[test]
    fn the_signing_key_moves_to_the_new_ca_on_control_planes_only() {
        let all = changes(&cluster(1, 1), &kubernetes_to_new());
        let c = change(&all, "cp-1", CA_KEY, Field::SigningKey);
        assert_eq!(c.before, State::KeyOf(k_old()));
        assert_eq!(c.after, State::KeyOf(k_new()));
        assert!(
            !all.iter().any(|c| c.consumer.field == Field::SigningKey
                && c.consumer.node.as_deref() == Some("w-1"))
        );
    }

    #[test]
    fn leaves_and_embedded_clients_of_the_cluster_ca_are_reissued_by_the_new_ca() {
        let all = changes(&cluster(1, 1), &kubernetes_to_new());
        for (node, path) in [
            ("cp-1", APISERVER),
            ("cp-1", APISERVER_KUBELET),
            ("cp-1", KUBELET_CLIENT),
            ("w-1", KUBELET_CLIENT),
        ] {
            let c = change(&all, node, path, Field::Leaf);
            assert_eq!(c.before, State::IssuedBy(k_old()), "{node}:{path}");
            assert_eq!(c.after, State::IssuedBy(k_new()), "{node}:{path}");
        }
        let admin = change(&all, "cp-1", ADMIN, Field::KubeconfigClient);
        assert_eq!(admin.after, State::IssuedBy(k_new()));
    }

    #[test]
    fn a_kubelet_client_read_from_a_file_is_a_leaf_not_a_kubeconfig_client() {
        let all = changes(&cluster(1, 1), &kubernetes_to_new());
        assert!(!all.iter().any(
            |c| c.consumer.path == KUBELET_CONF && c.consumer.field == Field::KubeconfigClient
        ));
    }

    #[test]
    fn other_authorities_leaves_are_not_cluster_ca_consumers() {
        let all = changes(&cluster(1, 1), &kubernetes_to_new());
        for path in [
            ETCD_SERVER,
            ETCD_PEER,
            APISERVER_ETCD,
            FP_CLIENT,
            FP_CA,
            ETCD_CA,
        ] {
            assert!(!all.iter().any(|c| c.consumer.path == path), "{path}");
        }
    }

    #[test]
    fn pre_rotate_adds_a_signer_copy_and_points_the_single_cert_flags_at_it() {
        let d = desired(&[(
            Authority::Kubernetes,
            target(&k_old(), &[k_old()]),
            target(&k_old(), &[k_old(), k_new()]),
        )]);
        let all = changes(&cluster(1, 0), &d);
        let copy = change(&all, "cp-1", SIGNER_COPY, Field::SignerCopy);
        assert_eq!(copy.before, State::Absent);
        assert_eq!(copy.after, State::Members(vec![k_old()]));
        let manifest = crate::layout::manifest("kube-controller-manager");
        for flag in KCM_SINGLE_CERT_FLAGS {
            let c = change(
                &all,
                "cp-1",
                &manifest,
                Field::Flag("kube-controller-manager".into(), flag.into()),
            );
            assert_eq!(c.before, State::Path(CA.into()));
            assert_eq!(c.after, State::Path(SIGNER_COPY.into()));
        }
        // --root-ca-file stays on the bundle; nothing is re-issued; the key stays.
        assert!(!all.iter().any(|c| matches!(&c.consumer.field,
            Field::Flag(_, f) if f == KCM_ROOT_CA_FLAG)));
        assert!(!all.iter().any(|c| matches!(
            c.consumer.field,
            Field::Leaf | Field::KubeconfigClient | Field::SigningKey | Field::ClusterInfo
        )));
        let bundle = change(&all, "cp-1", CA, Field::Bundle);
        assert_eq!(bundle.after, State::Members(vec![k_old(), k_new()]));
    }

    #[test]
    fn a_kubeconfig_of_another_cluster_is_no_consumer() {
        let mut snap = cluster(1, 0);
        snap.nodes[0].files.insert(
            "/root/other.conf".into(),
            kubeconfig(&[fp('9')], &fp('9'), None),
        );
        let all = changes(&snap, &kubernetes_to_new());
        assert!(!all.iter().any(|c| c.consumer.path == "/root/other.conf"));
        assert!(all.iter().any(|c| c.consumer.path == ADMIN));
    }

    #[test]
    fn a_signing_key_matching_no_ca_of_the_rotation_is_an_unknown_key() {
        let mut snap = cluster(1, 0);
        snap.nodes[0].files.insert(CA_KEY.into(), key(&fp('8')));
        let lineage = lineage(&target(&k_old(), &[k_old()]), &target(&k_new(), &[k_new()]));
        let current = target(&k_old(), &[k_old()]);
        let (_, state) = consumers(&snap, Authority::Kubernetes, &current, &lineage)
            .into_iter()
            .find(|(c, _)| c.field == Field::SigningKey)
            .expect("the key is a consumer");
        assert_eq!(state, State::UnknownKey(public_key(&fp('8'))));
    }

    #[test]
    fn the_current_issuer_is_the_bundle_member_whose_key_is_on_the_first_control_plane() {
        let mut snap = cluster(2, 0);
        snap.cas.insert(k_new(), ca_fact(&k_new()));
        snap.nodes[0]
            .files
            .insert(CA.into(), bundle(&[k_old(), k_new()]));
        snap.nodes[0].files.insert(CA_KEY.into(), key(&k_new()));
        let t = current_target(&snap, Authority::Kubernetes).unwrap();
        assert_eq!(t, target(&k_new(), &[k_old(), k_new()]));
    }

    #[test]
    fn there_is_no_current_target_without_a_control_plane() {
        assert_eq!(current_target(&cluster(0, 2), Authority::Kubernetes), None);
    }

    #[test]
    fn there_is_no_current_target_when_the_key_matches_no_bundle_member() {
        let mut snap = cluster(1, 0);
        snap.nodes[0].files.insert(CA_KEY.into(), key(&fp('8')));
        assert_eq!(current_target(&snap, Authority::Kubernetes), None);
        let mut snap = cluster(1, 0);
        snap.nodes[0].files.remove(CA_KEY);
        assert_eq!(current_target(&snap, Authority::Kubernetes), None);
    }

    #[test]
    fn without_api_access_the_cluster_objects_are_taken_to_follow_the_files() {
        let snap = cluster(1, 0);
        let at = |field| state_of(&snap, Authority::Kubernetes, None, "", field);
        assert_eq!(at(Field::KubeRootCa), Some(State::Members(vec![k_old()])));
        assert_eq!(at(Field::PodTrust), Some(State::Members(vec![k_old()])));
        assert_eq!(at(Field::ClusterInfo), Some(State::Members(vec![k_old()])));
        assert_eq!(
            state_of(&snap, Authority::FrontProxy, None, "", Field::ExtensionAuth),
            Some(State::Members(vec![f_old()]))
        );
    }

    #[test]
    fn a_namespace_without_kube_root_ca_makes_the_published_trust_empty() {
        let mut snap = cluster(1, 0);
        let mut k = kube(&k_old());
        k.kube_root_ca_missing = vec!["new-ns".into()];
        snap.kube = Some(k);
        assert_eq!(
            state_of(&snap, Authority::Kubernetes, None, "", Field::KubeRootCa),
            Some(State::Members(vec![]))
        );
    }

    #[test]
    fn published_trust_is_what_every_namespace_and_token_secret_holds() {
        let mut snap = cluster(1, 0);
        let mut k = kube(&k_old());
        k.kube_root_ca[0].cas = vec![k_old(), k_new()];
        k.token_secrets = vec![Published {
            cas: vec![k_new()],
            holders: vec!["default/token".into()],
        }];
        snap.kube = Some(k);
        assert_eq!(
            state_of(&snap, Authority::Kubernetes, None, "", Field::KubeRootCa),
            Some(State::Members(vec![k_new()]))
        );
    }

    #[test]
    fn pods_trust_what_every_group_holds_in_the_first_groups_order() {
        let mut snap = cluster(1, 0);
        let mut k = kube(&k_old());
        k.pods = vec![
            group(Some(&[k_new(), k_old()]), "a/p"),
            group(Some(&[k_old(), k_new()]), "b/q"),
        ];
        snap.kube = Some(k);
        assert_eq!(
            state_of(&snap, Authority::Kubernetes, None, "", Field::PodTrust),
            Some(State::Members(vec![k_new(), k_old()]))
        );
    }

    #[test]
    fn pods_of_unknown_trust_make_the_pods_trust_nothing() {
        let mut snap = cluster(1, 0);
        let mut k = kube(&k_old());
        k.pods = vec![group(Some(&[k_old()]), "a/p"), group(None, "b/q")];
        snap.kube = Some(k);
        assert_eq!(
            state_of(&snap, Authority::Kubernetes, None, "", Field::PodTrust),
            Some(State::Members(vec![]))
        );
    }

    #[test]
    fn a_ca_bundle_is_a_consumer_only_for_its_rotating_cas() {
        let mut snap = cluster(1, 0);
        let mut k = kube(&k_old());
        k.ca_bundles = vec![
            crate::snapshot::CaBundleFact {
                object: "ValidatingWebhookConfiguration/v".into(),
                pointer: "/webhooks/0/clientConfig/caBundle".into(),
                cas: vec![fp('9'), k_old()],
            },
            crate::snapshot::CaBundleFact {
                object: "APIService/v1.metrics".into(),
                pointer: "/spec/caBundle".into(),
                cas: vec![fp('9')],
            },
        ];
        snap.kube = Some(k);
        let path = "ValidatingWebhookConfiguration/v#/webhooks/0/clientConfig/caBundle";
        assert_eq!(
            state_of(&snap, Authority::Kubernetes, None, path, Field::CaBundle),
            Some(State::Members(vec![k_old()]))
        );
        let all = changes(&snap, &kubernetes_to_new());
        let bundles: Vec<&str> = all
            .iter()
            .filter(|c| c.consumer.field == Field::CaBundle)
            .map(|c| c.consumer.path.as_str())
            .collect();
        assert_eq!(bundles, [path]);
    }

    #[test]
    fn etcd_has_no_cluster_objects() {
        let snap = cluster(1, 0);
        let current = target(&e_old(), &[e_old()]);
        let all = consumers(&snap, Authority::Etcd, &current, &[e_old()]);
        assert!(all.iter().all(|(c, _)| c.node.is_some()));
        // Its leaves: the server, peer and API server client certificates.
        let leaves = all.iter().filter(|(c, _)| c.field == Field::Leaf).count();
        assert_eq!(leaves, 3, "server, peer, apiserver-etcd-client");
    }

    #[test]
    fn lineage_lists_each_ca_once_current_trust_first() {
        let l = lineage(
            &target(&k_new(), &[k_old(), k_new()]),
            &target(&fp('6'), &[k_new(), fp('6')]),
        );
        assert_eq!(l, [k_old(), k_new(), fp('6')]);
    }

    #[test]
    fn a_signer_copy_is_needed_only_while_trust_is_more_than_the_issuer() {
        assert!(!target(&k_old(), &[k_old()]).needs_signer_copy());
        assert!(target(&k_old(), &[k_old(), k_new()]).needs_signer_copy());
        assert!(target(&k_new(), &[k_old()]).needs_signer_copy());
    }

    #[test]
    fn cluster_info_holds_only_the_issuer_and_root_ca_file_stays_on_the_bundle() {
        let t = target(&k_new(), &[k_old(), k_new()]);
        let c = |field| Consumer {
            authority: Authority::Kubernetes,
            node: Some("cp-1".into()),
            path: "p".into(),
            field,
        };
        assert_eq!(
            c(Field::ClusterInfo).desired(&t),
            State::Members(vec![k_new()])
        );
        assert_eq!(
            c(Field::Flag(
                "kube-controller-manager".into(),
                KCM_ROOT_CA_FLAG.into()
            ))
            .desired(&t),
            State::Path(CA.into())
        );
        assert_eq!(
            c(Field::Flag(
                "kube-controller-manager".into(),
                "client-ca-file".into()
            ))
            .desired(&t),
            State::Path(SIGNER_COPY.into())
        );
        assert_eq!(
            c(Field::SignerCopy).desired(&t),
            State::Members(vec![k_new()])
        );
        assert_eq!(
            c(Field::SignerCopy).desired(&target(&k_new(), &[k_new()])),
            State::Absent
        );
        assert_eq!(c(Field::Leaf).desired(&t), State::IssuedBy(k_new()));
        assert_eq!(
            c(Field::Bundle).desired(&t),
            State::Members(vec![k_old(), k_new()])
        );
    }

    #[test]
    fn a_consumer_is_described_by_node_path_and_part() {
        let c = Consumer {
            authority: Authority::Kubernetes,
            node: Some("cp-1".into()),
            path: ADMIN.into(),
            field: Field::KubeconfigCa,
        };
        assert_eq!(
            c.describe(),
            "cp-1:/etc/kubernetes/admin.conf (certificate-authority-data)"
        );
        let b = Consumer {
            node: None,
            path: "APIService/v1.m#/spec/caBundle".into(),
            field: Field::CaBundle,
            ..c
        };
        assert_eq!(b.describe(), "APIService/v1.m caBundle (/spec/caBundle)");
    }
}
