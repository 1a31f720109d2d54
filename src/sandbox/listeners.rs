//! The sandbox's TLS endpoints: one loopback listener for every simulated process that
//! serves TLS, so that a prober (`trustform apply --probe`) or `openssl s_client` can do
//! real handshakes against what each process holds *now*.
//!
//! - per control plane: `kube-apiserver` (its held `--tls-cert-file`; a client
//!   certificate is optional, as pods come with a token, but one presented must chain to
//!   its held `--client-ca-file`), `etcd` (`--cert-file`, client certificates required
//!   from `--trusted-ca-file`) and `etcd-peer` (the `--peer-` ones);
//! - per node with a kubelet: `kubelet` (the serving certificate it holds: the
//!   self-signed `kubelet.crt` it made, kubeadm's default, or `tlsCertFile`, or
//!   `kubelet-server-current.pem` with `serverTLSBootstrap`; client certificates
//!   required from its held `authentication.x509.clientCAFile`);
//! - one aggregated API server, serving with a CA and certificate generated at start
//!   (kept in memory only) and requiring client certificates that chain to
//!   `requestheader-client-ca-file` of kube-system/extension-apiserver-authentication as
//!   the API server's store holds it now (a real aggregated server reloads it).
//!
//! Each accepted connection is answered with the component's held state of that moment
//! (the TLS configuration is cached per held generation): the handshake completes,
//! the listener reads the request (a GET; none from `openssl s_client`), answers
//! `HTTP/1.1 200 OK` with `ok`, and closes. A restart in the sandbox replaces the held
//! state atomically, so a listener has no outage of its own.
//!
//! Real etcd members ([`crate::sandbox::etcd`]) serve their own ports: their addresses
//! are published instead of a listener's.
//!
//! The addresses are written to `DIR/run/endpoints.json` (see [`Endpoints`]; public data
//! only), which [`Listeners::shutdown`] removes.

use crate::pki::issue::{generate_key, issue_leaf, new_ca};
use crate::pki::tls::{Identity, provider, roots};
use crate::pki::{KeyAlgorithm, LeafSpec, PkiError};
use crate::sandbox::Sandbox;
use crate::sandbox::apiserver::Store;
use crate::sandbox::objects::EXTENSION_AUTH_CONFIGMAP;
use crate::sandbox::runtime::{self, Held};
use miette::Diagnostic;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub use crate::apply::endpoints::ENDPOINTS;

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::apply::endpoints::{AggregatedEndpoint, Endpoints};

/// Errors of starting the listeners.
#[derive(Debug, Error, Diagnostic)]
pub enum ListenerError {
    /// The directory holds no sandbox.
    #[error("{dir} is not a sandbox (cannot read its sandbox.json)")]
    #[diagnostic(
        code(trustform::sandbox::listeners::no_sandbox),
        help("create one with `trustform sandbox create DIR`")
    )]
    NoSandbox {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A loopback port could not be bound.
    #[error("cannot listen on 127.0.0.1")]
    #[diagnostic(
        code(trustform::sandbox::listeners::bind),
        help("free some loopback ports (every listener takes one on 127.0.0.1)")
    )]
    Bind(#[source] std::io::Error),
    /// The endpoints file could not be written.
    #[error("cannot write {path}")]
    #[diagnostic(
        code(trustform::sandbox::listeners::io),
        help("check the sandbox directory's permissions")
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The aggregated API server's certificates could not be made.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Pki(#[from] PkiError),
    /// The aggregated API server's identity does not load into rustls.
    #[error("the aggregated API server's identity is unusable: {0}")]
    #[diagnostic(code(trustform::sandbox::listeners::identity))]
    Identity(String),
}

/// The running listeners. Dropping them without [`Listeners::shutdown`] stops them too,
/// but leaves the endpoints file.
pub struct Listeners {
    /// Where they are (also in `DIR/run/endpoints.json`).
    pub endpoints: Endpoints,
    dir: PathBuf,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listeners")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Listeners {
    /// How many listeners run.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether none runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Stop every listener (and the store clone of the aggregated server) and remove the
    /// endpoints file, if it is still ours.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        let ours = Endpoints::load(&self.dir).is_ok_and(|e| e.pid == self.endpoints.pid);
        if ours {
            let _ = std::fs::remove_file(Endpoints::path(&self.dir));
        }
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// What a held process serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Serve {
    /// kube-apiserver: client certificates optional.
    ApiServer,
    /// etcd's client (or, `peer`, peer) port: client certificates required.
    Etcd { peer: bool },
    /// The kubelet's port: client certificates required.
    Kubelet,
}

impl Serve {
    /// The component that holds it.
    pub(crate) fn component(self) -> &'static str {
        match self {
            Serve::ApiServer => "kube-apiserver",
            Serve::Etcd { .. } => "etcd",
            Serve::Kubelet => "kubelet",
        }
    }

    /// Its name as a process (`etcd-peer` for etcd's peer port).
    pub(crate) fn process(self) -> &'static str {
        match self {
            Serve::Etcd { peer: true } => "etcd-peer",
            other => other.component(),
        }
    }

    /// (identity, client CA bundle, client certificate required) of what it holds.
    fn material(self, held: &Held) -> Result<(Identity, Vec<u8>, bool), String> {
        let c = self.component();
        let file = |flag: &str| {
            held.flag_file(c, flag)
                .ok_or_else(|| format!("{c} holds no --{flag}"))
        };
        match self {
            Serve::ApiServer => Ok((
                Identity::from_pem(&file("tls-cert-file")?, &file("tls-private-key-file")?)
                    .map_err(|e| e.to_string())?,
                file("client-ca-file")?,
                false,
            )),
            Serve::Etcd { peer } => {
                let p = if peer { "peer-" } else { "" };
                Ok((
                    Identity::from_pem(
                        &file(&format!("{p}cert-file"))?,
                        &file(&format!("{p}key-file"))?,
                    )
                    .map_err(|e| e.to_string())?,
                    file(&format!("{p}trusted-ca-file"))?,
                    true,
                ))
            }
            Serve::Kubelet => {
                let (cert, key) = held.kubelet_serving()?;
                Ok((
                    Identity::from_pem(&cert, &key).map_err(|e| e.to_string())?,
                    held.kubelet_client_ca()
                        .ok_or("the kubelet holds no clientCAFile")?,
                    true,
                ))
            }
        }
    }
}

/// A server configuration verifying clients against `client_ca`.
fn server_config(
    identity: Identity,
    client_ca: &[u8],
    required: bool,
) -> Result<Arc<ServerConfig>, String> {
    let builder = WebPkiClientVerifier::builder_with_provider(
        roots(client_ca).map_err(|e| e.to_string())?,
        provider(),
    );
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let verifier = builder.build().map_err(|e| e.to_string())?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| format!("serving certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// The cached configuration of one held generation.
#[derive(Default)]
struct HeldCache {
    stamp: Option<runtime::Stamp>,
    generation: u64,
    config: Option<Arc<ServerConfig>>,
}

/// The TLS configuration of what a process of a node holds now (cached per held
/// generation): what its listeners here, and its live endpoints
/// ([`crate::sandbox::node::serve`]), answer with.
pub(crate) struct HeldTls {
    root: PathBuf,
    serve: Serve,
    cache: Mutex<HeldCache>,
}

impl HeldTls {
    /// `serve` of the node whose `/` is `root`.
    pub(crate) fn new(root: &Path, serve: Serve) -> Self {
        Self {
            root: root.to_path_buf(),
            serve,
            cache: Mutex::default(),
        }
    }

    /// The configuration of what is held now.
    pub(crate) fn config(&self) -> Result<Arc<ServerConfig>, String> {
        let (root, serve) = (&self.root, self.serve);
        let component = serve.component();
        let stamp = runtime::stamp(root, component);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = &cache.config
            && stamp.is_some()
            && stamp == cache.stamp
        {
            return Ok(c.clone());
        }
        let held =
            runtime::held(root, component).ok_or_else(|| format!("{component} is not running"))?;
        if let Some(c) = cache.config.clone()
            && held.generation == cache.generation
        {
            cache.stamp = stamp;
            return Ok(c);
        }
        let (identity, ca, required) = serve.material(&held)?;
        let config = server_config(identity, &ca, required)?;
        *cache = HeldCache {
            stamp,
            generation: held.generation,
            config: Some(config.clone()),
        };
        Ok(config)
    }

    /// Log a failed handshake in the serving process's log, as Go's `crypto/tls` words
    /// it (nothing when the client just went away).
    /// Whether the process accepts a service-account token: the API server, with a key
    /// of the `--service-account-key-file` it read at its last start; the others take
    /// no tokens and ignore them.
    pub(crate) fn bearer(&self, token: &str) -> Result<(), String> {
        if self.serve != Serve::ApiServer {
            return Ok(());
        }
        let held = runtime::held(&self.root, "kube-apiserver").ok_or("not running")?;
        let flags = held.flags("kube-apiserver");
        let keys = flags
            .get("service-account-key-file")
            .and_then(|f| held.file(f))
            .ok_or("no --service-account-key-file")?;
        let keys = String::from_utf8_lossy(&keys);
        crate::sandbox::tokens::verify(token, &keys, crate::sandbox::tokens::unix_now()).map(drop)
    }

    pub(crate) fn log_failure(&self, peer: &str, e: &std::io::Error) {
        let Some(error) = go_tls_error(e) else {
            return;
        };
        let component = self.serve.component();
        let pid = if component == "kubelet" {
            crate::sandbox::node::Machine::open(&self.root)
                .load()
                .kubelet
                .main_pid
        } else {
            1
        };
        crate::sandbox::node::logs::handshake_error(&self.root, component, pid, peer, &error);
    }
}

/// Where a listener's configuration comes from.
enum Source {
    Held(HeldTls),
    Aggregated {
        identity: Identity,
        store: Store,
        cache: Mutex<Option<(String, Arc<ServerConfig>)>>,
    },
}

impl Source {
    /// The configuration of what is held now.
    fn config(&self) -> Result<Arc<ServerConfig>, String> {
        match self {
            Source::Held(h) => h.config(),
            Source::Aggregated {
                identity,
                store,
                cache,
            } => {
                let cm = store
                    .get("configmaps", Some("kube-system"), EXTENSION_AUTH_CONFIGMAP)
                    .ok_or("kube-system/extension-apiserver-authentication does not exist")?;
                let ca = cm["data"]["requestheader-client-ca-file"]
                    .as_str()
                    .ok_or(
                        "extension-apiserver-authentication has no requestheader-client-ca-file",
                    )?
                    .to_string();
                let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((pem, c)) = cache.as_ref()
                    && *pem == ca
                {
                    return Ok(c.clone());
                }
                let config = server_config(identity.clone(), ca.as_bytes(), true)?;
                *cache = Some((ca, config.clone()));
                Ok(config)
            }
        }
    }
}

/// Where a real etcd member serves clients (`peer`: peers), as it read its flags.
fn member_address(root: &Path, peer: bool) -> Option<String> {
    let flags = runtime::held(root, "etcd")?.flags("etcd");
    let (host, port) = crate::apply::live::etcd_address(&flags, peer)?;
    Some(format!("{host}:{port}"))
}

async fn bind() -> Result<(TcpListener, String), ListenerError> {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(ListenerError::Bind)?;
    let addr = l.local_addr().map_err(ListenerError::Bind)?.to_string();
    Ok((l, addr))
}

/// Start a listener for every TLS-serving process of sandbox `dir` and the aggregated
/// API server (tokio; returns once all listen and `DIR/run/endpoints.json` is written).
/// `store` is the running API server's store.
pub async fn start(dir: &Path, store: Store) -> Result<Listeners, ListenerError> {
    let dir = std::path::absolute(dir).map_err(|source| ListenerError::NoSandbox {
        dir: dir.to_path_buf(),
        source,
    })?;
    let sandbox = Sandbox::load(&dir).map_err(|source| ListenerError::NoSandbox {
        dir: dir.clone(),
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let mut endpoints = Endpoints {
        pid: std::process::id(),
        ..Endpoints::default()
    };
    let mut sources: Vec<(TcpListener, Source)> = vec![];
    let real_etcd = crate::sandbox::etcd::real(&dir);
    for node in &sandbox.nodes {
        let components = runtime::components(&node.root);
        let has = |c: &str| components.iter().any(|x| x == c);
        let mut serves = vec![];
        if has("kube-apiserver") {
            serves.push(Serve::ApiServer);
        }
        if has("etcd") {
            serves.extend([Serve::Etcd { peer: false }, Serve::Etcd { peer: true }]);
        }
        if has("kubelet") {
            serves.push(Serve::Kubelet);
        }
        for serve in serves {
            if let Serve::Etcd { peer } = serve
                && real_etcd
            {
                // A real member serves its own ports: the prober dials them.
                if let Some(addr) = member_address(&node.root, peer) {
                    endpoints
                        .processes
                        .insert(format!("{}/{}", node.name, serve.process()), addr);
                }
                continue;
            }
            let (l, addr) = bind().await?;
            endpoints
                .processes
                .insert(format!("{}/{}", node.name, serve.process()), addr);
            sources.push((l, Source::Held(HeldTls::new(&node.root, serve))));
        }
    }
    // The aggregated API server: its own CA, as an APIService's caBundle would hold it.
    let alg = KeyAlgorithm::EcdsaP256;
    let ca = new_ca("sandbox-aggregated-apiserver-ca", alg, 365)?;
    let key = generate_key(alg)?;
    let cert = issue_leaf(
        &LeafSpec::server(
            "sandbox-aggregated-apiserver",
            vec!["DNS:localhost".into(), "IP:127.0.0.1".into()],
        ),
        &key,
        &ca,
    )?;
    let identity = Identity::from_pem(cert.as_bytes(), key.serialize_pem().as_bytes())
        .map_err(|e| ListenerError::Identity(e.to_string()))?;
    let (l, address) = bind().await?;
    endpoints.aggregated = Some(AggregatedEndpoint {
        address,
        ca: ca.cert_pem.clone(),
    });
    sources.push((
        l,
        Source::Aggregated {
            identity,
            store,
            cache: Mutex::default(),
        },
    ));
    let path = Endpoints::path(&dir);
    let json = serde_json::to_string_pretty(&endpoints).expect("endpoints serialise");
    crate::atomic::write(&path, json.as_bytes(), crate::atomic::PUBLIC_MODE).map_err(|source| {
        ListenerError::Io {
            path: path.clone(),
            source,
        }
    })?;
    let tasks = sources
        .into_iter()
        .map(|(l, s)| tokio::spawn(accept_loop(l, Arc::new(s), stop_rx.clone())))
        .collect();
    Ok(Listeners {
        endpoints,
        dir,
        stop,
        tasks,
    })
}

async fn accept_loop(listener: TcpListener, source: Arc<Source>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            r = listener.accept() => match r {
                Ok((tcp, _)) => {
                    conns.spawn(answer(source.clone(), tcp));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

const UNKNOWN_AUTHORITY: &str =
    "tls: failed to verify certificate: x509: certificate signed by unknown authority";

/// A failed handshake as Go's `crypto/tls` words it on the server (`None`: the client
/// went away before saying anything, which is not worth a line).
fn go_tls_error(e: &std::io::Error) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<E>())?;
    Some(match inner {
        E::AlertReceived(A::BadCertificate) => "remote error: tls: bad certificate".into(),
        E::AlertReceived(A::UnknownCA) => "remote error: tls: unknown certificate authority".into(),
        E::AlertReceived(A::CertificateExpired) => "remote error: tls: expired certificate".into(),
        E::AlertReceived(a) => format!("remote error: tls: {a:?}").to_lowercase(),
        // A self-signed stranger is "CA used as end entity" to webpki; Go only sees that
        // no root it trusts signed it.
        E::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => UNKNOWN_AUTHORITY.into(),
        E::InvalidCertificate(C::Other(o)) if format!("{o:?}").contains("CaUsedAsEndEntity") => {
            UNKNOWN_AUTHORITY.into()
        }
        E::InvalidCertificate(
            C::Expired | C::NotValidYet | C::ExpiredContext { .. } | C::NotValidYetContext { .. },
        ) => "tls: failed to verify certificate: x509: certificate has expired or is not yet valid"
            .into(),
        E::InvalidCertificate(c) => format!("tls: failed to verify certificate: x509: {c:?}"),
        E::NoCertificatesPresented => "tls: client didn't provide a certificate".into(),
        other => format!("tls: {other}"),
    })
}

impl Source {
    /// Log a failed handshake in the serving process's log.
    fn log_failure(&self, peer: &str, e: &std::io::Error) {
        if let Source::Held(h) = self {
            h.log_failure(peer, e);
        }
    }
}

/// How long a listener waits for a client's request after the handshake (`openssl
/// s_client` sends none: it is answered all the same).
const REQUEST_WAIT: Duration = Duration::from_millis(250);

/// The answer to every request: a component's health answer.
const ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

/// One connection: handshake with what is held now, read the request (if one comes),
/// answer `200 ok`, close. Reading the request first means the close never resets a
/// connection whose request is unread.
async fn answer(source: Arc<Source>, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    // A process that holds nothing usable answers no handshake: the client sees the
    // connection close.
    let Ok(config) = source.config() else { return };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            source.log_failure(&peer, &e);
            return;
        }
        Err(_) => return,
    };
    let mut head = Vec::new();
    let _ = tokio::time::timeout(REQUEST_WAIT, async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    // A service-account token the request brings must verify (the API server).
    let refused = match (&*source, bearer_of(&head)) {
        (Source::Held(h), Some(token)) => h.bearer(&token).is_err(),
        _ => false,
    };
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        tls.write_all(if refused {
            crate::sandbox::tokens::UNAUTHORIZED
        } else {
            ANSWER
        })
        .await?;
        tls.shutdown().await
    })
    .await;
}

fn bearer_of(head: &[u8]) -> Option<String> {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(crate::sandbox::tokens::bearer)
}
