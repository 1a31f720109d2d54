//! `cargo bench --bench apply`: the figures of the apply issue.
//!
//! A full `--to-end` rotation of the kubernetes and front-proxy CAs on a sandbox of
//! 3 control planes + 200 workers (RSA-2048, as kubeadm): wall time, CPU time (user +
//! sys: our own code, RSA key generation included) against wall time, peak RSS, and
//! where the steps' time went, by action. Set `TRUSTFORM_BENCH_WORKERS` to change the
//! worker count.

mod common;

use common::{measure, run};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_trustform"));
    let workers = std::env::var("TRUSTFORM_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(200usize);
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
            "3",
            "--workers",
            &workers.to_string(),
        ],
    );
    println!(
        "sandbox create 3+{workers} (RSA-2048): {:.1} s",
        t.elapsed().as_secs_f64()
    );
    run(bin, d, &["init", "--sandbox", "cluster"]);
    run(bin, d, &["rotate", "kubernetes", "--to-end"]);
    run(bin, d, &["rotate", "front-proxy", "--to-end"]);
    let events_file = d.join("events.jsonl");
    let m = measure(
        Command::new(bin)
            .current_dir(d)
            .args(["apply", "--auto-approve", "--format", "json"])
            .stdout(std::fs::File::create(&events_file).expect("output file"))
            .stderr(Stdio::null()),
    );
    assert!(m.ok, "apply failed");
    let events: Vec<Value> = std::fs::read_to_string(&events_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = events.last().unwrap();
    let id = summary["plan_id"].as_str().unwrap();
    let plan: Value = serde_json::from_slice(
        &std::fs::read(d.join(format!(".trustform/journal/{id}.plan.json"))).unwrap(),
    )
    .unwrap();
    let action: BTreeMap<&str, &str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["action"].as_str().unwrap()))
        .collect();
    let mut by_action: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for e in events.iter().filter(|e| e["event"] == "step_done") {
        let a = action[e["step"].as_str().unwrap()];
        let entry = by_action.entry(a).or_default();
        entry.0 += 1;
        entry.1 += e["ms"].as_u64().unwrap();
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "apply --to-end, kubernetes + front-proxy, 3+{workers}: {} steps",
        summary["total"]
    );
    println!("  wall time            {:.2} s", m.wall.as_secs_f64());
    println!(
        "  CPU (user+sys)       {:.2} s on {cores} cores ({:.0}% of wall × cores busy; the rest is waiting: fsync, rolling steps one node at a time)",
        m.cpu.as_secs_f64(),
        100.0 * m.cpu.as_secs_f64() / (m.wall.as_secs_f64() * cores as f64)
    );
    println!(
        "  steps' time, summed  {:.2} s (walker wall {:.2} s)",
        summary["busy_ms"].as_u64().unwrap() as f64 / 1000.0,
        summary["wall_ms"].as_u64().unwrap() as f64 / 1000.0
    );
    println!(
        "  peak RSS             {:.1} MiB",
        m.rss_kib as f64 / 1024.0
    );
    println!("  by action (steps, summed step time):");
    for (a, (n, ms)) in &by_action {
        println!("    {a:<28} {n:>5}  {:>8.2} s", *ms as f64 / 1000.0);
    }
}
