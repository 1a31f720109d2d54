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
    /// Plan from a snapshot saved by `trustform snapshot -o` instead of the cluster:
    /// offline (a CI runner that cannot reach the cluster), and the same plan, checksum
    /// included, as a live plan of that state. `apply` re-observes and refuses it when
    /// the cluster has moved since.
    #[arg(long, value_name = "FILE")]
    pub snapshot: Option<PathBuf>,
}

/// A snapshot file that cannot be planned from.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{path}: {reason}")]
#[diagnostic(code(trustform::plan::bad_snapshot))]
pub struct BadSnapshot {
    path: String,
    reason: String,
    #[source_code]
    src: Option<miette::NamedSource<String>>,
    #[label("here")]
    span: Option<miette::SourceSpan>,
    #[help]
    help: String,
}

/// Read a snapshot file: JSON, format, and a fingerprint that matches its content.
pub fn load_snapshot(path: &Path) -> Result<crate::snapshot::Snapshot, BadSnapshot> {
    let shown_path = path.display().to_string();
    let text =
        crate::input::read_text(path, crate::input::Kind::Snapshot).map_err(|e| BadSnapshot {
            path: shown_path.clone(),
            reason: e.reason(),
            src: None,
            span: None,
            help: "pass the file written by `trustform snapshot -o <file>`".into(),
        })?;
    // A snapshot never holds key material, but a file passed as one may: show it
    // redacted, and quote at most 240 characters of what a parser says.
    let shown = crate::redact::Redacted::of(&shown_path, &text);
    let bad = |reason: String, span: Option<miette::SourceSpan>, help: &str| BadSnapshot {
        path: shown_path.clone(),
        reason: crate::input::clip_lines(&shown.message(&reason), 240).into_owned(),
        src: span.map(|_| shown.source(shown_path.clone())),
        span: span.map(|s| shown.span(s)),
        help: help.into(),
    };
    let snap: crate::snapshot::Snapshot = serde_json::from_str(&text).map_err(|e| {
        let span = observe::line_span(&text, e.line().max(1));
        bad(
            format!("not a trustform snapshot: {e}"),
            Some(span),
            "pass the JSON written by `trustform snapshot -o <file>`; never edit a snapshot by hand",
        )
    })?;
    if snap.format_version != crate::snapshot::FORMAT_VERSION {
        return Err(bad(
            format!(
                "snapshot format {} is not the format this trustform reads ({})",
                snap.format_version,
                crate::snapshot::FORMAT_VERSION
            ),
            None,
            "take the snapshot again with this trustform",
        ));
    }
    if !snap.verify() {
        return Err(bad(
            "the snapshot was changed after trustform wrote it (its fingerprint does not match its content)".into(),
            None,
            "take the snapshot again with `trustform snapshot -o <file>`; a plan from an edited snapshot would not match the cluster",
        ));
    }
    Ok(snap)
}

/// Observe, diff and plan from a config file.
pub fn make(path: &Path, no_stages: bool) -> miette::Result<plan::Plan> {
    let loaded = config::load(path)?;
    Ok(make_on(&loaded, no_stages)?.plan)
}

/// What the operator should know about the cluster as observed, beside the plan: key
/// files others can read, `cas` entries that match nothing.
pub fn notes(snap: &crate::snapshot::Snapshot, desired: &diff::Desired) -> Vec<String> {
    let mut out = vec![];
    for n in &snap.nodes {
        for (path, fact) in &n.files {
            let key = match fact {
                crate::snapshot::FileFact::PrivateKey(k) => Some(k),
                crate::snapshot::FileFact::Certificates { private_key, .. } => private_key.as_ref(),
                _ => None,
            };
            if let Some(mode) = key.and_then(|k| k.loose_mode) {
                out.push(format!(
                    "{}:{path} is a private key with mode {mode:04o}: others can read it (`chmod 600 {path}` on {}; apply writes it back 0600 when it changes it)",
                    n.name, n.name
                ));
            }
        }
    }
    out.extend(desired.notes.iter().cloned());
    out
}

/// A plan, the snapshot it was made on, and the [`notes`] on what was observed.
pub struct Made {
    /// The plan.
    pub plan: plan::Plan,
    /// The cluster as observed.
    pub snapshot: crate::snapshot::Snapshot,
    /// What the operator should know.
    pub notes: Vec<String>,
}

/// Observe the cluster of a loaded trustform.yaml and plan.
pub fn make_on(loaded: &config::Loaded, no_stages: bool) -> miette::Result<Made> {
    let targets = crate::observe::targets(loaded)?;
    let mut snap = observe::observe_with(&targets, crate::exec::kube::Access::of(loaded).as_ref())?;
    with_tokens(loaded, &mut snap, &targets)?;
    make_from(loaded, snap, no_stages)
}

/// Read the pods' service-account tokens into `snap` when trustform.yaml moves the
/// service-account key (its rotation waits for them, rehearse judges them); otherwise
/// the nodes' pods are not read.
pub fn with_tokens(
    loaded: &config::Loaded,
    snap: &mut crate::snapshot::Snapshot,
    targets: &[crate::observe::NodeTarget],
) -> miette::Result<()> {
    let desired = diff::resolve(loaded, &loaded.ca_files()?, snap)?;
    if desired
        .authorities
        .get(&config::Authority::ServiceAccount)
        .is_some_and(|(current, want)| current != want)
    {
        snap.tokens = crate::observe::tokens::read_all(targets)?;
    }
    Ok(())
}

/// Plan from a snapshot of the cluster (observed now, or saved).
pub fn make_from(
    loaded: &config::Loaded,
    snap: crate::snapshot::Snapshot,
    no_stages: bool,
) -> miette::Result<Made> {
    let desired = diff::resolve(loaded, &loaded.ca_files()?, &snap)?;
    let procedures = procedure::load_all()?;
    let now = time::OffsetDateTime::now_utc();
    let mut notes = notes(&snap, &desired);
    notes.extend(plan::renew::survey(&snap, &desired, &procedures, now).notes);
    let manual = loaded.manual_nodes()?;
    let plan = plan::build(&plan::Input {
        snapshot: &snap,
        desired: &desired,
        procedures: &procedures,
        cluster: &loaded.config.metadata.name,
        config_hash: &loaded.hash,
        no_stages,
        manual: &manual,
        now,
    })?;
    Ok(Made {
        plan,
        snapshot: snap,
        notes,
    })
}

/// Run.
pub fn run(a: Args, path: &Path) -> miette::Result<Exit> {
    let loaded = config::load(path)?;
    let Made { plan: p, notes, .. } = match &a.snapshot {
        Some(file) => make_from(&loaded, load_snapshot(file)?, a.no_stages)?,
        None => make_on(&loaded, a.no_stages)?,
    };
    for n in &notes {
        crate::verbosity::warn(n);
    }
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
        crate::verbosity::note(format_args!("Saved the plan to {}.", out.display()));
    }
    Ok(if a.detailed_exitcode && !p.is_empty() {
        Exit::Changes
    } else {
        Exit::Ok
    })
}
