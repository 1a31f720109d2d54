//! `trustform completions SHELL` and `trustform man`: shell completions (clap_complete)
//! and man pages (clap_mangen), generated from the command line itself so they cannot
//! drift from it.

use super::{Cli, Exit};
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// `completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `man`.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write `trustform.1` and one page per command (`trustform-plan.1`, …) here.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// Print the completion script for a shell.
pub fn completions(a: CompletionsArgs) -> miette::Result<Exit> {
    let mut cmd = Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "trustform", &mut std::io::stdout());
    Ok(Exit::Ok)
}

/// Write the man pages.
pub fn man(a: ManArgs) -> miette::Result<Exit> {
    let written = write_man(&a.out).map_err(|e| {
        miette::miette!(
            code = "trustform::io",
            help = "pass a writable directory with --out",
            "cannot write the man pages to {}: {e}",
            a.out.display()
        )
    })?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(Exit::Ok)
}

/// The man pages of `trustform` and every command under it, into `dir`.
pub fn write_man(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = vec![];
    let cmd = Cli::command();
    page(&cmd, "trustform", dir, &mut out)?;
    Ok(out)
}

fn page(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    out: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    let cmd = cmd.clone().name(name.to_string());
    let mut bytes = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut bytes)?;
    let path = dir.join(format!("{name}.1"));
    crate::atomic::write(&path, &bytes, crate::atomic::PUBLIC_MODE)?;
    out.push(path);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        page(sub, &format!("{name}-{}", sub.get_name()), dir, out)?;
    }
    Ok(())
}
