//! Files on nodes: read, and change only after a backup.
//!
//! Before the first change of a file in an apply, its bytes, mode and owner are copied to
//! `<backup>/<node>/<path>` and a line is appended to `<backup>/index.jsonl` (fsync'd).
//! Writes go through a temp file + fsync + rename and keep the file's mode and owner.
//! `restore` walks the index backwards and puts every file back byte for byte.

use super::{ExecError, Node};
use crate::transport::Inspect;
use crate::{atomic, input, layout};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One backed-up file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupEntry {
    /// Node name.
    pub node: String,
    /// Absolute path on the node.
    pub path: String,
    /// Whether it existed before (if not, a rollback deletes it).
    pub existed: bool,
    /// It was a symlink to this target (a rollback points it there again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// File access for one apply, with its backup directory.
pub struct Files {
    dir: PathBuf,
    seen: Mutex<HashSet<(String, String)>>,
    /// What the last [`Files::read`] of a path found, for the [`Files::write`] of the same
    /// path that usually follows (an operation reads what is there, then writes): the
    /// write then needs no other round trip to the node before it. Taken by the write;
    /// a link swap or a removal on the node drops the node's entries.
    looked: Mutex<HashMap<(String, String), Inspect>>,
}

const INDEX: &str = "index.jsonl";

fn io_err(node: &Node, abs: &str) -> impl FnOnce(std::io::Error) -> ExecError {
    let (node, path) = (node.name.clone(), abs.to_string());
    move |source| ExecError::Io { node, path, source }
}

impl Files {
    /// Files whose backups go to `dir` (`.trustform/backup/<plan-id>`).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let seen = entries(dir)?
            .into_iter()
            .map(|e| (e.node, e.path))
            .collect();
        Ok(Self {
            looked: Mutex::new(HashMap::new()),
            dir: dir.to_path_buf(),
            seen: Mutex::new(seen),
        })
    }

    /// The bytes of a file, `None` if it does not exist.
    pub fn read(&self, node: &Node, abs: &str) -> Result<Option<Vec<u8>>, ExecError> {
        let found = node
            .transport
            .inspect(abs, input::Kind::NodeFile)
            .map_err(err(node))?;
        let bytes = match (&found.stat, &found.bytes) {
            (None, _) => None,
            (Some(_), Some(b)) => Some(b.clone()),
            // Not a regular file, or too large: the read says why.
            (Some(_), None) => read(node, &found.target(abs))?,
        };
        self.looked
            .lock()
            .expect("looked lock")
            .insert((node.name.clone(), abs.to_string()), found);
        Ok(bytes)
    }

    /// What the last read of `abs` found (taken), else a fresh look.
    fn look(&self, node: &Node, abs: &str) -> Result<Inspect, ExecError> {
        let cached = self
            .looked
            .lock()
            .expect("looked lock")
            .remove(&(node.name.clone(), abs.to_string()));
        match cached {
            Some(found) => Ok(found),
            None => node
                .transport
                .inspect(abs, input::Kind::NodeFile)
                .map_err(err(node)),
        }
    }

    /// Forget what reads on `node` found (its links may have changed).
    fn forget(&self, node: &Node) {
        self.looked
            .lock()
            .expect("looked lock")
            .retain(|(n, _), _| *n != node.name);
    }

    fn backup(&self, node: &Node, abs: &str) -> Result<(), ExecError> {
        self.backup_with(node, abs, None)
    }

    /// Back up `abs`; `found` is what an inspect of it found, when it is the end of its
    /// chain of links (no round trip to the node then, unless it must be read again).
    fn backup_with(
        &self,
        node: &Node,
        abs: &str,
        found: Option<&Inspect>,
    ) -> Result<(), ExecError> {
        let key = (node.name.clone(), abs.to_string());
        let mut seen = self.seen.lock().expect("backup index lock");
        if seen.contains(&key) {
            return Ok(());
        }
        let copy = self.dir.join(&node.name).join(layout::rel(abs));
        let t = &node.transport;
        let (link, stat) = match found {
            Some(f) => (None, f.stat),
            None => (
                t.read_link(abs).map_err(err(node))?,
                t.stat(abs).map_err(err(node))?,
            ),
        };
        let entry = match stat {
            _ if link.is_some() => BackupEntry {
                node: node.name.clone(),
                path: abs.to_string(),
                existed: true,
                link,
                mode: 0,
                uid: 0,
                gid: 0,
            },
            Some(meta) => {
                // A copy left by a crash before its index line is the original: keep it.
                if !copy.exists() {
                    let known = found.and_then(|f| f.bytes.clone());
                    let bytes = match known {
                        Some(b) => Some(b),
                        None => t.read(abs, input::Kind::NodeFile).map_err(err(node))?,
                    }
                    .ok_or_else(|| ExecError::Io {
                        node: node.name.clone(),
                        path: abs.to_string(),
                        source: std::io::ErrorKind::NotFound.into(),
                    })?;
                    atomic::write(&copy, &bytes, meta.mode & 0o7777).map_err(io_err(node, abs))?;
                }
                BackupEntry {
                    node: node.name.clone(),
                    path: abs.to_string(),
                    existed: true,
                    link: None,
                    mode: meta.mode & 0o7777,
                    uid: meta.uid,
                    gid: meta.gid,
                }
            }
            None => BackupEntry {
                node: node.name.clone(),
                path: abs.to_string(),
                existed: false,
                link: None,
                mode: 0,
                uid: 0,
                gid: 0,
            },
        };
        let mut line = serde_json::to_vec(&entry).expect("entry serialises");
        line.push(b'\n');
        let index = self.dir.join(INDEX);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&index)
            .map_err(io_err(node, abs))?;
        f.write_all(&line).map_err(io_err(node, abs))?;
        f.sync_data().map_err(io_err(node, abs))?;
        seen.insert(key);
        Ok(())
    }

    /// Back up, then write atomically. An existing file keeps its mode and owner (a key
    /// is never left wider than 0600); a new one gets `new_mode`.
    pub fn write(
        &self,
        node: &Node,
        abs: &str,
        bytes: &[u8],
        new_mode: u32,
        secret: bool,
    ) -> Result<(), ExecError> {
        // Through a symlink, the file it points at is what changes (and is backed up).
        let found = self.look(node, abs)?;
        let target = found.target(abs);
        let abs = target.as_str();
        self.backup_with(node, abs, Some(&found))?;
        let (mode, owner) = match found.stat {
            Some(m) => (m.mode & 0o7777, Some((m.uid, m.gid))),
            None => (new_mode, None),
        };
        let mode = if secret {
            mode & atomic::KEY_MODE
        } else {
            mode
        };
        // Whatever an earlier read found at this file (through any link) is stale now.
        self.looked
            .lock()
            .expect("looked lock")
            .retain(|(n, p), f| !(*n == node.name && f.target(p) == target));
        node.transport
            .write(abs, bytes, mode, owner)
            .map_err(err(node))
    }

    /// Back up (the link itself), then make `abs` a symlink to `target`, atomically.
    pub fn swap_link(&self, node: &Node, abs: &str, target: &str) -> Result<(), ExecError> {
        self.forget(node);
        self.backup(node, abs)?;
        node.transport.symlink(abs, target).map_err(err(node))
    }

    /// Back up, then delete.
    pub fn remove(&self, node: &Node, abs: &str) -> Result<(), ExecError> {
        self.forget(node);
        self.backup(node, abs)?;
        node.transport.remove(abs).map_err(err(node))
    }
}

fn err(node: &Node) -> impl FnOnce(crate::transport::TransportError) -> ExecError + '_ {
    move |cause| ExecError::Transport {
        node: node.name.clone(),
        cause,
    }
}

/// Remove the temp files a killed apply left in these node directories (only files
/// named like trustform's own temp files). Returns them as `node:path`.
pub fn remove_leftovers(node: &Node, dirs: &[&str]) -> Vec<String> {
    node.transport
        .remove_leftovers(dirs)
        .unwrap_or_default()
        .into_iter()
        .map(|path| format!("{}:{path}", node.name))
        .collect()
}

/// Read a file on a node (a regular file within the node file cap); `None` if it does
/// not exist.
pub fn read(node: &Node, abs: &str) -> Result<Option<Vec<u8>>, ExecError> {
    node.transport
        .read(abs, input::Kind::NodeFile)
        .map_err(err(node))
}

/// The backup index of `dir`, in the order files were first changed. A torn last line
/// (a crash while appending) is ignored: its file was not yet changed.
pub fn entries(dir: &Path) -> std::io::Result<Vec<BackupEntry>> {
    let bytes = match input::read_if_exists(&dir.join(INDEX), input::Kind::Journal) {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(vec![]),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Put every backed-up file back, newest first: the original bytes, mode and owner, or
/// no file where there was none. Returns the entries restored.
pub fn restore(
    dir: &Path,
    node: impl Fn(&str) -> Option<Node>,
) -> Result<Vec<BackupEntry>, ExecError> {
    let list = entries(dir).map_err(|source| ExecError::Io {
        node: "-".into(),
        path: dir.join(INDEX).display().to_string(),
        source,
    })?;
    for e in list.iter().rev() {
        let n = node(&e.node).ok_or_else(|| ExecError::UnknownNode(e.node.clone()))?;
        if let Some(target) = &e.link {
            n.transport.symlink(&e.path, target).map_err(err(&n))?;
        } else if e.existed {
            let copy = dir.join(&e.node).join(layout::rel(&e.path));
            let bytes =
                input::read(&copy, input::Kind::NodeFile).map_err(|cause| ExecError::Io {
                    node: n.name.clone(),
                    path: copy.display().to_string(),
                    source: std::io::Error::other(cause.to_string()),
                })?;
            n.transport
                .write(&e.path, &bytes, e.mode, Some((e.uid, e.gid)))
                .map_err(err(&n))?;
        } else {
            n.transport.remove(&e.path).map_err(err(&n))?;
        }
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_first_backup_wins_and_restore_is_byte_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("node");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/a.key"), b"original").unwrap();
        std::fs::set_permissions(
            root.join("etc/a.key"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let node = Node::local("n1", &root);
        let backup = tmp.path().join("backup");
        let files = Files::open(&backup).unwrap();
        files
            .write(&node, "/etc/a.key", b"second", 0o644, true)
            .unwrap();
        files
            .write(&node, "/etc/a.key", b"third", 0o644, true)
            .unwrap();
        files
            .write(&node, "/etc/new.crt", b"created", 0o644, false)
            .unwrap();
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            mode("etc/a.key"),
            0o600,
            "a key is never left wider than 0600"
        );
        assert_eq!(mode("etc/new.crt"), 0o644);
        // A second `Files` (a resumed apply) keeps the original backup.
        let again = Files::open(&backup).unwrap();
        again
            .write(&node, "/etc/a.key", b"fourth", 0o644, true)
            .unwrap();
        assert_eq!(entries(&backup).unwrap().len(), 2);
        let restored = restore(&backup, |n| (n == "n1").then(|| node.clone())).unwrap();
        assert_eq!(restored.len(), 2);
        assert_eq!(std::fs::read(root.join("etc/a.key")).unwrap(), b"original");
        assert_eq!(mode("etc/a.key"), 0o640);
        assert!(
            !root.join("etc/new.crt").exists(),
            "a created file is removed"
        );
    }
}
