//! Credentials as a client or server holds them, for the gates' and the prober's real
//! handshakes: a kubeconfig's CA data and client identity (read through whatever holds
//! the files: a process's memory, or the disk now), and a process's flags and the files
//! they name as it read them at its last start. The handshake itself is
//! [`crate::exec::https::Handshake`], the same for gates and prober.

use super::error::TrustError;
use super::material::key_block;
use crate::exec::{self, Node};
use crate::pki::kubeconfig::{Kubeconfig, unb64};
use crate::pki::tls::Identity;
use std::collections::BTreeMap;

/// What a kubeconfig gives a client.
#[derive(Clone, Debug)]
pub struct KubeconfigClient {
    /// The CA bundle it verifies the server with (PEM).
    pub ca: Vec<u8>,
    /// Its client certificate and key, when it has one.
    pub identity: Option<Identity>,
    /// The host of its server URL.
    pub host: String,
}

/// The client side of a kubeconfig's current context (`at` names it), reading a
/// `certificate-authority`, `client-certificate` or `client-key` file it names through
/// `file`.
pub fn client_of(
    kc: &Kubeconfig,
    at: &str,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<KubeconfigClient, TrustError> {
    let bad = |reason: &str| TrustError::Kubeconfig {
        at: at.to_string(),
        reason: reason.to_string(),
    };
    let (cluster, user) = kc.current();
    let cluster = cluster.ok_or_else(|| bad("its current context names no cluster"))?;
    let ca = cluster
        .cluster
        .certificate_authority_data
        .as_deref()
        .and_then(unb64)
        .map(String::into_bytes)
        .or_else(|| {
            cluster
                .cluster
                .certificate_authority
                .as_deref()
                .and_then(file)
        })
        .ok_or_else(|| bad("its cluster has no certificate authority"))?;
    let host = cluster
        .cluster
        .server
        .trim_start_matches("https://")
        .split([':', '/'])
        .next()
        .unwrap_or("")
        .to_string();
    let identity = match user.map(|u| &u.user) {
        Some(u) => {
            let cert = u
                .client_certificate_data
                .as_deref()
                .and_then(unb64)
                .map(String::into_bytes)
                .or_else(|| u.client_certificate.as_deref().and_then(file));
            let key = u
                .client_key_data
                .as_ref()
                .and_then(|k| k.decode())
                .map(|k| k.expose().as_bytes().to_vec())
                .or_else(|| u.client_key.as_deref().and_then(file))
                .or_else(|| {
                    // kubelet-client-current.pem holds the key beside the certificate.
                    let c = u.client_certificate.as_deref().and_then(file)?;
                    let t = String::from_utf8(c).ok()?;
                    key_block(&t, "client certificate").map(|k| k.expose().as_bytes().to_vec())
                });
            match (cert, key) {
                (Some(c), Some(k)) => Some(Identity::from_pem(&c, &k)?),
                _ => None,
            }
        }
        None => None,
    };
    Ok(KubeconfigClient { ca, identity, host })
}

/// Parse a kubeconfig's bytes (`at` names it).
pub fn parse_kubeconfig(bytes: &[u8], at: &str) -> Result<Kubeconfig, TrustError> {
    let bad = |reason: String| TrustError::Kubeconfig {
        at: at.to_string(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    serde_saphyr::from_str(text).map_err(|e| {
        let why = crate::redact::message(&e.without_snippet().to_string(), text);
        bad(format!("does not parse: {why}"))
    })
}

/// A simulated process as it holds itself: what it read at its last start.
pub struct Proc {
    /// Its memory.
    pub held: crate::held::Held,
    /// Its flags (static pods), from the manifest as it read it.
    pub flags: BTreeMap<String, String>,
}

impl Proc {
    /// `component` on `node`, if it is a sandbox node and the component ever started.
    pub fn of(node: &Node, component: &str) -> Option<Self> {
        let held = exec::held(node, component)?;
        Some(Self::from_held(held, component))
    }

    /// From held state already read.
    pub fn from_held(held: crate::held::Held, component: &str) -> Self {
        let flags = held.flags(component);
        Self { held, flags }
    }

    /// A file as it read it.
    pub fn file(&self, abs: &str) -> Option<Vec<u8>> {
        self.held.file(abs)
    }

    /// The file a flag names, as it read it.
    pub fn flag_file(&self, flag: &str) -> Option<Vec<u8>> {
        self.file(self.flags.get(flag)?)
    }

    /// The identity of a certificate flag and a key flag (`holder` names the process).
    pub fn identity(&self, holder: &str, cert: &str, key: &str) -> Result<Identity, TrustError> {
        let flag = |f: &str| {
            self.flag_file(f).ok_or_else(|| TrustError::NotHeld {
                holder: holder.to_string(),
                what: format!("--{f}"),
            })
        };
        Ok(Identity::from_pem(&flag(cert)?, &flag(key)?)?)
    }
}
