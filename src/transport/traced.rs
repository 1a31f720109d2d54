//! `--verbose`: a [`Transport`] that tells, on stderr, each operation it passes on to the
//! one it wraps: which node, what (read, write, run…), the path or command, what came
//! back (sizes and modes, never bytes), and how long it took. What it prints goes through
//! [`crate::redact::text`], so even a command line cannot show key material.

use super::{FileType, Inspect, Output, Stat, Stream, Transport, TransportError, TreeFile};
use crate::input::Kind;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A transport that reports each operation (see the module).
#[derive(Debug)]
pub struct Traced {
    name: String,
    inner: Arc<dyn Transport>,
}

/// `inner`, reporting each operation as node `name` when `--verbose` is in force
/// (otherwise `inner` itself).
pub fn traced(name: &str, inner: Arc<dyn Transport>) -> Arc<dyn Transport> {
    if crate::verbosity::verbose() {
        Arc::new(Traced {
            name: name.to_string(),
            inner,
        })
    } else {
        inner
    }
}

/// How an operation ended, in a few words.
fn outcome<T>(r: &Result<T, TransportError>, ok: impl FnOnce(&T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => format!("error: {e}"),
    }
}

fn size(n: usize) -> String {
    if n < 10 * 1024 {
        format!("{n} B")
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

impl Traced {
    fn report(&self, what: &str, result: String, started: Instant) {
        let line = format!(
            "  [{}] {what}: {result} ({} ms)",
            self.name,
            started.elapsed().as_millis()
        );
        crate::verbosity::detail(crate::redact::text(&line));
    }

    fn timed<T>(
        &self,
        what: impl FnOnce() -> String,
        op: impl FnOnce() -> Result<T, TransportError>,
        ok: impl FnOnce(&T) -> String,
    ) -> Result<T, TransportError> {
        let started = Instant::now();
        let r = op();
        self.report(&what(), outcome(&r, ok), started);
        r
    }
}

impl Transport for Traced {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn read(&self, abs: &str, kind: Kind) -> Result<Option<Vec<u8>>, TransportError> {
        self.timed(
            || format!("read {abs}"),
            || self.inner.read(abs, kind),
            |b| b.as_ref().map_or("absent".into(), |b| size(b.len())),
        )
    }

    fn stat(&self, abs: &str) -> Result<Option<Stat>, TransportError> {
        self.timed(
            || format!("stat {abs}"),
            || self.inner.stat(abs),
            |s| match s {
                Some(s) => format!("{:?} {:04o} {}:{}", s.kind, s.mode, s.uid, s.gid),
                None => "absent".into(),
            },
        )
    }

    fn read_link(&self, abs: &str) -> Result<Option<String>, TransportError> {
        self.timed(
            || format!("readlink {abs}"),
            || self.inner.read_link(abs),
            |t| t.clone().unwrap_or_else(|| "not a symlink".into()),
        )
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, FileType)>, TransportError> {
        self.timed(
            || format!("list {dir}"),
            || self.inner.list(dir),
            |v| format!("{} entries", v.len()),
        )
    }

    fn write(
        &self,
        abs: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), TransportError> {
        self.timed(
            || format!("write {abs} ({}, {mode:04o})", size(bytes.len())),
            || self.inner.write(abs, bytes, mode, owner),
            |_| "written".into(),
        )
    }

    fn remove(&self, abs: &str) -> Result<(), TransportError> {
        self.timed(
            || format!("remove {abs}"),
            || self.inner.remove(abs),
            |_| "removed".into(),
        )
    }

    fn symlink(&self, abs: &str, target: &str) -> Result<(), TransportError> {
        self.timed(
            || format!("symlink {abs} -> {target}"),
            || self.inner.symlink(abs, target),
            |_| "linked".into(),
        )
    }

    fn remove_leftovers(&self, dirs: &[&str]) -> Result<Vec<String>, TransportError> {
        self.timed(
            || format!("remove leftovers in {}", dirs.join(" ")),
            || self.inner.remove_leftovers(dirs),
            |v| format!("{} removed", v.len()),
        )
    }

    fn can_run(&self) -> bool {
        self.inner.can_run()
    }

    fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, TransportError> {
        self.timed(
            || {
                let line = argv.join(" ");
                format!("run {}", crate::input::clip_lines(&line, 160))
            },
            || self.inner.run(argv, timeout),
            |o| match o.code {
                Some(0) => "exit 0".into(),
                Some(c) => format!("exit {c}: {}", o.reason()),
                None => "killed by a signal".into(),
            },
        )
    }

    fn dial(&self, host: &str, port: u16) -> Result<Box<dyn Stream>, TransportError> {
        self.timed(
            || format!("dial {host}:{port}"),
            || self.inner.dial(host, port),
            |_| "connected".into(),
        )
    }

    fn held(&self, component: &str) -> Option<crate::held::Held> {
        self.inner.held(component)
    }

    fn held_stamp(&self, component: &str) -> Option<crate::held::Stamp> {
        self.inner.held_stamp(component)
    }

    fn inspect(&self, abs: &str, kind: Kind) -> Result<Inspect, TransportError> {
        self.timed(
            || format!("inspect {abs}"),
            || self.inner.inspect(abs, kind),
            |i| {
                let links = if i.links.is_empty() {
                    String::new()
                } else {
                    format!("-> {} ", i.target(abs))
                };
                match (&i.stat, &i.bytes) {
                    (None, _) => format!("{links}absent"),
                    (Some(s), Some(b)) => format!("{links}{:04o}, {}", s.mode, size(b.len())),
                    (Some(s), None) => format!("{links}{:?} {:04o}", s.kind, s.mode),
                }
            },
        )
    }

    fn read_tree(
        &self,
        dirs: &[&str],
        skip: &[&str],
        kind: Kind,
    ) -> Result<Vec<TreeFile>, TransportError> {
        self.timed(
            || format!("read tree {}", dirs.join(" ")),
            || self.inner.read_tree(dirs, skip, kind),
            |files| {
                let bytes: usize = files
                    .iter()
                    .filter_map(|f| f.bytes.as_ref().ok())
                    .map(Vec::len)
                    .sum();
                format!("{} files, {}", files.len(), size(bytes))
            },
        )
    }
}
