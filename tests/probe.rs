//! The sandbox's live TLS endpoints and the live trust prober (`apply --probe`):
//! listeners that follow their process's restarts (`openssl s_client` as the witness), a
//! full rotation under the prober with no managed edge broken, and a broken API server
//! that the prober sees.

use crate::common;

use common::Workdir;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use trustform::apply::probe::{self, EdgeKind, Input, Prober};
use trustform::pki::issue::{generate_key, issue_leaf, new_ca};
use trustform::pki::{KeyAlgorithm, LeafSpec};
use trustform::sandbox::listeners::{self, Endpoints};
use trustform::sandbox::{apiserver, runtime};

/// The sandbox's API server and listeners on a runtime of the test's own.
struct InProcess {
    rt: tokio::runtime::Runtime,
    server: Option<apiserver::Server>,
    listeners: Option<listeners::Listeners>,
}

impl InProcess {
    fn start(w: &Workdir) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (server, listeners) = rt.block_on(async {
            let server = apiserver::serve(&w.cluster(), apiserver::Options::default())
                .await
                .expect("serves");
            let l = listeners::start(&w.cluster(), server.store.clone())
                .await
                .expect("listens");
            (server, l)
        });
        Self {
            rt,
            server: Some(server),
            listeners: Some(listeners),
        }
    }

    fn endpoints(&self) -> &Endpoints {
        &self.listeners.as_ref().unwrap().endpoints
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let (l, s) = (self.listeners.take(), self.server.take());
        self.rt.block_on(async {
            if let Some(l) = l {
                l.shutdown().await;
            }
            if let Some(s) = s {
                s.shutdown().await;
            }
        });
    }
}

/// `openssl s_client` against `addr`: (handshake done and "ok" read, all output).
fn s_client(addr: &str, ca: &Path, client: Option<(&Path, &Path)>, ip: &str) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", addr, "-ign_eof", "-verify_ip", ip])
        .arg("-CAfile")
        .arg(ca)
        .stdin(Stdio::null());
    if let Some((cert, key)) = client {
        cmd.arg("-cert").arg(cert).arg("-key").arg(key);
    }
    let out = cmd.output().expect("openssl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = text.lines().any(|l| l.trim() == "ok");
    (ok, text)
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_kubelet_listener_follows_its_restarts_and_openssl_verifies_the_api_server() {
    let w = common::sandbox(1, 1, false);
    let up = InProcess::start(&w);
    let e = up.endpoints().clone();
    assert_eq!(
        e.processes.keys().cloned().collect::<Vec<_>>(),
        [
            "cp-1/etcd",
            "cp-1/etcd-peer",
            "cp-1/kube-apiserver",
            "cp-1/kubelet",
            "w-1/kubelet"
        ]
    );
    assert!(
        e.aggregated
            .as_ref()
            .unwrap()
            .ca
            .contains("BEGIN CERTIFICATE")
    );
    assert_eq!(
        Endpoints::load(&w.cluster()).unwrap(),
        e,
        "endpoints.json holds the addresses"
    );
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    let ca = pki.join("ca.crt");

    // The API server listener: openssl verifies its serving certificate with ca.crt.
    let (_, text) = s_client(
        e.process("cp-1", "kube-apiserver").unwrap(),
        &ca,
        None,
        "127.0.0.1",
    );
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");

    // A client certificate from a CA the kubelet does not trust is refused …
    let kubelet = e.process("w-1", "kubelet").unwrap();
    let worker_ip = w.ip("w-1");
    let worker_ip = worker_ip.as_str();
    let other = new_ca("other", KeyAlgorithm::EcdsaP256, 30).unwrap();
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let cert = issue_leaf(&LeafSpec::client("someone", &[]), &key, &other).unwrap();
    let (cert_path, key_path) = (w.path().join("other.crt"), w.path().join("other.key"));
    write(&cert_path, &cert);
    write(&key_path, &key.serialize_pem());
    let new_client = Some((cert_path.as_path(), key_path.as_path()));
    let old_client = (
        pki.join("apiserver-kubelet-client.crt"),
        pki.join("apiserver-kubelet-client.key"),
    );
    let old_client = Some((old_client.0.as_path(), old_client.1.as_path()));
    let (ok, text) = s_client(kubelet, &ca, new_client, worker_ip);
    assert!(!ok, "{text}");
    let (ok, text) = s_client(kubelet, &ca, old_client, worker_ip);
    assert!(ok, "{text}");
    // The kubelet serves the self-signed kubelet.crt it holds (kubeadm's default): its
    // own CA issued it, not ca.crt, which the API server does not check.
    assert!(
        text.contains("w-1@")
            && text.contains("w-1-ca@")
            && !text.contains("Verify return code: 0 (ok)"),
        "{text}"
    );
    // … still after its clientCAFile holds the new CA on disk (the kubelet read it at
    // start) …
    let client_ca = w.node("w-1").join("etc/kubernetes/pki/ca.crt");
    let bundle = std::fs::read_to_string(&client_ca).unwrap() + &other.cert_pem;
    write(&client_ca, &bundle);
    let (ok, text) = s_client(kubelet, &ca, new_client, worker_ip);
    assert!(!ok, "the kubelet has not restarted: {text}");
    // … and accepted once the kubelet restarted, the old client still accepted.
    runtime::restart(&w.node("w-1"), "kubelet").unwrap();
    let (ok, text) = s_client(kubelet, &ca, new_client, worker_ip);
    assert!(ok, "{text}");
    assert!(s_client(kubelet, &ca, old_client, worker_ip).0);
    drop(up);
    assert!(
        !Endpoints::path(&w.cluster()).exists(),
        "shutdown removes endpoints.json"
    );
}

#[test]
fn apply_probe_without_the_listeners_fails_fast() {
    let w = common::initialised(1, 0);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let (code, _, err) = w.run(&["apply", "--auto-approve", "--probe"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("trustform sandbox up") && err.contains("drop --probe"),
        "{err}"
    );
    assert!(
        !w.path().join(".trustform/journal").exists()
            || common::files_under(&w.path().join(".trustform/journal")).is_empty(),
        "nothing ran"
    );
}

#[test]
fn a_full_rotation_under_the_prober_breaks_no_managed_edge() {
    let w = common::seeded(&["--namespaces", "2", "--workloads", "4", "--bare-pods", "0"]);
    let _up = common::Up::start(&w, None);
    // The etcd edges are probed against real etcd members (where etcd is installed).
    if common::require_etcd("a_full_rotation_under_the_prober_breaks_no_managed_edge") {
        let members = trustform::sandbox::etcd::Registry::load(&w.cluster())
            .expect("real etcd members")
            .members;
        assert_eq!(members.len(), 2, "{members:?}");
        let e = Endpoints::load(&w.cluster()).unwrap();
        assert_eq!(
            e.process("cp-1", "etcd-peer"),
            Some(format!("{}:2380", w.ip("cp-1")).as_str())
        );
    }
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    w.ok(&["rotate", "front-proxy", "--to-end"]);
    let plan = w.ok(&["plan", "-out", "plan.json"]);
    assert!(plan.contains("edges stay live through all"), "{plan}");
    let out = w.ok(&["apply", "plan.json", "--probe", "--format", "json"]);
    let summary: Value = common::probe_summary(&out);
    assert_eq!(summary["ok"], true, "{summary}");
    let report: probe::Report = serde_json::from_value(summary["probe"].clone()).unwrap();
    assert!(report.handshakes > 0);
    let broken: Vec<String> = report
        .managed_failing()
        .map(|e| {
            format!(
                "{}: {}/{} {:?}",
                e.name, e.failures, e.attempts, e.first_error
            )
        })
        .collect();
    assert!(
        broken.is_empty(),
        "managed edges broke:\n{}",
        broken.join("\n")
    );
    // The continuity promise, witnessed: not one failed handshake on any edge, and
    // every edge probed throughout.
    assert_eq!(report.failures, 0, "{:?}", report.lines());
    for e in &report.edges {
        let pod = e.kind == Some(EdgeKind::Pod);
        assert!(
            pod || e.attempts >= 3,
            "{} probed {} times",
            e.name,
            e.attempts
        );
        assert!(e.attempts > 0 || e.vanished, "{} never probed", e.name);
    }
    let mut kinds: BTreeMap<EdgeKind, u64> = BTreeMap::new();
    for e in &report.edges {
        *kinds.entry(e.kind.unwrap()).or_default() += e.attempts;
    }
    for kind in [
        EdgeKind::ApiServer,
        EdgeKind::Kubelet,
        EdgeKind::Etcd,
        EdgeKind::EtcdPeer,
        EdgeKind::Aggregated,
        EdgeKind::Pod,
    ] {
        assert!(
            kinds.get(&kind).copied().unwrap_or(0) > 0,
            "{kind:?}: {kinds:?}"
        );
    }
    // Rollouts replaced pods: some pod edges ended, new ones began, none broke.
    assert!(
        report.edges.iter().any(|e| e.vanished),
        "pods were replaced"
    );
    // Every edge of the final cluster still handshakes: a text apply has nothing left,
    // and the witness sees the rotated API server listener.
    let e = Endpoints::load(&w.cluster()).unwrap();
    let (_, text) = s_client(
        e.process("cp-2", "kube-apiserver").unwrap(),
        &w.node("cp-2").join("etc/kubernetes/pki/ca.crt"),
        None,
        "127.0.0.1",
    );
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
}

#[test]
fn the_prober_sees_an_api_server_serving_from_an_unknown_ca() {
    // The product reaches sandbox nodes through the transport the sandbox registers (the
    // binary does it at start).
    trustform::sandbox::transport::install();
    let w = common::sandbox(2, 1, false);
    let up = InProcess::start(&w);
    // cp-1's kube-apiserver restarts with a serving certificate nobody trusts.
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    let rogue = new_ca("rogue", KeyAlgorithm::EcdsaP256, 30).unwrap();
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let cert = issue_leaf(
        &LeafSpec::server("kube-apiserver", vec!["IP:127.0.0.1".into()]),
        &key,
        &rogue,
    )
    .unwrap();
    write(&pki.join("apiserver.crt"), &cert);
    write(&pki.join("apiserver.key"), &key.serialize_pem());
    runtime::restart(&w.node("cp-1"), "kube-apiserver").unwrap();

    let (snap, nodes) = common::observed_locally(&w);
    assert_eq!(probe::endpoints_of(&nodes).unwrap(), *up.endpoints());
    let input = Input::new(&snap, nodes, up.endpoints().clone(), BTreeMap::new(), None);
    let options = probe::Options::default();
    let interval = options.interval;
    let prober = Prober::start(input, options).unwrap();
    // Six full rounds: every edge tried six times. Rounds begin an interval apart (a
    // timer never fires early; tokio lets a tick be a few ms late without moving the
    // next one), so the edge that fails in every round has been out from its first
    // attempt (in round 1, before round 2 began) to past the start of round 6: four
    // intervals less a few ms, more than three.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while prober.rounds() < 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for 6 rounds of the prober ({} so far)",
            prober.rounds()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = prober.stop();
    let outage_floor = 3 * interval.as_millis() as u64;
    assert!(outage_floor >= 500, "{outage_floor}");
    assert!(report.edges.len() > 10, "{report:?}");
    for e in &report.edges {
        assert!(e.attempts >= 6, "{}: {} attempts", e.name, e.attempts);
        if e.name.ends_with("→ kube-apiserver on cp-1") {
            assert_eq!(e.failures, e.attempts, "{} never gets through", e.name);
            assert!(
                e.first_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("UnknownIssuer"),
                "{}: {:?}",
                e.name,
                e.first_error
            );
            assert!(
                e.longest_outage_ms >= outage_floor,
                "{}: {} ms",
                e.name,
                e.longest_outage_ms
            );
        } else {
            assert_eq!(e.failures, 0, "{}: {:?}", e.name, e.first_error);
        }
    }
    for who in [
        "kubelet on w-1 → kube-apiserver on cp-1",
        "kubectl (cp-1:/etc/kubernetes/admin.conf) → kube-apiserver on cp-1",
        "kubelet on w-1 → kube-apiserver on cp-2",
    ] {
        assert!(
            report.edges.iter().any(|e| e.name == who),
            "{who} probed: {:#?}",
            report.edges.iter().map(|e| &e.name).collect::<Vec<_>>()
        );
    }
    let text = report.lines().join("\n");
    assert!(text.contains("failed handshakes"), "{text}");
}

/// The negative pair of the continuity test: a hand-edited plan that gives the API
/// servers their new-issuer certificates before the kubelets trust the new CA. Rehearse
/// refuses it; forced through with `--skip-rehearse`, the live prober sees failed
/// handshakes on exactly the edges rehearse named, and on no other.
#[test]
fn a_forced_plan_breaks_exactly_the_edges_rehearse_named() {
    let w = common::seeded(&["--namespaces", "1", "--workloads", "2", "--bare-pods", "0"]);
    let _up = common::Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&[
        "rotate",
        "kubernetes",
        "--to-end",
        "--algorithm",
        "ecdsa-p256",
    ]);
    w.ok(&["plan", "-out", "plan.json"]);
    common::swap_apiserver_before_kubelets(&w, "plan.json", "swapped.json");
    // On paper.
    let (code, json, _) = w.run(&["rehearse", "swapped.json", "--format", "json"]);
    assert_eq!(code, 1);
    let rehearsal: Value = serde_json::from_str(&json).unwrap();
    let mut named: Vec<String> = rehearsal["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["edge"].as_str().unwrap().to_string())
        .collect();
    named.sort();
    assert!(!named.is_empty());
    let (code, _, err) = w.run(&["apply", "swapped.json", "--probe"]);
    assert_eq!(code, 1, "apply refuses it: {err}");
    assert!(err.contains("would break a trust edge"), "{err}");
    // Forced: the edges break, the prober sees them, and the processes on the other end
    // log the failed handshakes, so the next gate stops the apply, quoting them (the
    // seed's step 10).
    let (code, out, err) = w.run(&[
        "apply",
        "swapped.json",
        "--skip-rehearse",
        "--probe",
        "--format",
        "json",
    ]);
    assert!(
        err.contains("Warning: --skip-rehearse"),
        "the flag warns: {err}"
    );
    assert_eq!(code, 1, "the apply fails: {err}");
    assert!(
        out.contains("a TLS error in a log since the stage began")
            && out.contains("TLS handshake error"),
        "the gate quotes the logged handshake errors:\n{out}"
    );
    let summary: Value = common::probe_summary(&out);
    let report: probe::Report = serde_json::from_value(summary["probe"].clone()).unwrap();
    let mut seen: Vec<String> = report.failing().map(|e| e.name.clone()).collect();
    seen.sort();
    assert_eq!(
        seen, named,
        "the prober's failing edges are rehearse's breaking edges"
    );
    // Looked at and accepted: resumed, the kubelets restart and the edges heal.
    let (code, out, err) = w.run(&[
        "apply",
        "swapped.json",
        "--skip-rehearse",
        "--probe",
        "--accept-logged-errors",
        "--format",
        "json",
    ]);
    let summary: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("probe").is_some())
        .unwrap_or_else(|| panic!("a summary with the probe report ({code}):\n{out}{err}"));
    assert_eq!(
        summary["done"], summary["total"],
        "every step ran: the kubelets restart in the end, restoring the edges:\n{out}{err}"
    );
    let report: probe::Report = serde_json::from_value(summary["probe"].clone()).unwrap();
    // Each broken edge healed when its kubelet restarted: its outage has an end.
    for e in report.failing() {
        assert!(e.attempts > e.failures, "{} never came back", e.name);
        assert!(e.longest_outage_ms > 0, "{}", e.name);
    }
}
