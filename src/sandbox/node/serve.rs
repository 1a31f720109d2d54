//! The TLS ports of a sandbox node's processes, where the configuration each process
//! read at its last start says they are, answering as the real ones do: the API server
//! at `--advertise-address` (or `--bind-address`) `:--secure-port`, etcd at every
//! `--listen-client-urls` and `--listen-peer-urls` address, the kubelet at its
//! configuration's `address:port` (`:10250`). Each serves what its process *holds*
//! (see [`crate::sandbox::listeners::HeldTls`]), refuses a client certificate that does
//! not chain to the client CA it holds (the API server takes clients without one, as
//! pods come with a token), and refuses the connection while the process is down.
//! Once the handshake is done it answers one HTTP request (`/version` with a version,
//! anything else with `ok`), so the API server's port is also its health endpoint.
//!
//! The kubeconfigs' `server` is an address no process listens on (`127.0.0.1:6443`,
//! or the port `sandbox up`'s API server took): it is the cluster's load balancer, and
//! is routed like a TCP load balancer to an API server that is up.
//!
//! Reached two ways, with the same answers: in this process through [`dial`] (what the
//! sandbox transport does: every node of a sandbox reaches every other node's addresses,
//! and its own `127.0.0.1`), and as real TCP listeners that `sandbox up` starts
//! ([`spawn`]), for nodes reached over SSH (`ssh -W` connects from the node's sshd; the
//! load balancer is then `sandbox up`'s API server itself).

use super::Machine;
use crate::sandbox::listeners::{HeldTls, Serve};
use crate::sandbox::runtime;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// One TLS port of a node's process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveEndpoint {
    /// What serves there.
    pub(crate) serve: Serve,
    /// Address.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl LiveEndpoint {
    /// The process that listens (`kube-apiserver`, `etcd`, `etcd-peer`, `kubelet`).
    pub fn process(&self) -> &'static str {
        self.serve.process()
    }

    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl Machine {
    /// Every TLS port its processes listen on, by what each read at its last start.
    pub fn live_endpoints(&self) -> Vec<LiveEndpoint> {
        endpoints_of(&self.root)
    }
}

/// [`Machine::live_endpoints`] of the node whose `/` is `root`, read again only when one
/// of its processes restarted (every dial of the sandbox transport asks). A real etcd
/// member ([`crate::sandbox::etcd`]) serves its own ports: they are not among them.
fn endpoints_of(root: &Path) -> Vec<LiveEndpoint> {
    let mut all = simulated_endpoints_of(root);
    if crate::sandbox::etcd::real_at(root) {
        all.retain(|e| !matches!(e.serve, Serve::Etcd { .. }));
    }
    all
}

fn simulated_endpoints_of(root: &Path) -> Vec<LiveEndpoint> {
    type Cache = Mutex<HashMap<PathBuf, (Vec<Option<runtime::Stamp>>, Vec<LiveEndpoint>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let stamps: Vec<_> = ["kube-apiserver", "etcd", "kubelet"]
        .iter()
        .map(|c| runtime::stamp(root, c))
        .collect();
    let cache = CACHE.get_or_init(Cache::default);
    if let Some((s, e)) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(root)
        && *s == stamps
    {
        return e.clone();
    }
    let found = read_endpoints(root);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(root.to_path_buf(), (stamps, found.clone()));
    found
}

fn read_endpoints(root: &Path) -> Vec<LiveEndpoint> {
    let mut out = vec![];
    if let Some(held) = runtime::held(root, "kube-apiserver") {
        let flags = held.flags("kube-apiserver");
        let host = flags
            .get("bind-address")
            .filter(|a| !unspecified(a))
            .or(flags.get("advertise-address"))
            .cloned();
        let port = flags
            .get("secure-port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(6443);
        if let Some(host) = host {
            out.push(LiveEndpoint {
                serve: Serve::ApiServer,
                host,
                port,
            });
        }
    }
    if let Some(held) = runtime::held(root, "etcd") {
        let flags = held.flags("etcd");
        for (flag, peer) in [("listen-client-urls", false), ("listen-peer-urls", true)] {
            for url in flags.get(flag).map(String::as_str).unwrap_or("").split(',') {
                if let Some((host, port)) = crate::apply::live::url_address(url) {
                    out.push(LiveEndpoint {
                        serve: Serve::Etcd { peer },
                        host,
                        port,
                    });
                }
            }
        }
    }
    if let Some(config) = runtime::held(root, "kubelet")
        .and_then(|h| h.file(&format!("/{}", crate::layout::KUBELET_CONFIG)))
        .and_then(|b| crate::kubelet::Config::parse(&String::from_utf8_lossy(&b)).ok())
    {
        out.push(LiveEndpoint {
            serve: Serve::Kubelet,
            host: config
                .address
                .filter(|a| !unspecified(a))
                .unwrap_or_else(|| "127.0.0.1".into()),
            port: config.port.unwrap_or(10250),
        });
    }
    out
}

impl Machine {
    /// The address of the kubeconfigs' `server` (the load balancer), by its kubelet.conf.
    fn load_balancer(&self) -> Option<(String, u16)> {
        let text = std::fs::read_to_string(self.root.join(crate::layout::KUBELET_CONF)).ok()?;
        let kc: crate::pki::kubeconfig::Kubeconfig = serde_saphyr::from_str(&text).ok()?;
        crate::apply::live::url_address(&kc.current().0?.cluster.server)
    }
}

fn unspecified(addr: &str) -> bool {
    matches!(addr, "" | "0.0.0.0" | "::" | "[::]")
}

/// The cached TLS configuration of `serve` on the node whose `/` is `root`.
fn held_tls(root: &Path, serve: Serve) -> Arc<HeldTls> {
    type Cache = Mutex<HashMap<(PathBuf, Serve), Arc<HeldTls>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mut c = CACHE
        .get_or_init(Cache::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    c.entry((root.to_path_buf(), serve))
        .or_insert_with(|| Arc::new(HeldTls::new(root, serve)))
        .clone()
}

fn refused() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused")
}

/// A connection from node `from` (a machine of the sandbox in `dir`) to `host:port`, if
/// a process of the sandbox listens there or it is the load balancer: `None` when
/// nothing of the sandbox is there (the caller connects for real), `Err` (connection
/// refused) while the process is down.
pub fn dial(
    from: &Machine,
    host: &str,
    port: u16,
) -> Option<std::io::Result<std::os::unix::net::UnixStream>> {
    let dir = from.root.parent()?.parent()?;
    let sandbox = crate::sandbox::Sandbox::load(dir).ok()?;
    // The nodes where they are now (a copied sandbox's sandbox.json names the original).
    let roots: Vec<PathBuf> = sandbox
        .nodes
        .iter()
        .map(|n| dir.join("nodes").join(&n.name))
        .collect();
    let loopback = host == "127.0.0.1" || host == "localhost" || host == "::1";
    let peer = sandbox
        .nodes
        .iter()
        .zip(&roots)
        .find(|(_, r)| **r == from.root)
        .map_or_else(|| "127.0.0.1".to_string(), |(n, _)| n.ip.clone());
    for r in &roots {
        // A node's 127.0.0.1 is its own.
        if loopback && *r != from.root {
            continue;
        }
        if let Some(e) = endpoints_of(r)
            .into_iter()
            .find(|e| e.host == host && e.port == port)
        {
            return Some(connect(&Machine::open(r), &e, &peer));
        }
    }
    if from.load_balancer() != Some((host.to_string(), port)) {
        return None;
    }
    // The load balancer: the first API server that is up.
    for r in &roots {
        if let Some(e) = endpoints_of(r)
            .into_iter()
            .find(|e| e.serve == Serve::ApiServer)
        {
            let m = Machine::open(r);
            if m.up("kube-apiserver") {
                return Some(connect(&m, &e, &peer));
            }
        }
    }
    Some(Err(refused()))
}

fn connect(
    m: &Machine,
    e: &LiveEndpoint,
    peer: &str,
) -> std::io::Result<std::os::unix::net::UnixStream> {
    if !m.up(e.serve.component()) {
        return Err(refused());
    }
    let (mine, theirs) = std::os::unix::net::UnixStream::pair()?;
    let tls = held_tls(&m.root, e.serve);
    let peer = format!("{peer}:{}", 32768 + super::random_u64() % 28000);
    std::thread::spawn(move || answer(theirs, &tls, &peer, || true));
    Ok(mine)
}

/// One connection: the handshake with what is held now, then one HTTP request answered
/// if `up()` says so when it comes; else close without a word.
fn answer<S: Read + Write>(stream: S, tls: &HeldTls, peer: &str, up: impl FnOnce() -> bool) {
    // A process that holds nothing usable answers no handshake.
    let Ok(config) = tls.config() else { return };
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, stream);
    while s.conn.is_handshaking() {
        if let Err(e) = s.conn.complete_io(&mut s.sock) {
            tls.log_failure(peer, &e);
            // Tell the client why (the alert rustls queued).
            let _ = s.conn.write_tls(&mut s.sock);
            return;
        }
    }
    super::health::respond_to(&mut s, up, |token| tls.bearer(token));
    s.conn.send_close_notify();
    let _ = s.flush();
}

/// Real listeners for every live endpoint of every node of sandbox `dir` that is not on
/// the shared `127.0.0.1` (which every sandbox of this machine would want), each
/// answering from its node's state at each connection; they live as long as the
/// process. Endpoints whose address cannot be bound are returned with the reason.
pub fn spawn(dir: &Path) -> Vec<(String, String)> {
    let Ok(sb) = crate::sandbox::Sandbox::load(dir) else {
        return vec![];
    };
    let mut failed = vec![];
    for n in &sb.nodes {
        let machine = Machine::open(&n.root);
        for e in machine.live_endpoints() {
            if e.host.starts_with("127.0.0.") || e.host == "localhost" || e.host == "::1" {
                continue;
            }
            let addr = e.address();
            let m = machine.clone();
            let tls = held_tls(&n.root, e.serve);
            let component = e.serve.component();
            let handle = move |s: std::net::TcpStream| {
                if !m.up(component) {
                    return; // closed: the process is down
                }
                let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                answer(s, &tls, &peer, || m.up(component));
            };
            match super::listen(&addr, handle) {
                Ok(()) => {}
                Err(err) => failed.push((
                    format!("{}/{}", n.name, e.process()),
                    format!("{addr}: {err}"),
                )),
            }
        }
    }
    failed
}

/// The addresses [`spawn`] serves for node `machine` (health endpoints there are its).
pub(crate) fn served(machine: &Machine) -> Vec<String> {
    machine
        .live_endpoints()
        .iter()
        .map(LiveEndpoint::address)
        .collect()
}
