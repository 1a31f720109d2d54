//! `trustform apply`, `rollback`, `status` and `force-unlock`.

use super::Exit;
use super::refusal::Refusal;
use crate::apply::cluster_lock::{self, ClusterLock, Holder, Refused};
use crate::apply::journal::{self, Event, Journal, Progress as Journaled};
use crate::apply::progress::{Mode, Progress};
use crate::apply::{self, lock, preflight, prepare, probe, status};
use crate::config::{self, Loaded};
use crate::exec::{self, Files, Node};
use crate::plan::{self, FORMAT_VERSION, Op, Plan};
use crate::{observe, render};
use miette::{Diagnostic, NamedSource, SourceSpan};
use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Output of `apply` and `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutFormat {
    /// For people (a progress line per running step on a terminal).
    Text,
    /// JSON, one object per line (apply: events; status: the status).
    Json,
}

/// `apply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A plan saved with `trustform plan -out`. Without it, apply plans, shows the plan and
    /// asks for approval.
    pub plan: Option<PathBuf>,
    /// Do not ask for approval (nor, at a manual step, whether it was done: apply pauses
    /// there).
    #[arg(long)]
    pub auto_approve: bool,
    /// Record that you carried out this manual step (as `apply` printed it when it
    /// paused there), then go on. Repeatable, in order. apply exits 3 when it pauses at a
    /// manual step.
    #[arg(long, value_name = "STEP-ID")]
    pub confirm: Vec<String>,
    /// Steps run at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub parallelism: u16,
    /// Wait this long for another apply's lock (e.g. 30s, 5m); by default fail at once.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// Progress output.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutFormat,
    /// How long a step may wait on the cluster: published CAs, PodDisruptionBudgets,
    /// each rollout.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
    /// How long a restarted component may take to be seen back (a new pod ready, the
    /// kubelet active again) before its step fails.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub restart_timeout: Duration,
    /// How long a restarted component must stay healthy, seen at every look, before its
    /// step is done (a component that crashes right after it starts is not back).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, env = "TRUSTFORM_RESTART_SETTLE")]
    pub restart_settle: Duration,
    /// Gates read the control-plane and kubelet logs written since the stage began and
    /// fail on a TLS error, quoting it. Once you have looked at the errors a gate
    /// quoted, resume with this flag: gates read only what is logged from now on.
    #[arg(long)]
    pub accept_logged_errors: bool,
    /// Apply a saved plan without rehearsing it first. It exists to show the live prober
    /// catching a plan that breaks trust; never use it on a real cluster.
    #[arg(long)]
    pub skip_rehearse: bool,
    /// Sandbox only: while applying, handshake over every trust edge every 200 ms against
    /// the endpoints `trustform sandbox up` serves, and fail if a managed edge broke.
    #[arg(long)]
    pub probe: bool,
    /// With --probe, the sandbox's directory, for nodes reached over SSH (otherwise it is
    /// found from the nodes' local roots).
    #[arg(long, value_name = "DIR", requires = "probe")]
    pub probe_sandbox: Option<PathBuf>,
}

/// `rollback`.
#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// The plan id (`trustform status` shows it).
    pub plan_id: String,
    /// Wait this long for the lock.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,
    /// How long a restarted component may take to be seen back.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub restart_timeout: Duration,
    /// How long a restarted component must stay healthy before the next one restarts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, env = "TRUSTFORM_RESTART_SETTLE")]
    pub restart_settle: Duration,
}

/// `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// A plan id; by default the running or latest apply.
    pub plan_id: Option<String>,
    /// Follow a running apply until it ends.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: OutFormat,
}

/// `force-unlock`.
#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    /// The lock id, as a refused apply or `trustform status` names it.
    pub id: String,
}

/// A plan file that cannot be used.
#[derive(Debug, Error, Diagnostic)]
#[error("{path}: {reason}")]
#[diagnostic(code(trustform::apply::bad_plan))]
pub struct BadPlan {
    path: String,
    reason: String,
    #[source_code]
    src: Option<NamedSource<String>>,
    #[label("here")]
    span: Option<SourceSpan>,
    #[help]
    help: String,
}

fn state_dir(loaded: &Loaded) -> PathBuf {
    loaded.dir.join(".trustform")
}

fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> miette::Report {
    let f = Refusal::io(what);
    move |e| f(e).into()
}

/// Read and check a saved plan: JSON, format, version, checksum, graph.
pub fn load_plan(path: &Path) -> Result<Plan, BadPlan> {
    load_plan_text(path).map(|(p, _)| p)
}

/// Read and check a saved plan: JSON, format, version, checksum, graph. Returns the plan
/// and the file's text (to point at a step the pre-flight refuses).
pub fn load_plan_text(path: &Path) -> Result<(Plan, String), BadPlan> {
    let text = crate::input::read_text(path, crate::input::Kind::Plan).map_err(|e| BadPlan {
        path: path.display().to_string(),
        reason: e.reason(),
        src: None,
        span: None,
        help: "pass the file written by `trustform plan -out <file>`".into(),
    })?;
    // A plan never holds key material, but a file passed as one may: show it redacted,
    // and quote at most 240 characters of what a parser says.
    let shown = crate::redact::Redacted::of(&path.display().to_string(), &text);
    let bad = |reason: String, span: Option<SourceSpan>, help: &str| BadPlan {
        path: path.display().to_string(),
        reason: crate::input::clip_lines(&shown.message(&reason), 240).into_owned(),
        src: Some(shown.source(path.display().to_string())),
        span: span.map(|s| shown.span(s)),
        help: help.into(),
    };
    let plan: Plan = serde_json::from_str(&text).map_err(|e| {
        let span = crate::observe::line_span(&text, e.line().max(1));
        let (reason, help) = if e.is_eof() {
            (
                format!("the plan file is truncated: {e}"),
                "the file ends early; write it again with `trustform plan -out <file>`",
            )
        } else {
            (
                format!("not a trustform plan: {e}"),
                "pass the JSON written by `trustform plan -out <file>`; never edit a plan by hand",
            )
        };
        bad(reason, Some(span), help)
    })?;
    let at = |needle: &str| {
        text.find(needle)
            .map(|o| SourceSpan::from((o, needle.len())))
    };
    if plan.format_version != FORMAT_VERSION {
        return Err(bad(
            format!(
                "plan format {} is not the format this trustform reads ({FORMAT_VERSION})",
                plan.format_version
            ),
            at("\"format_version\""),
            "make the plan again with this trustform",
        ));
    }
    let ours = env!("CARGO_PKG_VERSION");
    if plan.tool_version != ours {
        return Err(bad(
            format!(
                "the plan was made by trustform {}, this is trustform {ours}",
                plan.tool_version
            ),
            at(&format!("\"{}\"", plan.tool_version)),
            "apply a plan with the trustform that made it, or make the plan again with this one",
        ));
    }
    if plan.checksum != plan.compute_checksum() {
        return Err(bad(
            "the plan was changed after trustform wrote it (its checksum does not match)".into(),
            at("\"checksum\""),
            "never edit a plan by hand: run `trustform plan -out <file>` again and review that",
        ));
    }
    plan.graph()
        .map_err(|e| bad(e.to_string(), None, "make the plan again"))?;
    Ok((plan, text))
}

/// Run `apply`.
pub fn run(a: Args, config_path: &Path) -> miette::Result<Exit> {
    run_reporting(a, config_path).map(|r| r.exit)
}

/// What an apply did, for the demo's closing table.
#[derive(Debug, Default)]
pub struct Applied {
    /// The exit code.
    pub exit: Exit,
    /// Steps done (this run and earlier ones).
    pub steps: usize,
    /// Wall time of the walk, ms.
    pub wall_ms: u64,
    /// The live prober's report, with `--probe`.
    pub probe: Option<probe::Report>,
}

/// Run, and say what was done. The phases, in order: choose the plan (and whether this
/// is a resume), pre-flight, take the locks, open the journal and the prober, walk the
/// DAG, report.
pub fn run_reporting(a: Args, config_path: &Path) -> miette::Result<Applied> {
    let loaded = config::load(config_path)?;
    let state = state_dir(&loaded);
    let nodes = prepare::nodes_of(&loaded)?;
    // The prober needs the sandbox's listeners: fail before anything else if they are not up.
    // The prober's view of the nodes: the sandbox's own directories, through the
    // transport that can tell what its processes hold (nodes reached over SSH cannot).
    let probed_nodes = a.probe.then(|| {
        let mut v = nodes.clone();
        if let Some(dir) = &a.probe_sandbox {
            for n in v.values_mut().filter(|n| n.root.is_none()) {
                let root = dir.join("nodes").join(&n.name);
                *n = Node::local(&n.name, &root).with_kubeconfigs(n.kubeconfigs.clone());
            }
        }
        v
    });
    let endpoints = match &probed_nodes {
        Some(n) => Some(probe::endpoints_of(n)?),
        None => None,
    };
    let json = a.format == OutFormat::Json;
    // Every node's trust files as the apply starts, read once (one round trip per node):
    // the staleness check, the material and the pre-flight all look at these.
    let views = exec::read_views(&nodes);
    let Some(chosen) = choose(&a, &loaded, &state, &views)? else {
        return Ok(Applied::default());
    };
    let Chosen {
        plan,
        resume,
        plan_file,
        snap,
        stale,
    } = chosen;
    let id = plan.id();
    if a.skip_rehearse && !resume {
        crate::verbosity::warn(format_args!(
            "--skip-rehearse: applying plan {id} without proving that every trust edge stays live. Edges may break; this flag exists to test the live prober."
        ));
    }
    // Another apply running: say so now (its writes would make the pre-flight lie).
    lock::wait_free(&state, a.lock_timeout).map_err(|e| lock_error(e, &state))?;
    // What earlier runs did (a resume), and the CAs this apply can write.
    let backup = state.join("backup").join(&id);
    let prior = if resume {
        Journaled::of(&journal::read(&journal::path(&state, &id)).unwrap_or_default())
    } else {
        Journaled::default()
    };
    let done_before: HashSet<String> = prior.done.iter().cloned().collect();
    // `--confirm`: only the manual steps apply has reached (nothing recorded if refused).
    let confirmed_before: HashSet<String> =
        prior.confirmed.iter().map(|(s, _)| s.clone()).collect();
    let confirms = apply::manual::check(&plan, &done_before, &confirmed_before, &a.confirm)?;
    let material = prepare::material(&loaded, &views, resume.then_some(backup.as_path()));
    // Pre-flight: everything checkable before the first write; nothing written if not.
    let desired = crate::diff::resolve(&loaded, &loaded.ca_files()?, &snap)?;
    let procedures = crate::procedure::load_all()?;
    let passed = preflight::run(&preflight::Input {
        plan: &plan,
        plan_file,
        loaded: &loaded,
        snap: &snap,
        desired: &desired,
        procedures: &procedures,
        nodes: &views,
        material: &material,
        done: &done_before,
        stale,
        rehearse: !a.skip_rehearse,
    })?;
    if json {
        println!("{}", passed.event());
    } else {
        println!("{}", passed.line());
    }
    let locks = take_locks(&a, &loaded, &state, &nodes, &plan)?;
    let events = set_aside(&a, &state, &plan, resume, &prior)?;
    let files = Files::open(&backup).map_err(io(format!("cannot open {}", backup.display())))?;
    // The prober runs beside the whole walk (started before anything is journaled).
    let prober = match endpoints {
        Some(endpoints) => Some(prepare::start_probe(
            &loaded,
            probed_nodes.as_ref().unwrap_or(&nodes),
            endpoints,
            &material,
        )?),
        None => None,
    };
    let opened = open_journal(&a, &plan, &state, events, &prior, &locks, confirms)?;
    let fault = std::env::var("TRUSTFORM_FAULT")
        .ok()
        .and_then(|f| apply::Fault::parse(&f));
    let total = plan.steps.len();
    let join_hash = prepare::discovery_hash(&plan, &material);
    let world = Arc::new(apply::World {
        files,
        nodes,
        material,
        issuance: loaded.config.issuance.clone(),
        kube: crate::exec::kube::Access::of(&loaded),
        wait_timeout: a.wait_timeout,
        restart: exec::restart::Wait {
            timeout: a.restart_timeout,
            settle: a.restart_settle,
        },
        stage_began: if a.accept_logged_errors {
            None
        } else {
            journal::stage_began(&opened.events)
        },
        settle: prober.as_ref().map(probe::Prober::settle),
        confirmed: std::sync::Mutex::new(opened.confirmed),
        ask: (!json && !a.auto_approve && std::io::stdin().is_terminal())
            .then(|| ask_at_prompt(opened.progress.clone(), locks.held.info.who.clone())),
    });
    let result = apply::walk(
        Arc::new(plan),
        world,
        opened.journal.clone(),
        &done_before,
        a.parallelism as usize,
        fault,
        opened.progress.clone(),
    )?;
    let probed = prober.map(probe::Prober::stop);
    let done = result.already + result.done.len();
    let ok = result.failed.is_empty() && done == total;
    opened
        .journal
        .record(&Event::ApplyDone {
            at: journal::now(),
            ok,
            done,
            failed: result.failed.len(),
            skipped: result.skipped.len(),
            paused: result.paused.len(),
        })
        .map_err(io("cannot write the journal"))?;
    let ended = Ended {
        id: &id,
        result: &result,
        done,
        total,
        ok,
        join_hash: join_hash.as_deref(),
        confirm: confirm_command(config_path, &result.paused),
        probed: probed.as_ref(),
    };
    report(&ended, &opened.progress, json);
    drop(locks);
    let broken: Vec<String> = probed
        .iter()
        .flat_map(|r| r.managed_failing())
        .map(|e| e.name.clone())
        .collect();
    if result.failed.is_empty() && !broken.is_empty() {
        return Err(Refusal::Broke {
            id,
            count: broken.len(),
            edges: exec::kube::laggards(&broken),
        }
        .into());
    }
    if ok || result.failed.is_empty() {
        Ok(Applied {
            exit: if ok { Exit::Ok } else { Exit::Paused },
            steps: done,
            wall_ms: result.wall_ms,
            probe: probed,
        })
    } else {
        Err(Refusal::Failed {
            id,
            steps: result
                .failed
                .iter()
                .map(|(s, _)| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
        .into())
    }
}

/// The plan an apply runs, and the cluster as it starts.
struct Chosen {
    plan: Plan,
    /// An earlier run of this plan began.
    resume: bool,
    /// The plan file's path and text, to point at a step the pre-flight refuses.
    plan_file: Option<(String, String)>,
    snap: crate::snapshot::Snapshot,
    /// What changed since a saved plan was made (a fresh plan: nothing to compare).
    stale: Option<Vec<String>>,
}

/// Which plan: the one passed (refused when applied already, or when another apply is
/// unfinished), the unfinished one (a resume), or a new one, approved at the prompt.
/// `None`: nothing to do.
fn choose(
    a: &Args,
    loaded: &Loaded,
    state: &Path,
    views: &BTreeMap<String, Node>,
) -> miette::Result<Option<Chosen>> {
    let json = a.format == OutFormat::Json;
    let observe_now = || -> miette::Result<crate::snapshot::Snapshot> {
        let targets = prepare::targets_on(loaded, views)?;
        let mut snap =
            observe::observe_with(&targets, crate::exec::kube::Access::of(loaded).as_ref())?;
        super::plan::with_tokens(loaded, &mut snap, &targets)?;
        Ok(snap)
    };
    let chosen = match &a.plan {
        Some(path) => {
            let (p, text) = load_plan_text(path)?;
            let file = Some((path.display().to_string(), text));
            let j = journal::path(state, &p.id());
            let prior = journal::read(&j).map(|e| Journaled::of(&e)).ok();
            match prior {
                Some(pr) if pr.finished == Some(true) && !pr.rolled_back => {
                    return Err(Refusal::AlreadyApplied { plan: p.id() }.into());
                }
                Some(pr) if pr.runs > 0 && !pr.rolled_back => Chosen {
                    plan: p,
                    resume: true,
                    plan_file: file,
                    snap: observe_now()?,
                    stale: None,
                },
                _ => {
                    if let Some(other) = prepare::unfinished(state) {
                        return Err(Refusal::Unfinished {
                            other,
                            plan: p.id(),
                        }
                        .into());
                    }
                    let snap = observe_now()?;
                    let stale = Some(prepare::staleness(&p, loaded, &snap));
                    Chosen {
                        plan: p,
                        resume: false,
                        plan_file: file,
                        snap,
                        stale,
                    }
                }
            }
        }
        None => match prepare::unfinished(state) {
            Some(id) => {
                // The saved copy is a file too: the same checks as a plan passed in.
                let path = journal::plan_path(state, &id);
                let (p, text) = load_plan_text(&path)?;
                if p.id() != id {
                    return Err(BadPlan {
                        path: path.display().to_string(),
                        reason: format!(
                            "the saved plan is plan {}, not the plan {id} its file and journal name",
                            p.id()
                        ),
                        src: None,
                        span: None,
                        help: format!(
                            "the saved copy was changed: `trustform rollback {id}`, then plan and apply again"
                        ),
                    }
                    .into());
                }
                Chosen {
                    plan: p,
                    resume: true,
                    plan_file: Some((path.display().to_string(), text)),
                    snap: observe_now()?,
                    stale: None,
                }
            }
            None => {
                if let Some(id) = a.confirm.first() {
                    return Err(
                        apply::manual::ConfirmError::NothingPaused { id: id.clone() }.into(),
                    );
                }
                if json && !a.auto_approve {
                    return Err(Refusal::NeedsApproval.into());
                }
                let super::plan::Made {
                    plan: p,
                    snapshot: snap,
                    ..
                } = super::plan::make_on(loaded, false)?;
                if !p.is_empty() && !a.auto_approve {
                    print!("{}", render::text(&p));
                    println!(
                        "\nDo you want to perform these actions? Only 'yes' will be accepted.\n  Enter a value: "
                    );
                    let mut answer = String::new();
                    std::io::stdin()
                        .read_line(&mut answer)
                        .map_err(io("cannot read the answer"))?;
                    if answer.trim() != "yes" {
                        println!("Apply cancelled.");
                        return Err(Refusal::Cancelled.into());
                    }
                }
                Chosen {
                    plan: p,
                    resume: false,
                    plan_file: None,
                    snap,
                    stale: None,
                }
            }
        },
    };
    if chosen.plan.is_empty() {
        if !json {
            println!("{}", render::summary_line(&chosen.plan));
        }
        return Ok(None);
    }
    Ok(Some(chosen))
}

/// The locks an apply holds while it runs: the lock file, and the cluster's Lease when
/// the API is reachable. Dropping them releases both.
struct Locks {
    // Dropped first: the Lease publishes the final status while the file still guards.
    _lease: Option<ClusterLock>,
    held: lock::Lock,
}

/// Take the lock file (noting a dead holder taken over), remove the temp files an
/// interrupted write left, and take the cluster's Lease.
fn take_locks(
    a: &Args,
    loaded: &Loaded,
    state: &Path,
    nodes: &BTreeMap<String, Node>,
    plan: &Plan,
) -> miette::Result<Locks> {
    let id = plan.id();
    let held = lock::acquire(state, &format!("apply {id}"), &id, a.lock_timeout)
        .map_err(|e| lock_error(e, state))?;
    if let Some(dead) = &held.took_over {
        crate::verbosity::note(format_args!(
            "Note: took over the lock {} of {} (pid {} is gone: it crashed or was killed).",
            dead.id, dead.who, dead.pid
        ));
    }
    let leftovers = prepare::remove_leftovers(loaded, state, nodes, plan);
    if !leftovers.is_empty() {
        crate::verbosity::note(format_args!(
            "Note: removed {} temp file(s) an interrupted write left behind: {}.",
            leftovers.len(),
            exec::kube::laggards(&leftovers)
        ));
    }
    let cluster = match crate::exec::kube::Access::of(loaded) {
        Some(access) => match ClusterLock::acquire(&access, &held.info, state) {
            Ok(Some(l)) => Some(l),
            Ok(None) => {
                crate::verbosity::note(format_args!(
                    "Note: the API at {} is not reachable: the lock file alone guards this apply.",
                    access.server()
                ));
                None
            }
            Err(Refused::Held(h)) => {
                return Err(match h {
                    Holder::Trustform(h) => lock_error(lock::LockError::Held(h), state),
                    Holder::Other(holder) => Refusal::LeaseHeld { holder }.into(),
                });
            }
            Err(Refused::Api(e)) => return Err(e.into()),
        },
        None => None,
    };
    Ok(Locks {
        _lease: cluster,
        held,
    })
}

/// The run's journal, opened, and what it holds.
struct Opened {
    journal: Arc<Journal>,
    /// Every event of this plan's journal before this run.
    events: Vec<Event>,
    progress: Arc<Progress>,
    /// Manual steps confirmed: step → `by who at time`.
    confirmed: BTreeMap<String, String>,
}

/// Set an earlier journal and backup of a new run aside, save the plan beside the
/// journal, and say what a resume re-checks. Returns the journal's events so far.
fn set_aside(
    a: &Args,
    state: &Path,
    plan: &Plan,
    resume: bool,
    prior: &Journaled,
) -> miette::Result<Vec<Event>> {
    let id = plan.id();
    if !resume {
        prepare::archive(state, &id).map_err(io("cannot archive an earlier journal"))?;
    }
    let saved = journal::plan_path(state, &id);
    if !saved.exists() {
        crate::atomic::write(
            &saved,
            render::json(plan).as_bytes(),
            crate::atomic::PUBLIC_MODE,
        )
        .map_err(io(format!("cannot write {}", saved.display())))?;
    }
    let events = journal::read(&journal::path(state, &id)).unwrap_or_default();
    let open = Journaled::of(&events).open;
    if resume && a.format != OutFormat::Json {
        println!(
            "Resuming apply {id}: {} of {} steps done before{}.",
            prior.done.len(),
            plan.steps.len(),
            if open.is_empty() {
                String::new()
            } else {
                format!("; re-checking the interrupted {}", open.join(", "))
            }
        );
    }
    Ok(events)
}

/// Open the journal, record the run's start and each `--confirm`, and show progress.
fn open_journal(
    a: &Args,
    plan: &Plan,
    state: &Path,
    events: Vec<Event>,
    prior: &Journaled,
    locks: &Locks,
    confirms: Vec<String>,
) -> miette::Result<Opened> {
    let id = plan.id();
    let done_before = prior.done.len();
    let journal = Arc::new(Journal::open(state, &id).map_err(io("cannot open the journal"))?);
    let who = locks.held.info.who.clone();
    journal
        .record(&Event::ApplyStart {
            at: journal::now(),
            plan_id: id.clone(),
            steps: plan.steps.len(),
            resumed: done_before,
            who: who.clone(),
            pid: std::process::id(),
        })
        .map_err(io("cannot write the journal"))?;
    let mode = if a.format == OutFormat::Json {
        Mode::Json
    } else if std::io::stderr().is_terminal()
        && std::io::stdout().is_terminal()
        && crate::verbosity::level() == crate::verbosity::Level::Normal
    {
        // Spinners only at the normal level: `--quiet` wants none, and `--verbose`'s
        // lines on stderr would tear them.
        Mode::Bars
    } else {
        Mode::Lines
    };
    let progress = Arc::new(Progress::new(mode, plan.steps.len(), done_before));
    // `--confirm`: journaled before the walk, which then treats the steps as carried out.
    let mut confirmed: BTreeMap<String, String> = prior.confirmed.iter().cloned().collect();
    for step in confirms {
        let e = Event::Confirmed {
            at: journal::now(),
            step: step.clone(),
            who: who.clone(),
        };
        journal.record(&e).map_err(io("cannot write the journal"))?;
        progress.event(&e);
        if let Event::Confirmed { at, who, .. } = e {
            confirmed.insert(step, format!("by {who} at {at}"));
        }
    }
    Ok(Opened {
        journal,
        events,
        progress,
        confirmed,
    })
}

/// How a walk ended, for the report.
struct Ended<'a> {
    id: &'a str,
    result: &'a apply::RunResult,
    done: usize,
    total: usize,
    ok: bool,
    join_hash: Option<&'a str>,
    /// The `--confirm` command of the steps paused at.
    confirm: String,
    probed: Option<&'a probe::Report>,
}

/// Say how the apply ended: lines for a person, one JSON summary for a pipe.
fn report(e: &Ended, progress: &Progress, json: bool) {
    let (result, done, total, id) = (e.result, e.done, e.total, e.id);
    let mut lines = vec![String::new()];
    if !e.ok && result.failed.is_empty() && !result.paused.is_empty() {
        lines.push(format!(
            "Apply paused at a manual step: {done} of {total} steps done; trustform cannot carry out the next one itself."
        ));
        lines.extend(paused_lines(&result.paused, &e.confirm));
    } else if e.ok {
        lines.push(format!(
            "Apply complete! {done} steps done ({} in this run, {:.1} s).",
            result.done.len(),
            result.wall_ms as f64 / 1000.0
        ));
        if let Some(h) = e.join_hash {
            lines.push(format!(
                "The cluster CA changed: `kubeadm join` now needs --discovery-token-ca-cert-hash {h} (update your join commands and automation)."
            ));
        }
    } else {
        lines.push(format!(
            "Apply failed: {} step(s) failed; {done} of {total} steps done, {} not run.",
            result.failed.len(),
            total - done
        ));
        for (step, e) in &result.failed {
            lines.push(format!("  {step}: {e}"));
        }
        if !result.skipped.is_empty() {
            lines.push(format!(
                "  {} dependent step(s) skipped (`trustform status` lists them).",
                result.skipped.len()
            ));
        }
        lines.push(format!(
            "Fix the cause and run `trustform apply` to resume, or `trustform rollback {id}`."
        ));
        if !result.paused.is_empty() {
            lines.push("Apply also paused at a manual step:".into());
            lines.extend(paused_lines(&result.paused, &e.confirm));
        }
    }
    for w in &result.warnings {
        lines.push(format!("Warning: {w}"));
    }
    let mut summary = serde_json::json!({
        "plan_id": id, "ok": e.ok, "done": done, "total": total,
        "done_this_run": result.done.len(),
        "failed": result.failed.iter().map(|(s, e)| serde_json::json!({"step": s, "error": e})).collect::<Vec<_>>(),
        "skipped": result.skipped.len(),
        "warnings": result.warnings,
        "wall_ms": result.wall_ms, "busy_ms": result.busy_ms,
        "ssh_connections": crate::transport::ssh::connections_opened(),
    });
    if let Some((step, instructions)) = result.paused.first() {
        summary["paused"] = serde_json::json!({
            "step": step, "instructions": instructions, "confirm": e.confirm,
        });
        if result.paused.len() > 1 {
            summary["also_paused"] = result.paused[1..]
                .iter()
                .map(|(s, i)| serde_json::json!({"step": s, "instructions": i}))
                .collect();
        }
    }
    if let Some(r) = e.probed {
        summary["probe"] = serde_json::to_value(r).unwrap_or_default();
        if !json {
            for l in r.lines() {
                eprintln!("{l}");
            }
        }
    }
    progress.summary(summary, &lines);
}

/// `trustform apply --confirm A [--confirm B …]` for the manual steps an apply paused at
/// (with `-c` when trustform.yaml is elsewhere).
fn confirm_command(config_path: &Path, paused: &[(String, Vec<String>)]) -> String {
    let mut cmd = String::from("trustform");
    if config_path != Path::new("trustform.yaml") {
        cmd.push_str(&format!(" -c {}", config_path.display()));
    }
    cmd.push_str(" apply");
    for (step, _) in paused {
        cmd.push_str(&format!(" --confirm {step}"));
    }
    cmd
}

/// What the operator must do at each manual step an apply paused at, and the command
/// that confirms them.
fn paused_lines(paused: &[(String, Vec<String>)], confirm: &str) -> Vec<String> {
    let mut out = vec![];
    for (step, instructions) in paused {
        out.push(String::new());
        out.push(format!("Manual step {step}:"));
        out.extend(instructions.iter().map(|l| format!("  {l}")));
    }
    out.push(String::new());
    out.push(format!(
        "Once {} done and checked, confirm it and go on:",
        if paused.len() == 1 {
            "it is"
        } else {
            "each is"
        }
    ));
    out.push(format!("  {confirm}"));
    out
}

/// Ask at the prompt whether a manual step was carried out: `Some(who)` on `done`. One
/// question at a time, with the progress lines out of the way.
fn ask_at_prompt(progress: Arc<Progress>, who: String) -> apply::Ask {
    let one = std::sync::Mutex::new(());
    Box::new(move |step: &plan::Step| {
        let _one = one.lock().ok()?;
        progress.suspend(|| {
            println!("\nManual step {}:", step.id);
            for l in step.manual().unwrap_or_default() {
                println!("  {l}");
            }
            println!(
                "Type 'done' once it is done and checked (anything else pauses the apply; `trustform apply --confirm {}` goes on later).\n  Enter a value: ",
                step.id
            );
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer).ok()?;
            (answer.trim() == "done").then(|| who.clone())
        })
    })
}

fn lock_error(e: lock::LockError, state: &Path) -> miette::Report {
    match e {
        lock::LockError::Held(h) => Refusal::Locked {
            path: lock::path(state).display().to_string(),
            id: h.id,
            operation: h.operation.to_string(),
            who: h.who,
            when: h.when,
            host: h.host,
            pid: h.pid,
        }
        .into(),
        lock::LockError::Unreadable { id, why } => Refusal::UnreadableLock {
            path: lock::path(state).display().to_string(),
            id,
            why: why.to_string(),
        }
        .into(),
        lock::LockError::Io(e) => Refusal::io("lock")(e).into(),
    }
}

/// Run `rollback`.
pub fn rollback(a: RollbackArgs, config_path: &Path) -> miette::Result<Exit> {
    let loaded = config::load(config_path)?;
    let state = state_dir(&loaded);
    let nodes = prepare::nodes_of(&loaded)?;
    let id = a.plan_id;
    let backup = state.join("backup").join(&id);
    if !backup.is_dir() {
        return Err(Refusal::UnknownBackup {
            id,
            dir: backup.display().to_string(),
        }
        .into());
    }
    let _held = lock::acquire(&state, &format!("rollback {id}"), &id, a.lock_timeout)
        .map_err(|e| lock_error(e, &state))?;
    let plan = status::saved_plan(&state, &id).ok();
    let events = journal::read(&journal::path(&state, &id)).unwrap_or_default();
    let done: HashSet<String> = Journaled::of(&events).done.into_iter().collect();
    let mut restarts: Vec<(String, String)> = vec![];
    // Restarts the operator did by hand: after the restore, by hand again.
    let mut by_hand: Vec<String> = vec![];
    for s in plan.iter().flat_map(|p| &p.steps) {
        if !done.contains(&s.id) {
            continue;
        }
        for op in &s.ops {
            match op {
                Op::Restart { node, component }
                    if !restarts.contains(&(node.clone(), component.clone())) =>
                {
                    restarts.push((node.clone(), component.clone()));
                }
                Op::ManualRestart {
                    node, component, ..
                } => {
                    let what = format!("{component} on {node}");
                    if !by_hand.contains(&what) {
                        by_hand.push(what);
                    }
                }
                _ => {}
            }
        }
    }
    // The pods before the restore: restoring a manifest the apply changed is what makes
    // the kubelet restart its pod, which is then awaited.
    let before: BTreeMap<(String, String), exec::restart::Before> = restarts
        .iter()
        .filter(|(_, c)| c != "kubelet")
        .filter_map(|(n, c)| {
            let b = exec::restart::before(nodes.get(n)?, c).ok()?;
            Some(((n.clone(), c.clone()), b))
        })
        .collect();
    let restored = exec::files::restore(&backup, |n| nodes.get(n).cloned())?;
    if let Ok(j) = Journal::open(&state, &id) {
        let _ = j.record(&Event::RolledBack {
            at: journal::now(),
            files: restored.len(),
        });
    }
    println!(
        "Rolled back plan {id}: restored {} file(s), newest first.",
        restored.len()
    );
    let mut manual = by_hand;
    let wait = exec::restart::Wait {
        timeout: a.restart_timeout,
        settle: a.restart_settle,
    };
    for (node, component) in &restarts {
        let Some(n) = nodes.get(node) else {
            manual.push(format!("{component} on {node}"));
            continue;
        };
        let seen = match before.get(&(node.clone(), component.clone())) {
            _ if component == "kubelet" => exec::restart::kubelet(n, wait),
            Some(b) => exec::restart::new_pod(n, component, b, wait),
            None => Err(exec::ExecError::Restart {
                node: node.clone(),
                component: component.clone(),
                reason: "its pods could not be listed before the restore".into(),
            }),
        };
        match seen {
            Ok(s) => println!(
                "  restarted {component} on {node} ({:.1} s: {})",
                s.waited.as_secs_f64(),
                s.what
            ),
            Err(e) => {
                eprintln!("  {e}");
                manual.push(format!("{component} on {node}"));
            }
        }
    }
    if !manual.is_empty() {
        println!(
            "Restart these so they read the restored files: {}.",
            manual.join(", ")
        );
    }
    Ok(Exit::Ok)
}

/// Run `status`.
pub fn status(a: StatusArgs, config_path: &Path) -> miette::Result<Exit> {
    let loaded = config::load(config_path)?;
    let state = state_dir(&loaded);
    let Some(id) = a.plan_id.clone().or_else(|| status::latest(&state)) else {
        // No apply from this machine: ask the cluster.
        if let Some(access) = crate::exec::kube::Access::of(&loaded) {
            let (s, holder) = cluster_lock::read(&access)?;
            if let Some(mut s) = s {
                if s.lock.is_none() {
                    s.lock = holder;
                }
                match a.format {
                    OutFormat::Json => println!("{}", serde_json::to_string(&s).expect("status")),
                    OutFormat::Text => {
                        println!("(from kube-system/trustform-status at {})", access.server());
                        for l in s.lines() {
                            println!("{l}");
                        }
                    }
                }
                return Ok(Exit::Ok);
            }
        }
        match a.format {
            OutFormat::Json => println!("{}", serde_json::json!({"state": "none"})),
            OutFormat::Text => println!("No apply has run for this cluster."),
        }
        return Ok(Exit::Ok);
    };
    let started = std::time::Instant::now();
    let mut last: Option<status::Status> = None;
    loop {
        let s = status::of(&state, &id).map_err(io(format!("cannot read apply {id}")))?;
        if last.as_ref() != Some(&s) {
            match a.format {
                OutFormat::Json => println!("{}", serde_json::to_string(&s).expect("status")),
                OutFormat::Text => {
                    for l in s.lines() {
                        println!("{l}");
                    }
                }
            }
        }
        let running = s.state == "running";
        last = Some(s);
        if !a.wait || !running {
            break;
        }
        if started.elapsed() >= a.wait_timeout {
            return Err(Refusal::StillRunning {
                id: id.to_string(),
                after: humantime::format_duration(a.wait_timeout).to_string(),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let failed = last
        .as_ref()
        .is_some_and(|s| s.state == "failed" || s.state == "interrupted");
    Ok(if failed && a.wait {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

/// Run `force-unlock`.
pub fn force_unlock(a: UnlockArgs, config_path: &Path) -> miette::Result<Exit> {
    let loaded = config::load(config_path)?;
    let state = state_dir(&loaded);
    if let Some(access) = crate::exec::kube::Access::of(&loaded)
        && let Ok(Some(h)) = cluster_lock::force_release(&access, &a.id)
    {
        println!(
            "Released the Lease kube-system/trustform of lock {} ({} by {}).",
            h.id, h.operation, h.who
        );
        let _ = lock::force_unlock(&state, &a.id);
        return Ok(Exit::Ok);
    }
    let shown = lock::path(&state).display().to_string();
    match lock::force_unlock(&state, &a.id) {
        Ok(lock::Found::Lock(h)) => {
            println!(
                "Removed lock {} ({} by {} since {}).",
                h.id, h.operation, h.who, h.when
            );
            Ok(Exit::Ok)
        }
        Ok(_) => {
            println!("Removed {shown}, which was not a lock trustform wrote.");
            Ok(Exit::Ok)
        }
        Err(lock::Found::Lock(h)) => Err(Refusal::UnlockMismatch {
            lock: h.id,
            given: a.id,
        }
        .into()),
        Err(lock::Found::Unreadable { id, why }) => Err(Refusal::UnlockUnreadable {
            path: shown,
            id,
            why: why.to_string(),
        }
        .into()),
        Err(lock::Found::Nothing) => Err(Refusal::NoLock { path: shown }.into()),
    }
}
