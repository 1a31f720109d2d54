//! `trustform plan`.

use super::Exit;
use crate::render::{self, Format};
use crate::{config, diff, observe, plan, procedure};
use std::path::{Path, PathBuf};

/// `plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Save the plan (JSON) for `trustform apply`. Terraform's `-out` works too.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Exit 2 when there are changes, 0 when none, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Go straight to the desired issuer and trust, without the safe intermediate stages
    /// (pre-rotate: trust both; rotate: switch the issuer; post-rotate: drop the old CA).
    /// Rehearse refuses it whenever a leaf would meet a verifier that does not trust it.
    #[arg(long)]
    pub no_stages: bool,
}

/// Observe, diff and plan from a config file.
pub fn make(path: &Path, no_stages: bool) -> miette::Result<plan::Plan> {
    let loaded = config::load(path)?;
    Ok(make_on(&loaded, no_stages)?.0)
}

/// Observe the cluster of a loaded trustform.yaml and plan; the plan and the snapshot it
/// was made on.
pub fn make_on(
    loaded: &config::Loaded,
    no_stages: bool,
) -> miette::Result<(plan::Plan, crate::snapshot::Snapshot)> {
    let snap = observe::observe_with(&loaded.node_targets()?, loaded.kube_access().as_ref())?;
    let desired = diff::resolve(loaded, &snap)?;
    let procedures = procedure::load_all()?;
    let plan = plan::build(&plan::Input {
        snapshot: &snap,
        desired: &desired,
        procedures: &procedures,
        cluster: &loaded.config.metadata.name,
        config_hash: &loaded.hash,
        no_stages,
    })?;
    Ok((plan, snap))
}

/// Run.
pub fn run(a: Args, path: &Path) -> miette::Result<Exit> {
    let p = make(path, a.no_stages)?;
    print!("{}", render::render(&p, a.format));
    if let Some(out) = &a.out {
        crate::atomic::write(out, render::json(&p).as_bytes(), crate::atomic::PUBLIC_MODE)
            .map_err(|e| {
                miette::miette!(
                    code = "trustform::io",
                    "cannot write {}: {e}",
                    out.display()
                )
            })?;
        eprintln!("Saved the plan to {}.", out.display());
    }
    Ok(if a.detailed_exitcode && !p.is_empty() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
