//! Gates handshake live: a real TLS handshake over every edge of the cluster's edge list
//! ([`crate::plan::edges`]: the list rehearse judges and the prober probes, observed from
//! the gate's read views), each made through the transport of the node the client runs
//! on ([`crate::transport::Transport::dial`]: a direct connection on this machine; over
//! SSH, a direct connection when this machine reaches the address, else `ssh -W` through
//! the node; or the sandbox's own endpoints), with the credentials the client holds on
//! disk:
//!
//! - a kubeconfig (a component's, or one read at each use: admin.conf, super-admin.conf,
//!   the copies trustform.yaml lists) → each API server the edge list gives it, dialed
//!   from the kubeconfig's node at that API server's `--advertise-address`:
//!   `--secure-port`, verified with the kubeconfig's CA data under the name of its
//!   `server` URL (what the client would verify behind a load balancer), its client
//!   certificate and key presented (embedded, or files on that node);
//! - every API server → every kubelet, with `--kubelet-client-certificate`/`-key`, the
//!   kubelet verified with `--kubelet-certificate-authority` when it is set (else not:
//!   the edge is counted unverified);
//! - an API server → its etcd's `--advertise-client-urls`, dialed from the control
//!   plane, with `--etcd-certfile`/`--etcd-keyfile`/`--etcd-cafile`;
//! - every etcd member → every other member's `--initial-advertise-peer-urls`, with its
//!   peer certificate.
//!
//! After the handshake the client sends one `GET` (`/version`; the kubelet: `/healthz`)
//! and needs an HTTP answer: under TLS 1.3 a server that rejects the client certificate
//! says so only at the first read, and an API server that takes the connection but not
//! the certificate answers 401. The exchange is [`crate::exec::https::Handshake::over`],
//! the one the prober makes too.
//!
//! The kubelet is dialed from its own node, at its configuration's `address:port`
//! (`127.0.0.1:10250` when it serves every address, as kubeadm leaves it): its node
//! always reaches it, whatever firewall stands between nodes, and the node's address the
//! API server would use (its InternalIP) is known only to the Kubernetes API. The bytes
//! of the handshake are the API server's; only the path differs. The kubelet is verified
//! against its node name, as an API server with `--kubelet-preferred-address-types`
//! starting at `Hostname` does.
//!
//! Pods (they hold a token, not a certificate) and the aggregated API server (on a real
//! cluster a Service behind an APIService, not a node's port) are left to the prober,
//! `apply --probe`, on the sandbox.
//!
//! A node whose transport cannot reach ports (a local directory other than `/`) is not
//! checked live: its edges are named in [`Live::not_live`], not failed.

use super::error::TrustError;
use super::tls::{client_of, parse_kubeconfig};
use crate::exec::https::{self, Handshake, HttpsError};
use crate::exec::{Node, files::read};
use crate::observe::{Listed, NodeTarget};
use crate::pki::tls::Identity;
use crate::plan::edges::{Client, Edge, Server};
use crate::transport::TransportError;
use rustls::pki_types::ServerName;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long one handshake and its answer may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a client GETs from a server after the handshake (the kubelet: `/healthz`; the
/// API server and etcd: `/version`).
pub fn path(server: &Server) -> &'static str {
    match server {
        Server::Kubelet { .. } => "/healthz",
        _ => "/version",
    }
}

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
    /// The edges dialed, by name (as rehearse and the prober name them).
    pub edges: Vec<String>,
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

impl Dial<'_> {
    /// The client's side of the handshake.
    fn handshake(&self) -> Result<Handshake, TrustError> {
        let name = ServerName::try_from(self.server_name.clone()).map_err(|e| {
            TrustError::Tls(crate::pki::tls::TlsError::ServerName(format!(
                "{:?}: {e}",
                self.server_name
            )))
        })?;
        Ok(Handshake {
            roots: self.roots.clone(),
            identity: self.identity.clone(),
            name,
            host: self.host.clone(),
            port: self.port,
            path: self.path.to_string(),
            bearer: None,
        })
    }
}

/// The etcd flag that says where a member serves clients (`peer`: its peers).
pub fn etcd_url_flag(peer: bool) -> &'static str {
    if peer {
        "initial-advertise-peer-urls"
    } else {
        "advertise-client-urls"
    }
}

/// Where an etcd member with `flags` is dialed: the first URL of
/// [`etcd_url_flag`].
pub fn etcd_address(flags: &BTreeMap<String, String>, peer: bool) -> Option<(String, u16)> {
    flags
        .get(etcd_url_flag(peer))?
        .split(',')
        .next()
        .and_then(url_address)
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

pub(super) fn file(node: &Node, abs: &str) -> Option<Vec<u8>> {
    read(node, abs).ok().flatten()
}

pub(super) fn flags(node: &Node, component: &str) -> Option<BTreeMap<String, String>> {
    let text = file(node, &crate::layout::manifest(component))?;
    crate::manifest::parse(&String::from_utf8_lossy(&text))
        .ok()
        .map(|m| m.flags)
}

/// The file a flag of `component` names, read on `node`.
pub(super) fn flag_file(
    node: &Node,
    component: &str,
    flags: &BTreeMap<String, String>,
    flag: &str,
) -> Result<Vec<u8>, TrustError> {
    let path = flags.get(flag).ok_or_else(|| TrustError::NotConfigured {
        component: format!("{component} on {}", node.name),
        what: format!("--{flag}"),
    })?;
    file(node, path).ok_or_else(|| TrustError::Unreadable {
        at: format!("{}:{path} (--{flag})", node.name),
    })
}

fn kubelet_config(node: &Node) -> Option<crate::kubelet::Config> {
    let b = file(node, &format!("/{}", crate::layout::KUBELET_CONFIG))?;
    crate::kubelet::Config::parse(&String::from_utf8_lossy(&b)).ok()
}

/// `--advertise-address` (else `--bind-address`) and `--secure-port` of the API server
/// on `node`.
fn apiserver_address(node: &Node) -> Option<(String, u16)> {
    let f = flags(node, "kube-apiserver")?;
    let host = f
        .get("advertise-address")
        .or_else(|| f.get("bind-address"))
        .filter(|a| !matches!(a.as_str(), "" | "0.0.0.0" | "::"))?
        .clone();
    let port = f
        .get("secure-port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(6443);
    Some((host, port))
}

/// The connection of each edge of the cluster's edge list ([`crate::plan::edges`], the
/// list rehearse judges and the prober handshakes), and the edges that cannot even be
/// set up (why). Pods (they hold a token, not a certificate) and the aggregated API
/// server (a Service, not a node's port) are not node ports: the prober handshakes with
/// those on the sandbox.
fn dials<'a>(nodes: &'a BTreeMap<String, Node>, edges: &[Edge]) -> (Vec<Dial<'a>>, Vec<String>) {
    let (mut out, mut broken) = (vec![], vec![]);
    for e in edges {
        let mut edge = e.name.clone();
        if let Some(why) = e.unverified() {
            edge.push_str(&format!(" (unverified: {why})"));
        }
        match dial_of(nodes, e, &edge) {
            Ok(Some(d)) => out.push(d),
            Ok(None) => {}
            Err(why) => broken.push(format!("{edge}: {}", super::error::line(&why))),
        }
    }
    (out, broken)
}

/// The connection of one edge (`None`: not a node's port).
fn dial_of<'a>(
    nodes: &'a BTreeMap<String, Node>,
    e: &Edge,
    edge: &str,
) -> Result<Option<Dial<'a>>, TrustError> {
    let node = |name: &str| {
        nodes
            .get(name)
            .ok_or_else(|| TrustError::UnknownNode(name.to_string()))
    };
    let path = path(&e.server);
    match (&e.client, &e.server) {
        (
            Client::Kubeconfig {
                node: at,
                path: kc_path,
                ..
            },
            Server::ApiServer { node: api },
        ) => {
            let from = node(at)?;
            let where_ = format!("{at}:{kc_path}");
            let text =
                file(from, kc_path).ok_or_else(|| TrustError::Unreadable { at: where_.clone() })?;
            let kc = parse_kubeconfig(&text, &where_)?;
            let server = kc
                .current()
                .0
                .map(|c| c.cluster.server.clone())
                .unwrap_or_default();
            let (name, _) = url_address(&server).ok_or_else(|| TrustError::Kubeconfig {
                at: where_.clone(),
                reason: format!("its server {server:?} is not https://host:port"),
            })?;
            let (host, port) =
                apiserver_address(node(api)?).ok_or_else(|| TrustError::NotConfigured {
                    component: format!("kube-apiserver on {api}"),
                    what: "--advertise-address".into(),
                })?;
            let c = client_of(&kc, &where_, &|p| file(from, p))?;
            Ok(Some(Dial {
                edge: edge.to_string(),
                from,
                host,
                port,
                server_name: name,
                roots: Some(c.ca),
                identity: c.identity,
                path,
            }))
        }
        (
            Client::Flags {
                node: at,
                component,
                ca,
                cert,
                key,
            },
            server,
        ) => {
            let from = node(at)?;
            let f = flags(from, component).ok_or_else(|| TrustError::NotConfigured {
                component: format!("{component} on {at}"),
                what: "readable manifest".into(),
            })?;
            let identity = Identity::from_pem(
                &flag_file(from, component, &f, cert)?,
                &flag_file(from, component, &f, key)?,
            )?;
            let roots = match ca {
                Some(flag) => Some(flag_file(from, component, &f, flag)?),
                None => None,
            };
            let (from, host, port, server_name) = match server {
                Server::Kubelet { node: k } => {
                    let kn = node(k)?;
                    let config = kubelet_config(kn).ok_or_else(|| TrustError::NotConfigured {
                        component: format!("the kubelet on {k}"),
                        what: "readable configuration".into(),
                    })?;
                    let host = config
                        .address
                        .filter(|a| !matches!(a.as_str(), "" | "0.0.0.0" | "::"))
                        .unwrap_or_else(|| "127.0.0.1".into());
                    (kn, host, config.port.unwrap_or(10250), k.clone())
                }
                Server::Etcd { node: m, peer } => {
                    let (host, port) = flags(node(m)?, "etcd")
                        .and_then(|ef| etcd_address(&ef, *peer))
                        .ok_or_else(|| TrustError::NotConfigured {
                            component: format!("etcd on {m}"),
                            what: format!("--{}", etcd_url_flag(*peer)),
                        })?;
                    (from, host.clone(), port, host)
                }
                Server::ApiServer { .. } | Server::Aggregated => return Ok(None),
            };
            Ok(Some(Dial {
                edge: edge.to_string(),
                from,
                host,
                port,
                server_name,
                roots,
                identity: Some(identity),
                path,
            }))
        }
        _ => Ok(None),
    }
}

/// Why one connection failed.
enum Fail {
    /// The transport cannot reach ports.
    NotLive,
    /// It failed: what.
    Failed(TrustError),
}

/// Handshake over every edge of the cluster that is a node's port, a few at a time.
/// `nodes`: read views (see [`crate::exec::read_views`]), observed here for the edge list.
pub fn check(nodes: &BTreeMap<String, Node>) -> Live {
    let mut live = Live::default();
    let targets: Vec<NodeTarget> = nodes
        .values()
        .map(|n| NodeTarget {
            name: n.name.clone(),
            transport: n.transport.clone(),
            root: n.root.clone(),
            kubeconfigs: n
                .kubeconfigs
                .iter()
                .map(|p| Listed {
                    path: p.clone(),
                    origin: None,
                })
                .collect(),
        })
        .collect();
    let snap = match crate::observe::observe(&targets) {
        Ok(s) => s,
        Err(e) => {
            live.failures.push(format!(
                "the edges cannot be listed: the nodes cannot be read: {e}"
            ));
            return live;
        }
    };
    let (dials, broken) = dials(nodes, &crate::plan::edges::edges(&snap));
    live.edges = dials.iter().map(|d| d.edge.clone()).collect();
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
                        "handshake {} (dialed {}:{} from {}): {}",
                        d.edge,
                        d.host,
                        d.port,
                        d.from.name,
                        super::error::line(&why)
                    ));
                }
            }
        }
    }
    live.not_live = not_live.into_iter().collect();
    live
}

/// `handshake` (its host and port) dialed through `from`'s transport, within `timeout`:
/// `Ok(None)` when that transport reaches no port.
pub(super) fn exchange(
    from: &Node,
    handshake: Handshake,
    timeout: Duration,
) -> Result<Option<https::Answer>, HttpsError> {
    let transport = from.transport.clone();
    let (host, port) = (handshake.host.clone(), handshake.port);
    https::within(timeout, move || match transport.dial(&host, port) {
        Err(TransportError::Unsupported { .. }) => Ok(None),
        Err(e) => Err(HttpsError::Connect {
            address: format!("{host}:{port}"),
            reason: e.to_string(),
        }),
        Ok(stream) => handshake.over(stream).map(Some),
    })
}

/// The handshake of `d` through its node's transport, within [`TIMEOUT`].
fn timed(d: &Dial) -> Result<(), Fail> {
    let handshake = d.handshake().map_err(Fail::Failed)?;
    match exchange(d.from, handshake, TIMEOUT) {
        Ok(None) => Err(Fail::NotLive),
        Ok(Some(_)) => Ok(()),
        Err(e) => Err(Fail::Failed(e.into())),
    }
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
