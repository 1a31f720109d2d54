//! The `Plan` type and its JSON file.
//!
//! # JSON format (`trustform plan -out plan.json` / `--format json`, `format_version` 1)
//! ```json
//! { "format_version": 1, "tool_version": "0.1.0", "cluster": "prod-eu-1",
//!   "snapshot_fingerprint": "sha256:…", "config_hash": "sha256:…",
//!   "authorities": [ { "authority": "kubernetes", "from": {…}, "to": {…} } ],
//!   "steps": [ { "id": "kubernetes-ca/distribute-ca@cp-1", "doc_step": "1", "stage": "pre-rotate",
//!                "target": "cp-1", "action": "write-ca-files", "kind": "write",
//!                "changes": [ { "what": "…", "before": ["…"], "after": ["…"] } ],
//!                "depends_on": [] } ],
//!   "skipped": [ { "id": "kubernetes-ca/restart-workloads", "doc_step": "8.4", "reason": "…" } ],
//!   "summary": { "steps": 90, "writes": 40, "restarts": 45, "waits": 5, "stages": ["pre-rotate", …] } }
//! ```
//! Never key material: CAs appear as names and fingerprints, re-issued leaves as
//! "(known after apply)".

use super::PlanError;
use crate::procedure::{Action, ActionKind, Stage};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Current plan file format.
pub const FORMAT_VERSION: u32 = 1;

/// A reviewable plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The trustform version that made it.
    pub tool_version: String,
    /// Cluster name.
    pub cluster: String,
    /// Fingerprint of the snapshot it was planned on.
    pub snapshot_fingerprint: String,
    /// Hash of trustform.yaml.
    pub config_hash: String,
    /// Each authority that changes.
    pub authorities: Vec<AuthorityChange>,
    /// Steps, in a topological order.
    pub steps: Vec<Step>,
    /// Documented steps with nothing to do, and why.
    pub skipped: Vec<Skipped>,
    /// Counts.
    pub summary: Summary,
}

/// Issuer and trust, as labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetLabels {
    /// The issuer.
    pub issuer: String,
    /// The trust set.
    pub trust: Vec<String>,
}

/// One authority's rotation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthorityChange {
    /// Authority name.
    pub authority: String,
    /// Now.
    pub from: TargetLabels,
    /// Desired.
    pub to: TargetLabels,
}

/// One step on one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// `procedure/template@target`.
    pub id: String,
    /// Procedure name.
    pub procedure: String,
    /// Template id.
    pub template: String,
    /// Documented step number, or null for a step trustform adds.
    pub doc_step: Option<String>,
    /// One line.
    pub title: String,
    /// Stage.
    pub stage: Stage,
    /// Node name, or `cluster`.
    pub target: String,
    /// Action.
    pub action: Action,
    /// Write, restart or wait.
    pub kind: ActionKind,
    /// What changes (for restarts: what it will re-read).
    pub changes: Vec<StepChange>,
    /// Why trustform adds or shapes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// Inherent disruption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<String>,
    /// Step ids that must finish first.
    pub depends_on: Vec<String>,
}

/// One consumer's change inside a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepChange {
    /// `cp-1:/etc/kubernetes/pki/ca.crt (CA bundle)`.
    pub what: String,
    /// Lines before.
    pub before: Vec<String>,
    /// Lines after.
    pub after: Vec<String>,
}

/// A documented step with nothing to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    /// `procedure/template`.
    pub id: String,
    /// Documented number.
    pub doc_step: String,
    /// Why nothing.
    pub reason: String,
}

/// Counts for the last line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// All steps.
    pub steps: usize,
    /// Write steps.
    pub writes: usize,
    /// Restart steps.
    pub restarts: usize,
    /// Wait and verify steps.
    pub waits: usize,
    /// Stages that have steps, in order.
    pub stages: Vec<Stage>,
}

impl Summary {
    /// Count the steps.
    pub fn of(steps: &[Step]) -> Self {
        let count = |k| steps.iter().filter(|s| s.kind == k).count();
        let mut stages: Vec<Stage> = steps.iter().map(|s| s.stage).collect();
        stages.sort();
        stages.dedup();
        Self {
            steps: steps.len(),
            writes: count(ActionKind::Write),
            restarts: count(ActionKind::Restart),
            waits: count(ActionKind::Wait),
            stages,
        }
    }
}

impl Plan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The dependency graph: an arc from each dependency to its dependent.
    /// Fails on an unknown id or a cycle.
    pub fn graph(&self) -> Result<DiGraph<usize, ()>, PlanError> {
        let mut g = DiGraph::with_capacity(self.steps.len(), self.steps.len() * 2);
        let mut index: HashMap<&str, NodeIndex> = HashMap::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            index.insert(s.id.as_str(), g.add_node(i));
        }
        for (i, s) in self.steps.iter().enumerate() {
            for d in &s.depends_on {
                let Some(&from) = index.get(d.as_str()) else {
                    return Err(PlanError::Cycle(format!(
                        "{} (depends on unknown step {d})",
                        s.id
                    )));
                };
                g.add_edge(from, NodeIndex::new(i), ());
            }
        }
        petgraph::algo::toposort(&g, None)
            .map_err(|c| PlanError::Cycle(self.steps[g[c.node_id()]].id.clone()))?;
        Ok(g)
    }
}
