//! `apply`, `status`, `rollback`, `force-unlock` end to end on sandboxes, with openssl
//! and kubectl as outside witnesses.

use crate::common;

use common::{Workdir, copy_dir, shape};
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A sandbox with trustform.yaml; new keys are ECDSA (fast) unless `rsa`.
fn cluster(cps: usize, workers: usize, rsa: bool) -> Workdir {
    let w = common::sandbox(cps, workers, rsa);
    w.ok(&["init", "--sandbox", "cluster"]);
    if !rsa {
        common::fast_issuance(&w);
    }
    w
}

fn rotate_to_end(w: &Workdir, auths: &[&str]) {
    for a in auths {
        w.ok(&["rotate", a, "--to-end"]);
    }
}

/// The newest generated CA certificate of an authority (`cas/<auth>-<date>.crt`).
fn new_ca(w: &Workdir, auth: &str) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(w.path().join("cas"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{auth}-"))
        })
        .collect();
    v.sort();
    v.pop().expect("a generated CA")
}

fn node_files(w: &Workdir) -> Vec<PathBuf> {
    common::files_under(&w.cluster().join("nodes"))
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("/run/trustform-sandbox/"))
        .collect()
}

/// The first base64 line of each certificate in a PEM file.
fn pem_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = vec![];
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l == "-----BEGIN CERTIFICATE-----" {
            out.push(lines.next().unwrap().to_string());
        }
    }
    out
}

/// Everything a finished rotation must satisfy.
fn assert_rotated(w: &Workdir, auths: &[&str]) {
    // The plan has nothing left to do.
    let plan = w.ok(&["plan"]);
    assert!(plan.contains("No changes."), "{plan}");
    let old: Vec<String> = ["kubernetes", "front-proxy"]
        .iter()
        .filter(|a| auths.contains(a))
        .map(|a| {
            let file = if *a == "kubernetes" {
                "ca.crt"
            } else {
                "front-proxy-ca.crt"
            };
            // The sandbox's original CA, from the first backup of this file.
            let backups = common::files_under(&w.path().join(".trustform/backup"));
            let b = backups
                .iter()
                .find(|p| p.ends_with(format!("cp-1/etc/kubernetes/pki/{file}")))
                .expect("a backup of the CA file");
            pem_lines(b)[0].clone()
        })
        .collect();
    // No file on any node still holds an old CA (PEM or inside a kubeconfig).
    for f in node_files(w) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let decoded: String = text
            .lines()
            .filter_map(|l| l.split_once("-data: "))
            .filter_map(|(_, v)| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(v.trim().trim_matches('"'))
                    .ok()
            })
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .collect();
        for o in &old {
            assert!(
                !text.contains(o) && !decoded.contains(o),
                "{} still holds an old CA",
                f.display()
            );
        }
    }
    // openssl: every kubernetes leaf verifies against the new CA alone; the old bundle
    // would not do.
    let k8s = new_ca(w, "kubernetes");
    let mut verified = 0;
    for f in node_files(w) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let s = f.to_string_lossy();
        let is_k8s_leaf = (s.contains("/etc/kubernetes/pki/")
            && !s.contains("/pki/etcd/")
            && name.ends_with(".crt")
            && !name.contains("ca")
            && !name.starts_with("front-proxy")
            && name != "apiserver-etcd-client.crt")
            // The kubelet's own self-signed kubelet.crt/kubelet.key (kubeadm's default) are
            // not the cluster CA's: trustform leaves them alone.
            || (s.contains("/var/lib/kubelet/pki/")
                && name != "kubelet.crt"
                && name != "kubelet.key");
        if auths.contains(&"kubernetes") && is_k8s_leaf {
            common::openssl_verify(&k8s, &f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            verified += 1;
        }
        if auths.contains(&"front-proxy") && name == "front-proxy-client.crt" {
            common::openssl_verify(&new_ca(w, "front-proxy"), &f)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            verified += 1;
        }
    }
    assert!(verified >= 10, "only {verified} leaves verified");
    // Key files and kubeconfigs are 0600; nothing outside them holds a private key.
    for f in node_files(w) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        if text.contains("PRIVATE KEY") || text.contains("client-key-data") {
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    // kubectl reads the rotated admin.conf: one CA, the new one.
    let admin = w.node("cp-1").join("etc/kubernetes/admin.conf");
    let out = Command::new("kubectl")
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(&admin)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    let data = view["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    use base64::Engine;
    let pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        pem,
        std::fs::read_to_string(&k8s).unwrap(),
        "admin.conf trusts the new CA only"
    );
    assert_eq!(view["contexts"][0]["name"], "kubernetes-admin@kubernetes");
}

fn no_private_key(texts: &[&str]) {
    for t in texts {
        assert!(!t.contains("PRIVATE KEY"), "private key material leaked");
    }
}

#[test]
fn to_end_apply_rotates_both_authorities() {
    let w = cluster(3, 2, true);
    rotate_to_end(&w, &["kubernetes", "front-proxy"]);
    let (code, _, err) = w.run(&["plan", "-out", "plan.json"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = w.run(&["apply", "plan.json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Apply complete! "), "{out}");
    assert!(out.contains("gate passed"), "{out}");
    assert_rotated(&w, &["kubernetes", "front-proxy"]);
    // Status from the journal.
    let status: Value = serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status["state"], "done");
    assert_eq!(status["stage"], "done");
    assert_eq!(status["done"], status["total"]);
    // No key material in what we print or keep.
    let plan = std::fs::read_to_string(w.path().join("plan.json")).unwrap();
    let mut journals = String::new();
    for f in common::files_under(&w.path().join(".trustform/journal")) {
        journals += &std::fs::read_to_string(f).unwrap();
    }
    no_private_key(&[&out, &err, &plan, &journals]);
    // The same plan again is refused: already applied.
    let (code, _, err) = w.run(&["apply", "plan.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("already applied"), "{err}");
}

#[test]
fn three_staged_applies_reach_the_same_state() {
    let w = cluster(3, 2, false);
    for stage in ["pre-rotate", "rotate", "post-rotate"] {
        for a in ["kubernetes", "front-proxy"] {
            w.ok(&["rotate", a, "--stage", stage]);
        }
        let (code, out, err) = w.run(&["apply", "--auto-approve", "--format", "json"]);
        assert_eq!(code, 0, "{stage}: {out}\n{err}");
        let events: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON event per line"))
            .collect();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"step_start") && kinds.contains(&"step_done"));
        assert!(
            kinds.contains(&"gate"),
            "{stage}: every stage ends with a gate"
        );
        assert_eq!(kinds.last(), Some(&"summary"));
        assert_eq!(events.last().unwrap()["ok"], true);
    }
    assert_rotated(&w, &["kubernetes", "front-proxy"]);
}

#[test]
fn apply_asks_and_only_yes_proceeds() {
    let w = cluster(1, 1, false);
    rotate_to_end(&w, &["kubernetes"]);
    let before = shape(&w);
    let out = w.cmd().arg("apply").write_stdin("no\n").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("Do you want to perform these actions? Only 'yes' will be accepted."));
    assert!(stdout.contains("Apply cancelled."));
    assert_eq!(shape(&w), before, "nothing changed");
    let out = w.cmd().arg("apply").write_stdin("yes\n").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.ok(&["plan"]).contains("No changes."));
}

#[test]
fn a_crash_at_every_step_boundary_resumes_to_the_same_end_state() {
    let template = cluster(2, 1, false);
    rotate_to_end(&template, &["kubernetes"]);
    let plan: Value = serde_json::from_str(&template.ok(&["plan", "--format", "json"])).unwrap();
    let steps: Vec<(String, bool)> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["kind"] == "write"))
        .collect();
    assert!(steps.len() > 40, "a real rotation: {} steps", steps.len());
    // The uninterrupted end state.
    let reference = {
        let w = Workdir {
            tmp: tempfile::tempdir().unwrap(),
        };
        std::fs::remove_dir(w.path()).unwrap();
        copy_dir(template.path(), w.path());
        w.ok(&["apply", "--auto-approve"]);
        shape(&w)
    };
    // Every boundary: after each step; and in the middle of each write step.
    let mut faults: Vec<String> = steps.iter().map(|(id, _)| format!("after:{id}")).collect();
    faults.extend(
        steps
            .iter()
            .filter(|(_, write)| *write)
            .map(|(id, _)| format!("during:{id}")),
    );
    let failures = std::sync::Mutex::new(vec![]);
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(fault) = faults.get(i) else { break };
                    let w = Workdir {
                        tmp: tempfile::tempdir().unwrap(),
                    };
                    std::fs::remove_dir(w.path()).unwrap();
                    copy_dir(template.path(), w.path());
                    let out = w
                        .cmd()
                        .args(["apply", "--auto-approve"])
                        .env("TRUSTFORM_FAULT", fault)
                        .output()
                        .unwrap();
                    let last =
                        fault.ends_with(&steps.last().unwrap().0) && fault.starts_with("after:");
                    if !common::fault_fired(&out) && !last {
                        failures.lock().unwrap().push(format!(
                            "{fault}: the fault did not fire ({:?})",
                            out.status.code()
                        ));
                        continue;
                    }
                    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
                    if code != 0 {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{fault}: resume failed:\n{out}\n{err}"));
                        continue;
                    }
                    if !last && !out.contains("Resuming apply") {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{fault}: did not resume:\n{out}"));
                    }
                    if shape(&w) != reference {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{fault}: end state differs"));
                    }
                    if !w.ok(&["plan"]).contains("No changes.") {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{fault}: plan not empty after resume"));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_stale_plan_is_refused_and_nothing_is_touched() {
    let w = cluster(1, 1, false);
    rotate_to_end(&w, &["kubernetes"]);
    w.ok(&["plan", "-out", "plan.json"]);
    // Someone renews the scheduler's kubeconfig by hand after the plan was made.
    let conf = w.node("cp-1").join("etc/kubernetes/scheduler.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("name: kubernetes\n", "name: kubernetes\n  # edited\n"),
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&conf).unwrap();
    // A content change the snapshot sees: drop the client certificate.
    text = text
        .lines()
        .filter(|l| !l.contains("client-certificate-data"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&conf, text).unwrap();
    let before = shape(&w);
    let (code, _, err) = w.run(&["apply", "plan.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("trustform::apply::stale_plan"), "{err}");
    assert!(
        err.contains("cp-1:/etc/kubernetes/scheduler.conf changed"),
        "{err}"
    );
    assert_eq!(shape(&w), before);
    assert!(!w.path().join(".trustform/journal").exists());
    // A changed trustform.yaml makes it stale too.
    let w = cluster(1, 1, false);
    rotate_to_end(&w, &["kubernetes"]);
    w.ok(&["plan", "-out", "plan.json"]);
    let mut cfg = std::fs::read_to_string(w.config()).unwrap();
    cfg = cfg.replace("keepKeys: false", "keepKeys: true");
    std::fs::write(w.config(), cfg).unwrap();
    let (code, _, err) = w.run(&["apply", "plan.json"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("trustform.yaml changed since the plan was made"),
        "{err}"
    );
}

#[test]
fn bad_plan_files_are_refused_with_the_reason() {
    let w = cluster(1, 1, false);
    rotate_to_end(&w, &["kubernetes"]);
    w.ok(&["plan", "-out", "plan.json"]);
    let good = std::fs::read_to_string(w.path().join("plan.json")).unwrap();
    let before = shape(&w);
    let cases = [
        (good[..good.len() / 2].to_string(), "truncated"),
        (
            good.replacen(
                &format!("\"tool_version\": \"{}\"", env!("CARGO_PKG_VERSION")),
                "\"tool_version\": \"0.0.1\"",
                1,
            ),
            "made by trustform 0.0.1",
        ),
        (
            good.replacen("Distribute the new CA", "Distribute a CA", 1),
            "changed after trustform wrote it",
        ),
        ("not json".to_string(), "not a trustform plan"),
    ];
    for (text, want) in cases {
        std::fs::write(w.path().join("bad.json"), &text).unwrap();
        let (code, _, err) = w.run(&["apply", "bad.json"]);
        assert_eq!(code, 1, "{want}");
        assert!(err.contains("trustform::apply::bad_plan"), "{err}");
        assert!(err.contains(want), "want {want:?} in:\n{err}");
        assert!(err.contains("help:"), "{err}");
    }
    assert_eq!(shape(&w), before);
    assert!(!w.path().join(".trustform/journal").exists());
    assert!(!w.path().join(".trustform/backup").exists());
}

#[test]
fn a_held_lock_refuses_a_second_apply_until_force_unlocked() {
    let w = cluster(1, 1, false);
    rotate_to_end(&w, &["kubernetes"]);
    // A live holder: this test process.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let lock = serde_json::json!({
        "id": "1234abcd-5678-9abcdef01234", "who": "alice@ops", "when": "2026-11-23T10:00:00Z",
        "operation": "apply 0123456789ab", "plan_id": "0123456789ab",
        "host": host, "pid": std::process::id()
    });
    std::fs::create_dir_all(w.path().join(".trustform")).unwrap();
    std::fs::write(w.path().join(".trustform/lock.json"), lock.to_string()).unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = w.run(&["apply", "--auto-approve", "--lock-timeout", "1s"]);
    assert_eq!(code, 1);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "it waited"
    );
    assert!(err.contains("trustform::apply::locked"), "{err}");
    assert!(err.contains("alice@ops"), "{err}");
    assert!(
        err.contains("force-unlock 1234abcd-5678-9abcdef01234"),
        "{err}"
    );
    let (code, _, err) = w.run(&["force-unlock", "wrong"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("the lock is 1234abcd-5678-9abcdef01234"),
        "{err}"
    );
    w.ok(&["force-unlock", "1234abcd-5678-9abcdef01234"]);
    w.ok(&["apply", "--auto-approve"]);
    assert!(!w.path().join(".trustform/lock.json").exists(), "released");
}

#[test]
fn rollback_restores_every_file_byte_for_byte() {
    let w = cluster(2, 1, false);
    rotate_to_end(&w, &["kubernetes", "front-proxy"]);
    let before: BTreeMap<PathBuf, (Vec<u8>, u32)> = node_files(&w)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).unwrap().permissions().mode();
            (p.clone(), (std::fs::read(&p).unwrap(), m))
        })
        .collect();
    w.ok(&["apply", "--auto-approve"]);
    let status: Value = serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    let id = status["plan_id"].as_str().unwrap().to_string();
    let changed = node_files(&w)
        .iter()
        .filter(|p| before.get(*p).map(|b| &b.0) != std::fs::read(p).ok().as_ref())
        .count();
    assert!(changed > 20, "the apply changed {changed} files");
    let out = w.ok(&["rollback", &id]);
    assert!(out.contains("restored"), "{out}");
    assert!(out.contains("restarted kube-apiserver on cp-1"), "{out}");
    let after: BTreeMap<PathBuf, (Vec<u8>, u32)> = node_files(&w)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).unwrap().permissions().mode();
            (p.clone(), (std::fs::read(&p).unwrap(), m))
        })
        .collect();
    assert_eq!(before.len(), after.len(), "no file added or lost");
    for (p, b) in &before {
        assert!(
            after.get(p) == Some(b),
            "{} differs after rollback",
            p.display()
        );
    }
    let status: Value = serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status["state"], "rolled-back");
    // The same rotation can be applied again afterwards.
    w.ok(&["apply", "--auto-approve"]);
    assert!(w.ok(&["plan"]).contains("No changes."));
}

#[test]
fn a_failed_step_skips_its_dependents_and_apply_resumes_after_the_fix() {
    let w = cluster(2, 1, false);
    rotate_to_end(&w, &["kubernetes", "front-proxy"]);
    // Switching the signer fails (what a pre-flight cannot foresee: a missing key it
    // finds before any write, see tests/preflight.rs).
    let out = w
        .cmd()
        .args(["apply", "--auto-approve"])
        .env("TRUSTFORM_FAULT", "fail:kubernetes-ca/switch-signer@cp-1")
        .output()
        .unwrap();
    let (code, out, err) = (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(code, 1);
    assert!(out.contains("Apply failed:"), "{out}");
    assert!(out.contains("kubernetes-ca/switch-signer@cp-1: "), "{out}");
    assert!(out.contains("injected failure"), "{out}");
    assert!(
        out.contains("skipped: upstream step kubernetes-ca/switch-signer@"),
        "{out}"
    );
    assert!(err.contains("trustform::apply::failed"), "{err}");
    let status: Value = serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(status["state"], "failed");
    assert_eq!(status["stage"], "rotate");
    assert!(
        status["errors"][0]
            .as_str()
            .unwrap()
            .contains("switch-signer")
    );
    // A new plan cannot start beside the unfinished apply.
    w.ok(&["plan", "-out", "other.json"]);
    let (code, _, err) = w.run(&["apply", "other.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("trustform::apply::unfinished"), "{err}");
    // Without the fault, apply resumes and finishes.
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Resuming apply"), "{out}");
    assert!(w.ok(&["plan"]).contains("No changes."));
}
