//! The logs of a sandbox node, under `run/trustform-sandbox/logs/` of its root, one
//! line per event, each starting with its RFC 3339 time (UTC, nanoseconds):
//!
//! - `<component>.log` for each static pod's containers, in the CRI log format the
//!   container runtime writes (`/var/log/pods/…`): `TIME STREAM F MESSAGE`, where the
//!   message is what the process printed (klog lines for the Kubernetes components,
//!   zap JSON for etcd). `crictl logs` prints the messages of one container.
//! - `kubelet.log`, the journal of `kubelet.service`: `TIME IDENTIFIER[PID]: MESSAGE`,
//!   where the identifier is `kubelet` (its klog lines) or `systemd` (the unit's start,
//!   stop and failure lines). `journalctl -u kubelet` prints it.
//!
//! Lines are appended with one `write` each (`O_APPEND`), so the processes that share a
//! node (the `sandbox up` server, `node-exec` from sshd sessions, the product through
//! [`super::super::transport`]) never interleave within a line.

use std::io::Write;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Where the logs are, relative to the node root.
pub const DIR: &str = "run/trustform-sandbox/logs";

/// The kubelet journal's file name.
pub const JOURNAL: &str = "kubelet.log";

/// The log file of `component` (`kubelet` is the journal).
pub fn path(root: &Path, component: &str) -> PathBuf {
    root.join(DIR).join(format!("{component}.log"))
}

/// A time as unix nanoseconds.
pub type Nanos = i64;

/// The wall clock now.
pub fn now() -> Nanos {
    OffsetDateTime::now_utc().unix_timestamp_nanos() as Nanos
}

/// A time as an [`OffsetDateTime`] (UTC).
pub fn datetime(t: Nanos) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(t as i128).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 with nine fraction digits, UTC: `2026-01-02T03:04:05.123456789Z`.
pub fn rfc3339_nanos(t: Nanos) -> String {
    let d = datetime(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        d.year(),
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.nanosecond()
    )
}

/// Parse an RFC 3339 time.
pub fn parse_rfc3339(text: &str) -> Option<Nanos> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|d| d.unix_timestamp_nanos() as Nanos)
}

/// A klog line header and message: `E0102 03:04:05.123456    1234 file.go:12] msg`.
pub fn klog(level: char, t: Nanos, pid: u32, file: &str, msg: &str) -> String {
    let d = datetime(t);
    format!(
        "{level}{:02}{:02} {:02}:{:02}:{:02}.{:06} {pid:>7} {file}] {msg}",
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second(),
        d.microsecond()
    )
}

/// An etcd (zap JSON) line.
pub fn zap(level: &str, t: Nanos, caller: &str, msg: &str, fields: &[(&str, &str)]) -> String {
    let mut v = serde_json::Map::new();
    v.insert("level".into(), level.into());
    v.insert("ts".into(), rfc3339_nanos(t).into());
    v.insert("caller".into(), caller.into());
    v.insert("msg".into(), msg.into());
    for (k, val) in fields {
        v.insert((*k).into(), (*val).into());
    }
    serde_json::Value::Object(v).to_string()
}

fn append(file: &Path, line: &str) -> std::io::Result<u64> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    let one: String = line.replace('\n', " ");
    f.write_all(format!("{one}\n").as_bytes())?;
    Ok(f.metadata()?.len())
}

/// The size of `component`'s log now: where the next container's lines start.
pub fn size(root: &Path, component: &str) -> u64 {
    std::fs::metadata(path(root, component)).map_or(0, |m| m.len())
}

/// Append a container's output line (CRI format, stream `stderr`).
pub fn container(root: &Path, component: &str, t: Nanos, message: &str) {
    let _ = append(
        &path(root, component),
        &format!("{} stderr F {message}", rfc3339_nanos(t)),
    );
}

/// Append a journal line of `identifier[pid]` to the kubelet's journal.
pub fn journal(root: &Path, t: Nanos, identifier: &str, pid: u32, message: &str) {
    let _ = append(
        &path(root, "kubelet"),
        &format!("{} {identifier}[{pid}]: {message}", rfc3339_nanos(t)),
    );
}

/// What a Go TLS server logs when a client's handshake fails, in the server process's
/// log: `http: TLS handshake error from ADDR: ERROR` (klog, for the API server; the
/// kubelet's in its journal, as process `pid`), or etcd's `rejected connection` warning.
pub fn handshake_error(root: &Path, component: &str, pid: u32, peer: &str, error: &str) {
    let t = now();
    match component {
        "etcd" => container(
            root,
            component,
            t,
            &zap(
                "warn",
                t,
                "embed/config_logging.go:170",
                "rejected connection on client endpoint",
                &[("remote-addr", peer), ("server-name", ""), ("error", error)],
            ),
        ),
        "kubelet" => journal(
            root,
            t,
            "kubelet",
            pid,
            &klog(
                'I',
                t,
                pid,
                "log.go:245",
                &format!("http: TLS handshake error from {peer}: {error}"),
            ),
        ),
        _ => container(
            root,
            component,
            t,
            &klog(
                'I',
                t,
                1,
                "log.go:245",
                &format!("http: TLS handshake error from {peer}: {error}"),
            ),
        ),
    }
}

/// One line of a container log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerLine {
    /// When.
    pub time: Nanos,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// What the process printed.
    pub message: String,
}

/// The container log lines of `component` between byte offsets `from` and `to`.
pub fn container_lines(
    root: &Path,
    component: &str,
    from: u64,
    to: Option<u64>,
) -> Vec<ContainerLine> {
    let Ok(bytes) = std::fs::read(path(root, component)) else {
        return vec![];
    };
    let end = to.map_or(bytes.len(), |t| (t as usize).min(bytes.len()));
    let start = (from as usize).min(end);
    String::from_utf8_lossy(&bytes[start..end])
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let time = parse_rfc3339(parts.next()?)?;
            let stream = parts.next()?.to_string();
            let _tag = parts.next()?;
            Some(ContainerLine {
                time,
                stream,
                message: parts.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// One journal entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalLine {
    /// When.
    pub time: Nanos,
    /// `kubelet` or `systemd`.
    pub identifier: String,
    /// The process.
    pub pid: u32,
    /// The message.
    pub message: String,
}

/// The kubelet's journal.
pub fn journal_lines(root: &Path) -> Vec<JournalLine> {
    let Ok(text) = std::fs::read_to_string(path(root, "kubelet")) else {
        return vec![];
    };
    text.lines()
        .filter_map(|l| {
            let (time, rest) = l.split_once(' ')?;
            let (who, message) = rest.split_once("]: ")?;
            let (identifier, pid) = who.split_once('[')?;
            Some(JournalLine {
                time: parse_rfc3339(time)?,
                identifier: identifier.to_string(),
                pid: pid.parse().ok()?,
                message: message.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let t = 1_767_323_045_123_456_789;
        assert_eq!(rfc3339_nanos(t), "2026-01-02T03:04:05.123456789Z");
        assert_eq!(parse_rfc3339(&rfc3339_nanos(t)), Some(t));
        assert_eq!(
            klog('E', t, 1, "run.go:72", "x"),
            "E0102 03:04:05.123456       1 run.go:72] x"
        );
        container(tmp.path(), "etcd", t, "one");
        let mid = size(tmp.path(), "etcd");
        container(tmp.path(), "etcd", t + 1, "two\nlines");
        let all = container_lines(tmp.path(), "etcd", 0, None);
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].message, "two lines");
        let second = container_lines(tmp.path(), "etcd", mid, None);
        assert_eq!(second.len(), 1);
        assert_eq!(container_lines(tmp.path(), "etcd", 0, Some(mid)).len(), 1);
        journal(tmp.path(), t, "systemd", 1, "Started kubelet.service.");
        let j = journal_lines(tmp.path());
        assert_eq!(j[0].identifier, "systemd");
        assert_eq!(j[0].message, "Started kubelet.service.");
    }
}
