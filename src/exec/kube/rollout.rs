//! Rollout restarts of exactly the workloads whose pods hold stale trust: the standard
//! `kubectl.kubernetes.io/restartedAt` pod-template annotation, one rollout at a time
//! per PodDisruptionBudget (never while a budget allows no disruption), each awaited.
//! Bare pods (no owner) cannot be rolled: they are named for a manual restart.

use super::cluster::{self, PodInfo, RESTARTED_AT, Workload, WorkloadKind};
use super::{KubeError, laggards, retry};
use crate::pki::Fingerprint;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Semaphore};

/// Rollouts in flight at once (each in its own PodDisruptionBudget group).
const PARALLEL: usize = 8;
/// How often a rollout's status is read.
const POLL: Duration = Duration::from_millis(100);

/// What a restart did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `namespace/Kind/name` of each workload restarted.
    pub restarted: Vec<String>,
    /// `namespace/name` of stale pods without an owner.
    pub bare: Vec<String>,
}

/// Pods that do not trust every CA of `want`.
pub fn stale<'a>(pods: &'a [PodInfo], want: &[Fingerprint]) -> Vec<&'a PodInfo> {
    pods.iter().filter(|p| !p.trust.covers(want)).collect()
}

/// Restart the workloads that own a pod not trusting every CA of `want`, then check that
/// their new pods do. `timeout` bounds each wait (a budget, a rollout).
pub async fn restart_stale(
    client: &Client,
    want: &[Fingerprint],
    timeout: Duration,
) -> Result<Report, KubeError> {
    let root_cas = cluster::root_cas(client).await?;
    let model = cluster::workloads(client, &root_cas).await?;
    let stale_pods = stale(&model.pods, want);
    let mut report = Report::default();
    let mut owners: BTreeSet<(String, String)> = BTreeSet::new();
    for p in &stale_pods {
        match &p.owner {
            Some(o) => {
                owners.insert((p.namespace.clone(), o.clone()));
            }
            None => report.bare.push(format!("{}/{}", p.namespace, p.name)),
        }
    }
    let targets: Vec<Workload> = model
        .workloads
        .into_iter()
        .filter(|w| owners.contains(&(w.namespace.clone(), w.key())))
        .collect();
    // The budgets that cover each workload's pods.
    let mut budgets: HashMap<String, Vec<PodDisruptionBudget>> = HashMap::new();
    for ns in targets
        .iter()
        .map(|w| w.namespace.clone())
        .collect::<BTreeSet<_>>()
    {
        budgets.insert(ns.clone(), cluster::pdbs(client, &ns).await?);
    }
    let locks: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>> = Arc::default();
    let permits = Arc::new(Semaphore::new(PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for w in targets {
        let covering: Vec<PodDisruptionBudget> = budgets[&w.namespace]
            .iter()
            .filter(|b| selects(b, &w.labels))
            .cloned()
            .collect();
        let (client, locks, permits) = (client.clone(), locks.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("semaphore open");
            // Workloads under the same budget roll one after the other.
            let mut names: Vec<String> = covering
                .iter()
                .map(|b| format!("{}/{}", w.namespace, b.name_any()))
                .collect();
            names.sort();
            let mut guards = Vec::new();
            for n in &names {
                let m = locks.lock().await.entry(n.clone()).or_default().clone();
                guards.push(m.lock_owned().await);
            }
            for b in &covering {
                wait_budget(&client, &w.namespace, &b.name_any(), timeout).await?;
            }
            restart(&client, &w).await?;
            wait_rolled(&client, &w, timeout).await?;
            drop(guards);
            Ok::<String, KubeError>(format!("{}/{}", w.namespace, w.key()))
        });
    }
    while let Some(r) = tasks.join_next().await {
        report.restarted.push(r.map_err(|e| KubeError::Api {
            what: "rollout restart".into(),
            code: 0,
            reason: "task failed".into(),
            message: e.to_string(),
        })??);
    }
    report.restarted.sort();
    // Every restarted workload's pods now trust `want`.
    let root_cas = cluster::root_cas(client).await?;
    let after = cluster::workloads(client, &root_cas).await?;
    let still: Vec<String> = stale(&after.pods, want)
        .into_iter()
        .filter(|p| {
            p.owner
                .as_ref()
                .is_some_and(|o| report.restarted.contains(&format!("{}/{o}", p.namespace)))
        })
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    if !still.is_empty() {
        return Err(KubeError::Timeout {
            what: "restarted pods trusting the wanted CAs".into(),
            waited: "the rollouts".into(),
            laggards: format!(
                "{} still hold stale trust: is kube-root-ca.crt current in their namespaces?",
                laggards(&still)
            ),
        });
    }
    Ok(report)
}

/// Does a budget's `matchLabels` select pods with these labels?
fn selects(b: &PodDisruptionBudget, labels: &BTreeMap<String, String>) -> bool {
    let Some(sel) = b.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let ml = sel.match_labels.clone().unwrap_or_default();
    let exprs_ok = sel.match_expressions.iter().flatten().all(|e| {
        let v = labels.get(&e.key);
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => v.is_some_and(|v| vals.contains(v)),
            "NotIn" => v.is_none_or(|v| !vals.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            _ => false,
        }
    });
    (!ml.is_empty() || sel.match_expressions.is_some())
        && ml.iter().all(|(k, v)| labels.get(k) == Some(v))
        && exprs_ok
}

async fn wait_budget(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), KubeError> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        let b = retry(&format!("get poddisruptionbudget {ns}/{name}"), || {
            api.get(name)
        })
        .await?;
        let s = b.status.unwrap_or_default();
        if s.disruptions_allowed.unwrap_or(0) >= 1 {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(KubeError::Timeout {
                what: format!("PodDisruptionBudget {ns}/{name} to allow a disruption"),
                waited: humantime::format_duration(timeout).to_string(),
                laggards: format!(
                    "{ns}/{name}: {} healthy of {} desired, 0 disruptions allowed",
                    s.current_healthy.unwrap_or(0),
                    s.desired_healthy.unwrap_or(0)
                ),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

fn restart_patch() -> Patch<serde_json::Value> {
    Patch::Strategic(serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: crate::clock::now()}}}}
    }))
}

async fn restart(client: &Client, w: &Workload) -> Result<(), KubeError> {
    let pp = PatchParams {
        field_manager: Some("trustform".into()),
        ..Default::default()
    };
    let what = format!("rollout restart {}/{}", w.namespace, w.key());
    let c = client.clone();
    let ns = w.namespace.as_str();
    match w.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(c, ns);
            let patch = restart_patch();
            retry(&what, || api.patch(&w.name, &pp, &patch)).await?;
        }
        WorkloadKind::DaemonSet => {
            let api: Api<DaemonSet> = Api::namespaced(c, ns);
            let patch = restart_patch();
            retry(&what, || api.patch(&w.name, &pp, &patch)).await?;
        }
        WorkloadKind::StatefulSet => {
            let api: Api<StatefulSet> = Api::namespaced(c, ns);
            let patch = restart_patch();
            retry(&what, || api.patch(&w.name, &pp, &patch)).await?;
        }
    }
    Ok(())
}

/// `kubectl rollout status` semantics: `None` when done, else what is pending.
async fn pending(client: &Client, w: &Workload) -> Result<Option<String>, KubeError> {
    let what = format!("get {}/{}", w.namespace, w.key());
    let ns = w.namespace.as_str();
    let c = client.clone();
    Ok(match w.kind {
        WorkloadKind::Deployment => {
            let api = Api::<Deployment>::namespaced(c.clone(), ns);
            let d = retry(&what, || api.get(&w.name)).await?;
            let want = d.spec.replicas.unwrap_or(1);
            let s = d.status.unwrap_or_default();
            let gen_ok = s.observed_generation >= d.metadata.generation;
            let upd = s.updated_replicas.unwrap_or(0);
            let avail = s.available_replicas.unwrap_or(0);
            let total = s.replicas.unwrap_or(0);
            (!(gen_ok && upd >= want && avail >= want && total == want))
                .then(|| format!("{upd} of {want} updated, {avail} available"))
        }
        WorkloadKind::DaemonSet => {
            let api = Api::<DaemonSet>::namespaced(c.clone(), ns);
            let d = retry(&what, || api.get(&w.name)).await?;
            let s = d.status.unwrap_or_default();
            let gen_ok = s.observed_generation >= d.metadata.generation;
            let desired = s.desired_number_scheduled;
            let upd = s.updated_number_scheduled.unwrap_or(0);
            let avail = s.number_available.unwrap_or(0);
            (!(gen_ok && upd >= desired && avail >= desired))
                .then(|| format!("{upd} of {desired} updated, {avail} available"))
        }
        WorkloadKind::StatefulSet => {
            let api = Api::<StatefulSet>::namespaced(c.clone(), ns);
            let d = retry(&what, || api.get(&w.name)).await?;
            let want = d.spec.replicas.unwrap_or(1);
            let s = d.status.unwrap_or_default();
            let gen_ok = s.observed_generation >= d.metadata.generation;
            let upd = s.updated_replicas.unwrap_or(0);
            let ready = s.ready_replicas.unwrap_or(0);
            let rev_ok = s.update_revision.is_none() || s.update_revision == s.current_revision;
            (!(gen_ok && upd >= want && ready >= want && rev_ok))
                .then(|| format!("{upd} of {want} updated, {ready} ready"))
        }
    })
}

async fn wait_rolled(client: &Client, w: &Workload, timeout: Duration) -> Result<(), KubeError> {
    let start = Instant::now();
    // The controller sees the new generation a moment after the patch.
    tokio::time::sleep(Duration::from_millis(20)).await;
    loop {
        let Some(left) = pending(client, w).await? else {
            return Ok(());
        };
        if start.elapsed() >= timeout {
            return Err(KubeError::Timeout {
                what: format!("rollout of {}/{}", w.namespace, w.key()),
                waited: humantime::format_duration(timeout).to_string(),
                laggards: left,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
