//! `trustform demo`: the whole flow on a fresh sandbox, no cluster needed.

use super::Exit;
use crate::pki::KeyAlgorithm;
use crate::render;
use std::path::{Path, PathBuf};

/// The sandbox's API server and controllers on their own runtime thread, stopped on drop.
struct ApiServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    fn start(dir: &Path) -> miette::Result<Self> {
        use crate::sandbox::{apiserver, controllers, listeners};
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<String, String>>();
        let dir = dir.to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let server = match apiserver::serve(&dir, apiserver::Options::default()).await {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let d = dir.clone();
                let (etcd, etcd_note) =
                    match tokio::task::spawn_blocking(move || super::sandbox::start_etcd(&d)).await
                    {
                        Ok(started) => started,
                        Err(e) => (
                            None,
                            super::sandbox::EtcdNote::Warn(format!("etcd did not start: {e}")),
                        ),
                    };
                etcd_note.say();
                let controllers = controllers::spawn(&dir, server.store.clone());
                let listeners = match listeners::start(&dir, server.store.clone()).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        controllers.stop().await;
                        server.shutdown().await;
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(server.url()));
                let _ = stop_rx.await;
                // They hold clones of the store: stop them first, so shutdown releases it.
                listeners.shutdown().await;
                if let Some(e) = etcd {
                    let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
                }
                controllers.stop().await;
                server.shutdown().await;
            });
        });
        match ready_rx.recv() {
            Ok(Ok(url)) => {
                crate::verbosity::note(format_args!(
                    "API server {url} ready, with the simulated controllers and kubelets and their TLS endpoints"
                ));
                Ok(Self {
                    stop: Some(stop_tx),
                    thread: Some(thread),
                })
            }
            Ok(Err(e)) => Err(miette::miette!("the sandbox API server did not start: {e}")),
            Err(_) => Err(miette::miette!("the sandbox API server thread ended")),
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Work here instead of a temporary directory (kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Control planes.
    #[arg(long, default_value_t = 3)]
    pub control_planes: usize,
    /// Workers.
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
}

/// Run.
pub fn run(a: Args) -> miette::Result<Exit> {
    let started = std::time::Instant::now();
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()
                .map_err(|e| miette::miette!("cannot make a temporary directory: {e}"))?;
            tmp.path().to_path_buf()
        }
    };
    let config = dir.join("trustform.yaml");
    let cluster = dir.join("cluster");
    crate::verbosity::note(format_args!(
        "==> trustform sandbox create {} --control-planes {} --workers {} --restart-time 0.1s-0.5s",
        cluster.display(),
        a.control_planes,
        a.workers
    ));
    super::sandbox::run(super::sandbox::Command::Create(
        super::sandbox::CreateArgs {
            dir: cluster.clone(),
            control_planes: a.control_planes,
            workers: a.workers,
            key_algorithm: super::sandbox::Alg::Rsa2048,
            // Processes take 0.1–0.5 s to come back and every restart is awaited; the
            // default (0.2–2 s) makes a 3 + 3 demo take over a minute.
            restart_time: crate::sandbox::node::RestartTime::parse("0.1s-0.5s")
                .expect("a restart time"),
            // kubeadm's default: self-signed kubelet serving certificates.
            kubelet_serving: crate::sandbox::KubeletServing::default(),
            // No bare pods: no rollout could restart them, so their edges would break
            // (rehearse warns about them; the continuity promise covers owned pods).
            seed: super::sandbox::SeedArgs {
                namespaces: 3,
                workloads: 6,
                bare_pods: 0,
                legacy_token_secrets: 6,
                webhooks: 2,
            },
        },
    ))?;
    let _ = KeyAlgorithm::Rsa2048;
    crate::verbosity::note(format_args!(
        "==> trustform sandbox up {} (in this process)",
        cluster.display()
    ));
    let _api = ApiServer::start(&cluster)?;
    crate::verbosity::note(format_args!(
        "==> trustform init --sandbox {}",
        cluster.display()
    ));
    super::init::run(
        super::init::Args {
            sandbox: Some(cluster),
            roots: vec![],
            name: None,
            force: false,
            kubeconfig: None,
            context: None,
            ssh: vec![],
            ssh_identity: None,
            ssh_known_hosts: None,
        },
        &config,
    )?;
    for auth in ["kubernetes", "front-proxy"] {
        crate::verbosity::note(format_args!("==> trustform rotate {auth} --to-end"));
        super::rotate::run(
            super::rotate::Args {
                authority: auth.into(),
                stage: None,
                to_end: true,
                algorithm: None,
            },
            &config,
        )?;
    }
    crate::verbosity::note(format_args!("==> trustform plan -out plan.json"));
    let p = super::plan::make(&config, false)?;
    let saved = dir.join("plan.json");
    let full = dir.join("plan.txt");
    for (path, body) in [(&saved, render::json(&p)), (&full, render::text(&p))] {
        crate::atomic::write(path, body.as_bytes(), crate::atomic::PUBLIC_MODE)
            .map_err(|e| miette::miette!("cannot write {}: {e}", path.display()))?;
    }
    print!("{}", overview(&p));
    println!("(the whole plan, step by step: {})", full.display());
    crate::verbosity::note(format_args!("==> trustform apply plan.json --probe"));
    let applied = super::apply::run_reporting(
        super::apply::Args {
            wait_timeout: std::time::Duration::from_secs(300),
            restart_timeout: std::time::Duration::from_secs(300),
            restart_settle: std::time::Duration::from_millis(200),
            plan: Some(saved),
            auto_approve: true,
            confirm: vec![],
            parallelism: 10,
            lock_timeout: std::time::Duration::ZERO,
            format: super::apply::OutFormat::Text,
            skip_rehearse: false,
            accept_logged_errors: false,
            probe: true,
            probe_sandbox: None,
        },
        &config,
    )?;
    crate::verbosity::note(format_args!("==> trustform status"));
    super::apply::status(
        super::apply::StatusArgs {
            plan_id: None,
            wait: false,
            wait_timeout: std::time::Duration::from_secs(1),
            format: super::apply::OutFormat::Text,
        },
        &config,
    )?;
    crate::verbosity::note(format_args!("==> trustform plan"));
    let after = super::plan::make(&config, false)?;
    println!("{}", render::summary_line(&after));
    print!("{}", closing_table(&applied, started.elapsed()));
    Ok(Exit::Ok)
}

/// The plan's head for the demo: authorities, steps per stage, summary, continuity.
fn overview(p: &crate::plan::Plan) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    for a in &p.authorities {
        let _ = writeln!(
            o,
            "Authority {}: issuer {} → {}; trust [{}] → [{}]",
            a.authority,
            a.from.issuer,
            a.to.issuer,
            a.from.trust.join(", "),
            a.to.trust.join(", ")
        );
    }
    let mut stages: Vec<(String, crate::procedure::Stage, usize)> = vec![];
    for s in &p.steps {
        match stages.last_mut() {
            Some((proc_, stage, n)) if *proc_ == s.procedure && *stage == s.stage => *n += 1,
            _ => stages.push((s.procedure.clone(), s.stage, 1)),
        }
    }
    for (proc_, stage, n) in stages {
        let _ = writeln!(o, "  {proc_}: stage {}: {n} steps", stage.name());
    }
    let _ = writeln!(o, "{}", render::summary_line(p));
    for l in render::continuity_lines(p) {
        let _ = writeln!(o, "{l}");
    }
    o
}

/// The demo's last word: what the prober saw while the plan ran.
fn closing_table(applied: &super::apply::Applied, total: std::time::Duration) -> String {
    use crate::apply::probe::EdgeKind;
    use std::fmt::Write;
    let Some(r) = &applied.probe else {
        return String::new();
    };
    let kinds = [
        (EdgeKind::ApiServer, "clients → API servers"),
        (EdgeKind::Pod, "pods → API servers"),
        (EdgeKind::Kubelet, "API servers → kubelets"),
        (EdgeKind::Etcd, "API servers → etcd"),
        (EdgeKind::EtcdPeer, "etcd ↔ etcd (peers)"),
        (EdgeKind::Aggregated, "front proxy → aggregated"),
    ];
    let mut o = String::new();
    let rule = format!(
        "+{}+{}+{}+{}+",
        "-".repeat(28),
        "-".repeat(8),
        "-".repeat(12),
        "-".repeat(10)
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "Trust continuity, witnessed live:");
    let _ = writeln!(o, "{rule}");
    let _ = writeln!(
        o,
        "| {:<26} | {:>6} | {:>10} | {:>8} |",
        "edge", "edges", "handshakes", "failures"
    );
    let _ = writeln!(o, "{rule}");
    for (kind, label) in kinds {
        let of: Vec<_> = r.edges.iter().filter(|e| e.kind == Some(kind)).collect();
        if of.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "| {:<26} | {:>6} | {:>10} | {:>8} |",
            label,
            of.len(),
            of.iter().map(|e| e.attempts).sum::<u64>(),
            of.iter().map(|e| e.failures).sum::<u64>()
        );
    }
    let _ = writeln!(o, "{rule}");
    let _ = writeln!(
        o,
        "| {:<26} | {:>6} | {:>10} | {:>8} |",
        "all",
        r.edges.len(),
        r.handshakes,
        r.failures
    );
    let _ = writeln!(o, "{rule}");
    let _ = writeln!(
        o,
        "{} steps applied in {:.1} s (the prober handshook over every edge every 200 ms, and after each step over every edge it could change); longest outage {} ms; demo {:.1} s.",
        applied.steps,
        applied.wall_ms as f64 / 1000.0,
        r.longest_outage_ms,
        total.as_secs_f64()
    );
    if r.unverified > 0 {
        let _ = writeln!(
            o,
            "{} API server → kubelet edges are unverified, as kubeadm leaves them: the API server has no --kubelet-certificate-authority and does not verify the kubelets' self-signed kubelet.crt; each handshake still proved the kubelet accepts its client certificate.",
            r.unverified
        );
    }
    o
}
