//! The disruption controller: PodDisruptionBudget status from the pods a budget selects,
//! and the check the rollout controller makes before it deletes a pod.
//!
//! As in Kubernetes: with an integer `minAvailable` the expected count is the number of
//! selected pods; with `maxUnavailable` or a percentage it is the scale of the selected
//! pods' controllers. `disruptionsAllowed = max(0, currentHealthy − desiredHealthy)`.

use super::queue::{self, Reconciler};
use super::{KCM, Options, Passes, by, warn};
use crate::sandbox::apiserver::store::{Store, StoreError};
use crate::sandbox::objects::{self, controller_uid, pod_ready, selects};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Instant;

/// The controller's name (its log lines, [`super::Controllers::passes`]).
pub const NAME: &str = "disruption";

/// The controllers' scale: workload uid → how many pods it wants.
pub type Scales = HashMap<String, i64>;

/// The scale of every workload of a namespace (Deployments and StatefulSets:
/// `spec.replicas`; DaemonSets: `status.desiredNumberScheduled`).
pub fn scales(store: &Store, ns: &str) -> Scales {
    let mut out = Scales::new();
    for plural in ["deployments", "statefulsets", "daemonsets"] {
        for w in store.list(plural, Some(ns)) {
            let scale = if plural == "daemonsets" {
                w.pointer("/status/desiredNumberScheduled")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
            } else {
                w.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            };
            out.insert(objects::meta_str(&w, "uid").to_string(), scale);
        }
    }
    out
}

/// An `IntOrString` of a budget: an integer, or `N%` of `of` (rounded up, as Kubernetes
/// does for budgets).
fn int_or_percent(v: &Value, of: i64) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let pct: i64 = v.as_str()?.strip_suffix('%')?.trim().parse().ok()?;
    Some((pct * of + 99) / 100)
}

/// The counts of a budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Selected pods that are Ready.
    pub current_healthy: i64,
    /// How many must stay Ready.
    pub desired_healthy: i64,
    /// How many pods it expects.
    pub expected_pods: i64,
    /// How many may be disrupted now.
    pub disruptions_allowed: i64,
}

/// The counts of `pdb` over `pods` (the pods of its namespace).
pub fn counts(pdb: &Value, pods: &[Value], scales: &Scales) -> Counts {
    let selector = pdb.pointer("/spec/selector");
    let selected: Vec<&Value> = pods
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .filter(|p| selects(selector, objects::labels(p)))
        .collect();
    let current_healthy = selected.iter().filter(|p| pod_ready(p)).count() as i64;
    let controller_scale = || {
        let mut seen = std::collections::HashSet::new();
        selected
            .iter()
            .filter_map(|p| controller_uid(p))
            .filter(|uid| seen.insert(*uid))
            .map(|uid| scales.get(uid).copied().unwrap_or(0))
            .sum::<i64>()
    };
    let spec = &pdb["spec"];
    let (expected_pods, desired_healthy) = match (&spec["minAvailable"], &spec["maxUnavailable"]) {
        (Value::Number(n), _) => (selected.len() as i64, n.as_i64().unwrap_or(0)),
        (min @ Value::String(_), _) => {
            let expected = controller_scale();
            (expected, int_or_percent(min, expected).unwrap_or(expected))
        }
        (_, max @ (Value::Number(_) | Value::String(_))) => {
            let expected = controller_scale();
            let max = int_or_percent(max, expected).unwrap_or(0);
            (expected, (expected - max).max(0))
        }
        _ => (selected.len() as i64, 0),
    };
    Counts {
        current_healthy,
        desired_healthy,
        expected_pods,
        disruptions_allowed: (current_healthy - desired_healthy).max(0),
    }
}

/// Whether deleting `pod` now would break a budget of its namespace.
pub fn blocks(pdbs: &[Value], pods: &[Value], scales: &Scales, pod: &Value) -> bool {
    pod_ready(pod)
        && pdbs.iter().any(|pdb| {
            selects(pdb.pointer("/spec/selector"), objects::labels(pod))
                && counts(pdb, pods, scales).disruptions_allowed < 1
        })
}

/// The status the disruption controller writes for `pdb`, keeping the condition's
/// transition time from `old` when its status did not change.
pub fn status(pdb: &Value, c: Counts) -> Value {
    let allowed = c.disruptions_allowed > 0;
    let (cond_status, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    let old = pdb
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionAllowed"));
    let since = old
        .filter(|o| o["status"] == cond_status)
        .and_then(|o| o["lastTransitionTime"].as_str())
        .map(str::to_string)
        .unwrap_or_else(objects::now);
    let generation = objects::generation(pdb);
    json!({
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": cond_status,
            "reason": reason,
            "message": "",
            "observedGeneration": generation,
            "lastTransitionTime": since
        }],
        "currentHealthy": c.current_healthy,
        "desiredHealthy": c.desired_healthy,
        "disruptionsAllowed": c.disruptions_allowed,
        "expectedPods": c.expected_pods,
        "observedGeneration": generation
    })
}

struct Disruption;

impl Reconciler for Disruption {
    fn interests(&self) -> &'static [&'static str] {
        &[
            "poddisruptionbudgets",
            "pods",
            "deployments",
            "statefulsets",
            "daemonsets",
        ]
    }

    fn reconcile(&mut self, store: &Store, ns: &str, _now: Instant) -> Option<Instant> {
        let pdbs = store.list("poddisruptionbudgets", Some(ns));
        if pdbs.is_empty() {
            return None;
        }
        let pods = store.list("pods", Some(ns));
        let scales = scales(store, ns);
        for pdb in &pdbs {
            let want = status(pdb, counts(pdb, &pods, &scales));
            if pdb["status"] == want {
                continue;
            }
            let name = objects::name(pdb);
            let result = store.mutate_with(
                "poddisruptionbudgets",
                Some(ns),
                name,
                &by(KCM, Some("status")),
                |p| {
                    p["status"] = want;
                    Ok(())
                },
            );
            match result {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => warn(NAME, format!("{ns}/{name}: {e}")),
            }
        }
        None
    }
}

/// Run until aborted.
pub(super) async fn run(store: Store, options: Options, passes: Passes) {
    let _ = options;
    queue::run(store, Disruption, NAME, passes).await;
}
