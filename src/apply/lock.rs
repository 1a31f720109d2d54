//! One apply at a time per cluster: `.trustform/lock.json`, created exclusively.
//!
//! The file names its holder (id, who, when, plan id, host, pid). A lock whose holder
//! process is gone from this host (a crash) is taken over with a notice, so re-running
//! `apply` after a kill resumes at once. `force-unlock ID` removes a lock by its id, for
//! holders this host cannot check.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the lock file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LockInfo {
    /// Random id (for `force-unlock`).
    pub id: String,
    /// user@host.
    pub who: String,
    /// When it was taken (RFC 3339).
    pub when: String,
    /// What holds it: `apply <plan-id>` or `rollback <plan-id>`.
    pub operation: String,
    /// Plan id.
    pub plan_id: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
}

impl LockInfo {
    /// Whether the holder is a process on this host that no longer exists.
    pub fn is_dead(&self) -> bool {
        self.host == host() && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    /// Its info.
    pub info: LockInfo,
    /// The dead holder it replaced, if any.
    pub took_over: Option<LockInfo>,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Only remove our own lock.
        if read(&self.path).is_some_and(|i| i.id == self.info.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The lock file under a state directory.
pub fn path(state: &Path) -> PathBuf {
    state.join("lock.json")
}

/// The host name.
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// user@host.
pub fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", host())
}

/// Read the lock file: its holder, if it is a lock trustform wrote.
pub fn read(path: &Path) -> Option<LockInfo> {
    match inspect(path) {
        Found::Lock(h) => Some(h),
        _ => None,
    }
}

/// What is at the lock's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// No lock.
    Nothing,
    /// A lock trustform wrote.
    Lock(LockInfo),
    /// A file that is not a lock: empty, torn, garbage, or not a regular file.
    Unreadable {
        /// An id for `force-unlock`: `unreadable-` and the first hex digits of the
        /// SHA-256 of its bytes, so that only this very file is removed.
        id: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Look at the lock file.
pub fn inspect(path: &Path) -> Found {
    use sha2::Digest;
    let bytes = match crate::input::read(path, crate::input::Kind::Lock) {
        Ok(b) => b,
        Err(e) if e.is_missing() => return Found::Nothing,
        Err(e) => {
            return Found::Unreadable {
                id: "unreadable-file".into(),
                why: e.to_string(),
            };
        }
    };
    let id = format!(
        "unreadable-{}",
        &hex::encode(sha2::Sha256::digest(&bytes))[..12]
    );
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Found::Unreadable {
            id,
            why: "it is empty".into(),
        };
    }
    match serde_json::from_slice(&bytes) {
        Ok(h) => Found::Lock(h),
        Err(e) => Found::Unreadable {
            id,
            why: crate::input::clip_lines(&format!("it is not a lock trustform wrote ({e})"), 200)
                .into_owned(),
        },
    }
}

/// Why the lock cannot be had.
#[derive(Debug)]
pub enum LockError {
    /// Another live holder.
    Held(LockInfo),
    /// The lock file is not a lock (an interrupted write, or someone else's file).
    Unreadable {
        /// Its id for `force-unlock`.
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// I/O.
    Io(std::io::Error),
}

fn random_id() -> String {
    let d = hex::encode(crate::unique::digest(host().as_bytes()));
    format!("{}-{}-{}", &d[..8], &d[8..12], &d[12..24])
}

/// Take the lock, waiting up to `timeout` for a live holder to release it.
pub fn acquire(
    state: &Path,
    operation: &str,
    plan_id: &str,
    timeout: Duration,
) -> Result<Lock, LockError> {
    std::fs::create_dir_all(state).map_err(LockError::Io)?;
    let path = path(state);
    let started = Instant::now();
    let info = LockInfo {
        id: random_id(),
        who: who(),
        when: super::journal::now(),
        operation: operation.to_string(),
        plan_id: plan_id.to_string(),
        host: host(),
        pid: std::process::id(),
    };
    let mut took_over = None;
    loop {
        // Written whole beside it, then linked into place only if no lock is there: a
        // kill at any moment leaves either no lock or a complete one (and at most a temp
        // file the next apply removes), never an empty lock.json in the way.
        let body = serde_json::to_vec_pretty(&info).expect("lock info serialises");
        match crate::atomic::write_new(&path, &body, crate::atomic::PUBLIC_MODE) {
            Ok(()) => {
                return Ok(Lock {
                    path,
                    info,
                    took_over,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match inspect(&path) {
                    Found::Lock(h) if h.is_dead() => {
                        let _ = std::fs::remove_file(&path);
                        took_over = Some(h);
                        continue;
                    }
                    Found::Lock(h) if started.elapsed() >= timeout => {
                        return Err(LockError::Held(h));
                    }
                    Found::Lock(_) | Found::Nothing => {}
                    // Being written by its holder this instant, or torn: wait a little.
                    Found::Unreadable { id, why }
                        if started.elapsed() >= timeout.max(Duration::from_secs(1)) =>
                    {
                        return Err(LockError::Unreadable { id, why });
                    }
                    Found::Unreadable { .. } => {}
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // Our temp file was removed before it was linked (by the holder's clean-up of
            // leftovers): try again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(LockError::Io(e)),
        }
    }
}

/// Wait up to `timeout` until no live holder has the lock, without taking it (nothing
/// is written: apply's pre-flight runs after this and before [`acquire`]).
pub fn wait_free(state: &Path, timeout: Duration) -> Result<(), LockError> {
    let path = path(state);
    let started = Instant::now();
    loop {
        match read(&path) {
            Some(h) if !h.is_dead() => {
                if started.elapsed() >= timeout {
                    return Err(LockError::Held(h));
                }
            }
            _ => return Ok(()),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Remove the lock if its id is `id` (a lock's own id, or the `unreadable-…` id of a
/// file that is not a lock). Returns what was removed, or what is there instead.
pub fn force_unlock(state: &Path, id: &str) -> Result<Found, Found> {
    let path = path(state);
    let found = inspect(&path);
    let matches = match &found {
        Found::Lock(h) => h.id == id,
        Found::Unreadable { id: theirs, .. } => theirs == id,
        Found::Nothing => false,
    };
    if !matches {
        return Err(found);
    }
    std::fs::remove_file(&path).map_err(|_| found.clone())?;
    Ok(found)
}
