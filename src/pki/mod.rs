//! X.509 facts, bundles, issuance and kubeconfig files.
//!
//! Everything here is pure: it parses or produces bytes, it never touches the disk.
//! Private keys only ever live in [`SecretPem`], whose `Debug`/`Display` redact.

pub mod cert;
pub mod issue;
pub mod kubeconfig;
pub mod tls;
pub mod token;

pub use cert::{CertFacts, Fingerprint, ParsedCert, parse_certs, public_key_fingerprint};
pub use issue::{CaMaterial, KeyAlgorithm, LeafSpec};

use miette::Diagnostic;
use thiserror::Error;

/// A PEM-encoded private key. Never printed, logged, serialised or stored in a plan.
#[derive(Clone)]
pub struct SecretPem(String);

impl SecretPem {
    /// Wrap PEM text that holds a private key.
    pub fn new(pem: String) -> Self {
        Self(pem)
    }
    /// The PEM text, for writing to a 0600 key file or handing to rcgen.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretPem(<redacted>)")
    }
}

impl std::fmt::Display for SecretPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted private key>")
    }
}

/// Errors of the X.509 layer.
#[derive(Debug, Error, Diagnostic)]
pub enum PkiError {
    /// A PEM block could not be decoded (bad base64, truncated block).
    #[error("{what}: corrupt PEM block at line {line}")]
    #[diagnostic(
        code(trustform::pki::corrupt_pem),
        help(
            "the file must hold PEM blocks (-----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----); restore it from a backup or re-issue it"
        )
    )]
    CorruptPem {
        /// The file or field that held the PEM.
        what: String,
        /// 1-based line of the block's BEGIN marker.
        line: usize,
    },
    /// A PEM block decoded, but its DER is not a valid X.509 certificate.
    #[error("{what}: certificate at line {line} is not valid X.509: {reason}")]
    #[diagnostic(
        code(trustform::pki::bad_certificate),
        help("check that the file holds a certificate, not a key or CSR")
    )]
    BadCertificate {
        /// The file or field that held the certificate.
        what: String,
        /// 1-based line of the block's BEGIN marker.
        line: usize,
        /// What the parser said.
        reason: String,
    },
    /// A private key could not be parsed or used.
    #[error("{what}: unusable private key: {reason}")]
    #[diagnostic(
        code(trustform::pki::bad_key),
        help("trustform reads PKCS#1 (BEGIN RSA PRIVATE KEY), SEC1 and PKCS#8 keys")
    )]
    BadKey {
        /// The file or field that held the key.
        what: String,
        /// What the parser said.
        reason: String,
    },
    /// rcgen refused to build a certificate.
    #[error("cannot issue {what}: {reason}")]
    #[diagnostic(
        code(trustform::pki::issue),
        help(
            "the CA's key or the leaf's fields (names, lifetime) are not usable: check the `cas` entry and `issuance` in trustform.yaml"
        )
    )]
    Issue {
        /// The certificate being issued.
        what: String,
        /// What rcgen said.
        reason: String,
    },
}
