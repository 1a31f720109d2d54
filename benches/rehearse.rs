//! `cargo bench --bench rehearse`: the figures of the trust-continuity issue.
//!
//! A 3 + 200 sandbox seeded to ≈ 2,000 pods, its API server running as its own process;
//! both authorities rotated `--to-end`. Measured:
//! - the rehearsal alone, in process (edges from the snapshot, every step simulated);
//! - `trustform rehearse plan.json` end to end (observe 203 nodes + the API, rehearse);
//! - `trustform plan` (which rehearses as it plans).
//!
//! - the live prober's overhead on an apply: the same 3 + 3 seeded rotation applied
//!   without and with `--probe` (with it, apply also waits for a round of handshakes
//!   over every edge after each step).
//!
//! `TRUSTFORM_BENCH_WORKERS` (default 200) and `TRUSTFORM_BENCH_WORKLOADS` (default 84)
//! change the size.

mod common;

use common::{measure, run, sandbox_up};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> String {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(default)
        .to_string()
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_trustform"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let workers = env("TRUSTFORM_BENCH_WORKERS", 200);
    let workloads = env("TRUSTFORM_BENCH_WORKLOADS", 84);
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
            &workers,
            "--key-algorithm",
            "ecdsa-p256",
            "--namespaces",
            "20",
            "--workloads",
            &workloads,
        ],
    );
    let mut server = sandbox_up(bin, d);
    run(bin, d, &["init", "--sandbox", "cluster"]);
    for auth in ["kubernetes", "front-proxy"] {
        run(
            bin,
            d,
            &["rotate", auth, "--to-end", "--algorithm", "ecdsa-p256"],
        );
    }
    let plan = measure(
        Command::new(bin)
            .current_dir(d)
            .args(["plan", "-out", "plan.json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(plan.ok, "trustform plan");
    let rehearse = measure(
        Command::new(bin)
            .current_dir(d)
            .args(["rehearse", "plan.json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    assert!(rehearse.ok, "trustform rehearse");

    // In process: observe once, then time the rehearsal itself.
    let config = d.join("trustform.yaml");
    let loaded = trustform::config::load(&config).unwrap();
    let t = Instant::now();
    let snap = trustform::observe::observe_with(
        &trustform::observe::targets(&loaded).unwrap(),
        trustform::exec::kube::Access::of(&loaded).as_ref(),
    )
    .unwrap();
    let observe = t.elapsed();
    let desired = trustform::diff::resolve(&loaded, &loaded.ca_files().unwrap(), &snap).unwrap();
    let saved: trustform::plan::Plan =
        serde_json::from_slice(&std::fs::read(d.join("plan.json")).unwrap()).unwrap();
    let mut best = Duration::MAX;
    let mut r = None;
    for _ in 0..3 {
        let t = Instant::now();
        r = Some(trustform::plan::rehearse::rehearse(&snap, &saved, &|fp| {
            desired.label(fp)
        }));
        best = best.min(t.elapsed());
    }
    let r = r.unwrap();
    let _ = server.kill();
    let _ = server.wait();

    let pods: usize = snap
        .kube
        .as_ref()
        .map_or(0, |k| k.pods.iter().map(|g| g.pods.len()).sum());
    println!(
        "cluster: {} nodes, {pods} pods; plan: {} steps; {} edges ({} of bare pods)",
        snap.nodes.len(),
        saved.steps.len(),
        r.edges + r.unmanaged,
        r.unmanaged
    );
    assert!(r.holds(), "the generated plan keeps every edge live");
    println!("| what | wall | peak RSS |");
    println!("|---|---|---|");
    println!(
        "| rehearse, in process (edges + {} steps) | {:.3} s | |",
        saved.steps.len(),
        best.as_secs_f64()
    );
    println!(
        "| observe, in process (for reference) | {:.3} s | |",
        observe.as_secs_f64()
    );
    println!(
        "| `trustform rehearse plan.json` (observe + rehearse) | {:.2} s | {} MiB |",
        rehearse.wall.as_secs_f64(),
        rehearse.rss_kib / 1024
    );
    println!(
        "| `trustform plan -out` (observe + plan + rehearse) | {:.2} s | {} MiB |",
        plan.wall.as_secs_f64(),
        plan.rss_kib / 1024
    );
    println!(
        "target: rehearse < 2 s: {}",
        if rehearse.wall.as_secs_f64() < 2.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    prober_overhead(bin);
}

/// One 3 + 3 seeded sandbox, rotated `--to-end`, planned; apply measured.
fn apply_once(bin: &Path, probe: bool) -> (common::Measured, Option<serde_json::Value>) {
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
            "3",
            "--namespaces",
            "3",
            "--workloads",
            "6",
            "--bare-pods",
            "0",
            "--legacy-token-secrets",
            "6",
            "--webhooks",
            "2",
        ],
    );
    let mut server = sandbox_up(bin, d);
    run(bin, d, &["init", "--sandbox", "cluster"]);
    for auth in ["kubernetes", "front-proxy"] {
        run(bin, d, &["rotate", auth, "--to-end"]);
    }
    run(bin, d, &["plan", "-out", "plan.json"]);
    let out = d.join("apply.jsonl");
    let mut cmd = Command::new(bin);
    cmd.current_dir(d)
        .args(["apply", "plan.json", "--format", "json"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null());
    if probe {
        cmd.arg("--probe");
    }
    let m = measure(&mut cmd);
    let _ = server.kill();
    let _ = server.wait();
    let report = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("probe").cloned());
    (m, report)
}

fn prober_overhead(bin: &Path) {
    let (plain, _) = apply_once(bin, false);
    let (probed, report) = apply_once(bin, true);
    assert!(plain.ok && probed.ok, "both applies succeed");
    let r = report.expect("a probe report");
    println!();
    println!("| apply of a 3 + 3 seeded rotation (RSA-2048) | wall | CPU | peak RSS |");
    println!("|---|---|---|---|");
    for (what, m) in [("without --probe", &plain), ("with --probe", &probed)] {
        println!(
            "| {what} | {:.2} s | {:.2} s | {} MiB |",
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            m.rss_kib / 1024
        );
    }
    println!(
        "prober: {} edges, {} handshakes, {} failures; overhead on the apply's wall time: {:+.2} s ({:.1}×)",
        r["edges"].as_array().map_or(0, Vec::len),
        r["handshakes"],
        r["failures"],
        probed.wall.as_secs_f64() - plain.wall.as_secs_f64(),
        probed.wall.as_secs_f64() / plain.wall.as_secs_f64()
    );
}
