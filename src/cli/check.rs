//! `trustform fmt` and `trustform validate`: trustform.yaml on its own, without the
//! cluster (what a CI job on a pull request can run).

use super::Exit;
use crate::config;
use std::path::Path;

/// `fmt`.
#[derive(Debug, clap::Args)]
pub struct FmtArgs {
    /// Change nothing: exit 1 and say so when the file is not in trustform's layout.
    #[arg(long)]
    pub check: bool,
}

/// `validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {}

/// Rewrite trustform.yaml in trustform's canonical layout (comments other than the
/// header are not kept: `rotate` edits in place, `fmt` is for whoever wants the layout).
pub fn fmt(a: FmtArgs, path: &Path) -> miette::Result<Exit> {
    let loaded = config::load(path)?;
    let canonical = config::render(&loaded.config);
    if canonical == loaded.text {
        return Ok(Exit::Ok);
    }
    if a.check {
        let changed = similar::TextDiff::from_lines(&loaded.text, &canonical)
            .iter_all_changes()
            .filter(|c| c.tag() != similar::ChangeTag::Equal)
            .count();
        return Err(miette::miette!(
            code = "trustform::fmt::check",
            help =
                "run `trustform fmt` to rewrite it (comments other than the header are not kept)",
            "{} is not in trustform's layout ({changed} lines differ)",
            path.display()
        ));
    }
    super::init::write_config_text(path, &canonical)?;
    crate::verbosity::note(format_args!(
        "Rewrote {} in trustform's layout.",
        path.display()
    ));
    Ok(Exit::Ok)
}

/// Check trustform.yaml without the cluster: it parses, its names resolve (every
/// authority's CAs are in `cas`, nodes are unique), every CA file it names holds a CA
/// certificate matching its fingerprint, and the procedures load.
pub fn validate(_: ValidateArgs, path: &Path) -> miette::Result<Exit> {
    let loaded = config::load(path)?;
    let files = loaded.ca_files()?;
    let procedures = crate::procedure::load_all()?;
    let c = &loaded.config;
    println!(
        "{} is valid: {} nodes, {} authorities, {} CAs ({} from files), {} procedures.",
        path.display(),
        c.inventory.nodes.len(),
        c.authorities.len(),
        c.cas.len(),
        files.len(),
        procedures.len()
    );
    Ok(Exit::Ok)
}
