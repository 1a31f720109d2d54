//! The kubelets' Node status. Every node of `sandbox.json` whose kubelet process is
//! running keeps a Node object: registered at its first start, Ready, with
//! `lastHeartbeatTime` refreshed every heartbeat period and at each kubelet restart, and
//! the kubelet's held generation in [`objects::KUBELET_GENERATION`].

use super::{HeldWatch, Options, by, next_look, warn};
use crate::sandbox::SandboxNode;
use crate::sandbox::apiserver::store::{EventKind, Store, StoreError};
use crate::sandbox::objects;
use std::path::PathBuf;
use tokio::time::Instant;

const NAME: &str = "kubelet";

/// Register or refresh the Node object of `node` (index `index` in `sandbox.json`),
/// posted by a kubelet of this generation.
pub fn post(store: &Store, node: &SandboxNode, index: usize, generation: u64) {
    let desired = objects::node(node, index, generation, &objects::now());
    let result = match store.get("nodes", None, &node.name) {
        None => store
            .create_with("nodes", desired, &by(NAME, None))
            .map(drop),
        Some(_) => store
            .mutate_with(
                "nodes",
                None,
                &node.name,
                &by(NAME, Some("status")),
                |existing| {
                    objects::post_node_status(existing, &desired);
                    Ok(())
                },
            )
            .map(drop),
    };
    match result {
        Ok(()) | Err(StoreError::AlreadyExists { .. } | StoreError::NotFound { .. }) => {}
        Err(e) => warn(NAME, format!("{}: {e}", node.name)),
    }
}

/// Run until aborted.
pub(super) async fn run(dir: PathBuf, store: Store, options: Options) {
    let nodes = super::nodes(&dir, options.poll).await;
    let mut watches: Vec<HeldWatch> = nodes
        .iter()
        .map(|n| HeldWatch::new(&n.root, NAME))
        .collect();
    let mut rx = store.subscribe();
    let mut tick = tokio::time::interval(options.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_heartbeat = Instant::now();
    loop {
        let Some(batch) = next_look(&mut tick, &mut rx).await else {
            return;
        };
        // A deleted Node is registered again by its kubelet (at once, not at the next
        // heartbeat).
        let deleted: Vec<&str> = batch
            .events
            .iter()
            .filter(|ev| ev.resource == "nodes" && ev.kind == EventKind::Deleted)
            .map(|ev| ev.name.as_str())
            .collect();
        let beat = Instant::now() >= next_heartbeat || batch.lagged;
        if beat {
            next_heartbeat = Instant::now() + options.heartbeat;
        }
        for (i, (node, w)) in nodes.iter().zip(watches.iter_mut()).enumerate() {
            let restarted = w.poll();
            if let Some(h) = &w.held
                && (beat || restarted || deleted.contains(&node.name.as_str()))
            {
                post(&store, node, i, h.generation);
            }
        }
    }
}
