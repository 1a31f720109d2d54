//! The kubelets' service-account tokens. For every pod with a projected
//! `serviceAccountToken` volume (the `kube-api-access-*` every pod gets), the kubelet of
//! its node, while it runs, holds a token the API server issued for the pod (a
//! TokenRequest of 3607 s, bound to the pod), written where a real kubelet writes it:
//! `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~projected/<volume>/token` (0600).
//!
//! It asks for a new one as the kubelet's token manager does: when 80 % of the requested
//! lifetime has passed, or 24 h, and for every pod after the kubelet restarts (its cache
//! is in memory). The API server that issues it signs with the key its process holds
//! (`--service-account-signing-key-file` as read at its last start), the first control
//! plane's whose API server runs; a 3607-second token gets a year
//! (`--service-account-extend-token-expiration`). The requested lifetime is
//! `TRUSTFORM_SANDBOX_TOKEN_SECONDS` (default 3607) so that tests see refreshes in
//! seconds. A pod that is gone has its directory removed.

use super::{HeldWatch, Options, next_look, warn};
use crate::sandbox::SandboxNode;
use crate::sandbox::apiserver::store::Store;
use crate::sandbox::node::Machine;
use crate::sandbox::runtime;
use crate::sandbox::tokens::{self, Bound, Claims, Ref};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

const NAME: &str = "tokens";

/// The requested lifetime, in seconds, from the environment.
pub const LIFETIME_ENV: &str = "TRUSTFORM_SANDBOX_TOKEN_SECONDS";

/// The lifetime a pod's kubelet requests (kube-api-access).
const DEFAULT_LIFETIME: i64 = 3607;

/// What a token extended by `--service-account-extend-token-expiration` lives.
const EXTENDED: i64 = 365 * 86_400;

/// How often the tokens are looked at.
const LOOK: Duration = Duration::from_millis(500);

/// The projected volume that holds a pod's service-account token.
pub fn volume(pod: &Value) -> Option<String> {
    pod["spec"]["volumes"]
        .as_array()?
        .iter()
        .find(|v| {
            v["projected"]["sources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["serviceAccountToken"].is_object()))
        })
        .and_then(|v| v["name"].as_str())
        .map(str::to_string)
}

fn lifetime() -> i64 {
    std::env::var(LIFETIME_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &i64| *s > 0)
        .unwrap_or(DEFAULT_LIFETIME)
}

/// When the kubelet refreshes a token issued at `iat` that lives `ttl` seconds.
fn renew_at(iat: i64, ttl: i64) -> i64 {
    crate::pki::token::refresh_at(iat, iat + ttl)
}

/// One token the kubelet holds: when it was issued, and by which kubelet generation.
struct Kept {
    iat: i64,
    kubelet: u64,
}

/// Run until aborted.
pub(super) async fn run(dir: PathBuf, store: Store, options: Options) {
    let nodes = super::nodes(&dir, options.poll).await;
    let mut kubelets: Vec<HeldWatch> = nodes
        .iter()
        .map(|n| HeldWatch::new(&n.root, "kubelet"))
        .collect();
    let mut apis: Vec<(usize, HeldWatch)> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.role == crate::sandbox::Role::ControlPlane)
        .map(|(i, n)| (i, HeldWatch::new(&n.root, "kube-apiserver")))
        .collect();
    let mut kept: BTreeMap<String, Kept> = BTreeMap::new();
    let mut rx = store.subscribe();
    // A look at every pod only when something asks for one: pods changed, a kubelet or
    // the signing API server restarted, a token is due, or a pod was left waiting.
    let mut again = Look {
        next_due: None,
        pending: true,
    };
    let mut last_signer: Option<String> = None;
    let mut tick = tokio::time::interval(LOOK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let Some(batch) = next_look(&mut tick, &mut rx).await else {
            return;
        };
        let mut restarted = false;
        for w in kubelets.iter_mut() {
            restarted |= w.poll();
        }
        for (_, w) in apis.iter_mut() {
            w.poll();
        }
        let signer = apis.iter().find_map(|(i, w)| {
            let held = w.held.as_ref()?;
            if !Machine::open(&nodes[*i].root).up("kube-apiserver") {
                return None;
            }
            let flags = held.flags("kube-apiserver");
            let key = held.file(flags.get("service-account-signing-key-file")?)?;
            String::from_utf8(key).ok()
        });
        let pods_changed = batch.lagged || batch.events.iter().any(|e| e.resource == "pods");
        let due = again.next_due.is_some_and(|t| tokens::unix_now() >= t);
        if !(pods_changed || restarted || due || again.pending || signer != last_signer) {
            continue;
        }
        last_signer.clone_from(&signer);
        let generations: Vec<Option<u64>> = kubelets
            .iter()
            .map(|w| w.held.as_ref().map(|h| h.generation))
            .collect();
        let (s, n) = (store.clone(), nodes.clone());
        let mut k = std::mem::take(&mut kept);
        let done = tokio::task::spawn_blocking(move || {
            let pods = s.list("pods", None);
            let r = pass(&n, &generations, &pods, signer.as_deref(), &mut k);
            (k, r)
        })
        .await;
        match done {
            Ok((k, r)) => {
                kept = k;
                match r {
                    Ok(look) => again = look,
                    Err(e) => {
                        again.pending = true;
                        warn(NAME, e);
                    }
                }
            }
            Err(_) => return,
        }
    }
}

/// When the next look is needed.
struct Look {
    /// The earliest time a held token is due for renewal.
    next_due: Option<i64>,
    /// A pod is left without a token (its kubelet is down, no API server signs).
    pending: bool,
}

/// One look at every pod's token.
fn pass(
    nodes: &[SandboxNode],
    generations: &[Option<u64>],
    pods: &[Value],
    signer: Option<&str>,
    kept: &mut BTreeMap<String, Kept>,
) -> Result<Look, String> {
    let now = tokens::unix_now();
    let ttl = lifetime();
    let mut pending = false;
    let mut live: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut up: BTreeMap<&str, bool> = BTreeMap::new();
    for pod in pods {
        let (Some(uid), Some(node), Some(volume)) = (
            pod["metadata"]["uid"].as_str(),
            pod["spec"]["nodeName"].as_str(),
            volume(pod),
        ) else {
            continue;
        };
        let Some(i) = nodes.iter().position(|n| n.name == node) else {
            continue;
        };
        live.entry(&nodes[i].name)
            .or_default()
            .insert(uid.to_string());
        let Some(generation) = generations[i] else {
            pending = true;
            continue;
        };
        let running = *up
            .entry(&nodes[i].name)
            .or_insert_with(|| Machine::open(&nodes[i].root).up("kubelet"));
        if !running {
            pending = true;
            continue;
        }
        let due = match kept.get(uid) {
            None => true,
            Some(k) => k.kubelet != generation || now >= renew_at(k.iat, ttl),
        };
        if !due {
            continue;
        }
        let Some(key) = signer else {
            pending = true;
            continue;
        };
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default");
        let extended = ttl == DEFAULT_LIFETIME;
        let sa = pod["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let claims = Claims {
            iss: tokens::ISSUER.into(),
            sub: format!("system:serviceaccount:{namespace}:{sa}"),
            aud: vec![tokens::ISSUER.into()],
            iat: now,
            nbf: now,
            exp: now + if extended { EXTENDED } else { ttl },
            kubernetes: Bound {
                namespace: namespace.into(),
                pod: Ref {
                    name: pod["metadata"]["name"].as_str().unwrap_or_default().into(),
                    uid: uid.into(),
                },
                serviceaccount: Ref {
                    name: sa.into(),
                    uid: String::new(),
                },
                // An extended token says when the hour the kubelet asked for ends.
                warnafter: extended.then_some(now + ttl),
            },
        };
        let token = tokens::sign(key, &claims)?;
        let at = runtime::host(&nodes[i].root, &crate::layout::pod_token(uid, &volume));
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        crate::atomic::write(&at, token.as_bytes(), crate::atomic::KEY_MODE)
            .map_err(|e| format!("{}: {e}", at.display()))?;
        kept.insert(
            uid.to_string(),
            Kept {
                iat: now,
                kubelet: generation,
            },
        );
    }
    // The pods gone from each node: their directories go too.
    for n in nodes {
        let dir = n.root.join("var/lib/kubelet/pods");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mine = live.get(n.name.as_str());
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if !mine.is_some_and(|m| m.contains(&uid)) {
                let _ = std::fs::remove_dir_all(e.path());
                kept.remove(&uid);
            }
        }
    }
    Ok(Look {
        next_due: kept.values().map(|k| renew_at(k.iat, ttl)).min(),
        pending,
    })
}
