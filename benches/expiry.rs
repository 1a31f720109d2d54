//! `cargo bench --bench expiry`: the figure of the expiry listing (issue on the etcd CA,
//! the service-account key and renewal): `trustform expiry` on 3 + 200 nodes, live (every
//! node's files read) and from a saved snapshot, in each format; wall time, CPU time and
//! peak RSS, best of 3. Target: under 0.5 s. Then the renewal plan on the same cluster,
//! the 21 leaves of the control planes aged by openssl into the default 30-day window:
//! `plan`, live (the snapshot predates the aging). `TRUSTFORM_BENCH_WORKERS` changes the worker count.

mod common;

use common::{measure, run};
use std::path::Path;
use std::process::{Command, Stdio};

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_trustform"));
    let workers: usize = std::env::var("TRUSTFORM_BENCH_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(
        bin,
        d,
        &[
            "sandbox",
            "create",
            "cluster",
            "--control-planes",
            "3",
            "--workers",
            &workers.to_string(),
            "--key-algorithm",
            "ecdsa-p256",
        ],
    );
    run(bin, d, &["init", "--sandbox", "cluster"]);
    run(bin, d, &["snapshot", "-o", "snapshot.json"]);
    let listing = Command::new(bin)
        .current_dir(d)
        .args(["expiry", "--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let total = v["summary"]["total"].as_u64().unwrap();
    println!("expiry of 3 + {workers} nodes: {total} certificates");
    println!("| source | format | wall (best of 3) | CPU | peak RSS |");
    println!("|---|---|---|---|---|");
    for (source, extra) in [
        ("live", vec![]),
        ("--snapshot", vec!["--snapshot", "snapshot.json"]),
    ] {
        for format in ["text", "json", "prometheus"] {
            let best = (0..3)
                .map(|_| {
                    let m = measure(
                        Command::new(bin)
                            .current_dir(d)
                            .args(["expiry", "--format", format])
                            .args(&extra)
                            .stdout(Stdio::null())
                            .stderr(Stdio::null()),
                    );
                    assert!(m.ok, "expiry {source} {format}");
                    m
                })
                .min_by_key(|m| m.wall)
                .unwrap();
            println!(
                "| {source} | {format} | {:.3} s | {:.3} s | {} MiB |",
                best.wall.as_secs_f64(),
                best.cpu.as_secs_f64(),
                best.rss_kib / 1024
            );
        }
    }
    // The renewal plan: every leaf kubeadm renews on the control planes aged with the
    // openssl CLI to end in 10 days, inside the default 30-day window.
    for cp in 1..=3 {
        let pki = d.join(format!("cluster/nodes/cp-{cp}/etc/kubernetes/pki"));
        for (leaf, ca) in [
            ("apiserver", "ca"),
            ("apiserver-kubelet-client", "ca"),
            ("apiserver-etcd-client", "etcd/ca"),
            ("front-proxy-client", "front-proxy-ca"),
            ("etcd/server", "etcd/ca"),
            ("etcd/peer", "etcd/ca"),
            ("etcd/healthcheck-client", "etcd/ca"),
        ] {
            age(&pki, leaf, ca, 10);
        }
    }
    run(bin, d, &["plan", "-out", "renew.json"]);
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("renew.json")).unwrap()).unwrap();
    let steps = plan["steps"].as_array().unwrap();
    let renewed = steps
        .iter()
        .flat_map(|s| s["ops"].as_array().unwrap())
        .filter(|op| op["want"].get("renewed").is_some())
        .count();
    println!(
        "renewal plan of 3 + {workers} nodes (21 leaves aged to end in 10 days): {renewed} leaves renewed in {} steps",
        steps.len()
    );
    let best = (0..3)
        .map(|_| {
            let m = measure(
                Command::new(bin)
                    .current_dir(d)
                    .args(["plan", "--format", "json"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            );
            assert!(m.ok, "plan");
            m
        })
        .min_by_key(|m| m.wall)
        .unwrap();
    println!(
        "plan (live, rehearsal included): {:.3} s wall, {:.3} s CPU, {} MiB peak RSS",
        best.wall.as_secs_f64(),
        best.cpu.as_secs_f64(),
        best.rss_kib / 1024
    );
}

/// Re-sign `pki/<leaf>.crt` (key, subject and extensions kept) by `pki/<ca>.crt` to end
/// in `days`, with the openssl CLI.
fn age(pki: &Path, leaf: &str, ca: &str, days: u32) {
    let crt = pki.join(format!("{leaf}.crt"));
    let csr = pki.join(format!("{leaf}.csr"));
    let ok = |c: &mut Command| assert!(c.status().unwrap().success(), "{c:?}");
    ok(Command::new("openssl")
        .args(["x509", "-x509toreq", "-copy_extensions", "copyall", "-in"])
        .arg(&crt)
        .arg("-signkey")
        .arg(pki.join(format!("{leaf}.key")))
        .arg("-out")
        .arg(&csr)
        .stderr(Stdio::null()));
    ok(Command::new("openssl")
        .args(["x509", "-req", "-copy_extensions", "copyall", "-days"])
        .arg(days.to_string())
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(pki.join(format!("{ca}.crt")))
        .arg("-CAkey")
        .arg(pki.join(format!("{ca}.key")))
        .arg("-out")
        .arg(&crt)
        .stderr(Stdio::null()));
    std::fs::remove_file(csr).unwrap();
}
