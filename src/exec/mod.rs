//! How a step touches the world. `files`: local node roots (backup first, atomic writes);
//! restarts: a static pod's `trustform.dev/restarted-at` annotation (the kubelet
//! recreates the pod), `systemctl restart kubelet`: commands run through the node's
//! transport, whatever answers them.

pub mod files;
pub mod health;
pub mod https;
pub mod kube;
pub mod restart;

pub use files::{BackupEntry, Files};

use crate::transport::{Output, Transport, TransportError};
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
            kubeconfigs: vec![],
        }
    }

    /// A node reached through `transport`; `root` is its `/` on this machine when it is
    /// reached through a local directory.
    pub fn new(name: &str, transport: Arc<dyn Transport>, root: Option<PathBuf>) -> Self {
        Self {
            name: name.to_string(),
            transport,
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

/// Read-only views of `nodes` whose trust directories are read now, in one round trip per
/// node and many nodes at once (see [`crate::transport::cache`]); a node whose tree
/// cannot be read is kept as it is (its reads then say why).
pub fn read_views(
    nodes: &std::collections::BTreeMap<String, Node>,
) -> std::collections::BTreeMap<String, Node> {
    let list: Vec<&Node> = nodes.values().collect();
    crate::parallel::map(&list, 16, |n| {
        let mut view = (*n).clone();
        if let Ok(c) = crate::transport::cache::Cached::read(
            n.transport.clone(),
            &crate::transport::cache::TRUST_DIRS,
        ) {
            view.transport = Arc::new(c);
        }
        (n.name.clone(), view)
    })
    .into_iter()
    .collect()
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
    #[diagnostic(
        code(trustform::exec::transport),
        help(
            "check that the node is reachable and the path is inside its root; `trustform apply` resumes where it stopped"
        )
    )]
    Transport {
        /// Node.
        node: String,
        /// What the transport said.
        #[diagnostic_source]
        cause: TransportError,
    },
    /// A file's content is not what the step can change.
    #[error("{node}:{path}: {reason}")]
    #[diagnostic(
        code(trustform::exec::content),
        help(
            "the file changed since the plan was made: fix or restore it, then `trustform plan` again"
        )
    )]
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
    #[diagnostic(
        code(trustform::exec::restart),
        help(
            "read the component's log on the node (`crictl logs`, `journalctl -u kubelet`); `trustform apply` resumes with this step"
        )
    )]
    Restart {
        /// Node.
        node: String,
        /// Component.
        component: String,
        /// Why.
        reason: String,
    },
}

/// What a running component holds in memory, where its node can tell (see
/// [`crate::held`]; `None` on a real node).
pub fn held(node: &Node, component: &str) -> Option<crate::held::Held> {
    node.transport.held(component)
}
