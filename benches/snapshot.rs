//! `cargo bench --bench snapshot`: the figures of the Kubernetes API issue.
//!
//! A sandbox with 5,000 namespaces, 20,000 legacy token secrets, 5,000 ConfigMaps
//! (kube-root-ca.crt) and 2,000 workloads, its API server running as its own process.
//! Side by side in one run:
//! - `trustform snapshot` (files of 1 + 1 nodes and the whole API side);
//! - (a) the floor: one `kubectl get secrets,configmaps -A -o json`;
//! - (b) the seed's per-secret loop (`kubectl get secret … -o yaml | sed | kubectl apply`)
//!   on 200 secrets, extrapolated to 20,000.
//!
//! `TRUSTFORM_BENCH_SCALE` (default 1.0) scales every count, for a quick look.

mod common;

use common::{measure, run};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_trustform"));
    let scale: f64 = std::env::var("TRUSTFORM_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: f64| ((x * scale) as usize).max(1).to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t = Instant::now();
    run(
        bin,
        d,
        &[
            "sandbox",
            "create",
            "cluster",
            "--control-planes",
            "1",
            "--workers",
            "1",
            "--key-algorithm",
            "ecdsa-p256",
            "--namespaces",
            &n(5000.0),
            "--workloads",
            &n(2000.0),
            "--legacy-token-secrets",
            &n(20000.0),
            "--webhooks",
            "20",
        ],
    );
    println!(
        "sandbox create (seeded): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut server = Command::new(bin)
        .current_dir(d)
        .args(["sandbox", "up", "cluster"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox up");
    let kubeconfig = d.join("cluster/nodes/cp-1/etc/kubernetes/admin.conf");
    let kubectl = |args: &[&str]| {
        let mut c = Command::new("kubectl");
        c.args(args)
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let start = Instant::now();
    while !kubectl(&["get", "--raw", "/healthz"])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(start.elapsed() < Duration::from_secs(60), "API server up");
        std::thread::sleep(Duration::from_millis(200));
    }
    run(bin, d, &["init", "--sandbox", "cluster"]);

    // Warm both once (page cache, the server's first lists).
    let _ = kubectl(&["get", "secrets,configmaps", "-A", "-o", "json"]).status();
    let ours = measure(
        Command::new(bin)
            .current_dir(d)
            .args(["snapshot", "-o", "snap.json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(ours.ok, "trustform snapshot");
    let floor = measure(&mut kubectl(&[
        "get",
        "secrets,configmaps",
        "-A",
        "-o",
        "json",
    ]));
    assert!(floor.ok, "kubectl get");

    // (b) the seed's loop on 200 secrets.
    let sample = 200usize;
    let script = r#"set -eu
n=0
for s in $(kubectl get secrets -A --field-selector type=kubernetes.io/service-account-token -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}' | head -n "$SAMPLE"); do
  ns=${s%%/*}; name=${s#*/}
  kubectl get secret "$name" --namespace "$ns" -o yaml | \
    /bin/sed "s/\(ca.crt:\).*/\1 $(base64 -w0 "$CA")/" | \
    kubectl apply -f - >/dev/null
  n=$((n+1))
done
test "$n" -eq "$SAMPLE"
"#;
    let loop_run = measure(
        Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("KUBECONFIG", &kubeconfig)
            .env("SAMPLE", sample.to_string())
            .env("CA", d.join("cluster/nodes/cp-1/etc/kubernetes/pki/ca.crt"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(loop_run.ok, "the seed loop");
    let secrets: f64 = n(20000.0).parse().unwrap();
    let loop_total = loop_run.wall.as_secs_f64() * secrets / sample as f64;
    let _ = server.kill();
    let _ = server.wait();

    let snap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("snap.json")).unwrap()).unwrap();
    let k = &snap["kube"];
    println!(
        "cluster: {} namespaces, {} workloads, {} token secrets read",
        k["namespaces"],
        k["workloads"],
        k["token_secrets"]
            .as_array()
            .map(|a| a
                .iter()
                .map(|g| g["holders"].as_array().map_or(0, Vec::len))
                .sum::<usize>())
            .unwrap_or(0)
    );
    println!("| what | wall | peak RSS |");
    println!("|---|---|---|");
    println!(
        "| trustform snapshot (files + API) | {:.2} s | {} MiB |",
        ours.wall.as_secs_f64(),
        ours.rss_kib / 1024
    );
    println!(
        "| (a) kubectl get secrets,configmaps -A -o json | {:.2} s | {} MiB |",
        floor.wall.as_secs_f64(),
        floor.rss_kib / 1024
    );
    println!(
        "| (b) seed loop, {sample} secrets measured | {:.1} s | {} MiB |",
        loop_run.wall.as_secs_f64(),
        loop_run.rss_kib / 1024
    );
    println!("| (b) extrapolated to {secrets} secrets | {loop_total:.0} s | |");
    println!(
        "ratio to (a): {:.2}× (target ≤ 1.5×); speed-up over (b): {:.0}× (target ≥ 200×)",
        ours.wall.as_secs_f64() / floor.wall.as_secs_f64(),
        loop_total / ours.wall.as_secs_f64()
    );
}
