//! The lock and status in the cluster, beside the lock file: when the API is reachable,
//! an apply also holds the Lease `kube-system/trustform` (holder: the lock's JSON,
//! renewed every 15 s, expiring after 60 s) and publishes its status to the ConfigMap
//! `kube-system/trustform-status`, so another machine sees both.

use super::lock::LockInfo;
use super::status;
use crate::exec::kube::{self, Access, KubeError, lease};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// How often the Lease is renewed.
const RENEW: Duration = Duration::from_secs(15);
/// How often the status ConfigMap is brought up to date (when it changed).
const PUBLISH: Duration = Duration::from_millis(1000);

/// Is this Lease holder us: the same lock, or a dead process of ours on this host (a
/// crashed apply being resumed)?
pub fn mine(holder: &str, ours: &LockInfo) -> bool {
    serde_json::from_str::<LockInfo>(holder)
        .is_ok_and(|h| h.id == ours.id || (h.plan_id == ours.plan_id && h.is_dead()))
}

/// Who holds the Lease.
#[derive(Debug)]
pub enum Holder {
    /// Another trustform run: its lock info.
    Trustform(LockInfo),
    /// Something else: the Lease's holder identity as it stands.
    Other(String),
}

/// Why the cluster lock was not taken.
#[derive(Debug)]
pub enum Refused {
    /// Someone else holds the Lease.
    Held(Holder),
    /// The API failed.
    Api(KubeError),
}

/// A held cluster lock; dropping it publishes the final status and releases the Lease.
pub struct ClusterLock {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClusterLock {
    /// Take the Lease and start renewing it and publishing `state`'s status of `plan_id`.
    /// `Ok(None)`: the API is not reachable (the lock file alone guards).
    pub fn acquire(
        access: &Access,
        info: &LockInfo,
        state: &Path,
    ) -> Result<Option<ClusterLock>, Refused> {
        let holder = serde_json::to_string(info).expect("lock info serialises");
        let taken = kube::block(async {
            let client = match access.connect().await {
                Ok(c) => c,
                Err(KubeError::Unreachable { .. }) => return Ok(None),
                Err(e) => return Err(Refused::Api(e)),
            };
            match lease::acquire(&client, &holder, |h| mine(h, info)).await {
                Ok(None) => Ok(Some(())),
                Ok(Some(other)) => Err(Refused::Held(
                    match serde_json::from_str::<LockInfo>(&other) {
                        Ok(info) => Holder::Trustform(info),
                        Err(_) => Holder::Other(other),
                    },
                )),
                Err(e) => Err(Refused::Api(e)),
            }
        })?;
        if taken.is_none() {
            return Ok(None);
        }
        let (tx, rx) = mpsc::channel::<()>();
        let (access, info, state): (Access, LockInfo, PathBuf) =
            (access.clone(), info.clone(), state.to_path_buf());
        let thread = std::thread::spawn(move || keep(access, info, state, rx));
        Ok(Some(ClusterLock {
            stop: Some(tx),
            thread: Some(thread),
        }))
    }
}

/// Renew and publish until told to stop; then publish once more and release.
fn keep(access: Access, info: LockInfo, state: PathBuf, stop: mpsc::Receiver<()>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => return,
    };
    let mut last = String::new();
    let mut since_renew = Duration::ZERO;
    // The last publication comes as the apply lets go of its locks: it holds none.
    let publish = |last: &mut String, ending: bool| {
        let Ok(mut s) = status::of(&state, &info.plan_id) else {
            return;
        };
        if ending {
            s.lock = None;
        }
        let json = serde_json::to_string(&s).expect("status serialises");
        if json != *last {
            let ok = rt.block_on(async {
                let c = access.client().await?;
                lease::write_status(&c, &json).await
            });
            if ok.is_ok() {
                *last = json;
            }
        }
    };
    loop {
        publish(&mut last, false);
        match stop.recv_timeout(PUBLISH) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
        since_renew += PUBLISH;
        if since_renew >= RENEW {
            since_renew = Duration::ZERO;
            let _ = rt.block_on(async {
                let c = access.client().await?;
                lease::renew(&c, |h| mine(h, &info)).await
            });
        }
    }
    publish(&mut last, true);
    let _ = rt.block_on(async {
        let c = access.client().await?;
        lease::release(&c, |h| mine(h, &info)).await
    });
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Remove the Lease if its holder's lock id is `id` (force-unlock). `Ok(Some(info))`:
/// removed; `Ok(None)`: no such holder.
pub fn force_release(access: &Access, id: &str) -> Result<Option<LockInfo>, KubeError> {
    kube::block(async {
        let client = access.connect().await?;
        let Some(h) = lease::holder(&client).await? else {
            return Ok(None);
        };
        let Ok(info) = serde_json::from_str::<LockInfo>(&h) else {
            return Ok(None);
        };
        if info.id != id {
            return Ok(None);
        }
        lease::release(&client, |h| mine(h, &info)).await?;
        Ok(Some(info))
    })
}

/// The status published in the cluster, and the Lease's holder.
pub fn read(access: &Access) -> Result<(Option<status::Status>, Option<LockInfo>), KubeError> {
    kube::block(async {
        let client = access.connect().await?;
        let s = lease::read_status(&client)
            .await?
            .and_then(|j| serde_json::from_str::<status::Status>(&j).ok());
        let h = lease::holder(&client)
            .await?
            .and_then(|j| serde_json::from_str::<LockInfo>(&j).ok());
        Ok((s, h))
    })
}
