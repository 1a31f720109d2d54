//! A work queue keyed by namespace, fed by store events: the loop behind the controllers
//! that reconcile a namespace's workloads, pods and budgets together.
//!
//! Every namespace is reconciled once at start and again whenever an object of interest in
//! it changes, or at the time its last reconcile asked for. A subscriber that lags behind
//! the store's events reconciles everything. Reconciles run off the async threads.

use super::{Passes, settle, warn};
use crate::sandbox::apiserver::store::Store;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// A controller that reconciles one namespace at a time.
pub(super) trait Reconciler: Send + 'static {
    /// The resources whose changes make a namespace due.
    fn interests(&self) -> &'static [&'static str];
    /// Bring one namespace in line; return when to look again (`None`: on the next event).
    fn reconcile(&mut self, store: &Store, ns: &str, now: Instant) -> Option<Instant>;
}

/// Every namespace that holds an object of interest.
fn all_namespaces(store: &Store, interests: &[&str]) -> BTreeSet<String> {
    use crate::sandbox::objects;
    // Collected while the store filters, so no object is copied out.
    let out: Mutex<BTreeSet<String>> = Mutex::default();
    let add = |ns: &str| {
        if let Ok(mut o) = out.lock() {
            o.insert(ns.to_string());
        }
    };
    for plural in interests {
        store.list_page(plural, None, None, None, &|o| {
            add(objects::meta_str(o, "namespace"));
            false
        });
    }
    let mut out = out.into_inner().unwrap_or_default();
    out.remove("");
    out
}

/// Run `r` until aborted, counting its passes in `passes` (per batch and per namespace).
pub(super) async fn run<R: Reconciler>(store: Store, mut r: R, name: &'static str, passes: Passes) {
    let interests = r.interests();
    let mut rx = store.subscribe();
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut resync = true;
    loop {
        if resync {
            resync = false;
            let now = Instant::now();
            let s = store.clone();
            match tokio::task::spawn_blocking(move || all_namespaces(&s, interests)).await {
                Ok(all) => due.extend(all.into_iter().map(|ns| (ns, now))),
                Err(e) => warn(name, e),
            }
        }
        let now = Instant::now();
        let batch: Vec<String> = due
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(ns, _)| ns.clone())
            .collect();
        if !batch.is_empty() {
            for ns in &batch {
                due.remove(ns);
            }
            let s = store.clone();
            let done = batch.clone();
            let work = tokio::task::spawn_blocking(move || {
                let later: Vec<(String, Instant)> = batch
                    .into_iter()
                    .filter_map(|ns| r.reconcile(&s, &ns, Instant::now()).map(|t| (ns, t)))
                    .collect();
                (r, later)
            });
            match work.await {
                Ok((back, later)) => {
                    r = back;
                    for ns in &done {
                        passes.reconciled(name, ns);
                    }
                    passes.done(name);
                    for (ns, t) in later {
                        let e = due.entry(ns).or_insert(t);
                        *e = (*e).min(t);
                    }
                }
                Err(e) => {
                    // The reconciler panicked: report it and stop this controller.
                    warn(name, e);
                    return;
                }
            }
        }
        let next = due.values().min().copied();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            first = rx.recv() => {
                let batch = settle(first, &mut rx).await;
                if batch.closed {
                    return;
                }
                resync |= batch.lagged;
                let now = Instant::now();
                for e in batch.events {
                    if interests.contains(&e.resource)
                        && let Some(ns) = e.namespace
                    {
                        due.insert(ns, now);
                    }
                }
            }
            () = sleep => {}
        }
    }
}
