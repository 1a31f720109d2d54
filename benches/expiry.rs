//! `cargo bench --bench expiry`: the figure of the expiry listing (issue on the etcd CA,
//! the service-account key and renewal): `trustform expiry` on 3 + 200 nodes, live (every
//! node's files read) and from a saved snapshot, in each format; wall time, CPU time and
//! peak RSS, best of 3. Target: under 0.5 s. `TRUSTFORM_BENCH_WORKERS` changes the
//! worker count.

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
}
