//! `cargo bench --bench ssh`: the figures of the real-clusters issue.
//!
//! A full `--to-end` rotation of the kubernetes and front-proxy CAs on a sandbox of
//! 3 control planes + 50 workers (ECDSA, restart time 0), once with every node reached
//! through its local directory and once with every node reached only over SSH (a real
//! OpenSSH sshd per node, `sandbox up --ssh`): wall time of `plan` and `apply`, the
//! ratio, the SSH connections apply opened, and peak RSS. Set `TRUSTFORM_BENCH_WORKERS` to
//! change the worker count.

mod common;

use common::{measure, run};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `sandbox up cluster [--ssh]`, once it serves (and every sshd runs). The caller kills
/// and reaps it.
#[allow(clippy::zombie_processes)]
fn up(bin: &Path, dir: &Path, ssh: bool) -> std::process::Child {
    let mut c = Command::new(bin);
    c.current_dir(dir).args(["sandbox", "up", "cluster"]);
    if ssh {
        c.arg("--ssh");
    }
    let child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox up");
    let start = Instant::now();
    loop {
        let listens = dir.join("cluster/run/endpoints.json").is_file();
        let sshd = !ssh
            || std::fs::read(dir.join("cluster/run/ssh.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .is_some_and(|v| {
                    v["pid"].as_u64() == Some(u64::from(child.id()))
                        && v["nodes"]
                            .as_array()
                            .is_some_and(|n| n.iter().all(|n| n["pid"].is_u64()))
                });
        if listens && sshd {
            return child;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "sandbox up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Figures {
    plan: Duration,
    apply: common::Measured,
    connections: u64,
    steps: u64,
}

fn rotate(bin: &Path, d: &Path, ssh: bool) -> Figures {
    let mut sandbox = up(bin, d, ssh);
    let mut init = vec!["init", "--sandbox", "cluster"];
    if ssh {
        init.push("--ssh");
    }
    run(bin, d, &init);
    let mut text = std::fs::read_to_string(d.join("trustform.yaml")).unwrap();
    text.push_str("issuance:\n  keyAlgorithm: ecdsa-p256\n  keepKeys: false\n");
    std::fs::write(d.join("trustform.yaml"), text).unwrap();
    run(bin, d, &["rotate", "kubernetes", "--to-end"]);
    run(bin, d, &["rotate", "front-proxy", "--to-end"]);
    let t = Instant::now();
    run(bin, d, &["plan", "-out", "plan.json"]);
    let plan = t.elapsed();
    let out = d.join("events.jsonl");
    let apply = measure(
        Command::new(bin)
            .current_dir(d)
            .args(["apply", "plan.json", "--format", "json"])
            .env("TRUSTFORM_RESTART_SETTLE", "0s")
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(Stdio::null()),
    );
    assert!(
        apply.ok,
        "apply ({}) failed",
        if ssh { "ssh" } else { "local" }
    );
    let summary: Value = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "summary")
        .expect("a summary");
    let _ = sandbox.kill();
    let _ = sandbox.wait();
    Figures {
        plan,
        apply,
        connections: summary["ssh_connections"].as_u64().unwrap_or(0),
        steps: summary["done"].as_u64().unwrap_or(0),
    }
}

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_trustform"));
    let workers = std::env::var("TRUSTFORM_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(50usize);
    let tmp = tempfile::tempdir().unwrap();
    // Two sandboxes made alike (a copy would keep the first one's node paths in its
    // sandbox.json).
    let (local_dir, ssh_dir) = (tmp.path().join("local"), tmp.path().join("ssh"));
    for d in [&local_dir, &ssh_dir] {
        std::fs::create_dir(d).unwrap();
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
                "--restart-time",
                "0",
            ],
        );
    }
    let local = rotate(bin, &local_dir, false);
    let ssh = rotate(bin, &ssh_dir, true);
    let nodes = 3 + workers;
    println!("full rotation (kubernetes + front-proxy) of 3 + {workers}, restart time 0:");
    println!("| access | plan | apply | steps | SSH connections | peak RSS |");
    println!("|---|---|---|---|---|---|");
    for (name, f) in [("local", &local), ("ssh", &ssh)] {
        println!(
            "| {name} | {:.2} s | {:.2} s | {} | {} | {} MiB |",
            f.plan.as_secs_f64(),
            f.apply.wall.as_secs_f64(),
            f.steps,
            f.connections,
            f.apply.rss_kib / 1024
        );
    }
    println!(
        "apply over SSH / local: {:.2}x (target ≤ 1.5x); plan: {:.2}x; {} SSH connections for {nodes} nodes",
        ssh.apply.wall.as_secs_f64() / local.apply.wall.as_secs_f64(),
        ssh.plan.as_secs_f64() / local.plan.as_secs_f64(),
        ssh.connections
    );
}
