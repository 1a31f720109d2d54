//! `trustform rehearse plan.json`: prove a saved plan's trust continuity on the cluster
//! as it is now.

use super::Exit;
use crate::plan::rehearse::{self, Rehearsal};
use crate::{config, diff, observe};
use std::path::{Path, PathBuf};

/// `rehearse`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved with `trustform plan -out`.
    pub plan: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::apply::OutFormat,
}

/// Rehearse `plan` on the cluster as observed now.
pub fn check(config_path: &Path, plan: &crate::plan::Plan) -> miette::Result<(Rehearsal, bool)> {
    let loaded = config::load(config_path)?;
    let snap = observe::observe_with(&loaded.node_targets()?, loaded.kube_access().as_ref())?;
    let desired = diff::resolve(&loaded, &snap)?;
    let fresh = snap.fingerprint == plan.snapshot_fingerprint;
    Ok((
        rehearse::rehearse(&snap, plan, &|fp| desired.label(fp)),
        fresh,
    ))
}

/// Every break, gap and warning as text lines.
pub fn lines(r: &Rehearsal) -> Vec<String> {
    let mut out = vec![r.line()];
    for b in &r.breaks {
        let back = b
            .restored
            .as_ref()
            .map(|s| format!(" (live again after {s})"))
            .unwrap_or_default();
        out.push(format!("  ✗ {}: {}: {}{back}", b.at, b.edge, b.why));
    }
    for g in &r.gaps {
        out.push(format!("  availability gap at {}: {}", g.at, g.what));
    }
    for b in &r.warnings {
        out.push(format!(
            "  warning: {} loses trust at {} (a bare pod: no rollout restarts it): {}",
            b.edge, b.at, b.why
        ));
    }
    for b in &r.broken_before {
        out.push(format!(
            "  note: {} is broken before the plan starts: {}",
            b.edge, b.why
        ));
    }
    out
}

/// Run.
pub fn run(a: Args, config_path: &Path) -> miette::Result<Exit> {
    let plan = super::apply::load_plan(&a.plan)?;
    let (r, fresh) = check(config_path, &plan)?;
    if !fresh {
        eprintln!(
            "Note: the cluster changed since plan {} was made; rehearsing it on the cluster as it is now (apply would refuse it as stale).",
            plan.id()
        );
    }
    match a.format {
        super::apply::OutFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("rehearsal serialises")
        ),
        super::apply::OutFormat::Text => {
            for l in lines(&r) {
                println!("{l}");
            }
        }
    }
    if let Some(first) = r.breaks.first() {
        return Err(crate::plan::PlanError::Break {
            at: first.at.clone(),
            edge: first.edge.clone(),
            why: first.why.clone(),
            more: r.breaks.len() - 1,
            help: format!(
                "regenerate the plan with `trustform plan -out {}`: trustform orders steps so that every verifier trusts a CA before any leaf from it is served",
                a.plan.display()
            ),
        }
        .into());
    }
    Ok(Exit::Ok)
}
