//! A node reached over SSH, through the system OpenSSH client: `~/.ssh/config`, the
//! agent, ProxyJump and bastions, certificates and hardware keys work as they do for
//! `ssh`. One multiplexed connection per node (a ControlMaster in a private 0700
//! directory), opened at the first use and reused by every operation; `BatchMode` (never
//! a prompt); a connect timeout; strict host-key checking (an unknown or changed host
//! key is refused, with how to trust it). A login other than root runs every command
//! through `sudo -n`. Only ssh's own failures (exit 255) are retried, with backoff.
//! Nothing is installed on the node: each operation is a short POSIX shell script run
//! with `sh -c`, its arguments quoted, in one of a few shells kept open on the node
//! ([`super::shell`]). A port is dialed from this machine when it is an address other
//! than the node's loopback and answers, else with `ssh -W` through the node.

use super::shell::{Ended, Shell};
use super::{FileType, Output, Stat, Stream, Transport, TransportError};
use crate::input::Kind;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How to reach a node over SSH (trustform.yaml's `access.ssh`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SshOptions {
    /// Host name or address (or a `Host` alias of `~/.ssh/config`).
    pub host: String,
    /// Port (default: ssh's, usually 22).
    pub port: Option<u16>,
    /// Login (default: ssh's, from `~/.ssh/config` or the local user).
    pub user: Option<String>,
    /// Private key file (`-i`, with `IdentitiesOnly`).
    pub identity_file: Option<PathBuf>,
    /// Run commands through `sudo -n` (default: when the login is not root).
    pub sudo: Option<bool>,
    /// A known_hosts file to use instead of the user's.
    pub known_hosts_file: Option<PathBuf>,
    /// An ssh config file to use instead of `~/.ssh/config`.
    pub config_file: Option<PathBuf>,
    /// How long a connection may take.
    pub connect_timeout: Duration,
}

impl SshOptions {
    fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    fn shown(&self) -> String {
        match self.port {
            Some(p) => format!("ssh {}:{p}", self.destination()),
            None => format!("ssh {}", self.destination()),
        }
    }

    fn sudo(&self) -> bool {
        self.sudo
            .unwrap_or_else(|| self.user.as_deref().is_some_and(|u| u != "root"))
    }
}

/// How many control connections every [`Ssh`] of this process has opened.
static OPENED: AtomicUsize = AtomicUsize::new(0);

/// The number of SSH connections (ControlMasters) this process has opened.
pub fn connections_opened() -> usize {
    OPENED.load(Ordering::Relaxed)
}

/// A node over SSH.
#[derive(Debug)]
pub struct Ssh {
    name: String,
    opts: SshOptions,
    /// The ControlMaster: its socket directory (removed on drop) and process.
    master: Mutex<Option<Master>>,
    /// Open shells on the node that are not running a command now.
    idle: Mutex<Vec<Shell>>,
    /// Shells open (idle or busy).
    shells: AtomicUsize,
    /// Addresses this machine does not reach (see [`Ssh::direct`]).
    tunnel_only: Mutex<std::collections::HashSet<(std::net::IpAddr, u16)>>,
}

/// How long a direct connection may take before the node's connection is used instead.
const DIRECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The most shells open on one node at once; beyond, a command runs in its own session.
/// (sshd's `MaxSessions` is 10 by default, and `ssh -W` streams share the connection.)
const MAX_SHELLS: usize = 6;

#[derive(Debug)]
struct Master {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Master {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("master")
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        if let Ok(mut m) = self.master.lock()
            && let Some(mut m) = m.take()
        {
            let _ = m.child.kill();
            let _ = m.child.wait();
        }
    }
}

/// Exit codes of the scripts (ssh itself uses 255, sudo 1).
const MISSING: i32 = 3;
const NOT_A_FILE: i32 = 4;
const TOO_LARGE: i32 = 5;
const WRITE_FAILED: i32 = 6;

/// Quote a word for the remote shell.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,@+%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Ssh {
    /// The node `name` reached with `opts`. Nothing connects until the first operation.
    pub fn new(name: &str, opts: SshOptions) -> Self {
        Self {
            name: name.to_string(),
            opts,
            master: Mutex::new(None),
            idle: Mutex::new(vec![]),
            shells: AtomicUsize::new(0),
            tunnel_only: Mutex::default(),
        }
    }

    fn base(&self) -> Command {
        let o = &self.opts;
        let mut c = Command::new("ssh");
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "LogLevel=ERROR",
        ]);
        c.arg("-o").arg(format!(
            "ConnectTimeout={}",
            o.connect_timeout.as_secs().max(1)
        ));
        if let Some(f) = &o.config_file {
            c.arg("-F").arg(f);
        }
        if let Some(k) = &o.known_hosts_file {
            c.arg("-o")
                .arg(format!("UserKnownHostsFile={}", k.display()));
            c.arg("-o").arg("GlobalKnownHostsFile=/dev/null");
        }
        if let Some(p) = o.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(i) = &o.identity_file {
            c.arg("-i").arg(i).args(["-o", "IdentitiesOnly=yes"]);
        }
        c
    }

    fn unreachable(&self, reason: &str) -> TransportError {
        let o = &self.opts;
        let target = match o.port {
            Some(p) => format!("[{}]:{p}", o.host),
            None => o.host.clone(),
        };
        let help = if reason.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
            || reason.contains("Host key for") && reason.contains("has changed")
        {
            format!(
                "the host key of {target} is not the one in known_hosts: if the node was re-installed, check its new key out of band, then `ssh-keygen -R '{target}'` and trust the new one; otherwise someone may be in the middle"
            )
        } else if reason.contains("Host key verification failed")
            || reason.contains("No ") && reason.contains("host key is known")
        {
            format!(
                "trustform never accepts an unknown host key: check the node's key out of band, then add it (`ssh-keyscan{} {} >> ~/.ssh/known_hosts`, or `knownHostsFile` in trustform.yaml)",
                o.port.map(|p| format!(" -p {p}")).unwrap_or_default(),
                o.host
            )
        } else if reason.contains("Permission denied") {
            "check the login and key (`user`, `identityFile`, the agent); trustform never asks for a password".into()
        } else {
            format!(
                "check that `{}` works from this machine (ssh -o BatchMode=yes {}{})",
                o.shown(),
                o.port.map(|p| format!("-p {p} ")).unwrap_or_default(),
                o.destination()
            )
        };
        TransportError::Unreachable {
            node: format!("{} ({})", self.name, o.shown()),
            reason: reason.to_string(),
            help,
        }
    }

    /// The ControlMaster's socket, starting it if it is not running.
    fn socket(&self) -> Result<PathBuf, TransportError> {
        let mut guard = self.master.lock().expect("ssh master lock");
        if let Some(m) = guard.as_mut() {
            if matches!(m.child.try_wait(), Ok(None)) && m.socket().exists() {
                return Ok(m.socket());
            }
            let _ = m.child.kill();
            let _ = m.child.wait();
            *guard = None;
        }
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
            match self.start_master() {
                Ok(m) => {
                    let s = m.socket();
                    *guard = Some(m);
                    OPENED.fetch_add(1, Ordering::Relaxed);
                    return Ok(s);
                }
                Err((reason, retry)) => {
                    last = reason;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(self.unreachable(&last))
    }

    /// Start a ControlMaster; `Err((reason, worth retrying))`.
    fn start_master(&self) -> Result<Master, (String, bool)> {
        let dir = tempfile::Builder::new()
            .prefix("trustform-ssh-")
            .tempdir()
            .map_err(|e| (e.to_string(), false))?;
        let socket = dir.path().join("master");
        let log = dir.path().join("log");
        let mut c = self.base();
        c.args(["-M", "-N", "-o", "ControlPersist=no"])
            .arg("-S")
            .arg(&socket)
            .arg("-E")
            .arg(&log)
            .arg(self.opts.destination())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = c
            .spawn()
            .map_err(|e| (format!("cannot run ssh: {e}"), false))?;
        let limit = self.opts.connect_timeout + Duration::from_secs(5);
        let start = std::time::Instant::now();
        loop {
            if socket.exists() {
                return Ok(Master { dir, child });
            }
            if let Ok(Some(status)) = child.try_wait() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let reason = said
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                let reason = if reason.is_empty() {
                    format!("ssh exited with {status}")
                } else {
                    reason
                };
                // Host keys and authentication do not get better by retrying.
                let retry = !(reason.contains("Host key")
                    || reason.contains("host key")
                    || reason.contains("Permission denied"));
                return Err((crate::input::clip_lines(&reason, 400).into_owned(), retry));
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err((
                    format!("no connection within {}", humantime::format_duration(limit)),
                    true,
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run `script` with `sh -c` on the node (through `sudo -n` where needed), its
    /// positional arguments `args`, `stdin` fed to it.
    fn sh(
        &self,
        script: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        let mut words: Vec<String> = vec![];
        if self.opts.sudo() {
            words.extend(["sudo".into(), "-n".into()]);
        }
        words.extend(["sh".into(), "-c".into(), quote(script), "trustform".into()]);
        words.extend(args.iter().map(|a| quote(a)));
        self.remote(&words.join(" "), stdin, timeout)
    }

    /// Run a remote command line over the multiplexed connection, in an open shell when
    /// one is free (see [`super::shell`]); ssh failures (255) are retried with backoff.
    fn remote(
        &self,
        line: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, TransportError> {
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 << attempt));
            }
            let socket = self.socket()?;
            let out = match self.shell(&socket) {
                Some(mut shell) => match shell.run(line, stdin, timeout) {
                    Ok(out) => {
                        self.idle.lock().expect("ssh shells lock").push(shell);
                        out
                    }
                    Err(ended) => {
                        drop(shell);
                        self.shells.fetch_sub(1, Ordering::Relaxed);
                        match ended {
                            Ended::TimedOut => {
                                return Err(self.unreachable(&format!(
                                    "did not finish within {}",
                                    humantime::format_duration(timeout)
                                )));
                            }
                            Ended::Exited(code, said) => Output {
                                code,
                                stdout: vec![],
                                stderr: said,
                            },
                        }
                    }
                },
                None => {
                    let mut c = self.session(&socket);
                    c.arg(line);
                    super::process::run(c, stdin, timeout).map_err(|r| self.unreachable(&r))?
                }
            };
            if out.code != Some(255) {
                return self.check_sudo(out);
            }
            last = out.reason();
        }
        Err(self.unreachable(&last))
    }

    /// `ssh` for a new session on the connection at `socket`; the remote command follows.
    fn session(&self, socket: &std::path::Path) -> Command {
        let mut c = self.base();
        c.arg("-S")
            .arg(socket)
            .args(["-o", "ControlMaster=no", "-T"])
            .arg(self.opts.destination())
            .arg("--");
        c
    }

    /// An idle shell, or a new one while there are fewer than [`MAX_SHELLS`].
    fn shell(&self, socket: &std::path::Path) -> Option<Shell> {
        if let Some(s) = self.idle.lock().expect("ssh shells lock").pop() {
            return Some(s);
        }
        let open = self.shells.fetch_add(1, Ordering::Relaxed);
        let started = (open < MAX_SHELLS)
            .then(|| {
                let mut c = self.session(socket);
                c.args(["exec", "sh"]);
                Shell::start(c).ok()
            })
            .flatten();
        if started.is_none() {
            self.shells.fetch_sub(1, Ordering::Relaxed);
        }
        started
    }

    /// A connection made from this machine to `host:port`, when `host` is an IP address
    /// other than the node's own loopback (`127.0.0.1`, `::1`) and this machine reaches
    /// it: the same server, without a round trip through the node. An address that did
    /// not answer in time is dialed through the node from then on; one that refused is
    /// tried again next time (the server may have been restarting).
    fn direct(&self, host: &str, port: u16) -> Option<std::net::TcpStream> {
        let ip: std::net::IpAddr = host.parse().ok()?;
        let own = ip == std::net::Ipv4Addr::LOCALHOST || ip == std::net::Ipv6Addr::LOCALHOST;
        if own || ip.is_unspecified() {
            return None;
        }
        let key = (ip, port);
        if self.tunnel_only.lock().ok()?.contains(&key) {
            return None;
        }
        match super::process::connect_within(key.into(), DIRECT_TIMEOUT) {
            Ok(s) => Some(s),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::ConnectionRefused
                    && let Ok(mut t) = self.tunnel_only.lock()
                {
                    t.insert(key);
                }
                None
            }
        }
    }

    fn check_sudo(&self, out: Output) -> Result<Output, TransportError> {
        if !self.opts.sudo() || out.code != Some(1) {
            return Ok(out);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("a password is required") || err.contains("a terminal is required") {
            return Err(TransportError::Unreachable {
                node: format!("{} ({})", self.name, self.opts.shown()),
                reason: format!("sudo asks for a password: {}", err.trim()),
                help: format!(
                    "trustform runs `sudo -n` and never types a password: allow {} passwordless sudo (NOPASSWD), or log in as root",
                    self.opts.user.as_deref().unwrap_or("this user")
                ),
            });
        }
        if err.contains("must have a tty") {
            return Err(TransportError::Unreachable {
                node: format!("{} ({})", self.name, self.opts.shown()),
                reason: format!("sudo requires a terminal: {}", err.trim()),
                help: "remove `Defaults requiretty` for this user in sudoers, or log in as root"
                    .into(),
            });
        }
        Ok(out)
    }

    fn fail(abs: &str, out: &Output) -> TransportError {
        TransportError::Io {
            path: abs.to_string(),
            reason: out.reason(),
        }
    }
}

const OP_TIMEOUT: Duration = Duration::from_secs(60);

const READ: &str = r#"p=$1; cap=$2
[ -e "$p" ] || exit 3
if [ ! -f "$p" ]; then
  if [ -d "$p" ]; then echo "a directory"; elif [ -p "$p" ]; then echo "a FIFO";
  elif [ -c "$p" ]; then echo "a character device"; elif [ -b "$p" ]; then echo "a block device";
  elif [ -S "$p" ]; then echo "a socket"; else echo "not a regular file"; fi
  exit 4
fi
s=$(stat -L -c %s -- "$p") || exit 1
[ "$s" -le "$cap" ] || exit 5
exec head -c "$((cap + 1))" -- "$p""#;

const STAT: &str = r#"[ -e "$1" ] || exit 3
exec stat -L -c '%f %a %u %g %s' -- "$1""#;

/// `stat -L -c '%f %a %u %g %s'`: raw mode (hex), permissions (octal), uid, gid, size.
fn parse_stat(text: &str) -> Option<Stat> {
    let f: Vec<&str> = text.split_whitespace().collect();
    let raw = u32::from_str_radix(f.first()?, 16).ok()?;
    let kind = match raw & 0o170000 {
        0o100000 => FileType::File,
        0o040000 => FileType::Dir,
        _ => FileType::Other,
    };
    Some(Stat {
        kind,
        mode: u32::from_str_radix(f.get(1)?, 8).ok()?,
        uid: f.get(2)?.parse().ok()?,
        gid: f.get(3)?.parse().ok()?,
        size: f.get(4)?.parse().ok()?,
    })
}

/// The chain of symlinks (`L target`), then `M` (nothing there) or `S stat`, then, for a
/// regular file within the cap, `C` and its bytes; records end with NUL.
const INSPECT: &str = r#"p=$1; cap=$2; n=0
while [ -L "$p" ]; do
  n=$((n + 1)); [ "$n" -le 40 ] || exit 7
  t=$(readlink -- "$p") || exit 1
  printf 'L %s\000' "$t"
  case $t in /*) p=$t ;; *) p=${p%/*}/$t ;; esac
done
if [ ! -e "$p" ]; then printf 'M\000'; exit 0; fi
st=$(stat -L -c '%f %a %u %g %s' -- "$p") || exit 1
printf 'S %s\000' "$st"
[ -f "$p" ] || exit 0
[ "${st##* }" -le "$cap" ] || exit 0
printf 'C\000'
exec head -c "$((cap + 1))" -- "$p""#;

const READ_LINK: &str = r#"[ -L "$1" ] || exit 3
exec readlink -- "$1""#;

const LIST: &str = r#"[ -d "$1" ] || exit 0
for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  if [ -L "$f" ]; then t=l; elif [ -d "$f" ]; then t=d; elif [ -f "$f" ]; then t=f; else t=o; fi
  printf '%s %s\000' "$t" "${f##*/}"
done"#;

const WRITE: &str = r#"p=$1; mode=$2; own=$3
if [ -L "$p" ]; then p=$(readlink -f -- "$p") || exit 6; fi
d=${p%/*}; [ -n "$d" ] || d=/
mkdir -p -- "$d" || exit 6
t=$(mktemp "$d/.trustform-XXXXXX") || exit 6
if ! cat > "$t"; then rm -f -- "$t"; exit 6; fi
chmod "$mode" -- "$t" || { rm -f -- "$t"; exit 6; }
if [ -n "$own" ]; then chown "$own" -- "$t" || { rm -f -- "$t"; exit 6; }; fi
sync -- "$t" 2>/dev/null || sync
mv -f -- "$t" "$p" || { rm -f -- "$t"; exit 6; }
sync -- "$d" 2>/dev/null || true"#;

const REMOVE: &str = r#"[ -e "$1" ] || [ -L "$1" ] || exit 0
exec rm -f -- "$1""#;

const SYMLINK: &str = r#"p=$1; d=${p%/*}; [ -n "$d" ] || d=/
mkdir -p -- "$d" || exit 6
t=$(mktemp -u "$d/.trustform-XXXXXX") || exit 6
ln -s -- "$2" "$t" || exit 6
mv -Tf -- "$t" "$p" || { rm -f -- "$t"; exit 6; }"#;

/// Every file under the directories (and the files) given: a header line per entry
/// (`f MODE SIZE PATH` for a regular file within the cap, `b MODE PATH` beyond it, `m -
/// PATH` for a dangling link, `o WHAT PATH` for anything else), a line `--`, then the
/// bytes of the `f` files one after another. One `find` lists the entries (GNU find;
/// elsewhere the shell walks them) and one `cat` reads them all: a few processes per
/// node instead of two per file. Symlinks are followed to files, not into directories.
const TREE: &str = r#"cap=$1; skip=$2; shift 2
what() { case $1 in d) w=directory;; p) w=FIFO;; c) w=character-device;;
  b) w=block-device;; s) w=socket;; *) w=other;; esac; }
entry() {
  if [ -f "$1" ]; then Y=f; elif [ ! -e "$1" ]; then Y=N; elif [ -d "$1" ]; then Y=d;
  elif [ -p "$1" ]; then Y=p; elif [ -c "$1" ]; then Y=c; elif [ -b "$1" ]; then Y=b;
  elif [ -S "$1" ]; then Y=s; else Y=o; fi
  if [ -L "$1" ]; then y=l; else y=$Y; fi
  st='0 0'; [ "$y$Y" != ff ] || st=$(stat -c '%a %s' -- "$1") || return 0
  printf '%s%s %s %s\n' "$y" "$Y" "$st" "$1"
}
walk() {
  for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    case " $skip " in *" $f "*) continue;; esac
    if [ -d "$f" ] && [ ! -L "$f" ]; then walk "$f"; else entry "$f"; fi
  done
}
if find / -maxdepth 0 -printf '' 2>/dev/null; then
  prune=; set -f
  for s in $skip; do prune="$prune -path $s -prune -o"; done
  list=$(find -H "$@" $prune -printf '%y%Y %m %s %p\n' 2>/dev/null); set +f
else
  list=$(for d in "$@"; do if [ -d "$d" ]; then walk "$d"; elif [ -f "$d" ]; then entry "$d"; fi; done)
fi
set --
while IFS= read -r line; do
  [ -n "$line" ] || continue
  t=${line%% *}; r=${line#* }; m=${r%% *}; r=${r#* }; s=${r%% *}; p=${r#* }
  case $t in
    d*) continue ;;
    f*) ;;
    lf) st=$(stat -L -c '%a %s' -- "$p") || continue; m=${st% *}; s=${st#* } ;;
    lN|lL) printf 'm - %s\n' "$p"; continue ;;
    l*) what "${t#l}"; printf 'o %s %s\n' "$w" "$p"; continue ;;
    *) what "${t%?}"; printf 'o %s %s\n' "$w" "$p"; continue ;;
  esac
  if [ "$s" -le "$cap" ]; then printf 'f %s %s %s\n' "$m" "$s" "$p"; set -- "$@" "$p"
  else printf 'b %s %s\n' "$m" "$p"; fi
done <<EOF
$list
EOF
printf -- '--\n'
[ "$#" -eq 0 ] || exec cat -- "$@""#;

const LEFTOVERS: &str = r#"for d in "$@"; do
  for f in "$d"/.trustform-??????; do
    if { [ -f "$f" ] || [ -L "$f" ]; } && rm -f -- "$f"; then echo "$f"; fi
  done
done"#;

/// Why [`TREE`]'s answer could not be read.
#[derive(Debug)]
struct TreeError {
    reason: String,
    /// The bytes do not add up to the sizes listed: a file changed while it was read.
    changed: bool,
}

/// The files of [`TREE`]'s answer.
fn parse_tree(stdout: &[u8], kind: Kind) -> Result<Vec<super::TreeFile>, TreeError> {
    let garbled = |what: &str| TreeError {
        reason: format!("the listing came back garbled ({what})"),
        changed: false,
    };
    let input = |path: &str, reason: String, help: Option<&str>| TransportError::Input {
        path: path.to_string(),
        reason,
        help: help.map(str::to_string),
    };
    let mut files = vec![];
    let mut sizes = vec![];
    let mut rest = stdout;
    loop {
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| garbled("no end of the listing"))?;
        let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
        rest = &rest[nl + 1..];
        if header == "--" {
            break;
        }
        let mut parts = header.splitn(3, ' ');
        let (Some(t), Some(info), Some(after)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(garbled(&header));
        };
        let mode = u32::from_str_radix(info, 8).ok();
        let (path, bytes) = match t {
            "f" => {
                let (size, path) = after.split_once(' ').ok_or_else(|| garbled(&header))?;
                let size: usize = size.parse().map_err(|_| garbled(&header))?;
                sizes.push((files.len(), size));
                (path, Ok(vec![]))
            }
            "b" => (
                after,
                Err(input(
                    after,
                    format!(
                        "is larger than {} bytes, the most trustform reads for this kind of file",
                        kind.cap()
                    ),
                    None,
                )),
            ),
            "m" => (after, Err(input(after, "does not exist".into(), None))),
            _ => (
                after,
                Err(input(
                    after,
                    if info == "other" {
                        "is not a regular file".to_string()
                    } else {
                        format!("is a {}, not a regular file", info.replace('-', " "))
                    },
                    Some(
                        "trustform reads only regular files (a FIFO or a device could block or never end)",
                    ),
                )),
            ),
        };
        files.push(super::TreeFile {
            path: path.to_string(),
            mode: if t == "f" || t == "b" { mode } else { None },
            bytes,
        });
    }
    if sizes.iter().map(|(_, n)| n).sum::<usize>() != rest.len() {
        return Err(TreeError {
            reason: "its files changed while they were read; run trustform again".into(),
            changed: true,
        });
    }
    for (i, n) in sizes {
        let (head, tail) = rest.split_at(n);
        files[i].bytes = Ok(head.to_vec());
        rest = tail;
    }
    Ok(files)
}

impl Transport for Ssh {
    fn describe(&self) -> String {
        self.opts.shown()
    }

    fn read(&self, abs: &str, kind: Kind) -> Result<Option<Vec<u8>>, TransportError> {
        super::normal(abs)?;
        let cap = kind.cap().to_string();
        let out = self.sh(READ, &[abs, &cap], None, OP_TIMEOUT)?;
        match out.code {
            Some(0) if out.stdout.len() as u64 <= kind.cap() => Ok(Some(out.stdout)),
            Some(0) | Some(TOO_LARGE) => Err(TransportError::Input {
                path: abs.to_string(),
                reason: format!(
                    "is larger than {} bytes, the most trustform reads for this kind of file",
                    kind.cap()
                ),
                help: None,
            }),
            Some(MISSING) => Ok(None),
            Some(NOT_A_FILE) => Err(TransportError::Input {
                path: abs.to_string(),
                reason: format!("is {}, not a regular file", out.text().trim()),
                help: Some(
                    "trustform reads only regular files (a FIFO or a device could block or never end)".into(),
                ),
            }),
            _ => Err(Self::fail(abs, &out)),
        }
    }

    fn stat(&self, abs: &str) -> Result<Option<Stat>, TransportError> {
        super::normal(abs)?;
        let out = self.sh(STAT, &[abs], None, OP_TIMEOUT)?;
        match out.code {
            Some(0) => parse_stat(&out.text())
                .map(Some)
                .ok_or_else(|| Self::fail(abs, &out)),
            Some(MISSING) => Ok(None),
            _ => Err(Self::fail(abs, &out)),
        }
    }

    /// One round trip: the script [`INSPECT`].
    fn inspect(&self, abs: &str, kind: Kind) -> Result<super::Inspect, TransportError> {
        super::normal(abs)?;
        let cap = kind.cap().to_string();
        let out = self.sh(INSPECT, &[abs, &cap], None, OP_TIMEOUT)?;
        match out.code {
            Some(0) => {}
            Some(7) => {
                return Err(TransportError::Io {
                    path: abs.to_string(),
                    reason: "too many levels of symbolic links".into(),
                });
            }
            _ => return Err(Self::fail(abs, &out)),
        }
        let mut found = super::Inspect::default();
        let mut rest: &[u8] = &out.stdout;
        let bad = || Self::fail(abs, &out);
        while !rest.is_empty() {
            let end = rest.iter().position(|b| *b == 0).ok_or_else(bad)?;
            let record = String::from_utf8_lossy(&rest[..end]).into_owned();
            rest = &rest[end + 1..];
            if record.is_empty() || !record.is_char_boundary(1) {
                return Err(bad());
            }
            match record.split_at(1) {
                ("L", t) => found.links.push(t.trim_start_matches(' ').to_string()),
                ("M", _) => break,
                ("S", st) => found.stat = Some(parse_stat(st).ok_or_else(bad)?),
                ("C", _) => {
                    if rest.len() as u64 > kind.cap() {
                        break;
                    }
                    found.bytes = Some(rest.to_vec());
                    break;
                }
                _ => return Err(bad()),
            }
        }
        Ok(found)
    }

    fn read_link(&self, abs: &str) -> Result<Option<String>, TransportError> {
        super::normal(abs)?;
        let out = self.sh(READ_LINK, &[abs], None, OP_TIMEOUT)?;
        match out.code {
            Some(0) => Ok(Some(out.text().trim_end_matches('\n').to_string())),
            Some(MISSING) => Ok(None),
            _ => Err(Self::fail(abs, &out)),
        }
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, FileType)>, TransportError> {
        super::normal(dir)?;
        let out = self.sh(LIST, &[dir], None, OP_TIMEOUT)?;
        if !out.success() {
            return Err(Self::fail(dir, &out));
        }
        let mut v: Vec<(String, FileType)> = out
            .stdout
            .split(|b| *b == 0)
            .filter(|e| e.len() > 2)
            .filter_map(|e| {
                let name = String::from_utf8(e[2..].to_vec()).ok()?;
                let t = match e[0] {
                    b'l' => FileType::Symlink,
                    b'd' => FileType::Dir,
                    b'f' => FileType::File,
                    _ => FileType::Other,
                };
                Some((name, t))
            })
            .collect();
        v.sort();
        Ok(v)
    }

    fn write(
        &self,
        abs: &str,
        bytes: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), TransportError> {
        super::normal(abs)?;
        let mode = format!("{mode:o}");
        let owner = owner.map(|(u, g)| format!("{u}:{g}")).unwrap_or_default();
        let out = self.sh(WRITE, &[abs, &mode, &owner], Some(bytes), OP_TIMEOUT)?;
        match out.code {
            Some(0) => Ok(()),
            Some(WRITE_FAILED) => Err(Self::fail(abs, &out)),
            _ => Err(Self::fail(abs, &out)),
        }
    }

    fn remove(&self, abs: &str) -> Result<(), TransportError> {
        super::normal(abs)?;
        let out = self.sh(REMOVE, &[abs], None, OP_TIMEOUT)?;
        if out.success() {
            Ok(())
        } else {
            Err(Self::fail(abs, &out))
        }
    }

    fn symlink(&self, abs: &str, target: &str) -> Result<(), TransportError> {
        super::normal(abs)?;
        let out = self.sh(SYMLINK, &[abs, target], None, OP_TIMEOUT)?;
        if out.success() {
            Ok(())
        } else {
            Err(Self::fail(abs, &out))
        }
    }

    fn remove_leftovers(&self, dirs: &[&str]) -> Result<Vec<String>, TransportError> {
        for d in dirs {
            super::normal(d)?;
        }
        if dirs.is_empty() {
            return Ok(vec![]);
        }
        let out = self.sh(LEFTOVERS, dirs, None, OP_TIMEOUT)?;
        Ok(out.text().lines().map(str::to_string).collect())
    }

    fn read_tree(
        &self,
        dirs: &[&str],
        skip: &[&str],
        kind: Kind,
    ) -> Result<Vec<super::TreeFile>, TransportError> {
        for d in dirs.iter().chain(skip) {
            super::normal(d)?;
        }
        let cap = kind.cap().to_string();
        let skip = skip.join(" ");
        let mut args = vec![cap.as_str(), skip.as_str()];
        args.extend(dirs.iter().copied());
        let at = dirs.first().copied().unwrap_or("/");
        // A file that changed between the listing and its reading: read again, once.
        let mut again = true;
        loop {
            let out = self.sh(TREE, &args, None, OP_TIMEOUT)?;
            if !out.success() {
                return Err(Self::fail(at, &out));
            }
            match parse_tree(&out.stdout, kind) {
                Ok(files) => return Ok(files),
                Err(why) if again && why.changed => again = false,
                Err(why) => {
                    return Err(TransportError::Io {
                        path: at.to_string(),
                        reason: why.reason,
                    });
                }
            }
        }
    }

    fn run(&self, argv: &[&str], timeout: Duration) -> Result<Output, TransportError> {
        let mut words: Vec<String> = vec![];
        if self.opts.sudo() {
            words.extend(["sudo".into(), "-n".into()]);
        }
        words.extend(argv.iter().map(|a| quote(a)));
        self.remote(&words.join(" "), None, timeout)
    }

    fn dial(&self, host: &str, port: u16) -> Result<Box<dyn Stream>, TransportError> {
        if let Some(s) = self.direct(host, port) {
            return Ok(Box::new(s));
        }
        let socket = self.socket()?;
        let mut c = self.base();
        c.arg("-S")
            .arg(&socket)
            .args(["-o", "ControlMaster=no"])
            .arg("-W")
            .arg(format!("{host}:{port}"))
            .arg(self.opts.destination());
        let s = super::process::ChildStream::spawn(c)
            .map_err(|e| self.unreachable(&format!("ssh -W {host}:{port}: {e}")))?;
        Ok(Box::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_for_the_remote_shell() {
        assert_eq!(
            quote("/etc/kubernetes/pki/ca.crt"),
            "/etc/kubernetes/pki/ca.crt"
        );
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$(reboot)"), "'$(reboot)'");
        // What the shell makes of them: the same words back.
        let words = ["plain", "a b", "it's", "", "$(echo no)", "x;y", "*"];
        let line = words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ");
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("for w in {line}; do printf '[%s]' \"$w\"; done"),
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "[plain][a b][it's][][$(echo no)][x;y][*]"
        );
    }

    #[test]
    fn addresses_this_machine_reaches_are_dialed_from_here_and_the_nodes_own_never() {
        let ssh = Ssh::new("n", SshOptions::default());
        let here = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = here.local_addr().unwrap().port();
        assert!(ssh.direct("127.0.0.2", port).is_some());
        // The node's own loopback, names and the unspecified address go through the node.
        let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let own_port = own.local_addr().unwrap().port();
        assert!(ssh.direct("127.0.0.1", own_port).is_none());
        assert!(ssh.direct("localhost", own_port).is_none());
        assert!(ssh.direct("0.0.0.0", own_port).is_none());
        // Refused (nothing listens on port 1): through the node this time, tried
        // directly again the next.
        assert!(ssh.direct("127.0.0.2", 1).is_none());
        assert!(ssh.tunnel_only.lock().unwrap().is_empty());
    }

    #[test]
    fn the_scripts_work_on_this_machine() {
        // The scripts are plain POSIX sh + coreutils: run them here through `sh -c`.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let sh = |script: &str, args: &[&str], stdin: Option<&[u8]>| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(script).arg("trustform").args(args);
            super::super::process::run(c, stdin, Duration::from_secs(10)).unwrap()
        };
        let p = format!("{d}/pki/ca.key");
        let o = sh(WRITE, &[&p, "600", ""], Some(b"secret"));
        assert!(o.success(), "{o:?}");
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        let o = sh(STAT, &[&p], None);
        let f: Vec<String> = o.text().split_whitespace().map(String::from).collect();
        assert_eq!(f[1], "600");
        assert_eq!(sh(READ, &[&p, "100"], None).stdout, b"secret");
        assert_eq!(sh(READ, &[&p, "3"], None).code, Some(TOO_LARGE));
        assert_eq!(
            sh(READ, &[&format!("{d}/none"), "3"], None).code,
            Some(MISSING)
        );
        assert_eq!(sh(READ, &[&d, "3"], None).code, Some(NOT_A_FILE));
        let link = format!("{d}/pki/current.pem");
        assert!(sh(SYMLINK, &[&link, "/var/lib/kubelet/pki/x.pem"], None).success());
        assert_eq!(
            sh(READ_LINK, &[&link], None).text().trim(),
            "/var/lib/kubelet/pki/x.pem"
        );
        std::fs::write(format!("{d}/pki/.trustform-Ab3xY9"), b"torn").unwrap();
        std::fs::write(format!("{d}/pki/.hidden"), b"x").unwrap();
        let listed = sh(LIST, &[&format!("{d}/pki")], None).stdout;
        let names: Vec<&[u8]> = listed
            .split(|b| *b == 0)
            .filter(|e| !e.is_empty())
            .collect();
        assert_eq!(
            names,
            vec![
                &b"f ca.key"[..],
                b"l current.pem",
                b"f .hidden",
                b"f .trustform-Ab3xY9"
            ]
        );
        // Every directory in one go; the paths of what was removed.
        assert_eq!(
            sh(LEFTOVERS, &[&format!("{d}/pki"), &d], None).text(),
            format!("{d}/pki/.trustform-Ab3xY9\n")
        );
        assert!(sh(REMOVE, &[&p], None).success());
        assert!(!std::path::Path::new(&p).exists());
        // The whole tree in one go: files with mode and bytes, a dangling link, a link
        // to a file followed, a link to a directory not entered, a FIFO never opened,
        // the skipped directory left out, a file given by name, a missing one ignored.
        std::fs::create_dir_all(format!("{d}/pki/tmp")).unwrap();
        std::fs::write(format!("{d}/pki/tmp/x"), b"skipped").unwrap();
        std::fs::write(format!("{d}/pki/big"), vec![b'a'; 200]).unwrap();
        std::fs::create_dir_all(format!("{d}/pki/sub")).unwrap();
        std::fs::write(format!("{d}/pki/sub/a.crt"), b"A\n").unwrap();
        std::os::unix::fs::symlink(format!("{d}/pki/sub/a.crt"), format!("{d}/pki/link.crt"))
            .unwrap();
        std::os::unix::fs::symlink(format!("{d}/pki/sub"), format!("{d}/pki/dirlink")).unwrap();
        std::fs::write(format!("{d}/config.yaml"), b"kind: x").unwrap();
        assert!(
            std::process::Command::new("mkfifo")
                .arg(format!("{d}/pki/fifo"))
                .status()
                .unwrap()
                .success()
        );
        let skip = format!("{d}/pki/tmp");
        let pki = format!("{d}/pki");
        let config = format!("{d}/config.yaml");
        let missing = format!("{d}/none");
        let args = ["100", &skip, &pki, &config, &missing];
        let tree = |o: Output| {
            assert!(o.success(), "{o:?}");
            type Seen = (String, Option<u32>, Result<Vec<u8>, String>);
            let mut files: Vec<Seen> = parse_tree(&o.stdout, Kind::Config)
                .unwrap()
                .into_iter()
                .map(|f| (f.path, f.mode, f.bytes.map_err(|e| e.to_string())))
                .collect();
            files.sort_by(|a, b| a.0.cmp(&b.0));
            files
        };
        let fast = tree(sh(TREE, &args, None));
        let p = |n: &str| format!("{d}/{n}");
        let shown: Vec<(String, Option<u32>, bool)> = fast
            .iter()
            .map(|(p, m, b)| (p.clone(), *m, b.is_ok()))
            .collect();
        assert_eq!(
            shown,
            vec![
                (p("config.yaml"), Some(0o644), true),
                (p("pki/.hidden"), Some(0o644), true),
                (p("pki/big"), Some(0o644), false),
                (p("pki/current.pem"), None, false),
                (p("pki/dirlink"), None, false),
                (p("pki/fifo"), None, false),
                (p("pki/link.crt"), Some(0o644), true),
                (p("pki/sub/a.crt"), Some(0o644), true),
            ]
        );
        let bytes = |name: &str| fast.iter().find(|f| f.0 == p(name)).unwrap().2.clone();
        assert_eq!(bytes("pki/.hidden"), Ok(b"x".to_vec()));
        assert_eq!(bytes("pki/link.crt"), Ok(b"A\n".to_vec()));
        assert_eq!(bytes("config.yaml"), Ok(b"kind: x".to_vec()));
        assert!(bytes("pki/fifo").unwrap_err().contains("FIFO"));
        assert!(bytes("pki/dirlink").unwrap_err().contains("directory"));
        assert!(
            bytes("pki/current.pem")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(bytes("pki/big").unwrap_err().contains("larger than"));
        // Without GNU find (busybox), the shell walks the tree: the same answer.
        let bin = format!("{d}/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(format!("{bin}/find"), "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(
            format!("{bin}/find"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let mut c = Command::new("sh");
        c.env("PATH", format!("{bin}:{}", std::env::var("PATH").unwrap()))
            .arg("-c")
            .arg(TREE)
            .arg("trustform")
            .args(args);
        let walked = tree(super::super::process::run(c, None, Duration::from_secs(10)).unwrap());
        assert_eq!(walked, fast);
        // Bytes that do not add up to the sizes listed: changed while read.
        let e = parse_tree(b"f 644 3 /a\n--\nab", Kind::Config).unwrap_err();
        assert!(e.changed, "{e:?}");
        assert!(
            !parse_tree(b"f 644 3 /a\n", Kind::Config)
                .unwrap_err()
                .changed
        );
    }
}
