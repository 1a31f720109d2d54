//! `trustform expiry`.

use super::Exit;
use std::path::{Path, PathBuf};

/// How to print the listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table, soonest end first.
    Text,
    /// JSON (`schemas/expiry.schema.json`).
    Json,
    /// A Prometheus textfile, for node_exporter's textfile collector.
    Prometheus,
}

/// `expiry`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Exit 2 when a certificate ends within this window (or has ended), 0 otherwise:
    /// for monitoring. Without it the window is 30d and the exit code 0.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub warn: Option<std::time::Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// List from a snapshot saved by `trustform snapshot -o` instead of the cluster.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
    /// Read these node roots instead of the config's inventory: `PATH` or `NAME=PATH`
    /// (this machine: `--root /`).
    #[arg(long = "root", value_name = "[NAME=]PATH", conflicts_with = "snapshot")]
    pub roots: Vec<String>,
}

/// The window when `--warn` is not given.
const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Run.
pub fn run(a: Args, config: &Path) -> miette::Result<Exit> {
    // Certificates live in the nodes' files: the API side is not read.
    let snap = match &a.snapshot {
        Some(file) => super::plan::load_snapshot(file)?,
        None => super::snapshot::take(&a.roots, config, false)?,
    };
    let listing = crate::expiry::list(
        &snap,
        time::OffsetDateTime::now_utc(),
        a.warn.unwrap_or(DEFAULT_WINDOW),
    );
    print!(
        "{}",
        match a.format {
            Format::Text => listing.text(),
            Format::Json => listing.json(),
            Format::Prometheus => listing.prometheus(),
        }
    );
    let s = &listing.summary;
    Ok(if a.warn.is_some() && s.expired + s.expiring > 0 {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
