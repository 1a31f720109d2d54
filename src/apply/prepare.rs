//! What an apply prepares before its walk, and what it reports after, apart from the
//! command line: whether a saved plan is stale, the nodes and their transports, the CA
//! material, the leftovers of a killed run, an earlier journal of the same plan id, the
//! live prober, and the join hash to print.

use super::journal::{self, Progress as Journaled};
use super::material::{Material, key_block};
use super::probe;
use crate::config::{Authority, Loaded};
use crate::exec::{self, Node};
use crate::observe;
use crate::plan::{self, Op, Plan};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What changed since the plan was made; empty if nothing.
pub fn staleness(plan: &Plan, loaded: &Loaded, snap: &crate::snapshot::Snapshot) -> Vec<String> {
    let mut out = vec![];
    if plan.config_hash != loaded.hash {
        out.push(format!(
            "{} changed since the plan was made",
            loaded.path.display()
        ));
    }
    if plan.snapshot_fingerprint != snap.fingerprint {
        let now = plan::observed(snap);
        let mut changed: Vec<String> = vec![];
        for (k, v) in &now {
            match plan.observed.get(k) {
                Some(old) if old == v => {}
                Some(_) => changed.push(format!("{k} changed")),
                None => changed.push(format!("{k} is new")),
            }
        }
        for k in plan.observed.keys().filter(|k| !now.contains_key(*k)) {
            changed.push(format!("{k} is gone"));
        }
        if changed.is_empty() {
            changed.push("the cluster's snapshot differs".into());
        }
        let more = changed.len().saturating_sub(8);
        changed.truncate(8);
        if more > 0 {
            changed.push(format!("and {more} more"));
        }
        out.extend(changed);
    }
    out
}

pub fn nodes_of(loaded: &Loaded) -> miette::Result<BTreeMap<String, Node>> {
    Ok(crate::observe::targets(loaded)?
        .into_iter()
        .map(|t| {
            let copies = t.kubeconfigs.into_iter().map(|k| k.path).collect();
            (
                t.name.clone(),
                Node::new(&t.name, t.transport, t.root).with_kubeconfigs(copies),
            )
        })
        .collect())
}

/// The observe targets of `loaded`, each reached through its node in `views`
/// ([`exec::read_views`]: what was read once is not read again).
pub fn targets_on(
    loaded: &Loaded,
    views: &BTreeMap<String, Node>,
) -> miette::Result<Vec<crate::observe::NodeTarget>> {
    let mut targets = crate::observe::targets(loaded)?;
    for t in &mut targets {
        if let Some(v) = views.get(&t.name) {
            t.transport = v.transport.clone();
        }
    }
    Ok(targets)
}

/// CA certificates and keys: trustform.yaml's `cas`, the nodes' CA files and keys (from
/// `views`, see [`exec::read_views`]), and this plan's backups.
pub fn material(
    loaded: &Loaded,
    views: &BTreeMap<String, Node>,
    backup: Option<&Path>,
) -> Material {
    let mut m = Material::default();
    for (name, ca) in &loaded.config.cas {
        if let Some(c) = &ca.cert
            && let Ok(t) =
                crate::input::read_text(&loaded.resolve_path(&c.value), crate::input::Kind::Config)
        {
            m.add_certs(&t, name);
        }
        if let Some(k) = &ca.public_key
            && let Ok(t) =
                crate::input::read_text(&loaded.resolve_path(&k.value), crate::input::Kind::Config)
        {
            m.add_public_keys(&t, name);
        }
    }
    let mut keys = vec![];
    for (name, ca) in &loaded.config.cas {
        if let Some(k) = &ca.key
            && let Ok(t) =
                crate::input::read_text(&loaded.resolve_path(k), crate::input::Kind::Config)
            && let Some(key) = key_block(&t, name)
        {
            keys.push((key, name.clone()));
        }
    }
    for node in views.values() {
        for auth in Authority::ALL {
            for (path, is_key) in [(auth.ca_file(), false), (auth.key_file(), true)] {
                let mut texts = vec![];
                if let Ok(Some(b)) = exec::files::read(node, path) {
                    texts.push(b);
                }
                if let Some(backup) = backup
                    && let Ok(b) = crate::input::read(
                        &backup.join(&node.name).join(crate::layout::rel(path)),
                        crate::input::Kind::NodeFile,
                    )
                {
                    texts.push(b);
                }
                for b in texts {
                    let Ok(t) = String::from_utf8(b) else {
                        continue;
                    };
                    if is_key {
                        if let Some(k) = key_block(&t, path) {
                            keys.push((k, format!("{}:{path}", node.name)));
                        }
                    } else {
                        m.add_certs(&t, path);
                        m.add_public_keys(&t, path);
                    }
                }
            }
        }
    }
    for (k, what) in keys {
        m.add_key(k, &what);
    }
    m
}

/// The newest apply that ran and neither finished nor was rolled back.
pub fn unfinished(state: &Path) -> Option<String> {
    journal::list(state)
        .into_iter()
        .filter(|(_, id)| {
            let p = Journaled::of(&journal::read(&journal::path(state, id)).unwrap_or_default());
            p.finished != Some(true) && !p.rolled_back && p.runs > 0
        })
        .max()
        .map(|(_, id)| id)
}

/// When the plan moves the kubernetes authority to a new issuer: the
/// `--discovery-token-ca-cert-hash` that `kubeadm join` needs from then on (`sha256:` of
/// the issuer's SubjectPublicKeyInfo, as `kubeadm token create --print-join-command`
/// prints it).
pub fn discovery_hash(plan: &Plan, material: &Material) -> Option<String> {
    let issuer = plan
        .steps
        .iter()
        .flat_map(|s| &s.ops)
        .filter_map(|op| match op {
            Op::Verify {
                authority: Authority::Kubernetes,
                issuer,
                ..
            } => Some(issuer),
            _ => None,
        })
        .next_back()?;
    let changes = plan
        .authorities
        .iter()
        .any(|a| a.authority == "kubernetes" && a.from.issuer != a.to.issuer);
    changes.then(|| {
        material
            .get(issuer)
            .map(|ca| ca.cert.facts.public_key.0.clone())
    })?
}

/// Under the lock, nothing of ours is being written: remove the temp files a killed
/// apply or rotate left in the state directory, beside trustform.yaml, and in the node
/// directories this plan writes.
pub fn remove_leftovers(
    loaded: &Loaded,
    state: &Path,
    nodes: &BTreeMap<String, Node>,
    plan: &Plan,
) -> Vec<String> {
    let shown = |p: PathBuf| p.display().to_string();
    let mut out: Vec<String> = crate::atomic::remove_leftovers(state, true)
        .into_iter()
        .chain(crate::atomic::remove_leftovers(&loaded.dir, false))
        .map(shown)
        .collect();
    let mut dirs: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for op in plan.steps.iter().flat_map(|s| &s.ops) {
        let (node, path) = match op {
            Op::Set {
                node: Some(n),
                path,
                ..
            } => (n.as_str(), path.as_str()),
            Op::Restart { node, .. } => (node.as_str(), "/etc/kubernetes/manifests/x"),
            // Cluster objects, gates, and manual restarts (trustform writes nothing there).
            _ => continue,
        };
        if let Some((dir, _)) = path.rsplit_once('/') {
            dirs.entry(node).or_default().insert(dir);
        }
    }
    // One round trip per node, many nodes at once.
    let per_node: Vec<(&Node, Vec<&str>)> = dirs
        .into_iter()
        .filter_map(|(name, dirs)| Some((nodes.get(name)?, dirs.into_iter().collect())))
        .collect();
    out.extend(
        crate::parallel::map(&per_node, 16, |(node, dirs)| {
            exec::files::remove_leftovers(node, dirs)
        })
        .into_iter()
        .flatten(),
    );
    out
}

/// Move an old journal and backup of the same plan id aside (a plan made again after a
/// rollback has the same id).
pub fn archive(state: &Path, id: &str) -> std::io::Result<()> {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let j = journal::path(state, id);
    if j.exists() {
        std::fs::rename(&j, j.with_extension(format!("jsonl.{stamp}")))?;
    }
    let b = state.join("backup").join(id);
    if b.exists() {
        std::fs::rename(&b, state.join("backup").join(format!("{id}.{stamp}")))?;
    }
    Ok(())
}

/// Start the live prober beside an apply on the sandbox: the edges of the cluster as
/// observed now, the CAs the apply knows (to resolve what pods trust), and the API to
/// re-list pods.
pub fn start_probe(
    loaded: &Loaded,
    nodes: &BTreeMap<String, Node>,
    endpoints: super::endpoints::Endpoints,
    material: &Material,
) -> miette::Result<probe::Prober> {
    let access = crate::exec::kube::Access::of(loaded);
    let snap = observe::observe_with(&crate::observe::targets(loaded)?, access.as_ref())?;
    let input = probe::Input::new(&snap, nodes.clone(), endpoints, material.pems(), access);
    Ok(probe::Prober::start(input, probe::Options::default())?)
}
