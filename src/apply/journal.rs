//! The journal: `.trustform/journal/<plan-id>.jsonl`, one fsync'd JSON line per event.
//! The plan it runs is kept beside it (`<plan-id>.plan.json`) so `apply` can resume and
//! `status` can report without the original file.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One journal line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An apply run began (a resume starts another run).
    ApplyStart {
        /// Time.
        at: String,
        /// Plan id.
        plan_id: String,
        /// Steps in the plan.
        steps: usize,
        /// Steps already done by earlier runs.
        resumed: usize,
        /// user@host.
        who: String,
        /// Process id.
        pid: u32,
    },
    /// A step began.
    StepStart {
        /// Time.
        at: String,
        /// Step id.
        step: String,
    },
    /// A step finished.
    StepDone {
        /// Time.
        at: String,
        /// Step id.
        step: String,
        /// Milliseconds.
        ms: u64,
        /// What was done, one line per operation.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        did: Vec<String>,
        /// What could not be done here and is left to the operator.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    /// A step failed.
    StepFailed {
        /// Time.
        at: String,
        /// Step id.
        step: String,
        /// Why.
        error: String,
    },
    /// A step was not run because an upstream step failed.
    StepSkipped {
        /// Time.
        at: String,
        /// Step id.
        step: String,
        /// The failed step upstream.
        upstream: String,
    },
    /// The walk reached a manual step the operator has not confirmed: the apply stops
    /// there (`trustform apply --confirm STEP-ID` goes on).
    Paused {
        /// Time.
        at: String,
        /// Step id.
        step: String,
        /// What the operator must do, one line each.
        instructions: Vec<String>,
    },
    /// The operator confirmed a manual step (`--confirm`, or at the prompt): the walk
    /// treats it as carried out.
    Confirmed {
        /// Time.
        at: String,
        /// Step id.
        step: String,
        /// user@host.
        who: String,
    },
    /// A gate's result.
    Gate {
        /// Time.
        at: String,
        /// Step id.
        step: String,
        /// Passed.
        ok: bool,
        /// Checks made.
        checks: usize,
        /// Failures, one line each.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failures: Vec<String>,
    },
    /// The run ended.
    ApplyDone {
        /// Time.
        at: String,
        /// Every step done.
        ok: bool,
        /// Steps done (all runs).
        done: usize,
        /// Steps failed in this run.
        failed: usize,
        /// Steps skipped in this run.
        skipped: usize,
        /// Manual steps the run stopped at.
        #[serde(default, skip_serializing_if = "is_zero")]
        paused: usize,
    },
    /// The plan's changes were rolled back.
    RolledBack {
        /// Time.
        at: String,
        /// Files restored.
        files: usize,
    },
}

pub use crate::clock::now;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Every journal under a state directory: (last modified, plan id).
pub fn list(state: &Path) -> Vec<(std::time::SystemTime, String)> {
    let Ok(rd) = std::fs::read_dir(dir(state)) else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| {
            let id = e
                .file_name()
                .into_string()
                .ok()?
                .strip_suffix(".jsonl")?
                .to_string();
            let t = e.metadata().and_then(|m| m.modified()).ok()?;
            Some((t, id))
        })
        .collect()
}

/// The journal directory under a state directory (`.trustform`).
pub fn dir(state: &Path) -> PathBuf {
    state.join("journal")
}

/// The journal file of a plan.
pub fn path(state: &Path, plan_id: &str) -> PathBuf {
    dir(state).join(format!("{plan_id}.jsonl"))
}

/// The saved plan of a journal.
pub fn plan_path(state: &Path, plan_id: &str) -> PathBuf {
    dir(state).join(format!("{plan_id}.plan.json"))
}

/// An open journal.
pub struct Journal {
    file: Mutex<std::fs::File>,
}

impl Journal {
    /// Open (append) the journal of a plan.
    pub fn open(state: &Path, plan_id: &str) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir(state))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path(state, plan_id))?;
        Ok(Self {
            file: Mutex::new(file),
        })
    }

    /// Append one event and fsync it.
    pub fn record(&self, e: &Event) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).expect("event serialises");
        line.push(b'\n');
        let mut f = self.file.lock().expect("journal lock");
        f.write_all(&line)?;
        f.sync_data()
    }
}

/// How long ago the stage being applied began, from a journal: the last gate that passed,
/// else the first run's start (`None`: a new journal). A gate reads the logs written
/// since then, across resumed runs.
pub fn stage_began(events: &[Event]) -> Option<std::time::Duration> {
    let at = events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Gate { at, ok: true, .. } => Some(at),
            _ => None,
        })
        .or_else(|| {
            events.iter().find_map(|e| match e {
                Event::ApplyStart { at, .. } => Some(at),
                _ => None,
            })
        })?;
    let t = crate::clock::parse(at)?;
    let ago = time::OffsetDateTime::now_utc() - t;
    std::time::Duration::try_from(ago).ok()
}

/// Read a journal. A torn last line (a crash mid-append) is ignored.
pub fn read(path: &Path) -> std::io::Result<Vec<Event>> {
    let bytes = match crate::input::read(path, crate::input::Kind::Journal) {
        Ok(b) => b,
        Err(crate::input::InputError::Io { source, .. }) => return Err(source),
        Err(e) if e.is_missing() => return Err(std::io::ErrorKind::NotFound.into()),
        Err(e) => return Err(std::io::Error::other(e.to_string())),
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// What a journal says about a plan's steps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Steps done, in order.
    pub done: Vec<String>,
    /// Steps started and not finished (running, or interrupted by a crash).
    pub open: Vec<String>,
    /// Steps whose last run failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Steps skipped in the last run, with the failed upstream step.
    pub skipped: Vec<(String, String)>,
    /// Gate failures of the last run.
    pub gate_failures: Vec<String>,
    /// Warnings of done steps.
    pub warnings: Vec<String>,
    /// The last run finished (`Some(ok)`), or not (`None`: running or crashed).
    pub finished: Option<bool>,
    /// Rolled back.
    pub rolled_back: bool,
    /// Runs.
    pub runs: usize,
    /// Pid of the last run.
    pub pid: Option<u32>,
    /// Manual steps the last run stopped at, not confirmed since.
    pub paused: Vec<String>,
    /// Manual steps the operator confirmed: (step, `by who at time`).
    pub confirmed: Vec<(String, String)>,
}

impl Progress {
    /// Whether the operator confirmed manual step `step`.
    pub fn is_confirmed(&self, step: &str) -> bool {
        self.confirmed.iter().any(|(s, _)| s == step)
    }
}

impl Progress {
    /// Fold the events.
    pub fn of(events: &[Event]) -> Self {
        let mut p = Progress::default();
        for e in events {
            match e {
                Event::ApplyStart { pid, .. } => {
                    p.runs += 1;
                    p.pid = Some(*pid);
                    p.finished = None;
                    p.open.clear();
                    p.failed.clear();
                    p.skipped.clear();
                    p.gate_failures.clear();
                    p.paused.clear();
                }
                Event::Paused { step, .. } => {
                    if !p.paused.contains(step) {
                        p.paused.push(step.clone());
                    }
                }
                Event::Confirmed { at, step, who } => {
                    p.paused.retain(|s| s != step);
                    if !p.is_confirmed(step) {
                        p.confirmed
                            .push((step.clone(), format!("by {who} at {at}")));
                    }
                }
                Event::StepStart { step, .. } => {
                    p.open.retain(|s| s != step);
                    p.open.push(step.clone());
                }
                Event::StepDone { step, warnings, .. } => {
                    p.open.retain(|s| s != step);
                    p.failed.retain(|(s, _)| s != step);
                    if !p.done.contains(step) {
                        p.done.push(step.clone());
                    }
                    p.warnings
                        .extend(warnings.iter().map(|w| format!("{step}: {w}")));
                }
                Event::StepFailed { step, error, .. } => {
                    p.open.retain(|s| s != step);
                    p.failed.push((step.clone(), error.clone()));
                }
                Event::StepSkipped { step, upstream, .. } => {
                    p.skipped.push((step.clone(), upstream.clone()));
                }
                Event::Gate { failures, .. } => p.gate_failures.extend(failures.iter().cloned()),
                Event::ApplyDone { ok, .. } => p.finished = Some(*ok),
                Event::RolledBack { .. } => p.rolled_back = true,
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_ignored_and_progress_folds() {
        let tmp = tempfile::tempdir().unwrap();
        let j = Journal::open(tmp.path(), "p1").unwrap();
        let at = || now();
        for e in [
            Event::StepStart {
                at: at(),
                step: "a".into(),
            },
            Event::StepDone {
                at: at(),
                step: "a".into(),
                ms: 1,
                did: vec![],
                warnings: vec![],
            },
            Event::StepStart {
                at: at(),
                step: "b".into(),
            },
        ] {
            j.record(&e).unwrap();
        }
        let path = path(tmp.path(), "p1");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"event":"step_done","at":"x","st"#)
            .unwrap();
        let p = Progress::of(&read(&path).unwrap());
        assert_eq!(p.done, ["a"]);
        assert_eq!(p.open, ["b"], "b was interrupted");
        assert_eq!(p.finished, None);
    }

    #[test]
    fn a_pause_lasts_until_the_step_is_confirmed() {
        let start = || Event::ApplyStart {
            at: "t0".into(),
            plan_id: "p".into(),
            steps: 2,
            resumed: 0,
            who: "op@host".into(),
            pid: 1,
        };
        let paused = Event::Paused {
            at: "t1".into(),
            step: "m".into(),
            instructions: vec!["do it".into()],
        };
        let done = Event::ApplyDone {
            at: "t2".into(),
            ok: false,
            done: 1,
            failed: 0,
            skipped: 0,
            paused: 1,
        };
        let p = Progress::of(&[start(), paused.clone(), done.clone()]);
        assert_eq!(p.paused, ["m"]);
        assert_eq!(p.finished, Some(false));
        assert!(!p.is_confirmed("m"));
        let confirmed = Event::Confirmed {
            at: "t3".into(),
            step: "m".into(),
            who: "op@host".into(),
        };
        let p = Progress::of(&[start(), paused, done, start(), confirmed]);
        assert!(p.paused.is_empty());
        assert!(p.is_confirmed("m"));
        assert_eq!(
            p.confirmed,
            [("m".to_string(), "by op@host at t3".to_string())]
        );
        // `paused` is left out of the line when zero, so older journals still read.
        let line = serde_json::to_string(&Event::ApplyDone {
            at: "t".into(),
            ok: true,
            done: 2,
            failed: 0,
            skipped: 0,
            paused: 0,
        })
        .unwrap();
        assert!(!line.contains("paused"), "{line}");
        assert!(matches!(
            serde_json::from_str::<Event>(&line).unwrap(),
            Event::ApplyDone { paused: 0, .. }
        ));
    }
}
