//! Manual steps in `apply`: which are pending, and `--confirm STEP-ID` checked against
//! the plan and the journal before anything is recorded.
//!
//! A manual step is *pending* when it is neither done nor confirmed and every step it
//! depends on is done (or is a manual step confirmed before it): apply has reached it.
//! Only a pending step can be confirmed, so a confirmation always follows the writes
//! the restart must pick up. `--confirm` may be repeated: each id is checked in order,
//! the earlier ones counting as confirmed.

use crate::plan::{Plan, Step};
use miette::Diagnostic;
use std::collections::HashSet;
use thiserror::Error;

/// A `--confirm` that cannot be recorded. Nothing is written when one is refused.
#[derive(Debug, Error, Diagnostic)]
pub enum ConfirmError {
    /// The plan has no step with this id.
    #[error("cannot confirm {id}: plan {plan} has no such step")]
    #[diagnostic(code(trustform::apply::confirm::unknown_step), help("{help}"))]
    UnknownStep {
        /// The id given.
        id: String,
        /// The plan id.
        plan: String,
        /// What to confirm instead.
        help: String,
    },
    /// The step is one trustform carries out itself.
    #[error("cannot confirm {id}: it is not a manual step (trustform carries it out itself)")]
    #[diagnostic(code(trustform::apply::confirm::not_manual), help("{help}"))]
    NotManual {
        /// The id given.
        id: String,
        /// What to confirm instead.
        help: String,
    },
    /// The step is already done.
    #[error("cannot confirm {id}: it is already done")]
    #[diagnostic(code(trustform::apply::confirm::done), help("{help}"))]
    Done {
        /// The id given.
        id: String,
        /// What to confirm instead.
        help: String,
    },
    /// Apply has not reached the step yet.
    #[error(
        "cannot confirm {id}: it is not the next pending manual step (apply has not reached it: it waits for {waits})"
    )]
    #[diagnostic(code(trustform::apply::confirm::not_next), help("{help}"))]
    NotNext {
        /// The id given.
        id: String,
        /// Steps it still waits for.
        waits: String,
        /// What to confirm instead.
        help: String,
    },
    /// No apply is paused: a plan made now has reached no manual step.
    #[error("cannot confirm {id}: no apply is paused at a manual step")]
    #[diagnostic(
        code(trustform::apply::confirm::nothing_paused),
        help(
            "run `trustform apply` without --confirm: it stops at the first manual step and prints what to do and the command that confirms it"
        )
    )]
    NothingPaused {
        /// The id given.
        id: String,
    },
}

/// The manual steps apply has reached and not run: not done, not confirmed, and every
/// dependency done or a confirmed manual step. In the plan's order.
pub fn pending<'p>(
    plan: &'p Plan,
    done: &HashSet<String>,
    confirmed: &HashSet<String>,
) -> Vec<&'p Step> {
    plan.steps
        .iter()
        .filter(|s| s.manual().is_some() && !done.contains(&s.id) && !confirmed.contains(&s.id))
        .filter(|s| waits_for(s, done, confirmed).is_empty())
        .collect()
}

/// The dependencies of `s` that are neither done nor confirmed.
fn waits_for<'s>(s: &'s Step, done: &HashSet<String>, confirmed: &HashSet<String>) -> Vec<&'s str> {
    s.depends_on
        .iter()
        .filter(|d| !done.contains(*d) && !confirmed.contains(*d))
        .map(String::as_str)
        .collect()
}

/// Check `ids` (in order) against the plan, the steps done and the manual steps
/// confirmed before; `Ok` holds the ids to record (an id confirmed before, or twice,
/// is recorded once).
pub fn check(
    plan: &Plan,
    done: &HashSet<String>,
    confirmed_before: &HashSet<String>,
    ids: &[String],
) -> Result<Vec<String>, ConfirmError> {
    let mut confirmed = confirmed_before.clone();
    let mut out = vec![];
    for id in ids {
        let help = || next_help(plan, done, &confirmed);
        let Some(step) = plan.steps.iter().find(|s| s.id == *id) else {
            return Err(ConfirmError::UnknownStep {
                id: id.clone(),
                plan: plan.id(),
                help: help(),
            });
        };
        if step.manual().is_none() {
            return Err(ConfirmError::NotManual {
                id: id.clone(),
                help: help(),
            });
        }
        if done.contains(id) {
            return Err(ConfirmError::Done {
                id: id.clone(),
                help: help(),
            });
        }
        if confirmed.contains(id) {
            continue;
        }
        let waits = waits_for(step, done, &confirmed);
        if !waits.is_empty() {
            let more = waits.len().saturating_sub(3);
            let mut shown = waits[..waits.len().min(3)].join(", ");
            if more > 0 {
                shown.push_str(&format!(" and {more} more"));
            }
            return Err(ConfirmError::NotNext {
                id: id.clone(),
                waits: shown,
                help: help(),
            });
        }
        confirmed.insert(id.clone());
        out.push(id.clone());
    }
    Ok(out)
}

/// The help line of a refused confirmation: the manual steps pending now.
fn next_help(plan: &Plan, done: &HashSet<String>, confirmed: &HashSet<String>) -> String {
    let next: Vec<&str> = pending(plan, done, confirmed)
        .into_iter()
        .map(|s| s.id.as_str())
        .collect();
    match next.as_slice() {
        [] => "no manual step is pending: run `trustform apply`; it stops at the next manual step and names it".into(),
        [one] => format!(
            "the next manual step is {one}: do what `trustform apply` printed for it, then `trustform apply --confirm {one}`"
        ),
        many => format!(
            "the manual steps pending now are {}: do what `trustform apply` printed for each, then confirm it with `trustform apply --confirm STEP-ID`",
            many.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Op, Summary};
    use crate::procedure::{Action, ActionKind, Stage};
    use std::collections::BTreeMap;

    fn step(id: &str, manual: bool, deps: &[&str]) -> Step {
        let (node, component) = ("w-1".to_string(), "kubelet".to_string());
        Step {
            id: id.into(),
            procedure: "kubernetes-ca".into(),
            template: "t".into(),
            doc_step: None,
            title: String::new(),
            stage: Stage::PreRotate,
            target: node.clone(),
            action: Action::RestartKubelet,
            kind: ActionKind::Restart,
            changes: vec![],
            why: None,
            disruption: None,
            ops: vec![if manual {
                Op::ManualRestart {
                    instructions: crate::plan::manual::restart_instructions(
                        &node, &component, None,
                    ),
                    node,
                    component,
                }
            } else {
                Op::Restart { node, component }
            }],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    /// write → m1 (manual) → auto → m2 (manual) → m3 (manual)
    fn plan() -> Plan {
        let steps = vec![
            step("write", false, &[]),
            step("m1", true, &["write"]),
            step("auto", false, &["m1"]),
            step("m2", true, &["auto"]),
            step("m3", true, &["m2"]),
        ];
        Plan {
            format_version: 1,
            tool_version: "0".into(),
            cluster: "c".into(),
            checksum: "sha256:0123456789abcdef".into(),
            snapshot_fingerprint: String::new(),
            config_hash: String::new(),
            observed: BTreeMap::new(),
            authorities: vec![],
            summary: Summary::of(&steps),
            steps,
            skipped: vec![],
            continuity: None,
        }
    }

    fn set(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn only_the_step_apply_reached_can_be_confirmed() {
        let p = plan();
        assert_eq!(p.summary.manual, 3);
        let done = set(&["write"]);
        let pend: Vec<&str> = pending(&p, &done, &set(&[]))
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(pend, ["m1"]);
        assert_eq!(check(&p, &done, &set(&[]), &ids(&["m1"])).unwrap(), ["m1"]);
        // m2 waits for an automatic step apply has not run.
        let e = check(&p, &done, &set(&[]), &ids(&["m1", "m2"])).unwrap_err();
        assert!(
            matches!(&e, ConfirmError::NotNext { id, waits, .. } if id == "m2" && waits == "auto"),
            "{e:?}"
        );
        // Once `auto` is done, m2 and then m3 (it waits only on m2) in one go.
        let done = set(&["write", "m1", "auto"]);
        assert_eq!(
            check(&p, &done, &set(&[]), &ids(&["m2", "m3"])).unwrap(),
            ["m2", "m3"]
        );
        // Out of order: m3 first is refused, naming m2 as the next one.
        let e = check(&p, &done, &set(&[]), &ids(&["m3"])).unwrap_err();
        assert!(e.to_string().contains("m3"), "{e}");
        let help = e.help().unwrap().to_string();
        assert!(help.contains("the next manual step is m2"), "{help}");
        // Confirmed before: recorded once.
        assert!(
            check(&p, &done, &set(&["m2"]), &ids(&["m2"]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unknown_automatic_and_done_steps_are_refused_by_name() {
        let p = plan();
        let done = set(&["write", "m1"]);
        let e = check(&p, &done, &set(&[]), &ids(&["nope"])).unwrap_err();
        assert!(matches!(e, ConfirmError::UnknownStep { .. }));
        assert!(e.to_string().contains("nope"));
        let e = check(&p, &done, &set(&[]), &ids(&["auto"])).unwrap_err();
        assert!(matches!(e, ConfirmError::NotManual { .. }));
        let e = check(&p, &done, &set(&[]), &ids(&["m1"])).unwrap_err();
        assert!(matches!(e, ConfirmError::Done { .. }));
        assert!(
            e.help()
                .unwrap()
                .to_string()
                .contains("no manual step is pending")
        );
    }
}
