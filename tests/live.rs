//! Gates handshake live: a kubelet that restarts holding a client CA that does not hold
//! the API server's kubelet-client issuer refuses the API server, and the next gate fails
//! naming that edge and the address it dialed.

mod common;

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
