//! How much trustform says on stderr besides its data: `--quiet` keeps only warnings and
//! errors, `--verbose` adds every operation on a node (what was read, written or run
//! there, and how long it took). Set once by the command line; read everywhere a
//! diagnostic is printed. Data on stdout (plans, JSON, tables) is never affected.

use std::sync::atomic::{AtomicU8, Ordering};

/// The three levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `--quiet`: warnings and errors only.
    Quiet = 0,
    /// The default: notes on what was done, progress.
    Normal = 1,
    /// `--verbose`: also each operation on a node.
    Verbose = 2,
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Normal as u8);

/// Set the level for this process.
pub fn set(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// The level in force.
pub fn level() -> Level {
    match LEVEL.load(Ordering::Relaxed) {
        0 => Level::Quiet,
        2 => Level::Verbose,
        _ => Level::Normal,
    }
}

/// Whether progress and notes are shown (not `--quiet`).
pub fn chatty() -> bool {
    level() >= Level::Normal
}

/// Whether each operation on a node is shown (`--verbose`).
pub fn verbose() -> bool {
    level() == Level::Verbose
}

/// A note on stderr (what was done, what was noticed); not with `--quiet`.
pub fn note(line: impl std::fmt::Display) {
    if chatty() {
        eprintln!("{line}");
    }
}

/// A warning on stderr: always shown.
pub fn warn(line: impl std::fmt::Display) {
    eprintln!("Warning: {line}");
}

/// A detail on stderr: only with `--verbose`.
pub fn detail(line: impl std::fmt::Display) {
    if verbose() {
        eprintln!("{line}");
    }
}
