//! `trustform rehearse plan.json`: prove a saved plan's trust continuity on the cluster
//! as it is now.

use super::Exit;
use crate::plan::rehearse::{self, Rehearsal};
use crate::plan::validate;
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

/// Rehearse `plan` on the cluster `snap` observed (CAs named as trustform.yaml names
/// them).
pub fn on(
    loaded: &config::Loaded,
    snap: &crate::snapshot::Snapshot,
    plan: &crate::plan::Plan,
) -> miette::Result<Rehearsal> {
    let desired = diff::resolve(loaded, &loaded.ca_files()?, snap)?;
    Ok(rehearse::rehearse(snap, plan, &|fp| desired.label(fp)))
}

/// Run.
pub fn run(a: Args, config_path: &Path) -> miette::Result<Exit> {
    let (plan, text) = super::apply::load_plan_text(&a.plan)?;
    let loaded = config::load(config_path)?;
    let targets = crate::observe::targets(&loaded)?;
    let mut snap =
        observe::observe_with(&targets, crate::exec::kube::Access::of(&loaded).as_ref())?;
    super::plan::with_tokens(&loaded, &mut snap, &targets)?;
    // Only what the procedures make: a plan is data from a file.
    let copies = targets
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.kubeconfigs.iter().map(|k| k.path.clone()).collect(),
            )
        })
        .collect();
    let known = validate::Known::of(&snap, &copies, &loaded.manual_nodes()?);
    let refusals = validate::validate(&plan, &known, &crate::procedure::load_all()?);
    if !refusals.is_empty() {
        let name = a.plan.display().to_string();
        return Err(validate::Refused {
            refusals: refusals
                .into_iter()
                .map(|r| r.located(&name, &text))
                .collect(),
        }
        .into());
    }
    let r = on(&loaded, &snap, &plan)?;
    if snap.fingerprint != plan.snapshot_fingerprint {
        crate::verbosity::note(format_args!(
            "Note: the cluster changed since plan {} was made; rehearsing it on the cluster as it is now (apply would refuse it as stale).",
            plan.id()
        ));
    }
    match a.format {
        super::apply::OutFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&r).expect("rehearsal serialises")
        ),
        super::apply::OutFormat::Text => {
            for l in crate::render::rehearsal_lines(&r, usize::MAX) {
                println!("{l}");
            }
            for l in crate::render::unverified_lines(&r) {
                println!("{l}");
            }
        }
    }
    r.verdict(format!(
        "regenerate the plan with `trustform plan -out {}`: trustform orders steps so that every verifier trusts a CA before any leaf from it is served",
        a.plan.display()
    ))?;
    Ok(Exit::Ok)
}
