//! Credentials as a client or server holds them, for the gates' and the prober's real
//! handshakes: a kubeconfig's CA data and client identity (read through whatever holds
//! the files: a process's memory, or the disk now), and a simulated process's flags and
//! the files they name as it read them at its last start; and the client side of a
//! handshake, verifying its server or, as an API server without
//! `--kubelet-certificate-authority` does to kubelets, not.

use super::material::key_block;
use crate::exec::{self, Node};
use crate::pki::kubeconfig::{Kubeconfig, unb64};
use crate::pki::tls::{Identity, NoServerVerification, provider, roots};
use rustls::ClientConfig;
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// The client side of a kubeconfig's current context, reading a `certificate-authority`,
/// `client-certificate` or `client-key` file it names through `file`.
pub fn client_of(
    kc: &Kubeconfig,
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<KubeconfigClient, String> {
    let (cluster, user) = kc.current();
    let cluster = cluster.ok_or("no cluster")?;
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
        .ok_or("no certificate authority")?;
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

/// Parse a kubeconfig's bytes.
pub fn parse_kubeconfig(bytes: &[u8]) -> Result<Kubeconfig, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the kubeconfig is not UTF-8")?;
    serde_saphyr::from_str(text).map_err(|e| {
        let why = crate::redact::message(&e.without_snippet().to_string(), text);
        format!("the kubeconfig does not parse: {why}")
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

    /// The identity of a certificate flag and a key flag.
    pub fn identity(&self, cert: &str, key: &str) -> Result<Identity, String> {
        let c = self.flag_file(cert).ok_or(format!("no --{cert}"))?;
        let k = self.flag_file(key).ok_or(format!("no --{key}"))?;
        Identity::from_pem(&c, &k)
    }

    /// The kubelet's serving identity as it read it, whichever it serves (the
    /// self-signed `kubelet.crt`, `tlsCertFile`, or `kubelet-server-current.pem`).
    pub fn kubelet_serving(&self) -> Result<Identity, String> {
        let (cert, key) = self.held.kubelet_serving()?;
        Identity::from_pem(&cert, &key)
    }

    /// The kubelet's `authentication.x509.clientCAFile` bundle as it read it.
    pub fn kubelet_client_ca(&self) -> Result<Vec<u8>, String> {
        self.held
            .kubelet_client_ca()
            .ok_or_else(|| "no clientCAFile".to_string())
    }
}

/// A client's TLS configuration: it verifies the server against `roots` (PEM) or, with
/// `None`, does not verify it at all (an API server without
/// `--kubelet-certificate-authority` → a kubelet: the edge is unverified), and presents
/// `identity` when it has one (the kubelet still verifies that).
pub fn client_config(
    roots_pem: Option<&[u8]>,
    identity: Option<Identity>,
) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match roots_pem {
        Some(pem) => builder.with_root_certificates(roots(pem)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification::new())),
    };
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| format!("client identity: {e}")),
        None => Ok(builder.with_no_client_auth()),
    }
}
