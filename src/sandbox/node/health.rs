//! The health endpoints of a sandbox node's processes, where their manifests (and the
//! kubelet's config.yaml) say they are, answering as the real ones do: `200 ok` while the
//! process runs, nothing while it is down (restarting, crash-looping, or the kubelet
//! stopped).
//!
//! They are reached two ways, with the same answers: in this process through
//! [`Machine::dial`] (what the sandbox transport does for a node's own addresses), and as
//! real TCP listeners that `sandbox up` starts ([`spawn`]), for nodes reached over SSH
//! (`ssh -W` connects from the node's sshd).
//!
//! The API server's health endpoint is its secure port, served by
//! [`super::serve`] with what it holds; the others are here.
//!
//! HTTPS endpoints serve a self-signed certificate made once per process, as
//! kube-controller-manager and kube-scheduler make one in memory; health checks do not
//! verify it (nor does the kubelet's prober).

use super::{ActiveState, Machine};
use crate::exec::health::{self, Probe};
use crate::layout;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// One health endpoint of a node: which process, where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `kubelet` or a static pod's component.
    pub component: String,
    /// Where.
    pub probe: Probe,
}

impl Machine {
    /// Every health endpoint its manifests and kubelet configuration name.
    pub fn health_endpoints(&self) -> Vec<Endpoint> {
        let read = |rel: &str| std::fs::read(self.root.join(rel)).ok();
        let mut out = vec![];
        if let Some(probe) = read(layout::KUBELET_CONFIG)
            .and_then(|b| health::of_kubelet_config(&String::from_utf8_lossy(&b)))
        {
            out.push(Endpoint {
                component: "kubelet".into(),
                probe,
            });
        }
        // A real etcd member ([`crate::sandbox::etcd`]) answers its own.
        let real_etcd = crate::sandbox::etcd::real_at(&self.root);
        for c in self.manifests() {
            if real_etcd && c == "etcd" {
                continue;
            }
            if let Some(probe) = read(&format!("{}/{c}.yaml", layout::MANIFESTS))
                .and_then(|b| health::of_manifest(&String::from_utf8_lossy(&b)))
            {
                out.push(Endpoint {
                    component: c,
                    probe,
                });
            }
        }
        out
    }

    /// Whether `component` runs now (brought up to the present first).
    pub fn up(&self, component: &str) -> bool {
        let Ok(st) = self.reconcile() else {
            return false;
        };
        if component == "kubelet" {
            return st.kubelet.state == ActiveState::Active;
        }
        st.pods
            .get(component)
            .and_then(|slot| slot.pods.last())
            .is_some_and(super::kubelet::Pod::serving)
    }

    /// A connection to `host:port` if one of this node's processes has its health
    /// endpoint there: `None` when none has (the caller connects for real), `Err`
    /// (connection refused) while that process is down.
    pub fn dial(
        &self,
        host: &str,
        port: u16,
    ) -> Option<std::io::Result<std::os::unix::net::UnixStream>> {
        let e = self
            .health_endpoints()
            .into_iter()
            .find(|e| e.probe.host == host && e.probe.port == port)?;
        if !self.up(&e.component) {
            return Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "Connection refused",
            )));
        }
        Some(
            std::os::unix::net::UnixStream::pair().map(|(mine, theirs)| {
                let https = e.probe.https;
                std::thread::spawn(move || answer(theirs, https, || true));
                mine
            }),
        )
    }
}

/// The certificate every HTTPS health endpoint serves (made once per process).
fn server_config() -> Option<Arc<rustls::ServerConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ServerConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let ca = crate::pki::issue::new_ca(
                "sandbox-health@self-signed",
                crate::pki::KeyAlgorithm::EcdsaP256,
                365,
            )
            .ok()?;
            let id = crate::pki::tls::Identity::from_pem(
                ca.cert_pem.as_bytes(),
                ca.key.expose().as_bytes(),
            )
            .ok()?;
            rustls::ServerConfig::builder_with_provider(crate::pki::tls::provider())
                .with_safe_default_protocol_versions()
                .ok()?
                .with_no_client_auth()
                .with_single_cert(id.chain, id.key)
                .ok()
                .map(Arc::new)
        })
        .clone()
}

/// Read one HTTP request from `s` and answer it as a healthy component does, if `up()`
/// says it is when the request has come, else say nothing: `200` with the API server's
/// version for `/version`, etcd's `{"health":"true"}` for `/health`, `ok` for anything else
/// (`/healthz`, `/readyz`, `/livez`).
pub(super) fn respond(s: impl Read + Write, up: impl FnOnce() -> bool) {
    respond_to(s, up, |_| Ok(()))
}

/// [`respond`], a bearer token the request brings checked by `bearer` first: refused,
/// the answer is `401` with a `Status`, as kube-apiserver's.
pub(super) fn respond_to(
    s: impl Read + Write,
    up: impl FnOnce() -> bool,
    bearer: impl FnOnce(&str) -> Result<(), String>,
) {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut path = String::new();
    let mut token = None;
    // The request line and headers, up to the empty line.
    while r.read_line(&mut line).is_ok_and(|n| n > 0) {
        if path.is_empty() {
            path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        if let Some(t) = crate::sandbox::tokens::bearer(&line) {
            token = Some(t);
        }
        line.clear();
    }
    if !up() {
        return;
    }
    if let Some(t) = token
        && bearer(&t).is_err()
    {
        let s = r.get_mut();
        let _ = s.write_all(crate::sandbox::tokens::UNAUTHORIZED);
        let _ = s.flush();
        return;
    }
    let (kind, body) = if path.starts_with("/version") {
        (
            "application/json",
            "{\"major\":\"1\",\"minor\":\"31\",\"gitVersion\":\"v1.31.0-sandbox\"}",
        )
    } else if path == "/health" || path.starts_with("/health?") {
        // Only etcd serves /health (the others: /healthz, /livez, /readyz), with JSON.
        ("application/json", "{\"health\":\"true\"}")
    } else {
        ("text/plain; charset=utf-8", "ok")
    };
    let s = r.get_mut();
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.flush();
}

/// Answer one health check on `stream` ([`respond`]), over TLS when `https`.
fn answer<S: Read + Write>(stream: S, https: bool, up: impl FnOnce() -> bool) {
    if !https {
        return respond(stream, up);
    }
    let Some(config) = server_config() else {
        return;
    };
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, stream);
    respond(&mut tls, up);
    tls.conn.send_close_notify();
    let _ = tls.flush();
}

/// Real listeners for every health endpoint of every node of sandbox `dir`, each
/// answering from its node's state at each connection; they live as long as the
/// process. Endpoints whose address cannot be bound are returned with the reason.
pub fn spawn(dir: &Path) -> Vec<(String, String)> {
    let Ok(sb) = crate::sandbox::Sandbox::load(dir) else {
        return vec![];
    };
    let mut failed = vec![];
    for n in &sb.nodes {
        let machine = Machine::open(&n.root);
        // The API server's port is its health endpoint too: served live.
        let live = super::serve::served(&machine);
        for e in machine.health_endpoints() {
            let addr = format!("{}:{}", e.probe.host, e.probe.port);
            if live.contains(&addr) {
                continue;
            }
            let (m, c, https) = (machine.clone(), e.component.clone(), e.probe.https);
            match super::listen(&addr, move |s| answer(s, https, || m.up(&c))) {
                Ok(()) => {}
                Err(err) => failed.push((
                    format!("{}/{}", n.name, e.component),
                    format!("{addr}: {err}"),
                )),
            }
        }
    }
    failed
}
