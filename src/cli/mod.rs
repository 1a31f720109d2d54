//! Command-line interface: clap structs hold raw arguments; each command resolves them
//! into validated types, then calls the library. Data goes to stdout, diagnostics to
//! stderr; exit codes are mapped here and nowhere else.

mod apply;
mod check;
mod csr;
mod demo;
mod docs;
mod expiry;
mod init;
mod plan;
mod refusal;
mod rehearse;
mod rotate;
mod sandbox;
mod show;
mod snapshot;

/// Read and check a saved plan file (what `apply <plan>` does first).
pub use apply::load_plan;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit codes: 0 success (no changes), 1 error, 2 changes present (`--detailed-exitcode`),
/// 3 `apply` paused at a manual step (it printed what to do and the `--confirm` command).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Exit {
    /// Success, nothing to change.
    #[default]
    Ok = 0,
    /// A failure already reported on stdout (e.g. `status --wait` on a failed apply).
    Failed = 1,
    /// Changes present (only with --detailed-exitcode); for `expiry --warn`, a
    /// certificate ends within the window.
    Changes = 2,
    /// `apply` stopped at a manual step the operator must carry out and confirm
    /// (`trustform apply --confirm STEP-ID`); nothing failed.
    Paused = 3,
}

/// Rotate Kubernetes cluster CAs like Terraform changes infrastructure:
/// observe → diff → plan → apply, with trust verified at every step.
#[derive(Debug, Parser)]
#[command(name = "trustform", version, about, max_term_width = 100)]
pub struct Cli {
    /// The cluster's trustform.yaml.
    #[arg(
        short = 'c',
        long,
        global = true,
        default_value = "trustform.yaml",
        env = "TRUSTFORM_CONFIG"
    )]
    pub config: PathBuf,
    /// Say only warnings and errors on stderr (data on stdout is unchanged).
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also say each operation on a node (read, write, run, dial), with its duration.
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole flow on a built-in sandbox cluster: create, init, rotate, plan, apply.
    Demo(demo::Args),
    /// The built-in sandbox cluster.
    #[command(subcommand)]
    Sandbox(sandbox::Command),
    /// Read the cluster's trust into a snapshot (JSON).
    #[command(
        after_help = "Examples:\n  trustform snapshot -o snapshot.json        the inventory's nodes (and the API), for `plan --snapshot`\n  trustform snapshot --root /                this machine, as a node"
    )]
    Snapshot(snapshot::Args),
    /// Write trustform.yaml from the live cluster (desired = current).
    Init(init::Args),
    /// Generate a new CA and move an authority to its next rotation stage.
    #[command(
        after_help = "Examples:\n  trustform rotate kubernetes                a new CA; pre-rotate (trust both, the old one signs)\n  trustform rotate kubernetes                again: rotate (the new one signs), then post-rotate\n  trustform rotate front-proxy --to-end      straight to the end; the plan inserts the stages"
    )]
    Rotate(rotate::Args),
    /// Show the steps that take the cluster to the desired trust state.
    #[command(
        after_help = "Examples:\n  trustform plan -out plan.json              review it, then `trustform apply plan.json`\n  trustform plan --snapshot snapshot.json    offline: the same plan, from a saved snapshot\n  trustform plan --format markdown           a pull-request comment"
    )]
    Plan(plan::Args),
    /// Check trustform.yaml without the cluster: syntax, names, CA files, procedures.
    Validate(check::ValidateArgs),
    /// Rewrite trustform.yaml in trustform's layout (`--check`: only say whether it is).
    Fmt(check::FmtArgs),
    /// Show a saved plan (text, a pull-request comment, JSON, a graph); no cluster needed.
    #[command(
        after_help = "Examples:\n  trustform show plan.json --format markdown > comment.md\n  trustform show plan.json --format markdown --max-bytes 30000"
    )]
    Show(show::Args),
    /// List every certificate with its expiry, soonest first (`--warn 30d` for monitoring).
    #[command(
        after_help = "Examples:\n  trustform expiry                           every certificate of the inventory's nodes\n  trustform expiry --warn 30d                exit 2 when one ends within 30 days\n  trustform expiry --format prometheus > /var/lib/node_exporter/trustform.prom"
    )]
    Expiry(expiry::Args),
    /// Prove a saved plan keeps every trust edge live, step by step, on the cluster now.
    Rehearse(rehearse::Args),
    /// Carry out a plan step by step (journaled, resumable, verified at every stage).
    #[command(
        after_help = "Examples:\n  trustform apply plan.json                  the reviewed plan (refused if the cluster moved)\n  trustform apply                            resume an interrupted apply, or plan and ask\n  trustform apply --confirm STEP-ID          after doing a manual step by hand"
    )]
    Apply(apply::Args),
    /// Decide on pending certificate signing requests under trustform.yaml's policies.
    #[command(
        subcommand,
        after_help = "Examples:\n  trustform csr plan                         each pending request: approve, deny (and why), or left alone\n  trustform csr apply                        write the decisions, the reasons in each condition"
    )]
    Csr(csr::Command),
    /// Where the running or latest apply stands.
    Status(apply::StatusArgs),
    /// Restore every file an apply changed, from its backups.
    #[command(
        after_help = "Example:\n  trustform rollback 3f2a9c1d0b7e            the plan id `trustform status` names"
    )]
    Rollback(apply::RollbackArgs),
    /// Remove a stuck lock, by its id.
    ForceUnlock(apply::UnlockArgs),
    /// Print a shell completion script (`trustform completions bash > /etc/bash_completion.d/trustform`).
    Completions(docs::CompletionsArgs),
    /// Write the man pages (`trustform.1`, `trustform-plan.1`, …).
    Man(docs::ManArgs),
}

/// Whether diagnostics get colours: never with `NO_COLOR` (non-empty), always with
/// `CLICOLOR_FORCE` (non-empty, not `0`), otherwise when stderr is a terminal.
pub fn color(stderr_is_terminal: bool, var: impl Fn(&str) -> Option<std::ffi::OsString>) -> bool {
    let set = |k: &str| var(k).is_some_and(|v| !v.is_empty());
    if set("NO_COLOR") {
        return false;
    }
    if set("CLICOLOR_FORCE") && var("CLICOLOR_FORCE").is_some_and(|v| v != "0") {
        return true;
    }
    stderr_is_terminal
}

/// Accept Terraform's single-dash `-out` for `--out`.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| match a.strip_prefix("-out") {
            Some(rest) if rest.is_empty() || rest.starts_with('=') => format!("--out{rest}"),
            _ => a,
        })
        .collect()
}

/// Run a parsed command.
pub fn run(cli: Cli) -> miette::Result<Exit> {
    crate::verbosity::set(if cli.quiet {
        crate::verbosity::Level::Quiet
    } else if cli.verbose {
        crate::verbosity::Level::Verbose
    } else {
        crate::verbosity::Level::Normal
    });
    // The built-in sandbox's nodes are reached through their own transport (the product
    // never asks whether a node is simulated).
    sandbox::install_transport();
    match cli.command {
        Command::Demo(a) => demo::run(a),
        Command::Sandbox(c) => sandbox::run(c),
        Command::Snapshot(a) => snapshot::run(a, &cli.config),
        Command::Init(a) => init::run(a, &cli.config),
        Command::Rotate(a) => rotate::run(a, &cli.config),
        Command::Plan(a) => plan::run(a, &cli.config),
        Command::Show(a) => show::run(a),
        Command::Validate(a) => check::validate(a, &cli.config),
        Command::Fmt(a) => check::fmt(a, &cli.config),
        Command::Expiry(a) => expiry::run(a, &cli.config),
        Command::Rehearse(a) => rehearse::run(a, &cli.config),
        Command::Apply(a) => apply::run(a, &cli.config),
        Command::Csr(c) => csr::run(c, &cli.config),
        Command::Status(a) => apply::status(a, &cli.config),
        Command::Rollback(a) => apply::rollback(a, &cli.config),
        Command::ForceUnlock(a) => apply::force_unlock(a, &cli.config),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    }
}
