//! Kubeconfig files: the subset of the format that carries trust, with every other
//! field preserved on a round trip.

use super::SecretPem;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

type Extra = BTreeMap<String, serde_json::Value>;

/// kubeadm writes `contexts: null` and `users: null` (cluster-info): read them as empty.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A kubeconfig file (`clientcmd/v1` `Config`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kubeconfig {
    /// Always `v1`.
    #[serde(rename = "apiVersion", default = "v1")]
    pub api_version: String,
    /// Always `Config`.
    #[serde(default = "config_kind")]
    pub kind: String,
    /// Named clusters.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clusters: Vec<NamedCluster>,
    /// Named contexts.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub contexts: Vec<NamedContext>,
    /// The context kubectl uses.
    #[serde(rename = "current-context", default)]
    pub current_context: String,
    /// Preferences (kept as is).
    #[serde(default)]
    pub preferences: serde_json::Value,
    /// Named users.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub users: Vec<NamedUser>,
}

fn v1() -> String {
    "v1".into()
}
fn config_kind() -> String {
    "Config".into()
}

/// A named cluster entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedCluster {
    /// Entry name.
    pub name: String,
    /// The cluster.
    pub cluster: Cluster,
}

/// How to reach and trust an API server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cluster {
    /// Base64 PEM bundle of the CAs that verify the server.
    #[serde(
        rename = "certificate-authority-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority_data: Option<String>,
    /// Path of a PEM bundle of the CAs that verify the server.
    #[serde(
        rename = "certificate-authority",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority: Option<String>,
    /// Server URL.
    #[serde(default)]
    pub server: String,
    /// Other fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A named context entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedContext {
    /// Entry name.
    pub name: String,
    /// The context.
    pub context: Context,
}

/// A (cluster, user) pair.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Context {
    /// Cluster entry name.
    pub cluster: String,
    /// User entry name.
    pub user: String,
    /// Other fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A named user entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedUser {
    /// Entry name.
    pub name: String,
    /// The credentials.
    pub user: User,
}

/// Client credentials.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct User {
    /// Base64 PEM client certificate.
    #[serde(
        rename = "client-certificate-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate_data: Option<String>,
    /// Base64 PEM client key. Redacted in `Debug`.
    #[serde(
        rename = "client-key-data",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_key_data: Option<SecretB64>,
    /// Path of the client certificate (may hold the key too, as kubelet-client-current.pem).
    #[serde(
        rename = "client-certificate",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate: Option<String>,
    /// Path of the client key.
    #[serde(
        rename = "client-key",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub client_key: Option<String>,
    /// Other fields, kept.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Base64 of a private key, as kubeconfigs carry it. `Debug` redacts.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretB64(String);

impl SecretB64 {
    /// Encode a PEM key.
    pub fn encode(key: &SecretPem) -> Self {
        Self(b64(key.expose()))
    }
    /// Decode to PEM.
    pub fn decode(&self) -> Option<SecretPem> {
        unb64(&self.0).map(SecretPem::new)
    }
    /// Whether it decodes to PEM text with a private key block (not whether the key
    /// itself parses).
    pub fn holds_private_key(&self) -> bool {
        self.decode().is_some_and(|k| {
            super::cert::pem_blocks(k.expose(), "client-key-data")
                .is_ok_and(|b| b.iter().any(|b| b.label.ends_with("PRIVATE KEY")))
        })
    }
}

impl std::fmt::Debug for SecretB64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretB64(<redacted>)")
    }
}

/// Base64 of a text (kubeconfig `*-data` fields).
pub fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// Decode a kubeconfig `*-data` field to text.
pub fn unb64(data: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim().as_bytes())
        .ok()?;
    String::from_utf8(bytes).ok()
}

impl Kubeconfig {
    /// A kubeconfig with one cluster, one user and one context, as kubeadm writes them.
    pub fn single(
        cluster_name: &str,
        server: &str,
        ca_bundle_pem: &str,
        user_name: &str,
        user: User,
    ) -> Self {
        let context = format!("{user_name}@{cluster_name}");
        Self {
            api_version: v1(),
            kind: config_kind(),
            clusters: vec![NamedCluster {
                name: cluster_name.into(),
                cluster: Cluster {
                    certificate_authority_data: Some(b64(ca_bundle_pem)),
                    certificate_authority: None,
                    server: server.into(),
                    extra: Extra::new(),
                },
            }],
            contexts: vec![NamedContext {
                name: context.clone(),
                context: Context {
                    cluster: cluster_name.into(),
                    user: user_name.into(),
                    extra: Extra::new(),
                },
            }],
            current_context: context,
            preferences: serde_json::json!({}),
            users: vec![NamedUser {
                name: user_name.into(),
                user,
            }],
        }
    }

    /// Embedded client certificate + key.
    pub fn embedded_user(cert_pem: &str, key: &SecretPem) -> User {
        User {
            client_certificate_data: Some(b64(cert_pem)),
            client_key_data: Some(SecretB64::encode(key)),
            ..User::default()
        }
    }

    /// The cluster and user of the current context (or the first ones).
    pub fn current(&self) -> (Option<&NamedCluster>, Option<&NamedUser>) {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .or(self.contexts.first());
        let cluster = ctx
            .and_then(|c| self.clusters.iter().find(|k| k.name == c.context.cluster))
            .or(self.clusters.first());
        let user = ctx
            .and_then(|c| self.users.iter().find(|u| u.name == c.context.user))
            .or(self.users.first());
        (cluster, user)
    }

    /// YAML text of the file.
    pub fn to_yaml(&self) -> String {
        // One line per value, as kubeadm writes them: `sed` on certificate-authority-data
        // (the documented step 9) keeps working on files trustform wrote.
        let mut options = serde_saphyr::SerializerOptions::default();
        options.prefer_block_scalars = false;
        serde_saphyr::to_string_with_options(self, options).expect("kubeconfig serialises")
    }
}

#[cfg(test)]
mod null_lists {
    use super::Kubeconfig;

    #[test]
    fn kubeadm_cluster_info_with_null_lists_parses() {
        let text = "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: QUJD\n    server: https://10.0.0.1:6443\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {}\nusers: null\n";
        let k: Kubeconfig = serde_saphyr::from_str(text).expect("parses");
        assert_eq!(k.clusters.len(), 1);
        assert!(k.contexts.is_empty() && k.users.is_empty());
    }
}
