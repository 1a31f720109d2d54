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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// Read the lock file.
pub fn read(path: &Path) -> Option<LockInfo> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Why the lock cannot be had.
#[derive(Debug)]
pub enum LockError {
    /// Another live holder.
    Held(LockInfo),
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
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                use std::io::Write;
                let body = serde_json::to_vec_pretty(&info).expect("lock info serialises");
                f.write_all(&body).map_err(LockError::Io)?;
                f.sync_all().map_err(LockError::Io)?;
                return Ok(Lock {
                    path,
                    info,
                    took_over,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let holder = read(&path);
                match holder {
                    Some(h) if h.is_dead() => {
                        let _ = std::fs::remove_file(&path);
                        took_over = Some(h);
                        continue;
                    }
                    Some(h) if started.elapsed() >= timeout => {
                        return Err(LockError::Held(h));
                    }
                    Some(_) => {}
                    // Being written by its holder this instant, or torn: wait a little.
                    None if started.elapsed() >= timeout.max(Duration::from_secs(1)) => {
                        return Err(LockError::Io(std::io::Error::other(format!(
                            "{} exists but is unreadable; remove it if no apply runs",
                            path.display()
                        ))));
                    }
                    None => {}
                }
                std::thread::sleep(Duration::from_millis(100));
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

/// Remove the lock if its id is `id`. Returns the removed holder.
pub fn force_unlock(state: &Path, id: &str) -> Result<LockInfo, Option<LockInfo>> {
    let path = path(state);
    match read(&path) {
        Some(h) if h.id == id => {
            std::fs::remove_file(&path).map_err(|_| Some(h.clone()))?;
            Ok(h)
        }
        other => Err(other),
    }
}
