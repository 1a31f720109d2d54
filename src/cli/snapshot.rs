//! `trustform snapshot`.

use super::Exit;
use crate::observe::{self, NodeTarget};
use crate::snapshot::Snapshot;
use std::path::{Path, PathBuf};

/// `snapshot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read these node roots instead of the config's inventory: `PATH` or `NAME=PATH`
    /// (a real node: `--root /`).
    #[arg(long = "root", value_name = "[NAME=]PATH")]
    pub roots: Vec<String>,
    /// Write the snapshot here instead of stdout.
    #[arg(short = 'o', long = "out")]
    pub out: Option<PathBuf>,
}

/// `NAME=PATH` or `PATH` (the name is the directory's, or the host's for `/`).
pub fn parse_roots(roots: &[String]) -> Vec<NodeTarget> {
    roots
        .iter()
        .map(|r| {
            let (name, path) = match r.split_once('=') {
                Some((n, p)) => (n.to_string(), PathBuf::from(p)),
                None => {
                    let p = PathBuf::from(r);
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .or_else(|| {
                            std::fs::read_to_string("/etc/hostname")
                                .ok()
                                .map(|h| h.trim().to_string())
                        })
                        .unwrap_or_else(|| "node".into());
                    (name, p)
                }
            };
            NodeTarget::local(&name, &path)
        })
        .collect()
}

/// Observe the nodes `--root` names, or else the inventory of `config` (and, when
/// `api`, its Kubernetes API side).
pub fn take(roots: &[String], config: &Path, api: bool) -> miette::Result<Snapshot> {
    Ok(if roots.is_empty() {
        let loaded = crate::config::load(config)?;
        let access = api
            .then(|| crate::exec::kube::Access::of(&loaded))
            .flatten();
        let targets = crate::observe::targets(&loaded)?;
        let mut snap = observe::observe_with(&targets, access.as_ref())?;
        // The snapshot command records the pods' tokens (a saved snapshot then plans a
        // service-account rotation like a live one).
        if api {
            snap.tokens = observe::tokens::read_all(&targets)?;
        }
        snap
    } else {
        let targets = parse_roots(roots);
        let mut snap = observe::observe(&targets)?;
        if api {
            snap.tokens = observe::tokens::read_all(&targets)?;
        }
        snap
    })
}

/// Run.
pub fn run(a: Args, config: &Path) -> miette::Result<Exit> {
    let snap = take(&a.roots, config, true)?;
    let json = snap.to_json() + "\n";
    match a.out {
        Some(p) => {
            crate::atomic::write(&p, json.as_bytes(), crate::atomic::PUBLIC_MODE).map_err(|e| {
                miette::miette!(code = "trustform::io", "cannot write {}: {e}", p.display())
            })?;
            crate::verbosity::note(format_args!(
                "Wrote snapshot {} of {} nodes, {} CAs to {}.",
                snap.fingerprint,
                snap.nodes.len(),
                snap.cas.len(),
                p.display()
            ));
        }
        None => print!("{json}"),
    }
    Ok(Exit::Ok)
}
