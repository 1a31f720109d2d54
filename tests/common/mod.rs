//! Shared helpers for the integration tests: sandboxes, the binary, redactions.
#![allow(dead_code)]

use assert_cmd::Command;
use std::path::{Path, PathBuf};
use trustform::pki::KeyAlgorithm;
use trustform::sandbox::{self, Spec};

/// A working directory with a sandbox in `cluster/` and (optionally) trustform.yaml.
pub struct Workdir {
    pub tmp: tempfile::TempDir,
}

impl Workdir {
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
    pub fn cluster(&self) -> PathBuf {
        self.tmp.path().join("cluster")
    }
    pub fn config(&self) -> PathBuf {
        self.tmp.path().join("trustform.yaml")
    }
    pub fn node(&self, name: &str) -> PathBuf {
        self.cluster().join("nodes").join(name)
    }
    /// A sandbox node's address (each sandbox has its own block of loopback addresses).
    #[allow(dead_code)]
    pub fn ip(&self, name: &str) -> String {
        trustform::sandbox::Sandbox::load(&self.cluster())
            .expect("sandbox.json")
            .nodes
            .into_iter()
            .find(|n| n.name == name)
            .expect("a node of the sandbox")
            .ip
    }
    /// `trustform` run in this directory, colours off; a restarted component is done at
    /// its first healthy look (the tests' sandboxes restart at once unless a test says
    /// otherwise).
    pub fn cmd(&self) -> Command {
        let mut c = Command::cargo_bin("trustform").expect("binary built");
        c.current_dir(self.path())
            .env("NO_COLOR", "1")
            .env("TRUSTFORM_RESTART_SETTLE", "0s")
            .env_remove("TRUSTFORM_SANDBOX_RESTART_TIME")
            .env_remove("TRUSTFORM_CONFIG");
        c
    }
    /// Run and return (status code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd().args(args).output().expect("runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    /// Run, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "trustform {args:?} failed:\n{err}");
        out
    }
}

/// A fresh sandbox (ECDSA unless `rsa`, for speed) in a temp dir, its kubelets serving
/// as kubeadm leaves them (self-signed `kubelet.crt`, no
/// `--kubelet-certificate-authority`).
pub fn sandbox(cps: usize, workers: usize, rsa: bool) -> Workdir {
    sandbox_serving(cps, workers, rsa, sandbox::KubeletServing::SelfSigned)
}

/// [`sandbox`] with the kubelets serving as `serving` says (`Ca`: `kubelet-server-current.pem`
/// from the cluster CA, verified with `--kubelet-certificate-authority`).
pub fn sandbox_serving(
    cps: usize,
    workers: usize,
    rsa: bool,
    serving: sandbox::KubeletServing,
) -> Workdir {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = Spec {
        control_planes: cps,
        workers,
        algorithm: if rsa {
            KeyAlgorithm::Rsa2048
        } else {
            KeyAlgorithm::EcdsaP256
        },
        seed: Default::default(),
        kubelet_serving: serving,
    };
    let dir = tmp.path().join("cluster");
    let mut sb = sandbox::create(&dir, &spec).expect("sandbox");
    // Processes come back at once: the tests that time restarts make their own.
    sb.restart_time = sandbox::node::RestartTime::parse("0").expect("0 parses");
    sb.save(&dir).expect("sandbox.json");
    Workdir { tmp }
}

/// A sandbox made by the CLI (ECDSA, fast) whose processes take `restart_time` to come
/// back.
pub fn sandbox_restarting(cps: usize, workers: usize, restart_time: &str) -> Workdir {
    sandbox_with(cps, workers, restart_time, &[])
}

/// [`sandbox_restarting`] with more `sandbox create` arguments (seeds).
pub fn sandbox_with(cps: usize, workers: usize, restart_time: &str, extra: &[&str]) -> Workdir {
    let w = Workdir {
        tmp: tempfile::tempdir().expect("tempdir"),
    };
    let (cps, workers) = (cps.to_string(), workers.to_string());
    let mut args = vec![
        "sandbox",
        "create",
        "cluster",
        "--control-planes",
        &cps,
        "--workers",
        &workers,
        "--key-algorithm",
        "ecdsa-p256",
        "--restart-time",
        restart_time,
    ];
    args.extend_from_slice(extra);
    w.ok(&args);
    w
}

/// Make trustform.yaml issue ECDSA keys without keeping old ones (fast rotations).
pub fn fast_issuance(w: &Workdir) {
    let mut text = std::fs::read_to_string(w.config()).expect("trustform.yaml");
    text.push_str("issuance:\n  keyAlgorithm: ecdsa-p256\n  keepKeys: false\n");
    std::fs::write(w.config(), text).expect("trustform.yaml");
}

/// A sandbox with trustform.yaml written by `init`.
pub fn initialised(cps: usize, workers: usize) -> Workdir {
    let w = sandbox(cps, workers, false);
    w.ok(&["init", "--sandbox", "cluster"]);
    w
}

/// insta filters that hide what changes from run to run.
pub fn redactions() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"sha256:[0-9a-f]{64}", "sha256:[fingerprint]"),
        // A sandbox node's address: each sandbox has its own random loopback block.
        (r"\b127\.[1-9]\d{0,2}\.\d{1,3}\.\d{1,3}\b", "[node-ip]"),
        (r"sha256:[0-9a-f]{12}…", "sha256:[fp]…"),
        (r#"": "[0-9a-f]{16}""#, r#"": "[digest]""#),
        (r"\d{4}-\d{2}-\d{2}", "[date]"),
        (r"trustform \d+\.\d+\.\d+", "trustform [version]"),
        (
            r#""tool_version": "[^"]+""#,
            r#""tool_version": "[version]""#,
        ),
    ]
}

/// Every file under a directory, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Hand-edit a plan the way a careless reviewer might: the API servers get their
/// new-issuer certificates (documented step 8.3 and its restarts) *before* the kubelets
/// learn to trust the new CA (step 8.2 and its restarts). The chain becomes
/// extension-servers → apiserver-certs → component-kubeconfigs → restart-apiserver
/// (rolling) → kubelet-trust → restart-kubelet (rolling) → restart-kcm-certs. The plan is
/// resealed (a valid checksum), as a determined editor would.
pub fn swap_apiserver_before_kubelets(w: &Workdir, from: &str, to: &str) {
    let mut plan: trustform::plan::Plan =
        serde_json::from_slice(&std::fs::read(w.path().join(from)).expect("a saved plan"))
            .expect("a plan");
    swap_in(&mut plan);
    std::fs::write(w.path().join(to), serde_json::to_vec_pretty(&plan).unwrap())
        .expect("writes the edited plan");
}

fn swap_in(plan: &mut trustform::plan::Plan) {
    let ids = |t: &str| -> Vec<String> {
        plan.steps
            .iter()
            .filter(|s| s.procedure == "kubernetes-ca" && s.template == t)
            .map(|s| s.id.clone())
            .collect()
    };
    let kubelet_trust = ids("kubelet-trust");
    let restart_apiserver = ids("restart-apiserver");
    let restart_kubelet = ids("restart-kubelet");
    let apiserver_certs = ids("apiserver-certs");
    assert!(
        !kubelet_trust.is_empty() && !restart_apiserver.is_empty() && !apiserver_certs.is_empty(),
        "the plan has the steps to swap"
    );
    let before_kubelets = plan
        .steps
        .iter()
        .find(|s| s.id == kubelet_trust[0])
        .expect("kubelet-trust")
        .depends_on
        .clone();
    let last_apiserver = restart_apiserver.last().expect("restarts").clone();
    let last_kubelet = restart_kubelet.last().expect("restarts").clone();
    for s in &mut plan.steps {
        if apiserver_certs.contains(&s.id) {
            s.depends_on = before_kubelets.clone();
        } else if kubelet_trust.contains(&s.id) {
            s.depends_on = vec![last_apiserver.clone()];
        } else if !restart_apiserver.contains(&s.id) && s.depends_on.contains(&last_apiserver) {
            for d in &mut s.depends_on {
                if *d == last_apiserver {
                    *d = last_kubelet.clone();
                }
            }
        }
    }
    // Keep the file in a topological order, as trustform writes it.
    let order = trustform::plan::rehearse::order(plan);
    let steps = std::mem::take(&mut plan.steps);
    let mut slots: Vec<Option<trustform::plan::Step>> = steps.into_iter().map(Some).collect();
    plan.steps = order
        .into_iter()
        .map(|i| slots[i].take().expect("once"))
        .collect();
    plan.checksum = String::new();
    plan.checksum = plan.compute_checksum();
}

impl Workdir {
    /// cp-1's admin.conf.
    pub fn admin_conf(&self) -> PathBuf {
        self.node("cp-1").join("etc/kubernetes/admin.conf")
    }
}

/// A 2 + 1 sandbox (ECDSA) in `cluster/`, seeded with API objects by `seed` (the
/// `sandbox create` flags: `--namespaces 2`, `--workloads 4`, …).
pub fn seeded(seed: &[&str]) -> Workdir {
    let w = Workdir {
        tmp: tempfile::tempdir().expect("tempdir"),
    };
    let mut args = vec![
        "sandbox",
        "create",
        "cluster",
        "--control-planes",
        "2",
        "--workers",
        "1",
        "--key-algorithm",
        "ecdsa-p256",
        "--restart-time",
        "0",
    ];
    args.extend_from_slice(seed);
    w.ok(&args);
    w
}

/// The machine's kubectl with a kubeconfig: (success, stdout, stderr).
pub fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `trustform sandbox up cluster` in the background, stopped on drop. `start` returns
/// once this process serves the API (kubectl's `/healthz` through admin.conf answers) and
/// its TLS endpoints (`run/endpoints.json` names it).
pub struct Up {
    child: std::process::Child,
}

impl Up {
    /// Start it, with `TRUSTFORM_SANDBOX_FAULTS` set to `faults` if given.
    pub fn start(w: &Workdir, faults: Option<&str>) -> Up {
        Self::start_with(w, &[], faults)
    }

    /// Start it with more arguments (`--ssh`: also wait until every node's sshd runs).
    pub fn start_with(w: &Workdir, extra: &[&str], faults: Option<&str>) -> Up {
        Self::start_env(w, extra, faults, &[])
    }

    /// Start it with more arguments and environment variables.
    pub fn start_env(
        w: &Workdir,
        extra: &[&str],
        faults: Option<&str>,
        env: &[(&str, &str)],
    ) -> Up {
        use std::process::Stdio;
        use std::time::{Duration, Instant};
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin!("trustform"));
        cmd.envs(env.iter().copied());
        cmd.current_dir(w.path())
            .args(["sandbox", "up", "cluster"])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(f) = faults {
            cmd.env("TRUSTFORM_SANDBOX_FAULTS", f);
        }
        let up = Up {
            child: cmd.spawn().expect("sandbox up starts"),
        };
        let pid = up.child.id();
        let api = w.cluster().join("apiserver/endpoint.json");
        let start = Instant::now();
        loop {
            let serves_api = std::fs::read_to_string(&api)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["pid"].as_u64() == Some(u64::from(pid)));
            let listens =
                sandbox::listeners::Endpoints::load(&w.cluster()).is_ok_and(|e| e.pid == pid);
            let sshd = !extra.contains(&"--ssh")
                || std::fs::read(w.cluster().join("run/ssh.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| {
                        v["pid"].as_u64() == Some(u64::from(pid))
                            && v["nodes"]
                                .as_array()
                                .is_some_and(|n| n.iter().all(|n| n["pid"].is_u64()))
                    });
            if serves_api
                && listens
                && sshd
                && kubectl_with(&w.admin_conf(), &["get", "--raw", "/healthz"]).0
            {
                return up;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the sandbox API server and endpoints did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What is on disk below `dir`, to prove a command changed nothing: every regular file's
/// SHA-256 and mode, every symlink's target, every other entry's type. FIFOs and devices
/// are never opened.
pub fn tree_state(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    use sha2::Digest;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            // The simulated machines' own state and logs (the node's processes write
            // them, not trustform).
            if p.ends_with("run/trustform-sandbox") {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let t = m.file_type();
            let v = if t.is_dir() {
                stack.push(p.clone());
                "dir".to_string()
            } else if t.is_symlink() {
                format!("-> {}", std::fs::read_link(&p).unwrap().display())
            } else if t.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                format!(
                    "{:o} {}",
                    m.permissions().mode() & 0o7777,
                    hex::encode(sha2::Sha256::digest(&bytes))
                )
            } else if t.is_fifo() {
                "fifo".to_string()
            } else {
                "special".to_string()
            };
            out.insert(p, v);
        }
    }
    out
}

/// Assert two [`tree_state`]s are equal, naming what differs.
pub fn assert_unchanged(
    before: &std::collections::BTreeMap<PathBuf, String>,
    after: &std::collections::BTreeMap<PathBuf, String>,
) {
    let mut diffs = vec![];
    for (p, v) in before {
        match after.get(p) {
            None => diffs.push(format!("{} removed", p.display())),
            Some(w) if w != v => diffs.push(format!("{} changed", p.display())),
            _ => {}
        }
    }
    for p in after.keys().filter(|p| !before.contains_key(*p)) {
        diffs.push(format!("{} created", p.display()));
    }
    assert!(
        diffs.is_empty(),
        "nothing on disk may change:\n{}",
        diffs.join("\n")
    );
}

/// What the end state is, independent of the fresh keys: per node file, the CA members
/// of a bundle, or the issuer of each leaf.
pub fn shape(w: &Workdir) -> std::collections::BTreeMap<String, serde_json::Value> {
    let snap: serde_json::Value = serde_json::from_str(&w.ok(&["snapshot"])).unwrap();
    let mut out = std::collections::BTreeMap::new();
    for n in snap["nodes"].as_array().unwrap() {
        for (path, fact) in n["files"].as_object().unwrap() {
            let key = format!("{}:{path}", n["name"].as_str().unwrap());
            let v = if let Some(certs) = fact.get("certificates") {
                serde_json::Value::Array(
                    certs["certs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| {
                            if c["ca"].as_bool().unwrap() {
                                c["fingerprint"].clone()
                            } else {
                                serde_json::json!({ "leaf_of": c["issued_by"] })
                            }
                        })
                        .collect(),
                )
            } else if let Some(k) = fact.get("kubeconfig") {
                serde_json::json!({ "ca": k["ca"], "client_of": k["client"]["issued_by"] })
            } else {
                serde_json::Value::String("other".into())
            };
            out.insert(key, v);
        }
    }
    out
}

/// `cp -a from to`.
pub fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

/// What would betray private key material: every base64 body line (40 characters or
/// more) of every PEM private key in the files below `dirs`, also inside kubeconfigs'
/// `client-key-data` (decoded), and the first 40 characters of every `*-key-data` value.
pub fn key_needles(dirs: &[&Path]) -> std::collections::BTreeSet<String> {
    use base64::Engine;
    fn pem_bodies(text: &str, out: &mut std::collections::BTreeSet<String>) {
        let mut inside = false;
        for l in text.lines() {
            let l = l.trim();
            if l.starts_with("-----BEGIN") {
                inside = l.contains("PRIVATE KEY");
            } else if l.starts_with("-----END") {
                inside = false;
            } else if inside && l.len() >= 40 {
                out.insert(l.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    for dir in dirs {
        for p in files_under(dir) {
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if !m.file_type().is_file() || m.len() > 4 << 20 {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            pem_bodies(&text, &mut out);
            for l in text.lines() {
                if let Some((k, v)) = l.split_once(':')
                    && k.trim().ends_with("-key-data")
                {
                    let v = v.trim().trim_matches('"');
                    if v.len() >= 40 {
                        out.insert(v[..40].to_string());
                    }
                    if let Ok(pem) = base64::engine::general_purpose::STANDARD.decode(v) {
                        pem_bodies(&String::from_utf8_lossy(&pem), &mut out);
                    }
                }
            }
        }
    }
    out
}

/// Where `text` (named `what`) holds key material: a PEM private key header, or any of
/// the `needles`.
pub fn leaks(what: &str, text: &str, needles: &std::collections::BTreeSet<String>) -> Vec<String> {
    let mut out = vec![];
    if text.contains("PRIVATE KEY-----") {
        out.push(format!("{what}: a PEM private key header"));
    }
    for n in needles {
        if text.contains(n.as_str()) {
            out.push(format!("{what}: key material {}…", &n[..12]));
            break;
        }
    }
    out
}

/// `openssl verify -CAfile ca leaf`: `Err` with what openssl said.
#[allow(dead_code)]
pub fn openssl_verify(ca: &Path, leaf: &Path) -> Result<(), String> {
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(leaf)
        .output()
        .expect("openssl runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr))
    }
}

/// The line of `apply --format json` that carries the live prober's report.
#[allow(dead_code)]
pub fn probe_summary(out: &str) -> serde_json::Value {
    out.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("probe").is_some())
        .unwrap_or_else(|| panic!("a summary with the probe report:\n{out}"))
}

/// kubectl is the external witness: CI installs it (`.ci/run`); without it these tests
/// fail, naming why, instead of passing without having looked.
pub fn require_kubectl() {
    let found = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "kubectl is not on PATH: this test uses it as the external witness; install it \
         (`.ci/run` does; README: which versions)"
    );
}

/// Whether a run stopped where `TRUSTFORM_FAULT` said: it said so on stderr, and the
/// process ended at once, with the fault's code 99, or killed by a signal when another
/// of its threads died during the exit (the crash the fault stands for, all the same).
pub fn fault_fired(out: &std::process::Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    String::from_utf8_lossy(&out.stderr).contains("TRUSTFORM_FAULT: exiting")
        && (out.status.code() == Some(99) || out.status.signal().is_some())
}

/// Whether a real etcd runs the sandbox's members (`sandbox up` runs them where etcd is
/// installed). Without it a test that needs it is skipped, saying why — except where
/// `TRUSTFORM_REQUIRE_ETCD` is set (`.ci/run` sets it: CI installs etcd), where it fails.
pub fn require_etcd(test: &str) -> bool {
    let found = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("TRUSTFORM_REQUIRE_ETCD").is_none(),
            "{test}: etcd is not installed, and CI must run this test (Debian: etcd-server)"
        );
        eprintln!("SKIPPED {test}: etcd is not installed (Debian: apt-get install etcd-server)");
    }
    found
}

/// `etcdctl` against the member of `node`, as its healthcheck client (the certificate
/// kubeadm makes for that), exit status and output.
pub fn etcdctl(w: &Workdir, node: &str, args: &[&str]) -> (bool, String) {
    let pki = w.node(node).join("etc/kubernetes/pki/etcd");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}:2379", w.ip(node)))
        .arg(format!("--cacert={}", pki.join("ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("healthcheck-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("healthcheck-client.key").display()
        ))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("etcdctl runs (Debian: etcd-client)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Poll `f` every 200 ms until it says `Some`, at most `limit`; the last `None`'s
/// reason in the panic.
pub fn eventually<T>(
    what: &str,
    limit: std::time::Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(why) if start.elapsed() > limit => {
                panic!("{what}: not within {}s: {why}", limit.as_secs())
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// The sandbox's nodes reached in this process (the sandbox transport must be installed),
/// and their snapshot: what an in-process prober starts from.
pub fn observed_locally(
    w: &Workdir,
) -> (
    trustform::snapshot::Snapshot,
    std::collections::BTreeMap<String, trustform::exec::Node>,
) {
    let sb = trustform::sandbox::Sandbox::load(&w.cluster()).expect("sandbox.json");
    let targets: Vec<trustform::observe::NodeTarget> = sb
        .nodes
        .iter()
        .map(|n| trustform::observe::NodeTarget::local(&n.name, &n.root))
        .collect();
    let nodes = sb
        .nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                trustform::exec::Node::local(&n.name, &n.root),
            )
        })
        .collect();
    (
        trustform::observe::observe(&targets).expect("observe"),
        nodes,
    )
}
