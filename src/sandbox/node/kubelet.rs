//! The simulated kubelet, its systemd unit and the container runtime of one node: a
//! state machine driven by timestamps (see the parent module), kept in
//! `run/trustform-sandbox/node/state.json` of the node root.
//!
//! **kubelet.service** (`Restart=always`): `systemctl restart` stops it at once
//! (`activating`) and starts it after one restart time; a start that does not fit (see
//! [`super::fit`]) exits 1 and is restarted after `RestartSec` (10 s scaled: one back-off
//! unit), NRestarts counting. Static pods keep running while the kubelet is down; only a
//! running kubelet notices manifest changes.
//!
//! **Static pods**: a manifest whose bytes (their SHA-256, not the mtime) differ from
//! what the running pod was made from has its pod killed at once (`SANDBOX_NOTREADY`,
//! container `CONTAINER_EXITED`), and a new pod created one restart time later, whose
//! container starts the process ([`runtime::restart`]: it reads its files). A container
//! whose files do not fit exits 1 and is restarted with the kubelet's back-off (10 s
//! doubling to 5 min, scaled by the restart time: see [`RestartTime::backoff`]); its pod
//! sandbox stays `SANDBOX_READY`, as a crash-looping pod's does.
//!
//! **Restarts from outside** (a held state newer than the last one this node saw:
//! `sandbox create`, or a caller of [`runtime::restart`]) are taken as the process having
//! been restarted by whoever did it: a new pod (or kubelet) made from what it read.

use super::fit;
use super::logs::{self, Nanos};
use super::timing::RestartTime;
use crate::layout;
use crate::sandbox::runtime::{self, Held, Stamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Kubernetes version the simulated components report.
pub const VERSION: &str = "v1.32.4";

/// How many killed pods of one static pod are kept (the kubelet's garbage collector
/// removes older ones).
const KEEP_DEAD_PODS: usize = 2;

/// How many containers of one pod are kept (the current one and the dead ones before
/// it, for `crictl logs --previous`).
const KEEP_CONTAINERS: usize = 3;

/// At most this many missed events are replayed per reconcile (a node nobody looked at
/// for long catches up in bounded time).
const CATCH_UP: usize = 16;

/// The unit's state, as `systemctl is-active` prints it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActiveState {
    /// Running.
    Active,
    /// Starting, or waiting to be restarted.
    Activating,
    /// Stopped (never started).
    #[default]
    Inactive,
    /// Stopped after a failure.
    Failed,
}

impl ActiveState {
    /// As systemd prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActiveState::Active => "active",
            ActiveState::Activating => "activating",
            ActiveState::Inactive => "inactive",
            ActiveState::Failed => "failed",
        }
    }
}

/// What a node last saw of a process's held state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The held state's generation.
    pub generation: u64,
    /// Its file's identity.
    pub stamp: Option<Stamp>,
}

/// kubelet.service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// `ActiveState`.
    pub state: ActiveState,
    /// `SubState`: `running`, `auto-restart`, `start`, `dead`, `failed`.
    pub sub: String,
    /// `MainPID` (0 when not running).
    pub main_pid: u32,
    /// The last main process (for `status` after it exited).
    pub last_pid: u32,
    /// When it last became active.
    pub active_enter: Nanos,
    /// When it last left `active`.
    pub active_exit: Nanos,
    /// When the state last changed.
    pub changed: Nanos,
    /// `NRestarts`: automatic restarts.
    pub n_restarts: u32,
    /// When the next start happens (activating).
    pub due: Option<Nanos>,
    /// Whether that start is an automatic restart after a failure.
    pub auto: bool,
    /// Why the last start failed.
    pub failure: Option<String>,
    /// The kubelet's held state, as last seen.
    pub held: Seen,
}

/// A container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// 64 hex digits.
    pub id: String,
    /// Restart count: 0 for a pod's first container.
    pub attempt: u32,
    /// Created and started.
    pub created: Nanos,
    /// When it exited.
    pub finished: Option<Nanos>,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Why it exited (`Completed`, `Error`).
    pub reason: String,
    /// Its lines in the component's log: from this byte offset …
    pub log_from: u64,
    /// … to this one once it exited.
    pub log_to: Option<u64>,
}

impl Container {
    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.finished.is_none()
    }
}

/// A static pod's pod sandbox.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// 64 hex digits.
    pub id: String,
    /// `kubernetes.io/config.hash` (also the pod UID): the manifest it was made from.
    pub hash: String,
    /// `kubernetes.io/config.seen`.
    pub seen: Nanos,
    /// Created.
    pub created: Nanos,
    /// `SANDBOX_READY` (until killed).
    pub ready: bool,
    /// The manifest's `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The manifest's `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// The container's image.
    pub image: String,
    /// Its containers, oldest first: the last is the current one.
    pub containers: Vec<Container>,
    /// When the crashed container is restarted.
    pub retry: Option<Nanos>,
}

impl Pod {
    /// The current container.
    pub fn container(&self) -> Option<&Container> {
        self.containers.last()
    }

    /// Ready in the Kubernetes sense: sandbox ready and its container running.
    pub fn serving(&self) -> bool {
        self.ready && self.container().is_some_and(Container::running)
    }
}

/// A manifest the kubelet has seen and will make a pod of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Its hash.
    pub hash: String,
    /// When it was seen.
    pub seen: Nanos,
    /// When the pod is created.
    pub due: Nanos,
}

/// One static pod's history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Its pods, oldest first.
    pub pods: Vec<Pod>,
    /// A pod to be created.
    pub pending: Option<Pending>,
    /// The process's held state, as last seen.
    pub held: Seen,
}

/// A node's machine state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// When the machine "booted" (for monotonic timestamps).
    pub boot: Nanos,
    /// The last PID given out.
    pub last_pid: u32,
    /// kubelet.service (nodes with a kubelet configuration).
    pub kubelet: Unit,
    /// Static pods by component.
    pub pods: BTreeMap<String, Slot>,
}

impl State {
    /// Nanoseconds since boot, as `…TimestampMonotonic` properties count them (µs).
    pub fn monotonic_us(&self, t: Nanos) -> i64 {
        if t == 0 {
            0
        } else {
            (t - self.boot).max(0) / 1000
        }
    }

    fn pid(&mut self) -> u32 {
        self.last_pid = if self.last_pid < 1000 {
            1000 + (super::random_u64() % 3000) as u32
        } else {
            self.last_pid + 1 + (super::random_u64() % 40) as u32
        };
        self.last_pid
    }
}

/// The state file, relative to the node root.
pub const STATE: &str = "run/trustform-sandbox/node/state.json";
const LOCK: &str = "run/trustform-sandbox/node/lock";

/// One node's machine: its root, name and restart time.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The node's `/`.
    pub root: PathBuf,
    /// Its name (pods are `<component>-<name>`).
    pub name: String,
    /// How long restarts take.
    pub restart: RestartTime,
}

fn dur(d: Duration) -> Nanos {
    d.as_nanos().min(i64::MAX as u128) as Nanos
}

/// A stable hash of a manifest's bytes (32 hex digits, as the kubelet's config hash).
pub fn config_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(bytes)[..16])
}

/// When a process restarted from outside started: its held state's time (not later
/// than `now`).
fn started_at(held: &Held, now: Nanos) -> Nanos {
    logs::parse_rfc3339(&held.restarted_at)
        .unwrap_or(now)
        .min(now)
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The metadata of a manifest the pod shows.
#[derive(Default)]
struct Meta {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    image: String,
}

fn meta(text: &str) -> Meta {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Pod {
        metadata: M,
        spec: S,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct M {
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct S {
        containers: Vec<C>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct C {
        image: String,
    }
    let p: Pod = serde_saphyr::from_str(text).unwrap_or_default();
    Meta {
        labels: p.metadata.labels,
        annotations: p.metadata.annotations,
        image: p
            .spec
            .containers
            .into_iter()
            .next()
            .map(|c| c.image)
            .unwrap_or_default(),
    }
}

impl Machine {
    /// The machine of node root `root` (`DIR/nodes/<name>`): its name from `sandbox.json`
    /// (else the directory's name), its restart time from `sandbox.json` or
    /// [`super::timing::ENV`].
    pub fn open(root: &Path) -> Self {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let sandbox = root
            .parent()
            .and_then(Path::parent)
            .and_then(|d| crate::sandbox::Sandbox::load(d).ok());
        let name = sandbox
            .as_ref()
            .and_then(|s| {
                s.nodes
                    .iter()
                    .find(|n| n.root == root)
                    .map(|n| n.name.clone())
            })
            .or_else(|| root.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "node".into());
        let restart = sandbox.map(|s| s.restart_time).unwrap_or_default().or_env();
        Self {
            root,
            name,
            restart,
        }
    }

    fn lock(&self) -> std::io::Result<std::fs::File> {
        let path = self.root.join(LOCK);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        f.lock()?;
        Ok(f)
    }

    /// The state as last saved (no reconcile).
    pub fn load(&self) -> State {
        std::fs::read(self.root.join(STATE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Bring the node up to now, save it, and return it.
    pub fn reconcile(&self) -> std::io::Result<State> {
        self.reconcile_at(logs::now())
    }

    /// [`Machine::reconcile`] at time `now`.
    pub fn reconcile_at(&self, now: Nanos) -> std::io::Result<State> {
        self.with(now, |_, _| ()).map(|(st, ())| st)
    }

    /// Reconcile, then apply `f` to the state (under the node's lock), save, and return
    /// the state and what `f` returned.
    pub fn with<T>(
        &self,
        now: Nanos,
        f: impl FnOnce(&Self, &mut State) -> T,
    ) -> std::io::Result<(State, T)> {
        let _lock = self.lock()?;
        let mut st = self.load();
        let before = st.clone();
        self.step(&mut st, now);
        let out = f(self, &mut st);
        self.step(&mut st, now);
        if st != before {
            let json = serde_json::to_vec_pretty(&st).map_err(std::io::Error::other)?;
            crate::atomic::write(&self.root.join(STATE), &json, crate::atomic::PUBLIC_MODE)?;
        }
        Ok((st, out))
    }

    /// Whether the node has a kubelet.
    pub fn has_kubelet(&self) -> bool {
        self.root.join(layout::KUBELET_CONFIG).is_file()
    }

    /// The node's static pods: its manifests (`*.yaml`).
    pub fn manifests(&self) -> Vec<String> {
        runtime::components(&self.root)
            .into_iter()
            .filter(|c| c != "kubelet")
            .collect()
    }

    fn manifest_path(component: &str) -> String {
        layout::manifest(component)
    }

    fn manifest(&self, component: &str) -> Option<Vec<u8>> {
        let host = crate::transport::resolve(&self.root, &Self::manifest_path(component)).ok()?;
        std::fs::read(host).ok()
    }

    /// A restart from outside: the held state is newer than the last one seen.
    fn poll(&self, component: &str, seen: &mut Seen) -> Option<Held> {
        let stamp = runtime::stamp(&self.root, component);
        if stamp == seen.stamp {
            return None;
        }
        seen.stamp = stamp;
        let held = runtime::held(&self.root, component)?;
        if held.generation == seen.generation {
            return None;
        }
        seen.generation = held.generation;
        Some(held)
    }

    /// Start `component`'s process now: it reads its files; `Err` says why it exits.
    fn start_process(&self, component: &str, seen: &mut Seen) -> Result<(), String> {
        let held = runtime::restart(&self.root, component).map_err(|e| {
            let what = if component == "kubelet" {
                format!("/{}", layout::KUBELET_CONFIG)
            } else {
                Self::manifest_path(component)
            };
            format!("open {what}: {e}")
        })?;
        seen.generation = held.generation;
        seen.stamp = runtime::stamp(&self.root, component);
        self.fits(component, &held)
    }

    fn fits(&self, component: &str, held: &Held) -> Result<(), String> {
        if self.real(component) {
            // A real process: it says for itself whether it starts.
            return Ok(());
        }
        if component == "kubelet" {
            fit::kubelet(held)
        } else {
            fit::static_pod(&self.root, component, held)
        }
    }

    fn step(&self, st: &mut State, now: Nanos) {
        if st.boot == 0 {
            let first = runtime::components(&self.root)
                .iter()
                .filter_map(|c| runtime::held(&self.root, c))
                .filter_map(|h| logs::parse_rfc3339(&h.restarted_at))
                .min()
                .unwrap_or(now);
            st.boot = first.min(now) - 30_000_000_000;
        }
        if self.has_kubelet() {
            self.kubelet_step(st, now);
        }
        let mut components = self.manifests();
        components.extend(st.pods.keys().cloned());
        components.sort();
        components.dedup();
        for c in components {
            self.pod_step(st, &c, now);
        }
    }

    // ---- kubelet.service ----

    fn journal(&self, t: Nanos, pid: u32, msg: &str) {
        let ident = if pid == 1 { "systemd" } else { "kubelet" };
        logs::journal(&self.root, t, ident, pid, msg);
    }

    fn klog_kubelet(&self, level: char, t: Nanos, pid: u32, file: &str, msg: &str) {
        self.journal(t, pid, &logs::klog(level, t, pid, file, msg));
    }

    fn kubelet_step(&self, st: &mut State, now: Nanos) {
        let mut seen = st.kubelet.held.clone();
        if let Some(held) = self.poll("kubelet", &mut seen) {
            // Started from outside (sandbox creation, a direct restart).
            let t = started_at(&held, now);
            if st.kubelet.state == ActiveState::Active {
                self.kubelet_exit(st, t, "Stopping", None);
            }
            self.journal(
                t,
                1,
                "Started kubelet.service - kubelet: The Kubernetes Node Agent.",
            );
            let result = self.fits("kubelet", &held);
            self.kubelet_started(st, t, result);
        }
        st.kubelet.held = seen;
        for _ in 0..CATCH_UP {
            let Some(t) = st.kubelet.due.filter(|t| *t <= now) else {
                break;
            };
            st.kubelet.due = None;
            if st.kubelet.auto {
                st.kubelet.n_restarts += 1;
                self.journal(
                    t,
                    1,
                    &format!(
                        "kubelet.service: Scheduled restart job, restart counter is at {}.",
                        st.kubelet.n_restarts
                    ),
                );
                self.journal(
                    t,
                    1,
                    "Stopped kubelet.service - kubelet: The Kubernetes Node Agent.",
                );
            }
            self.journal(
                t,
                1,
                "Started kubelet.service - kubelet: The Kubernetes Node Agent.",
            );
            let mut seen = st.kubelet.held.clone();
            let result = self.start_process("kubelet", &mut seen);
            st.kubelet.held = seen;
            self.kubelet_started(st, t, result);
        }
    }

    fn kubelet_started(&self, st: &mut State, t: Nanos, result: Result<(), String>) {
        let pid = st.pid();
        let u = &mut st.kubelet;
        u.last_pid = pid;
        self.klog_kubelet(
            'I',
            t,
            pid,
            "server.go:520",
            &format!("\"Kubelet version\" kubeletVersion=\"{VERSION}\""),
        );
        match result {
            Ok(()) => {
                self.klog_kubelet('I', t, pid, "server.go:1275", "\"Started kubelet\"");
                u.state = ActiveState::Active;
                u.sub = "running".into();
                u.main_pid = pid;
                u.active_enter = t;
                u.changed = t;
                u.auto = false;
                u.failure = None;
            }
            Err(reason) => {
                self.klog_kubelet(
                    'E',
                    t,
                    pid,
                    "run.go:72",
                    &format!("\"command failed\" err={}", quote(&reason)),
                );
                self.journal(
                    t,
                    1,
                    "kubelet.service: Main process exited, code=exited, status=1/FAILURE",
                );
                self.journal(t, 1, "kubelet.service: Failed with result 'exit-code'.");
                if u.state == ActiveState::Active {
                    u.active_exit = t;
                }
                u.state = ActiveState::Activating;
                u.sub = "auto-restart".into();
                u.main_pid = 0;
                u.changed = t;
                u.auto = true;
                u.due = Some(t + dur(self.restart.unit()));
                u.failure = Some(reason);
            }
        }
    }

    /// The main process stops (`Stopping`: systemctl stop/restart).
    fn kubelet_exit(&self, st: &mut State, t: Nanos, _why: &str, then: Option<ActiveState>) {
        let u = &mut st.kubelet;
        if u.state == ActiveState::Active || u.main_pid != 0 {
            self.journal(
                t,
                1,
                "Stopping kubelet.service - kubelet: The Kubernetes Node Agent...",
            );
            self.klog_kubelet(
                'I',
                t,
                u.main_pid,
                "dynamic_cafile_content.go:175",
                "\"Shutting down controller\" name=\"client-ca-bundle::/etc/kubernetes/pki/ca.crt\"",
            );
            self.journal(t, 1, "kubelet.service: Deactivated successfully.");
            self.journal(
                t,
                1,
                "Stopped kubelet.service - kubelet: The Kubernetes Node Agent.",
            );
            u.active_exit = t;
        }
        u.main_pid = 0;
        u.changed = t;
        if let Some(s) = then {
            u.state = s;
        }
    }

    /// `systemctl restart kubelet`: down now, up after one restart time.
    pub fn kubelet_restart(&self, st: &mut State, now: Nanos) {
        self.kubelet_exit(st, now, "Stopping", Some(ActiveState::Activating));
        let u = &mut st.kubelet;
        u.sub = "start".into();
        u.auto = false;
        u.due = Some(now + dur(self.restart.sample()));
    }

    /// `systemctl stop kubelet`.
    pub fn kubelet_stop(&self, st: &mut State, now: Nanos) {
        self.kubelet_exit(st, now, "Stopping", Some(ActiveState::Inactive));
        let u = &mut st.kubelet;
        u.sub = "dead".into();
        u.auto = false;
        u.due = None;
    }

    /// `systemctl start kubelet` (nothing if it runs or is starting).
    pub fn kubelet_start(&self, st: &mut State, now: Nanos) {
        let u = &mut st.kubelet;
        match u.state {
            ActiveState::Active => {}
            ActiveState::Activating if !u.auto => {}
            _ => {
                u.state = ActiveState::Activating;
                u.sub = "start".into();
                u.auto = false;
                u.changed = now;
                u.due = Some(now + dur(self.restart.sample()));
            }
        }
    }

    // ---- static pods ----

    /// Whether `component` runs as a real process (etcd, while `sandbox up` runs its
    /// members: see [`crate::sandbox::etcd`]); its log lines are then its own.
    fn real(&self, component: &str) -> bool {
        component == "etcd" && crate::sandbox::etcd::real_at(&self.root)
    }

    /// A container's real process exited on its own at `t` with `code` (see
    /// [`crate::sandbox::etcd`]): the container is finished, and the kubelet restarts it
    /// with its back-off, as it does a crashed container. `false` when container `id`
    /// is not the running one (it was killed first).
    pub fn container_exited(
        &self,
        component: &str,
        id: &str,
        code: i32,
        t: Nanos,
    ) -> std::io::Result<bool> {
        let backoff = |attempt: u32| dur(self.restart.backoff(attempt + 1));
        self.with(t, |m, st| {
            let Some(pod) = st.pods.get_mut(component).and_then(|s| s.pods.last_mut()) else {
                return false;
            };
            let Some(c) = pod
                .containers
                .last_mut()
                .filter(|c| c.id == id && c.running())
            else {
                return false;
            };
            c.finished = Some(t);
            c.exit_code = code;
            c.reason = if code == 0 { "Completed" } else { "Error" }.into();
            c.log_to = Some(logs::size(&m.root, component));
            pod.retry = Some(t + backoff(c.attempt));
            true
        })
        .map(|(_, exited)| exited)
    }

    fn container_log(&self, component: &str, level: char, t: Nanos, file: &str, msg: &str) {
        if self.real(component) {
            return;
        }
        let line = if component == "etcd" {
            let lvl = match level {
                'E' => "fatal",
                'W' => "warn",
                _ => "info",
            };
            logs::zap(lvl, t, file, msg, &[])
        } else {
            logs::klog(level, t, 1, file, msg)
        };
        logs::container(&self.root, component, t, &line);
    }

    fn kill(&self, component: &str, pod: &mut Pod, t: Nanos) {
        if let Some(c) = pod.containers.last_mut()
            && c.running()
        {
            let msg = if component == "etcd" {
                "received signal; shutting down".to_string()
            } else {
                "\"Received signal, shutting down\" signal=\"terminated\"".to_string()
            };
            self.container_log(component, 'I', t, "app/server.go:180", &msg);
            c.finished = Some(t);
            c.exit_code = 0;
            c.reason = "Completed".into();
            c.log_to = Some(logs::size(&self.root, component));
        }
        pod.ready = false;
        pod.retry = None;
    }

    /// A new container of `pod` starts at `t` (`result`: whether its files fit).
    fn run_container(
        &self,
        component: &str,
        pod: &mut Pod,
        t: Nanos,
        result: impl FnOnce() -> Result<(), String>,
    ) {
        let attempt = pod.containers.last().map_or(0, |c| c.attempt + 1);
        let mut c = Container {
            id: super::random_id(),
            attempt,
            created: t,
            finished: None,
            exit_code: 0,
            reason: String::new(),
            log_from: logs::size(&self.root, component),
            log_to: None,
        };
        let start = if component == "etcd" {
            format!("starting etcd, etcd-version 3.5.16, node {}", self.name)
        } else {
            format!("\"Starting {component}\" version=\"{VERSION}\"")
        };
        self.container_log(component, 'I', t, "app/server.go:160", &start);
        match result() {
            Ok(()) => {
                pod.retry = None;
            }
            Err(reason) => {
                let msg = if component == "etcd" {
                    format!("failed to start etcd: {reason}")
                } else {
                    format!("\"command failed\" err={}", quote(&reason))
                };
                self.container_log(component, 'E', t, "run.go:72", &msg);
                c.finished = Some(t);
                c.exit_code = 1;
                c.reason = "Error".into();
                c.log_to = Some(logs::size(&self.root, component));
                pod.retry = Some(t + dur(self.restart.backoff(attempt + 1)));
            }
        }
        pod.containers.push(c);
        let extra = pod.containers.len().saturating_sub(KEEP_CONTAINERS);
        pod.containers.drain(..extra);
    }

    fn new_pod(&self, component: &str, hash: String, seen: Nanos, t: Nanos, text: &[u8]) -> Pod {
        let m = meta(&String::from_utf8_lossy(text));
        Pod {
            id: super::random_id(),
            hash,
            seen,
            created: t,
            ready: true,
            labels: m.labels,
            annotations: m.annotations,
            image: if m.image.is_empty() {
                format!("registry.k8s.io/{component}:{VERSION}")
            } else {
                m.image
            },
            containers: vec![],
            retry: None,
        }
    }

    fn push_pod(slot: &mut Slot, pod: Pod) {
        slot.pods.push(pod);
        let dead = slot.pods.len().saturating_sub(1);
        if dead > KEEP_DEAD_PODS {
            slot.pods.drain(..dead - KEEP_DEAD_PODS);
        }
    }

    fn pod_step(&self, st: &mut State, component: &str, now: Nanos) {
        let kubelet_up = !self.has_kubelet() || st.kubelet.state == ActiveState::Active;
        let mut slot = st.pods.remove(component).unwrap_or_default();
        let mut seen = slot.held.clone();
        if let Some(held) = self.poll(component, &mut seen) {
            // The process was restarted from outside: a new pod of what it read.
            let t = started_at(&held, now);
            if let Some(old) = slot.pods.last_mut() {
                self.kill(component, old, t);
            }
            let text = held
                .file(&Self::manifest_path(component))
                .unwrap_or_default();
            let mut pod = self.new_pod(component, config_hash(&text), t, t, &text);
            let result = self.fits(component, &held);
            self.run_container(component, &mut pod, t, || result);
            Self::push_pod(&mut slot, pod);
            slot.pending = None;
        }
        if kubelet_up {
            let manifest = self.manifest(component);
            let want = manifest.as_deref().map(config_hash);
            let live = slot.pods.last().filter(|p| p.ready).map(|p| p.hash.clone());
            match &want {
                None => {
                    if let Some(p) = slot.pods.last_mut() {
                        self.kill(component, p, now);
                    }
                    slot.pending = None;
                }
                Some(h) if live.as_ref() == Some(h) => slot.pending = None,
                Some(h) if slot.pending.as_ref().is_some_and(|p| &p.hash == h) => {}
                Some(h) => {
                    if let Some(p) = slot.pods.last_mut() {
                        self.kill(component, p, now);
                    }
                    slot.pending = Some(Pending {
                        hash: h.clone(),
                        seen: now,
                        due: now + dur(self.restart.sample()),
                    });
                }
            }
            if let (Some(p), Some(text)) = (slot.pending.clone(), manifest)
                && p.due <= now
            {
                slot.pending = None;
                let mut pod = self.new_pod(component, p.hash, p.seen, p.due, &text);
                self.run_container(component, &mut pod, p.due, || {
                    self.start_process(component, &mut seen)
                });
                Self::push_pod(&mut slot, pod);
            }
            for _ in 0..CATCH_UP {
                let Some(pod) = slot.pods.last_mut() else {
                    break;
                };
                let Some(t) = pod.retry.filter(|t| *t <= now && pod.ready) else {
                    break;
                };
                self.run_container(component, pod, t, || {
                    self.start_process(component, &mut seen)
                });
            }
        }
        slot.held = seen;
        if !slot.pods.is_empty() || slot.pending.is_some() {
            st.pods.insert(component.to_string(), slot);
        }
    }
}
