//! The sandbox's nodes as one more [`Transport`]: files through
//! [`crate::transport::Local`] (the node root is the node's `/`), commands through the
//! simulated machine ([`super::node::exec`], in this process: `systemctl`, `crictl`,
//! `journalctl` as on a kubeadm node; anything else is not found), ports as plain TCP
//! (every sandbox listener is on this machine's loopback).
//!
//! [`install`] registers it for every local root that is a sandbox node, so trustform
//! reaches sandbox nodes through it without ever asking which transport it has.

use super::node::{self, Machine};
use super::runtime;
use crate::input::Kind;
use crate::transport::{self, FileType, Local, Output, Stat, Stream, Transport, TransportError};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A sandbox node: its files, its simulated machine, this machine's loopback.
#[derive(Debug, Clone)]
pub struct SandboxTransport {
    files: Local,
    machine: Machine,
}

impl SandboxTransport {
    /// The sandbox node `name` whose `/` is `root`.
    pub fn new(name: &str, root: &Path) -> Self {
        Self {
            files: Local::new(name, root),
            machine: Machine::open(root),
        }
    }
}

impl Transport for SandboxTransport {
    fn describe(&self) -> String {
        format!("sandbox {}", self.machine.root.display())
    }

    fn read(&self, abs: &str, kind: Kind) -> Result<Option<Vec<u8>>, TransportError> {
        self.files.read(abs, kind)
    }

    fn stat(&self, abs: &str) -> Result<Option<Stat>, TransportError> {
        self.files.stat(abs)
    }

    fn read_link(&self, abs: &str) -> Result<Option<String>, TransportError> {
        self.files.read_link(abs)
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, FileType)>, TransportError> {
        self.files.list(dir)
    }

    fn write(
        &self,
        abs: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), TransportError> {
        self.files.write(abs, bytes, mode, owner)
    }

    fn remove(&self, abs: &str) -> Result<(), TransportError> {
        self.files.remove(abs)
    }

    fn symlink(&self, abs: &str, target: &str) -> Result<(), TransportError> {
        self.files.symlink(abs, target)
    }

    fn remove_leftovers(&self, dirs: &[&str]) -> Result<Vec<String>, TransportError> {
        self.files.remove_leftovers(dirs)
    }

    /// The simulated machine answers at once; `timeout` never runs out.
    fn run(&self, argv: &[&str], _timeout: Duration) -> Result<Output, TransportError> {
        Ok(self.machine.exec(argv))
    }

    /// A TLS port of a process of this sandbox (or its load balancer, the kubeconfigs'
    /// `server`) is answered in this process from what the process holds
    /// ([`node::serve`]), a health endpoint of this node's processes by the simulated
    /// machine; anything else is a real connection on this machine's loopback.
    fn held(&self, component: &str) -> Option<crate::held::Held> {
        runtime::held(&self.machine.root, component)
    }

    fn held_stamp(&self, component: &str) -> Option<crate::held::Stamp> {
        runtime::stamp(&self.machine.root, component)
    }

    fn dial(&self, host: &str, port: u16) -> Result<Box<dyn Stream>, TransportError> {
        let live = node::serve::dial(&self.machine, host, port);
        if let Some(s) = live.or_else(|| self.machine.dial(host, port)) {
            return s.map(|s| Box::new(s) as Box<dyn Stream>).map_err(|e| {
                TransportError::Unreachable {
                    node: self.machine.name.clone(),
                    reason: format!("{host}:{port}: {e}"),
                    help: "the process that listens there is down".into(),
                }
            });
        }
        let s =
            transport::process::connect(host, port).map_err(|e| TransportError::Unreachable {
                node: self.machine.name.clone(),
                reason: format!("{host}:{port}: {e}"),
                help: "check that `trustform sandbox up` runs for this sandbox".into(),
            })?;
        Ok(Box::new(s))
    }
}

fn override_for(name: &str, root: &Path) -> Option<Arc<dyn Transport>> {
    runtime::is_sandbox(root)
        .then(|| Arc::new(SandboxTransport::new(name, root)) as Arc<dyn Transport>)
}

/// Make [`crate::transport::local`] answer sandbox node roots with a
/// [`SandboxTransport`] (once per process; call it at start-up).
pub fn install() {
    transport::register_local_override(override_for);
}

/// Run `argv` on the sandbox node whose `/` is `root` (what [`SandboxTransport::run`]
/// does), for callers that hold only the root.
pub fn exec(root: &Path, argv: &[&str]) -> Output {
    node::exec(root, argv)
}
