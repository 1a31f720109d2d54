//! The live trust prober (`trustform apply --probe`): beside an apply on the sandbox,
//! every trust edge of the cluster ([`crate::plan::edges`]) does one real TLS handshake
//! every [`Options::interval`] against the listeners `sandbox up` publishes
//! ([`super::endpoints`]), each side using its credentials *as it holds them*:
//!
//! - a kubeconfig read by a process: the bytes that process read at its last start (and
//!   a client-certificate file it names, from the same memory); a kubeconfig read at each
//!   use (kubectl): the file on disk now;
//! - a static pod's flags: the files they name as the process read them;
//! - a pod: no client certificate (it has a token), and the CAs it holds in memory as
//!   roots, resolved from fingerprints through the CA map.
//!
//! Each handshake is the gates' own ([`crate::exec::https::Handshake::over`]: connect,
//! handshake, `GET`, an HTTP answer), made on a thread of the blocking pool.
//! The server side is the listener of `endpoints.json`, verified under a name from the
//! server's held certificate (127.0.0.1 when present) — unless the client does not
//! verify it: an API server without `--kubelet-certificate-authority` (kubeadm's
//! default) takes any certificate a kubelet serves, so that edge's handshakes check only
//! that the kubelet accepts the API server's client certificate, and the report labels
//! the edge unverified. Pods come and go with rollouts:
//! they are listed at the start of every round that probes them; a vanished pod's edge
//! stops (not a failure, nor is a failed attempt of a pod deleted during that round), a
//! new pod gets its own edge. After each step, apply waits on [`Settle`] for a round over
//! the edges the step can change ([`Affects`]). The [`Report`] gives, per edge, attempts,
//! failures, the longest outage and the first error.

use super::endpoints::Endpoints;
use super::error::{TrustError, line};
use super::tls::{Proc, client_of, parse_kubeconfig};
use crate::exec::https::{Bearer, Handshake, HttpsError};
use crate::exec::kube::Access;
use crate::exec::kube::cluster::{self, PodTrust};
use crate::exec::{self, Node};
use crate::pki::tls::{Identity, TlsError, server_name_of};
use crate::pki::{Fingerprint, parse_certs};
use crate::plan::edges::{Client, Edge, Server};
use miette::Diagnostic;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::watch;

/// Errors of starting the prober.
#[derive(Debug, Error, Diagnostic)]
pub enum ProbeError {
    /// No node of the inventory is a sandbox node.
    #[error("--probe needs the sandbox: no node of the inventory is a sandbox node")]
    #[diagnostic(
        code(trustform::apply::probe::not_sandbox),
        help("the prober handshakes with the sandbox's simulated processes; drop --probe")
    )]
    NotSandbox,
    /// The sandbox's listeners are not running.
    #[error("cannot read {}: the sandbox's TLS endpoints are not running", path.display())]
    #[diagnostic(
        code(trustform::apply::probe::no_endpoints),
        help("run `trustform sandbox up {}` first (it serves every process's TLS endpoint), or drop --probe", dir.display())
    )]
    NoEndpoints {
        /// The sandbox directory.
        dir: PathBuf,
        /// The endpoints file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The prober's runtime could not start.
    #[error("the prober cannot start: {0}")]
    #[diagnostic(
        code(trustform::apply::probe::runtime),
        help(
            "the machine is out of threads or memory; nothing was changed: run the apply again, or without --probe"
        )
    )]
    Runtime(String),
}

/// The sandbox directory of a set of nodes: the one holding `sandbox.json` above a
/// sandbox node's root (`DIR/nodes/<name>`).
pub fn sandbox_dir(nodes: &BTreeMap<String, Node>) -> Option<PathBuf> {
    nodes
        .values()
        .filter_map(|n| n.root.as_ref()?.parent()?.parent().map(Path::to_path_buf))
        .find(|d| d.join("sandbox.json").is_file())
}

/// The endpoints of the sandbox the nodes belong to.
pub fn endpoints_of(nodes: &BTreeMap<String, Node>) -> Result<Endpoints, ProbeError> {
    let dir = sandbox_dir(nodes).ok_or(ProbeError::NotSandbox)?;
    Endpoints::load(&dir).map_err(|source| ProbeError::NoEndpoints {
        path: Endpoints::path(&dir),
        dir,
        source,
    })
}

/// Timings of the prober.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often every edge handshakes.
    pub interval: Duration,
    /// Handshakes at once.
    pub concurrency: usize,
    /// How long one handshake may take (connect, handshake, answer).
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            concurrency: 16,
            timeout: Duration::from_secs(10),
        }
    }
}

/// What the prober works with.
pub struct Input {
    /// The edges (`plan::edges::edges(&snapshot)`).
    pub edges: Vec<Edge>,
    /// What each pod of the snapshot trusts (`namespace/name`), until the first re-list.
    pub pods: BTreeMap<String, PodTrust>,
    /// The nodes, as apply reaches them.
    pub nodes: BTreeMap<String, Node>,
    /// Where the listeners are.
    pub endpoints: Endpoints,
    /// CA certificates (PEM) by fingerprint, to resolve what pods trust.
    pub cas: BTreeMap<Fingerprint, String>,
    /// The API, to re-list pods; `None`: the snapshot's pods are probed throughout.
    pub kube: Option<Access>,
}

impl Input {
    /// The edges of a snapshot and its pods' trust.
    pub fn new(
        snap: &crate::snapshot::Snapshot,
        nodes: BTreeMap<String, Node>,
        endpoints: Endpoints,
        cas: BTreeMap<Fingerprint, String>,
        kube: Option<Access>,
    ) -> Self {
        let mut pods = BTreeMap::new();
        for g in snap.kube.iter().flat_map(|k| &k.pods) {
            let trust = match &g.trust {
                Some(cas) => PodTrust::Known(cas.clone()),
                None => PodTrust::Unknown,
            };
            for p in &g.pods {
                pods.insert(p.clone(), trust.clone());
            }
        }
        Self {
            edges: crate::plan::edges::edges(snap),
            pods,
            nodes,
            endpoints,
            cas,
            kube,
        }
    }
}

/// What an edge's server is, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeKind {
    /// A process or kubectl → kube-apiserver.
    ApiServer,
    /// kube-apiserver → a kubelet.
    Kubelet,
    /// kube-apiserver → etcd.
    Etcd,
    /// etcd → etcd (peer port).
    EtcdPeer,
    /// kube-apiserver (front proxy) → the aggregated API server.
    Aggregated,
    /// A pod → kube-apiserver.
    Pod,
}

impl EdgeKind {
    fn of(client: &Client, server: &Server) -> Self {
        match (client, server) {
            (Client::Pod { .. }, _) => EdgeKind::Pod,
            (_, Server::ApiServer { .. }) => EdgeKind::ApiServer,
            (_, Server::Kubelet { .. }) => EdgeKind::Kubelet,
            (_, Server::Etcd { peer: false, .. }) => EdgeKind::Etcd,
            (_, Server::Etcd { peer: true, .. }) => EdgeKind::EtcdPeer,
            (_, Server::Aggregated) => EdgeKind::Aggregated,
        }
    }
}

/// The prober's result (`apply --probe`; under `"probe"` in `--format json`).
///
/// ```json
/// { "duration_ms": 41200, "handshakes": 11890, "failures": 0, "longest_outage_ms": 0,
///   "unverified": 3,
///   "edges": [ { "name": "kubelet on w-1 → kube-apiserver on cp-1", "kind": "api-server",
///                "managed": true, "attempts": 180, "failures": 0, "longest_outage_ms": 0 },
///              { "name": "kube-apiserver on cp-1 → kubelet on w-1", "kind": "kubelet", …,
///                "unverified": "the API server does not verify kubelet serving certificates: …" }, … ] }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// How long the prober ran.
    pub duration_ms: u64,
    /// Handshakes attempted, every edge.
    pub handshakes: u64,
    /// Handshakes that failed, every edge.
    pub failures: u64,
    /// The longest outage of any edge.
    pub longest_outage_ms: u64,
    /// Edges whose client does not verify the server's certificate (handshaken all the
    /// same, the client presenting its certificate).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unverified: u64,
    /// Attempts that found their server down (restarting; see [`EdgeReport::down`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub down: u64,
    /// Every edge probed, in the order they were first probed.
    pub edges: Vec<EdgeReport>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One edge's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeReport {
    /// `kubelet on w-1 → kube-apiserver on cp-1`, as in the plan's rehearsal.
    pub name: String,
    /// What kind of edge.
    pub kind: Option<EdgeKind>,
    /// Whether trustform keeps it live (a bare pod's edge is not).
    pub managed: bool,
    /// Handshakes attempted.
    pub attempts: u64,
    /// Handshakes failed.
    pub failures: u64,
    /// The longest outage: from a first failed attempt to the next success, or to the
    /// end (the prober's stop, or the pod's disappearance).
    pub longest_outage_ms: u64,
    /// The first failure's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// The pod went away while probing (its edge stopped there).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vanished: bool,
    /// Why its client does not verify the server's certificate (an API server without
    /// `--kubelet-certificate-authority` → a kubelet): its handshakes checked only that
    /// the server accepts the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
    /// Attempts that found the server down (connection refused, or closed without a TLS
    /// alert or answer: its process restarting): an outage of the server, not of trust.
    /// Not among `failures`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub down: u64,
    /// The first such refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_down: Option<String>,
}

impl Report {
    /// Edges with at least one failure.
    pub fn failing(&self) -> impl Iterator<Item = &EdgeReport> {
        self.edges.iter().filter(|e| e.failures > 0)
    }

    /// Managed edges with at least one failure: an apply that has them failed.
    pub fn managed_failing(&self) -> impl Iterator<Item = &EdgeReport> {
        self.failing().filter(|e| e.managed)
    }

    /// Lines for people: a summary table, then each failing edge.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            "Trust probe:".to_string(),
            format!("  {:<22} {}", "edges", self.edges.len()),
            format!("  {:<22} {}", "handshakes", self.handshakes),
            format!("  {:<22} {}", "failed handshakes", self.failures),
            format!("  {:<22} {}", "longest outage", ms(self.longest_outage_ms)),
            format!("  {:<22} {}", "time", ms(self.duration_ms)),
        ];
        let mut reasons: Vec<(&str, usize)> = vec![];
        for why in self.edges.iter().filter_map(|e| e.unverified.as_deref()) {
            match reasons.iter_mut().find(|(w, _)| *w == why) {
                Some((_, n)) => *n += 1,
                None => reasons.push((why, 1)),
            }
        }
        for (why, n) in reasons {
            out.push(format!(
                "  {:<22} {n} ({why}; the server still verified the client)",
                "unverified edges"
            ));
        }
        if self.down > 0 {
            let edges = self.edges.iter().filter(|e| e.down > 0).count();
            out.push(format!(
                "  {:<22} {} attempts on {edges} edges (refused or closed without a TLS word while the server restarted: not a trust failure)",
                "server down", self.down
            ));
        }
        let failing: Vec<&EdgeReport> = self.failing().collect();
        if !failing.is_empty() {
            out.push(format!("Edges with failed handshakes ({}):", failing.len()));
            for e in failing {
                out.push(format!(
                    "  {}{}: {}/{} failed, longest outage {}; first error: {}",
                    e.name,
                    if e.managed { "" } else { " (unmanaged)" },
                    e.failures,
                    e.attempts,
                    ms(e.longest_outage_ms),
                    e.first_error.as_deref().unwrap_or("?")
                ));
            }
        }
        out
    }
}

fn ms(v: u64) -> String {
    if v < 1000 {
        format!("{v} ms")
    } else {
        format!("{:.1} s", v as f64 / 1000.0)
    }
}

/// A running prober. [`Prober::stop`] ends it and gives the report; dropping it stops it
/// too.
pub struct Prober {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<Report>>,
    settle: Settle,
}

/// Lets apply wait until the prober has seen the cluster as a step left it: a step's
/// dependents start only after a round of handshakes that began after the step ended and
/// covered every edge the step could change ([`Affects`]), so no intermediate state goes
/// unwitnessed, however fast the steps are. Full rounds every `interval` go on beside.
#[derive(Clone, Debug, Default)]
pub struct Settle {
    /// Rounds started and finished, what the next round must cover, and who waits.
    rounds: Arc<(Mutex<Rounds>, std::sync::Condvar)>,
    kick: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
struct Rounds {
    started: u64,
    finished: u64,
    pending: Affects,
}

/// The edges a step can change, judged as rehearse judges them: a write changes only
/// what is read from disk at every use (kubectl and copied kubeconfigs on that node); a
/// restart changes the edges whose client or server is that process (and, for an API
/// server, the requestheader CA the aggregated server verifies with); a rollout changes
/// the pods. A gate or a wait on published objects changes none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Affects {
    disk: std::collections::BTreeSet<String>,
    procs: std::collections::BTreeSet<(String, String)>,
    pods: bool,
    aggregated: bool,
}

impl Affects {
    /// What `step` can change.
    pub fn of(step: &crate::plan::Step) -> Self {
        use crate::diff::Field;
        use crate::plan::Op;
        let mut a = Affects::default();
        for op in &step.ops {
            match op {
                Op::Set { node: Some(n), .. } => {
                    a.disk.insert(n.clone());
                }
                Op::Set {
                    node: None, field, ..
                } => match field {
                    Field::PodTrust => a.pods = true,
                    Field::ExtensionAuth => a.aggregated = true,
                    _ => {}
                },
                Op::Restart { node, component }
                | Op::ManualRestart {
                    node, component, ..
                } => {
                    a.procs.insert((node.clone(), component.clone()));
                    if component == "kube-apiserver" {
                        a.aggregated = true;
                    }
                }
                Op::Verify { .. } => {}
            }
        }
        a
    }

    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        *self == Affects::default()
    }

    fn add(&mut self, other: &Affects) {
        self.disk.extend(other.disk.iter().cloned());
        self.procs.extend(other.procs.iter().cloned());
        self.pods |= other.pods;
        self.aggregated |= other.aggregated;
    }

    fn covers(&self, p: &Probe) -> bool {
        let proc_ = |n: &str, c: &str| self.procs.contains(&(n.to_string(), c.to_string()));
        let client = match &p.client {
            Side::Pod(_) => self.pods,
            Side::Edge(Client::Kubeconfig {
                node,
                component: None,
                ..
            }) => self.disk.contains(node),
            Side::Edge(Client::Kubeconfig {
                node,
                component: Some(c),
                ..
            })
            | Side::Edge(Client::Flags {
                node, component: c, ..
            }) => proc_(node, c),
            Side::Edge(Client::Pod { .. }) => self.pods,
        };
        let server = match &p.server {
            Server::ApiServer { node } => proc_(node, "kube-apiserver"),
            Server::Kubelet { node } => proc_(node, "kubelet"),
            Server::Etcd { node, .. } => proc_(node, "etcd"),
            Server::Aggregated => self.aggregated,
        };
        client || server
    }
}

impl Settle {
    /// Block until a round that starts after this call, covering `affects`, has finished
    /// (at most `limit`). Returns at once when the step changed nothing.
    pub fn wait(&self, affects: &Affects, limit: Duration) {
        if affects.is_empty() {
            return;
        }
        let (m, cv) = &*self.rounds;
        let mut guard = m.lock().unwrap_or_else(|e| e.into_inner());
        guard.pending.add(affects);
        let target = guard.started + 1;
        self.kick.notify_one();
        let _ = cv.wait_timeout_while(guard, limit, |r| r.finished < target);
    }

    /// A round starts: a full one, or one over what the waiting steps changed.
    fn started(&self, full: bool) -> Option<Affects> {
        let (m, _) = &*self.rounds;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        g.started += 1;
        let pending = std::mem::take(&mut g.pending);
        (!full).then_some(pending)
    }

    fn finished(&self, all: bool) {
        let (m, cv) = &*self.rounds;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        g.finished = if all { u64::MAX } else { g.started };
        cv.notify_all();
    }
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").finish_non_exhaustive()
    }
}

impl Prober {
    /// Start probing on a thread of its own (its own tokio runtime).
    pub fn start(input: Input, options: Options) -> Result<Prober, ProbeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("trustform-probe")
            .enable_all()
            .build()
            .map_err(|e| ProbeError::Runtime(e.to_string()))?;
        let (stop, rx) = watch::channel(false);
        let settle = Settle::default();
        let s = settle.clone();
        let thread = std::thread::Builder::new()
            .name("trustform-probe".into())
            .spawn(move || {
                let report = rt.block_on(run(input, options, rx, s.clone()));
                s.finished(true);
                report
            })
            .map_err(|e| ProbeError::Runtime(e.to_string()))?;
        Ok(Prober {
            stop,
            thread: Some(thread),
            settle,
        })
    }

    /// The handle apply waits on after each step.
    pub fn settle(&self) -> Settle {
        self.settle.clone()
    }

    /// How many rounds of handshakes have finished so far (each full round tries every
    /// live edge once; rounds begin at least [`Options::interval`] apart): what a caller
    /// waits on to know the prober has looked, instead of sleeping.
    pub fn rounds(&self) -> u64 {
        let (m, _) = &*self.settle.rounds;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        // Once the prober has stopped, `finished` says so with u64::MAX.
        g.finished.min(g.started)
    }

    /// Stop (the round in flight finishes) and report.
    pub fn stop(mut self) -> Report {
        self.finish()
    }

    fn finish(&mut self) -> Report {
        let _ = self.stop.send(true);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.finish();
        }
    }
}

/// The client side of a probe.
#[derive(Clone, Debug)]
enum Side {
    /// A process or file, as in the edge.
    Edge(Client),
    /// A pod, by `namespace/name`: its trust comes from the latest listing.
    Pod(String),
}

#[derive(Clone, Debug)]
struct Probe {
    name: String,
    kind: EdgeKind,
    managed: bool,
    client: Side,
    server: Server,
    /// Why the client does not verify the server ([`Edge::unverified`]).
    unverified: Option<&'static str>,
}

#[derive(Debug)]
struct Track {
    probe: Probe,
    active: bool,
    attempts: u64,
    failures: u64,
    outage_since: Option<Instant>,
    longest: Duration,
    first_error: Option<String>,
    vanished: bool,
    down: u64,
    first_down: Option<String>,
}

impl Track {
    fn new(probe: Probe) -> Self {
        Self {
            probe,
            active: true,
            attempts: 0,
            failures: 0,
            outage_since: None,
            longest: Duration::ZERO,
            first_error: None,
            vanished: false,
            down: 0,
            first_down: None,
        }
    }

    fn record(&mut self, at: Instant, res: Result<(), Fail>) {
        self.attempts += 1;
        match res {
            Ok(()) => self.close_outage(at),
            Err(Fail::Down(why)) => {
                self.down += 1;
                self.first_down.get_or_insert(why);
            }
            Err(Fail::Trust(e)) => {
                self.failures += 1;
                self.first_error.get_or_insert_with(|| line(&e));
                self.outage_since.get_or_insert(at);
            }
        }
    }

    fn close_outage(&mut self, at: Instant) {
        if let Some(since) = self.outage_since.take() {
            self.longest = self.longest.max(at.saturating_duration_since(since));
        }
    }

    fn report(&self) -> EdgeReport {
        EdgeReport {
            name: self.probe.name.clone(),
            kind: Some(self.probe.kind),
            managed: self.probe.managed,
            attempts: self.attempts,
            failures: self.failures,
            longest_outage_ms: self.longest.as_millis() as u64,
            first_error: self.first_error.clone(),
            vanished: self.vanished,
            unverified: self.probe.unverified.map(str::to_string),
            down: self.down,
            first_down: self.first_down.clone(),
        }
    }
}

/// A process as last read, and the identity of the state file it was read from.
type HeldProc = (crate::held::Stamp, Arc<Proc>);

/// Everything a handshake resolves through, shared by the probes.
struct Ctx {
    nodes: BTreeMap<String, Node>,
    endpoints: Endpoints,
    cas: BTreeMap<Fingerprint, String>,
    pods: Mutex<BTreeMap<String, PodTrust>>,
    /// Where each pod's kubelet keeps its token (node, path), as last listed.
    tokens: Mutex<BTreeMap<String, (String, String)>>,
    procs: Mutex<HashMap<(String, String), HeldProc>>,
    timeout: Duration,
}

impl Ctx {
    fn node(&self, name: &str) -> Result<&Node, TrustError> {
        self.nodes
            .get(name)
            .ok_or_else(|| TrustError::UnknownNode(name.to_string()))
    }

    /// A process as it holds itself now (re-read only after a restart).
    fn proc(&self, node: &str, component: &str) -> Result<Arc<Proc>, TrustError> {
        let n = self.node(node)?;
        let not_running = || TrustError::NotRunning {
            node: node.to_string(),
            component: component.to_string(),
        };
        let stamp = n.transport.held_stamp(component).ok_or_else(not_running)?;
        let key = (node.to_string(), component.to_string());
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, p)) = procs.get(&key)
            && *s == stamp
        {
            return Ok(p.clone());
        }
        let p = Arc::new(Proc::of(n, component).ok_or_else(not_running)?);
        procs.insert(key, (stamp, p.clone()));
        Ok(p)
    }

    /// (roots, verify the server, identity) of the client side.
    fn client(&self, side: &Side) -> Result<(Option<Vec<u8>>, Option<Identity>), TrustError> {
        match side {
            Side::Edge(Client::Kubeconfig {
                node,
                path,
                component: Some(c),
            }) => {
                let p = self.proc(node, c)?;
                let bytes = p.file(path).ok_or_else(|| TrustError::NotHeld {
                    holder: format!("{c} on {node}"),
                    what: path.clone(),
                })?;
                let at = format!("{node}:{path} (as {c} read it)");
                let kc = client_of(&parse_kubeconfig(&bytes, &at)?, &at, &|f| p.file(f))?;
                Ok((Some(kc.ca), kc.identity))
            }
            Side::Edge(Client::Kubeconfig {
                node,
                path,
                component: None,
            }) => {
                let n = self.node(node)?;
                let read = |f: &str| exec::files::read(n, f).ok().flatten();
                let at = format!("{node}:{path}");
                let bytes = read(path).ok_or_else(|| TrustError::Unreadable { at: at.clone() })?;
                let kc = client_of(&parse_kubeconfig(&bytes, &at)?, &at, &read)?;
                Ok((Some(kc.ca), kc.identity))
            }
            Side::Edge(Client::Flags {
                node,
                component,
                ca,
                cert,
                key,
            }) => {
                let p = self.proc(node, component)?;
                let holder = format!("{component} on {node}");
                let roots = match ca {
                    Some(flag) => Some(p.flag_file(flag).ok_or_else(|| TrustError::NotHeld {
                        holder: holder.clone(),
                        what: format!("--{flag}"),
                    })?),
                    None => None,
                };
                Ok((roots, Some(p.identity(&holder, cert, key)?)))
            }
            Side::Edge(Client::Pod { name, .. }) | Side::Pod(name) => {
                let pod = |reason: String| TrustError::Pod {
                    pod: name.clone(),
                    reason,
                };
                let trust = self
                    .pods
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(name)
                    .cloned()
                    .ok_or_else(|| pod("gone".into()))?;
                let PodTrust::Known(fps) = trust else {
                    return Err(pod("what it trusts is unknown".into()));
                };
                let mut pem = String::new();
                for fp in &fps {
                    pem.push_str(self.cas.get(fp).ok_or_else(|| {
                        pod(format!("trusts CA {}, unknown to the prober", fp.short()))
                    })?);
                }
                Ok((Some(pem.into_bytes()), None))
            }
        }
    }

    /// The service-account token a pod presents: the one its node's kubelet holds now
    /// (read through the node's transport, never kept). A pod whose kubelet has written
    /// none yet presents none.
    fn token(&self, side: &Side) -> Result<Option<Bearer>, TrustError> {
        let (Side::Pod(name) | Side::Edge(Client::Pod { name, .. })) = side else {
            return Ok(None);
        };
        let at = self
            .tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned();
        let Some((node, path)) = at else {
            return Ok(None);
        };
        let token = exec::files::read(self.node(&node)?, &path)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        Ok(token.map(|t| Bearer(t.trim().to_string())))
    }

    /// (address, name to verify, roots when the client has none of its own).
    fn server(
        &self,
        server: &Server,
    ) -> Result<(String, ServerName<'static>, Option<Vec<u8>>), TrustError> {
        let listener = |node: &str, process: &str| {
            self.endpoints
                .process(node, process)
                .map(str::to_string)
                .ok_or_else(|| TrustError::NoListener {
                    node: node.to_string(),
                    process: process.to_string(),
                })
        };
        let named = |pem: Option<Vec<u8>>, what: &str| -> Result<ServerName<'static>, TrustError> {
            let none = || TrustError::NotHeld {
                holder: what.to_string(),
                what: "serving certificate".into(),
            };
            let text = pem
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(none)?;
            let leaf = parse_certs(&text, what)?
                .into_iter()
                .next()
                .ok_or_else(none)?;
            Ok(server_name_of(&leaf)?)
        };
        match server {
            Server::ApiServer { node } => {
                let p = self.proc(node, "kube-apiserver")?;
                let name = named(p.flag_file("tls-cert-file"), "kube-apiserver")?;
                Ok((listener(node, "kube-apiserver")?, name, None))
            }
            Server::Kubelet { node } => {
                let p = self.proc(node, "kubelet")?;
                let cert = p.held.kubelet_serving().ok().map(|(c, _)| c);
                let name = named(cert, "the kubelet")?;
                Ok((listener(node, "kubelet")?, name, None))
            }
            Server::Etcd { node, peer } => {
                let p = self.proc(node, "etcd")?;
                let (flag, process) = if *peer {
                    ("peer-cert-file", "etcd-peer")
                } else {
                    ("cert-file", "etcd")
                };
                let name = named(p.flag_file(flag), "etcd")?;
                Ok((listener(node, process)?, name, None))
            }
            Server::Aggregated => {
                let a =
                    self.endpoints
                        .aggregated
                        .as_ref()
                        .ok_or_else(|| TrustError::NoListener {
                            node: "the sandbox".into(),
                            process: "the aggregated API server".into(),
                        })?;
                let name = ServerName::try_from("127.0.0.1")
                    .map_err(|e| TlsError::ServerName(e.to_string()))?;
                Ok((a.address.clone(), name, Some(a.ca.clone().into_bytes())))
            }
        }
    }
}

/// One handshake of one edge: connect, handshake, GET (the one exchange the gates make:
/// [`Handshake::over`]), on a thread of the blocking pool.
async fn attempt(ctx: &Ctx, probe: &Probe) -> Result<(), Fail> {
    let (own_roots, identity) = ctx.client(&probe.client)?;
    let bearer = ctx.token(&probe.client)?;
    let (address, name, server_roots) = ctx.server(&probe.server)?;
    let t = ctx.timeout;
    let to = |reason: String| HttpsError::Connect {
        address: address.clone(),
        reason,
    };
    let addr: std::net::SocketAddr = address
        .parse()
        .map_err(|e| TrustError::from(to(format!("{e}"))))?;
    // kube-apiserver without --kubelet-certificate-authority does not verify kubelets
    // (the edge is unverified); it still presents its client certificate.
    let handshake = Handshake {
        roots: own_roots.or(server_roots),
        identity,
        name,
        host: addr.ip().to_string(),
        port: addr.port(),
        path: super::live::path(&probe.server).to_string(),
        bearer,
    };
    let done = tokio::task::spawn_blocking(move || {
        let tcp = match std::net::TcpStream::connect_timeout(&addr, t) {
            Ok(tcp) => tcp,
            // Nothing listens: the server's process is down (a restart), no handshake
            // was made.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(Fail::Down(format!("{addr}: {e}")));
            }
            Err(e) => {
                return Err(Fail::Trust(TrustError::from(HttpsError::Connect {
                    address: addr.to_string(),
                    reason: e.to_string(),
                })));
            }
        };
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(t));
        let _ = tcp.set_write_timeout(Some(t));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream = Watched {
            tcp,
            closed: closed.clone(),
        };
        handshake.over(stream).map(|_| ()).map_err(|e| {
            // The server closed the connection without a word of TLS (no alert): it is
            // going down (a restart), not judging trust — a server that refuses a
            // certificate says so with an alert first.
            // An internal_error alert is no verdict either: Go's TLS server sends it when
            // the process stops mid-handshake.
            let text = e.to_string();
            let tls = matches!(&e, HttpsError::NoAnswer(_) | HttpsError::Handshake(_));
            let closed = closed.load(std::sync::atomic::Ordering::Relaxed);
            let silent = tls && !text.contains("alert") && closed;
            if silent || (tls && text.contains("alert: InternalError")) {
                Fail::Down(format!("{addr}: the server closed the connection ({e})"))
            } else {
                Fail::Trust(e.into())
            }
        })
    })
    .await;
    match done {
        Ok(r) => r,
        Err(e) => Err(TrustError::from(to(format!("the probe's task ended: {e}"))).into()),
    }
}

/// A TCP stream that notes when the server ended it (end of stream, or a reset).
struct Watched {
    tcp: std::net::TcpStream,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::io::Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::ErrorKind as K;
        let r = self.tcp.read(buf);
        let ended = match &r {
            Ok(0) => !buf.is_empty(),
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof
            ),
        };
        if ended {
            self.closed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl std::io::Write for Watched {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let r = self.tcp.write(buf);
        if r.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            self.closed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// Why an attempt did not handshake.
#[derive(Debug)]
enum Fail {
    /// The server refused the connection, or closed it without a word of TLS: its
    /// process is down or going down (a restart). Trust was not judged: counted apart
    /// from failures.
    Down(String),
    /// A failed handshake, or no answer.
    Trust(TrustError),
}

impl From<TrustError> for Fail {
    fn from(e: TrustError) -> Self {
        Fail::Trust(e)
    }
}

/// A listed pod: (`namespace/name`, trust, has an owner, where its token is).
type Listed = (String, PodTrust, bool, Option<(String, String)>);

/// Every pod, what it trusts, and where its kubelet keeps its token.
async fn list_pods(access: &Access) -> Result<Vec<Listed>, crate::exec::kube::KubeError> {
    let client = access.client().await?;
    let rc = cluster::root_cas(&client).await?;
    let w = cluster::workloads(&client, &rc).await?;
    Ok(w.pods
        .into_iter()
        .map(|p| {
            (
                format!("{}/{}", p.namespace, p.name),
                p.trust,
                p.owner.is_some(),
                p.token,
            )
        })
        .collect())
}

async fn run(
    input: Input,
    options: Options,
    mut stop: watch::Receiver<bool>,
    settle: Settle,
) -> Report {
    let started = Instant::now();
    // The API servers pods reach: every one the edges name.
    let mut apis: Vec<String> = vec![];
    for e in &input.edges {
        if let Server::ApiServer { node } = &e.server
            && !apis.contains(node)
        {
            apis.push(node.clone());
        }
    }
    let mut tracks: Vec<Track> = input
        .edges
        .into_iter()
        .map(|e| {
            let kind = EdgeKind::of(&e.client, &e.server);
            let unverified = e.unverified();
            let client = match e.client {
                Client::Pod { name, .. } => Side::Pod(name),
                c => Side::Edge(c),
            };
            Track::new(Probe {
                name: e.name,
                kind,
                managed: e.managed,
                client,
                server: e.server,
                unverified,
            })
        })
        .collect();
    let ctx = Arc::new(Ctx {
        nodes: input.nodes,
        endpoints: input.endpoints,
        cas: input.cas,
        pods: Mutex::new(input.pods),
        tokens: Mutex::default(),
        procs: Mutex::default(),
        timeout: options.timeout,
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(options.concurrency.max(1)));
    let mut tick = tokio::time::interval(options.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let full = tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => true,
            _ = settle.kick.notified() => false,
        };
        if *stop.borrow() {
            break;
        }
        let only = settle.started(full);
        // Pods come and go with rollouts: list them at the start of every round that
        // probes them.
        if let Some(access) = &input.kube
            && only.as_ref().is_none_or(|a| a.pods)
            && let Ok(pods) = list_pods(access).await
        {
            apply_listing(&ctx, &mut tracks, &apis, Instant::now(), pods);
        }
        // One round: every live edge once (or every one a finished step could change).
        let mut round = tokio::task::JoinSet::new();
        for (i, t) in tracks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.active && only.as_ref().is_none_or(|a| a.covers(&t.probe)))
        {
            let (ctx, sem, probe) = (ctx.clone(), sem.clone(), t.probe.clone());
            round.spawn(async move {
                let _permit = sem.acquire_owned().await;
                let at = Instant::now();
                (i, at, attempt(&ctx, &probe).await)
            });
        }
        let mut results = Vec::new();
        while let Some(r) = round.join_next().await {
            if let Ok(r) = r {
                results.push(r);
            }
        }
        // A pod deleted during the round (a rollout replaced it) has no process left to
        // connect: its failed attempt in that round does not count.
        let failed_pod = results
            .iter()
            .any(|(i, _, r)| r.is_err() && matches!(tracks[*i].probe.client, Side::Pod(_)));
        let gone: std::collections::HashSet<String> = match (&input.kube, failed_pod) {
            (Some(access), true) => match list_pods(access).await {
                Ok(pods) => {
                    let live: std::collections::HashSet<String> =
                        pods.into_iter().map(|(n, _, _, _)| n).collect();
                    tracks
                        .iter()
                        .filter_map(|t| match &t.probe.client {
                            Side::Pod(n) if !live.contains(n) => Some(n.clone()),
                            _ => None,
                        })
                        .collect()
                }
                Err(_) => Default::default(),
            },
            _ => Default::default(),
        };
        for (i, at, res) in results {
            if res.is_err()
                && let Side::Pod(n) = &tracks[i].probe.client
                && gone.contains(n)
            {
                continue;
            }
            tracks[i].record(at, res);
        }
        settle.finished(false);
    }
    let end = Instant::now();
    for t in tracks.iter_mut().filter(|t| t.active) {
        t.close_outage(end);
    }
    let edges: Vec<EdgeReport> = tracks.iter().map(Track::report).collect();
    Report {
        duration_ms: started.elapsed().as_millis() as u64,
        handshakes: edges.iter().map(|e| e.attempts).sum(),
        failures: edges.iter().map(|e| e.failures).sum(),
        longest_outage_ms: edges.iter().map(|e| e.longest_outage_ms).max().unwrap_or(0),
        unverified: edges.iter().filter(|e| e.unverified.is_some()).count() as u64,
        down: edges.iter().map(|e| e.down).sum(),
        edges,
    }
}

/// Follow a pod listing: vanished pods' edges stop, new pods get edges.
fn apply_listing(
    ctx: &Ctx,
    tracks: &mut Vec<Track>,
    apis: &[String],
    at: Instant,
    pods: Vec<Listed>,
) {
    *ctx.tokens.lock().unwrap_or_else(|e| e.into_inner()) = pods
        .iter()
        .filter_map(|(n, _, _, t)| Some((n.clone(), t.clone()?)))
        .collect();
    let live: BTreeMap<String, (PodTrust, bool)> =
        pods.into_iter().map(|(n, t, o, _)| (n, (t, o))).collect();
    for t in tracks.iter_mut().filter(|t| t.active) {
        if let Side::Pod(name) = &t.probe.client
            && !live.contains_key(name)
        {
            t.active = false;
            t.vanished = true;
            t.close_outage(at);
        }
    }
    let known: std::collections::HashSet<String> = tracks
        .iter()
        .filter_map(|t| match &t.probe.client {
            Side::Pod(n) => Some(n.clone()),
            _ => None,
        })
        .collect();
    for (name, (_, owned)) in &live {
        if known.contains(name) {
            continue;
        }
        for api in apis {
            let server = Server::ApiServer { node: api.clone() };
            tracks.push(Track::new(Probe {
                name: format!("pod {name} → {}", server.describe()),
                kind: EdgeKind::Pod,
                managed: *owned,
                client: Side::Pod(name.clone()),
                server,
                unverified: None,
            }));
        }
    }
    *ctx.pods.lock().unwrap_or_else(|e| e.into_inner()) =
        live.into_iter().map(|(n, (t, _))| (n, t)).collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(client: Side, server: Server) -> Probe {
        Probe {
            name: String::new(),
            kind: EdgeKind::ApiServer,
            managed: true,
            client,
            server,
            unverified: None,
        }
    }

    #[test]
    fn a_step_covers_exactly_the_edges_it_can_change() {
        use crate::plan::{Op, Step};
        let step = |ops: Vec<Op>| Step {
            id: "s".into(),
            procedure: "p".into(),
            template: "t".into(),
            doc_step: None,
            title: String::new(),
            stage: crate::procedure::Stage::Rotate,
            target: "cp-1".into(),
            action: crate::procedure::Action::RestartStaticPod,
            kind: crate::procedure::ActionKind::Restart,
            changes: vec![],
            why: None,
            disruption: None,
            ops,
            depends_on: vec![],
        };
        let api = |n: &str| Server::ApiServer { node: n.into() };
        let kubelet_on = |n: &str| {
            Side::Edge(Client::Kubeconfig {
                node: n.into(),
                path: "/etc/kubernetes/kubelet.conf".into(),
                component: Some("kubelet".into()),
            })
        };
        let kubectl_on = |n: &str| {
            Side::Edge(Client::Kubeconfig {
                node: n.into(),
                path: "/etc/kubernetes/admin.conf".into(),
                component: None,
            })
        };
        let apiserver_on = |n: &str| {
            Side::Edge(Client::Flags {
                node: n.into(),
                component: "kube-apiserver".into(),
                ca: Some("kubelet-certificate-authority".into()),
                cert: "kubelet-client-certificate".into(),
                key: "kubelet-client-key".into(),
            })
        };
        let restart = Affects::of(&step(vec![Op::Restart {
            node: "cp-1".into(),
            component: "kube-apiserver".into(),
        }]));
        assert!(restart.covers(&probe(kubelet_on("w-1"), api("cp-1"))));
        assert!(restart.covers(&probe(
            apiserver_on("cp-1"),
            Server::Kubelet { node: "w-1".into() }
        )));
        assert!(restart.covers(&probe(apiserver_on("cp-2"), Server::Aggregated)));
        assert!(!restart.covers(&probe(kubelet_on("w-1"), api("cp-2"))));
        assert!(!restart.covers(&probe(Side::Pod("a/b".into()), api("cp-2"))));
        let write = Affects::of(&step(vec![Op::Set {
            node: Some("cp-1".into()),
            authority: crate::config::Authority::Kubernetes,
            path: "/etc/kubernetes/admin.conf".into(),
            field: crate::diff::Field::KubeconfigCa,
            want: crate::diff::State::Absent,
            replaces: vec![],
        }]));
        assert!(write.covers(&probe(kubectl_on("cp-1"), api("cp-2"))));
        assert!(!write.covers(&probe(kubectl_on("cp-2"), api("cp-1"))));
        assert!(
            !write.covers(&probe(kubelet_on("cp-1"), api("cp-1"))),
            "a process holds what it read at its start"
        );
        let rollout = Affects::of(&step(vec![Op::Set {
            node: None,
            authority: crate::config::Authority::Kubernetes,
            path: String::new(),
            field: crate::diff::Field::PodTrust,
            want: crate::diff::State::Absent,
            replaces: vec![],
        }]));
        assert!(rollout.covers(&probe(Side::Pod("a/b".into()), api("cp-2"))));
        assert!(Affects::of(&step(vec![])).is_empty());
    }

    #[test]
    fn an_outage_runs_from_the_first_failure_to_the_next_success() {
        let mut t = Track::new(Probe {
            name: "x".into(),
            kind: EdgeKind::Etcd,
            managed: true,
            client: Side::Pod("ns/p".into()),
            server: Server::Aggregated,
            unverified: None,
        });
        let t0 = Instant::now();
        let gone = |n: &str| {
            Err(Fail::Trust(TrustError::Pod {
                pod: n.into(),
                reason: "gone".into(),
            }))
        };
        t.record(t0, Ok(()));
        t.record(t0 + Duration::from_millis(200), gone("first"));
        t.record(t0 + Duration::from_millis(400), gone("second"));
        t.record(t0 + Duration::from_millis(700), Ok(()));
        t.record(t0 + Duration::from_millis(900), gone("third"));
        t.record(
            t0 + Duration::from_millis(950),
            Err(Fail::Down("127.0.0.1:2379: refused".into())),
        );
        t.close_outage(t0 + Duration::from_millis(1000));
        let r = t.report();
        // A refused connection is the server down, apart from trust failures.
        assert_eq!((r.attempts, r.failures, r.down), (6, 3, 1));
        assert_eq!(r.longest_outage_ms, 500);
        let first = r.first_error.unwrap_or_default();
        assert!(first.starts_with("pod first: gone ("), "{first}");
    }
}
