//! The kubelet's configuration as trust sees it: the CA it verifies clients with, and
//! where its serving certificate comes from. The choice is the kubelet's own
//! (`cmd/kubelet/app/server.go`, `InitializeTLS`):
//!
//! - `serverTLSBootstrap: true`: a certificate requested from the cluster CA by a CSR
//!   and rotated by the kubelet's certificate manager, `kubelet-server-current.pem`
//!   (certificate and key) in its certificate directory;
//! - else `tlsCertFile`/`tlsPrivateKeyFile`, when either is set;
//! - else (kubeadm's default) `kubelet.crt`/`kubelet.key` in its certificate directory,
//!   which the kubelet makes itself at its first start when it cannot read them: a leaf
//!   `CN=<hostname>@<unix time>` issued by a CA of its own (`CN=<hostname>-ca@<unix
//!   time>`), both in `kubelet.crt`. The cluster's CAs sign neither; kubeadm sets no
//!   `--kubelet-certificate-authority`, so the API server does not verify it.
//!
//! trustform never writes `kubelet.crt` or `kubelet.key`: they belong to the kubelet.

use serde::{Deserialize, Serialize};

/// The kubelet's certificate directory (`--cert-dir`, kubeadm leaves the default).
pub const CERT_DIR: &str = "/var/lib/kubelet/pki";
/// The rotated serving certificate and key (`serverTLSBootstrap`).
pub const SERVER_CURRENT: &str = "/var/lib/kubelet/pki/kubelet-server-current.pem";
/// The self-signed serving certificate the kubelet makes (its CA after it).
pub const SELF_SIGNED_CERT: &str = "/var/lib/kubelet/pki/kubelet.crt";
/// The self-signed serving certificate's key.
pub const SELF_SIGNED_KEY: &str = "/var/lib/kubelet/pki/kubelet.key";

/// What trust reads of a `KubeletConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// `address`: where it serves its port (default `0.0.0.0`: every address).
    pub address: Option<String>,
    /// `port`: its HTTPS port (default 10250).
    pub port: Option<u16>,
    /// `authentication.x509.clientCAFile`.
    pub authentication: Authentication,
    /// `rotateCertificates`.
    pub rotate_certificates: bool,
    /// `serverTLSBootstrap`.
    #[serde(rename = "serverTLSBootstrap")]
    pub server_tls_bootstrap: bool,
    /// `tlsCertFile`.
    #[serde(rename = "tlsCertFile")]
    pub tls_cert_file: Option<String>,
    /// `tlsPrivateKeyFile`.
    #[serde(rename = "tlsPrivateKeyFile")]
    pub tls_private_key_file: Option<String>,
}

/// `authentication` of a `KubeletConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Authentication {
    /// `x509`.
    pub x509: X509,
}

/// `authentication.x509` of a `KubeletConfiguration`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct X509 {
    /// `clientCAFile`.
    #[serde(rename = "clientCAFile")]
    pub client_ca_file: Option<String>,
}

/// `authentication.x509.clientCAFile` of the `KubeletConfiguration` `text`.
pub fn client_ca_file(text: &str) -> Option<String> {
    Config::parse(text).ok()?.authentication.x509.client_ca_file
}

impl Config {
    /// Parse a `KubeletConfiguration` (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }

    /// `authentication.x509.clientCAFile`.
    pub fn client_ca_file(&self) -> Option<&str> {
        self.authentication.x509.client_ca_file.as_deref()
    }

    /// Where its serving certificate comes from.
    pub fn serving(&self) -> Serving {
        let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let (cert, key) = (set(&self.tls_cert_file), set(&self.tls_private_key_file));
        if self.server_tls_bootstrap {
            Serving::Rotated {
                pem: SERVER_CURRENT.into(),
            }
        } else if cert.is_some() || key.is_some() {
            Serving::TlsCertFile {
                cert: cert.unwrap_or_default(),
                key: key.unwrap_or_default(),
            }
        } else {
            Serving::SelfSigned {
                cert: SELF_SIGNED_CERT.into(),
                key: SELF_SIGNED_KEY.into(),
            }
        }
    }
}

/// Where the kubelet's serving certificate comes from (in the snapshot's JSON under
/// `kubelet.serving`: `{ "source": "self-signed", "cert": "/var/lib/kubelet/pki/kubelet.crt",
/// "key": "/var/lib/kubelet/pki/kubelet.key" }`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum Serving {
    /// Neither `serverTLSBootstrap` nor `tlsCertFile` (kubeadm's default): the kubelet
    /// makes `kubelet.crt`/`kubelet.key` itself, from a CA of its own.
    SelfSigned {
        /// `kubelet.crt`: the leaf, then the kubelet's own CA.
        cert: String,
        /// `kubelet.key`.
        key: String,
    },
    /// `tlsCertFile`/`tlsPrivateKeyFile`.
    TlsCertFile {
        /// `tlsCertFile`.
        cert: String,
        /// `tlsPrivateKeyFile`.
        key: String,
    },
    /// `serverTLSBootstrap: true`: from the cluster CA by a CSR, rotated by the kubelet.
    Rotated {
        /// `kubelet-server-current.pem`: certificate and key.
        pem: String,
    },
}

impl Serving {
    /// The certificate file (node path).
    pub fn cert(&self) -> &str {
        match self {
            Serving::SelfSigned { cert, .. } | Serving::TlsCertFile { cert, .. } => cert,
            Serving::Rotated { pem } => pem,
        }
    }

    /// The key file (node path; the certificate file for `kubelet-server-current.pem`).
    pub fn key(&self) -> &str {
        match self {
            Serving::SelfSigned { key, .. } | Serving::TlsCertFile { key, .. } => key,
            Serving::Rotated { pem } => pem,
        }
    }

    /// The files it is read from, without repeats or empty names.
    pub fn files(&self) -> Vec<&str> {
        let mut v = vec![self.cert()];
        if self.key() != self.cert() {
            v.push(self.key());
        }
        v.retain(|p| !p.is_empty());
        v
    }

    /// How people call it: `self-signed kubelet.crt`, `tlsCertFile /path`,
    /// `kubelet-server-current.pem (serverTLSBootstrap)`.
    pub fn describe(&self) -> String {
        match self {
            Serving::SelfSigned { cert, .. } => format!("self-signed {cert}"),
            Serving::TlsCertFile { cert, .. } => format!("tlsCertFile {cert}"),
            Serving::Rotated { pem } => format!("{pem} (serverTLSBootstrap)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_chooses_its_serving_certificate_as_it_does() {
        let serving = |text: &str| Config::parse(text).unwrap().serving();
        assert_eq!(
            serving("kind: KubeletConfiguration\n"),
            Serving::SelfSigned {
                cert: SELF_SIGNED_CERT.into(),
                key: SELF_SIGNED_KEY.into()
            }
        );
        assert_eq!(
            serving("serverTLSBootstrap: true\ntlsCertFile: /x.crt\n"),
            Serving::Rotated {
                pem: SERVER_CURRENT.into()
            }
        );
        assert_eq!(
            serving("tlsCertFile: /x.crt\ntlsPrivateKeyFile: /x.key\n"),
            Serving::TlsCertFile {
                cert: "/x.crt".into(),
                key: "/x.key".into()
            }
        );
        let c = Config::parse(
            "authentication:\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n",
        )
        .unwrap();
        assert_eq!(c.client_ca_file(), Some("/etc/kubernetes/pki/ca.crt"));
        assert_eq!(
            Serving::Rotated {
                pem: SERVER_CURRENT.into()
            }
            .files(),
            vec![SERVER_CURRENT]
        );
    }
}
