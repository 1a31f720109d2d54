//! The sandbox's etcd members are real etcd processes (`sandbox up`, where etcd is
//! installed): one cluster, etcd's own health, logs and crash loops, and its own trust
//! rules, witnessed by `etcdctl` and seen by trustform's gate and prober.

use crate::common::{self, Up, Workdir};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trustform::apply::probe::{self, Input, Prober};
use trustform::sandbox::etcd::Registry;
use trustform::sandbox::listeners::Endpoints;

const CPS: [&str; 3] = ["cp-1", "cp-2", "cp-3"];

/// A command on a node: its stdout and stderr (`crictl logs` prints a container's
/// stderr lines on stderr).
fn node_exec(w: &Workdir, node: &str, argv: &[&str]) -> String {
    let (code, out, err) =
        w.run(&[&["sandbox", "node-exec", "cluster", node, "--"], argv].concat());
    assert_eq!(code, 0, "{argv:?}: {err}");
    format!("{out}{err}")
}

/// `etcdctl endpoint health --cluster` through `via`: Ok when every member is healthy.
fn cluster_health(w: &Workdir, via: &str) -> Result<String, String> {
    let (ok, text) = common::etcdctl(w, via, &["endpoint", "health", "--cluster"]);
    if ok { Ok(text) } else { Err(text) }
}

fn manifest(w: &Workdir, node: &str) -> std::path::PathBuf {
    w.node(node).join("etc/kubernetes/manifests/etcd.yaml")
}

fn edit_manifest(w: &Workdir, node: &str, from: &str, to: &str) {
    let path = manifest(w, node);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from} in {}", path.display());
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[test]
fn the_members_are_one_healthy_etcd_cluster_with_their_own_logs() {
    if !common::require_etcd("the_members_are_one_healthy_etcd_cluster") {
        return;
    }
    let w = common::sandbox(3, 1, false);
    let _up = Up::start(&w, None);
    let registry = Registry::load(&w.cluster()).expect("sandbox up runs real members");
    // Every member is an etcd process.
    for n in CPS {
        let pid = registry.members[n].pid;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "etcd", "{n}: pid {pid}");
    }
    // etcdctl, the witness: three started members at the nodes' addresses, all healthy.
    let (ok, list) = common::etcdctl(&w, "cp-1", &["member", "list", "-w", "json"]);
    assert!(ok, "{list}");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let mut members: Vec<(String, String)> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["peerURLs"][0].as_str().unwrap().to_string(),
            )
        })
        .collect();
    members.sort();
    let want: Vec<(String, String)> = CPS
        .iter()
        .map(|n| (n.to_string(), format!("https://{}:2380", w.ip(n))))
        .collect();
    assert_eq!(members, want);
    let health = cluster_health(&w, "cp-2").unwrap();
    for n in CPS {
        assert!(
            health.contains(&format!("https://{}:2379 is healthy", w.ip(n))),
            "{health}"
        );
    }
    // The prober and the gates dial the members themselves.
    let e = Endpoints::load(&w.cluster()).unwrap();
    for n in CPS {
        assert_eq!(
            e.process(n, "etcd"),
            Some(format!("{}:2379", w.ip(n)).as_str())
        );
        assert_eq!(
            e.process(n, "etcd-peer"),
            Some(format!("{}:2380", w.ip(n)).as_str())
        );
    }
    // The container's log is etcd's own output (zap JSON).
    let id = node_exec(&w, "cp-1", &["crictl", "ps", "-q", "--name", "etcd"]);
    let logs = node_exec(&w, "cp-1", &["crictl", "logs", id.trim()]);
    assert!(
        logs.lines()
            .any(|l| l.contains("\"caller\":\"etcdserver/server.go") || l.contains("raft")),
        "{logs}"
    );
    assert!(
        !logs.contains("etcd-version 3.5.16"),
        "not the simulated line"
    );
}

#[test]
fn a_member_that_cannot_start_crash_loops_until_its_manifest_is_mended() {
    if !common::require_etcd("a_member_that_cannot_start_crash_loops") {
        return;
    }
    let w = common::sandbox(3, 0, false);
    let _up = Up::start(&w, None);
    let good = "--cert-file=/etc/kubernetes/pki/etcd/server.crt";
    let bad = "--cert-file=/etc/kubernetes/pki/etcd/missing.crt";
    edit_manifest(&w, "cp-2", good, bad);
    // etcd itself refuses to start: its container exits, and the kubelet restarts it with
    // its back-off, over and over.
    let tries = common::eventually("a crash loop", Duration::from_secs(60), || {
        let ps = node_exec(
            &w,
            "cp-2",
            &["crictl", "ps", "-a", "--name", "etcd", "-o", "json"],
        );
        let v: serde_json::Value = serde_json::from_str(&ps).map_err(|e| e.to_string())?;
        let containers = v["containers"].as_array().cloned().unwrap_or_default();
        let exited = containers
            .iter()
            .filter(|c| c["state"] == "CONTAINER_EXITED")
            .count();
        let retried = containers
            .iter()
            .any(|c| c["metadata"]["attempt"].as_u64() >= Some(2));
        if exited >= 2 && retried {
            Ok(containers)
        } else {
            Err(ps)
        }
    });
    assert!(
        tries
            .iter()
            .all(|c| c["state"] != "CONTAINER_RUNNING"
                || c["metadata"]["attempt"].as_u64() >= Some(2)),
        "{tries:?}"
    );
    let exited = tries
        .iter()
        .find(|c| c["state"] == "CONTAINER_EXITED")
        .unwrap();
    let logs = node_exec(
        &w,
        "cp-2",
        &["crictl", "logs", exited["id"].as_str().unwrap()],
    );
    assert!(logs.contains("missing.crt"), "etcd's own error: {logs}");
    // The two others keep quorum; the cluster is not healthy.
    let sick = cluster_health(&w, "cp-1").unwrap_err();
    assert!(
        sick.contains(&format!("https://{}:2379 is unhealthy", w.ip("cp-2"))),
        "{sick}"
    );
    // Mended: the next try starts, and the member rejoins.
    edit_manifest(&w, "cp-2", bad, good);
    common::eventually("the member rejoins", Duration::from_secs(60), || {
        cluster_health(&w, "cp-1")
    });
}

#[test]
fn a_member_that_trusts_no_peer_drops_out_and_the_gate_and_prober_name_it() {
    if !common::require_etcd("a_member_that_trusts_no_peer_drops_out") {
        return;
    }
    trustform::sandbox::transport::install();
    let w = common::sandbox(3, 1, false);
    let up = Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&["rotate", "front-proxy", "--to-end"]);
    w.ok(&["plan", "-out", "plan.json"]);
    // cp-3's peer trust: an unrelated CA, made with the openssl CLI.
    let pki = w.node("cp-3").join("etc/kubernetes/pki/etcd");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
        .args(["-subj", "/CN=unrelated-ca", "-keyout"])
        .arg(w.path().join("unrelated.key"))
        .arg("-out")
        .arg(pki.join("unrelated-ca.crt"))
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    edit_manifest(
        &w,
        "cp-3",
        "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt",
        "--peer-trusted-ca-file=/etc/kubernetes/pki/etcd/unrelated-ca.crt",
    );
    // The member restarts with it, and drops out: etcdctl sees it unhealthy, the two
    // others keep quorum.
    let sick = common::eventually(
        "cp-3 unhealthy",
        Duration::from_secs(60),
        || match cluster_health(&w, "cp-1") {
            Err(t) if t.contains(&format!("https://{}:2379 is unhealthy", w.ip("cp-3"))) => Ok(t),
            other => Err(format!("{other:?}")),
        },
    );
    for n in ["cp-1", "cp-2"] {
        assert!(
            sick.contains(&format!("https://{}:2379 is healthy", w.ip(n))),
            "{sick}"
        );
    }
    // trustform's gate refuses to apply, naming the member's peer edges.
    let (code, _, err) = w.run(&["apply", "plan.json"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("trustform::apply::preflight::gate"), "{err}");
    assert!(
        err.contains("etcd on cp-1 → etcd on cp-3 (peer)")
            && err.contains("etcd on cp-3 → etcd on cp-1 (peer)"),
        "{err}"
    );
    assert!(
        !err.contains("etcd on cp-1 → etcd on cp-2 (peer)"),
        "cp-1 and cp-2 still talk:\n{err}"
    );
    // The prober: every peer edge of cp-3 fails, both ways; the others do not.
    let (snap, nodes) = common::observed_locally(&w);
    let endpoints = Endpoints::load(&w.cluster()).unwrap();
    let input = Input::new(&snap, nodes, endpoints, BTreeMap::new(), None);
    let prober = Prober::start(input, probe::Options::default()).unwrap();
    common::eventually("3 rounds", Duration::from_secs(90), || {
        if prober.rounds() >= 3 {
            Ok(())
        } else {
            Err(format!("{} rounds", prober.rounds()))
        }
    });
    let report = prober.stop();
    let peer: Vec<&probe::EdgeReport> = report
        .edges
        .iter()
        .filter(|e| e.kind == Some(probe::EdgeKind::EtcdPeer))
        .collect();
    assert_eq!(peer.len(), 6, "{:?}", report.lines());
    for e in peer {
        assert!(e.attempts >= 3, "{}: {} attempts", e.name, e.attempts);
        if e.name.contains("cp-3") {
            assert_eq!(e.failures, e.attempts, "{} never gets through", e.name);
        } else {
            assert_eq!(e.failures, 0, "{}: {:?}", e.name, e.first_error);
        }
    }
    drop(up);
}

#[test]
fn an_etcd_ca_rotation_keeps_every_etcd_edge_and_ends_on_the_new_ca_alone() {
    if !common::require_etcd("an_etcd_ca_rotation_keeps_every_etcd_edge") {
        return;
    }
    // A 3 + 1 sandbox whose restarts take a little time, through the CLI.
    let w = common::sandbox_restarting(3, 1, "0.2s");
    let _up = Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "etcd", "--to-end"]);
    let plan = w.ok(&["plan", "-out", "plan.json"]);
    assert!(plan.contains("edges stay live through all"), "{plan}");
    // The documented order: etcd members one at a time, each stage.
    for (id, doc) in [
        ("etcd-ca/distribute-ca@cp-1", Some("1")),
        ("etcd-ca/restart-etcd@cp-3", None),
        ("etcd-ca/etcd-certs@cp-1", Some("8.3")),
        ("etcd-ca/drop-old@cp-1", Some("11.2")),
    ] {
        let label = match doc {
            Some(d) => format!("[{d}] {id}"),
            None => id.to_string(),
        };
        assert!(plan.contains(&label), "{label}:\n{plan}");
    }
    let (code, out, err) = w.run(&["apply", "plan.json", "--probe", "--format", "json"]);
    let summary: serde_json::Value = common::probe_summary(&out);
    let report: probe::Report = serde_json::from_value(summary["probe"].clone()).unwrap();
    assert_eq!(code, 0, "{err}\n{:#?}", report.lines());
    // Not one failed handshake; the etcd edges were probed throughout, against the real
    // members (a member restarting refuses connections: counted as down, apart).
    assert_eq!(report.failures, 0, "{:?}", report.lines());
    for kind in [probe::EdgeKind::Etcd, probe::EdgeKind::EtcdPeer] {
        let edges: Vec<&probe::EdgeReport> = report
            .edges
            .iter()
            .filter(|e| e.kind == Some(kind))
            .collect();
        assert!(!edges.is_empty(), "{kind:?}");
        for e in edges {
            assert!(e.attempts > e.down + 10, "{}: {e:?}", e.name);
            assert_eq!(e.failures, 0, "{}: {:?}", e.name, e.first_error);
        }
    }
    assert!(
        report.down > 0,
        "real members were down while they restarted: {:?}",
        report.lines()
    );
    // openssl: every etcd leaf and apiserver-etcd-client.crt verifies against the new
    // etcd CA alone, which is all etcd/ca.crt holds.
    let new_ca = std::fs::read_dir(w.path().join("cas"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("etcd-"))
        })
        .expect("the new etcd CA in cas/");
    for n in CPS {
        let pki = w.node(n).join("etc/kubernetes/pki");
        assert_eq!(
            std::fs::read_to_string(pki.join("etcd/ca.crt")).unwrap(),
            std::fs::read_to_string(&new_ca).unwrap(),
            "{n}"
        );
        for leaf in [
            "etcd/server.crt",
            "etcd/peer.crt",
            "etcd/healthcheck-client.crt",
            "apiserver-etcd-client.crt",
        ] {
            common::openssl_verify(&new_ca, &pki.join(leaf))
                .unwrap_or_else(|e| panic!("{n}:{leaf}: {e}"));
        }
    }
    // etcdctl, with the re-issued healthcheck client: one healthy cluster.
    common::eventually("a healthy cluster", Duration::from_secs(30), || {
        cluster_health(&w, "cp-3")
    });
    let again = w.ok(&["plan"]);
    assert!(again.contains("No changes."), "{again}");
}

/// Once `armed` says so, `kill -9` every process of `node`'s member, each new one as
/// soon as it is seen, until `stop` is set: a member that crashes as soon as it starts.
/// Gives the pids it killed.
fn crash_member(
    w: &Workdir,
    node: &str,
    armed: impl Fn(u32) -> bool + Send + 'static,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u32>> {
    let dir = w.cluster();
    let node = node.to_string();
    std::thread::spawn(move || {
        let mut killed = vec![];
        let mut fired = false;
        while !stop.load(Ordering::SeqCst) {
            if let Some(pid) =
                Registry::load(&dir).and_then(|r| r.members.get(&node).map(|m| m.pid))
                && (fired || armed(pid))
                && !killed.contains(&pid)
            {
                fired = true;
                // SAFETY: a plain kill(2) of a member process this test watches.
                if unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) } == 0 {
                    killed.push(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        killed
    })
}

/// A 3 + 1 sandbox with real members, up, its etcd CA rotation in plan.json.
fn etcd_rotation_planned() -> (Workdir, Up) {
    let w = common::sandbox_restarting(3, 1, "0.2s");
    let up = Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "etcd", "--to-end"]);
    w.ok(&["plan", "-out", "plan.json"]);
    (w, up)
}

#[test]
fn a_member_killed_during_its_restart_wait_fails_the_step_and_apply_resumes() {
    if !common::require_etcd("a_member_killed_during_its_restart_wait") {
        return;
    }
    let (w, _up) = etcd_rotation_planned();
    // cp-1's member is restarted first (restart-etcd@cp-1): each new process it gets
    // is killed at once, so it is never back.
    let stop = Arc::new(AtomicBool::new(false));
    let first = Registry::load(&w.cluster()).unwrap().members["cp-1"].pid;
    let killer = crash_member(&w, "cp-1", move |pid| pid != first, stop.clone());
    let (code, out, err) = w.run(&["apply", "plan.json", "--restart-timeout", "4s"]);
    stop.store(true, Ordering::SeqCst);
    let killed = killer.join().unwrap();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(!killed.is_empty(), "no member process was killed:\n{out}");
    assert!(
        out.contains("etcd-ca/restart-etcd@cp-1: "),
        "the step that failed:\n{out}"
    );
    assert!(
        out.contains("cp-1: cannot restart etcd: not back after"),
        "the restart wait names the member:\n{out}"
    );
    assert!(
        out.contains("skipped: upstream step etcd-ca/restart-etcd@cp-1"),
        "{out}"
    );
    // No other member went down after it: cp-2 and cp-3 kept quorum.
    let (ok, text) = common::etcdctl(&w, "cp-2", &["endpoint", "health"]);
    assert!(ok, "{text}");
    let status: serde_json::Value =
        serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status["state"], "failed", "{status}");
    // The member is left alone: apply resumes with the step and finishes.
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Resuming apply"), "{out}");
    assert!(
        out.contains("etcd cluster healthy after: 3 of 3 members"),
        "each restart awaits the whole cluster:\n{out}"
    );
    common::eventually("a healthy cluster", Duration::from_secs(30), || {
        cluster_health(&w, "cp-3")
    });
    assert!(w.ok(&["plan"]).contains("No changes."));
}

#[test]
fn an_etcd_restart_waits_for_a_whole_cluster_and_stops_when_another_member_is_down() {
    if !common::require_etcd("a_restart_waits_for_every_member") {
        return;
    }
    let (w, _up) = etcd_rotation_planned();
    // cp-3's member crash-loops from the moment the apply starts (its journal appears,
    // after the pre-flight): restarting cp-1's as well would leave one of three. The
    // step stops before it, naming cp-3.
    let stop = Arc::new(AtomicBool::new(false));
    let journal = w.path().join(".trustform/journal");
    let killer = crash_member(
        &w,
        "cp-3",
        move |_| {
            std::fs::read_dir(&journal).is_ok_and(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
            })
        },
        stop.clone(),
    );
    let (code, out, err) = w.run(&["apply", "plan.json", "--restart-timeout", "3s"]);
    stop.store(true, Ordering::SeqCst);
    killer.join().unwrap();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("cp-1: the etcd cluster was not healthy before its member's restart"),
        "{out}"
    );
    assert!(
        out.contains("1 of 3 members unhealthy: cp-3 (https://"),
        "{out}"
    );
    // cp-1's member was not touched: the manifest is the one before.
    let manifest = std::fs::read_to_string(manifest(&w, "cp-1")).unwrap();
    assert!(
        !manifest.contains("trustform.dev/restarted-at"),
        "{manifest}"
    );
    // cp-3 comes back by itself; apply resumes and finishes.
    common::eventually("a healthy cluster", Duration::from_secs(30), || {
        cluster_health(&w, "cp-1")
    });
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(w.ok(&["plan"]).contains("No changes."));
}
