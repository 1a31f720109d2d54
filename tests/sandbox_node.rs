//! The sandbox's nodes behave like machines: `systemctl`, `crictl` and `journalctl`
//! through `trustform sandbox node-exec` (what the sshd's shims run), through the
//! sandbox's own transport, and over a real OpenSSH server (`sandbox up --ssh`).

use crate::common;

use common::Workdir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trustform::sandbox::runtime;
use trustform::sandbox::sshd::{SshInfo, SshNode};

/// A sandbox made by the CLI, ECDSA (fast), with this restart time.
fn sandbox(cps: usize, workers: usize, restart_time: &str) -> Workdir {
    common::sandbox_restarting(cps, workers, restart_time)
}

/// `trustform sandbox node-exec cluster NODE -- ARGV…`: (code, stdout, stderr).
fn node(w: &Workdir, name: &str, argv: &[&str]) -> (i32, String, String) {
    let mut args = vec!["sandbox", "node-exec", "cluster", name, "--"];
    args.extend_from_slice(argv);
    w.run(&args)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Poll `f` until it gives a value, at most `bound`.
fn poll<T>(bound: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < bound, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `crictl pods --name RE -o json` items.
fn pods(w: &Workdir, node_name: &str, re: &str) -> Vec<Value> {
    let (code, out, err) = node(
        w,
        node_name,
        &["crictl", "pods", "--name", re, "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    json(&out)["items"].as_array().cloned().unwrap_or_default()
}

/// `crictl ps -a --name RE -o json` containers.
fn containers(w: &Workdir, node_name: &str, re: &str) -> Vec<Value> {
    let (code, out, err) = node(
        w,
        node_name,
        &["crictl", "ps", "-a", "--name", re, "-o", "json"],
    );
    assert_eq!(code, 0, "{err}");
    json(&out)["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn hash(pod: &Value) -> String {
    pod["annotations"]["kubernetes.io/config.hash"]
        .as_str()
        .expect("a config hash")
        .to_string()
}

fn manifest(w: &Workdir, node_name: &str, component: &str) -> PathBuf {
    w.node(node_name)
        .join(format!("etc/kubernetes/manifests/{component}.yaml"))
}

/// Set trustform's restart annotation in a manifest, as a restart step does.
fn touch(path: &Path, value: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let next = trustform::manifest::set_annotation(&text, trustform::manifest::RESTARTED_AT, value)
        .expect("a manifest with metadata");
    std::fs::write(path, next).unwrap();
}

fn nanos(v: &Value) -> i128 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .expect("nanoseconds")
}

#[test]
fn a_changed_manifest_restarts_its_pod_after_the_restart_time() {
    let w = sandbox(1, 0, "300ms");
    let before = pods(&w, "cp-1", "^kube-scheduler-cp-1$");
    assert_eq!(before.len(), 1, "{before:?}");
    let old = &before[0];
    assert_eq!(old["state"], "SANDBOX_READY");
    assert_eq!(old["metadata"]["namespace"], "kube-system");
    assert_eq!(old["labels"]["component"], "kube-scheduler");
    assert_eq!(old["labels"]["tier"], "control-plane");
    assert_eq!(old["annotations"]["kubernetes.io/config.source"], "file");
    assert_eq!(old["metadata"]["uid"], hash(old).as_str());
    let old_id = old["id"].as_str().unwrap().to_string();

    let path = manifest(&w, "cp-1", "kube-scheduler");
    touch(&path, "2026-01-01T00:00:00Z");
    // At once: the old pod is killed.
    let now = pods(&w, "cp-1", "kube-scheduler");
    let killed = now.iter().find(|p| p["id"] == old_id.as_str()).unwrap();
    assert_eq!(killed["state"], "SANDBOX_NOTREADY");
    let exited = containers(&w, "cp-1", "kube-scheduler");
    assert!(
        exited
            .iter()
            .filter(|c| c["podSandboxId"] == old_id.as_str())
            .all(|c| c["state"] == "CONTAINER_EXITED")
    );

    // Then a new pod, made from the new manifest, ready with its container running.
    let new = poll(Duration::from_secs(20), "a new ready pod", || {
        let (_, out, _) = node(
            &w,
            "cp-1",
            &[
                "crictl",
                "pods",
                "--name",
                "kube-scheduler",
                "--state",
                "ready",
                "-o",
                "json",
            ],
        );
        json(&out)["items"]
            .as_array()
            .and_then(|a| a.first().cloned())
            .filter(|p| hash(p) != hash(old))
    });
    assert_eq!(
        new["annotations"][trustform::manifest::RESTARTED_AT],
        "2026-01-01T00:00:00Z",
        "the pod carries the manifest's annotations"
    );
    let seen = trustform::sandbox::node::logs::parse_rfc3339(
        new["annotations"]["kubernetes.io/config.seen"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let down = nanos(&new["createdAt"]) - i128::from(seen);
    assert!(
        down >= 300_000_000,
        "down for the restart time, not {down} ns"
    );
    let running = containers(&w, "cp-1", "kube-scheduler");
    let current = running
        .iter()
        .find(|c| c["podSandboxId"] == new["id"])
        .expect("the new pod's container");
    assert_eq!(current["state"], "CONTAINER_RUNNING");
    assert_eq!(
        current["annotations"]["io.kubernetes.container.restartCount"],
        "0"
    );

    // The process read its files when the new pod started.
    let held = runtime::held(&w.node("cp-1"), "kube-scheduler").unwrap();
    assert_eq!(
        held.file("/etc/kubernetes/manifests/kube-scheduler.yaml")
            .unwrap(),
        std::fs::read(&path).unwrap()
    );
    // The log says so, one RFC 3339 line per event.
    let log = std::fs::read_to_string(
        w.node("cp-1")
            .join("run/trustform-sandbox/logs/kube-scheduler.log"),
    )
    .unwrap();
    assert!(log.lines().count() >= 3, "{log}");
    for l in log.lines() {
        let t = l.split(' ').next().unwrap();
        assert!(
            trustform::sandbox::node::logs::parse_rfc3339(t).is_some(),
            "{l}"
        );
    }
}

#[test]
fn systemctl_restart_kubelet_goes_down_and_comes_back() {
    let w = sandbox(1, 1, "300ms");
    let enter = |w: &Workdir| -> u64 {
        let (code, out, err) = node(
            w,
            "w-1",
            &[
                "systemctl",
                "show",
                "kubelet",
                "--property=ActiveEnterTimestampMonotonic",
                "--value",
            ],
        );
        assert_eq!(code, 0, "{err}");
        out.trim().parse().expect("microseconds")
    };
    let (code, out, _) = node(&w, "w-1", &["systemctl", "is-active", "kubelet"]);
    assert_eq!((code, out.as_str()), (0, "active\n"));
    let first = enter(&w);
    assert!(first > 0);
    // Two seconds of downtime for this restart (the environment overrides sandbox.json).
    let out = w
        .cmd()
        .args([
            "sandbox",
            "node-exec",
            "cluster",
            "w-1",
            "--",
            "systemctl",
            "restart",
            "kubelet",
        ])
        .env("TRUSTFORM_SANDBOX_RESTART_TIME", "2s")
        .output()
        .unwrap();
    assert!(out.status.success());
    let (code, out, _) = node(&w, "w-1", &["systemctl", "is-active", "kubelet"]);
    assert_eq!((code, out.trim()), (3, "activating"));
    let (_, out, _) = node(
        &w,
        "w-1",
        &["systemctl", "show", "kubelet", "-p", "MainPID", "--value"],
    );
    assert_eq!(out.trim(), "0");
    poll(Duration::from_secs(20), "the kubelet active again", || {
        let (code, out, _) = node(&w, "w-1", &["systemctl", "is-active", "kubelet"]);
        (code == 0 && out == "active\n").then_some(())
    });
    let second = enter(&w);
    assert!(second >= first + 2_000_000, "{first} → {second}");
    let (code, out, _) = node(&w, "w-1", &["systemctl", "status", "kubelet"]);
    assert_eq!(code, 0);
    assert!(out.contains("Active: active (running)"), "{out}");
    let (code, out, _) = node(
        &w,
        "w-1",
        &["journalctl", "-u", "kubelet", "--no-pager", "-o", "cat"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("Stopped kubelet.service"), "{out}");
    assert!(out.contains("\"Started kubelet\""), "{out}");
    // A machine without the tool.
    let (code, _, err) = node(&w, "w-1", &["kubeadm", "version"]);
    assert_eq!((code, err.as_str()), (127, "sh: 1: kubeadm: not found\n"));
    let (code, _, err) = node(&w, "w-1", &["systemctl", "restart", "containerd"]);
    assert_eq!(code, 5, "{err}");
}

#[test]
fn files_that_do_not_fit_crash_loop_until_fixed() {
    let w = sandbox(1, 1, "300ms");
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    let good = std::fs::read(pki.join("apiserver.key")).unwrap();
    std::fs::copy(
        pki.join("apiserver-etcd-client.key"),
        pki.join("apiserver.key"),
    )
    .unwrap();
    touch(&manifest(&w, "cp-1", "kube-apiserver"), "crash");
    let crashing = poll(
        Duration::from_secs(30),
        "restarts of a crashing container",
        || {
            let c = containers(&w, "cp-1", "kube-apiserver");
            let newest = c.first()?.clone();
            let n: u32 = newest["annotations"]["io.kubernetes.container.restartCount"]
                .as_str()?
                .parse()
                .ok()?;
            (n >= 2 && newest["state"] == "CONTAINER_EXITED").then_some(newest)
        },
    );
    assert!(crashing["metadata"]["attempt"].as_u64().unwrap() >= 2);
    let id = crashing["id"].as_str().unwrap();
    let (code, out, err) = node(&w, "cp-1", &["crictl", "logs", id]);
    assert_eq!(code, 0);
    assert!(out.is_empty(), "klog writes to stderr: {out}");
    assert!(
        err.contains("tls: private key does not match public key"),
        "{err}"
    );
    // No ready container: nothing serves.
    let (_, out, _) = node(
        &w,
        "cp-1",
        &[
            "crictl",
            "ps",
            "--name",
            "kube-apiserver",
            "--state",
            "running",
            "-q",
        ],
    );
    assert_eq!(out, "");
    // Fixed, it comes back at its next attempt.
    std::fs::write(pki.join("apiserver.key"), &good).unwrap();
    poll(
        Duration::from_secs(60),
        "the API server running again",
        || {
            let (_, out, _) = node(
                &w,
                "cp-1",
                &[
                    "crictl",
                    "ps",
                    "--name",
                    "kube-apiserver",
                    "--state",
                    "running",
                    "-o",
                    "json",
                ],
            );
            json(&out)["containers"]
                .as_array()
                .filter(|a| !a.is_empty())
                .map(drop)
        },
    );
    let held = runtime::held(&w.node("cp-1"), "kube-apiserver").unwrap();
    assert_eq!(
        held.file("/etc/kubernetes/pki/apiserver.key").unwrap(),
        good
    );

    // The kubelet: a client certificate that is not one.
    let kpki = w.node("w-1").join("var/lib/kubelet/pki");
    let client = std::fs::read(kpki.join("kubelet-client-current.pem")).unwrap();
    std::fs::write(kpki.join("kubelet-client-current.pem"), "garbage\n").unwrap();
    assert_eq!(node(&w, "w-1", &["systemctl", "restart", "kubelet"]).0, 0);
    poll(
        Duration::from_secs(30),
        "the kubelet restarting by itself",
        || {
            let (_, out, _) = node(
                &w,
                "w-1",
                &["systemctl", "show", "kubelet", "-p", "NRestarts", "--value"],
            );
            (out.trim().parse::<u32>().ok()? >= 1).then_some(())
        },
    );
    let (code, out, _) = node(&w, "w-1", &["systemctl", "is-active", "kubelet"]);
    assert_eq!((code, out.trim()), (3, "activating"));
    let (_, journal, _) = node(
        &w,
        "w-1",
        &["journalctl", "-u", "kubelet", "--since", "-1min"],
    );
    assert!(journal.contains("failed to run Kubelet"), "{journal}");
    assert!(journal.contains("status=1/FAILURE"), "{journal}");
    std::fs::write(kpki.join("kubelet-client-current.pem"), &client).unwrap();
    poll(Duration::from_secs(30), "the kubelet active again", || {
        let (code, _, _) = node(&w, "w-1", &["systemctl", "is-active", "kubelet"]);
        (code == 0).then_some(())
    });
}

#[test]
fn the_sandbox_transport_runs_the_machine_and_reads_files() {
    use trustform::transport::Transport;
    let w = sandbox(1, 0, "0");
    trustform::sandbox::transport::install();
    let root = w.node("cp-1");
    let t: std::sync::Arc<dyn Transport> = trustform::transport::local("cp-1", &root);
    assert!(t.describe().starts_with("sandbox "), "{}", t.describe());
    let ca = t
        .read(
            "/etc/kubernetes/pki/ca.crt",
            trustform::input::Kind::NodeFile,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        ca,
        std::fs::read(root.join("etc/kubernetes/pki/ca.crt")).unwrap()
    );
    let out = t
        .run(
            &["crictl", "pods", "--name", "kube-apiserver", "-o", "json"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert!(out.success(), "{out:?}");
    let pods = json(&out.text());
    assert_eq!(pods["items"][0]["metadata"]["name"], "kube-apiserver-cp-1");
    let out = t
        .run(
            &["systemctl", "is-active", "kubelet"],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(out.text(), "active\n");
    let out = t
        .run(&["cat", "/etc/hostname"], Duration::from_secs(5))
        .unwrap();
    assert_eq!(out.code, Some(127));
    // A plain directory is not a sandbox node: the usual local transport.
    let plain = tempfile::tempdir().unwrap();
    assert!(
        trustform::transport::local("x", plain.path())
            .describe()
            .starts_with("local "),
    );
}

// ---- sandbox up --ssh ----

/// `trustform sandbox up cluster --ssh` in the background; SIGTERM on drop.
struct UpSsh {
    child: std::process::Child,
    info: SshInfo,
    dir: PathBuf,
}

impl UpSsh {
    fn start(w: &Workdir, sudo: &str) -> UpSsh {
        let child = Command::new(assert_cmd::cargo::cargo_bin!("trustform"))
            .current_dir(w.path())
            .args([
                "sandbox",
                "up",
                "cluster",
                "--port",
                "0",
                "--ssh",
                "--ssh-sudo",
                sudo,
            ])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sandbox up starts");
        let pid = child.id();
        let mut up = UpSsh {
            child,
            info: SshInfo::default(),
            dir: w.cluster(),
        };
        up.info = poll(Duration::from_secs(60), "DIR/run/ssh.json", || {
            SshInfo::load(&up.dir).ok().filter(|i| i.pid == pid)
        });
        up
    }

    fn node(&self, name: &str) -> SshNode {
        self.info.node(name).expect("the node").clone()
    }

    /// SIGTERM, then wait.
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for UpSsh {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real ssh client, strict host keys, no agent or config: (code, stdout, stderr).
fn ssh(n: &SshNode, user: &str, known_hosts: &Path, script: &str) -> (i32, String, String) {
    let out = Command::new("ssh")
        .arg("-F")
        .arg("/dev/null")
        .arg("-i")
        .arg(&n.identity_file)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=10",
            "-p",
            &n.port.to_string(),
        ])
        .arg(format!("{user}@{}", n.host))
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Processes running an sshd of this sandbox.
fn our_sshds(dir: &Path) -> Vec<u32> {
    let needle = dir.join("ssh").to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = state
                .rfind(')')
                .is_some_and(|i| state[i + 1..].trim_start().starts_with('Z'));
            !zombie && String::from_utf8_lossy(&cmd).contains(&needle)
        })
        .collect()
}

#[test]
fn every_node_has_a_real_sshd_that_sees_its_files() {
    let w = sandbox(2, 1, "0");
    let mut up = UpSsh::start(&w, "password");
    let known = up.info.nodes[0].known_hosts_file.clone();
    assert_eq!(up.info.nodes.len(), 3);
    for n in &up.info.nodes {
        assert_eq!(n.user, "root");
        assert!(n.pid.is_some());
        assert!(n.host.starts_with("127."), "{}", n.host);
        let (code, out, err) = ssh(n, "root", &known, "cat /etc/kubernetes/pki/ca.crt");
        assert_eq!(code, 0, "{}: {err}", n.name);
        assert_eq!(
            out.as_bytes(),
            std::fs::read(w.node(&n.name).join("etc/kubernetes/pki/ca.crt")).unwrap(),
            "{} serves its own CA file",
            n.name
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let key = &up.info.nodes[0].identity_file;
    assert_eq!(
        std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The node's tools, on the PATH of a session.
    let cp1 = up.node("cp-1");
    let (code, out, err) = ssh(&cp1, "root", &known, "crictl ps -o json");
    assert_eq!(code, 0, "{err}");
    let names: Vec<String> = json(&out)["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"kube-apiserver".to_string()), "{names:?}");
    let (code, out, _) = ssh(&cp1, "root", &known, "systemctl is-active kubelet");
    assert_eq!((code, out.as_str()), (0, "active\n"));

    // A write lands in the node's directory, and only there.
    let (code, _, err) = ssh(
        &cp1,
        "root",
        &known,
        "printf written > /etc/kubernetes/trustform-ssh-probe && ls /var/lib/kubelet/config.yaml /root/.kube/config",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(w.node("cp-1").join("etc/kubernetes/trustform-ssh-probe")).unwrap(),
        "written"
    );
    assert!(
        !w.node("cp-2")
            .join("etc/kubernetes/trustform-ssh-probe")
            .exists()
    );
    assert!(!Path::new("/etc/kubernetes/trustform-ssh-probe").exists());

    // An unknown host key is refused.
    let empty = w.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let (code, _, err) = ssh(&cp1, "root", &empty, "true");
    assert_eq!(code, 255);
    assert!(err.contains("Host key verification failed"), "{err}");

    // The login that is not root: its sudo wants a password.
    let (code, out, _) = ssh(&cp1, "trustform", &known, "id -u");
    assert_eq!(code, 0);
    assert_ne!(out.trim(), "0");
    let (code, _, err) = ssh(&cp1, "trustform", &known, "sudo -n true");
    assert_eq!(code, 1);
    assert!(err.contains("a password is required"), "{err}");

    // Stopped, ssh fails; started again, it works on the same port.
    let started = Instant::now();
    w.ok(&["sandbox", "sshd", "cluster", "cp-1", "--stop"]);
    let stopped = SshInfo::load(&w.cluster()).unwrap();
    assert_eq!(stopped.node("cp-1").unwrap().pid, None);
    let (code, _, _) = ssh(&cp1, "root", &known, "true");
    assert_eq!(code, 255);
    let (code, _, err) = ssh(&up.node("cp-2"), "root", &known, "true");
    assert_eq!(code, 0, "the other nodes stay up: {err}");
    w.ok(&["sandbox", "sshd", "cluster", "cp-1", "--start"]);
    eprintln!("sshd stop and start: {:?}", started.elapsed());
    let again = SshInfo::load(&w.cluster()).unwrap();
    assert_eq!(again.node("cp-1").unwrap().port, cp1.port);
    assert!(again.node("cp-1").unwrap().pid.is_some());
    let (code, out, err) = ssh(
        &cp1,
        "root",
        &known,
        "cat /etc/kubernetes/trustform-ssh-probe",
    );
    assert_eq!((code, out.as_str()), (0, "written"), "{err}");

    // SIGTERM stops every sshd.
    assert!(!our_sshds(&w.cluster()).is_empty());
    up.stop();
    poll(Duration::from_secs(10), "every sshd gone", || {
        our_sshds(&w.cluster()).is_empty().then_some(())
    });
    assert!(!SshInfo::path(&w.cluster()).exists());
}

#[test]
fn a_nopasswd_sudo_login_reaches_the_machine() {
    let w = sandbox(1, 0, "0");
    let up = UpSsh::start(&w, "nopasswd");
    let n = up.node("cp-1");
    let (code, out, err) = ssh(
        &n,
        "trustform",
        &n.known_hosts_file,
        "sudo -n crictl pods --name kube-apiserver -q && sudo -n cat /etc/kubernetes/pki/ca.key >/dev/null && echo ok",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("ok\n"), "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn failed_handshakes_are_logged_by_the_server_process() {
    use trustform::sandbox::listeners::Endpoints;
    let w = sandbox(1, 1, "0");
    let _up = common::Up::start(&w, None);
    let endpoints = Endpoints::load(&w.cluster()).unwrap();
    // A stranger's CA and client certificate.
    let dir = w.path();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-subj", "/CN=stranger", "-days", "1", "-keyout"])
        .arg(dir.join("stranger.key"))
        .arg("-out")
        .arg(dir.join("stranger.crt"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let handshake = |addr: &str, ca: &Path, client: bool| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            addr,
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if client {
            cmd.arg("-cert")
                .arg(dir.join("stranger.crt"))
                .arg("-key")
                .arg(dir.join("stranger.key"));
        }
        cmd.status().unwrap()
    };
    // The client refuses the API server's certificate: the server hears of it.
    let api = endpoints.process("cp-1", "kube-apiserver").unwrap();
    assert!(!handshake(api, &dir.join("stranger.crt"), false).success());
    let log = w
        .node("cp-1")
        .join("run/trustform-sandbox/logs/kube-apiserver.log");
    let line = poll(Duration::from_secs(10), "the API server's log line", || {
        std::fs::read_to_string(&log)
            .ok()?
            .lines()
            .find(|l| l.contains("http: TLS handshake error from 127.0.0.1:"))
            .map(str::to_string)
    });
    assert!(line.contains("remote error: tls: "), "{line}");
    // The kubelet refuses a stranger's client certificate, in its journal. The client
    // trusts the kubelet's self-signed kubelet.crt (its own CA is in it), so the refusal
    // is the kubelet's.
    let kubelet = endpoints.process("w-1", "kubelet").unwrap();
    let _ = handshake(
        kubelet,
        &w.node("w-1").join("var/lib/kubelet/pki/kubelet.crt"),
        true,
    );
    let journal = poll(
        Duration::from_secs(10),
        "the kubelet's journal line",
        || {
            let (_, out, _) = node(&w, "w-1", &["journalctl", "-u", "kubelet", "-o", "cat"]);
            out.lines()
                .find(|l| l.contains("TLS handshake error"))
                .map(str::to_string)
        },
    );
    assert!(
        journal.contains("x509: certificate signed by unknown authority"),
        "{journal}"
    );
}
