//! How a step touches the world. `files`: local node roots (backup first, atomic writes);
//! restarts: a static pod's `trustform.dev/restarted-at` annotation (the kubelet
//! recreates the pod), `systemctl restart kubelet`, or, on a sandbox node, the simulated
//! process re-reading its files.

pub mod files;
pub mod kube;

pub use files::{BackupEntry, Files};

use crate::sandbox::runtime;
use crate::{layout, manifest};
use miette::Diagnostic;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A node as `exec` reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Inventory name.
    pub name: String,
    /// Where its `/` is (`/` on the node itself).
    pub root: PathBuf,
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
            root: root.to_path_buf(),
            sandbox: runtime::is_sandbox(root),
            kubeconfigs: vec![],
        }
    }

    /// This node with the kubeconfig copies trustform.yaml lists for it.
    pub fn with_kubeconfigs(mut self, paths: Vec<String>) -> Self {
        self.kubeconfigs = paths;
        self
    }

    /// Where a node path is on this machine, confined to the node's root (symlinks,
    /// absolute ones included, resolved inside it; `..` refused).
    pub fn host(&self, abs: &str) -> Result<PathBuf, ExecError> {
        crate::transport::resolve(&self.root, abs).map_err(|cause| ExecError::Path {
            node: self.name.clone(),
            cause,
        })
    }

    /// Whether a node path is a regular file (symlinks followed inside the root).
    pub fn is_file(&self, abs: &str) -> bool {
        self.host(abs).is_ok_and(|p| p.is_file())
    }

    /// The names of the entries of a node directory, sorted; empty if there is none.
    pub fn list(&self, dir: &str) -> Vec<String> {
        let Ok(host) = self.host(dir) else {
            return vec![];
        };
        let mut names: Vec<String> = std::fs::read_dir(host)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
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
    /// A path that leaves the node or is not a plain node path.
    #[error("{node}: {cause}")]
    #[diagnostic(code(trustform::exec::path))]
    Path {
        /// Node.
        node: String,
        /// What is wrong with the path.
        cause: crate::transport::PathError,
    },
    /// A file that is not a regular file, or too large.
    #[error("{node}: {cause}")]
    #[diagnostic(code(trustform::exec::input))]
    Input {
        /// Node.
        node: String,
        /// Why it was not read.
        cause: crate::input::InputError,
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Restarted {
    /// A sandbox process re-read its files (its generation).
    Simulated(u64),
    /// The manifest's annotation changed; the kubelet recreates the pod.
    Annotated,
    /// `systemctl restart kubelet` succeeded.
    Systemd,
}

/// Restart a static pod: set `trustform.dev/restarted-at` in its manifest (every other
/// byte kept), and on a sandbox node let the process re-read its files.
pub fn restart_static_pod(
    files: &Files,
    node: &Node,
    component: &str,
) -> Result<Restarted, ExecError> {
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
    if node.sandbox {
        let held = runtime::restart(&node.root, component).map_err(|e| ExecError::Restart {
            node: node.name.clone(),
            component: component.into(),
            reason: e.to_string(),
        })?;
        return Ok(Restarted::Simulated(held.generation));
    }
    Ok(Restarted::Annotated)
}

/// Restart the kubelet: `systemctl restart kubelet` on the node itself; the simulated
/// kubelet on a sandbox node.
pub fn restart_kubelet(node: &Node) -> Result<Restarted, ExecError> {
    let fail = |reason: String| ExecError::Restart {
        node: node.name.clone(),
        component: "kubelet".into(),
        reason,
    };
    if node.sandbox {
        let held = runtime::restart(&node.root, "kubelet").map_err(|e| fail(e.to_string()))?;
        return Ok(Restarted::Simulated(held.generation));
    }
    if node.root != Path::new("/") {
        return Err(fail(format!(
            "the node is reached through {}, not as `/`: run `systemctl restart kubelet` on it, then `trustform apply` again",
            node.root.display()
        )));
    }
    let out = std::process::Command::new("systemctl")
        .args(["restart", "kubelet"])
        .output()
        .map_err(|e| fail(format!("systemctl: {e}")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "systemctl restart kubelet: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(Restarted::Systemd)
}

/// What a running component holds in memory (sandbox nodes only; `None` elsewhere).
pub fn held(node: &Node, component: &str) -> Option<runtime::Held> {
    node.sandbox
        .then(|| runtime::held(&node.root, component))
        .flatten()
}
