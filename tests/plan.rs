//! `trustform plan` on a 3 + 2 sandbox: every format, the documented order, exit codes.

use crate::common;

use std::collections::{HashMap, HashSet};
use trustform::plan::Plan;
use trustform::procedure::{self, doc_key};

fn rotated() -> common::Workdir {
    let w = common::initialised(3, 2);
    w.ok(&[
        "rotate",
        "kubernetes",
        "--to-end",
        "--algorithm",
        "ecdsa-p256",
    ]);
    w.ok(&[
        "rotate",
        "front-proxy",
        "--to-end",
        "--algorithm",
        "ecdsa-p256",
    ]);
    w
}

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    for (re, with) in common::redactions() {
        s.add_filter(re, with);
    }
    s
}

#[test]
fn plan_in_every_format() {
    let w = rotated();
    let _guard = settings().bind_to_scope();
    insta::assert_snapshot!("plan_text", w.ok(&["plan"]));
    insta::assert_snapshot!("plan_markdown", w.ok(&["plan", "--format", "markdown"]));
    insta::assert_snapshot!("plan_dot", w.ok(&["plan", "--format", "dot"]));
    insta::assert_snapshot!("plan_mermaid", w.ok(&["plan", "--format", "mermaid"]));
    let json = w.ok(&["plan", "--format", "json"]);
    let mut s = insta::Settings::clone_current();
    for (re, with) in common::redactions() {
        s.add_filter(re, with);
    }
    s.add_filter(
        r#""config_hash": "sha256:\[fingerprint\]""#,
        r#""config_hash": "[hash]""#,
    );
    s.bind(|| insta::assert_snapshot!("plan_json", json));
}

#[test]
fn plan_file_round_trips_and_holds_the_documented_fields() {
    let w = rotated();
    let (code, _, err) = w.run(&["plan", "-out", "plan.json"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Saved the plan to plan.json"), "{err}");
    let text = std::fs::read_to_string(w.path().join("plan.json")).unwrap();
    let plan: Plan = serde_json::from_str(&text).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format_version"], 1);
    assert_eq!(v["tool_version"], env!("CARGO_PKG_VERSION"));
    assert!(
        v["snapshot_fingerprint"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(v["config_hash"].as_str().unwrap().starts_with("sha256:"));
    let step = &v["steps"][0];
    for field in ["id", "doc_step", "stage", "target", "action", "depends_on"] {
        assert!(step.get(field).is_some(), "step has {field}");
    }
    assert_eq!(step["doc_step"], "1");
    assert!(
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["doc_step"].is_null()),
        "added steps have a null doc_step"
    );
    plan.graph().expect("acyclic");
    // The same cluster and config plan the same steps.
    let again: Plan = serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap();
    assert_eq!(again, plan);
}

/// Leaf step numbers of the seed's procedure: `  8. …` with `    3. …` under it is 8.3.
fn seed_steps() -> Vec<String> {
    let text = include_str!("../plans/sources/manual-rotation-of-ca-certificates.txt");
    let mut out: Vec<String> = Vec::new();
    let mut parent: Option<String> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        let Some((num, _)) = line.trim_start().split_once(". ") else {
            continue;
        };
        if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        match indent {
            2 => {
                out.push(num.to_string());
                parent = Some(num.to_string());
            }
            4 => {
                let p = parent.clone().expect("a sub-step has a parent");
                if out.last() == Some(&p) {
                    out.pop(); // a step with sub-steps is not a step itself
                }
                out.push(format!("{p}.{num}"));
            }
            _ => {}
        }
    }
    out
}

#[test]
fn every_documented_step_is_in_the_procedure_exactly_once_in_order() {
    let seed = seed_steps();
    assert_eq!(seed.len(), 17, "{seed:?}");
    assert_eq!(seed[7], "8.1");
    let procs = procedure::load_all().expect("procedures validate");
    let k = procs
        .iter()
        .find(|p| p.procedure == "kubernetes-ca")
        .unwrap();
    let docs: Vec<String> = k.steps.iter().filter_map(|s| s.doc.clone()).collect();
    assert_eq!(
        docs, seed,
        "kubernetes-ca.yaml documents every seed step once, in order"
    );
    for p in &procs {
        let docs: Vec<&String> = p.steps.iter().filter_map(|s| s.doc.as_ref()).collect();
        for pair in docs.windows(2) {
            assert!(
                doc_key(pair[0]) < doc_key(pair[1]),
                "{}: {} before {}",
                p.procedure,
                pair[0],
                pair[1]
            );
        }
        for d in &docs {
            assert!(
                seed.contains(d),
                "{}: {d} is a documented step",
                p.procedure
            );
        }
    }
}

/// In a plan, every step of documented number a is an ancestor of every step of a later
/// documented number b of the same procedure, and each documented template appears once.
fn assert_documented_order(plan: &Plan) {
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut ancestors: Vec<HashSet<usize>> = Vec::with_capacity(plan.steps.len());
    for s in &plan.steps {
        let mut set = HashSet::new();
        for d in &s.depends_on {
            let j = index[d.as_str()];
            assert!(j < ancestors.len(), "steps are in topological order");
            set.insert(j);
            set.extend(ancestors[j].iter().copied());
        }
        ancestors.push(set);
    }
    for (i, a) in plan.steps.iter().enumerate() {
        for (j, b) in plan.steps.iter().enumerate() {
            let (Some(da), Some(db)) = (&a.doc_step, &b.doc_step) else {
                continue;
            };
            if a.procedure == b.procedure && doc_key(da) < doc_key(db) {
                assert!(
                    ancestors[j].contains(&i),
                    "{} must come before {}",
                    a.id,
                    b.id
                );
            }
            if a.procedure == b.procedure && da == db {
                assert_eq!(
                    a.template, b.template,
                    "documented step {da} has one template"
                );
            }
        }
    }
    let mut seen = HashSet::new();
    for s in &plan.steps {
        assert!(seen.insert(&s.id), "step {} appears once", s.id);
    }
}

#[test]
fn documented_order_holds_in_every_plan_staged_or_to_end() {
    // --to-end: one plan through all three stages.
    let w = rotated();
    let plan: Plan = serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap();
    assert_documented_order(&plan);
    let docs: HashSet<&str> = plan
        .steps
        .iter()
        .filter_map(|s| s.doc_step.as_deref())
        .collect();
    for d in [
        "1", "2", "3", "4", "5", "6", "7", "8.2", "8.3", "9", "10.1", "10.2", "11.1", "11.2",
        "11.3",
    ] {
        assert!(
            docs.contains(d),
            "documented step {d} is in the --to-end plan"
        );
    }
    let skipped: Vec<&str> = plan.skipped.iter().map(|s| s.doc_step.as_str()).collect();
    assert_eq!(skipped, ["8.1", "8.4"], "with nothing to do, and said so");

    // Staged: each stage's plan alone; stages are what `rotate` writes, one commit each.
    let w = common::initialised(3, 2);
    w.ok(&["rotate", "kubernetes", "--algorithm", "ecdsa-p256"]);
    let pre: Plan = serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap();
    assert_documented_order(&pre);
    assert!(
        pre.steps
            .iter()
            .all(|s| s.kind != trustform::procedure::ActionKind::Write
                || !s
                    .changes
                    .iter()
                    .any(|c| c.after.iter().any(|l| l.contains("new certificate")))),
        "pre-rotate re-issues nothing"
    );
    assert!(pre.steps.iter().any(|s| s.doc_step.as_deref() == Some("5")));
    assert!(
        !pre.steps
            .iter()
            .any(|s| s.doc_step.as_deref() == Some("11.2"))
    );
    w.ok(&["rotate", "kubernetes"]);
    let yaml = std::fs::read_to_string(w.config()).unwrap();
    assert!(
        yaml.contains("trust: [kubernetes, kubernetes-"),
        "rotate keeps both CAs trusted:\n{yaml}"
    );
    let rot: Plan = serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap();
    assert_documented_order(&rot);
    // Nothing was applied: the rotate-stage plan still contains the pre-rotate steps first.
    assert_eq!(rot.steps[0].doc_step.as_deref(), Some("1"));
    assert!(
        rot.steps
            .iter()
            .any(|s| s.doc_step.as_deref() == Some("8.3"))
    );
    w.ok(&["rotate", "kubernetes"]);
    let post: Plan = serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap();
    assert_documented_order(&post);
    assert!(
        post.steps
            .iter()
            .any(|s| s.doc_step.as_deref() == Some("11.3"))
    );
}

#[test]
fn no_changes_after_init_and_detailed_exit_codes() {
    let w = common::initialised(1, 1);
    let (code, out, _) = w.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "No changes. The cluster's trust matches trustform.yaml.\n"
    );
    w.ok(&["rotate", "kubernetes", "--algorithm", "ecdsa-p256"]);
    let (code, out, _) = w.run(&["plan", "--detailed-exitcode"]);
    assert_eq!(code, 2, "changes present");
    assert!(out.lines().any(|l| l.starts_with("Plan: ")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("Continuity: ")),
        "the continuity proof follows the summary: {out}"
    );
    let (code, _, _) = w.run(&["plan"]);
    assert_eq!(code, 0, "without --detailed-exitcode, changes exit 0");
    let (code, _, err) = w.run(&["plan", "--detailed-exitcode", "--format", "bogus"]);
    assert_eq!(
        code, 1,
        "a usage error is an error, never 'changes present': {err}"
    );
}

#[test]
fn rolling_steps_chain_control_planes_before_workers() {
    let w = rotated();
    let plan: Plan = serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap();
    let restarts: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| s.template == "restart-kubelet")
        .collect();
    let targets: Vec<&str> = restarts.iter().map(|s| s.target.as_str()).collect();
    assert_eq!(targets, ["cp-1", "cp-2", "cp-3", "w-1", "w-2"]);
    for pair in restarts.windows(2) {
        assert_eq!(
            pair[1].depends_on,
            [pair[0].id.clone()],
            "one node at a time"
        );
    }
    // Parallel writes: every kubelet-trust write waits for the same predecessors.
    let writes: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| s.template == "kubelet-trust")
        .collect();
    assert_eq!(writes.len(), 5);
    assert!(
        writes
            .windows(2)
            .all(|p| p[0].depends_on == p[1].depends_on)
    );
}

#[test]
fn help_is_stable() {
    let w = common::sandbox(1, 0, false);
    insta::assert_snapshot!("help", w.ok(&["--help"]));
    insta::assert_snapshot!("plan_help", w.ok(&["plan", "--help"]));
}
