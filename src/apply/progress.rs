//! Progress while applying: an indicatif line per running step on a terminal; plain
//! lines otherwise; with `--format json`, one JSON event per line (`step_start`,
//! `step_done`, `step_failed`, `step_skipped`, `paused`, `confirmed`, `gate`, `summary`),
//! after the `preflight` line ([`super::preflight::Passed`]). With `--quiet` the text
//! modes say only what failed, paused or warned, and the summary.

use super::journal::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

/// How to show progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Spinners on stderr (a terminal).
    Bars,
    /// One line per event on stdout.
    Lines,
    /// One JSON event per line on stdout.
    Json,
}

/// The reporter.
pub struct Progress {
    mode: Mode,
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
    total: usize,
    done: Mutex<usize>,
}

impl Progress {
    /// A reporter for `total` steps.
    pub fn new(mode: Mode, total: usize, already: usize) -> Self {
        Self {
            mode,
            multi: MultiProgress::new(),
            bars: Mutex::new(HashMap::new()),
            total,
            done: Mutex::new(already),
        }
    }

    /// Print a line that is not an event (text modes only; not with `--quiet`).
    pub fn note(&self, line: &str) {
        if crate::verbosity::chatty() {
            self.say(line);
        }
    }

    /// Print a line that is not an event, even with `--quiet` (a failure, a warning).
    pub fn say(&self, line: &str) {
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(line);
            }
            Mode::Lines => println!("{line}"),
            Mode::Json => {}
        }
    }

    /// Report an event.
    pub fn event(&self, e: &Event) {
        if self.mode == Mode::Json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string(e).expect("event serialises")
            );
            return;
        }
        let count = |bump: bool| {
            let mut d = self.done.lock().expect("progress lock");
            if bump {
                *d += 1;
            }
            format!("[{}/{}]", *d, self.total)
        };
        match e {
            Event::StepStart { .. } if !crate::verbosity::chatty() => {}
            Event::StepStart { step, .. } => {
                if self.mode == Mode::Bars {
                    let bar = self.multi.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
                            .expect("template"),
                    );
                    bar.set_message(step.clone());
                    bar.enable_steady_tick(Duration::from_millis(120));
                    self.bars
                        .lock()
                        .expect("progress lock")
                        .insert(step.clone(), bar);
                } else {
                    println!("{step}: starting");
                }
            }
            Event::StepDone {
                step,
                ms,
                did,
                warnings,
                ..
            } => {
                let c = count(true);
                self.clear(step);
                self.note(&format!("{c} {step}: done ({ms} ms)"));
                for d in did {
                    self.note(&format!("    {d}"));
                }
                for w in warnings {
                    self.say(&format!("    warning: {w}"));
                }
            }
            Event::StepFailed { step, error, .. } => {
                self.clear(step);
                self.say(&format!("{step}: FAILED: {error}"));
            }
            Event::StepSkipped { step, upstream, .. } => {
                self.say(&format!("{step}: skipped: upstream step {upstream} failed"));
            }
            Event::Paused { step, .. } => {
                self.say(&format!(
                    "{step}: paused: a manual step, waiting for the operator"
                ));
            }
            Event::Confirmed { step, who, .. } => {
                self.note(&format!("{step}: confirmed by {who}"));
            }
            Event::Gate {
                step,
                ok,
                checks,
                failures,
                ..
            } => {
                let verdict = if *ok { "passed" } else { "FAILED" };
                let line = format!("{step}: gate {verdict} ({checks} checks)");
                if *ok {
                    self.note(&line);
                } else {
                    self.say(&line);
                }
                for f in failures.iter().take(20) {
                    self.say(&format!("    {f}"));
                }
                if failures.len() > 20 {
                    self.say(&format!("    … and {} more", failures.len() - 20));
                }
            }
            _ => {}
        }
    }

    /// Run `f` with the progress lines out of the way (to ask at the prompt).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }

    /// End a step's spinner (its line is printed after).
    fn clear(&self, step: &str) {
        if let Some(bar) = self.bars.lock().expect("progress lock").remove(step) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// The final summary (JSON mode prints it as an event; text modes print `lines`).
    pub fn summary(&self, json: serde_json::Value, lines: &[String]) {
        match self.mode {
            Mode::Json => {
                let mut v = json;
                v["event"] = "summary".into();
                println!("{v}");
            }
            _ => {
                for l in lines {
                    println!("{l}");
                }
            }
        }
    }
}
