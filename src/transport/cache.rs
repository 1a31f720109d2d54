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

/// A node's files as read at one moment.
#[derive(Debug)]
pub struct Cached {
    inner: Arc<dyn Transport>,
    roots: Vec<String>,
    files: BTreeMap<String, TreeFile>,
}

impl Cached {
    /// Read `roots` of `inner` now (one round trip where the transport can).
    pub fn read(inner: Arc<dyn Transport>, roots: &[&str]) -> Result<Self, TransportError> {
        let files = inner
            .read_tree(roots, &[], Kind::NodeFile)?
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect();
        Ok(Self {
            inner,
            roots: roots.iter().map(|r| r.to_string()).collect(),
            files,
        })
    }

    fn covers(&self, abs: &str) -> bool {
        self.roots.iter().any(|r| {
            abs == r
                || abs
                    .strip_prefix(r.as_str())
                    .is_some_and(|t| t.starts_with('/'))
        })
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

    fn remove_leftovers(&self, dir: &str) -> Result<Vec<String>, TransportError> {
        self.inner.remove_leftovers(dir)
    }

    fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, TransportError> {
        self.inner.run(argv, timeout)
    }

    fn dial(&self, host: &str, port: u16) -> Result<Box<dyn Stream>, TransportError> {
        self.inner.dial(host, port)
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
}
