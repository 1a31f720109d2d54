//! PEM to rustls: trust bundles, identities (certificate chain + key) and the server name
//! a client verifies a serving certificate with. Shared by the apply's gates and prober
//! and by the sandbox's TLS listeners. One crypto provider: aws-lc-rs.

use super::ParsedCert;
use miette::Diagnostic;
use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;
use thiserror::Error;

/// Why PEM could not become rustls material.
#[derive(Clone, Debug, Error, Diagnostic, PartialEq, Eq)]
pub enum TlsError {
    /// A CA bundle holds a block that is not a certificate rustls can use.
    #[error("bad CA certificate in the trust bundle: {0}")]
    #[diagnostic(
        code(trustform::tls::bad_ca),
        help(
            "the bundle must hold PEM certificates (-----BEGIN CERTIFICATE-----); restore it from the backup or re-run the step that wrote it"
        )
    )]
    BadCa(String),
    /// A CA bundle holds no certificate.
    #[error("the trust bundle is empty")]
    #[diagnostic(
        code(trustform::tls::empty_bundle),
        help(
            "a bundle that trusts nothing rejects every peer; it must hold at least the issuing CA"
        )
    )]
    EmptyBundle,
    /// A certificate file is not PEM, or holds no certificate.
    #[error("bad certificate: {0}")]
    #[diagnostic(
        code(trustform::tls::bad_certificate),
        help(
            "the file must hold the PEM certificate (-----BEGIN CERTIFICATE-----) the component presents"
        )
    )]
    BadCertificate(String),
    /// A key file is not a PEM private key.
    #[error("bad private key: {0}")]
    #[diagnostic(
        code(trustform::tls::bad_key),
        help(
            "the file must hold a PEM private key (PKCS#1, SEC1 or PKCS#8) matching its certificate"
        )
    )]
    BadKey(String),
    /// A serving certificate names no host.
    #[error("{0}")]
    #[diagnostic(
        code(trustform::tls::server_name),
        help(
            "a serving certificate needs a subjectAltName (DNS or IP) that clients verify it with"
        )
    )]
    ServerName(String),
    /// A certificate and the key given with it do not go together.
    #[error("the certificate and its key do not go together: {0}")]
    #[diagnostic(
        code(trustform::tls::key_mismatch),
        help(
            "the key file (or key data) holds another certificate's key: restore both from the backup, or re-issue the certificate with its key"
        )
    )]
    KeyMismatch(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    #[diagnostic(
        code(trustform::tls::config),
        help(
            "the certificate and key do not go together, or use an algorithm rustls does not support (RSA, ECDSA P-256/P-384, Ed25519 are)"
        )
    )]
    Config(String),
}

/// aws-lc-rs, also installed as the process default (idempotent).
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A root store of every certificate in a PEM bundle; an empty bundle is an error.
pub fn roots(pem: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        store
            .add(c.map_err(|e| TlsError::BadCa(format!("{e:?}")))?)
            .map_err(|e| TlsError::BadCa(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(TlsError::EmptyBundle);
    }
    Ok(Arc::new(store))
}

/// A TLS identity: certificate chain and key, from PEM. Its `Debug` shows no key.
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// From PEM: the certificates of `cert`, the first private key of `key` (which may be
    /// the same combined text, as kubelet-client-current.pem is).
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadCertificate(format!("{e:?}")))?;
        if chain.is_empty() {
            return Err(TlsError::BadCertificate("no certificate".into()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::BadKey(format!("{e:?}")))?;
        Ok(Self { chain, key })
    }
}

/// The name a client verifies a serving certificate with: `127.0.0.1` when the
/// certificate holds that IP SAN (every sandbox endpoint listens there), else its first
/// SAN.
pub fn server_name_of(leaf: &ParsedCert) -> Result<ServerName<'static>, TlsError> {
    let sans = &leaf.facts.sans;
    let name = if sans.iter().any(|s| s == "IP:127.0.0.1") {
        "127.0.0.1"
    } else {
        let san = sans.first().ok_or_else(|| {
            TlsError::ServerName(format!(
                "the serving certificate {} has no subjectAltName",
                leaf.facts.common_name
            ))
        })?;
        san.strip_prefix("DNS:")
            .or_else(|| san.strip_prefix("IP:"))
            .unwrap_or(san)
    };
    ServerName::try_from(name.to_string())
        .map_err(|e| TlsError::ServerName(format!("{name:?}: {e}")))
}

/// A client's TLS configuration: it verifies the server against `roots_pem` or, with
/// `None`, does not verify it at all (an API server without
/// `--kubelet-certificate-authority` → a kubelet; a kubelet's health probe), and presents
/// `identity` when it has one.
pub fn client_config(
    roots_pem: Option<&[u8]>,
    identity: Option<Identity>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match roots_pem {
        Some(pem) => builder.with_root_certificates(roots(pem)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification::new())),
    };
    match identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain, id.key)
            .map_err(|e| TlsError::KeyMismatch(e.to_string())),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Accepts any server certificate (checking only the handshake signatures): what a
/// client that does not verify its server does.
#[derive(Debug)]
pub struct NoServerVerification(Arc<CryptoProvider>);

impl NoServerVerification {
    /// With this crate's crypto provider.
    pub fn new() -> Self {
        Self(provider())
    }
}

impl Default for NoServerVerification {
    fn default() -> Self {
        Self::new()
    }
}

impl rustls::client::danger::ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
