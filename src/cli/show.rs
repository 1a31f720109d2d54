//! `trustform show PLAN`: a saved plan, for a person, a pull request or a pipe. The file
//! is checked as `apply` checks it (format, version, checksum, graph); no cluster is
//! reached, so a CI runner without access to the cluster can show what was planned.

use super::Exit;
use crate::render::{self, Format};
use std::path::PathBuf;

/// `show`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The plan file, as `trustform plan -out` wrote it.
    pub plan: PathBuf,
    /// Output format (`markdown`: a pull-request comment, with the marker a bot finds it
    /// by, fitted into `--max-bytes`).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The most a markdown comment may be: step diffs, then step lists give way; the
    /// summary never does. GitHub's limit is 65,536 characters.
    #[arg(long, value_name = "BYTES", default_value_t = render::COMMENT_LIMIT)]
    pub max_bytes: usize,
}

/// Run.
pub fn run(a: Args) -> miette::Result<Exit> {
    let plan = super::apply::load_plan(&a.plan)?;
    let out = match a.format {
        Format::Markdown => render::comment(&plan, a.max_bytes),
        f => render::render(&plan, f),
    };
    print!("{out}");
    Ok(Exit::Ok)
}
