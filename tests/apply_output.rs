//! What `apply`, `status`, `rollback` and `force-unlock` print, pinned with insta.
//! One step at a time (`--parallelism 1`), so the order of lines is the plan's.

use crate::common;

use common::Workdir;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    for (re, with) in common::redactions() {
        s.add_filter(re, with);
    }
    for (re, with) in [
        (r"T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "T[time]Z"),
        (r"\(\d+ ms\)", "([ms])"),
        (r"\d+\.\d s\)", "[s])"),
        // How long a restart took depends on the machine's load.
        (r"waited \d+\.\d s:", "waited [s]:"),
        (r"\(\d+\.\d s: ", "([s]: "),
        (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{12}\b", "[lock-id]"),
        (r"\b[0-9a-f]{12}\b", "[plan-id]"),
        (r"pid \d+", "pid [pid]"),
        (r"held by \S+", "held by [who]"),
        (r"host \S+,", "host [host],"),
        (r"by \S+@\S+ since", "by [who] since"),
    ] {
        s.add_filter(re, with);
    }
    s
}

fn one_cp() -> Workdir {
    let w = common::sandbox(1, 1, false);
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    w.ok(&["rotate", "front-proxy", "--to-end"]);
    w
}

#[test]
fn apply_status_and_rollback_output() {
    let w = one_cp();
    let _guard = settings().bind_to_scope();
    let out = w.ok(&["apply", "--auto-approve", "--parallelism", "1"]);
    insta::assert_snapshot!("apply_front_proxy", out);
    insta::assert_snapshot!("status_done", w.ok(&["status"]));
    let id = serde_json::from_str::<serde_json::Value>(&w.ok(&["status", "--format", "json"]))
        .unwrap()["plan_id"]
        .as_str()
        .unwrap()
        .to_string();
    insta::assert_snapshot!("rollback", w.ok(&["rollback", &id]));
    insta::assert_snapshot!("status_rolled_back", w.ok(&["status"]));
}

#[test]
fn failure_and_refusal_output() {
    let w = one_cp();
    let _guard = settings().bind_to_scope();
    // A failed step (injected: a missing key is found by the pre-flight, see
    // tests/preflight.rs).
    let out = w
        .cmd()
        .args(["apply", "--auto-approve", "--parallelism", "1"])
        .env("TRUSTFORM_FAULT", "fail:front-proxy-ca/switch-signer@cp-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (out, err) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    insta::assert_snapshot!("apply_failed_stdout", out);
    insta::assert_snapshot!("apply_failed_stderr", err);
    insta::assert_snapshot!("status_failed", w.ok(&["status"]));
    // A held lock.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let lock = serde_json::json!({
        "id": "1234abcd-5678-9abcdef01234", "who": "alice@ops", "when": "2026-11-23T10:00:00Z",
        "operation": "apply 0123456789ab", "plan_id": "0123456789ab",
        "host": host, "pid": std::process::id()
    });
    std::fs::write(w.path().join(".trustform/lock.json"), lock.to_string()).unwrap();
    let (code, _, err) = w.run(&["apply", "--auto-approve"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!("apply_locked", err);
    insta::assert_snapshot!(
        "force_unlock",
        w.ok(&["force-unlock", "1234abcd-5678-9abcdef01234"])
    );
    // A truncated plan file.
    w.ok(&["plan", "-out", "plan.json"]);
    let text = std::fs::read_to_string(w.path().join("plan.json")).unwrap();
    let needle = "\"snapshot_fingerprint\": \"sha256:";
    let cut = text.find(needle).unwrap() + needle.len();
    std::fs::write(w.path().join("cut.json"), &text[..cut]).unwrap();
    let (code, _, err) = w.run(&["apply", "cut.json"]);
    assert_eq!(code, 1);
    insta::assert_snapshot!("apply_truncated_plan", err);
}

#[test]
fn help_of_the_apply_commands() {
    let w = common::sandbox(1, 0, false);
    for cmd in ["apply", "status", "rollback", "force-unlock"] {
        insta::assert_snapshot!(format!("help_{cmd}"), w.ok(&[cmd, "--help"]));
    }
}

/// `--quiet` keeps stderr to warnings and errors and the apply's output to what failed
/// and the summary; `--verbose` tells every operation on a node, never its key material.
#[test]
fn quiet_and_verbose() {
    let w = one_cp();
    // Normal: a note on stderr; quiet: none, and the same plan on stdout.
    let (code, out, err) = w.run(&["plan", "-out", "plan.json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Saved the plan to plan.json."), "{err}");
    let (code, quiet_out, quiet_err) = w.run(&["--quiet", "plan", "-out", "plan.json"]);
    assert_eq!(code, 0, "{quiet_err}");
    assert_eq!(quiet_err, "", "--quiet says nothing on stderr");
    assert_eq!(quiet_out, out, "--quiet leaves the data alone");
    // Verbose: each read on the node, with its duration, and no key material.
    let needles = common::key_needles(&[&w.cluster()]);
    let (code, verbose_out, verbose_err) = w.run(&["-v", "plan", "-out", "plan.json"]);
    assert_eq!(code, 0, "{verbose_err}");
    assert_eq!(verbose_out, out, "--verbose leaves the data alone");
    let reads = verbose_err
        .lines()
        .filter(|l| l.starts_with("  [cp-1] ") && l.ends_with(" ms)"))
        .count();
    assert!(reads >= 2, "a line per operation on cp-1:\n{verbose_err}");
    assert!(
        verbose_err.contains("[cp-1] read tree /etc/kubernetes"),
        "{verbose_err}"
    );
    assert!(common::leaks("plan -v", &verbose_err, &needles).is_empty());
    {
        // The lines as a user reads them (nodes are read in parallel: sorted; sizes and
        // times vary with the keys and the machine).
        let mut s = settings();
        s.add_filter(r"\d+(\.\d)? (B|KiB)\b", "[size]");
        let _guard = s.bind_to_scope();
        let mut lines: Vec<&str> = verbose_err.lines().collect();
        lines.sort();
        insta::assert_snapshot!("plan_verbose_stderr", lines.join("\n"));
    }
    // Apply: quiet prints the summary only; verbose shows each write.
    let (code, applied, err) = w.run(&["-q", "apply", "plan.json", "--parallelism", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(!applied.contains(": starting"), "{applied}");
    assert!(!applied.contains(": done ("), "{applied}");
    assert!(applied.contains("Apply complete"), "{applied}");
    assert_eq!(err, "", "--quiet apply says nothing on stderr");
    {
        let _guard = settings().bind_to_scope();
        insta::assert_snapshot!("apply_quiet", applied);
    }
    w.ok(&["rollback", &plan_id(&w)]);
    let (code, applied, err) = w.run(&["--verbose", "apply", "plan.json", "--parallelism", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(applied.contains(": done ("), "{applied}");
    let writes: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("] write /etc/kubernetes/"))
        .collect();
    assert!(!writes.is_empty(), "{err}");
    assert!(
        writes
            .iter()
            .all(|l| l.contains(" B, 0") || l.contains(" KiB, 0")),
        "{writes:?}"
    );
    assert!(common::leaks("apply -v", &err, &needles).is_empty());
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    // Both at once is a usage error.
    let (code, _, err) = w.run(&["-q", "-v", "status"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

fn plan_id(w: &Workdir) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    status["plan_id"].as_str().unwrap().to_string()
}
