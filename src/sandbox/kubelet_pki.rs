//! A sandbox kubelet's certificates, as a kubeadm node's kubelet holds them: its client
//! certificate (`kubelet-client-current.pem`, certificate and key in one file, as the
//! kubelet writes it) and its serving certificate, which is either
//!
//! - self-signed, as the kubelet makes it when it has neither `serverTLSBootstrap` nor
//!   `tlsCertFile` (kubeadm's default, [`KubeletServing::SelfSigned`]): `kubelet.crt`
//!   holds a leaf `CN=<hostname>@<unix time>` (serverAuth, SAN the hostname) and then the
//!   CA that issued it, `CN=<hostname>-ca@<unix time>`, a CA of the kubelet's own
//!   (client-go's `GenerateSelfSignedCertKey`); `kubelet.key` its key, 0600; or
//! - from the cluster CA, as with `serverTLSBootstrap: true` after the CSR is approved
//!   ([`KubeletServing::Ca`]): `kubelet-server-current.pem`, `CN=system:node:<node>`,
//!   `O=system:nodes`, SANs the node name and address.

use super::SandboxError;
use crate::atomic::{self, KEY_MODE, PUBLIC_MODE};
use crate::layout;
use crate::pki::issue::{generate_key, issue_leaf, new_ca};
use crate::pki::{CaMaterial, KeyAlgorithm, LeafSpec, PkiError};
use std::path::Path;

/// How the sandbox's kubelets serve TLS (`sandbox create --kubelet-serving`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum KubeletServing {
    /// kubeadm's default: each kubelet serves a `kubelet.crt` it made itself, from a CA
    /// of its own; the API server has no `--kubelet-certificate-authority` and does not
    /// verify it.
    #[default]
    SelfSigned,
    /// As with `serverTLSBootstrap: true`: each kubelet serves
    /// `kubelet-server-current.pem` from the cluster CA, which the API server verifies
    /// with `--kubelet-certificate-authority`.
    Ca,
}

/// The self-signed serving certificate (leaf, then its CA, PEM) and its key, made as the
/// kubelet makes them for `host`.
pub fn self_signed(host: &str, alg: KeyAlgorithm) -> Result<(String, String), PkiError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ca = new_ca(&format!("{host}-ca@{now}"), alg, 365)?;
    let key = generate_key(alg)?;
    // GenerateSelfSignedCertKey(hostName, nil, nil): the host is the only SAN, an IP SAN
    // when it is an address.
    let san = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("IP:{host}")
    } else {
        format!("DNS:{host}")
    };
    let leaf = issue_leaf(
        &LeafSpec::server(&format!("{host}@{now}"), vec![san]),
        &key,
        &ca,
    )?;
    Ok((format!("{leaf}{}", ca.cert_pem), key.serialize_pem()))
}

/// Make `kubelet.crt`/`kubelet.key` on node `root` for `host` unless both are there, as
/// the kubelet does at start. Returns whether it made them.
pub fn ensure_self_signed(root: &Path, host: &str, alg: KeyAlgorithm) -> std::io::Result<bool> {
    let cert = root.join(layout::rel(crate::kubelet::SELF_SIGNED_CERT));
    let key = root.join(layout::rel(crate::kubelet::SELF_SIGNED_KEY));
    if cert.is_file() && key.is_file() {
        return Ok(false);
    }
    let (c, k) = self_signed(host, alg).map_err(std::io::Error::other)?;
    atomic::write(&key, k.as_bytes(), KEY_MODE)?;
    atomic::write(&cert, c.as_bytes(), PUBLIC_MODE)?;
    Ok(true)
}

/// Write the kubelet's certificates on node `root` (named `node`, at `ip`): its client
/// certificate from `ca`, and its serving certificate as `serving` says.
pub(super) fn write(
    root: &Path,
    node: &str,
    ip: &str,
    ca: &CaMaterial,
    alg: KeyAlgorithm,
    serving: KubeletServing,
) -> Result<(), SandboxError> {
    let pki = root.join(layout::KUBELET_PKI);
    let node_cn = format!("system:node:{node}");
    let client_key = generate_key(alg)?;
    let client = issue_leaf(
        &LeafSpec::client(&node_cn, &["system:nodes"]),
        &client_key,
        ca,
    )?;
    super::put(
        &pki.join("kubelet-client-current.pem"),
        &format!("{client}{}", client_key.serialize_pem()),
        KEY_MODE,
    )?;
    match serving {
        KubeletServing::SelfSigned => {
            let (cert, key) = self_signed(node, alg)?;
            super::put(&pki.join("kubelet.key"), &key, KEY_MODE)?;
            super::put(&pki.join("kubelet.crt"), &cert, PUBLIC_MODE)
        }
        KubeletServing::Ca => {
            let key = generate_key(alg)?;
            let mut spec =
                LeafSpec::server(&node_cn, vec![format!("DNS:{node}"), format!("IP:{ip}")]);
            spec.organizations = vec!["system:nodes".into()];
            let cert = issue_leaf(&spec, &key, ca)?;
            super::put(
                &pki.join("kubelet-server-current.pem"),
                &format!("{cert}{}", key.serialize_pem()),
                KEY_MODE,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::parse_certs;

    #[test]
    fn the_self_signed_certificate_is_a_leaf_from_a_ca_of_its_own() {
        let (pem, key) = self_signed("w-1", KeyAlgorithm::EcdsaP256).unwrap();
        let certs = parse_certs(&pem, "kubelet.crt").unwrap();
        assert_eq!(certs.len(), 2);
        let (leaf, ca) = (&certs[0], &certs[1]);
        assert!(!leaf.facts.is_ca && ca.facts.is_ca);
        assert!(leaf.is_signed_by(ca) && ca.is_signed_by(ca));
        assert!(leaf.facts.common_name.starts_with("w-1@"));
        assert!(ca.facts.common_name.starts_with("w-1-ca@"));
        assert_eq!(leaf.facts.sans, vec!["DNS:w-1".to_string()]);
        assert_eq!(leaf.facts.ext_key_usage, vec!["serverAuth".to_string()]);
        crate::sandbox::node::fit::key_pair(pem.as_bytes(), key.as_bytes()).unwrap();
    }
}
