//! `apply` checks everything it can before its first write, and a plan file holds only
//! what the procedures make: edited (and resealed) plans and broken clusters are refused
//! with every problem listed, and nothing on disk changes.

use crate::common;

use common::Workdir;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A 2 + 1 sandbox with trustform.yaml (ECDSA issuance), the kubernetes CA rotated to the
/// end, and the plan saved to plan.json.
fn planned() -> Workdir {
    let w = common::sandbox(2, 1, false);
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    // Name the new CA without today's date, so the pinned messages stay the same.
    let text = std::fs::read_to_string(w.config()).unwrap();
    let at = text.find("kubernetes-20").expect("the generated CA's name");
    let dated = text[at..at + "kubernetes-2026-01-01".len()].to_string();
    std::fs::write(w.config(), text.replace(&dated, "kubernetes-new")).unwrap();
    for (dir, ext) in [("cas", "crt"), (".trustform/keys", "key")] {
        std::fs::rename(
            w.path().join(dir).join(format!("{dated}.{ext}")),
            w.path().join(dir).join(format!("kubernetes-new.{ext}")),
        )
        .unwrap();
    }
    w.ok(&["plan", "-out", "plan.json"]);
    w
}

/// stderr with miette's wrapped lines joined again (a message's `│ ` continuation lines
/// and a help's indented ones), for `contains` checks.
fn flat(err: &str) -> String {
    let mut out = String::new();
    for line in err.lines() {
        let cont = line.strip_prefix("  │ ").or_else(|| {
            line.strip_prefix("        ")
                .filter(|r| !r.starts_with(' ') && !r.is_empty())
        });
        match cont {
            Some(rest) if !out.is_empty() => {
                if !out.ends_with('-') && !out.ends_with('/') {
                    out.push(' ');
                }
                out.push_str(rest);
            }
            _ => {
                out.push('\n');
                out.push_str(line);
            }
        }
    }
    out
}

/// Every entry under `dir`: relative path → kind, mode and content digest (or a
/// symlink's target).
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            // The simulated machines' own state and logs (their processes write them).
            if p.ends_with("run/trustform-sandbox") {
                continue;
            }
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode();
            let v = if meta.file_type().is_symlink() {
                format!(
                    "link {:o} {}",
                    mode,
                    std::fs::read_link(&p).unwrap().display()
                )
            } else if meta.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o}")
            } else {
                let digest = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
                format!("file {mode:o} {digest}")
            };
            out.insert(rel, v);
        }
    }
    out
}

/// Run `apply` (with `args`), expecting a refused pre-flight that changed nothing under
/// the work dir (the sandbox included); returns stderr.
fn refused(w: &Workdir, args: &[&str]) -> String {
    let before = tree(w.path());
    let (code, out, err) = w.run(args);
    assert_eq!(code, 1, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("trustform::apply::preflight"), "{err}");
    assert!(!out.contains("starting"), "no step ran:\n{out}");
    let after = tree(w.path());
    let changed: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect();
    assert!(changed.is_empty(), "changed on disk: {changed:?}");
    for d in ["journal", "backup"] {
        let entries = std::fs::read_dir(w.path().join(".trustform").join(d))
            .map(|r| r.count())
            .unwrap_or(0);
        assert_eq!(entries, 0, ".trustform/{d} has entries");
    }
    assert!(!w.path().join(".trustform/lock.json").exists());
    err
}

/// [`refused`], and the stderr flattened for `contains` checks.
fn refused_flat(w: &Workdir, args: &[&str]) -> (String, String) {
    let err = refused(w, args);
    let f = flat(&err);
    (err, f)
}

/// Edit plan.json and reseal it the way anyone can: the checksum is the SHA-256 of the
/// file's JSON with `checksum` empty (computed here, not with trustform's own code).
fn edit_plan(w: &Workdir, edit: impl FnOnce(&mut Value)) {
    let path = w.path().join("plan.json");
    let mut plan: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut plan);
    plan["checksum"] = Value::String(String::new());
    let digest = Sha256::digest(serde_json::to_vec(&plan).unwrap());
    plan["checksum"] = Value::String(format!("sha256:{}", hex::encode(digest)));
    std::fs::write(&path, serde_json::to_string_pretty(&plan).unwrap() + "\n").unwrap();
}

/// The operations of a step, by id.
fn ops<'v>(plan: &'v mut Value, step: &str) -> &'v mut Vec<Value> {
    plan["steps"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["id"] == step)
        .unwrap_or_else(|| panic!("no step {step}"))["ops"]
        .as_array_mut()
        .unwrap()
}

/// Set a field of the step's operation whose `key` is `from`.
fn set_op(plan: &mut Value, step: &str, key: &str, from: &str, to: &str) {
    let op = ops(plan, step)
        .iter_mut()
        .find(|o| o[key] == from)
        .unwrap_or_else(|| panic!("{step} has no op with {key} {from}"));
    op[key] = Value::String(to.into());
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    for (re, with) in common::redactions() {
        s.add_filter(re, with);
    }
    for (re, with) in [
        (r"\b[0-9a-f]{12}\b", "[plan-id]"),
        (r"in \d+ checks", "in [n] checks"),
        (r"and \d+ more", "and [n] more"),
        (r"(client-(key|certificate)-data: )\S+", "$1[base64]"),
    ] {
        s.add_filter(re, with);
    }
    s
}

#[test]
fn a_path_outside_the_node_is_refused() {
    let w = planned();
    edit_plan(&w, |p| {
        set_op(
            p,
            "kubernetes-ca/distribute-ca@cp-1",
            "path",
            "/etc/kubernetes/pki/ca.crt",
            "/etc/kubernetes/pki/../../../../x.crt",
        )
    });
    let (raw, err) = refused_flat(&w, &["apply", "plan.json"]);
    assert!(err.contains("trustform::plan::refused"), "{err}");
    assert!(
        err.contains("step kubernetes-ca/distribute-ca@cp-1, op 1"),
        "{err}"
    );
    assert!(err.contains("has a `..` component"), "{err}");
    assert!(err.contains("[plan.json:"), "file:line:col: {err}");
    settings().bind(|| insta::assert_snapshot!("dotdot_path", raw));
    // rehearse refuses it too.
    let (code, _, err) = w.run(&["rehearse", "plan.json"]);
    let err = flat(&err);
    assert_eq!(code, 1);
    assert!(err.contains("trustform::plan::unsafe_plan"), "{err}");
    assert!(
        err.contains("op 1 (/etc/kubernetes/pki/../../../../x.crt)"),
        "{err}"
    );
}

#[test]
fn a_path_the_procedures_never_write_is_refused() {
    let w = planned();
    edit_plan(&w, |p| {
        set_op(
            p,
            "kubernetes-ca/user-kubeconfigs@cp-1",
            "path",
            "/etc/kubernetes/admin.conf",
            "/root/.ssh/authorized_keys",
        )
    });
    let (raw, err) = refused_flat(&w, &["apply", "plan.json"]);
    assert!(
        err.contains("step kubernetes-ca/user-kubeconfigs@cp-1, op 0 (/root/.ssh/authorized_keys): not a path this action writes"),
        "{err}"
    );
    settings().bind(|| insta::assert_snapshot!("authorized_keys_path", raw));
}

#[test]
fn an_unknown_node_is_refused() {
    let w = planned();
    edit_plan(&w, |p| {
        set_op(
            p,
            "kubernetes-ca/distribute-ca@cp-2",
            "node",
            "cp-2",
            "cp-9",
        )
    });
    let (raw, err) = refused_flat(&w, &["apply", "plan.json"]);
    assert!(
        err.contains("step kubernetes-ca/distribute-ca@cp-2, op 0")
            && err.contains("node \"cp-9\" is not in trustform.yaml's inventory"),
        "{err}"
    );
    settings().bind(|| insta::assert_snapshot!("unknown_node", raw));
}

#[test]
fn an_unknown_component_is_refused() {
    let w = planned();
    edit_plan(&w, |p| {
        set_op(
            p,
            "kubernetes-ca/restart-kcm@cp-1",
            "component",
            "kube-controller-manager",
            "sshd",
        )
    });
    let (raw, err) = refused_flat(&w, &["apply", "plan.json"]);
    assert!(
        err.contains("step kubernetes-ca/restart-kcm@cp-1, op 0 (sshd): component \"sshd\""),
        "{err}"
    );
    settings().bind(|| insta::assert_snapshot!("unknown_component", raw));
}

fn new_key(w: &Workdir) -> std::path::PathBuf {
    std::fs::read_dir(w.path().join(".trustform/keys"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "key"))
        .expect("the new CA's key")
}

#[test]
fn a_missing_ca_key_is_found_before_any_write() {
    let w = planned();
    std::fs::remove_file(new_key(&w)).unwrap();
    let (raw, err) = refused_flat(&w, &["apply", "plan.json"]);
    assert!(err.contains("trustform::apply::preflight::key"), "{err}");
    assert!(err.contains("cannot be read"), "{err}");
    assert!(
        err.contains("needed by step kubernetes-ca/switch-signer@cp-1"),
        "{err}"
    );
    assert!(err.contains("[trustform.yaml:"), "file:line:col: {err}");
    settings().bind(|| insta::assert_snapshot!("missing_key", raw));
    // `apply` without a plan file runs the same pre-flight.
    let (_, err) = refused_flat(&w, &["apply", "--auto-approve"]);
    assert!(err.contains("trustform::apply::preflight::key"), "{err}");
}

#[test]
fn a_ca_key_that_is_not_the_certificates_is_found() {
    let w = planned();
    // The old CA's key where the new CA's should be.
    std::fs::copy(
        w.node("cp-1").join("etc/kubernetes/pki/ca.key"),
        new_key(&w),
    )
    .unwrap();
    let (raw, err) = refused_flat(&w, &["apply", "plan.json"]);
    assert!(err.contains("is the key of another certificate"), "{err}");
    settings().bind(|| insta::assert_snapshot!("mismatched_key", raw));
}

#[test]
fn a_flag_removed_after_the_plan_is_found() {
    let w = planned();
    let m = w
        .node("cp-1")
        .join("etc/kubernetes/manifests/kube-controller-manager.yaml");
    let text = std::fs::read_to_string(&m).unwrap();
    let text: String = text
        .split_inclusive('\n')
        .filter(|l| !l.contains("--cluster-signing-cert-file="))
        .collect();
    std::fs::write(&m, text).unwrap();
    let (raw, err) = refused_flat(&w, &["apply", "plan.json"]);
    // Both: the plan is stale, and the step that sets the flag could not.
    assert!(err.contains("trustform::apply::stale_plan"), "{err}");
    assert!(
        err.contains("kube-controller-manager has no --cluster-signing-cert-file= flag for this step to set (step kubernetes-ca/kcm-single-cert-flags@cp-1)"),
        "{err}"
    );
    assert!(
        err.contains("[cp-1:/etc/kubernetes/manifests/kube-controller-manager.yaml:"),
        "file:line:col: {err}"
    );
    settings().bind(|| insta::assert_snapshot!("flag_removed", raw));
}

#[test]
fn a_kubeconfig_with_a_bad_client_key_is_found() {
    let w = planned();
    let dir = w.node("cp-1").join("etc/kubernetes");
    let key_line = |t: &str| {
        t.lines()
            .find(|l| l.trim_start().starts_with("client-key-data:"))
            .unwrap()
            .to_string()
    };
    let other = key_line(&std::fs::read_to_string(dir.join("scheduler.conf")).unwrap());
    let admin = std::fs::read_to_string(dir.join("admin.conf")).unwrap();
    std::fs::write(
        dir.join("admin.conf"),
        admin.replace(&key_line(&admin), &other),
    )
    .unwrap();
    let (_, err) = refused_flat(&w, &["apply", "plan.json"]);
    assert!(
        err.contains("cp-1:/etc/kubernetes/admin.conf: client-key-data is not the key of the client certificate"),
        "{err}"
    );
    assert!(
        err.contains("(step kubernetes-ca/user-kubeconfigs@cp-1)"),
        "{err}"
    );
    assert!(err.contains("[cp-1:/etc/kubernetes/admin.conf:"), "{err}");
    // Flat: the gate's lines quote node addresses, whose length moves the line breaks.
    settings().bind(|| insta::assert_snapshot!("bad_client_key", err));
}

#[test]
fn every_problem_is_listed_at_once() {
    let w = planned();
    std::fs::remove_file(new_key(&w)).unwrap();
    edit_plan(&w, |p| {
        set_op(
            p,
            "kubernetes-ca/restart-kcm@cp-2",
            "component",
            "kube-controller-manager",
            "../../../../tmp/x",
        )
    });
    let (raw, err) = refused_flat(&w, &["apply", "plan.json"]);
    assert!(err.contains("pre-flight found 2 problem(s)"), "{err}");
    assert!(err.contains("trustform::apply::preflight::key"), "{err}");
    assert!(
        err.contains("step kubernetes-ca/restart-kcm@cp-2, op 0 (../../../../tmp/x)"),
        "{err}"
    );
    settings().bind(|| insta::assert_snapshot!("two_problems", raw));
}

#[test]
fn an_edited_saved_plan_is_refused_on_resume() {
    let w = planned();
    // Stop after the first step: the saved copy and the journal stay for a resume.
    let (code, _, _) = w
        .cmd()
        .args(["apply", "plan.json", "--parallelism", "1"])
        .env("TRUSTFORM_FAULT", "after:kubernetes-ca/distribute-ca@cp-1")
        .output()
        .map(|o| (o.status.code().unwrap_or(-1), o.stdout, o.stderr))
        .unwrap();
    assert_ne!(code, 0);
    let journal = w.path().join(".trustform/journal");
    let saved = std::fs::read_dir(&journal)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".plan.json"))
        .expect("the saved plan");
    let id = saved
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".plan.json")
        .to_string();
    // Edit and reseal the saved copy; give its journal the new id, as a careful attacker
    // would.
    std::fs::copy(&saved, w.path().join("plan.json")).unwrap();
    edit_plan(&w, |p| {
        set_op(
            p,
            "kubernetes-ca/user-kubeconfigs@cp-1",
            "path",
            "/etc/kubernetes/admin.conf",
            "/root/.ssh/authorized_keys",
        )
    });
    let edited: Value =
        serde_json::from_slice(&std::fs::read(w.path().join("plan.json")).unwrap()).unwrap();
    let new_id: String = edited["checksum"].as_str().unwrap()[7..19].to_string();
    std::fs::remove_file(&saved).unwrap();
    std::fs::rename(
        w.path().join("plan.json"),
        journal.join(format!("{new_id}.plan.json")),
    )
    .unwrap();
    std::fs::rename(
        journal.join(format!("{id}.jsonl")),
        journal.join(format!("{new_id}.jsonl")),
    )
    .unwrap();
    let before = tree(w.path());
    let (code, out, err) = w.run(&["apply"]);
    let err = flat(&err);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("(/root/.ssh/authorized_keys): not a path this action writes"),
        "{err}"
    );
    assert!(err.contains(&format!("{new_id}.plan.json:")), "{err}");
    assert_eq!(tree(w.path()), before, "nothing changed");
}

#[test]
fn a_passing_pre_flight_says_how_many_checks() {
    let w = planned();
    let out = w.ok(&["apply", "plan.json", "--format", "json"]);
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "preflight");
    assert_eq!(first["ok"], true);
    assert!(first["checks"].as_u64().unwrap() > 100, "{first}");
}
