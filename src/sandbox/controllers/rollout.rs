//! The rollout controller: Deployments, DaemonSets and StatefulSets keep the pods their
//! template asks for. A workload's revision is the [`objects::template_hash`] of its
//! `spec.template`; pods carry it as `pod-template-hash` (Deployments) or
//! `controller-revision-hash` (DaemonSets: the hash; StatefulSets: `<name>-<hash>`).
//!
//! When the template changes, old pods are replaced a few at a time (`maxUnavailable`,
//! default 1): delete one, create its replacement, wait [`Options::rollout_step`]. A pod is
//! never deleted while that would break a PodDisruptionBudget covering it (the controller
//! waits and retries). New pods read their namespace's `kube-root-ca.crt` as they start:
//! that is what [`objects::TRUSTED_CA`] records. Workload status follows the real
//! controllers', so `kubectl rollout status` semantics hold. Pods whose controller is gone
//! are deleted (the garbage collector's part).

use super::disruption;
use super::queue::{self, Reconciler};
use super::{KCM, Options, Passes, by, warn};
use crate::sandbox::apiserver::store::{Store, StoreError};
use crate::sandbox::objects::{self, Owner, PodSpec, ROOT_CA_CONFIGMAP, Trust};
use crate::sandbox::{Role, SandboxNode};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The controller's name (its log lines, [`super::Controllers::passes`]).
pub const NAME: &str = "rollout";

/// The kinds of workload the controller runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `apps/v1` Deployment (pods owned directly; no ReplicaSets in the sandbox).
    Deployment,
    /// `apps/v1` DaemonSet: one pod per eligible node.
    DaemonSet,
    /// `apps/v1` StatefulSet: pods `<name>-<ordinal>`.
    StatefulSet,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Deployment, Kind::DaemonSet, Kind::StatefulSet];

    /// The resource's plural.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::DaemonSet => "daemonsets",
            Kind::StatefulSet => "statefulsets",
        }
    }

    /// The `kind` of its objects.
    pub fn kind(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::StatefulSet => "StatefulSet",
        }
    }
}

/// The label that marks a pod's revision and its value for the workload's current template.
pub fn revision(kind: Kind, workload: &Value) -> (&'static str, String) {
    let hash = objects::template_hash(workload);
    match kind {
        Kind::Deployment => ("pod-template-hash", hash),
        Kind::DaemonSet => ("controller-revision-hash", hash),
        Kind::StatefulSet => (
            "controller-revision-hash",
            format!("{}-{hash}", objects::name(workload)),
        ),
    }
}

fn replicas(workload: &Value) -> usize {
    workload
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(0) as usize
}

/// Whether the template tolerates the control-plane taint.
fn tolerates_control_plane(workload: &Value) -> bool {
    workload
        .pointer("/spec/template/spec/tolerations")
        .and_then(Value::as_array)
        .is_some_and(|ts| {
            ts.iter().any(|t| {
                let key = t["key"].as_str().unwrap_or("");
                let effect = t["effect"].as_str().unwrap_or("");
                (key.is_empty() && t["operator"] == "Exists"
                    || key == "node-role.kubernetes.io/control-plane")
                    && (effect.is_empty() || effect == "NoSchedule")
            })
        })
}

/// The nodes (indices into `nodes`) a workload's pods may run on: DaemonSets on every
/// node whose taints they tolerate; others on the workers (every node if there is none).
pub fn eligible_nodes(kind: Kind, workload: &Value, nodes: &[SandboxNode]) -> Vec<usize> {
    let workers: Vec<usize> = (0..nodes.len())
        .filter(|i| nodes[*i].role == Role::Worker)
        .collect();
    match kind {
        Kind::DaemonSet if tolerates_control_plane(workload) => (0..nodes.len()).collect(),
        _ if workers.is_empty() && kind != Kind::DaemonSet => (0..nodes.len()).collect(),
        _ => workers,
    }
}

/// Where a new pod goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A Deployment replica: any eligible node.
    Any,
    /// A DaemonSet's pod for node `nodes[i]`.
    Node(usize),
    /// A StatefulSet's pod with this ordinal.
    Ordinal(usize),
}

/// A new pod of `workload` for `slot`. `seed` makes the generated name; the pod's trust is
/// what its namespace's `kube-root-ca.crt` holds now (`trust`).
pub fn new_pod(
    kind: Kind,
    workload: &Value,
    slot: &Slot,
    nodes: &[SandboxNode],
    trust: &Trust,
    seed: &str,
) -> Option<Value> {
    let ns = objects::meta_str(workload, "namespace");
    let name = objects::name(workload);
    let (label, rev) = revision(kind, workload);
    let eligible = eligible_nodes(kind, workload, nodes);
    let (pod_name, generate, node, mut labels) = match slot {
        Slot::Any => {
            let prefix = format!("{name}-{rev}-");
            let pod_name = format!("{prefix}{}", objects::suffix(seed));
            let pick = *eligible.get(pick_index(&pod_name, eligible.len())?)?;
            (pod_name, Some(prefix), pick, vec![])
        }
        Slot::Node(i) => {
            let prefix = format!("{name}-");
            let pod_name = format!("{prefix}{}", objects::suffix(seed));
            let generation = objects::generation(workload).to_string();
            (
                pod_name,
                Some(prefix),
                *i,
                vec![("pod-template-generation", generation)],
            )
        }
        Slot::Ordinal(o) => {
            let pod_name = format!("{name}-{o}");
            let pick = *eligible.get(pick_index(&pod_name, eligible.len())?)?;
            (
                pod_name.clone(),
                None,
                pick,
                vec![
                    ("apps.kubernetes.io/pod-index", o.to_string()),
                    ("statefulset.kubernetes.io/pod-name", pod_name),
                ],
            )
        }
    };
    labels.push((label, rev));
    let node_ref = nodes.get(node)?;
    Some(objects::pod(&PodSpec {
        namespace: ns,
        name: &pod_name,
        generate_name: generate.as_deref(),
        owner: Some(Owner {
            api_version: "apps/v1",
            kind: kind.kind(),
            name,
            uid: objects::meta_str(workload, "uid"),
        }),
        template: workload.pointer("/spec/template").unwrap_or(&Value::Null),
        extra_labels: &labels,
        node: (node_ref, node),
        trust,
    }))
}

fn pick_index(name: &str, len: usize) -> Option<usize> {
    use sha2::{Digest, Sha256};
    (len > 0).then(|| {
        let h = Sha256::digest(name.as_bytes());
        u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize % len
    })
}

/// What a workload needs done to its pods.
#[derive(Debug, Default)]
pub struct Plan {
    /// Pods to create now.
    pub missing: Vec<Slot>,
    /// Pods to delete now (scale down, pods on nodes they may not run on, duplicates).
    pub excess: Vec<String>,
    /// Pods of an old revision, in replacement order, with the slot each one's
    /// replacement fills.
    pub old: Vec<(String, Slot)>,
    /// How many may be replaced at once.
    pub max_unavailable: usize,
}

fn node_index(pod: &Value, nodes: &[SandboxNode]) -> Option<usize> {
    let n = pod.pointer("/spec/nodeName").and_then(Value::as_str)?;
    nodes.iter().position(|x| x.name == n)
}

fn rolling_int(workload: &Value, pointer: &str, total: usize) -> usize {
    match workload.pointer(pointer) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(1) as usize,
        Some(Value::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.trim().parse::<usize>().ok())
            .map_or(1, |p| p * total / 100),
        _ => 1,
    }
    .max(1)
}

/// Plan a workload's pods. `owned` are the pods it controls.
pub fn plan(kind: Kind, workload: &Value, owned: &[&Value], nodes: &[SandboxNode]) -> Plan {
    let (label, rev) = revision(kind, workload);
    let current = |p: &Value| {
        objects::labels(p)
            .and_then(|l| l.get(label))
            .and_then(Value::as_str)
            == Some(rev.as_str())
    };
    let strategy = |p: &str| {
        workload
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("RollingUpdate")
            .to_string()
    };
    let mut out = Plan::default();
    match kind {
        Kind::Deployment => {
            let n = replicas(workload);
            // Old pods go first when scaling down.
            let mut pods: Vec<&Value> = owned.to_vec();
            pods.sort_by_key(|p| current(p));
            let extra = pods.len().saturating_sub(n);
            out.excess = pods[..extra]
                .iter()
                .map(|p| objects::name(p).to_string())
                .collect();
            out.missing = vec![Slot::Any; n.saturating_sub(pods.len())];
            out.old = pods[extra..]
                .iter()
                .filter(|p| !current(p))
                .map(|p| (objects::name(p).to_string(), Slot::Any))
                .collect();
            out.max_unavailable = if strategy("/spec/strategy/type") == "Recreate" {
                n.max(1)
            } else {
                rolling_int(workload, "/spec/strategy/rollingUpdate/maxUnavailable", n)
            };
        }
        Kind::DaemonSet => {
            let eligible = eligible_nodes(kind, workload, nodes);
            let mut by_node: HashMap<usize, Vec<&Value>> = HashMap::new();
            for p in owned {
                match node_index(p, nodes).filter(|i| eligible.contains(i)) {
                    Some(i) => by_node.entry(i).or_default().push(p),
                    None => out.excess.push(objects::name(p).to_string()),
                }
            }
            for i in &eligible {
                let mut pods = by_node.remove(i).unwrap_or_default();
                pods.sort_by_key(|p| !current(p));
                let Some((keep, dupes)) = pods.split_first() else {
                    out.missing.push(Slot::Node(*i));
                    continue;
                };
                out.excess
                    .extend(dupes.iter().map(|p| objects::name(p).to_string()));
                if !current(keep) && strategy("/spec/updateStrategy/type") != "OnDelete" {
                    out.old
                        .push((objects::name(keep).to_string(), Slot::Node(*i)));
                }
            }
            out.max_unavailable = rolling_int(
                workload,
                "/spec/updateStrategy/rollingUpdate/maxUnavailable",
                eligible.len(),
            );
        }
        Kind::StatefulSet => {
            let n = replicas(workload);
            let name = objects::name(workload);
            let partition = workload
                .pointer("/spec/updateStrategy/rollingUpdate/partition")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            let ordinal = |p: &Value| {
                objects::name(p)
                    .strip_prefix(name)
                    .and_then(|r| r.strip_prefix('-'))
                    .and_then(|o| o.parse::<usize>().ok())
            };
            let mut have: HashMap<usize, &Value> = HashMap::new();
            for p in owned {
                match ordinal(p).filter(|o| *o < n) {
                    Some(o) if !have.contains_key(&o) => {
                        have.insert(o, p);
                    }
                    _ => out.excess.push(objects::name(p).to_string()),
                }
            }
            for o in 0..n {
                if !have.contains_key(&o) {
                    out.missing.push(Slot::Ordinal(o));
                }
            }
            if strategy("/spec/updateStrategy/type") != "OnDelete" {
                // Highest ordinal first, as the StatefulSet controller does.
                for o in (partition..n).rev() {
                    if let Some(p) = have.get(&o)
                        && !current(p)
                    {
                        out.old
                            .push((objects::name(p).to_string(), Slot::Ordinal(o)));
                    }
                }
            }
            out.max_unavailable = 1;
        }
    }
    out
}

/// Keep the timestamps of an unchanged condition.
fn condition(old: &Value, ty: &str, status: &str, reason: &str, message: &str) -> Value {
    let prev = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty));
    let now = objects::now();
    let same_status = prev.is_some_and(|p| p["status"] == status);
    let same = same_status && prev.is_some_and(|p| p["reason"] == reason);
    let transition = prev
        .filter(|_| same_status)
        .and_then(|p| p["lastTransitionTime"].as_str())
        .unwrap_or(&now)
        .to_string();
    let update = prev
        .filter(|_| same)
        .and_then(|p| p["lastUpdateTime"].as_str())
        .unwrap_or(&now)
        .to_string();
    json!({
        "type": ty,
        "status": status,
        "lastUpdateTime": update,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message
    })
}

/// The status the workload's controller reports for these pods (`owned`).
pub fn status(kind: Kind, workload: &Value, owned: &[&Value], nodes: &[SandboxNode]) -> Value {
    let (label, rev) = revision(kind, workload);
    let rev_of = |p: &Value| {
        objects::labels(p)
            .and_then(|l| l.get(label))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let updated = owned
        .iter()
        .filter(|p| rev_of(p).as_deref() == Some(rev.as_str()))
        .count();
    let ready = owned.iter().filter(|p| objects::pod_ready(p)).count();
    let generation = objects::generation(workload);
    let name = objects::name(workload);
    match kind {
        Kind::Deployment => {
            let n = replicas(workload);
            let max_unavailable = plan(kind, workload, owned, nodes).max_unavailable;
            let available = ready;
            let complete = updated == n && owned.len() == n && available >= n;
            let (avail_status, avail_reason, avail_msg) = if available + max_unavailable >= n {
                (
                    "True",
                    "MinimumReplicasAvailable",
                    "Deployment has minimum availability.",
                )
            } else {
                (
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                )
            };
            let rs = format!("{name}-{rev}");
            let (reason, msg) = if complete {
                (
                    "NewReplicaSetAvailable",
                    format!("ReplicaSet \"{rs}\" has successfully progressed."),
                )
            } else {
                (
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs}\" is progressing."),
                )
            };
            json!({
                "observedGeneration": generation,
                "replicas": owned.len(),
                "updatedReplicas": updated,
                "readyReplicas": ready,
                "availableReplicas": available,
                "unavailableReplicas": n.saturating_sub(available),
                "conditions": [
                    condition(workload, "Available", avail_status, avail_reason, avail_msg),
                    condition(workload, "Progressing", "True", reason, &msg)
                ]
            })
        }
        Kind::DaemonSet => {
            let eligible = eligible_nodes(kind, workload, nodes);
            let on: Vec<Option<usize>> = owned.iter().map(|p| node_index(p, nodes)).collect();
            let scheduled: HashSet<usize> = on
                .iter()
                .flatten()
                .copied()
                .filter(|i| eligible.contains(i))
                .collect();
            let misscheduled = on
                .iter()
                .filter(|i| i.is_none_or(|i| !eligible.contains(&i)))
                .count();
            json!({
                "currentNumberScheduled": scheduled.len(),
                "desiredNumberScheduled": eligible.len(),
                "numberAvailable": ready,
                "numberMisscheduled": misscheduled,
                "numberReady": ready,
                "numberUnavailable": eligible.len().saturating_sub(ready),
                "observedGeneration": generation,
                "updatedNumberScheduled": updated
            })
        }
        Kind::StatefulSet => {
            let n = replicas(workload);
            let previous = workload
                .pointer("/status/currentRevision")
                .and_then(Value::as_str)
                .map(str::to_string);
            // The current revision moves to the update revision once every pod runs it.
            let current_rev = if updated == n && owned.len() == n {
                rev.clone()
            } else {
                previous
                    .or_else(|| owned.iter().find_map(|p| rev_of(p)))
                    .unwrap_or_else(|| rev.clone())
            };
            let current = owned
                .iter()
                .filter(|p| rev_of(p).as_deref() == Some(current_rev.as_str()))
                .count();
            json!({
                "availableReplicas": ready,
                "collisionCount": 0,
                "currentReplicas": current,
                "currentRevision": current_rev,
                "observedGeneration": generation,
                "readyReplicas": ready,
                "replicas": owned.len(),
                "updateRevision": rev,
                "updatedReplicas": updated
            })
        }
    }
}

/// The rollout controller's state: when each workload may take its next step.
pub(super) struct Rollout {
    nodes: Vec<SandboxNode>,
    step: Duration,
    next_step: HashMap<String, Instant>,
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Rollout {
    /// Create a pod, trying a fresh name on a collision.
    fn create_pod(
        &self,
        store: &Store,
        kind: Kind,
        w: &Value,
        slot: &Slot,
        trust: &Trust,
    ) -> Option<Value> {
        let base = format!("{}/{}", objects::meta_str(w, "namespace"), objects::name(w));
        for _ in 0..3 {
            let pod = new_pod(
                kind,
                w,
                slot,
                &self.nodes,
                trust,
                &objects::fresh_seed(&base),
            )?;
            match store.create_with("pods", pod, &by(KCM, None)) {
                Ok(p) => return Some(p),
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => {
                    warn(NAME, format!("{base}: {e}"));
                    return None;
                }
            }
        }
        None
    }

    /// One workload; `pods` is the namespace's pods, kept current as pods come and go.
    #[allow(clippy::too_many_arguments)]
    fn workload(
        &mut self,
        store: &Store,
        kind: Kind,
        w: &Value,
        pods: &mut Vec<Value>,
        pdbs: &[Value],
        scales: &disruption::Scales,
        now: Instant,
    ) -> Option<Instant> {
        let uid = objects::meta_str(w, "uid").to_string();
        if uid.is_empty() || w.pointer("/metadata/deletionTimestamp").is_some() {
            return None;
        }
        let ns = objects::meta_str(w, "namespace").to_string();
        let owned = |pods: &[Value]| -> Vec<Value> {
            pods.iter()
                .filter(|p| objects::controller_uid(p) == Some(uid.as_str()))
                .cloned()
                .collect()
        };
        let snapshot = owned(pods);
        let refs: Vec<&Value> = snapshot.iter().collect();
        let plan = plan(kind, w, &refs, &self.nodes);
        let mut again = None;
        let delete = |pods: &mut Vec<Value>, name: &str| -> bool {
            match store.delete("pods", Some(&ns), name) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {
                    pods.retain(|p| objects::name(p) != name);
                    true
                }
                Err(e) => {
                    warn(NAME, format!("{ns}/{name}: {e}"));
                    false
                }
            }
        };
        for name in &plan.excess {
            delete(pods, name);
        }
        let needs_pods = !plan.missing.is_empty() || !plan.old.is_empty();
        // A pod starts only once its namespace's kube-root-ca.crt exists (the kubelet
        // cannot mount it before).
        let trust = if needs_pods {
            match store.get("configmaps", Some(&ns), ROOT_CA_CONFIGMAP) {
                Some(cm) => Some(Trust::of_configmap(&cm)),
                None => return Some(now + self.step.max(Duration::from_millis(50))),
            }
        } else {
            None
        };
        if let Some(trust) = &trust {
            for slot in &plan.missing {
                if let Some(p) = self.create_pod(store, kind, w, slot, trust) {
                    pods.push(p);
                }
            }
            if !plan.old.is_empty() {
                let at = self.next_step.get(&uid).copied().unwrap_or(now);
                if at > now {
                    again = Some(at);
                } else {
                    let mut replaced = 0;
                    let mut blocked = false;
                    for (name, slot) in &plan.old {
                        if replaced == plan.max_unavailable.max(1) {
                            break;
                        }
                        let Some(pod) = pods.iter().find(|p| objects::name(p) == name) else {
                            continue;
                        };
                        if disruption::blocks(pdbs, pods, scales, pod) {
                            blocked = true;
                            break;
                        }
                        if !delete(pods, name) {
                            break;
                        }
                        // The replacement reads kube-root-ca.crt as it starts: now.
                        let trust = store
                            .get("configmaps", Some(&ns), ROOT_CA_CONFIGMAP)
                            .map(|cm| Trust::of_configmap(&cm))
                            .unwrap_or_else(|| trust.clone());
                        if let Some(p) = self.create_pod(store, kind, w, slot, &trust) {
                            pods.push(p);
                        }
                        replaced += 1;
                    }
                    let pause = if blocked && replaced == 0 {
                        self.step.max(Duration::from_millis(100))
                    } else {
                        self.step
                    };
                    let next = now + pause;
                    self.next_step.insert(uid.clone(), next);
                    if blocked || replaced < plan.old.len() {
                        again = Some(next);
                    }
                }
            }
        }
        // Status from the pods as they are now.
        let snapshot = owned(pods);
        let refs: Vec<&Value> = snapshot.iter().collect();
        let want = status(kind, w, &refs, &self.nodes);
        if w["status"] != want {
            let result = store.mutate_with(
                kind.plural(),
                Some(&ns),
                objects::name(w),
                &by(KCM, Some("status")),
                |o| {
                    // Status is computed for the generation read; a newer spec gets its
                    // own pass (its event is queued).
                    if objects::generation(o) == objects::generation(w) {
                        o["status"] = want;
                    }
                    Ok(())
                },
            );
            match result {
                Ok(_) | Err(StoreError::NotFound { .. }) => {}
                Err(e) => warn(NAME, format!("{ns}/{}: {e}", objects::name(w))),
            }
        }
        if again.is_none() {
            self.next_step.remove(&uid);
        }
        again
    }
}

impl Reconciler for Rollout {
    fn interests(&self) -> &'static [&'static str] {
        &[
            "deployments",
            "daemonsets",
            "statefulsets",
            "pods",
            "poddisruptionbudgets",
        ]
    }

    fn reconcile(&mut self, store: &Store, ns: &str, now: Instant) -> Option<Instant> {
        let mut pods = store.list("pods", Some(ns));
        let pdbs = store.list("poddisruptionbudgets", Some(ns));
        let scales = disruption::scales(store, ns);
        let mut workloads = Vec::new();
        for kind in Kind::ALL {
            for w in store.list(kind.plural(), Some(ns)) {
                workloads.push((kind, w));
            }
        }
        // Garbage collection: pods whose controller is gone.
        let uids: HashSet<&str> = workloads
            .iter()
            .map(|(_, w)| objects::meta_str(w, "uid"))
            .collect();
        let orphans: Vec<String> = pods
            .iter()
            .filter(|p| {
                let owner = p
                    .pointer("/metadata/ownerReferences")
                    .and_then(Value::as_array)
                    .and_then(|os| os.iter().find(|o| o["controller"] == true));
                owner.is_some_and(|o| {
                    o["apiVersion"] == "apps/v1"
                        && Kind::ALL.iter().any(|k| o["kind"] == k.kind())
                        && !uids.contains(o["uid"].as_str().unwrap_or(""))
                })
            })
            .map(|p| objects::name(p).to_string())
            .collect();
        for name in orphans {
            match store.delete("pods", Some(ns), &name) {
                Ok(_) | Err(StoreError::NotFound { .. }) => {
                    pods.retain(|p| objects::name(p) != name);
                }
                Err(e) => warn(NAME, format!("{ns}/{name}: {e}")),
            }
        }
        let mut again = None;
        for (kind, w) in &workloads {
            let next = self.workload(store, *kind, w, &mut pods, &pdbs, &scales, now);
            again = earliest(again, next);
        }
        again
    }
}

/// Run until aborted.
pub(super) async fn run(dir: PathBuf, store: Store, options: Options, passes: Passes) {
    let nodes = super::nodes(&dir, options.poll).await;
    let r = Rollout {
        nodes,
        step: options.rollout_step,
        next_step: HashMap::new(),
    };
    queue::run(store, r, NAME, passes).await;
}
