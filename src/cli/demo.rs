//! `trustform demo`: the whole flow on a fresh sandbox, no cluster needed.

use super::Exit;
use crate::pki::KeyAlgorithm;
use crate::render;
use std::path::PathBuf;

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
            seed: Default::default(),
        },
    ))?;
    let _ = KeyAlgorithm::Rsa2048;
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
    let p = super::plan::make(&config)?;
    print!("{}", render::text(&p));
    eprintln!("==> trustform apply --auto-approve");
    super::apply::run(
        super::apply::Args {
            wait_timeout: std::time::Duration::from_secs(300),
            plan: None,
            auto_approve: true,
            parallelism: 10,
            lock_timeout: std::time::Duration::ZERO,
            format: super::apply::OutFormat::Text,
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
    let after = super::plan::make(&config)?;
    println!("{}", render::summary_line(&after));
    Ok(Exit::Ok)
}
