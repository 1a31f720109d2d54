//! Trust continuity witnessed live: clients keep working while a rotation runs.

mod common;

use common::Workdir;
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `trustform sandbox up DIR` in the background, stopped on drop.
struct Up {
    child: Child,
}

impl Up {
    fn start(w: &Workdir) -> Up {
        let child = Command::new(assert_cmd::cargo::cargo_bin!("trustform"))
            .current_dir(w.path())
            .args(["sandbox", "up", "cluster"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sandbox up starts");
        let up = Up { child };
        let endpoint = w.cluster().join("apiserver/endpoint.json");
        let start = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&endpoint)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
                && v["pid"].as_u64() == Some(u64::from(up.child.id()))
                && kubectl(&admin_conf(w), &["get", "--raw", "/healthz"]).is_ok()
            {
                return up;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the sandbox API server did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn admin_conf(w: &Workdir) -> PathBuf {
    w.node("cp-1").join("etc/kubernetes/admin.conf")
}

fn kubectl(conf: &PathBuf, args: &[&str]) -> Result<(), String> {
    let out = Command::new("kubectl")
        .args(args)
        .args(["--request-timeout", "10s"])
        .env("KUBECONFIG", conf)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn seeded(cps: usize, workers: usize) -> Workdir {
    let w = Workdir {
        tmp: tempfile::tempdir().expect("tempdir"),
    };
    w.ok(&[
        "sandbox",
        "create",
        "cluster",
        "--control-planes",
        &cps.to_string(),
        "--workers",
        &workers.to_string(),
        "--key-algorithm",
        "ecdsa-p256",
        "--namespaces",
        "2",
        "--workloads",
        "4",
    ]);
    w
}

fn ca_data(conf: &PathBuf) -> String {
    let text = std::fs::read_to_string(conf).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .unwrap()
        .to_string()
}

#[test]
fn a_kubectl_loop_through_the_rotating_admin_conf_never_fails() {
    let w = seeded(2, 1);
    let _up = Up::start(&w);
    w.ok(&["init", "--sandbox", "cluster"]);
    for auth in ["kubernetes", "front-proxy"] {
        w.ok(&["rotate", auth, "--to-end", "--algorithm", "ecdsa-p256"]);
    }
    let plan = w.ok(&["plan", "-out", "plan.json"]);
    assert!(plan.contains("Continuity: "), "{plan}");
    let conf = admin_conf(&w);
    let before = ca_data(&conf);

    // The machine's kubectl, reading admin.conf afresh at every call, as a user would.
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        let conf = conf.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0usize, Vec::new());
            let mut seen = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                seen.insert(ca_data(&conf));
                match kubectl(&conf, &["get", "--raw", "/api/v1/namespaces?limit=1"]) {
                    Ok(()) => ok += 1,
                    Err(e) => failed.push(e),
                }
            }
            (ok, failed, seen.len())
        })
    };
    let (code, out, err) = w.run(&["apply", "plan.json"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, versions) = looper.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        failed.is_empty(),
        "{} kubectl calls failed: {failed:?}",
        failed.len()
    );
    assert!(ok >= 10, "the loop ran through the apply: {ok} calls");
    // admin.conf really rotated under the loop: it went through the two-CA stage to the
    // new CA alone.
    assert_ne!(ca_data(&conf), before);
    assert!(
        versions >= 3,
        "the loop saw {versions} versions of admin.conf"
    );
    kubectl(&conf, &["get", "--raw", "/healthz"]).expect("the final admin.conf works");
}
