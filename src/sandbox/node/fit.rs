//! Whether a process can start with the files it read: what makes the real component
//! exit at start, checked on what the simulated process holds ([`Held`]), worded as the
//! real one words it (Go's `crypto/tls` and `k8s.io/client-go/util/cert` errors).
//!
//! - a file a flag names (under `/etc/kubernetes/`) is missing;
//! - a certificate and its key do not match (`--tls-cert-file`/`--tls-private-key-file`,
//!   `--cert-file`/`--key-file`, the etcd, kubelet-client, proxy-client and signing pairs,
//!   a kubeconfig's client certificate and key, the kubelet's own certificates, its
//!   serving certificate from whichever source its configuration names);
//! - a CA file or a kubeconfig's CA data holds no certificate;
//! - the controller manager's `--cluster-signing-cert-file` holds more than one
//!   certificate (kubeadm#1350);
//! - a kubeconfig or the kubelet's configuration does not parse.

use crate::layout;
use crate::pki::cert::{pem_block, pem_blocks};
use crate::pki::kubeconfig::{Kubeconfig, unb64};
use crate::pki::{SecretPem, parse_certs, public_key_fingerprint};
use crate::sandbox::runtime::{self, Held};
use std::path::Path;

/// Key pairs of static pod flags: (certificate, key).
const PAIRS: &[(&str, &str)] = &[
    ("tls-cert-file", "tls-private-key-file"),
    ("cert-file", "key-file"),
    ("peer-cert-file", "peer-key-file"),
    ("etcd-certfile", "etcd-keyfile"),
    ("kubelet-client-certificate", "kubelet-client-key"),
    ("proxy-client-cert-file", "proxy-client-key-file"),
    ("cluster-signing-cert-file", "cluster-signing-key-file"),
];

/// Flags that name a CA bundle.
const CA_FLAGS: &[&str] = &[
    "client-ca-file",
    "requestheader-client-ca-file",
    "etcd-cafile",
    "kubelet-certificate-authority",
    "root-ca-file",
    "trusted-ca-file",
    "peer-trusted-ca-file",
];

/// Flags that name a kubeconfig.
const KUBECONFIG_FLAGS: &[&str] = &[
    "kubeconfig",
    "authentication-kubeconfig",
    "authorization-kubeconfig",
];

const NO_CERTS: &str = "data does not contain any valid RSA or ECDSA certificates";
const NO_CERT_PEM: &str = "tls: failed to find any PEM data in certificate input";
const NO_KEY_PEM: &str = "tls: failed to find any PEM data in key input";
const MISMATCH: &str = "tls: private key does not match public key";

fn missing(path: &str) -> String {
    format!("open {path}: no such file or directory")
}

/// Whether `cert` (PEM, the leaf first) and the private key in `key` (PEM, possibly after
/// certificates, as kubelet-client-current.pem holds both) belong together.
pub fn key_pair(cert: &[u8], key: &[u8]) -> Result<(), String> {
    let cert = std::str::from_utf8(cert).map_err(|_| NO_CERT_PEM.to_string())?;
    let leaf = parse_certs(cert, "certificate")
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or(NO_CERT_PEM)?;
    let key = std::str::from_utf8(key).map_err(|_| NO_KEY_PEM.to_string())?;
    let block = pem_blocks(key, "key")
        .ok()
        .and_then(|b| b.into_iter().find(|b| b.label.ends_with("PRIVATE KEY")))
        .ok_or(NO_KEY_PEM)?;
    let pem = SecretPem::new(pem_block(&block.label, &block.der));
    let public = public_key_fingerprint(&pem, "key").map_err(|_| NO_KEY_PEM.to_string())?;
    if public != leaf.facts.public_key {
        return Err(MISMATCH.into());
    }
    Ok(())
}

fn ca_bundle(bytes: &[u8]) -> Result<usize, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| NO_CERTS.to_string())?;
    match parse_certs(text, "bundle") {
        Ok(c) if !c.is_empty() => Ok(c.len()),
        _ => Err(NO_CERTS.into()),
    }
}

/// A kubeconfig's CA and client credentials; `file` reads a path it names.
fn kubeconfig(
    path: &str,
    bytes: &[u8],
    file: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<(), String> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| format!("error loading config file \"{path}\": not UTF-8"))?;
    let config: Kubeconfig = serde_saphyr::from_str(text).map_err(|e| {
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default().to_string();
        format!("error loading config file \"{path}\": {first}")
    })?;
    let (cluster, user) = config.current();
    let cluster = cluster.ok_or_else(|| {
        format!("invalid configuration: no configuration has been provided ({path})")
    })?;
    let ca = match (
        &cluster.cluster.certificate_authority_data,
        &cluster.cluster.certificate_authority,
    ) {
        (Some(data), _) => Some(unb64(data).map(String::into_bytes).unwrap_or_default()),
        (None, Some(p)) => Some(file(p).ok_or_else(|| {
            format!(
                "unable to read certificate-authority {p} for {path}: {}",
                missing(p)
            )
        })?),
        (None, None) => None,
    };
    if let Some(ca) = ca {
        ca_bundle(&ca).map_err(|e| format!("unable to load root certificates: {e}"))?;
    }
    let Some(user) = user else { return Ok(()) };
    let u = &user.user;
    let read = |data: Option<Vec<u8>>, p: &Option<String>| -> Result<Option<Vec<u8>>, String> {
        match (data, p) {
            (Some(d), _) => Ok(Some(d)),
            (None, Some(p)) => file(p).map(Some).ok_or_else(|| missing(p)),
            (None, None) => Ok(None),
        }
    };
    let cert = read(
        u.client_certificate_data
            .as_deref()
            .map(|d| unb64(d).unwrap_or_default().into_bytes()),
        &u.client_certificate,
    )?;
    let key = read(
        u.client_key_data.as_ref().map(|d| {
            d.decode()
                .map(|k| k.expose().as_bytes().to_vec())
                .unwrap_or_default()
        }),
        &u.client_key,
    )?;
    match (cert, key) {
        (Some(c), Some(k)) => key_pair(&c, &k),
        (Some(_), None) | (None, Some(_)) => Err(format!(
            "invalid configuration: client-cert-data and client-key-data must be specified together ({path})"
        )),
        (None, None) => Ok(()),
    }
}

/// Why static pod `component` cannot start with what it read (its held manifest's
/// flags and files); `root` is the node (to skip flags that name directories).
pub fn static_pod(root: &Path, component: &str, held: &Held) -> Result<(), String> {
    let manifest = layout::manifest(component);
    let text = held.file(&manifest).ok_or_else(|| missing(&manifest))?;
    let text = String::from_utf8(text).map_err(|_| format!("{manifest}: not UTF-8"))?;
    let flags = crate::manifest::parse(&text)
        .map_err(|e| format!("could not process manifest file \"{manifest}\": {e}"))?
        .flags;
    for (flag, value) in &flags {
        let is_dir = crate::transport::resolve(root, value).is_ok_and(|p| p.is_dir());
        if value.starts_with("/etc/kubernetes/") && !is_dir && held.file(value).is_none() {
            return Err(match flag.as_str() {
                f if CA_FLAGS.contains(&f) => {
                    format!("unable to load client CA provider: {}", missing(value))
                }
                _ => missing(value),
            });
        }
    }
    let get = |flag: &str| flags.get(flag).and_then(|p| held.file(p).map(|b| (p, b)));
    for flag in CA_FLAGS {
        if let Some((path, bytes)) = get(flag) {
            ca_bundle(&bytes)
                .map_err(|e| format!("unable to load client CA file \"{path}\": {e}"))?;
        }
    }
    for (cert, key) in PAIRS {
        if let (Some((cp, c)), Some((_, k))) = (get(cert), get(key)) {
            key_pair(&c, &k).map_err(|e| match *cert {
                "tls-cert-file" => format!("unable to load server certificate: {e}"),
                "cluster-signing-cert-file" => format!("error reading CA cert file \"{cp}\": {e}"),
                _ => e,
            })?;
        }
    }
    if let Some((path, bytes)) = get("cluster-signing-cert-file") {
        let n = ca_bundle(&bytes)?;
        if n != 1 {
            return Err(format!(
                "error reading CA cert file \"{path}\": expected 1 certificate, found {n}"
            ));
        }
    }
    for flag in KUBECONFIG_FLAGS {
        if let Some((path, bytes)) = get(flag) {
            kubeconfig(path, &bytes, &|p| held.file(p))?;
        }
    }
    Ok(())
}

/// Why the kubelet cannot start with what it read.
pub fn kubelet(held: &Held) -> Result<(), String> {
    let config_path = format!("/{}", layout::KUBELET_CONFIG);
    let config = held.file(&config_path).ok_or_else(|| {
        format!(
            "failed to load kubelet config file, path: {config_path}, error: {}",
            missing(&config_path)
        )
    })?;
    let text = String::from_utf8(config).unwrap_or_default();
    serde_saphyr::from_str::<serde_json::Value>(&text).map_err(|e| {
        let first = e.to_string();
        format!(
            "failed to load kubelet config file, path: {config_path}, error: {}",
            first.lines().next().unwrap_or_default()
        )
    })?;
    if let Some(ca) = runtime::kubelet_client_ca_file(&text) {
        let bytes = held.file(&ca).ok_or_else(|| {
            format!(
                "failed to run Kubelet: unable to load client CA file {ca}: {}",
                missing(&ca)
            )
        })?;
        ca_bundle(&bytes).map_err(|e| {
            format!("failed to run Kubelet: unable to load client CA file {ca}: {e}")
        })?;
    }
    let conf = format!("/{}", layout::KUBELET_CONF);
    let bytes = held.file(&conf).ok_or_else(|| {
        "failed to run Kubelet: unable to load bootstrap kubeconfig: stat /etc/kubernetes/bootstrap-kubelet.conf: no such file or directory".to_string()
    })?;
    kubeconfig(&conf, &bytes, &|p| held.file(p))
        .map_err(|e| format!("failed to run Kubelet: {e}"))?;
    // Its serving certificate, whichever it serves: a self-signed kubelet.crt it made at
    // start, tlsCertFile, or kubelet-server-current.pem (absent until its CSR is
    // approved: it starts without one).
    let serving = crate::kubelet::Config::parse(&text)
        .map(|c| c.serving())
        .unwrap_or(crate::kubelet::Serving::Rotated {
            pem: crate::kubelet::SERVER_CURRENT.into(),
        });
    let (cert, key) = (held.file(serving.cert()), held.file(serving.key()));
    match (cert, key, &serving) {
        (Some(c), Some(k), _) => key_pair(&c, &k).map_err(|e| {
            format!(
                "failed to run Kubelet: invalid serving certificate {}: {e}",
                serving.cert()
            )
        })?,
        (_, _, crate::kubelet::Serving::Rotated { .. }) => {}
        (c, _, _) => {
            let gone = if c.is_none() {
                serving.cert()
            } else {
                serving.key()
            };
            return Err(format!(
                "failed to run Kubelet: invalid serving certificate {}: {}",
                serving.cert(),
                missing(gone)
            ));
        }
    }
    Ok(())
}
