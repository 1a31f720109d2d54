//! What the benches share: running the real binary and measuring it.
#![allow(dead_code)] // each bench reads the fields it reports

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One measured run of a child process.
pub struct Measured {
    /// Wall time.
    pub wall: Duration,
    /// CPU time, user + sys.
    pub cpu: Duration,
    /// Peak resident set, KiB.
    pub rss_kib: i64,
    /// Exited 0.
    pub ok: bool,
}

/// Run a command (the caller sets its stdio); wall time, CPU time and peak RSS from wait4.
#[allow(clippy::zombie_processes)] // reaped by libc::wait4, which also yields its rusage
pub fn measure(cmd: &mut Command) -> Measured {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let mut status = 0;
    // SAFETY: wait4 on our own child pid with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Measured {
        wall: start.elapsed(),
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        rss_kib: usage.ru_maxrss,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    }
}

/// Run the binary in `dir` with `args`, quietly; it must succeed.
pub fn run(bin: &Path, dir: &Path, args: &[&str]) {
    let st = Command::new(bin)
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("runs");
    assert!(st.success(), "trustform {args:?}");
}

/// `trustform sandbox up cluster` in `dir`, as its own process, once it serves: its TLS
/// endpoints file appears after the API server listens. Kill it when done.
pub fn sandbox_up(bin: &Path, dir: &Path) -> std::process::Child {
    let child = Command::new(bin)
        .current_dir(dir)
        .args(["sandbox", "up", "cluster"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sandbox up");
    let start = Instant::now();
    while !dir.join("cluster/run/endpoints.json").is_file() {
        assert!(start.elapsed() < Duration::from_secs(60), "sandbox up");
        std::thread::sleep(Duration::from_millis(100));
    }
    child
}
