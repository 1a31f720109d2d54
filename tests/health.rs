//! A restart is done when the component's own health endpoint says so: the probe in
//! its manifest (kube-apiserver `/readyz`, the controller manager's `:10257/healthz`),
//! the kubelet's `healthz`. A component that crash-loops fails the apply at that
//! restart's wait, naming it and what its health endpoint said; once its files are
//! fixed and it is back, the apply resumes and completes.

use crate::common;

use std::time::{Duration, Instant};

/// `crictl ps` on a sandbox node, through the CLI (as an operator would on the node).
fn running(w: &common::Workdir, node: &str, component: &str) -> bool {
    let (code, out, _) = w.run(&[
        "sandbox",
        "node-exec",
        "cluster",
        node,
        "--",
        "crictl",
        "ps",
        "--name",
        component,
        "-o",
        "json",
    ]);
    code == 0 && out.contains("CONTAINER_RUNNING")
}

#[test]
fn every_restart_waits_for_the_components_health_endpoint() {
    let w = common::sandbox_restarting(1, 1, "0.2s");
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let out = w.ok(&["apply", "--auto-approve"]);
    let ip = w.ip("cp-1");
    let w1 = w.ip("w-1");
    // Where the manifests' probes and the kubelet's config say, and what each said.
    for (what, said) in [
        (
            "kube-apiserver restarted",
            format!("https://{ip}:6443/readyz said 200 ok"),
        ),
        (
            "kube-controller-manager restarted",
            format!("https://{ip}:10257/healthz said 200 ok"),
        ),
        (
            "kube-scheduler restarted",
            format!("https://{ip}:10259/healthz said 200 ok"),
        ),
        (
            "kubelet restarted",
            format!("http://{w1}:10248/healthz said 200 ok"),
        ),
    ] {
        assert!(
            out.lines().any(|l| l.contains(what) && l.contains(&said)),
            "a line with `{what}` and `{said}`:\n{out}"
        );
    }
    assert!(w.ok(&["plan"]).contains("No changes."));
}

#[test]
fn a_crash_looping_component_fails_at_its_restart_wait_and_the_apply_resumes_once_fixed() {
    let w = common::sandbox_restarting(1, 1, "0.2s");
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "front-proxy", "--to-end"]);
    // Between plan and apply, a key the API server reads (and the rotation does not
    // touch) stops matching its certificate: the API server cannot start again. Its
    // serving key: no client presents it, so the pre-flight's live handshakes (the
    // server side is what the running process holds) do not see it first.
    let key = w.node("cp-1").join("etc/kubernetes/pki/apiserver.key");
    let good = std::fs::read(&key).unwrap();
    let other = trustform::pki::issue::generate_key(trustform::pki::KeyAlgorithm::EcdsaP256)
        .unwrap()
        .serialize_pem();
    std::fs::write(&key, other).unwrap();
    let started = Instant::now();
    let (code, out, err) = w.run(&["apply", "--auto-approve", "--restart-timeout", "3s"]);
    let all = format!("{out}{err}");
    assert_ne!(code, 0, "{all}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "it stopped at the wait"
    );
    let ip = w.ip("cp-1");
    let line = all
        .lines()
        .find(|l| l.contains("cannot restart kube-apiserver") && l.contains("not back after"))
        .unwrap_or_else(|| panic!("the restart wait failed, naming kube-apiserver:\n{all}"));
    assert!(
        line.contains(&format!("https://{ip}:6443/readyz: ")) && line.contains("refused"),
        "what the health endpoint said: {line}"
    );
    assert!(
        line.contains("tls: private key does not match public key"),
        "its log: {line}"
    );
    // Fixed; the kubelet's back-off brings the API server back with the good key.
    std::fs::write(&key, good).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !running(&w, "cp-1", "kube-apiserver") {
        assert!(
            Instant::now() < deadline,
            "kube-apiserver back after the fix"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = w.ok(&["apply", "--auto-approve"]);
    assert!(out.contains("Apply complete!"), "{out}");
    let failed = line.trim().split(": ").next().unwrap();
    assert!(
        out.lines()
            .any(|l| l.contains(&format!("] {failed}: done"))),
        "it went on from the failed step {failed}:\n{out}"
    );
    assert!(w.ok(&["plan"]).contains("No changes."));
}

#[test]
fn a_tls_error_in_a_component_log_fails_the_gate_quoting_it() {
    let w = common::sandbox_restarting(1, 1, "0");
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "front-proxy", "--to-end"]);
    let gate = "front-proxy-ca/verify@cluster";
    // The apply stops before its first gate …
    let mut cmd = w.cmd();
    cmd.args(["apply", "--auto-approve"])
        .env("TRUSTFORM_FAULT", format!("fail:{gate}"));
    let first = cmd.output().unwrap();
    assert!(!first.status.success());
    // … the API server logs a failed handshake, as Go's TLS server words it …
    trustform::sandbox::node::logs::handshake_error(
        &w.node("cp-1"),
        "kube-apiserver",
        1,
        "127.0.0.1:51234",
        "remote error: tls: bad certificate",
    );
    // … and the gate, resumed, reads it and fails, quoting it.
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    let all = format!("{out}{err}");
    assert_ne!(code, 0, "{all}");
    let line = all
        .lines()
        .find(|l| l.contains(gate) && l.contains("a TLS error in a log"))
        .unwrap_or_else(|| panic!("the gate failed on the log:\n{all}"));
    assert!(
        line.contains("cp-1 kube-apiserver")
            && line.contains(
                "http: TLS handshake error from 127.0.0.1:51234: remote error: tls: bad certificate"
            ),
        "names the node, the component and quotes the line: {line}"
    );
    // Looked at, accepted: the gates read on from now, and the apply completes.
    let out = w.ok(&["apply", "--auto-approve", "--accept-logged-errors"]);
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(
        out.lines().any(|l| l.contains("logs read")),
        "the gates say how many logs they read:\n{out}"
    );
    assert!(w.ok(&["plan"]).contains("No changes."));
}
