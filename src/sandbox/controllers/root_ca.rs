//! The controller manager's root-CA publisher. The leader is the kube-controller-manager
//! of the first control plane (in `sandbox.json` order) that is running. Whenever the
//! leader restarts or leadership moves, it publishes the `--root-ca-file` it read at its
//! start: `kube-root-ca.crt` (`data["ca.crt"]`, the PEM text exactly) in every namespace,
//! and `data["ca.crt"]` of every legacy service-account token secret. Like the real
//! controllers it also reacts at once to new namespaces, new token secrets and
//! hand-edited or deleted `kube-root-ca.crt` ConfigMaps.

use super::{HeldWatch, KCM as MANAGER, Options, Passes, by, settle, warn};
use crate::sandbox::Role;
use crate::sandbox::apiserver::store::{Event, EventKind, Store, StoreError};
use crate::sandbox::objects::{self, ROOT_CA_CONFIGMAP, TOKEN_SECRET_TYPE};
use crate::sandbox::runtime::Held;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

const KCM: &str = "kube-controller-manager";
/// The controller's name (its log lines, [`super::Controllers::passes`]).
pub const NAME: &str = "root-ca-publisher";

/// What the leader publishes: its root CA as text and as base64.
#[derive(Debug)]
struct Bundle {
    pem: String,
    b64: String,
}

/// The PEM text of the `--root-ca-file` a controller manager read at its start.
pub fn held_root_ca(held: &Held) -> Option<String> {
    let path = held.flags(KCM).get("root-ca-file")?.clone();
    String::from_utf8(held.file(&path)?).ok()
}

/// Run until aborted.
pub(super) async fn run(dir: PathBuf, store: Store, options: Options, passes: Passes) {
    let nodes = super::nodes(&dir, options.poll).await;
    let mut watches: Vec<HeldWatch> = nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .map(|n| HeldWatch::new(&n.root, KCM))
        .collect();
    let mut rx = store.subscribe();
    let mut published: Option<(usize, u64)> = None;
    let mut bundle: Option<Arc<Bundle>> = None;
    let mut tick = tokio::time::interval(options.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                for w in &mut watches {
                    w.poll();
                }
                let leader = watches
                    .iter()
                    .enumerate()
                    .find_map(|(i, w)| w.held.as_ref().map(|h| (i, h)));
                let key = leader.map(|(i, h)| (i, h.generation));
                if key != published {
                    published = key;
                    bundle = leader.and_then(|(_, h)| held_root_ca(h)).map(|pem| {
                        Arc::new(Bundle { b64: objects::b64(pem.as_bytes()), pem })
                    });
                    if let Some(b) = &bundle {
                        publish_all(&store, b).await;
                    }
                }
                passes.done(NAME);
            }
            first = rx.recv() => {
                let batch = settle(first, &mut rx).await;
                if batch.closed {
                    return;
                }
                if let Some(b) = &bundle {
                    if batch.lagged {
                        publish_all(&store, b).await;
                    } else {
                        on_events(&store, b, batch.events).await;
                    }
                }
            }
        }
    }
}

/// Reconcile every namespace and every token secret (off the async threads: thousands
/// of objects).
async fn publish_all(store: &Store, bundle: &Arc<Bundle>) {
    let (store, bundle) = (store.clone(), bundle.clone());
    let done = tokio::task::spawn_blocking(move || {
        // The store's filters note what differs; nothing is copied out of it.
        let want = json!({ "ca.crt": bundle.pem });
        let present: Mutex<HashSet<String>> = Mutex::default();
        let stale: Mutex<Vec<String>> = Mutex::default();
        store.list_page("configmaps", None, None, None, &|cm| {
            if objects::name(cm) == ROOT_CA_CONFIGMAP {
                let ns = objects::meta_str(cm, "namespace").to_string();
                if cm["data"] != want {
                    lock(&stale).push(ns.clone());
                }
                lock(&present).insert(ns);
            }
            false
        });
        let present = present.into_inner().unwrap_or_default();
        let missing: Mutex<Vec<String>> = Mutex::default();
        store.list_page("namespaces", None, None, None, &|ns| {
            if active(ns) && !present.contains(objects::name(ns)) {
                lock(&missing).push(objects::name(ns).to_string());
            }
            false
        });
        for ns in stale.into_inner().unwrap_or_default() {
            set_configmap(&store, &want, &ns);
        }
        for ns in missing.into_inner().unwrap_or_default() {
            ensure_configmap(&store, &bundle, &ns);
        }
        let secrets: Mutex<Vec<(String, String)>> = Mutex::default();
        store.list_page("secrets", None, None, None, &|s| {
            if secret_is_stale(&bundle, s) {
                lock(&secrets).push((
                    objects::meta_str(s, "namespace").to_string(),
                    objects::name(s).to_string(),
                ));
            }
            false
        });
        for (ns, name) in secrets.into_inner().unwrap_or_default() {
            set_secret(&store, &bundle, &ns, &name);
        }
    })
    .await;
    if let Err(e) = done {
        warn(NAME, e);
    }
}

/// A lock that survives a panicked holder (the data is a plain list).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// React to a batch of changes (each object once), off the async threads.
async fn on_events(store: &Store, bundle: &Arc<Bundle>, events: Vec<Event>) {
    let (store, bundle) = (store.clone(), bundle.clone());
    let done = tokio::task::spawn_blocking(move || {
        let mut seen = HashSet::new();
        for ev in &events {
            if seen.insert((ev.resource, ev.namespace.as_deref(), ev.name.as_str())) {
                on_event(&store, &bundle, ev);
            }
        }
    })
    .await;
    if let Err(e) = done {
        warn(NAME, e);
    }
}

fn on_event(store: &Store, bundle: &Bundle, ev: &Event) {
    let ns = ev.namespace.as_deref();
    match (ev.resource, &ev.kind) {
        ("namespaces", EventKind::Added | EventKind::Modified) => {
            if let Some(n) = store.get("namespaces", None, &ev.name)
                && active(&n)
            {
                ensure_configmap(store, bundle, &ev.name);
            }
        }
        ("configmaps", _) if ev.name == ROOT_CA_CONFIGMAP => {
            if let Some(ns) = ns
                && store
                    .get("namespaces", None, ns)
                    .is_some_and(|n| active(&n))
            {
                ensure_configmap(store, bundle, ns);
            }
        }
        ("secrets", EventKind::Added | EventKind::Modified) => {
            if let Some(s) = store.get("secrets", ns, &ev.name) {
                ensure_secret(store, bundle, &s);
            }
        }
        _ => {}
    }
}

/// A namespace that is not being deleted.
fn active(ns: &Value) -> bool {
    ns.pointer("/metadata/deletionTimestamp").is_none() && ns["status"]["phase"] != "Terminating"
}

fn ensure_configmap(store: &Store, bundle: &Bundle, ns: &str) {
    let want = json!({ "ca.crt": bundle.pem });
    let result = match store.get("configmaps", Some(ns), ROOT_CA_CONFIGMAP) {
        None => store
            .create_with(
                "configmaps",
                objects::root_ca_configmap(ns, &bundle.pem),
                &by(MANAGER, None),
            )
            .map(drop),
        Some(cm) if cm["data"] == want => Ok(()),
        Some(_) => {
            set_configmap(store, &want, ns);
            return;
        }
    };
    report(result, ns, ROOT_CA_CONFIGMAP);
}

/// Set `data` of an existing `kube-root-ca.crt` (a no-op write is skipped by the store).
fn set_configmap(store: &Store, want: &Value, ns: &str) {
    let result = store
        .mutate_with(
            "configmaps",
            Some(ns),
            ROOT_CA_CONFIGMAP,
            &by(MANAGER, None),
            |cm| {
                cm["data"] = want.clone();
                Ok(())
            },
        )
        .map(drop);
    report(result, ns, ROOT_CA_CONFIGMAP);
}

/// A legacy token secret whose `ca.crt` is not the published CA.
fn secret_is_stale(bundle: &Bundle, secret: &Value) -> bool {
    secret["type"] == TOKEN_SECRET_TYPE && secret["data"]["ca.crt"] != bundle.b64.as_str()
}

fn ensure_secret(store: &Store, bundle: &Bundle, secret: &Value) {
    if secret_is_stale(bundle, secret) {
        set_secret(
            store,
            bundle,
            objects::meta_str(secret, "namespace"),
            objects::name(secret),
        );
    }
}

fn set_secret(store: &Store, bundle: &Bundle, ns: &str, name: &str) {
    let result = store
        .mutate_with("secrets", Some(ns), name, &by(MANAGER, None), |s| {
            if s["type"] == TOKEN_SECRET_TYPE {
                if !s["data"].is_object() {
                    s["data"] = json!({});
                }
                s["data"]["ca.crt"] = json!(bundle.b64);
            }
            Ok(())
        })
        .map(drop);
    report(result, ns, name);
}

/// Races with deletions and concurrent creations are normal; anything else is logged.
fn report(result: Result<(), StoreError>, ns: &str, name: &str) {
    match result {
        Ok(()) | Err(StoreError::NotFound { .. } | StoreError::AlreadyExists { .. }) => {}
        Err(e) => warn(NAME, format!("{ns}/{name}: {e}")),
    }
}
