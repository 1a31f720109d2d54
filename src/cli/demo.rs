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
                controllers.stop().await;
                server.shutdown().await;
            });
        });
        match ready_rx.recv() {
            Ok(Ok(url)) => {
                eprintln!(
                    "API server {url} ready, with the simulated controllers and kubelets and their TLS endpoints"
                );
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
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// Run.
pub fn run(a: Args) -> miette::Result<Exit> {
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
    eprintln!(
        "==> trustform sandbox create {} --control-planes {} --workers {}",
        cluster.display(),
        a.control_planes,
        a.workers
    );
    super::sandbox::run(super::sandbox::Command::Create(
        super::sandbox::CreateArgs {
            dir: cluster.clone(),
            control_planes: a.control_planes,
            workers: a.workers,
            key_algorithm: super::sandbox::Alg::Rsa2048,
            seed: super::sandbox::SeedArgs {
                namespaces: 4,
                workloads: 8,
                bare_pods: crate::sandbox::seed::DEFAULT_BARE_PODS,
                legacy_token_secrets: 8,
                webhooks: 4,
            },
        },
    ))?;
    let _ = KeyAlgorithm::Rsa2048;
    eprintln!(
        "==> trustform sandbox up {} (in this process)",
        cluster.display()
    );
    let _api = ApiServer::start(&cluster)?;
    eprintln!("==> trustform init --sandbox {}", cluster.display());
    super::init::run(
        super::init::Args {
            sandbox: Some(cluster),
            roots: vec![],
            name: None,
            force: false,
            kubeconfig: None,
            context: None,
        },
        &config,
    )?;
    for auth in ["kubernetes", "front-proxy"] {
        eprintln!("==> trustform rotate {auth} --to-end");
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
    eprintln!("==> trustform plan");
    let p = super::plan::make(&config, false)?;
    print!("{}", render::text(&p));
    eprintln!("==> trustform apply --auto-approve --probe");
    super::apply::run(
        super::apply::Args {
            wait_timeout: std::time::Duration::from_secs(300),
            plan: None,
            auto_approve: true,
            parallelism: 10,
            lock_timeout: std::time::Duration::ZERO,
            format: super::apply::OutFormat::Text,
            skip_rehearse: false,
            probe: true,
        },
        &config,
    )?;
    eprintln!("==> trustform status");
    super::apply::status(
        super::apply::StatusArgs {
            plan_id: None,
            wait: false,
            wait_timeout: std::time::Duration::from_secs(1),
            format: super::apply::OutFormat::Text,
        },
        &config,
    )?;
    eprintln!("==> trustform plan");
    let after = super::plan::make(&config, false)?;
    println!("{}", render::summary_line(&after));
    Ok(Exit::Ok)
}
