//! Real etcd members for the sandbox's control planes: where an `etcd` binary is
//! installed (Debian's `etcd-server`), `sandbox up` runs one real etcd process per
//! control plane, so every etcd trust edge is etcd's own: the API server → etcd client
//! port, the healthcheck client, and the peer edges between members (both ways verified,
//! etcd's own rules: it reads its CA files only at start, a member that trusts no CA its
//! peers present drops out, `/health` answers 503 without a leader).
//!
//! The node's kubelet (the simulated one, [`super::node`]) still decides *when* the etcd
//! container runs: a [`Supervisor`] watches every control plane's etcd pod and starts a
//! real process for each container that starts (with the command of the manifest as the
//! container read it), stops it (SIGTERM, as the kubelet does) when the container is
//! killed, and reports a process that exits on its own as the container's exit, which
//! the kubelet restarts with its back-off (a crash loop). etcd's own output is the
//! container's log (`crictl logs`).
//!
//! What differs from a real node, and why: every node of a sandbox shares this
//! machine's loopback, so a member cannot listen on `127.0.0.1:2379` (three would want
//! it): listen URLs on a shared loopback address are left out, the node's own address
//! stays. Node paths (`/etc/kubernetes/pki/etcd/…`, `/var/lib/etcd`) are the node root's.
//! etcd 3.4 logs with capnslog unless told `--logger=zap` (3.5's default), which it is.
//!
//! While the members run, `DIR/run/etcd.json` says so ([`Registry`]): the simulated
//! endpoints of etcd ([`super::node::serve`], [`super::node::health`],
//! [`super::listeners`]) then stand aside and connections reach the real members.
//! Where etcd is not installed, `sandbox up` says so and etcd stays simulated.

use super::node::{Machine, logs};
use crate::exec::health::Probe;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The etcd binary to run: a path, or `none` to keep etcd simulated (default: `etcd` on
/// the `PATH`).
pub const ENV: &str = "TRUSTFORM_SANDBOX_ETCD";

/// The registry's path, relative to the sandbox directory.
pub const REGISTRY: &str = "run/etcd.json";

/// How often the supervisor looks at the nodes.
const PERIOD: Duration = Duration::from_millis(100);

/// How long a member may take to stop after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// The running members, as `DIR/run/etcd.json` (public data only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    /// The supervisor's process (`sandbox up`): the members are real while it lives.
    pub pid: u32,
    /// The etcd binary.
    pub binary: String,
    /// Its version (`3.4.23`).
    pub version: String,
    /// Node name → its member's process now.
    pub members: BTreeMap<String, Member>,
}

/// One member's process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its process ID (0 while its container is down).
    pub pid: u32,
    /// The container it runs for.
    pub container: String,
}

impl Registry {
    fn path(dir: &Path) -> PathBuf {
        dir.join(REGISTRY)
    }

    /// The registry of sandbox `dir`, if its supervisor still runs.
    pub fn load(dir: &Path) -> Option<Self> {
        let bytes = std::fs::read(Self::path(dir)).ok()?;
        let r: Self = serde_json::from_slice(&bytes).ok()?;
        alive(r.pid).then_some(r)
    }

    fn save(&self, dir: &Path) {
        let json = serde_json::to_vec_pretty(self).expect("registry serialises");
        let _ = crate::atomic::write(&Self::path(dir), &json, crate::atomic::PUBLIC_MODE);
    }
}

fn alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Whether sandbox `dir`'s etcd members are real processes now.
pub fn real(dir: &Path) -> bool {
    Registry::load(dir).is_some()
}

/// Whether the etcd member of the node whose `/` is `root` (`DIR/nodes/<name>`) is real.
pub fn real_at(root: &Path) -> bool {
    root.parent().and_then(Path::parent).is_some_and(real)
}

/// The etcd binary and its version, or why there is none.
pub fn binary() -> Result<(PathBuf, String), String> {
    let path = match std::env::var(ENV) {
        Ok(v) if v == "none" => return Err(format!("{ENV}=none")),
        Ok(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from("etcd"),
    };
    let out = Command::new(&path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "{} cannot be run ({e}): install etcd (Debian: `apt-get install etcd-server`)",
                path.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("{} --version says no version", path.display()))?;
    Ok((path, version))
}

/// The command a member runs for the container started from `manifest` (the manifest's
/// bytes as the container read them) on the node whose `/` is `root`: the manifest's
/// command with node paths made the node root's and shared-loopback listen URLs left
/// out (see the module's notes).
pub fn command(root: &Path, manifest: &str, binary: &Path, version: &str) -> Vec<String> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Pod {
        spec: Spec,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Spec {
        containers: Vec<C>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct C {
        command: Vec<String>,
        args: Vec<String>,
    }
    let pod: Pod = serde_saphyr::from_str(manifest).unwrap_or_default();
    let c = pod.spec.containers.into_iter().next().unwrap_or_default();
    let mut out = vec![binary.display().to_string()];
    let mut logger = false;
    for arg in c.command.iter().skip(1).chain(&c.args) {
        let Some((flag, value)) = arg.strip_prefix("--").and_then(|f| f.split_once('=')) else {
            out.push(arg.clone());
            continue;
        };
        logger |= flag == "logger";
        let value = if flag.starts_with("listen-") && flag.ends_with("-urls") {
            let kept: Vec<&str> = value.split(',').filter(|u| !shared_loopback(u)).collect();
            if kept.is_empty() {
                value.to_string()
            } else {
                kept.join(",")
            }
        } else if value.starts_with('/') {
            crate::transport::resolve(root, value)
                .unwrap_or_else(|_| root.join(crate::layout::rel(value)))
                .display()
                .to_string()
        } else {
            value.to_string()
        };
        out.push(format!("--{flag}={value}"));
    }
    if !logger && version.starts_with("3.4") {
        out.push("--logger=zap".into());
    }
    out
}

/// A URL on the loopback address every sandbox node shares.
fn shared_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// One member's process.
struct Running {
    child: Child,
    container: String,
}

/// The members of a sandbox, run while it lives (see the module's notes); stopped by
/// [`Supervisor::shutdown`] or on drop.
pub struct Supervisor {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The etcd version that runs.
    pub version: String,
    /// The control planes that have a member.
    pub nodes: Vec<String>,
}

impl Supervisor {
    /// Start supervising sandbox `dir`'s etcd members (they start at once, for every etcd
    /// container that runs). `Err`: no etcd binary (see [`binary`]), or not a sandbox.
    pub fn start(dir: &Path) -> Result<Self, String> {
        let (binary, version) = binary()?;
        let dir = std::path::absolute(dir).map_err(|e| e.to_string())?;
        let sandbox = super::Sandbox::load(&dir)
            .map_err(|e| format!("{} is not a sandbox: {e}", dir.display()))?;
        let machines: Vec<Machine> = sandbox
            .nodes
            .iter()
            .map(|n| Machine::open(&dir.join("nodes").join(&n.name)))
            .filter(|m| m.manifests().iter().any(|c| c == "etcd"))
            .collect();
        let registry = Registry {
            pid: std::process::id(),
            binary: binary.display().to_string(),
            version: version.clone(),
            members: BTreeMap::new(),
        };
        registry.save(&dir);
        let stop = Arc::new(AtomicBool::new(false));
        let nodes = machines.iter().map(|m| m.name.clone()).collect();
        let (d, s) = (dir.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("etcd-supervisor".into())
            .spawn(move || supervise(&d, &machines, registry, &binary, &s))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            dir,
            stop,
            thread: Some(thread),
            version,
            nodes,
        })
    }

    /// Wait until every member answers its health endpoint (its manifest's probe:
    /// `/health?serializable=false`, which needs a leader) with 200, at most `limit`;
    /// `Err` names the members that do not.
    pub fn wait_healthy(&self, limit: Duration) -> Result<(), Vec<String>> {
        let start = Instant::now();
        loop {
            let sick = sick_members(&self.dir);
            if sick.is_empty() {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(sick);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop every member (SIGTERM, then SIGKILL after a grace period) and remove the
    /// registry.
    pub fn shutdown(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if Registry::load(&self.dir).is_some_and(|r| r.pid == std::process::id()) {
            let _ = std::fs::remove_file(Registry::path(&self.dir));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The members of sandbox `dir` whose health endpoint does not answer 200, each with
/// what it answered.
pub fn sick_members(dir: &Path) -> Vec<String> {
    let Ok(sandbox) = super::Sandbox::load(dir) else {
        return vec!["the sandbox".into()];
    };
    let mut out = vec![];
    for n in &sandbox.nodes {
        let root = dir.join("nodes").join(&n.name);
        let Some(probe) = std::fs::read_to_string(
            root.join(crate::layout::rel(&crate::layout::manifest("etcd"))),
        )
        .ok()
        .and_then(|t| crate::exec::health::of_manifest(&t)) else {
            continue;
        };
        if let Err(e) = health(&probe) {
            out.push(format!("etcd on {}: {e}", n.name));
        }
    }
    out
}

/// One health check of a member, directly (its address is this machine's).
pub fn health(probe: &Probe) -> Result<String, String> {
    let t = crate::transport::local("etcd", Path::new("/"));
    crate::exec::health::check(&t, probe, Duration::from_secs(2))
}

/// The supervisor's loop.
fn supervise(
    dir: &Path,
    machines: &[Machine],
    mut registry: Registry,
    binary: &Path,
    stop: &AtomicBool,
) {
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        for m in machines {
            tend(m, &mut running, binary, &registry.version);
        }
        let members: BTreeMap<String, Member> = running
            .iter()
            .map(|(n, r)| {
                (
                    n.clone(),
                    Member {
                        pid: r.child.id(),
                        container: r.container.clone(),
                    },
                )
            })
            .collect();
        if members != registry.members {
            registry.members = members;
            registry.save(dir);
        }
        std::thread::sleep(PERIOD);
    }
    for (name, r) in std::mem::take(&mut running) {
        if let Some(m) = machines.iter().find(|m| m.name == name) {
            terminate(m, r);
        }
    }
}

/// Bring node `m`'s member in line with its etcd container.
fn tend(m: &Machine, running: &mut BTreeMap<String, Running>, binary: &Path, version: &str) {
    let Ok(st) = m.reconcile() else { return };
    let want = st
        .pods
        .get("etcd")
        .and_then(|s| s.pods.last())
        .filter(|p| p.serving())
        .and_then(|p| p.container())
        .map(|c| c.id.clone());
    if let Some(r) = running.get_mut(&m.name) {
        if let Ok(Some(status)) = r.child.try_wait() {
            // It exited on its own: so did its container.
            let code = status.code().unwrap_or(128 + status_signal(&status));
            let _ = m.container_exited("etcd", &r.container, code, logs::now());
            running.remove(&m.name);
            return;
        }
        if want.as_deref() == Some(r.container.as_str()) {
            return;
        }
        if let Some(r) = running.remove(&m.name) {
            terminate(m, r);
        }
    }
    let Some(container) = want else { return };
    let manifest = super::runtime::held(&m.root, "etcd")
        .and_then(|h| h.file(&crate::layout::manifest("etcd")))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let argv = command(&m.root, &manifest, binary, version);
    match spawn(m, &argv) {
        Ok(child) => {
            running.insert(m.name.clone(), Running { child, container });
        }
        Err(e) => {
            let t = logs::now();
            let line = logs::zap("fatal", t, "etcdmain/etcd.go:1", &e, &[]);
            logs::container(&m.root, "etcd", t, &line);
            let _ = m.container_exited("etcd", &container, 1, t);
        }
    }
}

fn status_signal(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

/// Start `argv` for node `m`: it dies with the thread that started it (`setpriv
/// --pdeathsig`, so a `sandbox up` killed leaves no member behind), its output goes to
/// the container log.
fn spawn(m: &Machine, argv: &[String]) -> Result<Child, String> {
    let data = argv
        .iter()
        .find_map(|a| a.strip_prefix("--data-dir="))
        .map(PathBuf::from);
    if let Some(d) = data.filter(|d| !d.exists()) {
        // kubeadm makes it 0700, as etcd asks.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)
            .map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"])
        .args(argv)
        .current_dir(&m.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let root = m.root.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                logs::container(&root, "etcd", logs::now(), &line);
            }
        });
    }
    Ok(child)
}

/// Stop a member as the kubelet stops a container: SIGTERM, SIGKILL after the grace
/// period.
fn terminate(m: &Machine, mut r: Running) {
    use rustix::process::{Pid, Signal, kill_process};
    if let Some(pid) = Pid::from_raw(r.child.id() as i32) {
        let _ = kill_process(pid, Signal::TERM);
    }
    let start = Instant::now();
    while start.elapsed() < GRACE {
        if let Ok(Some(_)) = r.child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = r.child.kill();
    let _ = r.child.wait();
    let t = logs::now();
    let line = logs::zap(
        "warn",
        t,
        "sandbox/etcd.rs",
        &format!("killed after {}s without stopping", GRACE.as_secs()),
        &[("node", &m.name)],
    );
    logs::container(&m.root, "etcd", t, &line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_is_the_manifests_with_node_paths_and_no_shared_loopback() {
        let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\nspec:\n  containers:\n  - command:\n    - etcd\n    - --data-dir=/var/lib/etcd\n    - --listen-client-urls=https://127.0.0.1:2379,https://127.9.0.1:2379\n    - --listen-metrics-urls=http://127.0.0.1:2381\n    - --cert-file=/etc/kubernetes/pki/etcd/server.crt\n    - --name=cp-1\n";
        let argv = command(
            Path::new("/sb/nodes/cp-1"),
            manifest,
            Path::new("/usr/bin/etcd"),
            "3.4.23",
        );
        assert_eq!(
            argv,
            [
                "/usr/bin/etcd",
                "--data-dir=/sb/nodes/cp-1/var/lib/etcd",
                "--listen-client-urls=https://127.9.0.1:2379",
                // Only a shared address: kept, and etcd says what it says.
                "--listen-metrics-urls=http://127.0.0.1:2381",
                "--cert-file=/sb/nodes/cp-1/etc/kubernetes/pki/etcd/server.crt",
                "--name=cp-1",
                "--logger=zap",
            ]
        );
        let argv = command(
            Path::new("/sb/nodes/cp-1"),
            manifest,
            Path::new("etcd"),
            "3.5.16",
        );
        assert!(!argv.iter().any(|a| a.starts_with("--logger")));
    }

    #[test]
    fn a_registry_whose_supervisor_is_gone_is_not_real() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("run")).unwrap();
        let mut r = Registry {
            pid: std::process::id(),
            ..Registry::default()
        };
        r.save(d.path());
        assert!(real(d.path()));
        r.pid = u32::MAX - 1;
        r.save(d.path());
        assert!(!real(d.path()));
    }
}
