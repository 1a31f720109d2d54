//! `status`: where an apply stands, read from its journal, saved plan and the lock.

use super::journal::{self, Progress};
use super::lock::{self, LockInfo};
use crate::plan::Plan;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The state of the latest (or a named) apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Status {
    /// Plan id.
    pub plan_id: String,
    /// `running`, `done`, `failed`, `paused` (at a manual step), `interrupted` or
    /// `rolled-back`.
    pub state: String,
    /// `pre-rotate`, `rotate`, `post-rotate`, or `done`.
    pub stage: String,
    /// Steps done.
    pub done: usize,
    /// Steps in the plan.
    pub total: usize,
    /// Steps running now (or interrupted by a crash).
    pub running: Vec<String>,
    /// Failures: `step: error`, then gate failures.
    pub errors: Vec<String>,
    /// Steps skipped because of a failure upstream.
    pub skipped: usize,
    /// Warnings of done steps (what is left to the operator).
    pub warnings: Vec<String>,
    /// Manual steps the apply paused at, waiting for `trustform apply --confirm`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<String>,
    /// Who holds the lock, if anyone.
    pub lock: Option<LockInfo>,
}

/// Version of `status --format json`'s output.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON Schema of `status --format json`: an apply's [`Status`], or
/// `{"state": "none"}` when there is no apply.
pub fn schema() -> String {
    let mut status = serde_json::to_value(schemars::schema_for!(Status)).expect("schema");
    let defs = status
        .as_object_mut()
        .and_then(|o| {
            o.remove("$schema");
            o.remove("$defs")
        })
        .unwrap_or_default();
    let none = serde_json::json!({
        "type": "object",
        "properties": { "state": { "const": "none" } },
        "required": ["state"],
        "additionalProperties": false
    });
    let both = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Status",
        "oneOf": [status, none],
        "$defs": defs,
    });
    let schema = schemars::Schema::try_from(both).expect("an object");
    crate::schema::versioned(schema, "status", FORMAT_VERSION)
}

/// The plan id of the apply `status` should show: the lock holder's, else the newest
/// journal's.
pub fn latest(state: &Path) -> Option<String> {
    if let Some(l) = lock::read(&lock::path(state)) {
        return Some(l.plan_id);
    }
    journal::list(state).into_iter().max().map(|(_, id)| id)
}

/// Read a plan saved beside its journal.
pub fn saved_plan(state: &Path, plan_id: &str) -> std::io::Result<Plan> {
    let bytes = crate::input::read(
        &journal::plan_path(state, plan_id),
        crate::input::Kind::Plan,
    )
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

/// The status of one apply.
pub fn of(state: &Path, plan_id: &str) -> std::io::Result<Status> {
    let plan = saved_plan(state, plan_id)?;
    let events = journal::read(&journal::path(state, plan_id))?;
    let p = Progress::of(&events);
    let holder = lock::read(&lock::path(state)).filter(|l| l.plan_id == plan_id);
    let alive = holder.as_ref().is_some_and(|l| !l.is_dead());
    let state_name = if p.rolled_back {
        "rolled-back"
    } else {
        match p.finished {
            Some(true) => "done",
            Some(false) if p.failed.is_empty() && !p.paused.is_empty() => "paused",
            Some(false) => "failed",
            None if alive => "running",
            None => "interrupted",
        }
    };
    let stage = if p.rolled_back {
        // Back where the plan started.
        plan.steps
            .first()
            .map_or("done".into(), |s| s.stage.name().to_string())
    } else if p.finished == Some(true) {
        "done".to_string()
    } else {
        plan.steps
            .iter()
            .find(|s| !p.done.contains(&s.id))
            .map_or("done".into(), |s| s.stage.name().to_string())
    };
    // Journal text is shown as read, but redacted: a journal written by an older
    // trustform may quote a broken kubeconfig, key included.
    let shown = |t: &str| crate::redact::text(t).into_owned();
    let mut errors: Vec<String> = p
        .failed
        .iter()
        .map(|(s, e)| shown(&format!("{s}: {e}")))
        .collect();
    errors.extend(p.gate_failures.iter().map(|g| shown(g)));
    Ok(Status {
        plan_id: plan_id.to_string(),
        state: state_name.into(),
        stage,
        done: p.done.len(),
        total: plan.steps.len(),
        running: p.open.iter().map(|r| shown(r)).collect(),
        errors,
        skipped: p.skipped.len(),
        warnings: p.warnings.iter().map(|w| shown(w)).collect(),
        paused: p.paused.clone(),
        lock: lock::read(&lock::path(state)),
    })
}

impl Status {
    /// Text lines for a terminal.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "Apply {}: {} — stage {}, {}/{} steps done{}.",
            self.plan_id,
            self.state,
            self.stage,
            self.done,
            self.total,
            if self.skipped > 0 {
                format!(", {} skipped", self.skipped)
            } else {
                String::new()
            }
        )];
        let verb = if self.state == "running" {
            "running"
        } else {
            "interrupted"
        };
        for r in &self.running {
            out.push(format!("  {verb}: {r}"));
        }
        for e in &self.errors {
            out.push(format!("  error: {e}"));
        }
        for s in &self.paused {
            out.push(format!(
                "  paused at the manual step {s}: do what `trustform apply` printed, then `trustform apply --confirm {s}`"
            ));
        }
        for w in &self.warnings {
            out.push(format!("  warning: {w}"));
        }
        if let Some(l) = &self.lock {
            let gone = if l.is_dead() {
                "; its process is gone: the next apply takes it over"
            } else {
                ""
            };
            out.push(format!(
                "  lock {} held by {} since {} ({}, pid {}{gone})",
                l.id, l.who, l.when, l.operation, l.pid
            ));
        }
        out
    }
}
