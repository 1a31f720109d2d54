//! Gates handshake live: real TLS handshakes with the real endpoints, each made through
//! the transport of the node the client runs on ([`crate::transport::Transport::dial`]:
//! a direct connection on this machine; over SSH, a direct connection when this machine
//! reaches the address, else `ssh -W` through the node; or the sandbox's own endpoints), with the credentials the client holds on disk:
//!
//! - every kubeconfig of every node (`/etc/kubernetes/*.conf` and the copies
//!   trustform.yaml lists) → the host:port of its `server` URL, dialed from that node,
//!   the server verified with the kubeconfig's CA data (server name: the URL's host), its
//!   client certificate and key presented (embedded, or files on that node);
//! - every API server → every kubelet, with `--kubelet-client-certificate`/`-key`, the
//!   kubelet verified with `--kubelet-certificate-authority` when it is set (else not:
//!   the edge is counted unverified);
//! - every API server → every `--etcd-servers` URL, dialed from the control plane, with
//!   `--etcd-certfile`/`--etcd-keyfile`/`--etcd-cafile`;
//! - every etcd member → every other member's `--initial-advertise-peer-urls`, with its
//!   peer certificate.
//!
//! After the handshake the client sends one `GET` (`/version`; the kubelet: `/healthz`)
//! and needs an HTTP answer: under TLS 1.3 a server that rejects the client certificate
//! says so only at the first read, and an API server that takes the connection but not
//! the certificate answers 401.
//!
//! The kubelet is dialed from its own node, at its configuration's `address:port`
//! (`127.0.0.1:10250` when it serves every address, as kubeadm leaves it): its node
//! always reaches it, whatever firewall stands between nodes, and the node's address the
//! API server would use (its InternalIP) is known only to the Kubernetes API. The bytes
//! of the handshake are the API server's; only the path differs. The kubelet is verified
//! against its node name, as an API server with `--kubelet-preferred-address-types`
//! starting at `Hostname` does.
//!
//! There is no aggregated API server edge: on a real cluster it is a Service behind an
//! APIService, not a node's port (the prober, `apply --probe`, handshakes with the
//! sandbox's one).
//!
//! A node whose transport cannot reach ports (a local directory other than `/`) is not
//! checked live: its edges are named in [`Live::not_live`], not failed.

use super::tls::{client_config, client_of};
use crate::exec::{Node, files::read};
use crate::pki::kubeconfig::Kubeconfig;
use crate::pki::tls::Identity;
use crate::plan::edges::UNVERIFIED_KUBELET;
use crate::transport::TransportError;
use rustls::pki_types::ServerName;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// How long one handshake and its answer may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The most of an answer that is read.
const MAX_ANSWER: u64 = 64 * 1024;

/// What the live handshakes found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Handshakes made (failed ones included).
    pub handshakes: usize,
    /// Of those, ones whose client does not verify the server.
    pub unverified: usize,
    /// One line per failure: the edge, the address dialed and from where, what failed.
    pub failures: Vec<String>,
    /// Nodes whose transport cannot reach ports: their edges were not checked live.
    pub not_live: Vec<String>,
}

/// One client → server connection to make.
struct Dial<'a> {
    edge: String,
    /// The node the client runs on (the connection is made through its transport).
    from: &'a Node,
    host: String,
    port: u16,
    server_name: String,
    /// The client's roots (`None`: it does not verify the server).
    roots: Option<Vec<u8>>,
    identity: Option<Identity>,
    path: &'static str,
}

/// A dial to an etcd endpoint (client or peer port): the client verifies etcd with `ca`
/// and presents `id`; `Err`: the broken edge, and why.
fn etcd_dial<'a>(
    edge: String,
    from: &'a Node,
    (host, port): (String, u16),
    id: &Result<Identity, String>,
    ca: &Result<Vec<u8>, String>,
) -> Result<Dial<'a>, String> {
    match (id, ca) {
        (Ok(id), Ok(ca)) => Ok(Dial {
            edge,
            from,
            server_name: host.clone(),
            host,
            port,
            roots: Some(ca.clone()),
            identity: Some(id.clone()),
            path: "/version",
        }),
        (Err(e), _) | (_, Err(e)) => Err(format!("{edge}: {e}")),
    }
}

/// `https://host:port/…` → (host, port); the port defaults to 443.
pub fn url_address(url: &str) -> Option<(String, u16)> {
    let rest = url.trim().strip_prefix("https://")?;
    let hostport = rest.split('/').next()?;
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(443), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((hostport.to_string(), 443)),
    }
}

fn file(node: &Node, abs: &str) -> Option<Vec<u8>> {
    read(node, abs).ok().flatten()
}

fn flags(node: &Node, component: &str) -> Option<BTreeMap<String, String>> {
    let text = file(node, &format!("/etc/kubernetes/manifests/{component}.yaml"))?;
    crate::manifest::parse(&String::from_utf8_lossy(&text))
        .ok()
        .map(|m| m.flags)
}

fn identity(
    node: &Node,
    flags: &BTreeMap<String, String>,
    cert: &str,
    key: &str,
) -> Result<Identity, String> {
    let read = |flag: &str| {
        let path = flags.get(flag).ok_or(format!("no --{flag}"))?;
        file(node, path).ok_or(format!("--{flag} {path} cannot be read"))
    };
    Identity::from_pem(&read(cert)?, &read(key)?)
}

fn kubelet_config(node: &Node) -> Option<crate::kubelet::Config> {
    let b = file(node, &format!("/{}", crate::layout::KUBELET_CONFIG))?;
    crate::kubelet::Config::parse(&String::from_utf8_lossy(&b)).ok()
}

/// Every connection to make, and the edges that cannot even be set up (why).
fn dials<'a>(
    nodes: &'a BTreeMap<String, Node>,
    kubeconfigs: &dyn Fn(&Node) -> Vec<(String, Kubeconfig)>,
) -> (Vec<Dial<'a>>, Vec<String>) {
    let (mut out, mut broken) = (vec![], vec![]);
    let apiservers: Vec<(&Node, BTreeMap<String, String>)> = nodes
        .values()
        .filter_map(|n| Some((n, flags(n, "kube-apiserver")?)))
        .collect();
    let etcds: Vec<(&Node, BTreeMap<String, String>)> = nodes
        .values()
        .filter_map(|n| Some((n, flags(n, "etcd")?)))
        .collect();
    // Kubeconfigs → their server.
    for node in nodes.values() {
        for (path, kc) in kubeconfigs(node) {
            let server = kc
                .current()
                .0
                .map(|c| c.cluster.server.clone())
                .unwrap_or_default();
            let edge = format!("{}:{path} → {server}", node.name);
            let Some((host, port)) = url_address(&server) else {
                broken.push(format!("{edge}: the server URL is not https://host:port"));
                continue;
            };
            match client_of(&kc, &|p| file(node, p)) {
                Ok(c) => out.push(Dial {
                    edge,
                    from: node,
                    server_name: host.clone(),
                    host,
                    port,
                    roots: Some(c.ca),
                    identity: c.identity,
                    path: "/version",
                }),
                Err(e) => broken.push(format!("{edge}: {e}")),
            }
        }
    }
    for (cp, f) in &apiservers {
        // → every kubelet.
        let kubelet_id = identity(cp, f, "kubelet-client-certificate", "kubelet-client-key");
        let roots = match f.get("kubelet-certificate-authority") {
            Some(p) => match file(cp, p) {
                Some(b) => Ok(Some(b)),
                None => Err(format!(
                    "--kubelet-certificate-authority {p} cannot be read"
                )),
            },
            None => Ok(None),
        };
        for node in nodes.values() {
            let Some(config) = kubelet_config(node) else {
                continue;
            };
            let host = config
                .address
                .filter(|a| !matches!(a.as_str(), "" | "0.0.0.0" | "::"))
                .unwrap_or_else(|| "127.0.0.1".into());
            let mut edge = format!("kube-apiserver on {} → kubelet on {}", cp.name, node.name);
            if matches!(roots, Ok(None)) {
                edge.push_str(&format!(" (unverified: {UNVERIFIED_KUBELET})"));
            }
            match (&kubelet_id, &roots) {
                (Ok(id), Ok(roots)) => out.push(Dial {
                    edge,
                    from: node,
                    host,
                    port: config.port.unwrap_or(10250),
                    server_name: node.name.clone(),
                    roots: roots.clone(),
                    identity: Some(id.clone()),
                    path: "/healthz",
                }),
                (Err(e), _) | (_, Err(e)) => broken.push(format!("{edge}: {e}")),
            }
        }
        // → etcd.
        let etcd_id = identity(cp, f, "etcd-certfile", "etcd-keyfile");
        let etcd_ca = f
            .get("etcd-cafile")
            .ok_or("no --etcd-cafile".to_string())
            .and_then(|p| file(cp, p).ok_or(format!("--etcd-cafile {p} cannot be read")));
        for url in f
            .get("etcd-servers")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            if url.trim().is_empty() {
                continue;
            }
            let edge = format!("kube-apiserver on {} → etcd {url}", cp.name);
            let Some((host, port)) = url_address(url) else {
                broken.push(format!("{edge}: not https://host:port"));
                continue;
            };
            match etcd_dial(edge, cp, (host, port), &etcd_id, &etcd_ca) {
                Ok(d) => out.push(d),
                Err(b) => broken.push(b),
            }
        }
    }
    // etcd peers → each other.
    for (a, fa) in &etcds {
        let id = identity(a, fa, "peer-cert-file", "peer-key-file");
        let ca = fa
            .get("peer-trusted-ca-file")
            .ok_or("no --peer-trusted-ca-file".to_string())
            .and_then(|p| file(a, p).ok_or(format!("--peer-trusted-ca-file {p} cannot be read")));
        for (b, fb) in &etcds {
            if a.name == b.name {
                continue;
            }
            let edge = format!("etcd on {} → etcd on {} (peer)", a.name, b.name);
            let Some((host, port)) = fb
                .get("initial-advertise-peer-urls")
                .and_then(|u| u.split(',').next())
                .and_then(url_address)
            else {
                broken.push(format!("{edge}: no --initial-advertise-peer-urls"));
                continue;
            };
            match etcd_dial(edge, a, (host, port), &id, &ca) {
                Ok(d) => out.push(d),
                Err(b) => broken.push(b),
            }
        }
    }
    (out, broken)
}

/// Why one connection failed.
enum Fail {
    /// The transport cannot reach ports.
    NotLive,
    /// It failed: what.
    Failed(String),
}

/// Handshake with every endpoint of `nodes` (read views, see [`crate::exec::read_views`]),
/// a few at a time; `kubeconfigs` lists a node's kubeconfigs.
pub fn check(
    nodes: &BTreeMap<String, Node>,
    kubeconfigs: &dyn Fn(&Node) -> Vec<(String, Kubeconfig)>,
) -> Live {
    let (dials, broken) = dials(nodes, kubeconfigs);
    let mut live = Live::default();
    for b in broken {
        live.handshakes += 1;
        live.failures.push(format!("handshake {b}"));
    }
    // Each dial waits on the network (over SSH, an `ssh -W` on the node's connection):
    // many at once.
    let results = crate::parallel::map(&dials, 32, timed)
        .into_iter()
        .enumerate();
    let mut not_live = BTreeSet::new();
    for (i, r) in results {
        let d = &dials[i];
        match r {
            Err(Fail::NotLive) => {
                not_live.insert(d.from.name.clone());
            }
            r => {
                live.handshakes += 1;
                if d.roots.is_none() {
                    live.unverified += 1;
                }
                if let Err(Fail::Failed(why)) = r {
                    live.failures.push(format!(
                        "handshake {} (dialed {}:{} from {}): {why}",
                        d.edge, d.host, d.port, d.from.name
                    ));
                }
            }
        }
    }
    live.not_live = not_live.into_iter().collect();
    live
}

/// [`connect`] within [`TIMEOUT`] (a stream through `ssh -W` has no timeout of its own).
fn timed(d: &Dial) -> Result<(), Fail> {
    let (tx, rx) = std::sync::mpsc::channel();
    let transport = d.from.transport.clone();
    let (host, port, name, path) = (d.host.clone(), d.port, d.server_name.clone(), d.path);
    let config = client_config(d.roots.as_deref(), d.identity.clone()).map_err(Fail::Failed)?;
    let presents = d.identity.is_some();
    std::thread::spawn(move || {
        let r = match transport.dial(&host, port) {
            Err(TransportError::Unsupported { .. }) => Err(Fail::NotLive),
            Err(e) => Err(Fail::Failed(format!("cannot connect: {e}"))),
            Ok(stream) => {
                exchange(stream, config, &name, &host, port, path, presents).map_err(Fail::Failed)
            }
        };
        let _ = tx.send(r);
    });
    rx.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
        Err(Fail::Failed(format!(
            "no answer in {}",
            humantime::format_duration(TIMEOUT)
        )))
    })
}

fn exchange(
    stream: Box<dyn crate::transport::Stream>,
    config: rustls::ClientConfig,
    server_name: &str,
    host: &str,
    port: u16,
    path: &str,
    presents: bool,
) -> Result<(), String> {
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("TLS handshake: {e}"))?;
    }
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: trustform-gate\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes())
        .and_then(|()| tls.flush())
        .map_err(|e| format!("TLS: {e}"))?;
    let mut answer = vec![];
    let read = (&mut tls).take(MAX_ANSWER).read_to_end(&mut answer);
    if answer.is_empty() {
        return Err(match read {
            Err(e) => format!("TLS: {e}"),
            Ok(_) => "the server closed the connection without an answer".into(),
        });
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .lines()
        .next()
        .filter(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or("not an HTTP answer")?;
    if status == 401 && presents {
        return Err("401 Unauthorized: the server does not accept the client certificate".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_their_address() {
        assert_eq!(
            url_address("https://127.1.2.3:2379"),
            Some(("127.1.2.3".into(), 2379))
        );
        assert_eq!(
            url_address("https://[::1]:2380/"),
            Some(("::1".into(), 2380))
        );
        assert_eq!(
            url_address("https://lb.example"),
            Some(("lb.example".into(), 443))
        );
        assert_eq!(url_address("http://127.0.0.1:2381"), None);
    }

    #[test]
    fn server_urls_give_host_and_port() {
        assert_eq!(
            url_address("https://10.0.0.1:6443"),
            Some(("10.0.0.1".into(), 6443))
        );
        assert_eq!(
            url_address("https://lb.example/"),
            Some(("lb.example".into(), 443))
        );
        assert_eq!(
            url_address("https://[::1]:2379"),
            Some(("::1".into(), 2379))
        );
        assert_eq!(url_address("http://10.0.0.1:8080"), None);
    }
}
