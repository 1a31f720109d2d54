//! The sandbox's simulated controllers: the parts of a cluster that keep API objects in
//! step with what its processes hold. They run in the API server's process, act on the
//! [`Store`] directly and follow the simulated processes through their held state
//! ([`runtime::held`]), never through the live files on disk: a controller manager that
//! has not restarted still publishes the CA it read at its last start.
//!
//! - [`root_ca`]: the controller manager's root-CA publisher (`kube-root-ca.crt` in every
//!   namespace, `ca.crt` of legacy token secrets);
//! - [`extension_auth`]: the API server's `extension-apiserver-authentication`;
//! - [`rollout`]: Deployments, DaemonSets and StatefulSets replace their pods when their
//!   template changes, one at a time, respecting PodDisruptionBudgets;
//! - [`disruption`]: PodDisruptionBudget status;
//! - [`kubelet`]: every running kubelet keeps its Node object posted;
//! - [`tokens`]: every running kubelet holds a service-account token per pod;
//! - [`legacy_tokens`]: the controller manager signs a token into every legacy token
//!   secret that has none;
//! - [`csr_signer`]: the controller manager signs approved certificate signing requests
//!   for the `kubernetes.io/*` signers.
//!
//! Each controller counts its completed passes ([`Controllers::passes`],
//! [`Controllers::reconciles`]): the witness a test waits for before it asserts that a
//! controller, having had its chance, did *not* act.

pub mod csr_signer;
pub mod disruption;
pub mod extension_auth;
pub mod kubelet;
pub mod legacy_tokens;
mod queue;
pub mod rollout;
pub mod root_ca;
pub mod tokens;

use super::apiserver::store::{Event, Manager, Store, WriteOptions};
use super::runtime::{self, Held};
use super::{Sandbox, SandboxNode};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::task::JoinHandle;

/// Timings of the simulated controllers.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often held process state is polled for restarts.
    pub poll: Duration,
    /// Pause after each pod replacement of a rollout (makes rollouts observable).
    pub rollout_step: Duration,
    /// How often kubelets refresh their Node's `lastHeartbeatTime`.
    pub heartbeat: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(100),
            rollout_step: Duration::from_millis(20),
            heartbeat: Duration::from_secs(10),
        }
    }
}

/// How many passes each controller has completed, by key: a controller's name (see
/// [`Controllers::passes`]) or `name/namespace` (see [`Controllers::reconciles`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Passes(Arc<Mutex<HashMap<String, u64>>>);

impl Passes {
    /// One more pass of `controller`.
    fn done(&self, controller: &str) {
        self.add(controller.to_string());
    }

    /// One more reconcile of `namespace` by `controller`.
    fn reconciled(&self, controller: &str, namespace: &str) {
        self.add(format!("{controller}/{namespace}"));
    }

    fn add(&self, key: String) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(key).or_default() += 1;
    }

    fn get(&self, key: &str) -> u64 {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.get(key).copied().unwrap_or(0)
    }
}

/// The running controllers. Dropping the handle stops them.
#[derive(Debug)]
pub struct Controllers {
    tasks: Vec<JoinHandle<()>>,
    passes: Passes,
}

impl Controllers {
    /// How many passes `controller` has completed since it started. A pass of
    /// [`root_ca::NAME`] or [`extension_auth::NAME`] is one poll of the held process state
    /// with the publishing it called for; of [`rollout::NAME`] or [`disruption::NAME`], one
    /// batch of namespaces reconciled. Once the count has grown by two after a change, a
    /// whole pass began after that change and has finished.
    pub fn passes(&self, controller: &str) -> u64 {
        self.passes.get(controller)
    }

    /// How many times `controller` ([`rollout::NAME`] or [`disruption::NAME`]) has
    /// finished reconciling `namespace`.
    pub fn reconciles(&self, controller: &str, namespace: &str) -> u64 {
        self.passes.get(&format!("{controller}/{namespace}"))
    }

    /// Stop every controller now (they finish in the background).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    /// Stop every controller and wait until they are gone, with the store clones they
    /// hold (a reconcile already running off the async threads still finishes first).
    pub async fn stop(mut self) {
        self.abort();
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Start every simulated controller for sandbox `dir` on the current tokio runtime, with
/// the default [`Options`]. Each reconciles everything once at start. They run until the
/// returned handle is dropped. Must be called from within a tokio runtime.
pub fn spawn(dir: &Path, store: Store) -> Controllers {
    spawn_with(dir, store, Options::default())
}

/// [`spawn`] with explicit timings.
pub fn spawn_with(dir: &Path, store: Store, options: Options) -> Controllers {
    let dir = dir.to_path_buf();
    let passes = Passes::default();
    let tasks = vec![
        tokio::spawn(root_ca::run(
            dir.clone(),
            store.clone(),
            options.clone(),
            passes.clone(),
        )),
        tokio::spawn(extension_auth::run(
            dir.clone(),
            store.clone(),
            options.clone(),
            passes.clone(),
        )),
        tokio::spawn(rollout::run(
            dir.clone(),
            store.clone(),
            options.clone(),
            passes.clone(),
        )),
        tokio::spawn(disruption::run(
            store.clone(),
            options.clone(),
            passes.clone(),
        )),
        tokio::spawn(tokens::run(dir.clone(), store.clone(), options.clone())),
        tokio::spawn(csr_signer::run(
            dir.clone(),
            store.clone(),
            options.clone(),
            passes.clone(),
        )),
        tokio::spawn(legacy_tokens::run(
            dir.clone(),
            store.clone(),
            options.clone(),
            passes.clone(),
        )),
        tokio::spawn(kubelet::run(dir, store, options)),
    ];
    Controllers { tasks, passes }
}

/// The sandbox's nodes; waits (polling) until `sandbox.json` is readable.
async fn nodes(dir: &Path, poll: Duration) -> Vec<SandboxNode> {
    loop {
        match Sandbox::load(dir) {
            Ok(sb) => return sb.nodes,
            Err(_) => tokio::time::sleep(poll).await,
        }
    }
}

/// Follows one simulated process: notices a restart by the state file's identity
/// (inode, size, mtime) before reading and parsing it.
#[derive(Debug)]
struct HeldWatch {
    path: PathBuf,
    root: PathBuf,
    component: &'static str,
    stamp: Option<(u64, u64, i64, i64)>,
    held: Option<Held>,
}

impl HeldWatch {
    fn new(root: &Path, component: &'static str) -> Self {
        Self {
            path: root
                .join(runtime::RUN_DIR)
                .join(format!("{component}.json")),
            root: root.to_path_buf(),
            component,
            stamp: None,
            held: None,
        }
    }

    /// Re-read the state if its file changed; true when the held generation changed
    /// (including starting or vanishing).
    fn poll(&mut self) -> bool {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()));
        if stamp == self.stamp && (stamp.is_some() == self.held.is_some()) {
            return false;
        }
        self.stamp = stamp;
        let before = self.held.as_ref().map(|h| h.generation);
        self.held = runtime::held(&self.root, self.component);
        before != self.held.as_ref().map(|h| h.generation)
    }
}

/// The controller managers of the control planes, followed through their held state;
/// the leader is the first control plane's that runs (what [`legacy_tokens`] and
/// [`csr_signer`] sign with).
struct KcmLeader {
    nodes: Vec<SandboxNode>,
    watches: Vec<HeldWatch>,
}

impl KcmLeader {
    async fn new(dir: &Path, poll: Duration) -> Self {
        let nodes: Vec<SandboxNode> = nodes(dir, poll)
            .await
            .into_iter()
            .filter(|n| n.role == super::Role::ControlPlane)
            .collect();
        let watches = nodes.iter().map(|n| HeldWatch::new(&n.root, KCM)).collect();
        Self { nodes, watches }
    }

    /// Re-read the held states; true when one restarted.
    fn poll(&mut self) -> bool {
        let mut restarted = false;
        for w in &mut self.watches {
            restarted |= w.poll();
        }
        restarted
    }

    /// What the leader holds: its flags and the files it read at its start.
    fn held(&self) -> Option<&Held> {
        self.watches.iter().zip(&self.nodes).find_map(|(w, n)| {
            let held = w.held.as_ref()?;
            super::node::Machine::open(&n.root).up(KCM).then_some(held)
        })
    }
}

/// Store events, taken in batches: a burst of thousands of writes wakes a controller a
/// few times, not once per write.
#[derive(Debug, Default)]
struct Batch {
    events: Vec<Event>,
    /// Events were missed: the controller must look at everything again.
    lagged: bool,
    /// The store is gone.
    closed: bool,
}

/// How long a controller lets a burst of events accumulate before it acts.
const BATCH_WINDOW: Duration = Duration::from_millis(10);

/// After `first` (what `rx.recv()` gave), take everything that arrives within
/// [`BATCH_WINDOW`]. Call it in a `select!` arm's body, where it is not cancelled.
async fn settle(first: Result<Event, RecvError>, rx: &mut broadcast::Receiver<Event>) -> Batch {
    let mut batch = Batch::default();
    match first {
        Ok(e) => batch.events.push(e),
        Err(RecvError::Lagged(_)) => batch.lagged = true,
        Err(RecvError::Closed) => {
            batch.closed = true;
            return batch;
        }
    }
    tokio::time::sleep(BATCH_WINDOW).await;
    drain(rx, &mut batch);
    batch
}

/// A controller's next look: wait for `tick`, then take the store events since the last
/// one. `None`: the store is gone.
async fn next_look(
    tick: &mut tokio::time::Interval,
    rx: &mut broadcast::Receiver<Event>,
) -> Option<Batch> {
    tick.tick().await;
    let mut batch = Batch::default();
    drain(rx, &mut batch);
    (!batch.closed).then_some(batch)
}

/// Take what is waiting, without waiting.
fn drain(rx: &mut broadcast::Receiver<Event>, batch: &mut Batch) {
    loop {
        match rx.try_recv() {
            Ok(e) => batch.events.push(e),
            Err(TryRecvError::Lagged(_)) => batch.lagged = true,
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Closed) => {
                batch.closed = true;
                return;
            }
        }
    }
}

/// The field manager of the controller manager's writes.
const KCM: &str = "kube-controller-manager";

/// Write options that record `manager` (and the subresource written) in
/// `metadata.managedFields`, as the real component's writes do.
fn by(manager: &str, subresource: Option<&str>) -> WriteOptions {
    WriteOptions {
        manager: Some(Manager {
            name: manager.into(),
            operation: "Update".into(),
            subresource: subresource.map(str::to_string),
        }),
        dry_run: false,
    }
}

/// Print a controller's failure (the sandbox's log). Never holds key material: only
/// store errors and object names reach here.
fn warn(controller: &str, what: impl std::fmt::Display) {
    eprintln!("sandbox {controller}: {what}");
}
