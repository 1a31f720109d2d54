//! `trustform sandbox create DIR`, `trustform sandbox up DIR`.

use super::Exit;
use crate::pki::KeyAlgorithm;
use crate::sandbox::apiserver::{self, ApiServerError, Faults, Options};
use crate::sandbox::seed::Seed;
use crate::sandbox::{self, Spec};
use crate::sandbox::{controllers, listeners};
use std::path::{Path, PathBuf};

/// Sandbox commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a kubeadm-layout cluster on disk, with real certificates.
    Create(CreateArgs),
    /// Serve the sandbox's Kubernetes API over HTTPS, in the foreground, until Ctrl-C.
    Up(UpArgs),
    /// Run `systemctl`, `crictl` or `journalctl` on a sandbox node, as the node's shell
    /// would (what the sshd of `sandbox up --ssh` runs for them).
    #[command(hide = true)]
    NodeExec(NodeExecArgs),
    /// Stop or start one node's sshd while `sandbox up --ssh` runs (same port).
    Sshd(SshdArgs),
}

/// `sandbox sshd`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["stop", "start"])))]
pub struct SshdArgs {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// The node.
    pub node: String,
    /// Stop its sshd and every session it serves.
    #[arg(long)]
    pub stop: bool,
    /// Start it again, on the same port.
    #[arg(long)]
    pub start: bool,
}

/// `sandbox node-exec`.
#[derive(Debug, clap::Args)]
pub struct NodeExecArgs {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// The node.
    pub node: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// `sandbox up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The sandbox directory.
    pub dir: PathBuf,
    /// Port to listen on [default: the kubeconfigs' port if free, else any free port].
    #[arg(long)]
    pub port: Option<u16>,
    /// Faults to inject: 500=RATE (answer 500), 409=RATE (answer writes 409), latency=DURATION.
    #[arg(long, value_name = "SPEC", env = "TRUSTFORM_SANDBOX_FAULTS")]
    pub faults: Option<String>,
    /// Also run a real OpenSSH server per node, on the node's loopback address, seeing
    /// the node's files as /etc/kubernetes, /var/lib/kubelet and /root/.kube (needs root
    /// and Debian's openssh-server); see DIR/run/ssh.json.
    #[arg(long)]
    pub ssh: bool,
    /// What `sudo` asks of the non-root login (`trustform`) on those servers.
    #[arg(long, value_enum, default_value = "nopasswd", requires = "ssh")]
    pub ssh_sudo: crate::sandbox::sshd::Sudo,
}

/// `sandbox create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Directory to create (must be empty or absent).
    pub dir: PathBuf,
    /// Number of control-plane nodes.
    #[arg(long, default_value_t = 3)]
    pub control_planes: usize,
    /// Number of worker nodes.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Key algorithm (kubeadm uses rsa-2048).
    #[arg(long, value_enum, default_value = "rsa-2048")]
    pub key_algorithm: Alg,
    /// How long a simulated process is down when it restarts: a range (a random
    /// duration in it for every restart) or one duration (`0`, `500ms`). The environment
    /// variable overrides what the sandbox keeps.
    #[arg(long, default_value = crate::sandbox::node::timing::DEFAULT, value_parser = crate::sandbox::node::RestartTime::parse)]
    pub restart_time: crate::sandbox::node::RestartTime,
    /// How the kubelets serve TLS.
    #[arg(long, value_enum, default_value = "self-signed")]
    pub kubelet_serving: crate::sandbox::KubeletServing,
    /// API objects to seed.
    #[command(flatten)]
    pub seed: SeedArgs,
}

/// What `sandbox create` seeds into the API server beyond the system objects.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Application namespaces to seed (`app-1`…).
    #[arg(long, default_value_t = 0)]
    pub namespaces: usize,
    /// Application workloads to seed, spread over the namespaces.
    #[arg(long, default_value_t = 0)]
    pub workloads: usize,
    /// Pods without an owner to seed in `default`, along with the workloads (no rollout
    /// restarts them: a rotation leaves them to the operator, with a warning).
    #[arg(long, default_value_t = crate::sandbox::seed::DEFAULT_BARE_PODS)]
    pub bare_pods: usize,
    /// Legacy service-account token secrets to seed.
    #[arg(long, default_value_t = 0)]
    pub legacy_token_secrets: usize,
    /// Admission webhook configurations to seed.
    #[arg(long, default_value_t = 0)]
    pub webhooks: usize,
}

impl Default for SeedArgs {
    fn default() -> Self {
        Self {
            namespaces: 0,
            workloads: 0,
            bare_pods: crate::sandbox::seed::DEFAULT_BARE_PODS,
            legacy_token_secrets: 0,
            webhooks: 0,
        }
    }
}

/// Key algorithms on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Alg {
    /// RSA 2048.
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// ECDSA P-256.
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
}

impl From<Alg> for KeyAlgorithm {
    fn from(a: Alg) -> Self {
        match a {
            Alg::Rsa2048 => KeyAlgorithm::Rsa2048,
            Alg::EcdsaP256 => KeyAlgorithm::EcdsaP256,
        }
    }
}

/// Run.
pub fn run(c: Command) -> miette::Result<Exit> {
    match c {
        Command::Create(a) => {
            let started = std::time::Instant::now();
            let spec = Spec {
                control_planes: a.control_planes,
                workers: a.workers,
                algorithm: a.key_algorithm.into(),
                seed: Seed {
                    namespaces: a.seed.namespaces,
                    workloads: a.seed.workloads,
                    bare_pods: a.seed.bare_pods,
                    legacy_token_secrets: a.seed.legacy_token_secrets,
                    webhooks: a.seed.webhooks,
                },
                kubelet_serving: a.kubelet_serving,
            };
            let (mut sb, report) = sandbox::create_seeded(&a.dir, &spec)?;
            sb.restart_time = a.restart_time;
            sb.save(&a.dir).map_err(|e| {
                miette::miette!("cannot write {}: {e}", a.dir.join("sandbox.json").display())
            })?;
            crate::verbosity::note(format_args!(
                "Created sandbox cluster in {} ({} control planes, {} workers) in {:.1}s.",
                a.dir.display(),
                spec.control_planes,
                spec.workers,
                started.elapsed().as_secs_f64()
            ));
            crate::verbosity::note(format_args!("Seeded {}.", report.summary()));
            crate::verbosity::note(format_args!(
                "Next: trustform init --sandbox {}",
                a.dir.display()
            ));
            drop(sb);
            Ok(Exit::Ok)
        }
        Command::Up(a) => up(a),
        Command::NodeExec(a) => node_exec(a),
        Command::Sshd(a) => {
            let n = crate::sandbox::sshd::request(
                &a.dir,
                &a.node,
                a.start,
                std::time::Duration::from_secs(30),
            )?;
            if a.start {
                eprintln!(
                    "Started the sshd of {} on {}:{} (pid {}).",
                    n.name,
                    n.host,
                    n.port,
                    n.pid.unwrap_or(0)
                );
            } else {
                eprintln!("Stopped the sshd of {} ({}:{}).", n.name, n.host, n.port);
            }
            Ok(Exit::Ok)
        }
    }
}

/// Print what the node's command printed and exit with its code.
fn node_exec(a: NodeExecArgs) -> miette::Result<Exit> {
    use std::io::Write;
    let sb = sandbox::Sandbox::load(&a.dir).map_err(|e| {
        miette::miette!(
            "{} is not a sandbox (cannot read its sandbox.json: {e})",
            a.dir.display()
        )
    })?;
    let node = sb
        .nodes
        .iter()
        .find(|n| n.name == a.node)
        .ok_or_else(|| miette::miette!("the sandbox has no node {}", a.node))?;
    let argv: Vec<&str> = a.argv.iter().map(String::as_str).collect();
    let out = sandbox::node::exec(&node.root, &argv);
    let _ = std::io::stdout().write_all(&out.stdout);
    let _ = std::io::stderr().write_all(&out.stderr);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // The command's own exit code (3 from `systemctl is-active`, 127, …).
    std::process::exit(out.code.unwrap_or(1))
}

fn up(a: UpArgs) -> miette::Result<Exit> {
    let faults = match a.faults.as_deref() {
        Some(spec) => Faults::parse(spec).map_err(ApiServerError::Faults)?,
        None => Faults::default(),
    };
    let opts = Options {
        port: a.port,
        faults,
        ..Options::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| miette::miette!("cannot start the async runtime: {e}"))?;
    rt.block_on(async {
        let signals = Signals::new();
        let server = apiserver::serve(&a.dir, opts).await?;
        // Real etcd members where etcd is installed (before the listeners: a real
        // member serves its own ports; before the controllers, which bring the nodes'
        // kubelets up to date: an etcd container started then is a real member's).
        let dir = a.dir.clone();
        let (etcd, etcd_note) = tokio::task::spawn_blocking(move || start_etcd(&dir))
            .await
            .map_err(|e| miette::miette!("the etcd supervisor failed: {e}"))?;
        // The simulated control plane's controllers and kubelets, beside the API server.
        let controllers = controllers::spawn(&a.dir, server.store.clone());
        // Every simulated process's TLS endpoint, for probes and openssl s_client.
        let listeners = listeners::start(&a.dir, server.store.clone()).await?;
        // Every node's kubelet: restarts static pods whose manifests changed, on time.
        let machines = sandbox::node::spawn(&a.dir, sandbox::node::RECONCILE_PERIOD);
        // Every process's health endpoint, where its manifest says (nodes reached over
        // SSH are health-checked through these).
        // Every process's TLS ports where its configuration says (the gates' live
        // handshakes over SSH reach them), then the other health endpoints.
        for (what, why) in sandbox::node::serve::spawn(&a.dir) {
            crate::verbosity::warn(format_args!("the TLS port of {what} is not served: {why}"));
        }
        for (what, why) in sandbox::node::health::spawn(&a.dir) {
            crate::verbosity::warn(format_args!(
                "the health endpoint of {what} is not served: {why}"
            ));
        }
        let started = std::time::Instant::now();
        let sshds = if a.ssh {
            let (dir, sudo) = (a.dir.clone(), a.ssh_sudo);
            let serve = move || {
                crate::sandbox::sshd::Sshds::serve(
                    &dir,
                    sudo,
                    std::time::Duration::from_millis(100),
                )
            };
            let s = tokio::task::spawn_blocking(serve)
                .await
                .map_err(|e| miette::miette!("the sshd starter failed: {e}"))??;
            Some(s)
        } else {
            None
        };
        eprintln!(
            "API server {} ({}) ready; KUBECONFIG={}",
            server.url(),
            a.dir.display(),
            a.dir.join("nodes/cp-1/etc/kubernetes/admin.conf").display()
        );
        eprintln!(
            "{} TLS endpoints of the simulated processes in {}",
            listeners.len(),
            listeners::Endpoints::path(&a.dir).display()
        );
        etcd_note.say();
        if let Some(s) = &sshds {
            eprintln!(
                "{} sshd(s) ready in {:.1}s, one per node ({}):",
                s.info.nodes.len(),
                started.elapsed().as_secs_f64(),
                crate::sandbox::sshd::SshInfo::path(&a.dir).display()
            );
            for n in &s.info.nodes {
                eprintln!("  {}: {}", n.name, n.command());
            }
        }
        signals.wait().await;
        machines.abort();
        if let Some(e) = etcd {
            let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
        }
        if let Some(s) = sshds {
            let _ = tokio::task::spawn_blocking(move || s.shutdown()).await;
        }
        // They hold clones of the store: stop them first, so shutdown releases it.
        listeners.shutdown().await;
        controllers.stop().await;
        server.shutdown().await;
        Ok::<_, miette::Report>(())
    })?;
    Ok(Exit::Ok)
}

/// How long `sandbox up` waits for the etcd members to be healthy.
const ETCD_START: std::time::Duration = std::time::Duration::from_secs(60);

/// Run sandbox `dir`'s etcd members as real processes, where etcd is installed, and wait
/// until they are healthy (`None`: etcd stays simulated). The second value is what to say
/// about it, once the sandbox is ready.
pub(super) fn start_etcd(dir: &Path) -> (Option<sandbox::etcd::Supervisor>, EtcdNote) {
    let started = std::time::Instant::now();
    let s = match sandbox::etcd::Supervisor::start(dir) {
        Ok(s) => s,
        Err(why) => {
            return (
                None,
                EtcdNote::Warn(format!(
                    "etcd is simulated (a TLS listener per member): {why}"
                )),
            );
        }
    };
    let note = match s.wait_healthy(ETCD_START) {
        Ok(()) => EtcdNote::Note(format!(
            "{} etcd members (etcd {}, real processes) healthy in {:.1}s",
            s.nodes.len(),
            s.version,
            started.elapsed().as_secs_f64()
        )),
        Err(sick) => EtcdNote::Warn(format!(
            "etcd members not healthy after {}s: {}",
            ETCD_START.as_secs(),
            sick.join("; ")
        )),
    };
    (Some(s), note)
}

/// What [`start_etcd`] has to say.
pub(super) enum EtcdNote {
    /// Fine.
    Note(String),
    /// Simulated, or not healthy.
    Warn(String),
}

impl EtcdNote {
    /// Say it on stderr.
    pub(super) fn say(&self) {
        match self {
            EtcdNote::Note(n) => crate::verbosity::note(format_args!("{n}")),
            EtcdNote::Warn(w) => crate::verbosity::warn(format_args!("{w}")),
        }
    }
}

/// Ctrl-C and SIGTERM, listened for from creation on (before the server says it is
/// ready, so a signal sent right after that line is never missed).
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Start listening (within the runtime).
    fn new() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The first of them.
    async fn wait(mut self) {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.interrupt) => {}
            _ = recv(&mut self.terminate) => {}
        }
    }
}

/// Register the sandbox's own transport for its node directories (see
/// `crate::transport::register_local_override`).
pub fn install_transport() {
    crate::sandbox::transport::install();
}

/// A sandbox for `init --sandbox DIR`: its name, and its nodes (name, root).
pub(super) fn inventory(dir: &Path) -> miette::Result<(String, Vec<(String, PathBuf)>)> {
    use miette::{IntoDiagnostic, WrapErr};
    let s = sandbox::Sandbox::load(dir)
        .into_diagnostic()
        .wrap_err_with(|| {
            format!(
                "{} is not a sandbox (no sandbox.json); create one with `trustform sandbox create`",
                dir.display()
            )
        })?;
    let nodes = s
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.root.clone()))
        .collect();
    Ok((s.name, nodes))
}

/// The admin kubeconfig of sandbox `dir`, once its API server has been started.
pub(super) fn admin_kubeconfig(dir: &Path) -> Option<PathBuf> {
    dir.join("apiserver/endpoint.json")
        .is_file()
        .then(|| dir.join("nodes/cp-1/etc/kubernetes/admin.conf"))
}

/// The SSH access `sandbox up --ssh` publishes in `DIR/run/ssh.json`.
pub(super) fn ssh_access(sb: &Path) -> miette::Result<Vec<crate::config::SshAccess>> {
    #[derive(serde::Deserialize)]
    struct Entry {
        host: String,
        port: u16,
        user: String,
        identity_file: PathBuf,
        known_hosts_file: PathBuf,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum File {
        List(Vec<Entry>),
        Nodes { nodes: Vec<Entry> },
    }
    let path = sb.join("run/ssh.json");
    let text = std::fs::read_to_string(&path).map_err(|_| {
        miette::miette!(
            code = "trustform::init::no_sandbox_ssh",
            help = format!(
                "start it with `trustform sandbox up {} --ssh`",
                sb.display()
            ),
            "the sandbox's sshd is not running ({} is missing)",
            path.display()
        )
    })?;
    let entries =
        match miette::IntoDiagnostic::into_diagnostic(serde_json::from_str::<File>(&text))? {
            File::List(v) | File::Nodes { nodes: v } => v,
        };
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p).display().to_string();
    Ok(entries
        .into_iter()
        .map(|e| crate::config::SshAccess {
            host: e.host,
            port: Some(e.port),
            user: Some(e.user),
            identity_file: Some(abs(e.identity_file)),
            known_hosts_file: Some(abs(e.known_hosts_file)),
            ..Default::default()
        })
        .collect())
}
