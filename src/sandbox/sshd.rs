//! `sandbox up --ssh`: a real OpenSSH server (`/usr/sbin/sshd`, Debian's
//! `openssh-server`) for every node, so the sandbox is reached exactly as real nodes are.
//!
//! Each node's sshd listens on the node's loopback address (`sandbox.json` `ip`) on a
//! port free at start, inside a private mount namespace (`unshare --mount
//! --propagation private`) whose `/etc/kubernetes`, `/var/lib/kubelet` and `/root/.kube`
//! are bind mounts of that node's directories, and whose `/etc/passwd`, `/etc/group`,
//! `/etc/shadow` and `/etc/sudoers` are generated ones: `root` (key login), and
//! [`SUDO_USER`], a key login whose `sudo` needs a password or not
//! (`--ssh-sudo password|nopasswd`). Sessions' `PATH` (and sudo's `secure_path`) start
//! with a directory whose `systemctl`, `crictl` and `journalctl` run
//! `trustform sandbox node-exec DIR NODE -- "$@"` (the simulated machine). The host's own
//! files are never changed; missing mount points (and sshd's `/run/sshd`) are created.
//!
//! Under `DIR/ssh/`: the client key `id_ed25519` (0600) and `authorized_keys`,
//! `known_hosts` (`[ip]:port` entries of every node's host key, rewritten at each start),
//! and per node `nodes/<name>/` (its ed25519 host key, made once and kept across
//! starts, `sshd_config`, `sudoers`, the shims in `bin/`, sshd's log `sshd.log`).
//! `DIR/run/ssh.json` says where each node is ([`SshInfo`]).
//!
//! `trustform sandbox sshd DIR NODE --stop|--start` stops one node's sshd (and every
//! session it serves, as if the machine's sshd died) or starts it again on the same
//! port, through a request file under `DIR/run/ssh-control/` that the running
//! `sandbox up` acts on ([`request`]).

use super::{Sandbox, SandboxNode};
use miette::Diagnostic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The login that is not root, whose `sudo` is configured by `--ssh-sudo`.
pub const SUDO_USER: &str = "trustform";

/// Where the nodes' SSH endpoints are recorded, relative to the sandbox directory.
pub const INFO: &str = "run/ssh.json";

/// The request directory, relative to the sandbox directory.
const CONTROL: &str = "run/ssh-control";

/// How long an sshd may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What the sudo of [`SUDO_USER`] asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sudo {
    /// A password (which the login does not have): `sudo -n` fails with `sudo: a
    /// password is required`.
    Password,
    /// Nothing (`NOPASSWD: ALL`).
    #[default]
    Nopasswd,
}

/// `DIR/run/ssh.json`: how to reach every node over SSH.
///
/// ```json
/// { "pid": 4242,
///   "nodes": [ { "name": "cp-1", "host": "127.0.1.1", "port": 40211, "user": "root",
///                "identity_file": "/abs/DIR/ssh/id_ed25519",
///                "known_hosts_file": "/abs/DIR/ssh/known_hosts", "pid": 4300,
///                "sudo_user": "trustform", "sudo": "nopasswd" } ] }
/// ```
/// A node's `pid` is `null` while its sshd is stopped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshInfo {
    /// The `sandbox up` process.
    pub pid: u32,
    /// Every node.
    pub nodes: Vec<SshNode>,
}

/// One node's SSH endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshNode {
    /// Node name.
    pub name: String,
    /// Its address (loopback).
    pub host: String,
    /// Its sshd's port.
    pub port: u16,
    /// The login with full access.
    pub user: String,
    /// The private key that logs in (as `user` and as `sudo_user`).
    pub identity_file: PathBuf,
    /// The known_hosts file with this node's host key.
    pub known_hosts_file: PathBuf,
    /// The sshd's process (`null` while stopped).
    pub pid: Option<u32>,
    /// A login that is not root.
    pub sudo_user: String,
    /// What its sudo asks for.
    pub sudo: Sudo,
}

impl SshInfo {
    /// The file of sandbox `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(INFO)
    }

    /// Read the file of sandbox `dir`.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(Self::path(dir))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// The endpoint of `node`.
    pub fn node(&self, node: &str) -> Option<&SshNode> {
        self.nodes.iter().find(|n| n.name == node)
    }
}

impl SshNode {
    /// The `ssh` command line that logs in as `user`.
    pub fn command(&self) -> String {
        format!(
            "ssh -i {} -o UserKnownHostsFile={} -p {} {}@{}",
            self.identity_file.display(),
            self.known_hosts_file.display(),
            self.port,
            self.user,
            self.host
        )
    }
}

/// Errors of the SSH servers.
#[derive(Debug, Error, Diagnostic)]
pub enum SshdError {
    /// OpenSSH's server is not installed.
    #[error("{0} is missing")]
    #[diagnostic(
        code(trustform::sandbox::sshd::missing),
        help(
            "install Debian's openssh-server (`apt-get install -y openssh-server sudo`); its own service need not run"
        )
    )]
    Missing(String),
    /// A file could not be made.
    #[error("cannot write {path}: {reason}")]
    #[diagnostic(code(trustform::sandbox::sshd::io))]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A tool failed.
    #[error("`{command}` failed: {reason}")]
    #[diagnostic(
        code(trustform::sandbox::sshd::tool),
        help("`sandbox up --ssh` needs root (mount namespaces), ssh-keygen and unshare")
    )]
    Tool {
        /// The command.
        command: String,
        /// What it said.
        reason: String,
    },
    /// An sshd did not come up.
    #[error("sshd of {node} did not listen on {address}: {reason}")]
    #[diagnostic(code(trustform::sandbox::sshd::start), help("see its log, {log}"))]
    Start {
        /// The node.
        node: String,
        /// Where it should listen.
        address: String,
        /// What happened.
        reason: String,
        /// Its log.
        log: String,
    },
    /// The node is not in the sandbox, or no `sandbox up --ssh` serves it.
    #[error("{0}")]
    #[diagnostic(
        code(trustform::sandbox::sshd::control),
        help("run `trustform sandbox up DIR --ssh` first, and name a node of its sandbox.json")
    )]
    Control(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SshdError + '_ {
    move |e| SshdError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), SshdError> {
    crate::atomic::write(path, text.as_bytes(), mode).map_err(io(path))
}

fn tool(cmd: &mut Command) -> Result<(), SshdError> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SshdError::Tool {
            command: shown.clone(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(SshdError::Tool {
            command: shown,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// An ed25519 key at `path` (and `path.pub`), made once.
fn keypair(path: &Path, comment: &str) -> Result<String, SshdError> {
    if !path.is_file() || !path.with_extension("pub").is_file() {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(path.with_extension("pub"));
        tool(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(path),
        )?;
    }
    let public = std::fs::read_to_string(path.with_extension("pub")).map_err(io(path))?;
    Ok(public.trim().to_string())
}

/// A port on `ip` that is free now.
fn free_port(ip: &str) -> Result<u16, SshdError> {
    let l = std::net::TcpListener::bind((ip, 0)).map_err(|e| SshdError::Tool {
        command: format!("bind {ip}:0"),
        reason: e.to_string(),
    })?;
    Ok(l.local_addr().map_err(io(Path::new(ip)))?.port())
}

/// Every process descended from `pid` (children first found, by /proc).
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = vec![];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`: comm may hold spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|x| x.parse().ok()) {
                parent_of.push((p, ppid));
            }
        }
    }
    let mut out = vec![];
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            if !out.contains(child) {
                out.push(*child);
                todo.push(*child);
            }
        }
    }
    out
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether process `pid` runs an sshd with config `config` (a leftover of a killed
/// `sandbox up`).
fn is_our_sshd(pid: u32, config: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let text = String::from_utf8_lossy(&c).replace('\0', " ");
        text.contains("sshd") && text.contains(&*config.to_string_lossy())
    })
}

/// One node's server.
#[derive(Debug)]
struct Server {
    node: SandboxNode,
    port: u16,
    dir: PathBuf,
    /// Its host key, `ssh-ed25519 AAAA… comment`.
    host_pub: String,
    /// Its sessions' PATH.
    path: String,
    child: Option<Child>,
}

impl Server {
    /// Write its `sshd_config` (for its current port).
    fn write_config(&self, ssh: &Path) -> Result<(), SshdError> {
        // The keys come from a command run as root: the sandbox directory may be
        // private (0700) or under a world-writable /tmp, which sshd's own reading of
        // an AuthorizedKeysFile (as the user, StrictModes) refuses.
        let config = format!(
            "# sshd of sandbox node {name} (trustform sandbox up --ssh)\n\
             ListenAddress {ip}:{port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile none\n\
             AuthorizedKeysCommand /bin/cat \"{keys}\"\n\
             AuthorizedKeysCommandUser root\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers root {SUDO_USER}\n\
             UsePAM no\n\
             PidFile none\n\
             MaxStartups 200\n\
             MaxSessions 200\n\
             SetEnv PATH={path}\n\
             Subsystem sftp /usr/lib/openssh/sftp-server\n",
            name = self.node.name,
            ip = self.node.ip,
            port = self.port,
            host_key = self.dir.join("host_ed25519").display(),
            keys = ssh.join("authorized_keys").display(),
            path = self.path,
        );
        write(&self.config(), &config, 0o644)
    }

    /// Whether its last start failed because the port was taken meanwhile.
    fn port_taken(&self) -> bool {
        std::fs::read_to_string(self.log()).is_ok_and(|t| {
            t.lines()
                .rev()
                .take(5)
                .any(|l| l.contains("Address already in use"))
        })
    }

    fn config(&self) -> PathBuf {
        self.dir.join("sshd_config")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Start sshd in its own mount namespace; returns once it accepts connections.
    fn start(&mut self, ssh: &Path) -> Result<(), SshdError> {
        self.spawn(ssh)?;
        self.wait_listening()
    }

    /// Start sshd in its own mount namespace (without waiting). It gets SIGKILL when the
    /// thread that started it ends (`setpriv --pdeathsig`), so a `sandbox up` killed
    /// with SIGKILL leaves no sshd behind.
    fn spawn(&mut self, ssh: &Path) -> Result<(), SshdError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .map_err(io(&self.log()))?;
        let err = log.try_clone().map_err(io(&self.log()))?;
        let root = &self.node.root;
        let mut mounts: Vec<(PathBuf, &str)> = vec![
            (root.join("etc/kubernetes"), "/etc/kubernetes"),
            (root.join("var/lib/kubelet"), "/var/lib/kubelet"),
            (root.join("root/.kube"), "/root/.kube"),
            (ssh.join("passwd"), "/etc/passwd"),
            (ssh.join("group"), "/etc/group"),
            (ssh.join("shadow"), "/etc/shadow"),
        ];
        if Path::new("/etc/sudoers").is_file() {
            mounts.push((self.dir.join("sudoers"), "/etc/sudoers"));
        }
        // `sh -c SCRIPT sh SRC1 DST1 SRC2 DST2 … -- SSHD CONFIG`: no quoting of paths.
        let script = "set -e\nwhile [ \"$1\" != -- ]; do mount --bind \"$1\" \"$2\"; shift 2; done\nshift\nexec \"$1\" -D -e -f \"$2\"\n";
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--pdeathsig",
            "KILL",
            "--",
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ]);
        cmd.args(["--", "/bin/sh", "-c", script, "sh"]);
        for (src, dst) in &mounts {
            cmd.arg(src).arg(dst);
        }
        cmd.arg("--").arg("/usr/sbin/sshd").arg(self.config());
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .env("LANG", "C");
        let child = cmd.spawn().map_err(|e| SshdError::Tool {
            command: "setpriv … unshare … sshd".into(),
            reason: e.to_string(),
        })?;
        self.child = Some(child);
        Ok(())
    }

    /// Wait until the sshd just spawned accepts connections.
    fn wait_listening(&mut self) -> Result<(), SshdError> {
        let address = format!("{}:{}", self.node.ip, self.port);
        let started = Instant::now();
        let fail = |me: &mut Self, reason: String| {
            if let Some(mut c) = me.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            Err(SshdError::Start {
                node: me.node.name.clone(),
                address: address.clone(),
                reason,
                log: me.log().display().to_string(),
            })
        };
        loop {
            let Some(child) = self.child.as_mut() else {
                return fail(self, "it was not started".into());
            };
            if let Ok(Some(status)) = child.try_wait() {
                let tail = std::fs::read_to_string(self.log()).unwrap_or_default();
                let last = tail.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
                return fail(self, format!("it exited ({status}): {last}"));
            }
            if std::net::TcpStream::connect_timeout(
                &address.parse().expect("an IP and a port"),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(());
            }
            if started.elapsed() > START_TIMEOUT {
                return fail(
                    self,
                    format!("not listening after {}s", START_TIMEOUT.as_secs()),
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stop sshd and every session it serves.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        signal("KILL", &descendants(pid));
        signal("TERM", &[pid]);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The running servers of `sandbox up --ssh`. [`Sshds::shutdown`] (or dropping them)
/// stops every one.
#[derive(Debug)]
pub struct Sshds {
    dir: PathBuf,
    ssh: PathBuf,
    sudo: Sudo,
    servers: Vec<Server>,
}

/// The shims' directory of a node.
fn shim_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("bin")
}

const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The generated account files (host accounts, [`SUDO_USER`] added; no password anywhere).
fn accounts(ssh: &Path) -> Result<(), SshdError> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    // root logs in to a POSIX shell that reads no rc file of this machine's /root: a
    // session's PATH is exactly the node's (its tools first).
    let mut users: Vec<String> = passwd
        .lines()
        .filter(|l| !l.starts_with(&format!("{SUDO_USER}:")) && !l.trim().is_empty())
        .map(|l| match l.strip_prefix("root:") {
            Some(rest) => {
                let mut f: Vec<&str> = rest.split(':').collect();
                if let Some(shell) = f.last_mut() {
                    *shell = "/bin/sh";
                }
                format!("root:{}", f.join(":"))
            }
            None => l.to_string(),
        })
        .collect();
    let taken = |n: u32, file: &str| {
        file.lines()
            .any(|l| l.split(':').nth(2).and_then(|x| x.parse::<u32>().ok()) == Some(n))
    };
    let id = (2000..60000)
        .find(|n| !taken(*n, &passwd) && !taken(*n, &group))
        .unwrap_or(4242);
    users.push(format!(
        "{SUDO_USER}:x:{id}:{id}:trustform sandbox:/:/bin/sh"
    ));
    let mut groups: Vec<String> = group
        .lines()
        .filter(|l| !l.starts_with(&format!("{SUDO_USER}:")) && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    groups.push(format!("{SUDO_USER}:x:{id}:"));
    // `*`: no password can match, yet the account is not locked (key logins work).
    let shadow: Vec<String> = users
        .iter()
        .filter_map(|l| l.split(':').next())
        .map(|u| format!("{u}:*:19000:0:99999:7:::"))
        .collect();
    let join = |v: &[String]| v.iter().map(|l| format!("{l}\n")).collect::<String>();
    write(&ssh.join("passwd"), &join(&users), 0o644)?;
    write(&ssh.join("group"), &join(&groups), 0o644)?;
    write(&ssh.join("shadow"), &join(&shadow), 0o640)
}

impl Sshds {
    /// Generate keys and configuration, start an sshd for every node of sandbox `dir`
    /// and write `DIR/run/ssh.json`; then serve `trustform sandbox sshd` requests every
    /// `period`, on a thread of its own (the sshds die with it), until
    /// [`Watcher::shutdown`].
    pub fn serve(dir: &Path, sudo: Sudo, period: Duration) -> Result<Watcher, SshdError> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let dir = dir.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let mut me = match Self::start(&dir, sudo) {
                Ok(me) => me,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = tx.send(Ok(me.info()));
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                me.poll();
                std::thread::sleep(period);
            }
            me.shutdown();
        });
        match rx.recv() {
            Ok(Ok(info)) => Ok(Watcher {
                info,
                stop,
                handle: Some(handle),
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err(SshdError::Control("the sshd thread failed".into()))
            }
        }
    }

    fn start(dir: &Path, sudo: Sudo) -> Result<Self, SshdError> {
        for tool in ["/usr/sbin/sshd", "/usr/bin/ssh-keygen"] {
            if !Path::new(tool).is_file() {
                return Err(SshdError::Missing(tool.into()));
            }
        }
        let dir = std::path::absolute(dir).map_err(io(dir))?;
        let sandbox = Sandbox::load(&dir)
            .map_err(|e| SshdError::Control(format!("{} is not a sandbox: {e}", dir.display())))?;
        let ssh = dir.join("ssh");
        std::fs::create_dir_all(&ssh).map_err(io(&ssh))?;
        // Leftovers of a `sandbox up` that was killed: its sshds still hold the ports.
        if let Ok(old) = SshInfo::load(&dir) {
            for n in &old.nodes {
                let config = ssh.join("nodes").join(&n.name).join("sshd_config");
                if let Some(pid) = n.pid.filter(|p| is_our_sshd(*p, &config)) {
                    signal("KILL", &descendants(pid));
                    signal("KILL", &[pid]);
                }
            }
        }
        // Mount points the namespaces need; the host's own files stay as they are.
        for p in [
            "/etc/kubernetes",
            "/var/lib/kubelet",
            "/root/.kube",
            "/run/sshd",
        ] {
            if !Path::new(p).exists() {
                std::fs::create_dir_all(p).map_err(io(Path::new(p)))?;
            }
        }
        let client = ssh.join("id_ed25519");
        let client_pub = keypair(&client, "trustform-sandbox-client")?;
        write(
            &ssh.join("authorized_keys"),
            &format!("{client_pub}\n"),
            0o600,
        )?;
        accounts(&ssh)?;
        let exe = std::env::current_exe().map_err(io(Path::new("trustform")))?;
        let mut servers = vec![];
        for node in &sandbox.nodes {
            let nd = ssh.join("nodes").join(&node.name);
            std::fs::create_dir_all(&nd).map_err(io(&nd))?;
            let kube = node.root.join("root/.kube");
            std::fs::create_dir_all(&kube).map_err(io(&kube))?;
            let host_key = nd.join("host_ed25519");
            let host_pub = keypair(&host_key, &format!("trustform-sandbox-{}", node.name))?;
            let port = free_port(&node.ip)?;
            let bin = shim_dir(&nd);
            for cmd in ["systemctl", "crictl", "journalctl"] {
                let text = format!(
                    "#!/bin/sh\n# {cmd} of sandbox node {name}: the simulated machine.\nexec '{exe}' sandbox node-exec '{dir}' '{name}' -- {cmd} \"$@\"\n",
                    exe = exe.display(),
                    dir = dir.display(),
                    name = node.name,
                );
                write(&bin.join(cmd), &text, 0o755)?;
            }
            let path = format!("{}:{SYSTEM_PATH}", bin.display());
            let nopasswd = if sudo == Sudo::Nopasswd {
                "NOPASSWD: "
            } else {
                ""
            };
            write(
                &nd.join("sudoers"),
                &format!(
                    "Defaults\tenv_reset\nDefaults\tsecure_path=\"{path}\"\nroot\tALL=(ALL:ALL) ALL\n{SUDO_USER}\tALL=(ALL:ALL) {nopasswd}ALL\n"
                ),
                0o440,
            )?;
            let server = Server {
                node: node.clone(),
                port,
                dir: nd,
                host_pub,
                path,
                child: None,
            };
            server.write_config(&ssh)?;
            servers.push(server);
        }
        let mut me = Self {
            dir,
            ssh,
            sudo,
            servers,
        };
        let _ = std::fs::remove_dir_all(me.dir.join(CONTROL));
        // Spawn every sshd, then wait for each: they start side by side. A port taken
        // between its choice and sshd's bind is chosen again.
        let ssh = me.ssh.clone();
        let mut result = me.servers.iter_mut().try_for_each(|s| s.spawn(&ssh));
        if result.is_ok() {
            result = me.servers.iter_mut().try_for_each(|s| {
                let mut tries = 0;
                loop {
                    match s.wait_listening() {
                        Err(_) if tries < 3 && s.port_taken() => {
                            tries += 1;
                            s.port = free_port(&s.node.ip)?;
                            s.write_config(&ssh)?;
                            s.spawn(&ssh)?;
                        }
                        other => return other,
                    }
                }
            });
        }
        if let Err(e) = result {
            me.stop_all();
            return Err(e);
        }
        let known: String = me
            .servers
            .iter()
            .map(|s| {
                let mut f = s.host_pub.split_whitespace();
                let (kind, key) = (f.next().unwrap_or_default(), f.next().unwrap_or_default());
                format!("[{}]:{} {kind} {key}\n", s.node.ip, s.port)
            })
            .collect();
        write(&me.ssh.join("known_hosts"), &known, 0o644)?;
        me.save()?;
        Ok(me)
    }

    /// Where every node is.
    fn info(&self) -> SshInfo {
        SshInfo {
            pid: std::process::id(),
            nodes: self
                .servers
                .iter()
                .map(|s| SshNode {
                    name: s.node.name.clone(),
                    host: s.node.ip.clone(),
                    port: s.port,
                    user: "root".into(),
                    identity_file: self.ssh.join("id_ed25519"),
                    known_hosts_file: self.ssh.join("known_hosts"),
                    pid: s.pid(),
                    sudo_user: SUDO_USER.into(),
                    sudo: self.sudo,
                })
                .collect(),
        }
    }

    fn save(&self) -> Result<(), SshdError> {
        let path = SshInfo::path(&self.dir);
        let json = serde_json::to_string_pretty(&self.info()).expect("ssh info serialises");
        write(&path, &json, 0o644)
    }

    /// Act on `trustform sandbox sshd` requests.
    fn poll(&mut self) {
        let control = self.dir.join(CONTROL);
        let Ok(rd) = std::fs::read_dir(&control) else {
            return;
        };
        let mut changed = false;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(node) = name.strip_suffix(".request") else {
                continue;
            };
            let what = std::fs::read_to_string(e.path()).unwrap_or_default();
            let outcome = match self.servers.iter_mut().find(|s| s.node.name == node) {
                None => format!("error: no node {node}"),
                Some(s) => match what.trim() {
                    "stop" => {
                        s.stop();
                        "ok".into()
                    }
                    "start" => match s.start(&self.ssh) {
                        Ok(()) => "ok".into(),
                        Err(err) => format!("error: {err}"),
                    },
                    other => format!("error: unknown request {other:?}"),
                },
            };
            changed = true;
            let _ = self.save();
            let _ = write(&control.join(format!("{node}.done")), &outcome, 0o644);
            let _ = std::fs::remove_file(e.path());
        }
        if changed {
            let _ = self.save();
        }
    }

    fn stop_all(&mut self) {
        for s in &mut self.servers {
            s.stop();
        }
    }

    /// Stop every sshd and remove `DIR/run/ssh.json` (if it is still ours).
    fn shutdown(mut self) {
        self.stop_all();
        let ours = SshInfo::load(&self.dir).is_ok_and(|i| i.pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(SshInfo::path(&self.dir));
        }
        let _ = std::fs::remove_dir_all(self.dir.join(CONTROL));
    }
}

impl Drop for Sshds {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// The thread that serves `trustform sandbox sshd` requests; it stops every sshd when
/// shut down or dropped.
#[derive(Debug)]
pub struct Watcher {
    /// Where the nodes were at start.
    pub info: SshInfo,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Stop every sshd and wait until they are gone.
    pub fn shutdown(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Ask the `sandbox up --ssh` of `dir` to stop (`start: false`) or start one node's
/// sshd, and wait until it has (at most `timeout`).
pub fn request(
    dir: &Path,
    node: &str,
    start: bool,
    timeout: Duration,
) -> Result<SshNode, SshdError> {
    let info = SshInfo::load(dir).map_err(|e| {
        SshdError::Control(format!(
            "no `sandbox up --ssh` runs for {} (cannot read {}: {e})",
            dir.display(),
            SshInfo::path(dir).display()
        ))
    })?;
    if info.node(node).is_none() {
        return Err(SshdError::Control(format!(
            "the sandbox has no node {node}"
        )));
    }
    let control = dir.join(CONTROL);
    std::fs::create_dir_all(&control).map_err(io(&control))?;
    let done = control.join(format!("{node}.done"));
    let _ = std::fs::remove_file(&done);
    let what = if start { "start" } else { "stop" };
    write(&control.join(format!("{node}.request")), what, 0o644)?;
    let until = Instant::now() + timeout;
    loop {
        if let Ok(outcome) = std::fs::read_to_string(&done) {
            let _ = std::fs::remove_file(&done);
            if let Some(err) = outcome.strip_prefix("error: ") {
                return Err(SshdError::Control(err.to_string()));
            }
            let info = SshInfo::load(dir).map_err(io(&SshInfo::path(dir)))?;
            return info
                .node(node)
                .cloned()
                .ok_or_else(|| SshdError::Control(format!("the sandbox has no node {node}")));
        }
        if Instant::now() > until {
            return Err(SshdError::Control(format!(
                "the `sandbox up --ssh` of {} did not {what} {node}'s sshd within {}s (is it still running?)",
                dir.display(),
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
