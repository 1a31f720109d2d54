//! Properties of every plan, for generated clusters and desired states (proptest): a
//! sandbox of 1–3 control planes and 0–3 workers, each authority left alone, moved one or
//! more stages, or sent to the end. Whatever is asked, the plan `trustform plan` saves:
//!
//! - is a DAG: every dependency names a step listed before it, and no step reaches itself;
//! - keeps the documented order: within a procedure and a stage, a step with a lower
//!   documented number is an ancestor of every step with a higher one (it cannot run
//!   after it, whatever the walk does in parallel);
//! - names every documented step of `plans/` for the stages it covers, as a step or as
//!   skipped (with why);
//! - carries rehearse's verdict: continuity proven (no edge breaks), or the breaks named.
//!
//! The expectations are derived here, from the saved JSON and the procedure files' text,
//! not with the product's own functions.

use crate::common;

use proptest::prelude::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What to ask of one authority.
#[derive(Clone, Debug)]
enum Ask {
    Leave,
    /// `rotate` this many times (each goes to the next stage).
    Stages(usize),
    ToEnd,
}

fn ask() -> impl Strategy<Value = Ask> {
    prop_oneof![
        Just(Ask::Leave),
        (1usize..=3).prop_map(Ask::Stages),
        Just(Ask::ToEnd),
    ]
}

/// `"8.1"` → `[8, 1]`, so that 11 comes after 8.1.
fn number(doc: &str) -> Vec<u32> {
    doc.split('.').map(|p| p.parse().unwrap()).collect()
}

/// The documented steps of `plans/<procedure>.yaml`: (number, stage), read from its text.
fn documented(procedure: &str) -> Vec<(String, String)> {
    let path = format!("{}/plans/{procedure}.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = vec![];
    for template in text.split("\n  - id:").skip(1) {
        let field = |name: &str| {
            template.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        if let (Some(doc), Some(stage)) = (field("doc"), field("stage")) {
            out.push((doc, stage));
        }
    }
    assert!(!out.is_empty(), "{path} lists no documented step");
    out
}

fn check(plan: &Value) -> Result<(), TestCaseError> {
    let steps = plan["steps"].as_array().unwrap();
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s["id"].as_str().unwrap(), i))
        .collect();
    prop_assert_eq!(index.len(), steps.len(), "step ids are unique");
    // A DAG, listed in a topological order.
    let deps: Vec<Vec<usize>> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s["depends_on"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let d = d.as_str().unwrap();
                    let j = *index.get(d).unwrap_or_else(|| panic!("{d} is not a step"));
                    assert!(j < i, "{} depends on {d}, listed after it", s["id"]);
                    j
                })
                .collect()
        })
        .collect();
    // Ancestors, in list order (every dependency is earlier, so one pass suffices).
    let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); steps.len()];
    for i in 0..steps.len() {
        let mut a = BTreeSet::new();
        for &d in &deps[i] {
            a.insert(d);
            a.extend(ancestors[d].iter().copied());
        }
        prop_assert!(!a.contains(&i), "{} reaches itself", steps[i]["id"]);
        ancestors[i] = a;
    }
    // The documented order.
    let mut by: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        if let Some(doc) = s["doc_step"].as_str() {
            let key = (
                s["procedure"].as_str().unwrap().to_string(),
                s["stage"].as_str().unwrap().to_string(),
            );
            by.entry(key).or_default().push(i);
            let _ = doc;
        }
    }
    for ((procedure, stage), idx) in &by {
        for &a in idx {
            for &b in idx {
                let (na, nb) = (
                    number(steps[a]["doc_step"].as_str().unwrap()),
                    number(steps[b]["doc_step"].as_str().unwrap()),
                );
                prop_assert!(
                    na >= nb || ancestors[b].contains(&a),
                    "{procedure} {stage}: documented step {} ({}) can run after {} ({})",
                    steps[a]["doc_step"],
                    steps[a]["id"],
                    steps[b]["doc_step"],
                    steps[b]["id"]
                );
            }
        }
    }
    // Every documented step of the stages covered: a step, or skipped.
    let mut named: BTreeSet<(String, String)> = BTreeSet::new();
    let mut covered: BTreeSet<(String, String)> = BTreeSet::new();
    for s in steps {
        let procedure = s["procedure"].as_str().unwrap().to_string();
        covered.insert((procedure.clone(), s["stage"].as_str().unwrap().to_string()));
        if let Some(doc) = s["doc_step"].as_str() {
            named.insert((procedure, doc.to_string()));
        }
    }
    for s in plan["skipped"].as_array().into_iter().flatten() {
        let id = s["id"].as_str().unwrap();
        let procedure = id.split('/').next().unwrap().to_string();
        prop_assert!(
            !s["reason"].as_str().unwrap_or("").is_empty(),
            "{id} is skipped without a reason"
        );
        if let Some(doc) = s["doc_step"].as_str() {
            named.insert((procedure, doc.to_string()));
        }
    }
    let procedures: BTreeSet<&String> = covered.iter().map(|(p, _)| p).collect();
    for procedure in procedures {
        for (doc, stage) in documented(procedure) {
            if covered.contains(&(procedure.clone(), stage.clone())) {
                prop_assert!(
                    named.contains(&(procedure.clone(), doc.clone())),
                    "{procedure}: documented step {doc} ({stage}) is neither planned nor skipped"
                );
            }
        }
    }
    // Rehearse's verdict is there: every edge stays live.
    if !steps.is_empty() {
        let c = &plan["continuity"];
        prop_assert!(c["edges"].as_u64().unwrap() > 0, "no edge was rehearsed");
        prop_assert_eq!(
            c["breaks"].as_array().map_or(0, Vec::len),
            0,
            "rehearse names breaks: {}",
            c["breaks"]
        );
    }
    Ok(())
}

/// The plan `trustform plan` saves for a sandbox of `control_planes` + `workers` where
/// each authority is asked what `asks` says.
fn planned(control_planes: usize, workers: usize, asks: &[(&str, &Ask)]) -> Value {
    let w = common::sandbox(control_planes, workers, false);
    w.ok(&["init", "--sandbox", "cluster"]);
    for (authority, a) in asks {
        let times = match a {
            Ask::Leave => 0,
            Ask::Stages(n) => *n,
            Ask::ToEnd => 1,
        };
        for _ in 0..times {
            let mut args = vec!["rotate", authority, "--algorithm", "ecdsa-p256"];
            if matches!(a, Ask::ToEnd) {
                args.push("--to-end");
            }
            w.ok(&args);
        }
    }
    w.ok(&["plan", "-out", "plan.json"]);
    serde_json::from_slice(&std::fs::read(w.path().join("plan.json")).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn every_plan_is_a_dag_in_documented_order_with_continuity(
        control_planes in 1usize..=3,
        workers in 0usize..=3,
        kubernetes in ask(),
        front_proxy in ask(),
    ) {
        let plan = planned(
            control_planes,
            workers,
            &[("kubernetes", &kubernetes), ("front-proxy", &front_proxy)],
        );
        let asked = !matches!((&kubernetes, &front_proxy), (Ask::Leave, Ask::Leave));
        prop_assert_eq!(
            plan["steps"].as_array().unwrap().is_empty(),
            !asked,
            "a plan has steps exactly when a rotation was asked"
        );
        check(&plan)?;
    }
}

/// The checks above catch what they claim to: a real plan passes, and each tampered copy
/// (two documented steps' numbers swapped, a documented step dropped from `skipped`, a
/// dependency on a later step) fails.
#[test]
fn the_checks_fail_on_a_plan_that_breaks_them() {
    let plan = planned(2, 1, &[("kubernetes", &Ask::ToEnd)]);
    assert!(check(&plan).is_ok());
    let fails = |p: &Value| {
        let p = p.clone();
        !matches!(std::panic::catch_unwind(move || check(&p)), Ok(Ok(())))
    };
    // Two documented steps of one stage, the first an ancestor of the second: swapped.
    let steps = plan["steps"].as_array().unwrap();
    let (a, b) = (0..steps.len())
        .flat_map(|i| (0..steps.len()).map(move |j| (i, j)))
        .find(|&(i, j)| {
            i < j
                && steps[i]["stage"] == steps[j]["stage"]
                && steps[i]["procedure"] == steps[j]["procedure"]
                && matches!(
                    (steps[i]["doc_step"].as_str(), steps[j]["doc_step"].as_str()),
                    (Some(x), Some(y)) if number(x) < number(y)
                )
        })
        .expect("two documented steps in one stage");
    let mut swapped = plan.clone();
    let (da, db) = (steps[a]["doc_step"].clone(), steps[b]["doc_step"].clone());
    swapped["steps"][a]["doc_step"] = db;
    swapped["steps"][b]["doc_step"] = da;
    assert!(fails(&swapped), "swapped documented numbers pass");
    // A documented step neither planned nor skipped.
    let mut dropped = plan.clone();
    let skipped = dropped["skipped"].as_array_mut().unwrap();
    let at = skipped
        .iter()
        .position(|s| s["doc_step"].is_string())
        .expect("a skipped documented step");
    skipped.remove(at);
    assert!(fails(&dropped), "a documented step dropped passes");
    // A dependency on a later step (a cycle, once followed).
    let mut cycle = plan.clone();
    let last = cycle["steps"].as_array().unwrap().last().unwrap()["id"].clone();
    cycle["steps"][0]["depends_on"]
        .as_array_mut()
        .unwrap()
        .push(last);
    assert!(fails(&cycle), "a cycle passes");
}
