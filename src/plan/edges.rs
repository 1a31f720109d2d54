//! Trust edges: every (client, server) pair in the cluster that must keep completing a
//! mutual TLS handshake. One list, read from the snapshot, serves two judges: `rehearse`
//! checks each edge on paper after every step of a plan, and the live prober
//! (`apply --probe`) does real handshakes for the same edges against the sandbox.
//!
//! Each side names *whose* credentials it uses: a process (it holds what it read at its
//! last start) or a file read at every use (kubectl and its copies). The credentials
//! themselves are resolved by the judge.

use crate::snapshot::Role;
use crate::snapshot::{FileFact, Snapshot};
use serde::Serialize;

/// One trust edge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// `kubelet on w-1 → kube-apiserver on cp-1`: the same name in rehearse, the prober
    /// and every report.
    pub name: String,
    /// Who connects.
    pub client: Client,
    /// Who answers.
    pub server: Server,
    /// Whether trustform can keep it live. A bare pod (no owner) cannot be restarted by
    /// a rollout, so its trust is outside the plan's reach: its breaks are warnings.
    pub managed: bool,
}

/// The connecting side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Client {
    /// A kubeconfig: CA data, and a client certificate (embedded, or a file it names).
    Kubeconfig {
        /// Node that holds it.
        node: String,
        /// Its path.
        path: String,
        /// The process that read it at its start; `None`: read from disk at every use
        /// (kubectl, copied kubeconfigs).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        component: Option<String>,
    },
    /// A static pod's own client credentials, named by its flags.
    Flags {
        /// Node.
        node: String,
        /// Static pod.
        component: String,
        /// Flag naming the CA bundle it verifies the server with; `None`: it does not
        /// verify this server against the cluster's CAs (an aggregated server's own CA;
        /// a kubelet, without `--kubelet-certificate-authority`: see [`Edge::unverified`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca: Option<String>,
        /// Flag naming its client certificate.
        cert: String,
        /// Flag naming its key.
        key: String,
    },
    /// A running pod: the kube-root-ca.crt it read at start; it authenticates with its
    /// service-account token, not a certificate.
    Pod {
        /// `namespace/name`.
        name: String,
        /// Index into the snapshot's `kube.pods` groups.
        group: usize,
    },
}

/// The answering side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Server {
    /// kube-apiserver: `--tls-cert-file`, verifies clients with `--client-ca-file`.
    ApiServer {
        /// Node.
        node: String,
    },
    /// The kubelet: its serving certificate (the self-signed `kubelet.crt` it makes,
    /// kubeadm's default; `tlsCertFile`; or `kubelet-server-current.pem` with
    /// `serverTLSBootstrap`), verifies clients with its `authentication.x509.clientCAFile`.
    Kubelet {
        /// Node.
        node: String,
    },
    /// etcd: `--cert-file`/`--trusted-ca-file`, or the `--peer-` ones.
    Etcd {
        /// Node.
        node: String,
        /// The peer port.
        peer: bool,
    },
    /// An aggregated API server: serves with its own CA (its APIService caBundle) and
    /// verifies the front proxy with `requestheader-client-ca-file` of
    /// kube-system/extension-apiserver-authentication, which it reloads when it changes.
    Aggregated,
}

/// Why an API server → kubelet edge is unverified on the server side.
pub const UNVERIFIED_KUBELET: &str = "the API server does not verify kubelet serving certificates: no --kubelet-certificate-authority, as kubeadm leaves it";

impl Edge {
    /// Why the client does not verify the server's certificate, when it does not: an API
    /// server without `--kubelet-certificate-authority` (kubeadm's default) accepts any
    /// certificate a kubelet serves. Such an edge is *unverified* on the server side; its
    /// client side (the API server's kubelet client certificate against the kubelet's
    /// `clientCAFile`) is still checked. An aggregated API server is not one: the front
    /// proxy verifies it with the APIService's caBundle, outside the cluster's CAs.
    pub fn unverified(&self) -> Option<&'static str> {
        match (&self.client, &self.server) {
            (Client::Flags { ca: None, .. }, Server::Kubelet { .. }) => Some(UNVERIFIED_KUBELET),
            _ => None,
        }
    }
}

impl Server {
    /// `kube-apiserver on cp-1`.
    pub fn describe(&self) -> String {
        match self {
            Server::ApiServer { node } => format!("kube-apiserver on {node}"),
            Server::Kubelet { node } => format!("kubelet on {node}"),
            Server::Etcd { node, peer: false } => format!("etcd on {node}"),
            Server::Etcd { node, peer: true } => format!("etcd on {node} (peer)"),
            Server::Aggregated => "aggregated API server (front proxy)".into(),
        }
    }
}

impl Client {
    /// `kubelet on w-1`, `kubectl (cp-1:/etc/kubernetes/admin.conf)`, `pod ns/name`.
    pub fn describe(&self) -> String {
        match self {
            Client::Kubeconfig {
                node,
                path,
                component: None,
            } => format!("kubectl ({node}:{path})"),
            Client::Kubeconfig {
                node,
                component: Some(c),
                ..
            }
            | Client::Flags {
                node, component: c, ..
            } => format!("{c} on {node}"),
            Client::Pod { name, .. } => format!("pod {name}"),
        }
    }
}

/// Every edge of the cluster in the snapshot, in a stable order.
pub fn edges(snap: &Snapshot) -> Vec<Edge> {
    let cps: Vec<&str> = snap
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane && n.components.contains_key("kube-apiserver"))
        .map(|n| n.name.as_str())
        .collect();
    let etcds: Vec<&str> = snap
        .nodes
        .iter()
        .filter(|n| n.components.contains_key("etcd"))
        .map(|n| n.name.as_str())
        .collect();
    let mut out = Vec::new();
    let mut push = |client: Client, server: Server, managed: bool| {
        out.push(Edge {
            name: format!("{} → {}", client.describe(), server.describe()),
            client,
            server,
            managed,
        });
    };
    // A process on a control plane talks to its own API server (kubeadm points the
    // components' kubeconfigs at the local advertise address); anything else goes through
    // the control-plane endpoint, i.e. to any API server.
    let api_for = |node: &str| -> Vec<String> {
        if cps.contains(&node) {
            vec![node.to_string()]
        } else {
            cps.iter().map(|s| s.to_string()).collect()
        }
    };
    for n in &snap.nodes {
        let mut component_confs: Vec<&str> = Vec::new();
        // Components with a kubeconfig: controller-manager, scheduler.
        for (name, c) in &n.components {
            if let Some(conf) = c.flags.get("kubeconfig")
                && n.kubeconfig(conf).is_some()
            {
                component_confs.push(conf);
                for api in api_for(&n.name) {
                    push(
                        Client::Kubeconfig {
                            node: n.name.clone(),
                            path: conf.clone(),
                            component: Some(name.clone()),
                        },
                        Server::ApiServer { node: api.clone() },
                        true,
                    );
                }
            }
        }
        if let Some(k) = &n.kubelet {
            component_confs.push(&k.kubeconfig);
            for api in api_for(&n.name) {
                push(
                    Client::Kubeconfig {
                        node: n.name.clone(),
                        path: k.kubeconfig.clone(),
                        component: Some("kubelet".into()),
                    },
                    Server::ApiServer { node: api.clone() },
                    true,
                );
            }
        }
        // Every other kubeconfig is read at each use: admin.conf, super-admin.conf, and
        // the copies trustform.yaml lists. Kubeconfigs for other clusters are skipped.
        for (path, fact) in &n.files {
            let FileFact::Kubeconfig(k) = fact else {
                continue;
            };
            if component_confs.contains(&path.as_str()) || k.ca.is_empty() {
                continue;
            }
            for api in &cps {
                push(
                    Client::Kubeconfig {
                        node: n.name.clone(),
                        path: path.clone(),
                        component: None,
                    },
                    Server::ApiServer {
                        node: (*api).into(),
                    },
                    true,
                );
            }
        }
    }
    // The API servers → every kubelet, their etcd, the aggregated API servers.
    for api in &cps {
        let Some(flags) = snap
            .node(api)
            .and_then(|n| n.components.get("kube-apiserver"))
            .map(|c| &c.flags)
        else {
            continue;
        };
        let flag_client = |ca: Option<&str>, cert: &str, key: &str| Client::Flags {
            node: (*api).into(),
            component: "kube-apiserver".into(),
            ca: ca.map(str::to_string),
            cert: cert.into(),
            key: key.into(),
        };
        if flags.contains_key("kubelet-client-certificate") {
            let ca = flags
                .contains_key("kubelet-certificate-authority")
                .then_some("kubelet-certificate-authority");
            for n in snap.nodes.iter().filter(|n| n.kubelet.is_some()) {
                push(
                    flag_client(ca, "kubelet-client-certificate", "kubelet-client-key"),
                    Server::Kubelet {
                        node: n.name.clone(),
                    },
                    true,
                );
            }
        }
        if flags.contains_key("etcd-certfile") {
            let to: Vec<&str> = if etcds.contains(api) {
                vec![api]
            } else {
                etcds.clone()
            };
            for e in to {
                push(
                    flag_client(Some("etcd-cafile"), "etcd-certfile", "etcd-keyfile"),
                    Server::Etcd {
                        node: e.into(),
                        peer: false,
                    },
                    true,
                );
            }
        }
        if flags.contains_key("proxy-client-cert-file") {
            push(
                flag_client(None, "proxy-client-cert-file", "proxy-client-key-file"),
                Server::Aggregated,
                true,
            );
        }
    }
    // etcd members → each other, both directions.
    for a in &etcds {
        for b in etcds.iter().filter(|b| *b != a) {
            push(
                Client::Flags {
                    node: (*a).into(),
                    component: "etcd".into(),
                    ca: Some("peer-trusted-ca-file".into()),
                    cert: "peer-cert-file".into(),
                    key: "peer-key-file".into(),
                },
                Server::Etcd {
                    node: (*b).into(),
                    peer: true,
                },
                true,
            );
        }
    }
    // Every running pod → every API server (the `kubernetes` Service balances over them).
    if let Some(k) = &snap.kube {
        for (group, g) in k.pods.iter().enumerate() {
            for pod in &g.pods {
                let managed = !g.bare.contains(pod);
                for api in &cps {
                    push(
                        Client::Pod {
                            name: pod.clone(),
                            group,
                        },
                        Server::ApiServer {
                            node: (*api).into(),
                        },
                        managed,
                    );
                }
            }
        }
    }
    out
}
