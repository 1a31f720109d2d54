//! The sandbox's nodes as machines: `systemctl`, `crictl` and `journalctl` behave on a
//! sandbox node as they do on a kubeadm node, for the commands trustform uses to restart
//! a component and wait for it, so the product needs no sandbox branch.
//!
//! Everything is a pure function of the node root and the wall clock: the node's
//! state (kubelet.service, pods, containers) lives in
//! `run/trustform-sandbox/node/state.json` and is brought up to the present from
//! timestamps by every command ([`Machine::reconcile`]), and by `sandbox up` every
//! ~100 ms, so a node behaves the same whether or not `sandbox up` runs. See
//! [`kubelet`] for the behaviour (restart time, crash loops, back-off), [`logs`] for
//! the logs, and [`exec`] for the commands.
//!
//! The simulated processes still hold what they read at their last start
//! ([`crate::sandbox::runtime`]); the node decides *when* they (re)start.

pub mod crictl;
pub mod fit;
pub mod health;
pub mod journalctl;
pub mod kubelet;
pub mod logs;
pub mod serve;
pub mod systemctl;
pub mod timing;

pub use kubelet::{ActiveState, Machine, State};
pub use timing::RestartTime;

use crate::transport::Output;
use std::path::Path;
use std::time::Duration;

/// How often `sandbox up` reconciles every node.
pub const RECONCILE_PERIOD: Duration = Duration::from_millis(100);

/// Reconcile every node of sandbox `dir` every `period` (on the current tokio runtime,
/// off its async threads) until the handle is aborted: what a node's kubelet does
/// continuously, so restarts happen on time even when nobody runs a command.
pub fn spawn(dir: &Path, period: Duration) -> tokio::task::JoinHandle<()> {
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        let mut machines: Option<std::sync::Arc<Vec<Machine>>> = None;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if machines.is_none() {
                machines = crate::sandbox::Sandbox::load(&dir).ok().map(|s| {
                    std::sync::Arc::new(s.nodes.iter().map(|n| Machine::open(&n.root)).collect())
                });
            }
            let Some(ms) = machines.clone() else { continue };
            let _ = tokio::task::spawn_blocking(move || {
                for m in ms.iter() {
                    let _ = m.reconcile();
                }
            })
            .await;
        }
    })
}

/// Listen on `addr` for as long as the process lives, handling each connection on a
/// thread of its own (`sandbox up`'s real listeners for nodes reached over SSH).
pub fn listen(
    addr: &str,
    handle: impl Fn(std::net::TcpStream) + Clone + Send + 'static,
) -> std::io::Result<()> {
    let l = std::net::TcpListener::bind(addr)?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let handle = handle.clone();
            std::thread::spawn(move || handle(s));
        }
    });
    Ok(())
}

/// 64 random bits (std's per-process random keys, a counter and the clock).
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_i64(logs::now());
    h.write_u32(std::process::id());
    h.finish()
}

/// A container runtime ID: 64 hex digits.
pub fn random_id() -> String {
    (0..4).map(|_| format!("{:016x}", random_u64())).collect()
}

/// A command's output.
pub(crate) fn output(code: i32, stdout: impl Into<String>, stderr: impl Into<String>) -> Output {
    Output {
        code: Some(code),
        stdout: stdout.into().into_bytes(),
        stderr: stderr.into().into_bytes(),
    }
}

/// Run `argv` on the sandbox node whose `/` is `root`, as the node's shell would:
///
/// - `systemctl restart|start|stop|is-active|show|status kubelet` (see [`systemctl`]);
/// - `crictl pods|ps|logs|inspectp …` (see [`crictl`]);
/// - `journalctl -u kubelet …` (see [`journalctl`]);
/// - anything else: exit 127, `sh: 1: NAME: not found`, as on a machine without it.
///
/// The node is reconciled to the present first.
pub fn exec(root: &Path, argv: &[&str]) -> Output {
    Machine::open(root).exec(argv)
}

impl Machine {
    /// [`exec`] on this machine.
    pub fn exec(&self, argv: &[&str]) -> Output {
        let Some((program, args)) = argv.split_first() else {
            return output(0, "", "");
        };
        let name = program.rsplit('/').next().unwrap_or(program);
        let result = match name {
            "systemctl" => systemctl::run(self, args),
            "crictl" => crictl::run(self, args),
            "journalctl" => journalctl::run(self, args),
            _ => {
                if let Err(e) = self.reconcile() {
                    return output(1, "", format!("sh: 1: {program}: {e}\n"));
                }
                return output(127, "", format!("sh: 1: {program}: not found\n"));
            }
        };
        result.unwrap_or_else(|e| output(1, "", format!("{name}: {e}\n")))
    }
}
