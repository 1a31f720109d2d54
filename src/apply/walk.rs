//! The walker: runs the plan's DAG on tokio with at most `parallelism` steps at once.
//! A step starts when every step it depends on is done; a failed step's dependents never
//! run (they are reported as skipped, naming the failed step upstream) while unrelated
//! branches finish. Every start and finish is journaled (fsync'd) before it counts.
//! A manual step the operator has not confirmed is not run: the walker asks at the
//! prompt when it can ([`World::ask`]), else it journals that it paused there and its
//! dependents wait (they are not skipped: `--confirm` lets the next run go on).

use super::act::{self, Ctx};
use super::error::StepError;
use super::journal::{Event, Journal, now};
use super::material::Material;
use super::progress::Progress;
use crate::config::Issuance;
use crate::exec::{Files, Node};
use crate::plan::Plan;
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Testing aid (`TRUSTFORM_FAULT`): exit the process at a step boundary, or fail a step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// After the step is journaled as done.
    After(String),
    /// After the step's first operation, before it is journaled as done.
    During(String),
    /// The step fails before its first operation (what a pre-flight cannot foresee: a
    /// node that goes away, a disk that fills).
    Fail(String),
}

impl Fault {
    /// Parse `after:<step-id>`, `during:<step-id>` or `fail:<step-id>`.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(id) = s.strip_prefix("after:") {
            Some(Fault::After(id.to_string()))
        } else if let Some(id) = s.strip_prefix("fail:") {
            Some(Fault::Fail(id.to_string()))
        } else {
            s.strip_prefix("during:")
                .map(|id| Fault::During(id.to_string()))
        }
    }
}

/// Asks the operator at the prompt to carry out a manual step; `Some(who)` when they
/// confirm it was done.
pub type Ask = Box<dyn Fn(&crate::plan::Step) -> Option<String> + Send + Sync>;

/// What the walker works with.
pub struct World {
    /// File access with backups.
    pub files: Files,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// CA certificates and keys.
    pub material: Material,
    /// Issuance settings.
    pub issuance: Issuance,
    /// The Kubernetes API, when `inventory.kube` is set.
    pub kube: Option<crate::exec::kube::Access>,
    /// How long an API wait may take.
    pub wait_timeout: std::time::Duration,
    /// How long a restarted component may take to be seen back.
    pub restart: crate::exec::restart::Wait,
    /// How long ago the stage being applied began (a resumed run: per the journal);
    /// gates read the logs written since.
    pub stage_began: Option<std::time::Duration>,
    /// With `--probe`: after each step, wait until the prober has handshaken over every
    /// edge the step could change, in the state it left, before any dependent starts.
    pub settle: Option<super::probe::Settle>,
    /// Manual steps the operator confirmed: step id → `by who at time`.
    pub confirmed: Mutex<BTreeMap<String, String>>,
    /// How to ask the operator at the prompt (none: pause at a manual step).
    pub ask: Option<Ask>,
}

/// The result of one run.
#[derive(Clone, Debug, Default)]
pub struct RunResult {
    /// Steps done in this run.
    pub done: Vec<String>,
    /// Steps done by earlier runs.
    pub already: usize,
    /// Root causes: (step, error).
    pub failed: Vec<(String, String)>,
    /// (step, failed upstream step).
    pub skipped: Vec<(String, String)>,
    /// Warnings of done steps.
    pub warnings: Vec<String>,
    /// Manual steps the walk stopped at: (step, instructions).
    pub paused: Vec<(String, Vec<String>)>,
    /// Wall time, ms.
    pub wall_ms: u64,
    /// Time spent inside steps, summed, ms.
    pub busy_ms: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum St {
    Pending,
    Done,
    Failed,
    Paused,
}

/// Why a walk could not go on (a step's own failure is not one: it is a result).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum WalkError {
    /// The plan's steps do not form a DAG.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Plan(#[from] crate::plan::PlanError),
    /// The runtime that runs the steps could not start.
    #[error("cannot start the step runner: {0}")]
    #[diagnostic(
        code(trustform::apply::runtime),
        help(
            "the machine is out of threads or memory; nothing was changed by this run: run `trustform apply` again"
        )
    )]
    Runtime(#[source] std::io::Error),
    /// A step's task ended without an answer.
    #[error("a step's task ended without an answer: {0}")]
    #[diagnostic(
        code(trustform::apply::task),
        help(
            "the journal holds every step done; run `trustform apply` again to resume, and report this"
        )
    )]
    Task(String),
    /// The journal could not be written.
    #[error("cannot write the journal: {0}")]
    #[diagnostic(
        code(trustform::apply::journal),
        help(
            "check that .trustform/journal is writable and the disk has room, then run `trustform apply` again to resume"
        )
    )]
    Journal(#[source] std::io::Error),
}

/// The plan's DAG: step indices, an arc from each dependency to its dependent.
type Graph = petgraph::graph::DiGraph<usize, ()>;

/// What every step's task shares.
struct Shared {
    plan: Arc<Plan>,
    world: Arc<World>,
    journal: Arc<Journal>,
    progress: Arc<Progress>,
    /// `TRUSTFORM_FAULT=during:<step>`.
    during: Option<String>,
    /// `TRUSTFORM_FAULT=fail:<step>`.
    fail: Option<String>,
    /// When the logs the next gate reads begin.
    logs_since: Mutex<Instant>,
}

/// How one step's task ended: `None` when it paused at a manual step nobody confirmed.
type Ran = (usize, Option<Result<act::Outcome, act::Failure>>, u64);

/// Where every step stands, what is ready to start, and what the run did.
struct Ledger {
    st: Vec<St>,
    /// Dependencies not yet done, per step.
    left: Vec<usize>,
    ready: VecDeque<usize>,
    result: RunResult,
}

/// Walk the plan: start every step whose dependencies are done (at most `parallelism`
/// at once), record each end, then name the steps a failure left unreached.
pub fn walk(
    plan: Arc<Plan>,
    world: Arc<World>,
    journal: Arc<Journal>,
    done_before: &HashSet<String>,
    parallelism: usize,
    fault: Option<Fault>,
    progress: Arc<Progress>,
) -> Result<RunResult, WalkError> {
    let graph = plan.graph()?;
    let started = Instant::now();
    let mut ledger = Ledger::new(&plan, &graph, done_before);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(parallelism.max(1))
        .enable_all()
        .build()
        .map_err(WalkError::Runtime)?;
    let after = match &fault {
        Some(Fault::After(s)) => Some(s.clone()),
        _ => None,
    };
    // Gates read the logs written since the last gate passed (or this run began).
    let began = world
        .stage_began
        .and_then(|ago| Instant::now().checked_sub(ago))
        .unwrap_or_else(Instant::now);
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        world,
        journal: journal.clone(),
        progress: progress.clone(),
        during: match &fault {
            Some(Fault::During(s)) => Some(s.clone()),
            _ => None,
        },
        fail: match &fault {
            Some(Fault::Fail(s)) => Some(s.clone()),
            _ => None,
        },
        logs_since: Mutex::new(began),
    });
    rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
        let mut running = tokio::task::JoinSet::new();
        loop {
            while let Some(i) = ledger.ready.pop_front() {
                let (shared, sem) = (shared.clone(), sem.clone());
                running.spawn(async move {
                    let _permit = sem.acquire_owned().await.expect("semaphore open");
                    run_step(shared, i).await
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let ran = joined.map_err(|e| WalkError::Task(e.to_string()))?;
            ledger.ended(ran, &plan, &graph, &journal, &progress, after.as_deref())?;
        }
        Ok::<(), WalkError>(())
    })?;
    ledger.skip_unreached(&plan, &graph, &journal, &progress)?;
    let mut result = ledger.result;
    result.wall_ms = started.elapsed().as_millis() as u64;
    Ok(result)
}

/// One step: a manual one is confirmed at the prompt (or pauses), the start is
/// journaled, the step's operations run on the blocking pool, and with `--probe` the
/// prober settles over the edges it could change.
async fn run_step(shared: Arc<Shared>, i: usize) -> Ran {
    let step_id = shared.plan.steps[i].id.clone();
    let (world, journal, progress) = (&shared.world, &shared.journal, &shared.progress);
    if shared.plan.steps[i].manual().is_some() {
        let known = world
            .confirmed
            .lock()
            .expect("confirmed lock")
            .contains_key(&step_id);
        if !known {
            // Ask at the prompt if we can; otherwise pause here.
            let s = shared.clone();
            let who = tokio::task::spawn_blocking(move || {
                s.world.ask.as_ref().and_then(|ask| ask(&s.plan.steps[i]))
            })
            .await
            .ok()
            .flatten();
            let Some(who) = who else {
                return (i, None, 0);
            };
            let e = Event::Confirmed {
                at: now(),
                step: step_id.clone(),
                who,
            };
            if let Err(err) = journal.record(&e) {
                let f = act::Failure::from(StepError::Journal(err.to_string()));
                return (i, Some(Err(f)), 0);
            }
            progress.event(&e);
            if let Event::Confirmed { at, who, .. } = e {
                world
                    .confirmed
                    .lock()
                    .expect("confirmed lock")
                    .insert(step_id.clone(), format!("by {who} at {at}"));
            }
        }
    }
    let start = Event::StepStart {
        at: now(),
        step: step_id,
    };
    if let Err(e) = journal.record(&start) {
        let f = act::Failure::from(StepError::Journal(e.to_string()));
        return (i, Some(Err(f)), 0);
    }
    progress.event(&start);
    let s = shared.clone();
    let (res, ms) = tokio::task::spawn_blocking(move || operate(&s, i))
        .await
        .unwrap_or_else(|e| (Err(StepError::Panicked(e.to_string()).into()), 0));
    (i, Some(res), ms)
}

/// The step's operations (blocking), and how long they took, ms.
fn operate(s: &Shared, i: usize) -> (Result<act::Outcome, act::Failure>, u64) {
    let t = Instant::now();
    let step = &s.plan.steps[i];
    let world = &s.world;
    let confirmed = world
        .confirmed
        .lock()
        .expect("confirmed lock")
        .get(&step.id)
        .cloned();
    let ctx = Ctx {
        files: &world.files,
        nodes: &world.nodes,
        material: &world.material,
        issuance: &world.issuance,
        die_during: s.during.as_deref(),
        kube: world.kube.as_ref(),
        wait_timeout: world.wait_timeout,
        restart: world.restart,
        logs_since: &s.logs_since,
        confirmed: confirmed.as_deref(),
    };
    let res = if s.fail.as_deref() == Some(step.id.as_str()) {
        Err(act::Failure::from(StepError::Injected))
    } else {
        act::run(&ctx, step)
    };
    let ms = t.elapsed().as_millis() as u64;
    if res.is_ok()
        && let Some(settle) = &world.settle
    {
        settle.wait(
            &super::probe::Affects::of(step),
            std::time::Duration::from_secs(30),
        );
    }
    (res, ms)
}

/// Journal an event (fsync'd before it counts), then show it.
fn record(journal: &Journal, progress: &Progress, e: &Event) -> Result<(), WalkError> {
    journal.record(e).map_err(WalkError::Journal)?;
    progress.event(e);
    Ok(())
}

impl Ledger {
    /// Steps done by earlier runs are done; the rest wait for their dependencies.
    fn new(plan: &Plan, graph: &Graph, done_before: &HashSet<String>) -> Self {
        let n = plan.steps.len();
        let mut st = vec![St::Pending; n];
        let mut result = RunResult::default();
        for (i, s) in plan.steps.iter().enumerate() {
            if done_before.contains(&s.id) {
                st[i] = St::Done;
                result.already += 1;
            }
        }
        let left: Vec<usize> = (0..n)
            .map(|i| {
                graph
                    .neighbors_directed(NodeIndex::new(i), Direction::Incoming)
                    .filter(|d| st[graph[*d]] != St::Done)
                    .count()
            })
            .collect();
        let ready = (0..n)
            .filter(|&i| st[i] == St::Pending && left[i] == 0)
            .collect();
        Self {
            st,
            left,
            ready,
            result,
        }
    }

    /// Journal how a step ended (its gate, then done, failed or paused) and make its
    /// dependents ready when it is done.
    fn ended(
        &mut self,
        (i, res, ms): Ran,
        plan: &Plan,
        graph: &Graph,
        journal: &Journal,
        progress: &Progress,
        exit_after: Option<&str>,
    ) -> Result<(), WalkError> {
        self.result.busy_ms += ms;
        let id = plan.steps[i].id.clone();
        let record = |e: Event| record(journal, progress, &e);
        let Some(res) = res else {
            let instructions = plan.steps[i].manual().unwrap_or_default().to_vec();
            record(Event::Paused {
                at: now(),
                step: id.clone(),
                instructions: instructions.clone(),
            })?;
            self.st[i] = St::Paused;
            self.result.paused.push((id, instructions));
            return Ok(());
        };
        let gate = match &res {
            Ok(o) => o.gate.as_ref(),
            Err(f) => f.gate.as_ref(),
        };
        // What a step reports goes to the journal, the output and the summary: with
        // no key material, whatever file it quotes.
        let shown = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| crate::redact::text(s).into_owned())
                .collect()
        };
        if let Some(g) = gate {
            record(Event::Gate {
                at: now(),
                step: id.clone(),
                ok: g.failures.is_empty(),
                checks: g.checks,
                failures: shown(&g.failures),
            })?;
        }
        match res {
            Ok(o) => {
                let warnings = shown(&o.warnings);
                record(Event::StepDone {
                    at: now(),
                    step: id.clone(),
                    ms,
                    did: shown(&o.did),
                    warnings: warnings.clone(),
                })?;
                self.result
                    .warnings
                    .extend(warnings.iter().map(|w| format!("{id}: {w}")));
                self.result.done.push(id.clone());
                self.st[i] = St::Done;
                for d in graph.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
                    let j = graph[d];
                    self.left[j] -= 1;
                    if self.left[j] == 0 && self.st[j] == St::Pending {
                        self.ready.push_back(j);
                    }
                }
                if exit_after == Some(id.as_str()) {
                    eprintln!("TRUSTFORM_FAULT: exiting after {id}");
                    std::process::exit(99);
                }
            }
            Err(act::Failure { error, .. }) => {
                let error = crate::redact::text(&super::error::line(&error)).into_owned();
                record(Event::StepFailed {
                    at: now(),
                    step: id.clone(),
                    error: error.clone(),
                })?;
                self.st[i] = St::Failed;
                self.result.failed.push((id, error));
            }
        }
        Ok(())
    }

    /// Whatever is still pending waits on a failed step (journaled as skipped, naming the
    /// nearest one) or on a manual step (it waits for `--confirm`: not skipped).
    fn skip_unreached(
        &mut self,
        plan: &Plan,
        graph: &Graph,
        journal: &Journal,
        progress: &Progress,
    ) -> Result<(), WalkError> {
        for i in 0..plan.steps.len() {
            if self.st[i] != St::Pending {
                continue;
            }
            let mut seen = HashSet::new();
            let mut queue = VecDeque::from([NodeIndex::new(i)]);
            let mut upstream = None;
            while let Some(x) = queue.pop_front() {
                if !seen.insert(x) {
                    continue;
                }
                if self.st[graph[x]] == St::Failed {
                    upstream = Some(plan.steps[graph[x]].id.clone());
                    break;
                }
                queue.extend(graph.neighbors_directed(x, Direction::Incoming));
            }
            let Some(upstream) = upstream else {
                continue;
            };
            record(
                journal,
                progress,
                &Event::StepSkipped {
                    at: now(),
                    step: plan.steps[i].id.clone(),
                    upstream: upstream.clone(),
                },
            )?;
            self.result
                .skipped
                .push((plan.steps[i].id.clone(), upstream));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miette::Diagnostic;

    #[test]
    fn faults_parse_and_nothing_else_does() {
        assert_eq!(
            Fault::parse("after:a/b@c"),
            Some(Fault::After("a/b@c".into()))
        );
        assert_eq!(Fault::parse("during:x"), Some(Fault::During("x".into())));
        assert_eq!(Fault::parse("fail:y"), Some(Fault::Fail("y".into())));
        assert_eq!(Fault::parse("crash:y"), None);
        assert_eq!(Fault::parse(""), None);
    }

    #[test]
    fn every_walk_error_has_a_code_and_a_help_line() {
        let io = || std::io::Error::other("disk full");
        for (e, code) in [
            (WalkError::Runtime(io()), "trustform::apply::runtime"),
            (
                WalkError::Task("cancelled".into()),
                "trustform::apply::task",
            ),
            (WalkError::Journal(io()), "trustform::apply::journal"),
        ] {
            assert_eq!(e.code().map(|c| c.to_string()).as_deref(), Some(code));
            let help = e.help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.contains("trustform apply"), "{code}: {help}");
            assert!(!e.to_string().is_empty());
        }
        assert!(
            WalkError::Journal(io()).to_string().contains("disk full"),
            "the cause is named"
        );
    }
}
