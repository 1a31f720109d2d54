//! Trust continuity witnessed live: clients keep working while a rotation runs.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// kubectl through `conf`, as a user runs it: Err(stderr) on failure.
fn kubectl(conf: &Path, args: &[&str]) -> Result<(), String> {
    let mut args = args.to_vec();
    args.extend(["--request-timeout", "10s"]);
    match common::kubectl_with(conf, &args) {
        (true, _, _) => Ok(()),
        (false, _, err) => Err(err),
    }
}

fn ca_data(conf: &Path) -> String {
    let text = std::fs::read_to_string(conf).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))
        .unwrap()
        .to_string()
}

#[test]
fn a_kubectl_loop_through_the_rotating_admin_conf_never_fails() {
    let w = common::seeded(&["--namespaces", "2", "--workloads", "4"]);
    let _up = common::Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    for auth in ["kubernetes", "front-proxy"] {
        w.ok(&["rotate", auth, "--to-end", "--algorithm", "ecdsa-p256"]);
    }
    let plan = w.ok(&["plan", "-out", "plan.json"]);
    assert!(plan.contains("Continuity: "), "{plan}");
    let conf = w.admin_conf();
    let before = ca_data(&conf);

    // The machine's kubectl, reading admin.conf afresh at every call, as a user would.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let looper = {
        let (stop, calls) = (stop.clone(), calls.clone());
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
                calls.fetch_add(1, Ordering::Relaxed);
            }
            (ok, failed, seen.len())
        })
    };
    let (code, out, err) = w.run(&["apply", "plan.json"]);
    // The loop goes on until a call that began after the apply ended (with the final
    // admin.conf) has finished: two more calls.
    let target = calls.load(Ordering::Relaxed) + 2;
    let deadline = Instant::now() + Duration::from_secs(60);
    while calls.load(Ordering::Relaxed) < target && !looper.is_finished() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the kubectl loop's calls after the apply"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
