//! How trustform reaches a node. Every way (a local directory that is the node's `/`,
//! SSH, and the sandbox's simulated nodes, which register their own) sits behind one
//! interface, [`Transport`]: read a file (type and size checked), write one atomically,
//! read and replace a symlink, list a directory, run a command, reach a TCP port. `exec`,
//! `apply` and `observe` talk to nodes only through it, and never ask which one it is.
//!
//! Node paths are absolute and plain (no `.`, `..`, empty component or NUL): [`normal`]
//! checks them before any transport sees them. A local transport resolves every path
//! inside the node's root ([`local::resolve`]); on a node reached over SSH the path is the
//! node's own.

pub mod cache;
pub mod local;
pub mod process;
pub mod shell;
pub mod ssh;
pub mod traced;

pub use local::{Local, PathError, normal, resolve};
pub use ssh::{Ssh, SshOptions};
pub use traced::traced;

use crate::input::Kind;
use miette::Diagnostic;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use thiserror::Error;

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileType {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink (only from [`Transport::list`], which does not follow them).
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

/// A file's metadata, symlinks followed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    /// What it is.
    pub kind: FileType,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
}

/// A command's result.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard output as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last line of standard error (or output), for messages.
    pub fn reason(&self) -> String {
        let err = String::from_utf8_lossy(&self.stderr);
        let out = String::from_utf8_lossy(&self.stdout);
        let last = |t: &str| {
            t.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(str::trim)
                .map(str::to_string)
        };
        let line = last(&err)
            .or_else(|| last(&out))
            .unwrap_or_else(|| match self.code {
                Some(c) => format!("exit code {c}"),
                None => "killed by a signal".into(),
            });
        crate::input::clip_lines(&line, 240).into_owned()
    }
}

/// A byte stream to a TCP port as the node reaches it.
pub trait Stream: std::io::Read + std::io::Write + Send {}
impl<T: std::io::Read + std::io::Write + Send> Stream for T {}

/// Why a transport could not do what was asked.
#[derive(Debug, Error, Diagnostic)]
pub enum TransportError {
    /// A path that is not a plain node path, or leaves the node.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Path(#[from] PathError),
    /// A file that is not a regular file, too large, or unreadable.
    #[error("{path} {reason}")]
    #[diagnostic(code(trustform::transport::input))]
    Input {
        /// The node path.
        path: String,
        /// What is wrong.
        reason: String,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },
    /// The operating system refused (on the node).
    #[error("{path}: {reason}")]
    #[diagnostic(
        code(trustform::transport::io),
        help("check the node's disk and permissions; `trustform apply` resumes where it stopped")
    )]
    Io {
        /// The node path.
        path: String,
        /// What it said.
        reason: String,
    },
    /// The node cannot be reached, or refused us.
    #[error("{node}: {reason}")]
    #[diagnostic(code(trustform::transport::unreachable))]
    Unreachable {
        /// How the node was reached (`ssh root@10.0.0.11:22`).
        node: String,
        /// What went wrong.
        reason: String,
        /// How to fix it.
        #[help]
        help: String,
    },
    /// This transport cannot do that (a command on a node reached through a directory).
    #[error("{node}: {what}")]
    #[diagnostic(code(trustform::transport::unsupported))]
    Unsupported {
        /// The node.
        node: String,
        /// What cannot be done, and why.
        what: String,
        /// What to do instead.
        #[help]
        help: String,
    },
}

impl TransportError {
    pub(crate) fn input(path: &str, e: crate::input::InputError) -> Self {
        TransportError::Input {
            path: path.to_string(),
            reason: e.reason(),
            help: e.help_line(),
        }
    }

    /// Whether the file was missing (reads return `None` for that; other calls may not).
    pub fn is_missing(&self) -> bool {
        matches!(self, TransportError::Input { reason, .. } if reason == "does not exist")
    }
}

/// One file found by [`Transport::read_tree`].
#[derive(Debug)]
pub struct TreeFile {
    /// Its node path.
    pub path: String,
    /// Permission bits (symlinks followed), when it is a regular file.
    pub mode: Option<u32>,
    /// Its bytes (symlinks followed), or why they were not read.
    pub bytes: Result<Vec<u8>, TransportError>,
}

/// Every entry below the directories `dirs` that is not a directory (symlinked
/// directories below them are not followed), except `skip` (a root that is a regular
/// file is itself the entry): read with
/// [`Transport::list`], [`Transport::stat`] and [`Transport::read`].
pub fn read_tree_by_parts<T: Transport + ?Sized>(
    t: &T,
    dirs: &[&str],
    skip: &[&str],
    kind: Kind,
) -> Result<Vec<TreeFile>, TransportError> {
    fn walk<T: Transport + ?Sized>(
        t: &T,
        dir: &str,
        skip: &[&str],
        out: &mut Vec<String>,
    ) -> Result<(), TransportError> {
        for (name, k) in t.list(dir)? {
            let abs = format!("{dir}/{name}");
            if skip.contains(&abs.as_str()) {
                continue;
            }
            match k {
                FileType::Dir => walk(t, &abs, skip, out)?,
                _ => out.push(abs),
            }
        }
        Ok(())
    }
    let mut paths = vec![];
    for d in dirs {
        // A root may be a single file.
        match t.stat(d)? {
            Some(s) if s.kind == FileType::File => paths.push(d.to_string()),
            _ => walk(t, d, skip, &mut paths)?,
        }
    }
    Ok(paths
        .into_iter()
        .map(|path| {
            let mode = t.stat(&path).ok().flatten().map(|s| s.mode);
            tree_file(t, path, mode, kind)
        })
        .collect())
}

/// The entry of a tree at `path` (mode `mode`), its bytes read now.
pub(crate) fn tree_file<T: Transport + ?Sized>(
    t: &T,
    path: String,
    mode: Option<u32>,
    kind: Kind,
) -> TreeFile {
    let bytes = match t.read(&path, kind) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(TransportError::Input {
            path: path.clone(),
            reason: "does not exist".into(),
            help: None,
        }),
        Err(e) => Err(e),
    };
    TreeFile { path, mode, bytes }
}

/// What [`Transport::inspect`] found at a path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inspect {
    /// The targets of the chain of symlinks that starts at the path, in order (empty: the
    /// path is not a symlink). [`Inspect::target`] is where it ends.
    pub links: Vec<String>,
    /// The end of the chain's metadata (`None`: nothing there).
    pub stat: Option<Stat>,
    /// Its bytes, when it is a regular file within the cap (else [`Transport::read`] of
    /// the target says why not).
    pub bytes: Option<Vec<u8>>,
}

impl Inspect {
    /// The node path the chain of symlinks at `abs` ends at (`abs` itself if it is none),
    /// resolved lexically (`..` drops the last component).
    pub fn target(&self, abs: &str) -> String {
        let mut at = abs.to_string();
        for to in &self.links {
            at = follow(&at, to);
        }
        at
    }
}

/// Where a symlink at `at` pointing to `to` leads, lexically.
pub fn follow(at: &str, to: &str) -> String {
    let joined = if to.starts_with('/') {
        to.to_string()
    } else {
        format!("{}/{to}", at.rsplit_once('/').map_or("", |(d, _)| d))
    };
    let mut parts: Vec<&str> = vec![];
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// How many symlinks one path may pass through (Linux's own limit).
pub const MAX_LINKS: usize = 40;

/// [`Transport::inspect`] by parts: [`Transport::read_link`] along the chain, then
/// [`Transport::stat`] and [`Transport::read`] of its end.
pub fn inspect_by_parts<T: Transport + ?Sized>(
    t: &T,
    abs: &str,
    kind: Kind,
) -> Result<Inspect, TransportError> {
    let mut found = Inspect::default();
    let mut at = abs.to_string();
    while let Some(to) = t.read_link(&at)? {
        if found.links.len() == MAX_LINKS {
            return Err(TransportError::Io {
                path: abs.to_string(),
                reason: "too many levels of symbolic links".into(),
            });
        }
        at = follow(&at, &to);
        found.links.push(to);
    }
    found.stat = t.stat(&at)?;
    if found
        .stat
        .is_some_and(|s| s.kind == FileType::File && s.size <= kind.cap())
    {
        found.bytes = t.read(&at, kind)?;
    }
    Ok(found)
}

/// One way to reach a node.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// How the node is reached, for messages: `local ./cluster/nodes/cp-1`,
    /// `ssh root@10.0.0.11:22`.
    fn describe(&self) -> String;

    /// A regular file's bytes (symlinks followed), at most `kind`'s cap; `None` if it does
    /// not exist.
    fn read(&self, abs: &str, kind: Kind) -> Result<Option<Vec<u8>>, TransportError>;

    /// Metadata, symlinks followed; `None` if nothing is there.
    fn stat(&self, abs: &str) -> Result<Option<Stat>, TransportError>;

    /// The target of `abs` if it is itself a symlink.
    fn read_link(&self, abs: &str) -> Result<Option<String>, TransportError>;

    /// A directory's entries (not following symlinks), sorted by name; empty if there is
    /// no such directory.
    fn list(&self, dir: &str) -> Result<Vec<(String, FileType)>, TransportError>;

    /// Replace `abs` with `bytes` atomically: a temp file in the same directory, fsync,
    /// rename. `mode` and `owner` are the new file's. Parent directories are created. If
    /// `abs` is a symlink, the file it points at is replaced and the link stays.
    fn write(
        &self,
        abs: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), TransportError>;

    /// Delete a file (or a symlink); nothing if it is not there.
    fn remove(&self, abs: &str) -> Result<(), TransportError>;

    /// Make `abs` a symlink to `target`, atomically replacing what is there.
    fn symlink(&self, abs: &str, target: &str) -> Result<(), TransportError>;

    /// Remove trustform's temp files (`.trustform-XXXXXX`) a killed write left in the
    /// directories `dirs` (in one round trip where the transport can). Returns their
    /// node paths.
    fn remove_leftovers(&self, dirs: &[&str]) -> Result<Vec<String>, TransportError>;

    /// Whether [`Transport::run`] can run commands on the node at all. `false` for a
    /// node reached through a directory that is not this machine's `/`: trustform cannot
    /// restart anything there, so the plan makes its restarts manual steps.
    fn can_run(&self) -> bool {
        true
    }

    /// Run a command on the node (as root: through `sudo -n` where the login is not
    /// root), with a time limit.
    fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, TransportError>;

    /// A TCP connection to `host:port` as the node reaches it (`127.0.0.1` is the node's
    /// own loopback).
    fn dial(&self, host: &str, port: u16) -> Result<Box<dyn Stream>, TransportError>;

    /// What `component` holds in memory (see [`crate::held`]): `None` where it cannot be
    /// known, as on every real node.
    fn held(&self, _component: &str) -> Option<crate::held::Held> {
        None
    }

    /// The [`crate::held::Stamp`] of what `component` holds (changed by a restart).
    fn held_stamp(&self, _component: &str) -> Option<crate::held::Stamp> {
        None
    }

    /// The chain of symlinks at `abs`, and the metadata and bytes (within `kind`'s cap)
    /// of where it ends, in as few round trips as the transport can: what a write needs
    /// to know (and back up) first.
    fn inspect(&self, abs: &str, kind: Kind) -> Result<Inspect, TransportError> {
        inspect_by_parts(self, abs, kind)
    }

    /// Every file below the directories `dirs` (not `skip`), with its mode and bytes, in
    /// as few round trips as the transport can (observe reads whole trees this way).
    fn read_tree(
        &self,
        dirs: &[&str],
        skip: &[&str],
        kind: Kind,
    ) -> Result<Vec<TreeFile>, TransportError> {
        read_tree_by_parts(self, dirs, skip, kind)
    }
}

/// A hook by which a simulated cluster supplies its own transport for local roots it
/// owns (the sandbox registers one at start-up). The product never asks which it is.
pub type LocalOverride = fn(name: &str, root: &std::path::Path) -> Option<Arc<dyn Transport>>;

static LOCAL_OVERRIDE: OnceLock<LocalOverride> = OnceLock::new();

/// Register the [`LocalOverride`] (once per process).
pub fn register_local_override(f: LocalOverride) {
    let _ = LOCAL_OVERRIDE.set(f);
}

/// The transport for a node reached through a local directory.
pub fn local(name: &str, root: &std::path::Path) -> Arc<dyn Transport> {
    let made = LOCAL_OVERRIDE
        .get()
        .and_then(|f| f(name, root))
        .unwrap_or_else(|| Arc::new(Local::new(name, root)));
    traced(name, made)
}
