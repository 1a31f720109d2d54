//! A read-only view of a node whose trust directories were read in one round trip
//! ([`Transport::read_tree`]): the gates and the pre-flight read every file of every node,
//! and over SSH one round trip per file would dominate an apply. Reads, stats and
//! listings under the prefetched directories are answered from memory; everything else
//! (and every write) goes to the node.

use super::{FileType, Output, Stat, Stream, Transport, TransportError, TreeFile};
use crate::input::Kind;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The trust directories of a kubeadm node, as observe reads them, and the kubelet's
/// configuration (its `clientCAFile`).
pub const TRUST_DIRS: [&str; 3] = [
    "/etc/kubernetes",
    "/var/lib/kubelet/pki",
    "/var/lib/kubelet/config.yaml",
];

/// What is not read with them: kubeadm's backups (`kubeadm upgrade` keeps old
/// manifests, certificates and a copy of etcd's database here), not trust any component
/// reads.
pub const SKIPPED: [&str; 1] = ["/etc/kubernetes/tmp"];

/// A node's files as read at one moment.
#[derive(Debug)]
pub struct Cached {
    inner: Arc<dyn Transport>,
    roots: Vec<String>,
    skip: Vec<String>,
    files: BTreeMap<String, TreeFile>,
}

/// `abs` is `dir` or below it.
fn within(abs: &str, dir: &str) -> bool {
    abs == dir || abs.strip_prefix(dir).is_some_and(|t| t.starts_with('/'))
}

impl Cached {
    /// Read `roots` of `inner` now (one round trip where the transport can), except
    /// [`SKIPPED`].
    pub fn read(inner: Arc<dyn Transport>, roots: &[&str]) -> Result<Self, TransportError> {
        let files = inner.read_tree(roots, &SKIPPED, Kind::NodeFile)?;
        Ok(Self::of_tree(inner, roots, &SKIPPED, files))
    }

    /// A view of `inner` from a tree already read: `files`, what
    /// [`Transport::read_tree`] of `roots` without `skip` returned.
    fn of_tree(
        inner: Arc<dyn Transport>,
        roots: &[&str],
        skip: &[&str],
        files: Vec<TreeFile>,
    ) -> Self {
        Self {
            inner,
            roots: roots.iter().map(|r| r.to_string()).collect(),
            skip: skip.iter().map(|r| r.to_string()).collect(),
            files: files.into_iter().map(|f| (f.path.clone(), f)).collect(),
        }
    }

    /// Every entry read, in path order.
    pub fn files(&self) -> impl Iterator<Item = &TreeFile> {
        self.files.values()
    }

    /// The entry read at `abs`, if any (its bytes, or why they were not read).
    pub fn entry(&self, abs: &str) -> Option<&TreeFile> {
        self.files.get(abs)
    }

    fn covers(&self, abs: &str) -> bool {
        self.roots.iter().any(|r| within(abs, r)) && !self.skip.iter().any(|s| within(abs, s))
    }

    /// The prefetched file at `abs`, if its bytes were read.
    fn file(&self, abs: &str) -> Option<&TreeFile> {
        self.files.get(abs).filter(|f| f.bytes.is_ok())
    }

    /// Whether `abs` is known not to exist (under a root, neither a file nor a directory
    /// holding one). A directory with nothing but directories below it is asked again.
    fn absent(&self, abs: &str) -> bool {
        self.covers(abs)
            && !self.files.contains_key(abs)
            && !self
                .files
                .range(format!("{abs}/")..)
                .next()
                .is_some_and(|(k, _)| k.starts_with(&format!("{abs}/")))
    }
}

impl Transport for Cached {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn read(&self, abs: &str, kind: Kind) -> Result<Option<Vec<u8>>, TransportError> {
        if let Some(Ok(b)) = self.file(abs).map(|f| &f.bytes)
            && b.len() as u64 <= kind.cap()
        {
            return Ok(Some(b.clone()));
        }
        if self.absent(abs) {
            return Ok(None);
        }
        self.inner.read(abs, kind)
    }

    fn stat(&self, abs: &str) -> Result<Option<Stat>, TransportError> {
        match self.file(abs) {
            // Owner is not part of the tree: ask for it when it matters (writes do).
            Some(f) => Ok(Some(Stat {
                kind: FileType::File,
                mode: f.mode.unwrap_or(0o644),
                uid: 0,
                gid: 0,
                size: f.bytes.as_ref().map_or(0, |b| b.len() as u64),
            })),
            None if self.absent(abs) => Ok(None),
            None => self.inner.stat(abs),
        }
    }

    fn read_link(&self, abs: &str) -> Result<Option<String>, TransportError> {
        self.inner.read_link(abs)
    }

    fn can_run(&self) -> bool {
        self.inner.can_run()
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, FileType)>, TransportError> {
        if !self.covers(dir) {
            return self.inner.list(dir);
        }
        let prefix = format!("{dir}/");
        let mut out: BTreeMap<String, FileType> = BTreeMap::new();
        for path in self.files.range(prefix.clone()..).map(|(k, _)| k) {
            let Some(rest) = path.strip_prefix(&prefix) else {
                break;
            };
            match rest.split_once('/') {
                Some((sub, _)) => out.insert(sub.to_string(), FileType::Dir),
                None => out.insert(rest.to_string(), FileType::File),
            };
        }
        Ok(out.into_iter().collect())
    }

    fn write(
        &self,
        abs: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), TransportError> {
        self.inner.write(abs, bytes, mode, owner)
    }

    fn remove(&self, abs: &str) -> Result<(), TransportError> {
        self.inner.remove(abs)
    }

    fn symlink(&self, abs: &str, target: &str) -> Result<(), TransportError> {
        self.inner.symlink(abs, target)
    }

    /// From memory when the tree asked for is within the one read (and skips at least
    /// what it skipped); else from the node.
    fn read_tree(
        &self,
        dirs: &[&str],
        skip: &[&str],
        kind: Kind,
    ) -> Result<Vec<TreeFile>, TransportError> {
        let within_ours = dirs.iter().all(|d| self.covers(d))
            && self.skip.iter().all(|s| skip.contains(&s.as_str()));
        if !within_ours {
            return self.inner.read_tree(dirs, skip, kind);
        }
        Ok(self
            .files
            .values()
            .filter(|f| {
                dirs.iter().any(|d| within(&f.path, d)) && !skip.iter().any(|s| within(&f.path, s))
            })
            .map(|f| match &f.bytes {
                Ok(b) if b.len() as u64 <= kind.cap() => TreeFile {
                    path: f.path.clone(),
                    mode: f.mode,
                    bytes: Ok(b.clone()),
                },
                // Not read whole the first time: ask the node, for the full story.
                _ => super::tree_file(&*self.inner, f.path.clone(), f.mode, kind),
            })
            .collect())
    }

    fn remove_leftovers(&self, dirs: &[&str]) -> Result<Vec<String>, TransportError> {
        self.inner.remove_leftovers(dirs)
    }

    fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, TransportError> {
        self.inner.run(argv, timeout)
    }

    fn dial(&self, host: &str, port: u16) -> Result<Box<dyn Stream>, TransportError> {
        self.inner.dial(host, port)
    }

    fn held(&self, component: &str) -> Option<crate::held::Held> {
        self.inner.held(component)
    }

    fn held_stamp(&self, component: &str) -> Option<crate::held::Stamp> {
        self.inner.held_stamp(component)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lists_and_absences_come_from_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc/kubernetes/pki/etcd")).unwrap();
        std::fs::write(root.join("etc/kubernetes/pki/ca.crt"), b"ca").unwrap();
        std::fs::write(root.join("etc/kubernetes/pki/etcd/ca.crt"), b"etcd").unwrap();
        std::fs::write(root.join("etc/kubernetes/admin.conf"), b"conf").unwrap();
        let local: Arc<dyn Transport> = Arc::new(super::super::Local::new("n", root));
        let c = Cached::read(local, &TRUST_DIRS).unwrap();
        // Changed on disk after the read: the view keeps what it read.
        std::fs::write(root.join("etc/kubernetes/pki/ca.crt"), b"changed").unwrap();
        assert_eq!(
            c.read("/etc/kubernetes/pki/ca.crt", Kind::NodeFile)
                .unwrap(),
            Some(b"ca".to_vec())
        );
        assert_eq!(
            c.read("/etc/kubernetes/none", Kind::NodeFile).unwrap(),
            None
        );
        assert_eq!(
            c.list("/etc/kubernetes").unwrap(),
            vec![
                ("admin.conf".to_string(), FileType::File),
                ("pki".to_string(), FileType::Dir)
            ]
        );
        assert_eq!(
            c.list("/etc/kubernetes/pki").unwrap(),
            vec![
                ("ca.crt".to_string(), FileType::File),
                ("etcd".to_string(), FileType::Dir)
            ]
        );
        assert!(c.stat("/etc/kubernetes/pki/etcd/ca.crt").unwrap().is_some());
        assert!(c.stat("/etc/kubernetes/pki/none.crt").unwrap().is_none());
    }

    #[test]
    fn a_tree_within_the_one_read_comes_from_memory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc/kubernetes/pki")).unwrap();
        std::fs::create_dir_all(root.join("etc/kubernetes/tmp")).unwrap();
        std::fs::write(root.join("etc/kubernetes/pki/ca.crt"), b"ca").unwrap();
        std::fs::write(root.join("etc/kubernetes/tmp/old.crt"), b"backup").unwrap();
        let local: Arc<dyn Transport> = Arc::new(super::super::Local::new("n", root));
        let c = Cached::read(local, &TRUST_DIRS).unwrap();
        std::fs::write(root.join("etc/kubernetes/pki/ca.crt"), b"changed").unwrap();
        std::fs::write(root.join("etc/kubernetes/pki/new.crt"), b"new").unwrap();
        let paths = |t: Vec<TreeFile>| -> Vec<(String, Vec<u8>)> {
            t.into_iter().map(|f| (f.path, f.bytes.unwrap())).collect()
        };
        // Within the tree read (and skipping what it skipped): what was read then.
        assert_eq!(
            paths(
                c.read_tree(&["/etc/kubernetes/pki"], &SKIPPED, Kind::NodeFile)
                    .unwrap()
            ),
            vec![("/etc/kubernetes/pki/ca.crt".into(), b"ca".to_vec())]
        );
        // Asking for what it skipped: the node is asked.
        let all = c
            .read_tree(&["/etc/kubernetes"], &[], Kind::NodeFile)
            .unwrap();
        assert!(
            all.iter().any(|f| f.path == "/etc/kubernetes/tmp/old.crt"),
            "{all:?}"
        );
    }
}
