//! The `Snapshot`: everything trustform knows about a cluster's trust, read-only,
//! public data only. Its canonical JSON (sorted maps, no whitespace) hashes to its
//! fingerprint, which a plan records and apply checks.
//!
//! # JSON format (`trustform snapshot -o snap.json`, `format_version` 1)
//! ```json
//! { "format_version": 1, "fingerprint": "sha256:…",
//!   "cas": { "sha256:…": { "subject": "CN=kubernetes", …, "key_present": true, "found_in": ["cp-1:/etc/kubernetes/pki/ca.crt"] } },
//!   "nodes": [ { "name": "cp-1", "role": "control-plane",
//!                "files": { "/etc/kubernetes/pki/ca.crt": { "kind": "certificates", "certs": [ … ] }, … },
//!                "components": { "kube-apiserver": { "manifest": "…", "flags": { … }, "inputs": [ … ] } },
//!                "kubelet": { … } } ] }
//! ```
//! No private key is ever in it: keys appear as `private-key` entries holding only the
//! fingerprint of their public half.

use crate::pki::{CertFacts, Fingerprint};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A node's role.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs the static-pod control plane.
    ControlPlane,
    /// Runs only the kubelet.
    Worker,
}

/// Current snapshot format.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON Schema of a snapshot (`trustform snapshot`), of format [`FORMAT_VERSION`].
pub fn schema() -> String {
    crate::schema::versioned(schemars::schema_for!(Snapshot), "snapshot", FORMAT_VERSION)
}

/// What was observed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Snapshot {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// SHA-256 of the canonical JSON of `cas` and `nodes`.
    pub fingerprint: String,
    /// Every CA certificate seen anywhere, by fingerprint.
    pub cas: BTreeMap<Fingerprint, CaFact>,
    /// Nodes: control planes first, then workers, each in natural name order.
    pub nodes: Vec<NodeSnapshot>,
    /// What the Kubernetes API holds, when `inventory.kube` is set. Not part of the
    /// fingerprint: API objects move on their own (pods restart, controllers publish),
    /// and apply re-reads them live at every step that touches them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeSnapshot>,
    /// The service-account tokens the kubelets hold for their pods (the projected
    /// volumes' `token` files): which key signed each, never the token. Not part of the
    /// fingerprint: the kubelets refresh them on their own, every hour or so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenFact>,
}

/// One pod's projected service-account token, as its node's kubelet holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenFact {
    /// The node whose kubelet holds it.
    pub node: String,
    /// `namespace/name` of the pod it is bound to (the pod uid's directory when the
    /// token names no pod).
    pub pod: String,
    /// The file, on the node.
    pub path: String,
    /// The public key that signed it (its `kid`); absent when the kid names no key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Fingerprint>,
    /// Issued at (RFC 3339).
    pub issued: String,
    /// Expires (RFC 3339).
    pub expires: String,
    /// When the kubelet refreshes it: at 80% of its lifetime, 24 hours after issue at
    /// the latest (RFC 3339).
    pub refresh: String,
}

/// The trust that API objects hold (read with kube-rs, every list paginated).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KubeSnapshot {
    /// The API server URL read.
    pub server: String,
    /// Number of namespaces.
    pub namespaces: usize,
    /// kube-root-ca.crt: each distinct content and the namespaces holding it.
    pub kube_root_ca: Vec<Published>,
    /// Namespaces without a kube-root-ca.crt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kube_root_ca_missing: Vec<String>,
    /// `ca.crt` of legacy service-account token secrets, by content (`namespace/name`).
    pub token_secrets: Vec<Published>,
    /// The key that signed `token` of each legacy token secret that has one, by key
    /// (`cas`: the key; empty when the token's `kid` names no key). Never the token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_tokens: Vec<Published>,
    /// The CAs in kube-public/cluster-info's kubeconfig (absent: no such ConfigMap).
    pub cluster_info: Option<Vec<Fingerprint>>,
    /// `requestheader-client-ca-file` of kube-system/extension-apiserver-authentication.
    pub extension_auth: Option<Vec<Fingerprint>>,
    /// Every caBundle of webhooks, APIServices and CRD conversion webhooks. Only the ones
    /// that hold a rotating CA are changed.
    pub ca_bundles: Vec<CaBundleFact>,
    /// Number of Deployments, DaemonSets and StatefulSets.
    pub workloads: usize,
    /// Running pods grouped by what they trust in memory (the kube-root-ca.crt they read
    /// at start).
    pub pods: Vec<PodGroup>,
}

/// One distinct published content and who holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Published {
    /// Its CAs.
    pub cas: Vec<Fingerprint>,
    /// Namespaces (kube-root-ca.crt) or `namespace/name` (secrets), sorted.
    pub holders: Vec<String>,
}

/// One caBundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CaBundleFact {
    /// `Kind/name`.
    pub object: String,
    /// JSON pointer of the field.
    pub pointer: String,
    /// Its CAs.
    pub cas: Vec<Fingerprint>,
}

/// Pods that hold the same trust.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PodGroup {
    /// The CAs they trust; `None`: unknown (started before their namespace's
    /// kube-root-ca.crt was last written), treated as stale.
    pub trust: Option<Vec<Fingerprint>>,
    /// `namespace/name` of each pod.
    pub pods: Vec<String>,
    /// `namespace/Kind/name` of the workloads owning them.
    pub workloads: Vec<String>,
    /// `namespace/name` of pods without an owner (a rollout cannot restart them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bare: Vec<String>,
}

/// A CA certificate and where it was seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CaFact {
    /// The certificate's facts.
    #[serde(flatten)]
    pub cert: CertFacts,
    /// A private key whose public half matches was found on some node.
    pub key_present: bool,
    /// `node:path` of every file holding it.
    pub found_in: Vec<String>,
}

/// One node's trust.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeSnapshot {
    /// Node name.
    pub name: String,
    /// Role (control plane when it has a kube-apiserver manifest).
    pub role: Role,
    /// Trust files, by absolute path on the node.
    pub files: BTreeMap<String, FileFact>,
    /// Static pod components, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, Component>,
    /// The kubelet, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<Kubelet>,
}

/// What a trust file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FileFact {
    /// One or more certificates (a leaf, a CA, or a bundle), maybe with a key.
    Certificates {
        /// The certificates in file order.
        certs: Vec<CertEntry>,
        /// A private key in the same file (kubelet-client-current.pem).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        private_key: Option<KeyFact>,
    },
    /// A private key on its own.
    PrivateKey(KeyFact),
    /// Public keys (sa.pub: the service-account keys the API server accepts).
    PublicKeys {
        /// SHA-256 of each SubjectPublicKeyInfo, in file order.
        keys: Vec<Fingerprint>,
    },
    /// A kubeconfig.
    Kubeconfig(Box<KubeconfigFact>),
}

/// A certificate inside a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CertEntry {
    /// Its fingerprint (for a CA, the key into [`Snapshot::cas`]).
    pub fingerprint: Fingerprint,
    /// Whether it is a CA.
    pub ca: bool,
    /// The CA that signed it, when one was found (a self-signed CA names itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<Fingerprint>,
    /// Full facts, for leaves (CAs keep theirs in [`Snapshot::cas`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<CertFacts>,
}

/// A private key, known only by its public half.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KeyFact {
    /// SHA-256 of the SubjectPublicKeyInfo of the key's public half.
    pub public_key: Fingerprint,
    /// The file's permission bits, when they let anyone but the owner read it (a key
    /// should be 0600; apply writes it back 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loose_mode: Option<u32>,
}

/// The trust a kubeconfig carries (its current context).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct KubeconfigFact {
    /// Cluster entry name.
    pub cluster: String,
    /// Server URL.
    pub server: String,
    /// The CAs of `certificate-authority-data` (or of the `certificate-authority` file).
    pub ca: Vec<Fingerprint>,
    /// `data` when embedded, else the path of the CA file.
    pub ca_source: String,
    /// User entry name.
    pub user: String,
    /// The client certificate, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<CertEntry>,
    /// `data` when embedded, else the path of the certificate file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_source: Option<String>,
}

/// A static pod component and the files it reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Component {
    /// Manifest path on the node.
    pub manifest: String,
    /// Every `--flag=value` of its command.
    pub flags: BTreeMap<String, String>,
    /// Files it reads (flag values that are absolute paths), sorted.
    pub inputs: Vec<String>,
}

/// The kubelet's trust configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Kubelet {
    /// Path of config.yaml.
    pub config: String,
    /// `authentication.x509.clientCAFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
    /// `rotateCertificates`.
    pub rotate_certificates: bool,
    /// `serverTLSBootstrap`.
    pub server_tls_bootstrap: bool,
    /// Where its serving certificate comes from: the self-signed `kubelet.crt` it makes
    /// itself (kubeadm's default), `tlsCertFile`, or the rotated
    /// `kubelet-server-current.pem` (`serverTLSBootstrap`).
    pub serving: crate::kubelet::Serving,
    /// The kubeconfig it uses to reach the API server.
    pub kubeconfig: String,
    /// Files it reads, sorted.
    pub inputs: Vec<String>,
}

impl Snapshot {
    /// Build a snapshot and compute its fingerprint.
    pub fn new(cas: BTreeMap<Fingerprint, CaFact>, nodes: Vec<NodeSnapshot>) -> Self {
        let fingerprint = content_fingerprint(&cas, &nodes);
        Self {
            format_version: FORMAT_VERSION,
            fingerprint,
            cas,
            nodes,
            kube: None,
            tokens: vec![],
        }
    }

    /// Canonical JSON, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("snapshot serialises")
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<&NodeSnapshot> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// Whether the stored fingerprint matches the content (detects hand edits).
    pub fn verify(&self) -> bool {
        self.fingerprint == content_fingerprint(&self.cas, &self.nodes)
    }
}

impl NodeSnapshot {
    /// The kubelet's client CA file (`authentication.x509.clientCAFile`), if it has one.
    pub fn kubelet_client_ca(&self) -> Option<&str> {
        self.kubelet.as_ref()?.client_ca_file.as_deref()
    }

    /// The public keys of a file (sa.pub), or none.
    pub fn public_keys(&self, path: &str) -> Option<&[Fingerprint]> {
        match self.files.get(path) {
            Some(FileFact::PublicKeys { keys }) => Some(keys),
            _ => None,
        }
    }

    /// The certificates of a file, or none.
    pub fn certs(&self, path: &str) -> Option<&[CertEntry]> {
        match self.files.get(path) {
            Some(FileFact::Certificates { certs, .. }) => Some(certs),
            _ => None,
        }
    }
    /// The kubeconfig fact of a file.
    pub fn kubeconfig(&self, path: &str) -> Option<&KubeconfigFact> {
        match self.files.get(path) {
            Some(FileFact::Kubeconfig(k)) => Some(k),
            _ => None,
        }
    }
    /// Public-key fingerprint of a private key file (alone or inside a PEM with certs).
    pub fn key(&self, path: &str) -> Option<&Fingerprint> {
        match self.files.get(path) {
            Some(FileFact::PrivateKey(k)) => Some(&k.public_key),
            Some(FileFact::Certificates {
                private_key: Some(k),
                ..
            }) => Some(&k.public_key),
            _ => None,
        }
    }
}

fn content_fingerprint(cas: &BTreeMap<Fingerprint, CaFact>, nodes: &[NodeSnapshot]) -> String {
    let body = serde_json::to_vec(&(cas, nodes)).expect("snapshot serialises");
    format!("sha256:{}", hex::encode(Sha256::digest(&body)))
}

/// Sort key that puts `w-2` before `w-10`.
pub fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut num = String::new();
    for c in name.chars() {
        if c.is_ascii_digit() {
            num.push(c);
        } else {
            if !num.is_empty() {
                out.push((std::mem::take(&mut text), num.parse().unwrap_or(u64::MAX)));
                num.clear();
            }
            text.push(c);
        }
    }
    out.push((text, num.parse().unwrap_or(0)));
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn natural_order() {
        let mut v = vec!["w-10", "w-2", "cp-1", "w-1"];
        v.sort_by_key(|n| super::natural_key(n));
        assert_eq!(v, ["cp-1", "w-1", "w-2", "w-10"]);
    }
}
