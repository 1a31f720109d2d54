//! Real clusters: every node reached only over SSH (a real OpenSSH sshd per sandbox node,
//! `sandbox up --ssh`), every restart awaited, the kubelet's files rotated as the kubelet
//! does it; and the ways SSH fails (unknown host key, sudo asking for a password, an sshd
//! that dies mid-apply), each with its message.

use crate::common;

use common::Workdir;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `init --sandbox cluster --ssh`: every node over SSH, nothing local.
fn init_over_ssh(w: &Workdir) {
    w.ok(&["init", "--sandbox", "cluster", "--ssh"]);
    let text = std::fs::read_to_string(w.config()).unwrap();
    assert!(
        !text.contains("local:"),
        "no node has local access:\n{text}"
    );
    assert!(text.contains("ssh: { host: \"127."), "{text}");
    common::fast_issuance(w);
}

fn journal_events(w: &Workdir) -> Vec<Value> {
    let dir = w.path().join(".trustform/journal");
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "jsonl") {
            for l in std::fs::read_to_string(e.path()).unwrap().lines() {
                out.push(serde_json::from_str(l).unwrap());
            }
        }
    }
    out
}

#[test]
fn a_3_plus_2_cluster_reached_only_over_ssh_rotates_with_every_restart_awaited() {
    let w = common::sandbox_restarting(3, 2, "300ms");
    let _up = common::Up::start_with(&w, &["--ssh"], None);
    init_over_ssh(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    w.ok(&["rotate", "front-proxy", "--to-end"]);
    w.ok(&["plan", "-out", "plan.json"]);
    let (code, out, err) = w.run(&[
        "apply",
        "plan.json",
        "--probe",
        "--probe-sandbox",
        "cluster",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let summary: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .unwrap_or_else(|| panic!("a summary line:\n{out}"));
    assert_eq!(summary["ok"], true, "{summary}");
    // One SSH connection per node, reused by every step.
    assert_eq!(summary["ssh_connections"], 5, "{summary}");
    // The live prober: every edge handshaken, none failed.
    let probe = &summary["probe"];
    assert!(probe["edges"].as_array().unwrap().len() > 40, "{probe}");
    assert_eq!(probe["failures"], 0, "{probe}");
    assert!(w.ok(&["plan"]).contains("No changes."));
    // Every gate handshook live over SSH (`ssh -W` to each endpoint), and none failed.
    let gates: Vec<String> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "step_done")
        .flat_map(|v| v["did"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d.as_str().map(str::to_string))
        .filter(|d| d.starts_with("gate "))
        .collect();
    assert!(gates.len() >= 4, "{gates:?}");
    for g in &gates {
        let handshakes: usize = g
            .split(", ")
            .find_map(|p| {
                p.strip_suffix(" handshakes")
                    .or_else(|| p.split_once(" handshakes (").map(|(n, _)| n))
            })
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a handshake count: {g}"));
        // 5 nodes' kubeconfigs, 3 API servers × 5 kubelets and × 3 etcds, 6 peer pairs.
        assert!(handshakes >= 40, "{g}");
        assert!(g.ends_with(", 0 failures"), "{g}");
        assert!(!g.contains("not checked live"), "{g}");
    }

    // Every restart waited at least the simulated downtime; a rolling restart never
    // started on a node before the one before it was seen back.
    let events = journal_events(&w);
    let plan: Value =
        serde_json::from_slice(&std::fs::read(w.path().join("plan.json")).unwrap()).unwrap();
    let restarts: BTreeMap<String, Vec<String>> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["ops"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["op"] == "restart")
        })
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["depends_on"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert!(restarts.len() > 20, "{}", restarts.len());
    let at = |event: &str, step: &str| -> time::OffsetDateTime {
        let e = events
            .iter()
            .find(|e| e["event"] == event && e["step"] == step)
            .unwrap_or_else(|| panic!("{event} of {step}"));
        time::OffsetDateTime::parse(
            e["at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let mut chained = 0;
    for (id, deps) in &restarts {
        let done = events
            .iter()
            .find(|e| e["event"] == "step_done" && e["step"] == *id)
            .unwrap_or_else(|| panic!("{id} done"));
        assert!(
            done["ms"].as_u64().unwrap() >= 300,
            "{id} took {} ms: it did not wait for the 300 ms restart",
            done["ms"]
        );
        let waited = done["did"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains(" restarted; waited "));
        assert!(waited, "{id}: {done}");
        for d in deps.iter().filter(|d| restarts.contains_key(*d)) {
            chained += 1;
            assert!(
                at("step_start", id) >= at("step_done", d),
                "{id} started before {d} was seen back"
            );
        }
    }
    assert!(chained >= 4, "rolling chains exist: {chained}");

    // openssl: every node's leaves verify against the new CAs alone.
    let new_ca = |auth: &str| {
        let mut v: Vec<_> = std::fs::read_dir(w.path().join("cas"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(auth))
            .collect();
        v.sort();
        v.pop().unwrap()
    };
    let (k8s, fp) = (new_ca("kubernetes-"), new_ca("front-proxy-"));
    let mut verified = 0;
    for node in ["cp-1", "cp-2", "cp-3", "w-1", "w-2"] {
        let pki = w.node(node).join("etc/kubernetes/pki");
        for (leaf, ca) in [
            ("apiserver.crt", &k8s),
            ("apiserver-kubelet-client.crt", &k8s),
            ("front-proxy-client.crt", &fp),
        ] {
            if pki.join(leaf).is_file() {
                assert!(
                    common::openssl_verify(ca, &pki.join(leaf)).is_ok(),
                    "{node}:{leaf}"
                );
                verified += 1;
            }
        }
        let current = w
            .node(node)
            .join("var/lib/kubelet/pki/kubelet-client-current.pem");
        assert!(
            common::openssl_verify(&k8s, &current).is_ok(),
            "{node}: kubelet client"
        );
        verified += 1;
    }
    assert_eq!(verified, 3 * 3 + 5);
}

#[test]
fn an_unknown_host_key_is_refused_and_named() {
    let w = common::sandbox_restarting(1, 0, "0");
    let _up = common::Up::start_with(&w, &["--ssh"], None);
    let info: Value =
        serde_json::from_slice(&std::fs::read(w.cluster().join("run/ssh.json")).unwrap()).unwrap();
    let n = &info["nodes"][0];
    let empty = w.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let spec = format!("root@{}:{}", n["host"].as_str().unwrap(), n["port"]);
    let (code, _, err) = w.run(&[
        "init",
        "--ssh",
        &spec,
        "--ssh-identity",
        n["identity_file"].as_str().unwrap(),
        "--ssh-known-hosts",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("Host key verification failed") || err.contains("host key is known"),
        "{err}"
    );
    assert!(
        err.contains("trustform never accepts an unknown host key"),
        "{err}"
    );
    assert!(
        err.contains(&format!("ssh-keyscan -p {}", n["port"])),
        "{err}"
    );
    assert!(!w.config().exists(), "nothing written");
}

#[test]
fn a_login_whose_sudo_needs_a_password_gets_a_clear_error() {
    let w = common::sandbox_restarting(1, 0, "0");
    let _up = common::Up::start_with(&w, &["--ssh", "--ssh-sudo", "password"], None);
    let info: Value =
        serde_json::from_slice(&std::fs::read(w.cluster().join("run/ssh.json")).unwrap()).unwrap();
    let n = &info["nodes"][0];
    let spec = format!(
        "{}@{}:{}",
        n["sudo_user"].as_str().unwrap(),
        n["host"].as_str().unwrap(),
        n["port"]
    );
    let (code, _, err) = w.run(&[
        "init",
        "--ssh",
        &spec,
        "--ssh-identity",
        n["identity_file"].as_str().unwrap(),
        "--ssh-known-hosts",
        n["known_hosts_file"].as_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("sudo asks for a password"), "{err}");
    assert!(err.contains("never types a password"), "{err}");
}

#[test]
fn an_sshd_killed_mid_apply_fails_its_step_and_the_apply_resumes_once_it_is_back() {
    let w = common::sandbox_restarting(1, 2, "200ms");
    let _up = common::Up::start_with(&w, &["--ssh"], None);
    init_over_ssh(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    // Stop w-2's sshd as soon as the apply has begun: its steps fail, naming the node.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin!("trustform"))
        .current_dir(w.path())
        .env("NO_COLOR", "1")
        .env("TRUSTFORM_RESTART_SETTLE", "0s")
        .args(["apply", "--auto-approve"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !w.path().join(".trustform/journal").is_dir() {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "the apply ended before it began: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the apply began");
        std::thread::sleep(Duration::from_millis(20));
    }
    w.ok(&["sandbox", "sshd", "cluster", "w-2", "--stop"]);
    let out = child.wait_with_output().unwrap();
    let err =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("@w-2"), "a step on w-2 failed: {err}");
    assert!(
        err.contains("w-2 (ssh root@"),
        "names how w-2 is reached: {err}"
    );
    w.ok(&["sandbox", "sshd", "cluster", "w-2", "--start"]);
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Resuming apply"), "{out}");
    assert!(w.ok(&["plan"]).contains("No changes."));
}
