//! TLS as the first control plane's kube-apiserver process holds it: the serving
//! certificate and key of its held `--tls-cert-file`/`--tls-private-key-file`, and the
//! client CAs of its held `--client-ca-file`. A restart of that process (a new held
//! generation) is noticed at the next accepted connection (and by a poller that closes
//! idle connections), never by reading the live files on disk.
//!
//! Like a real kube-apiserver (Go's `tls.RequestClientCert`), the TLS layer asks for a
//! client certificate, sends the client CAs' names as hints, checks that the client holds
//! the certificate's key, but does not judge the chain: the HTTP layer verifies it against
//! the held client CAs and answers 401 itself.

use crate::sandbox::runtime::{self, Held};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The component whose held state the server serves with.
pub const COMPONENT: &str = "kube-apiserver";

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// A client certificate that chains to the held client CAs: CN is the user, O the
    /// groups.
    User {
        /// User name (subject CN).
        name: String,
        /// Groups (subject O).
        groups: Vec<String>,
    },
    /// No client certificate.
    Anonymous,
    /// A client certificate the held client CAs do not accept.
    Rejected(String),
}

/// The TLS state of one held generation.
#[derive(Clone)]
pub struct Current {
    /// The held generation it was built from.
    pub generation: u64,
    /// For the acceptor.
    pub config: Arc<ServerConfig>,
    clients: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Current")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Current {
    /// Authenticate the peer's certificate chain.
    pub fn authenticate(&self, chain: Option<&[CertificateDer<'_>]>) -> Auth {
        let Some((end, intermediates)) = chain.and_then(|c| c.split_first()) else {
            return Auth::Anonymous;
        };
        if let Err(e) = self
            .clients
            .verify_client_cert(end, intermediates, UnixTime::now())
        {
            return Auth::Rejected(e.to_string());
        }
        match x509_parser::parse_x509_certificate(end.as_ref()) {
            Ok((_, cert)) => {
                let subject = cert.subject();
                let name = subject
                    .iter_common_name()
                    .next()
                    .and_then(|a| a.as_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let groups = subject
                    .iter_organization()
                    .filter_map(|a| a.as_str().ok())
                    .map(str::to_string)
                    .collect();
                Auth::User { name, groups }
            }
            Err(e) => Auth::Rejected(e.to_string()),
        }
    }
}

/// What the server needs of a held process to serve.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The process never started.
    #[error("{COMPONENT} on {0} has never started")]
    NotStarted(PathBuf),
    /// A flag or the file it names is missing from what the process holds.
    #[error("{COMPONENT} holds no {0}")]
    Missing(String),
    /// The held material is not usable.
    #[error("{COMPONENT}'s held {what} is unusable: {reason}")]
    Bad {
        /// Which material.
        what: String,
        /// Why.
        reason: String,
    },
}

/// Install aws-lc-rs as the process's crypto provider (idempotent) and return it.
pub fn provider() -> Arc<CryptoProvider> {
    crate::pki::tls::provider()
}

fn flag_file(held: &Held, flag: &str) -> Result<Vec<u8>, TlsError> {
    let flags = held.flags(COMPONENT);
    let path = flags
        .get(flag)
        .ok_or_else(|| TlsError::Missing(format!("--{flag}")))?;
    held.file(path)
        .ok_or_else(|| TlsError::Missing(format!("{path} (--{flag})")))
}

/// Build the TLS state of what `held` holds.
pub fn build(held: &Held) -> Result<Current, TlsError> {
    let provider = provider();
    let bad = |what: &str| {
        let what = what.to_string();
        move |reason: String| TlsError::Bad { what, reason }
    };
    let cert = flag_file(held, "tls-cert-file")?;
    let key = flag_file(held, "tls-private-key-file")?;
    let ca = flag_file(held, "client-ca-file")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("serving certificate")(format!("{e:?}")))?;
    if chain.is_empty() {
        return Err(bad("serving certificate")("no certificate".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| bad("serving key")(format!("{e:?}")))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        let c = c.map_err(|e| bad("client CA bundle")(format!("{e:?}")))?;
        roots
            .add(c)
            .map_err(|e| bad("client CA bundle")(e.to_string()))?;
    }
    let clients: Arc<dyn ClientCertVerifier> =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| bad("client CA bundle")(e.to_string()))?;
    let requesting = RequestClientCert {
        hints: clients.root_hint_subjects().to_vec(),
        provider: provider.clone(),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS configuration")(e.to_string()))?
        .with_client_cert_verifier(Arc::new(requesting))
        .with_single_cert(chain, key)
        .map_err(|e| bad("serving certificate and key")(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Current {
        generation: held.generation,
        config: Arc::new(config),
        clients,
    })
}

/// Asks for a client certificate and checks the handshake signature (the client holds
/// the key), leaving the chain to [`Current::authenticate`].
#[derive(Debug)]
struct RequestClientCert {
    hints: Vec<DistinguishedName>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Identity of the held-state file, to notice a restart without parsing it.
type Stamp = (u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The TLS state of a node's kube-apiserver, rebuilt when its held generation changes.
pub struct HeldTls {
    root: PathBuf,
    cached: Mutex<Option<(Option<Stamp>, Current)>>,
}

impl HeldTls {
    /// Follow `root`'s kube-apiserver.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            cached: Mutex::new(None),
        }
    }

    /// The node root it follows.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The TLS state of the generation held now.
    pub fn current(&self) -> Result<Current, TlsError> {
        let state = self
            .root
            .join(runtime::RUN_DIR)
            .join(format!("{COMPONENT}.json"));
        let now = stamp(&state);
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, cur)) = cached.as_ref()
            && now.is_some()
            && *s == now
        {
            return Ok(cur.clone());
        }
        let held = runtime::held(&self.root, COMPONENT)
            .ok_or_else(|| TlsError::NotStarted(self.root.clone()))?;
        if let Some((s, cur)) = cached.as_mut()
            && cur.generation == held.generation
        {
            *s = now;
            return Ok(cur.clone());
        }
        let cur = build(&held)?;
        *cached = Some((now, cur.clone()));
        Ok(cur)
    }
}
