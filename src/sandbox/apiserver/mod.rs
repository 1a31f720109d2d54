//! The sandbox's HTTPS Kubernetes API server. kube-rs and `kubectl` talk to it as to a
//! real kube-apiserver: TLS with client certificates, discovery (legacy and aggregated),
//! get/list/create/update/patch/delete/watch, label and field selectors, paging, the four
//! patch types, the `status` and CSR `approval` subresources, `dryRun`, and objects that
//! survive a restart.
//!
//! It serves with what the first control plane's kube-apiserver *process* holds (see
//! [`crate::sandbox::runtime`]): its serving certificate, its key and its client CAs as
//! read at its last restart. `trustform apply` restarting that process is noticed at the
//! next connection, and idle connections of the old generation are closed, as a real
//! restart would.
//!
//! Authentication: a client certificate that chains to the held `--client-ca-file`; the
//! user is its CN, the groups its O. Anything else is 401, `/healthz` included.
//! Authorization: every authenticated user may do everything (no RBAC).

pub mod discovery;
pub mod faults;
pub mod http;
pub mod ids;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod select;
pub mod status;
pub mod store;
pub mod table;
pub mod tls;

pub use faults::Faults;
pub use store::{Event, EventKind, Store, StoreError};

use crate::sandbox::{Role, Sandbox};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use miette::Diagnostic;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often the held state of the API server process is checked for a restart.
const RESTART_POLL: Duration = Duration::from_millis(150);

/// How long the connections of a restarted process are still served (its shutdown
/// delay), and then may finish their requests.
const DRAIN: Duration = Duration::from_secs(2);

/// Errors of the API server.
#[derive(Debug, Error, Diagnostic)]
pub enum ApiServerError {
    /// The directory holds no sandbox.
    #[error("{dir} is not a sandbox (cannot read its sandbox.json)")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::no_sandbox),
        help("create one with `trustform sandbox create DIR`")
    )]
    NoSandbox {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox has no control plane to serve as.
    #[error("the sandbox in {0} has no control-plane node")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::no_control_plane),
        help("create the sandbox with --control-planes 1 or more")
    )]
    NoControlPlane(PathBuf),
    /// The kube-apiserver process holds nothing to serve with.
    #[error(transparent)]
    #[diagnostic(
        code(trustform::sandbox::apiserver::tls),
        help(
            "the server serves with what cp-1's kube-apiserver read at its last restart: check its manifest flags and the files they name, then restart it"
        )
    )]
    Tls(#[from] tls::TlsError),
    /// The port could not be bound.
    #[error("cannot listen on {addr}")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::bind),
        help("pick another --port, or stop what listens there")
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The object store failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(#[from] StoreError),
    /// A file could not be read or written.
    #[error("cannot write {path}")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::io),
        help("check the sandbox directory's permissions")
    )]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A fault specification does not parse.
    #[error("bad fault specification: {0}")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::faults),
        help("write faults as 500=0.05,409=0.05,latency=20ms (any subset)")
    )]
    Faults(String),
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on (127.0.0.1: the kubeconfigs name it).
    pub bind: IpAddr,
    /// Port; `None`: reuse the port in the kubeconfigs if free, else any free port.
    pub port: Option<u16>,
    /// Injected faults.
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: None,
            faults: Faults::default(),
        }
    }
}

/// The open connections, by the held generation of the kube-apiserver process that
/// accepted them (what [`Server::connections`] reports).
#[derive(Debug, Default)]
struct Open(std::sync::Mutex<std::collections::BTreeMap<u64, usize>>);

impl Open {
    /// Count a connection of `generation` until the guard is dropped.
    fn enter(self: &Arc<Self>, generation: u64) -> OpenGuard {
        *self.lock().entry(generation).or_default() += 1;
        OpenGuard {
            open: self.clone(),
            generation,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<u64, usize>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One open connection, counted in [`Open`] while it lives.
struct OpenGuard {
    open: Arc<Open>,
    generation: u64,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        let mut m = self.open.lock();
        if let Some(n) = m.get_mut(&self.generation) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.generation);
            }
        }
    }
}

/// A running API server. Dropping it without [`Server::shutdown`] leaves it serving until
/// the runtime ends.
pub struct Server {
    /// The port it listens on (also written into every kubeconfig of the sandbox).
    pub port: u16,
    /// Its objects (controllers write here directly).
    pub store: Store,
    dir: PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    open: Arc<Open>,
}

impl Server {
    /// The connections open now, counted by the held generation of the kube-apiserver
    /// process that accepted them ([`crate::sandbox::runtime::Held::generation`]). After a
    /// restart, the old generation's connections are served a while and then closed, as a
    /// real API server does on its way down: a test waits here for them to be gone.
    pub fn connections(&self) -> std::collections::BTreeMap<u64, usize> {
        self.open.lock().clone()
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The kubeconfig of the cluster admin (`cp-1`'s `admin.conf`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        admin_conf(&self.dir)
    }

    /// Stop accepting, close every connection and watch, make the store durable, and
    /// remove `endpoint.json`. Returns once the listener is closed and the store released
    /// (unless other clones of [`Server::store`] are still alive).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = self.store.sync();
        let endpoint = self.dir.join("apiserver").join("endpoint.json");
        let ours = std::fs::read(&endpoint)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["pid"] == std::process::id() && v["port"] == self.port);
        if ours {
            let _ = std::fs::remove_file(&endpoint);
        }
    }
}

fn admin_conf(dir: &Path) -> PathBuf {
    dir.join("nodes/cp-1/etc/kubernetes/admin.conf")
}

const SERVER_PREFIX: &str = "https://127.0.0.1:";

/// The port of `server: https://127.0.0.1:PORT` in a kubeconfig's text.
fn kubeconfig_port(text: &str) -> Option<u16> {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("server: ")?
                .strip_prefix(SERVER_PREFIX)
        })
        .and_then(|p| p.trim().trim_end_matches('/').parse().ok())
}

/// Point every kubeconfig of the sandbox (its copy of admin.conf included) at `port`,
/// keeping each file's mode.
fn rewrite_kubeconfigs(sandbox: &Sandbox, port: u16) -> Result<(), ApiServerError> {
    use std::os::unix::fs::PermissionsExt;
    for node in &sandbox.nodes {
        let dir = node.root.join(crate::layout::KUBERNETES);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
            .collect();
        paths.sort();
        // The copy of admin.conf `create` made, as kubeadm's user would have.
        let copy = node
            .root
            .join(crate::layout::rel(crate::sandbox::ADMIN_COPY));
        if copy.is_file() {
            paths.push(copy);
        }
        for path in paths {
            let io = |source| ApiServerError::Io {
                path: path.clone(),
                source,
            };
            let text = std::fs::read_to_string(&path).map_err(io)?;
            let mut changed = false;
            let mut out = String::with_capacity(text.len());
            for line in text.split_inclusive('\n') {
                let trimmed = line.trim_start();
                let indent = &line[..line.len() - trimmed.len()];
                match trimmed
                    .strip_prefix("server: ")
                    .and_then(|r| r.strip_prefix(SERVER_PREFIX))
                {
                    Some(rest) => {
                        let nl = if rest.ends_with('\n') { "\n" } else { "" };
                        let new = format!("{indent}server: {SERVER_PREFIX}{port}{nl}");
                        changed |= new != line;
                        out.push_str(&new);
                    }
                    None => out.push_str(line),
                }
            }
            if changed {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o7777;
                crate::atomic::write(&path, out.as_bytes(), mode).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// Open the store, waiting a little for a server of this process that is still letting go
/// of it (a request task finishing after `shutdown`).
async fn open_store(dir: &Path) -> Result<Store, ApiServerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let at = dir.to_path_buf();
        let res = tokio::task::spawn_blocking(move || Store::open(&at))
            .await
            .map_err(|e| ApiServerError::Io {
                path: dir.join("apiserver"),
                source: std::io::Error::other(e),
            })?;
        match res {
            Err(StoreError::Busy { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return Ok(other?),
        }
    }
}

async fn bind(ip: IpAddr, port: u16) -> Result<TcpListener, ApiServerError> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| ApiServerError::Bind { addr, source })
}

/// Start serving sandbox `dir` (tokio; returns once listening). Writes the port into every
/// sandbox kubeconfig (every node's /etc/kubernetes/*.conf whose server is
/// https://127.0.0.1:<port>), atomically, keeping each file's mode, and writes
/// `dir/apiserver/endpoint.json` {"url","port","pid"}.
pub async fn serve(dir: &Path, opts: Options) -> Result<Server, ApiServerError> {
    let dir = std::path::absolute(dir).map_err(|source| ApiServerError::NoSandbox {
        dir: dir.to_path_buf(),
        source,
    })?;
    let sandbox = Sandbox::load(&dir).map_err(|source| ApiServerError::NoSandbox {
        dir: dir.clone(),
        source,
    })?;
    let cp = sandbox
        .nodes
        .iter()
        .find(|n| n.role == Role::ControlPlane)
        .ok_or_else(|| ApiServerError::NoControlPlane(dir.clone()))?;
    let held = Arc::new(tls::HeldTls::new(&cp.root));
    let first = held.current()?;
    let store = open_store(&dir).await?;
    let configured =
        std::fs::read_to_string(cp.root.join(crate::layout::KUBERNETES).join("admin.conf"))
            .ok()
            .and_then(|t| kubeconfig_port(&t));
    let listener = match (opts.port, configured) {
        (Some(p), _) => bind(opts.bind, p).await?,
        (None, Some(p)) => match bind(opts.bind, p).await {
            Ok(l) => l,
            Err(_) => bind(opts.bind, 0).await?,
        },
        (None, None) => bind(opts.bind, 0).await?,
    };
    let port = listener
        .local_addr()
        .map_err(|source| ApiServerError::Io {
            path: dir.clone(),
            source,
        })?
        .port();
    rewrite_kubeconfigs(&sandbox, port)?;
    let endpoint = dir.join("apiserver").join("endpoint.json");
    let url = format!("{SERVER_PREFIX}{port}");
    let doc = serde_json::json!({"url": url, "port": port, "pid": std::process::id()});
    crate::atomic::write(
        &endpoint,
        serde_json::to_string_pretty(&doc)
            .unwrap_or_default()
            .as_bytes(),
        crate::atomic::PUBLIC_MODE,
    )
    .map_err(|source| ApiServerError::Io {
        path: endpoint.clone(),
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let ctx = Arc::new(http::Ctx {
        store: store.clone(),
        faults: opts.faults,
        address: format!("127.0.0.1:{port}"),
        stop: stop_rx.clone(),
    });
    let open = Arc::new(Open::default());
    let task = tokio::spawn(accept_loop(
        listener,
        ctx,
        held,
        first.generation,
        stop_rx,
        open.clone(),
    ));
    Ok(Server {
        port,
        store,
        dir,
        stop,
        task,
        open,
    })
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<http::Ctx>,
    held: Arc<tls::HeldTls>,
    generation: u64,
    mut stop: watch::Receiver<bool>,
    open: Arc<Open>,
) {
    let (gen_tx, gen_rx) = watch::channel(generation);
    let mut conns = JoinSet::new();
    let mut poll = tokio::time::interval(RESTART_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = poll.tick() => {
                if let Ok(cur) = held.current() {
                    gen_tx.send_if_modified(|g| std::mem::replace(g, cur.generation) != cur.generation);
                }
            }
            r = listener.accept() => match r {
                Ok((tcp, _)) => {
                    conns.spawn(connection(
                        ctx.clone(),
                        held.clone(),
                        tcp,
                        gen_rx.clone(),
                        open.clone(),
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn connection(
    ctx: Arc<http::Ctx>,
    held: Arc<tls::HeldTls>,
    tcp: TcpStream,
    mut generation: watch::Receiver<u64>,
    open: Arc<Open>,
) {
    let _ = tcp.set_nodelay(true);
    // The process as it is held now: a restart since the last connection shows here.
    let Ok(cur) = held.current() else { return };
    let _open = open.enter(cur.generation);
    let acceptor = tokio_rustls::TlsAcceptor::from(cur.config.clone());
    let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
    else {
        return;
    };
    let auth = Arc::new(cur.authenticate(stream.get_ref().1.peer_certificates()));
    let svc = hyper::service::service_fn(move |req| {
        let ctx = ctx.clone();
        let auth = auth.clone();
        async move { Ok::<_, Infallible>(http::handle(&ctx, &auth, req).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let restarted = async {
        loop {
            if generation.changed().await.is_err() {
                return;
            }
            if *generation.borrow() != cur.generation {
                return;
            }
        }
    };
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = restarted => {}
    }
    // The process restarted. Like a kube-apiserver terminating gracefully
    // (`--shutdown-delay-duration`), the old process keeps serving the connections it
    // accepted for a while, so a client that connected just before the restart still gets
    // its answer (with the identity it handshook with); then it closes them.
    if tokio::time::timeout(DRAIN, conn.as_mut()).await.is_err() {
        conn.as_mut().graceful_shutdown();
        let _ = tokio::time::timeout(DRAIN, conn.as_mut()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kubeconfig_port() {
        let text = "clusters:\n- name: k\n  cluster:\n    certificate-authority-data: x\n    server: https://127.0.0.1:6443\n";
        assert_eq!(kubeconfig_port(text), Some(6443));
        assert_eq!(kubeconfig_port("server: https://10.0.0.1:6443\n"), None);
    }
}
