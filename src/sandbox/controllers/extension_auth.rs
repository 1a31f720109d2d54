//! The API server's publication of its client-authentication settings:
//! `kube-system/extension-apiserver-authentication`, written from the flags and CA files
//! the first control plane's kube-apiserver read at its last start (aggregated API
//! servers and webhooks read it to trust the front proxy and client certificates).
//! Rewritten each time that API server restarts; a hand edit is put back.

use super::{HeldWatch, Options, Passes, by, next_look, warn};
use crate::sandbox::Role;
use crate::sandbox::apiserver::store::{Store, StoreError};
use crate::sandbox::objects::{self, EXTENSION_AUTH_CONFIGMAP};
use crate::sandbox::runtime::Held;
use serde_json::{Map, Value};
use std::path::PathBuf;

const APISERVER: &str = "kube-apiserver";
/// The controller's name (its log lines, [`super::Controllers::passes`]).
pub const NAME: &str = "extension-apiserver-authentication";

/// The `data` an API server with this held state publishes.
pub fn held_data(held: &Held) -> Map<String, Value> {
    objects::extension_auth_data(&held.flags(APISERVER), |p| held.file(p))
}

/// Run until aborted.
pub(super) async fn run(dir: PathBuf, store: Store, options: Options, passes: Passes) {
    let nodes = super::nodes(&dir, options.poll).await;
    let Some(first) = nodes.iter().find(|n| n.role == Role::ControlPlane) else {
        return;
    };
    let mut watch = HeldWatch::new(&first.root, APISERVER);
    let mut rx = store.subscribe();
    let mut data: Option<Value> = None;
    let mut tick = tokio::time::interval(options.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Changes since the last tick: a hand edit is put back within one poll.
        let Some(batch) = next_look(&mut tick, &mut rx).await else {
            return;
        };
        let edited = batch.lagged
            || batch.events.iter().any(|ev| {
                ev.resource == "configmaps"
                    && ev.name == EXTENSION_AUTH_CONFIGMAP
                    && ev.namespace.as_deref() == Some("kube-system")
            });
        let restarted = watch.poll();
        if restarted {
            data = watch.held.as_ref().map(|h| Value::Object(held_data(h)));
        }
        if (restarted || edited)
            && let Some(d) = &data
        {
            ensure(&store, d);
        }
        passes.done(NAME);
    }
}

fn ensure(store: &Store, data: &Value) {
    let ns = Some("kube-system");
    let result = match store.get("configmaps", ns, EXTENSION_AUTH_CONFIGMAP) {
        None => {
            let Value::Object(map) = data.clone() else {
                return;
            };
            store
                .create_with(
                    "configmaps",
                    objects::extension_auth_configmap(map),
                    &by(APISERVER, None),
                )
                .map(drop)
        }
        Some(cm) if &cm["data"] == data => Ok(()),
        Some(_) => store
            .mutate_with(
                "configmaps",
                ns,
                EXTENSION_AUTH_CONFIGMAP,
                &by(APISERVER, None),
                |cm| {
                    cm["data"] = data.clone();
                    Ok(())
                },
            )
            .map(drop),
    };
    match result {
        Ok(()) | Err(StoreError::NotFound { .. } | StoreError::AlreadyExists { .. }) => {}
        Err(e) => warn(NAME, e),
    }
}
