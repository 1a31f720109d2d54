//! How a step touches the world. `files`: local node roots (backup first, atomic writes);
//! restarts: a static pod's `trustform.dev/restarted-at` annotation (the kubelet
//! recreates the pod), `systemctl restart kubelet`, or, on a sandbox node, the simulated
//! process re-reading its files.

pub mod files;
pub mod kube;
pub mod restart;

pub use files::{BackupEntry, Files};

use crate::sandbox::runtime;
use crate::transport::{Output, Transport, TransportError};
use crate::{layout, manifest};
use miette::Diagnostic;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// A node as `exec` reaches it: through its [`Transport`].
#[derive(Clone, Debug)]
pub struct Node {
    /// Inventory name.
    pub name: String,
    /// How trustform reaches it.
    pub transport: Arc<dyn Transport>,
    /// Where its `/` is on this machine, when it is reached through a local directory.
    pub root: Option<PathBuf>,
    /// A sandbox node: processes are simulated.
    pub sandbox: bool,
    /// Kubeconfig copies outside `/etc/kubernetes` (trustform.yaml's `kubeconfigs`).
    pub kubeconfigs: Vec<String>,
}

impl Node {
    /// A node reached through a local root.
    pub fn local(name: &str, root: &Path) -> Self {
        Self {
            name: name.to_string(),
            transport: crate::transport::local(name, root),
            root: Some(root.to_path_buf()),
            sandbox: runtime::is_sandbox(root),
            kubeconfigs: vec![],
        }
    }

    /// A node reached through `transport`; `root` is its `/` on this machine when it is
    /// reached through a local directory.
    pub fn new(name: &str, transport: Arc<dyn Transport>, root: Option<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            transport,
            sandbox: root.as_deref().is_some_and(runtime::is_sandbox),
            root,
            kubeconfigs: vec![],
        }
    }

    /// This node with the kubeconfig copies trustform.yaml lists for it.
    pub fn with_kubeconfigs(mut self, paths: Vec<String>) -> Self {
        self.kubeconfigs = paths;
        self
    }

    fn err(&self) -> impl FnOnce(TransportError) -> ExecError + '_ {
        move |cause| ExecError::Transport {
            node: self.name.clone(),
            cause,
        }
    }

    /// Whether a node path is a regular file (symlinks followed).
    pub fn is_file(&self, abs: &str) -> bool {
        matches!(
            self.transport.stat(abs),
            Ok(Some(s)) if s.kind == crate::transport::FileType::File
        )
    }

    /// The names of the entries of a node directory, sorted; empty if there is none.
    pub fn list(&self, dir: &str) -> Vec<String> {
        self.transport
            .list(dir)
            .map(|v| v.into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default()
    }

    /// Run a command on the node.
    pub fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, ExecError> {
        self.transport.run(argv, timeout).map_err(self.err())
    }
}

/// Errors of acting on a node.
#[derive(Debug, Error, Diagnostic)]
pub enum ExecError {
    /// A file operation failed.
    #[error("{node}:{path}: {source}")]
    #[diagnostic(
        code(trustform::exec::io),
        help("check the node's disk and permissions; `trustform apply` resumes where it stopped")
    )]
    Io {
        /// Node.
        node: String,
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The node could not be reached, or refused a path or an operation.
    #[error("{node}: {cause}")]
    #[diagnostic(code(trustform::exec::transport))]
    Transport {
        /// Node.
        node: String,
        /// What the transport said.
        #[diagnostic_source]
        cause: TransportError,
    },
    /// A file's content is not what the step can change.
    #[error("{node}:{path}: {reason}")]
    #[diagnostic(code(trustform::exec::content))]
    Content {
        /// Node.
        node: String,
        /// Path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The backup index names a node the inventory no longer has.
    #[error("the backup names node {0}, which is not in the inventory")]
    #[diagnostic(
        code(trustform::exec::unknown_node),
        help("restore the node to trustform.yaml's inventory, then roll back again")
    )]
    UnknownNode(String),
    /// A restart could not be done.
    #[error("{node}: cannot restart {component}: {reason}")]
    #[diagnostic(code(trustform::exec::restart))]
    Restart {
        /// Node.
        node: String,
        /// Component.
        component: String,
        /// Why.
        reason: String,
    },
}

/// How a restart was carried out.
#[derive(Clone, Debug, PartialEq)]
pub enum Restarted {
    /// A sandbox process re-read its files (its generation).
    Simulated(u64),
    /// The component was seen back: a new pod ready, or the kubelet active again.
    Seen(restart::Seen),
}

/// Restart a static pod and wait until its new pod is ready (see [`restart`]); on a
/// local sandbox node the process re-reads its files at once.
pub fn restart_static_pod(
    files: &Files,
    node: &Node,
    component: &str,
    wait: restart::Wait,
) -> Result<Restarted, ExecError> {
    if let (true, Some(root)) = (node.sandbox, &node.root) {
        let path = format!("/{}/{component}.yaml", layout::MANIFESTS);
        let content = |reason: &str| ExecError::Content {
            node: node.name.clone(),
            path: path.clone(),
            reason: reason.to_string(),
        };
        let bytes = files
            .read(node, &path)?
            .ok_or_else(|| content("no such manifest"))?;
        let text = String::from_utf8(bytes).map_err(|_| content("not UTF-8"))?;
        let next = manifest::set_annotation(&text, manifest::RESTARTED_AT, &crate::clock::now())
            .ok_or_else(|| content("no top-level `metadata:`"))?;
        files.write(
            node,
            &path,
            next.as_bytes(),
            crate::atomic::PUBLIC_MODE,
            false,
        )?;
        let held = runtime::restart(root, component).map_err(|e| ExecError::Restart {
            node: node.name.clone(),
            component: component.into(),
            reason: e.to_string(),
        })?;
        return Ok(Restarted::Simulated(held.generation));
    }
    restart::static_pod(files, node, component, wait).map(Restarted::Seen)
}

/// Restart the kubelet and wait until it is active again (see [`restart`]); on a local
/// sandbox node the simulated kubelet re-reads its files at once.
pub fn restart_kubelet(node: &Node, wait: restart::Wait) -> Result<Restarted, ExecError> {
    if let (true, Some(root)) = (node.sandbox, &node.root) {
        let held = runtime::restart(root, "kubelet").map_err(|e| ExecError::Restart {
            node: node.name.clone(),
            component: "kubelet".into(),
            reason: e.to_string(),
        })?;
        return Ok(Restarted::Simulated(held.generation));
    }
    restart::kubelet(node, wait).map(Restarted::Seen)
}

/// What a running component holds in memory (sandbox nodes only; `None` elsewhere).
pub fn held(node: &Node, component: &str) -> Option<runtime::Held> {
    match (node.sandbox, &node.root) {
        (true, Some(root)) => runtime::held(root, component),
        _ => None,
    }
}
