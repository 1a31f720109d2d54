//! The controller manager's tokens controller: every legacy service-account token secret
//! (`type: kubernetes.io/service-account-token`) whose `data.token` is empty gets a token,
//! signed with the `--service-account-private-key-file` that the leading controller
//! manager (the first control plane's that runs) read at its start. Like the real one it
//! never re-signs a token that is there: re-issuing one means emptying it.

use super::{KCM, KcmLeader, Options, Passes, by, next_look, warn};
use crate::sandbox::apiserver::store::Store;
use crate::sandbox::objects::{self, TOKEN_SECRET_TYPE};
use crate::sandbox::tokens;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The controller's name (its log lines, [`super::Controllers::passes`]).
pub const NAME: &str = "tokens-controller";

/// The legacy token of secret `name` for service account `sa` in `ns` (no expiry, no
/// audience: what kube-controller-manager writes).
pub(crate) fn claims(ns: &str, name: &str, sa: &str, uid: &str) -> Value {
    json!({
        "iss": "kubernetes/serviceaccount",
        "kubernetes.io/serviceaccount/namespace": ns,
        "kubernetes.io/serviceaccount/secret.name": name,
        "kubernetes.io/serviceaccount/service-account.name": sa,
        "kubernetes.io/serviceaccount/service-account.uid": uid,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
    })
}

/// Run until aborted.
pub(super) async fn run(dir: PathBuf, store: Store, options: Options, passes: Passes) {
    let mut leader = KcmLeader::new(&dir, options.poll).await;
    let mut rx = store.subscribe();
    let mut tick = tokio::time::interval(options.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_key: Option<String> = None;
    let mut pending = true;
    loop {
        let Some(batch) = next_look(&mut tick, &mut rx).await else {
            return;
        };
        leader.poll();
        let key = leader.held().and_then(|held| {
            let path = held
                .flags(KCM)
                .get("service-account-private-key-file")?
                .clone();
            String::from_utf8(held.file(&path)?).ok()
        });
        let secrets_changed = batch.lagged || batch.events.iter().any(|e| e.resource == "secrets");
        if secrets_changed || pending || key != last_key {
            last_key.clone_from(&key);
            pending = match &key {
                None => true,
                Some(k) => {
                    let (s, k) = (store.clone(), k.clone());
                    tokio::task::spawn_blocking(move || fill(&s, &k))
                        .await
                        .unwrap_or(true)
                }
            };
        }
        passes.done(NAME);
    }
}

/// Sign a token into every token secret that has none; true when one failed.
fn fill(store: &Store, key: &str) -> bool {
    let empty = store
        .list_page("secrets", None, None, None, &|s| {
            s["type"] == TOKEN_SECRET_TYPE && s["data"]["token"].as_str().is_none_or(str::is_empty)
        })
        .items;
    if empty.is_empty() {
        return false;
    }
    let signer = match tokens::Signer::new(key) {
        Ok(s) => s,
        Err(e) => {
            warn(NAME, e);
            return true;
        }
    };
    let mut failed = false;
    for s in empty {
        let ns = objects::meta_str(&s, "namespace").to_string();
        let name = objects::name(&s).to_string();
        let annotations = &s["metadata"]["annotations"];
        let sa = annotations["kubernetes.io/service-account.name"]
            .as_str()
            .unwrap_or("default");
        let uid = annotations["kubernetes.io/service-account.uid"]
            .as_str()
            .unwrap_or_default();
        let token = match signer.sign(&claims(&ns, &name, sa, uid)) {
            Ok(t) => t,
            Err(e) => {
                warn(NAME, format!("{ns}/{name}: {e}"));
                failed = true;
                continue;
            }
        };
        let r = store.mutate_with("secrets", Some(&ns), &name, &by(KCM, None), |s| {
            if !s["data"].is_object() {
                s["data"] = json!({});
            }
            if s["data"]["token"].as_str().is_none_or(str::is_empty) {
                s["data"]["token"] = json!(objects::b64(token.as_bytes()));
            }
            Ok(())
        });
        if let Err(e) = r {
            warn(NAME, format!("{ns}/{name}: {e}"));
        }
    }
    failed
}
