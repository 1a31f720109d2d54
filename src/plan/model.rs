//! The `Plan` type and its JSON file.
//!
//! # JSON format (`trustform plan -out plan.json` / `--format json`, `format_version` 1)
//! ```json
//! { "format_version": 1, "tool_version": "0.1.0", "cluster": "prod-eu-1",
//!   "checksum": "sha256:…", "snapshot_fingerprint": "sha256:…", "config_hash": "sha256:…",
//!   "observed": { "cp-1:/etc/kubernetes/pki/ca.crt": "3f9a…", … },
//!   "authorities": [ { "authority": "kubernetes", "from": {…}, "to": {…} } ],
//!   "steps": [ { "id": "kubernetes-ca/distribute-ca@cp-1", "doc_step": "1", "stage": "pre-rotate",
//!                "target": "cp-1", "action": "write-ca-files", "kind": "write",
//!                "changes": [ { "what": "…", "before": ["…"], "after": ["…"] } ],
//!                "ops": [ { "op": "set", "node": "cp-1", "path": "…", "field": "bundle",
//!                           "want": { "members": ["sha256:…", "sha256:…"] } } ],
//!                "depends_on": [] } ],
//!   "skipped": [ { "id": "kubernetes-ca/restart-workloads", "doc_step": "8.4", "reason": "…" } ],
//!   "summary": { "steps": 90, "writes": 40, "restarts": 45, "waits": 5, "stages": ["pre-rotate", …] },
//!   // "manual": 3 in the summary when some restarts are manual steps; such a step's op:
//!   // { "op": "manual-restart", "node": "w-1", "component": "kubelet",
//!   //   "instructions": ["On w-1, restart the kubelet …", "  systemctl restart kubelet", "Check …"] }
//!   "continuity": { "edges": 54, "unmanaged": 0, "steps": 90, "broken_before": [], "breaks": [],
//!                   "warnings": [], "gaps": [ { "step": "…", "at": "step 5 apiserver-client-ca on cp-1",
//!                   "what": "the only API server restarts: …" } ] } }
//! ```
//! Never key material: CAs appear as names and fingerprints, re-issued leaves as
//! "(known after apply)". `changes` are for people, `ops` for `apply`. `checksum` is the
//! SHA-256 of the file with an empty checksum: a damaged or carelessly edited plan is
//! refused, and its first 12 hex digits are the plan id. It is no signature: `apply` and
//! `rehearse` also accept only the steps and operations the procedures make
//! ([`super::validate`]).

use super::PlanError;
use crate::config::Authority;
use crate::diff::{Field, State};
use crate::pki::Fingerprint;
use crate::procedure::{Action, ActionKind, Stage};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::collections::HashMap;

/// Current plan file format.
pub const FORMAT_VERSION: u32 = 1;

/// The JSON Schema of a plan file (`plan -out`, `plan --format json`, `show --format
/// json`), of format [`FORMAT_VERSION`].
pub fn schema() -> String {
    crate::schema::versioned(schemars::schema_for!(Plan), "plan", FORMAT_VERSION)
}

/// A reviewable plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Plan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The trustform version that made it.
    pub tool_version: String,
    /// Cluster name.
    pub cluster: String,
    /// SHA-256 of this file's JSON with `checksum` empty.
    #[serde(default)]
    pub checksum: String,
    /// Fingerprint of the snapshot it was planned on.
    pub snapshot_fingerprint: String,
    /// Hash of trustform.yaml.
    pub config_hash: String,
    /// `node:path` (or `node:components`, `node:kubelet`) → digest of what was observed
    /// there, so a stale plan can name what changed.
    #[serde(default)]
    pub observed: BTreeMap<String, String>,
    /// Each authority that changes.
    pub authorities: Vec<AuthorityChange>,
    /// Steps, in a topological order.
    pub steps: Vec<Step>,
    /// Documented steps with nothing to do, and why.
    pub skipped: Vec<Skipped>,
    /// Counts.
    pub summary: Summary,
    /// What rehearse proved: every edge stays live through every step (absent: no
    /// steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuity: Option<super::rehearse::Rehearsal>,
}

/// Issuer and trust, as labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TargetLabels {
    /// The issuer.
    pub issuer: String,
    /// The trust set.
    pub trust: Vec<String>,
}

/// One authority's rotation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AuthorityChange {
    /// Authority name.
    pub authority: String,
    /// Now.
    pub from: TargetLabels,
    /// Desired.
    pub to: TargetLabels,
}

/// One step on one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// What `apply` does, exactly.
    #[serde(default)]
    pub ops: Vec<Op>,
    /// Step ids that must finish first.
    pub depends_on: Vec<String>,
}

/// One machine-readable operation of a step. Each is idempotent: `apply` first reads
/// the consumer and does nothing if it already holds `want`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Bring one consumer to a state.
    Set {
        /// Node, or none for a cluster object.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<String>,
        /// Authority whose trust it holds.
        authority: Authority,
        /// File path on the node (empty for a cluster object).
        path: String,
        /// What part.
        field: Field,
        /// The state to reach.
        want: State,
        /// The rotating CAs it may hold, which `want` replaces (caBundles: every other
        /// CA in the bundle stays).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        replaces: Vec<crate::pki::Fingerprint>,
    },
    /// Restart a component so it re-reads its files.
    Restart {
        /// Node.
        node: String,
        /// A static pod name, or `kubelet`.
        component: String,
    },
    /// A restart trustform cannot carry out: its node is reached through a directory,
    /// where no command runs. `apply` pauses at its step, prints `instructions`, and goes
    /// on once the operator confirms it (`trustform apply --confirm STEP-ID`). Rehearsed
    /// as the restart it stands for; the next gate checks what it left.
    ManualRestart {
        /// Node.
        node: String,
        /// A static pod name, or `kubelet`.
        component: String,
        /// What the operator does, and how to check it came back; one line each
        /// ([`super::manual::restart_instructions`]).
        instructions: Vec<String>,
    },
    /// A gate: every trust edge verifies against this stage's target.
    Verify {
        /// Authority.
        authority: Authority,
        /// The issuer at this stage.
        issuer: Fingerprint,
        /// The trust set at this stage.
        trust: Vec<Fingerprint>,
        /// CAs of the authority no longer trusted at this stage.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        retired: Vec<Fingerprint>,
    },
}

/// One consumer's change inside a step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StepChange {
    /// `cp-1:/etc/kubernetes/pki/ca.crt (CA bundle)`.
    pub what: String,
    /// Lines before.
    pub before: Vec<String>,
    /// Lines after.
    pub after: Vec<String>,
}

/// A documented step with nothing to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Skipped {
    /// `procedure/template`.
    pub id: String,
    /// Documented number.
    pub doc_step: String,
    /// Why nothing.
    pub reason: String,
}

/// Counts for the last line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// All steps.
    pub steps: usize,
    /// Write steps.
    pub writes: usize,
    /// Restart steps.
    pub restarts: usize,
    /// Wait and verify steps.
    pub waits: usize,
    /// Manual steps (restarts the operator carries out; counted among `restarts`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub manual: usize,
    /// Stages that have steps, in order.
    pub stages: Vec<Stage>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
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
            manual: steps.iter().filter(|s| s.manual().is_some()).count(),
            stages,
        }
    }
}

impl Plan {
    /// Compute [`Plan::checksum`] over the plan's JSON with the field empty.
    ///
    /// A plain SHA-256, deliberately without a key (no HMAC): it detects damage
    /// (truncation, a careless edit), not a determined editor, who can recompute it. Plans
    /// are made on one machine (a CI job on the pull request) and applied on another, so a
    /// key kept in `.trustform/` would break the reviewed-plan workflow, and whoever can
    /// write the plan on the applying machine can write `.trustform/` and trustform.yaml
    /// too. Safety rests on what `apply` checks itself: [`super::validate`] (only the
    /// steps, paths and components the procedures make, confined to the node's root), the
    /// staleness check against a fresh snapshot, and the rehearsal.
    pub fn compute_checksum(&self) -> String {
        let mut blank = self.clone();
        blank.checksum = String::new();
        let body = serde_json::to_vec(&blank).expect("plan serialises");
        format!("sha256:{}", hex::encode(Sha256::digest(&body)))
    }

    /// Fill in the checksum.
    pub fn seal(mut self) -> Self {
        self.checksum = self.compute_checksum();
        self
    }

    /// The plan id: the first 12 hex digits of the checksum.
    pub fn id(&self) -> String {
        self.checksum
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// How many leaves it renews (re-issues from their own CA before they expire).
    pub fn renewals(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| &s.ops)
            .filter(|op| {
                matches!(
                    op,
                    Op::Set {
                        want: crate::diff::State::Renewed { .. },
                        ..
                    }
                )
            })
            .count()
    }

    /// The line that says so: `Renewal: 4 leaves end inside their window: …`.
    pub fn renewal_line(&self) -> Option<String> {
        match self.renewals() {
            0 => None,
            n => Some(format!(
                "Renewal: {n} lea{} inside {} renewal window (renewBefore), each re-issued from the CA that issued it (plans/renew.yaml)",
                if n == 1 { "f ends" } else { "ves end" },
                if n == 1 { "its" } else { "their" }
            )),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A step `id` of `action` in `stage`, waiting for `deps`.
    fn step(id: &str, stage: Stage, action: Action, ops: Vec<Op>, deps: &[&str]) -> Step {
        Step {
            id: id.into(),
            procedure: "kubernetes-ca".into(),
            template: id.split('@').next().unwrap_or(id).into(),
            doc_step: None,
            title: String::new(),
            stage,
            target: "cp-1".into(),
            action,
            kind: action.kind(),
            changes: vec![],
            why: None,
            disruption: None,
            ops,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        }
    }

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            format_version: FORMAT_VERSION,
            tool_version: "0".into(),
            cluster: "c".into(),
            checksum: String::new(),
            snapshot_fingerprint: "sha256:s".into(),
            config_hash: "sha256:c".into(),
            observed: BTreeMap::new(),
            authorities: vec![],
            summary: Summary::of(&steps),
            steps,
            skipped: vec![],
            continuity: None,
        }
    }

    fn chain() -> Plan {
        plan(vec![
            step("a", Stage::PreRotate, Action::WriteCaFiles, vec![], &[]),
            step(
                "b",
                Stage::PreRotate,
                Action::RestartStaticPod,
                vec![],
                &["a"],
            ),
            step(
                "c",
                Stage::PreRotate,
                Action::VerifyTrust,
                vec![],
                &["a", "b"],
            ),
        ])
    }

    #[test]
    fn the_summary_counts_each_kind_and_lists_stages_in_stage_order() {
        let manual = Op::ManualRestart {
            node: "w-1".into(),
            component: "kubelet".into(),
            instructions: vec!["restart it".into()],
        };
        let steps = vec![
            step("p", Stage::PostRotate, Action::WriteCaFiles, vec![], &[]),
            step("w", Stage::PreRotate, Action::WriteKubeconfigs, vec![], &[]),
            step("r", Stage::PreRotate, Action::RestartStaticPod, vec![], &[]),
            step(
                "m",
                Stage::PostRotate,
                Action::RestartKubelet,
                vec![manual],
                &[],
            ),
            step("v", Stage::PostRotate, Action::VerifyTrust, vec![], &[]),
            step("k", Stage::PostRotate, Action::WaitKubeRootCa, vec![], &[]),
            step("x", Stage::PreRotate, Action::RestartWorkloads, vec![], &[]),
        ];
        let s = Summary::of(&steps);
        assert_eq!(
            (s.steps, s.writes, s.restarts, s.waits, s.manual),
            (7, 2, 3, 2, 1)
        );
        assert_eq!(s.stages, [Stage::PreRotate, Stage::PostRotate]);
    }

    #[test]
    fn an_empty_summary_counts_nothing() {
        let s = Summary::of(&[]);
        assert_eq!(
            (s.steps, s.writes, s.restarts, s.waits, s.manual),
            (0, 0, 0, 0, 0)
        );
        assert!(s.stages.is_empty());
    }

    #[test]
    fn a_sealed_plan_carries_the_checksum_of_itself_with_the_field_blank() {
        let p = chain().seal();
        assert!(p.checksum.starts_with("sha256:") && p.checksum.len() == 7 + 64);
        assert_eq!(p.compute_checksum(), p.checksum);
        let mut blank = p.clone();
        blank.checksum = String::new();
        let body = serde_json::to_vec(&blank).unwrap();
        assert_eq!(
            p.checksum,
            format!("sha256:{}", hex::encode(Sha256::digest(&body)))
        );
    }

    #[test]
    fn any_edit_changes_the_checksum() {
        let p = chain().seal();
        let mut edited = p.clone();
        edited.steps[1].depends_on.clear();
        assert_ne!(edited.compute_checksum(), p.checksum);
        let mut renamed = p.clone();
        renamed.cluster = "other".into();
        assert_ne!(renamed.compute_checksum(), p.checksum);
    }

    #[test]
    fn the_plan_id_is_the_first_twelve_hex_digits_of_the_checksum() {
        let mut p = chain();
        p.checksum = format!("sha256:0123456789ab{}", "f".repeat(52));
        assert_eq!(p.id(), "0123456789ab");
    }

    #[test]
    fn a_plan_survives_its_json() {
        let p = chain().seal();
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.compute_checksum(), p.checksum);
    }

    #[test]
    fn the_graph_has_one_arc_per_dependency_from_dependency_to_dependent() {
        let g = chain().graph().unwrap();
        assert_eq!(g.node_count(), 3);
        assert_eq!(g.edge_count(), 3);
        let arcs: Vec<(usize, usize)> = g
            .edge_indices()
            .map(|e| {
                let (a, b) = g.edge_endpoints(e).unwrap();
                (g[a], g[b])
            })
            .collect();
        for arc in [(0, 1), (0, 2), (1, 2)] {
            assert!(arcs.contains(&arc), "{arc:?} in {arcs:?}");
        }
    }

    #[test]
    fn a_dependency_on_an_unknown_step_is_refused_by_name() {
        let mut p = chain();
        p.steps[2].depends_on.push("ghost".into());
        let Err(PlanError::Cycle(at)) = p.graph() else {
            panic!("an unknown step passes");
        };
        assert_eq!(at, "c (depends on unknown step ghost)");
    }

    #[test]
    fn a_cycle_is_refused() {
        let mut p = chain();
        p.steps[0].depends_on.push("c".into());
        assert!(matches!(p.graph(), Err(PlanError::Cycle(_))));
        let mut own = chain();
        own.steps[1].depends_on.push("b".into());
        let Err(PlanError::Cycle(at)) = own.graph() else {
            panic!("a step depending on itself passes");
        };
        assert_eq!(at, "b");
    }

    #[test]
    fn a_plan_without_steps_is_empty() {
        assert!(plan(vec![]).is_empty());
        assert!(!chain().is_empty());
    }
}
