//! Gates handshake live: a kubelet that restarts holding a client CA that does not hold
//! the API server's kubelet-client issuer refuses the API server, and the next gate fails
//! naming that edge and the address it dialed.

use crate::common;

#[test]
fn a_kubelet_holding_a_foreign_client_ca_fails_the_next_gate_naming_the_edge() {
    let w = common::sandbox_restarting(1, 1, "0");
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    // Stop right after w-1's trust files are written, before its kubelet restarts.
    let out = w
        .cmd()
        .args(["apply", "--auto-approve"])
        .env("TRUSTFORM_FAULT", "after:kubernetes-ca/kubelet-trust@w-1")
        .output()
        .unwrap();
    assert!(
        common::fault_fired(&out),
        "the fault fired: {:?}",
        out.status
    );
    // w-1's clientCAFile becomes a CA that never issued the API server's client
    // certificate.
    let foreign =
        trustform::pki::issue::new_ca("foreign", trustform::pki::KeyAlgorithm::EcdsaP256, 10)
            .unwrap();
    std::fs::write(
        w.node("w-1").join("etc/kubernetes/pki/ca.crt"),
        &foreign.cert_pem,
    )
    .unwrap();
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    let all = format!("{out}{err}");
    assert_ne!(code, 0, "{all}");
    let w1 = w.ip("w-1");
    let line = all
        .lines()
        .find(|l| l.contains("handshake kube-apiserver on cp-1 → kubelet on w-1"))
        .unwrap_or_else(|| panic!("a failed handshake of that edge:\n{all}"));
    assert!(
        line.contains(&format!("dialed {w1}:10250 from w-1")),
        "the address dialed: {line}"
    );
    assert!(line.contains("TLS"), "what failed: {line}");
    // The gate that failed is the one after w-1's kubelet restart, and only that edge
    // (the other kubelet still takes the API server).
    assert!(all.contains("gate FAILED"), "{all}");
    assert!(
        !all.contains("→ kubelet on cp-1 (unverified: the API server does not verify kubelet serving certificates: no --kubelet-certificate-authority, as kubeadm leaves it) (dialed"),
        "{all}"
    );
}

/// The gates handshake over exactly the edges rehearse judges and the prober probes: one
/// edge model. For 3 control planes and 2 workers the count is derived here from the
/// shape of the cluster, then the names are compared with the edge list's.
#[test]
fn the_gate_handshakes_are_the_edge_list_of_a_3_plus_2_cluster() {
    trustform::sandbox::transport::install();
    let w = common::sandbox(3, 2, false);
    let sb = trustform::sandbox::Sandbox::load(&w.cluster()).unwrap();
    let nodes: std::collections::BTreeMap<String, trustform::exec::Node> = sb
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                trustform::exec::Node::local(&n.name, &n.root),
            )
        })
        .collect();
    let views = trustform::exec::read_views(&nodes);
    let live = trustform::apply::live::check(&views);
    assert!(live.failures.is_empty(), "{:?}", live.failures);
    // From the shape: each control plane's kubelet, controller manager and scheduler →
    // its own API server; each worker's kubelet and every admin.conf and super-admin.conf
    // (kubeadm writes the latter on the first control plane only) → every API server;
    // every API server → every kubelet and its own etcd; every etcd member → every other.
    let (cps, workers) = (3, 2);
    let confs_read_at_use: usize = ["cp-1", "cp-2", "cp-3"]
        .iter()
        .map(|n| {
            ["admin.conf", "super-admin.conf"]
                .iter()
                .filter(|c| w.node(n).join("etc/kubernetes").join(c).is_file())
                .count()
        })
        .sum();
    assert_eq!(confs_read_at_use, 4);
    let expected = cps * 3
        + workers * cps
        + confs_read_at_use * cps
        + cps * (cps + workers)
        + cps
        + cps * (cps - 1);
    assert_eq!(live.edges.len(), expected, "{:#?}", live.edges);
    assert_eq!(live.handshakes, expected);
    assert_eq!(
        live.unverified,
        cps * (cps + workers),
        "API server → kubelet, as kubeadm"
    );
    for name in [
        "kubelet on w-2 → kube-apiserver on cp-3",
        "kube-scheduler on cp-2 → kube-apiserver on cp-2",
        "kubectl (cp-1:/etc/kubernetes/super-admin.conf) → kube-apiserver on cp-3",
        "kube-apiserver on cp-1 → etcd on cp-1",
        "etcd on cp-3 → etcd on cp-2 (peer)",
    ] {
        assert!(live.edges.iter().any(|e| e == name), "{name} not dialed");
    }
    assert!(
        live.edges
            .iter()
            .any(|e| e.starts_with("kube-apiserver on cp-2 → kubelet on w-1 (unverified")),
        "{:#?}",
        live.edges
    );
    // And the same names as the edge list rehearse and the prober use (less the pods
    // and the aggregated API server, which are not nodes' ports).
    let snap = trustform::observe::observe(
        &sb.nodes
            .iter()
            .map(|n| trustform::observe::NodeTarget::local(&n.name, &n.root))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let mut listed: Vec<String> = trustform::plan::edges::edges(&snap)
        .into_iter()
        .filter(|e| {
            !matches!(e.client, trustform::plan::edges::Client::Pod { .. })
                && e.server != trustform::plan::edges::Server::Aggregated
        })
        .map(|e| e.name)
        .collect();
    let mut dialed: Vec<String> = live
        .edges
        .iter()
        .map(|e| e.split(" (unverified").next().unwrap().to_string())
        .collect();
    listed.sort();
    dialed.sort();
    assert_eq!(dialed, listed);
}
