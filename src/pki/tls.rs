//! PEM to rustls: trust bundles, identities (certificate chain + key) and the server name
//! a client verifies a serving certificate with. Shared by the apply's gates and prober
//! and by the sandbox's TLS listeners. One crypto provider: aws-lc-rs.

use super::ParsedCert;
use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// aws-lc-rs, also installed as the process default (idempotent).
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A root store of every certificate in a PEM bundle; an empty bundle is an error.
pub fn roots(pem: &[u8]) -> Result<Arc<RootCertStore>, String> {
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem) {
        store
            .add(c.map_err(|e| format!("bad CA PEM: {e:?}"))?)
            .map_err(|e| format!("bad CA: {e}"))?;
    }
    if store.is_empty() {
        return Err("the trust bundle is empty".into());
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
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad certificate PEM: {e:?}"))?;
        if chain.is_empty() {
            return Err("no certificate".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("bad key PEM: {e:?}"))?;
        Ok(Self { chain, key })
    }
}

/// The name a client verifies a serving certificate with: `127.0.0.1` when the
/// certificate holds that IP SAN (every sandbox endpoint listens there), else its first
/// SAN.
pub fn server_name_of(leaf: &ParsedCert) -> Result<ServerName<'static>, String> {
    let sans = &leaf.facts.sans;
    let name = if sans.iter().any(|s| s == "IP:127.0.0.1") {
        "127.0.0.1"
    } else {
        let san = sans.first().ok_or("a serving certificate without SANs")?;
        san.strip_prefix("DNS:")
            .or_else(|| san.strip_prefix("IP:"))
            .unwrap_or(san)
    };
    ServerName::try_from(name.to_string()).map_err(|e| e.to_string())
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
