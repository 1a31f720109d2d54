//! Trust edges: every (client, server) pair in the cluster that must keep completing a
//! mutual TLS handshake. One list, read from the snapshot, serves two judges: `rehearse`
//! checks each edge on paper after every step of a plan, and the live prober
//! (`apply --probe`) does real handshakes for the same edges against the sandbox.
//!
//! Each side names *whose* credentials it uses: a process (it holds what it read at its
//! last start) or a file read at every use (kubectl and its copies). The credentials
//! themselves are resolved by the judge.

use crate::config::Authority;
use crate::pki::Fingerprint;
use crate::snapshot::Role;
use crate::snapshot::{FileFact, Snapshot};
use serde::Serialize;
use std::collections::BTreeSet;

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

/// The CAs a client of this cluster's API servers may trust: every certificate of a
/// control plane's `/etc/kubernetes/pki/ca.crt`, and the issuer of each API server's
/// serving certificate. A kubeconfig that trusts none of them is another cluster's.
fn cluster_cas(snap: &Snapshot) -> BTreeSet<&Fingerprint> {
    let mut out = BTreeSet::new();
    for n in snap.nodes.iter().filter(|n| n.role == Role::ControlPlane) {
        let serving = n
            .components
            .get("kube-apiserver")
            .and_then(|c| c.flags.get("tls-cert-file"));
        for (path, fact) in &n.files {
            let FileFact::Certificates { certs, .. } = fact else {
                continue;
            };
            if path == Authority::Kubernetes.ca_file() {
                out.extend(certs.iter().map(|c| &c.fingerprint));
            } else if Some(path) == serving {
                out.extend(certs.first().and_then(|c| c.issued_by.as_ref()));
            }
        }
    }
    out
}

/// Every edge of the cluster in the snapshot, in a stable order.
pub fn edges(snap: &Snapshot) -> Vec<Edge> {
    let ours = cluster_cas(snap);
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
            if component_confs.contains(&path.as_str()) || !k.ca.iter().any(|c| ours.contains(c)) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::tests::{ADMIN, KUBELET_CONF, cluster, fp, k_old, kubeconfig};
    use crate::snapshot::{KubeSnapshot, PodGroup};

    fn names(snap: &Snapshot) -> Vec<String> {
        edges(snap).into_iter().map(|e| e.name).collect()
    }

    /// What a kubeadm cluster of `cps` stacked control planes and `workers` workers has,
    /// counted from its shape.
    fn expected(cps: usize, workers: usize) -> usize {
        let own_api = 3; // controller-manager, scheduler, kubelet → their own API server
        let kubectl = 2 * cps; // admin.conf and super-admin.conf → every API server
        let per_cp = own_api + kubectl;
        let per_worker = cps; // the kubelet → every API server
        let per_api = (cps + workers) + 1 + 1; // → every kubelet, its etcd, aggregated
        let peers = cps * (cps - 1);
        cps * per_cp + workers * per_worker + cps * per_api + peers
    }

    #[test]
    fn the_edge_count_follows_the_cluster_shape() {
        for (cps, workers) in [(1, 0), (1, 1), (2, 0), (3, 2)] {
            assert_eq!(
                edges(&cluster(cps, workers)).len(),
                expected(cps, workers),
                "{cps}+{workers}"
            );
        }
        assert_eq!(expected(1, 1), 10);
        assert_eq!(expected(3, 2), 60);
    }

    #[test]
    fn every_edge_has_a_distinct_name_and_is_managed_without_pods() {
        let all = edges(&cluster(3, 2));
        let mut n: Vec<&str> = all.iter().map(|e| e.name.as_str()).collect();
        n.sort_unstable();
        n.dedup();
        assert_eq!(n.len(), all.len());
        assert!(all.iter().all(|e| e.managed));
    }

    #[test]
    fn worker_kubelet_reaches_every_api_server() {
        let n = names(&cluster(3, 2));
        for cp in ["cp-1", "cp-2", "cp-3"] {
            assert!(n.contains(&format!("kubelet on w-2 → kube-apiserver on {cp}")));
        }
        let from_w2 = n
            .iter()
            .filter(|e| e.starts_with("kubelet on w-2 "))
            .count();
        assert_eq!(from_w2, 3);
    }

    #[test]
    fn control_plane_components_reach_only_their_own_api_server() {
        let n = names(&cluster(3, 0));
        for c in ["kubelet", "kube-controller-manager", "kube-scheduler"] {
            let to: Vec<&String> = n
                .iter()
                .filter(|e| e.starts_with(&format!("{c} on cp-2 → kube-apiserver")))
                .collect();
            assert_eq!(
                to,
                [&format!("{c} on cp-2 → kube-apiserver on cp-2")],
                "{c}"
            );
        }
    }

    #[test]
    fn kubectl_reaches_every_api_server_from_its_file() {
        let all = edges(&cluster(2, 1));
        let admin: Vec<&Edge> = all
            .iter()
            .filter(|e| matches!(&e.client, Client::Kubeconfig { node, path, component: None } if node == "cp-1" && path == ADMIN))
            .collect();
        assert_eq!(admin.len(), 2);
        assert_eq!(
            admin[1].name,
            "kubectl (cp-1:/etc/kubernetes/admin.conf) → kube-apiserver on cp-2"
        );
    }

    #[test]
    fn every_api_server_reaches_every_kubelet_unverified() {
        let all = edges(&cluster(3, 2));
        let to_kubelets: Vec<&Edge> = all
            .iter()
            .filter(|e| matches!(e.server, Server::Kubelet { .. }))
            .collect();
        assert_eq!(to_kubelets.len(), 3 * 5);
        assert!(
            to_kubelets
                .iter()
                .all(|e| e.unverified() == Some(UNVERIFIED_KUBELET))
        );
        assert!(
            to_kubelets
                .iter()
                .any(|e| e.name == "kube-apiserver on cp-3 → kubelet on w-1")
        );
        let unverified = all.iter().filter(|e| e.unverified().is_some()).count();
        assert_eq!(unverified, to_kubelets.len());
    }

    #[test]
    fn kubelet_certificate_authority_makes_the_kubelet_edges_verified() {
        let mut snap = cluster(1, 1);
        snap.nodes[0]
            .components
            .get_mut("kube-apiserver")
            .unwrap()
            .flags
            .insert(
                "kubelet-certificate-authority".into(),
                "/etc/kubernetes/pki/ca.crt".into(),
            );
        assert!(edges(&snap).iter().all(|e| e.unverified().is_none()));
    }

    #[test]
    fn a_stacked_api_server_reaches_only_its_own_etcd() {
        let n = names(&cluster(3, 0));
        let to_etcd: Vec<&String> = n
            .iter()
            .filter(|e| e.starts_with("kube-apiserver on cp-2 → etcd on"))
            .collect();
        assert_eq!(to_etcd, ["kube-apiserver on cp-2 → etcd on cp-2"]);
    }

    #[test]
    fn an_api_server_without_local_etcd_reaches_every_etcd_member() {
        let mut snap = cluster(3, 0);
        snap.nodes[2].components.remove("etcd");
        let n = names(&snap);
        let to_etcd: Vec<&String> = n
            .iter()
            .filter(|e| e.starts_with("kube-apiserver on cp-3 → etcd on"))
            .collect();
        assert_eq!(
            to_etcd,
            [
                "kube-apiserver on cp-3 → etcd on cp-1",
                "kube-apiserver on cp-3 → etcd on cp-2"
            ]
        );
    }

    #[test]
    fn etcd_members_are_peers_both_ways_never_of_themselves() {
        let all = edges(&cluster(3, 0));
        let peers: Vec<(&str, &str)> = all
            .iter()
            .filter_map(|e| match (&e.client, &e.server) {
                (
                    Client::Flags { node: a, .. },
                    Server::Etcd {
                        node: b,
                        peer: true,
                    },
                ) => Some((a.as_str(), b.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(peers.len(), 3 * 2);
        assert!(peers.iter().all(|(a, b)| a != b));
        assert!(peers.contains(&("cp-1", "cp-3")) && peers.contains(&("cp-3", "cp-1")));
        assert!(
            all.iter()
                .any(|e| e.name == "etcd on cp-1 → etcd on cp-2 (peer)")
        );
    }

    #[test]
    fn each_api_server_reaches_the_aggregated_servers_once() {
        let all = edges(&cluster(3, 1));
        let agg: Vec<&Edge> = all
            .iter()
            .filter(|e| e.server == Server::Aggregated)
            .collect();
        assert_eq!(agg.len(), 3);
        assert_eq!(
            agg[0].name,
            "kube-apiserver on cp-1 → aggregated API server (front proxy)"
        );
    }

    #[test]
    fn a_worker_serves_only_as_a_kubelet() {
        let all = edges(&cluster(1, 1));
        let served_by_w1: Vec<&Server> = all
            .iter()
            .map(|e| &e.server)
            .filter(|s| s.describe().ends_with("on w-1"))
            .collect();
        assert_eq!(served_by_w1, [&Server::Kubelet { node: "w-1".into() }]);
    }

    #[test]
    fn promoting_a_worker_to_control_plane_adds_its_servers_and_its_own_clients() {
        // cp-1 + w-1, against cp-1 + cp-2: the second node gains an API server (reached
        // by everything that reaches every API server), an etcd member (two peer edges)
        // and its own components.
        let worker = edges(&cluster(1, 1)).len();
        let promoted = edges(&cluster(2, 0)).len();
        assert_eq!(worker, 10);
        assert_eq!(promoted, expected(2, 0));
        assert_eq!(promoted, 2 * (3 + 4) + 2 * (2 + 2) + 2);
    }

    #[test]
    fn a_control_plane_without_an_api_server_is_no_api_server() {
        let mut snap = cluster(2, 0);
        snap.nodes[1].components.remove("kube-apiserver");
        assert!(!edges(&snap).iter().any(|e| e.server
            == Server::ApiServer {
                node: "cp-2".into()
            }));
    }

    #[test]
    fn a_kubeconfig_without_ca_data_has_no_edge() {
        let mut snap = cluster(1, 0);
        snap.nodes[0]
            .files
            .insert("/root/.kube/config".into(), kubeconfig(&[], &k_old(), None));
        assert!(
            !names(&snap)
                .iter()
                .any(|n| n.contains("/root/.kube/config"))
        );
        snap.nodes[0].files.insert(
            "/root/.kube/config".into(),
            kubeconfig(&[k_old()], &k_old(), None),
        );
        assert!(
            names(&snap).contains(
                &"kubectl (cp-1:/root/.kube/config) → kube-apiserver on cp-1".to_string()
            )
        );
    }

    #[test]
    fn a_kubeconfig_of_another_cluster_has_no_edge() {
        let mut snap = cluster(1, 0);
        snap.nodes[0].files.insert(
            "/root/.kube/other".into(),
            kubeconfig(&[fp('9')], &fp('9'), None),
        );
        assert!(!names(&snap).iter().any(|n| n.contains("/root/.kube/other")));
        // One CA of this cluster among others: a client of this cluster.
        snap.nodes[0].files.insert(
            "/root/.kube/other".into(),
            kubeconfig(&[fp('9'), k_old()], &k_old(), None),
        );
        assert!(names(&snap).iter().any(|n| n.contains("/root/.kube/other")));
    }

    #[test]
    fn the_kubelet_kubeconfig_is_the_kubelets_not_kubectls() {
        let all = edges(&cluster(1, 0));
        assert!(!all.iter().any(|e| matches!(&e.client,
            Client::Kubeconfig { path, component: None, .. } if path == KUBELET_CONF)));
    }

    #[test]
    fn each_pod_reaches_every_api_server_and_bare_pods_are_unmanaged() {
        let mut snap = cluster(2, 1);
        snap.kube = Some(KubeSnapshot {
            server: String::new(),
            namespaces: 1,
            kube_root_ca: vec![],
            kube_root_ca_missing: vec![],
            token_secrets: vec![],
            legacy_tokens: vec![],
            cluster_info: None,
            extension_auth: None,
            ca_bundles: vec![],
            workloads: 1,
            pods: vec![PodGroup {
                trust: Some(vec![k_old()]),
                pods: vec!["a/owned".into(), "a/bare".into()],
                workloads: vec!["a/Deployment/d".into()],
                bare: vec!["a/bare".into()],
            }],
        });
        let all = edges(&snap);
        assert_eq!(all.len(), expected(2, 1) + 2 * 2);
        let pods: Vec<&Edge> = all
            .iter()
            .filter(|e| matches!(e.client, Client::Pod { .. }))
            .collect();
        assert_eq!(pods.len(), 4);
        let unmanaged: Vec<&str> = pods
            .iter()
            .filter(|e| !e.managed)
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(
            unmanaged,
            [
                "pod a/bare → kube-apiserver on cp-1",
                "pod a/bare → kube-apiserver on cp-2"
            ]
        );
    }
}
