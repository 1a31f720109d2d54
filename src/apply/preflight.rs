//! Pre-flight: everything `apply` can check before its first write, checked at once.
//!
//! Run before the lock, the journal and the backup directory are made, on every path
//! (a saved plan, a plan made on the spot, a resumed apply). Read-only. Checks:
//! - **plan**: every step and operation is one the procedures make ([`validate`]);
//! - **staleness** (a fresh saved plan): the cluster and trustform.yaml are as planned;
//! - **rehearsal**: the steps still to do keep every trust edge live, on the cluster as
//!   it is now;
//! - **keys**: every CA the steps still to do write is known, and every CA they issue
//!   from has its key, matching its certificate;
//! - **files**: every file those steps read parses: bundles, manifests holding the flags
//!   the steps set (and the `metadata:` a restart annotates), kubeconfigs with a client
//!   key that matches their client certificate, leaves with a key that parses;
//! - **restarts**: each restart can be carried out on its node;
//! - **gate**: the gate of the current stage passes on what is there now (bundles hold
//!   the issuer and no retired CA, every leaf verifies against the trust set the plan
//!   says holds now, kubeconfigs against the API server on disk, and on a sandbox a
//!   handshake over every trust edge).
//!
//! A failed pre-flight is one diagnostic that lists every problem, each naming the step,
//! node and file and the fix.

use super::gate::{self, Bundles};
use super::material::{Material, key_block};
use crate::config::{Authority, Loaded};
use crate::diff::{Desired, Field, State};
use crate::exec::{self, Node};
use crate::pki::kubeconfig::{Kubeconfig, unb64};
use crate::pki::{Fingerprint, PkiError, parse_certs, public_key_fingerprint};
use crate::plan::rehearse::{self, Rehearsal};
use crate::plan::validate::{self, Known, Refusal};
use crate::plan::{Op, Plan, Step};
use crate::procedure::{Procedure, Stage};
use crate::snapshot::Snapshot;
use miette::{Diagnostic, NamedSource, SourceSpan};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use thiserror::Error;

/// What the pre-flight reads.
pub struct Input<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The plan file's name and text, to point at a refused step (a saved plan).
    pub plan_file: Option<(String, String)>,
    /// trustform.yaml.
    pub loaded: &'a Loaded,
    /// The cluster as observed now.
    pub snap: &'a Snapshot,
    /// trustform.yaml resolved against `snap`.
    pub desired: &'a Desired,
    /// The embedded procedures.
    pub procedures: &'a [Procedure],
    /// Nodes, as read views ([`crate::exec::read_views`]).
    pub nodes: &'a BTreeMap<String, Node>,
    /// CA certificates and keys the apply will use.
    pub material: &'a Material,
    /// Steps done by earlier runs (a resumed apply).
    pub done: &'a HashSet<String>,
    /// What changed since a saved plan was made (`None`: not checked: a resume, or a
    /// plan made on the spot).
    pub stale: Option<Vec<String>>,
    /// Rehearse the steps still to do (off with `--skip-rehearse`).
    pub rehearse: bool,
}

/// How many checks of each kind passed.
///
/// With `apply --format json` it is the first line on stdout, before the step events:
/// ```json
/// { "event": "preflight", "ok": true, "checks": 263, "plan": 172, "staleness": 1,
///   "rehearsal_edges": 28, "keys": 2, "files": 36, "restarts": 9, "gate": 42 }
/// ```
/// A failed pre-flight prints nothing on stdout: its diagnostic goes to stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Passed {
    /// All checks.
    pub checks: usize,
    /// Steps and operations validated.
    pub plan: usize,
    /// The staleness check (0 or 1).
    pub staleness: usize,
    /// Edges the rehearsal kept live (0: not rehearsed).
    pub rehearsal_edges: usize,
    /// CAs whose certificate (and key) the steps need.
    pub keys: usize,
    /// Files read and parsed.
    pub files: usize,
    /// Restarts that can be carried out.
    pub restarts: usize,
    /// Gate checks (handshakes included).
    pub gate: usize,
}

impl Passed {
    /// The JSON event (see the type's documentation).
    pub fn event(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "event": "preflight", "ok": true });
        if let (Some(o), serde_json::Value::Object(fields)) = (
            v.as_object_mut(),
            serde_json::to_value(self).unwrap_or_default(),
        ) {
            o.extend(fields);
        }
        v
    }

    /// `Pre-flight: 263 checks passed (plan 172, staleness 1, rehearsal 28 edges, …).`
    /// Checks that did not run (no staleness on a resume, no rehearsal with
    /// `--skip-rehearse`) are left out.
    pub fn line(&self) -> String {
        let parts: Vec<String> = [
            ("plan", self.plan, ""),
            ("staleness", self.staleness, ""),
            ("rehearsal", self.rehearsal_edges, " edges"),
            ("keys", self.keys, ""),
            ("files", self.files, ""),
            ("restarts", self.restarts, ""),
            ("gate", self.gate, ""),
        ]
        .into_iter()
        .filter(|(_, n, _)| *n > 0)
        .map(|(what, n, unit)| format!("{what} {n}{unit}"))
        .collect();
        format!(
            "Pre-flight: {} checks passed ({}).",
            self.checks,
            parts.join(", ")
        )
    }
}

/// A failed pre-flight: every problem found.
#[derive(Debug, Error, Diagnostic)]
#[error("pre-flight found {} problem(s) in {checks} checks; nothing was changed", .problems.len())]
#[diagnostic(
    code(trustform::apply::preflight),
    help(
        "fix every problem listed below, then run `trustform apply` again; no node was touched and no lock, journal or backup was written"
    )
)]
pub struct Failed {
    /// Checks made.
    pub checks: usize,
    /// Each problem.
    #[related]
    pub problems: Vec<Problem>,
}

/// One problem found before the first write.
#[derive(Debug, Error, Diagnostic)]
pub enum Problem {
    /// A step or operation the procedures never make.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Refused(Refusal),
    /// trustform.yaml cannot be resolved against the cluster.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Config(crate::config::ConfigError),
    /// The plan was made on a cluster or config that has changed since.
    #[error("the plan {id} is stale: {}", .changes.join("; "))]
    #[diagnostic(
        code(trustform::apply::stale_plan),
        help("run `trustform plan -out <file>` again, review it, and apply the new plan")
    )]
    Stale {
        /// Plan id.
        id: String,
        /// What changed.
        changes: Vec<String>,
    },
    /// The steps still to do would break a trust edge.
    #[error("{at} would break a trust edge: {edge}: {why}{}", if *.more > 0 { format!(" (and {} more breaks)", .more) } else { String::new() })]
    #[diagnostic(
        code(trustform::plan::trust_break),
        help(
            "regenerate the plan with `trustform plan -out`; `trustform rehearse` lists every breaking edge"
        )
    )]
    Break {
        /// The first breaking step.
        at: String,
        /// The edge.
        edge: String,
        /// Why.
        why: String,
        /// How many other breaks follow.
        more: usize,
    },
    /// A CA the steps write or issue from is missing, or its key is.
    #[error("{what}: {why}; needed by {steps}")]
    #[diagnostic(code(trustform::apply::preflight::key))]
    Key {
        /// The CA.
        what: String,
        /// What is wrong.
        why: String,
        /// The steps that need it.
        steps: String,
        /// How to fix it.
        #[help]
        help: String,
        /// trustform.yaml, when the CA is one of its `cas`.
        #[source_code]
        src: Option<NamedSource<String>>,
        /// The `key:` (or `cert:`) entry.
        #[label("{label}")]
        span: Option<SourceSpan>,
        /// Label text.
        label: String,
    },
    /// A file a step reads is missing or does not parse.
    #[error("{node}:{path}: {why} (step {step})")]
    #[diagnostic(code(trustform::apply::preflight::file))]
    File {
        /// Node.
        node: String,
        /// Path on the node.
        path: String,
        /// The first step that reads it.
        step: String,
        /// What is wrong.
        why: String,
        /// How to fix it.
        #[help]
        help: String,
        /// The file's text.
        #[source_code]
        src: Option<NamedSource<String>>,
        /// Where.
        #[label("{label}")]
        span: Option<SourceSpan>,
        /// Label text.
        label: String,
    },
    /// A restart cannot be carried out.
    #[error("{node}: cannot restart {component}: {why} (step {step})")]
    #[diagnostic(code(trustform::apply::preflight::restart))]
    Restart {
        /// Node.
        node: String,
        /// Component.
        component: String,
        /// The step.
        step: String,
        /// Why.
        why: String,
        /// How to fix it.
        #[help]
        help: String,
    },
    /// The gate of the current stage fails on what is there now.
    #[error("{gate} fails on the cluster as it is now: {failure}")]
    #[diagnostic(
        code(trustform::apply::preflight::gate),
        help(
            "the cluster does not hold the trust the plan starts from: fix this file (restore it from .trustform/backup or re-issue it), or make the plan again"
        )
    )]
    Gate {
        /// Which gate: `the kubernetes gate of stage pre-rotate`, `a trust-edge handshake`.
        gate: String,
        /// The failing check.
        failure: String,
    },
}

/// Run every check; `Err` lists every problem. Every check reads node files: give it
/// nodes whose trees were read in one go ([`crate::exec::read_views`]).
pub fn run(input: &Input) -> Result<Passed, Failed> {
    let mut passed = Passed::default();
    let mut problems: Vec<Problem> = Vec::new();
    let plan = input.plan;

    // Plan: only what the procedures make, on this cluster.
    let copies: BTreeMap<String, Vec<String>> = input
        .nodes
        .iter()
        .map(|(n, node)| (n.clone(), node.kubeconfigs.clone()))
        .collect();
    let manual: std::collections::BTreeSet<String> = input
        .nodes
        .iter()
        .filter(|(_, n)| !n.transport.can_run())
        .map(|(name, _)| name.clone())
        .collect();
    let known = Known::of(input.snap, &copies, &manual);
    let refused = validate::validate(plan, &known, input.procedures);
    passed.plan = validate::checks(plan);
    // Operations refused are neither read nor counted further.
    let refused_ops: HashSet<(String, Option<usize>)> =
        refused.iter().map(|r| (r.step.clone(), r.op)).collect();
    let step_refused = |s: &Step| refused_ops.contains(&(s.id.clone(), None));
    let op_ok =
        |s: &Step, i: usize| !step_refused(s) && !refused_ops.contains(&(s.id.clone(), Some(i)));
    let plan_refused = !refused.is_empty();
    for r in refused {
        problems.push(Problem::Refused(match &input.plan_file {
            Some((name, text)) => r.located(name, text),
            None => r,
        }));
    }

    // Staleness.
    if let Some(changes) = &input.stale {
        passed.staleness = 1;
        if !changes.is_empty() {
            problems.push(Problem::Stale {
                id: plan.id(),
                changes: changes.clone(),
            });
        }
    }

    // The steps still to do, in order.
    let todo: Vec<&Step> = rehearse::order(plan)
        .into_iter()
        .map(|i| &plan.steps[i])
        .filter(|s| !input.done.contains(&s.id))
        .collect();

    // Rehearsal of what is left, on the cluster as it is now (not of a refused plan:
    // its breaks would only echo the refused operations).
    let rehearse = input.rehearse && !plan_refused;
    if rehearse {
        let r = rehearse_left(input, &todo);
        match r.breaks.first() {
            None => passed.rehearsal_edges = r.edges,
            Some(first) => problems.push(Problem::Break {
                at: first.at.clone(),
                edge: first.edge.clone(),
                why: first.why.clone(),
                more: r.breaks.len() - 1,
            }),
        }
    }

    // Keys and certificates, files, restarts.
    // CA → (steps that issue from it, steps that write its certificate).
    let mut needs: BTreeMap<Fingerprint, (Vec<String>, Vec<String>)> = BTreeMap::new();
    let mut need = |fp: &Fingerprint, key: bool, step: &str| {
        let e = needs.entry(fp.clone()).or_default();
        let list = if key { &mut e.0 } else { &mut e.1 };
        if !list.iter().any(|s| s == step) {
            list.push(step.to_string());
        }
    };
    let mut files = Files::default();
    for s in &todo {
        for (i, op) in s.ops.iter().enumerate() {
            if !op_ok(s, i) {
                continue;
            }
            match op {
                Op::Set {
                    node: Some(n),
                    path,
                    field,
                    want,
                    ..
                } => {
                    let Some(node) = input.nodes.get(n) else {
                        continue;
                    };
                    if let Some(fp) = files.check(input, node, s, path, field, want) {
                        need(&fp, true, &s.id);
                    }
                    if let State::Members(v) = want {
                        for fp in v {
                            need(fp, false, &s.id);
                        }
                    }
                }
                Op::Set {
                    node: None,
                    field,
                    want: State::Members(v),
                    ..
                } => {
                    if matches!(field, Field::ClusterInfo | Field::CaBundle) {
                        for fp in v {
                            need(fp, false, &s.id);
                        }
                    }
                    files.publisher(input, s, field);
                }
                Op::Set { .. } => {}
                Op::Restart { node, component } => {
                    if let Some(n) = input.nodes.get(node) {
                        files.restart(n, s, component);
                    }
                }
                // The operator restarts it: nothing for trustform to check here.
                Op::ManualRestart { .. } => {}
                Op::Verify { trust, .. } => {
                    for fp in trust {
                        need(fp, false, &s.id);
                    }
                }
            }
        }
    }
    files.check_tools();
    passed.files = files.checked.len();
    passed.restarts = files.restarts;
    problems.append(&mut files.problems);
    for (fp, (issuing, writing)) in &needs {
        passed.keys += 1;
        if let Some(p) = key_problem(input, fp, issuing, writing) {
            problems.push(p);
        }
    }

    // The gate of the current stage, on what is there now.
    for (auth, stage, report) in gates(input, &todo) {
        passed.gate += report.checks;
        for failure in report.failures {
            problems.push(Problem::Gate {
                gate: match stage.as_str() {
                    "now" => format!("the {auth} gate (the trust it holds before the plan)"),
                    st => format!("the {auth} gate of stage {st}"),
                },
                failure,
            });
        }
    }
    // Live handshakes with the credentials on disk: not on a resume, whose interrupted
    // step may have left a certificate written and its key not yet (the processes still
    // hold the pair they read); the resumed stage's gate handshakes again.
    if !todo.is_empty() && input.done.is_empty() {
        let h = gate::handshakes_only(input.nodes);
        passed.gate += h.checks;
        for failure in h.failures {
            problems.push(Problem::Gate {
                gate: "a trust-edge handshake".into(),
                failure: failure
                    .strip_prefix("handshake ")
                    .unwrap_or(&failure)
                    .to_string(),
            });
        }
    }

    passed.checks = passed.plan
        + passed.staleness
        + usize::from(rehearse)
        + passed.keys
        + passed.files
        + passed.restarts
        + passed.gate;
    if problems.is_empty() {
        Ok(passed)
    } else {
        Err(Failed {
            checks: passed.checks,
            problems,
        })
    }
}

/// Rehearse the steps still to do (their dependencies on done steps dropped).
fn rehearse_left(input: &Input, todo: &[&Step]) -> Rehearsal {
    let left: HashSet<&str> = todo.iter().map(|s| s.id.as_str()).collect();
    let mut plan = input.plan.clone();
    plan.steps = todo
        .iter()
        .map(|s| {
            let mut s = (*s).clone();
            s.depends_on.retain(|d| left.contains(d.as_str()));
            s
        })
        .collect();
    rehearse::rehearse(input.snap, &plan, &|fp| input.desired.label(fp))
}

/// The gate of each rotating authority's current stage: the stage before the first step
/// still to do (its `verify` operation's trust), or, before any step of the authority
/// ran, the trust the cluster holds now.
fn gates(input: &Input, todo: &[&Step]) -> Vec<(Authority, String, gate::Report)> {
    let mut out = vec![];
    let authority_of = |s: &Step| {
        input
            .procedures
            .iter()
            .find(|p| p.procedure == s.procedure)
            .and_then(|p| p.authority)
    };
    let verify = |s: &Step| {
        s.ops.iter().find_map(|op| match op {
            Op::Verify {
                issuer,
                trust,
                retired,
                ..
            } => Some((issuer.clone(), trust.clone(), retired.clone())),
            _ => None,
        })
    };
    for change in &input.plan.authorities {
        let Some(auth) = Authority::parse(&change.authority) else {
            continue;
        };
        let mine: Vec<&Step> = rehearse::order(input.plan)
            .into_iter()
            .map(|i| &input.plan.steps[i])
            .filter(|s| authority_of(s) == Some(auth))
            .collect();
        let Some(first) = todo.iter().find(|s| authority_of(s) == Some(auth)) else {
            continue;
        };
        let stage = first.stage;
        let done = |s: &&Step| input.done.contains(&s.id);
        let prior = mine
            .iter()
            .filter(|s| s.stage < stage)
            .rev()
            .find_map(|s| verify(s).map(|v| (s.stage, v)));
        let started = mine.iter().filter(|s| s.stage == stage).any(done);
        let (name, (issuer, trust, retired), bundles) = match prior {
            Some((st, v)) => (
                st.name().to_string(),
                v,
                if started {
                    Bundles::Between
                } else {
                    Bundles::Exact
                },
            ),
            None if !mine.iter().any(done) => {
                let Some((now, _)) = input.desired.authorities.get(&auth) else {
                    continue;
                };
                (
                    "now".to_string(),
                    (now.issuer.clone(), now.trust.clone(), vec![]),
                    Bundles::Between,
                )
            }
            // Inside the first stage: the trust set it moves to.
            None => match mine.iter().find_map(|s| verify(s).map(|v| (s.stage, v))) {
                Some((Stage::PreRotate, (issuer, trust, _))) => {
                    ("now".to_string(), (issuer, trust, vec![]), Bundles::Between)
                }
                _ => continue,
            },
        };
        let report = gate::on_disk(
            input.nodes,
            input.material,
            auth,
            &issuer,
            &trust,
            &retired,
            bundles,
        );
        out.push((auth, name, report));
    }
    out
}

/// What is wrong with a CA a step needs, if anything.
fn key_problem(
    input: &Input,
    fp: &Fingerprint,
    issuing: &[String],
    writing: &[String],
) -> Option<Problem> {
    let ca = input.material.knows(fp).then_some(());
    let has_key = input.material.private_key(fp).is_some();
    if ca.is_some() && (issuing.is_empty() || has_key) {
        return None;
    }
    let what = format!("CA {}", input.desired.label(fp));
    let steps = if ca.is_some() { issuing } else { writing };
    let steps = if steps.is_empty() { issuing } else { steps };
    let steps_line = match steps {
        [one] => format!("step {one}"),
        [first, rest @ ..] => format!("step {first} and {} more", rest.len()),
        [] => "no step".into(),
    };
    // A CA trustform.yaml names with its files: say which file is wrong.
    let spec = input.desired.cas.get(fp).and_then(|info| {
        input
            .loaded
            .config
            .cas
            .get(&info.name)
            .map(|s| (&info.name, s))
    });
    let at = |needle: &str| -> (Option<NamedSource<String>>, Option<SourceSpan>) {
        let text = &input.loaded.text;
        match text.find(needle) {
            Some(o) => (
                Some(NamedSource::new(
                    input.loaded.path.display().to_string(),
                    text.clone(),
                )),
                Some((o, needle.len()).into()),
            ),
            None => (None, None),
        }
    };
    if ca.is_none() {
        let (src, span) = match spec.and_then(|(_, s)| s.cert.as_ref()) {
            Some(c) => at(&c.value),
            None => (None, None),
        };
        return Some(Problem::Key {
            what,
            why: "its certificate is unknown: it is in no node's CA file and in no `cas` entry of trustform.yaml".into(),
            steps: steps_line,
            help: "restore the CA certificate (the `cert:` file of its `cas` entry), or make the plan again".into(),
            src,
            span,
            label: "this certificate".into(),
        });
    }
    let (why, help, src, span) = match spec.and_then(|(name, s)| s.key.as_ref().map(|k| (name, k))) {
        Some((name, k)) => {
            let path = input.loaded.resolve_path(k);
            let why = match std::fs::read_to_string(&path) {
                Err(e) => format!("its key file {k} cannot be read: {e}"),
                Ok(t) => match key_block(&t, k) {
                    None => format!("its key file {k} holds no private key"),
                    Some(pem) => match public_key_fingerprint(&pem, k) {
                        Err(e) => format!("its key file {k} is unusable: {e}"),
                        Ok(pk) => format!(
                            "its key file {k} is the key of another certificate (public key {}, the certificate's is {})",
                            pk.short(),
                            input.material.public_key_of(fp).map(Fingerprint::short).unwrap_or_default()
                        ),
                    },
                },
            };
            let (src, span) = at(k);
            (
                why,
                format!(
                    "put CA {name}'s private key back at {k} (0600; it was generated by `trustform rotate` beside its certificate), or rotate again with `trustform rotate` and make a new plan"
                ),
                src,
                span,
            )
        }
        None => (
            "its private key is not available: trustform.yaml's `cas` entry names no key file and no node holds it".into(),
            "name the CA's key file under `key:` in its `cas` entry of trustform.yaml".to_string(),
            None,
            None,
        ),
    };
    Some(Problem::Key {
        what,
        why,
        steps: steps_line,
        help,
        src,
        span,
        label: "this key".into(),
    })
}

/// File checks, each file once.
#[derive(Default)]
struct Files {
    /// (node, path or `path --flag`) checked.
    checked: BTreeSet<(String, String)>,
    restarts: usize,
    restarted: BTreeSet<(String, String)>,
    /// (node, tool) whose presence is checked, with the first restart that needs it.
    tools: BTreeMap<(String, &'static str), ToolUse>,
    problems: Vec<Problem>,
}

/// A restart that needs a tool on its node.
struct ToolUse {
    node: Node,
    component: String,
    step: String,
}

impl Files {
    /// Run `tool --version` on every node whose restarts need it, many nodes at once.
    fn check_tools(&mut self) {
        let uses: Vec<(&(String, &'static str), &ToolUse)> = self.tools.iter().collect();
        let seen = crate::parallel::map(&uses, 16, |((_, tool), u)| {
            let out = u
                .node
                .run(&[tool, "--version"], std::time::Duration::from_secs(60));
            let problem = match out {
                Ok(o) if o.success() => None,
                Ok(o) => Some((
                    format!("`{tool} --version` failed on the node: {}", o.reason()),
                    "trustform restarts and watches components with the node's own systemctl and crictl (cri-tools): install them",
                )),
                Err(e) => Some((
                    e.to_string(),
                    "give the node `access.ssh` in trustform.yaml (or run trustform on the node itself, `access.local.root: /`) so that trustform can restart and watch its components",
                )),
            };
            problem.map(|(why, help)| Problem::Restart {
                node: u.node.name.clone(),
                component: u.component.clone(),
                step: u.step.clone(),
                why,
                help: help.to_string(),
            })
        });
        self.problems.extend(seen.into_iter().flatten());
    }
}

/// A file's text, or why not.
fn text_of(node: &Node, path: &str) -> Result<Option<String>, exec::ExecError> {
    match exec::files::read(node, path)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| exec::ExecError::Content {
                node: node.name.clone(),
                path: path.to_string(),
                reason: "not UTF-8 text".into(),
            }),
    }
}

/// A file's text as a diagnostic shows it: every line kept (so line and column stay
/// true), long values (base64 key and certificate data) cut after a few characters.
fn elided(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|l| {
            let body = l.trim_end_matches(['\n', '\r']);
            if body.chars().count() <= 100 {
                return l.to_string();
            }
            let cut = body
                .find(": ")
                .map_or(0, |i| i + 2)
                .max(body.len() - body.trim_start().len());
            let keep: String = body[cut..].chars().take(12).collect();
            format!("{}{keep}…{}", &body[..cut], &l[body.len()..])
        })
        .collect()
}

/// The start of a 1-based line: up to its first `:` (a YAML key), else its first 64
/// characters (a base64 value would fill the screen).
fn head_span(text: &str, line: usize) -> SourceSpan {
    let whole = crate::observe::line_span(text, line);
    let body = &text[whole.offset()..whole.offset() + whole.len()];
    let indent = body.len() - body.trim_start().len();
    let rest = &body[indent..];
    let len = match rest.find(':') {
        Some(i) => i + 1,
        None => rest.char_indices().nth(64).map_or(rest.len(), |(i, _)| i),
    };
    (whole.offset() + indent, len).into()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(1, |i| i + 1)
}

fn pki_line(e: &PkiError) -> usize {
    match e {
        PkiError::CorruptPem { line, .. } | PkiError::BadCertificate { line, .. } => *line,
        _ => 1,
    }
}

impl Files {
    #[allow(clippy::too_many_arguments)]
    fn problem(
        &mut self,
        node: &Node,
        path: &str,
        step: &Step,
        why: String,
        help: &str,
        text: Option<(&str, usize, &str)>,
    ) {
        let (src, span, label) = match text {
            Some((t, line, label)) => {
                let shown = elided(t);
                let span = head_span(&shown, line);
                (
                    Some(NamedSource::new(format!("{}:{path}", node.name), shown)),
                    Some(span),
                    label.to_string(),
                )
            }
            None => (None, None, String::new()),
        };
        self.problems.push(Problem::File {
            node: node.name.clone(),
            path: path.to_string(),
            step: step.id.clone(),
            why,
            help: help.to_string(),
            src,
            span,
            label,
        });
    }

    /// Check the file a set operation reads; returns the CA it must issue from when the
    /// operation will sign (its target is not issued by that CA yet).
    fn check(
        &mut self,
        input: &Input,
        node: &Node,
        step: &Step,
        path: &str,
        field: &Field,
        want: &State,
    ) -> Option<Fingerprint> {
        // Each file once; a manifest once per flag set in it.
        let what = match field {
            Field::Flag(_, flag) => format!("{path} --{flag}"),
            _ => path.to_string(),
        };
        let first = self.checked.insert((node.name.clone(), what));
        let text = match text_of(node, path) {
            Ok(t) => t,
            Err(why) => {
                if first {
                    self.problem(
                        node,
                        path,
                        step,
                        why.to_string(),
                        "restore the file from a backup",
                        None,
                    );
                }
                return None;
            }
        };
        let material = input.material;
        let missing = |s: &mut Self, what: &str| {
            if first {
                s.problem(
                    node,
                    path,
                    step,
                    format!("no such {what}"),
                    "restore the file, or make the plan again if it was removed on purpose",
                    None,
                );
            }
        };
        match (field, want) {
            (Field::Bundle | Field::SignerCopy, _) => {
                if let Some(t) = &text
                    && first
                    && let Err(e) = parse_certs(t, path)
                {
                    self.problem(
                        node,
                        path,
                        step,
                        e.to_string(),
                        "restore the CA bundle from a backup (.trustform/backup, or the other control planes)",
                        Some((t, pki_line(&e), "here")),
                    );
                }
                None
            }
            (Field::SigningKey, State::KeyOf(fp)) => {
                let have = text
                    .as_deref()
                    .and_then(|t| key_block(t, path))
                    .and_then(|k| public_key_fingerprint(&k, path).ok());
                (have.is_none() || material.public_key_of(fp) != have.as_ref()).then(|| fp.clone())
            }
            (Field::Flag(component, flag), State::Path(value)) => {
                let Some(t) = text else {
                    missing(self, "manifest");
                    return None;
                };
                if !first {
                    return None;
                }
                match crate::manifest::parse(&t) {
                    Err(e) => {
                        let line = e.location().map_or(1, |l| l.line() as usize);
                        self.problem(
                            node,
                            path,
                            step,
                            format!("not a static pod manifest: {e}"),
                            "fix the YAML; the kubelet cannot start this pod either",
                            Some((&t, line, "here")),
                        );
                    }
                    Ok(m) if m.flags.get(flag) == Some(value) => {}
                    Ok(_) if crate::manifest::set_flag(&t, flag, value).is_none() => {
                        self.problem(
                            node,
                            path,
                            step,
                            format!("{component} has no --{flag}= flag for this step to set"),
                            &format!(
                                "put `- --{flag}=<path>` back into {component}'s command (kubeadm writes it), or make the plan again"
                            ),
                            Some((&t, line_of(&t, "command:"), &format!("no --{flag}= in this command"))),
                        );
                    }
                    Ok(_) => {}
                }
                None
            }
            (Field::KubeconfigCa | Field::KubeconfigClient, _) => {
                let Some(t) = text else {
                    missing(self, "kubeconfig");
                    return None;
                };
                let (issuer, problem) = kubeconfig_check(&t, path, material, want);
                if let Some((why, line, label, help)) = problem
                    && first
                {
                    self.problem(node, path, step, why, help, Some((&t, line, label)));
                }
                issuer
            }
            (Field::Leaf, State::IssuedBy(fp) | State::Renewed { issuer: fp, .. }) => {
                let Some(t) = text else {
                    missing(self, "certificate");
                    return None;
                };
                let leaf = match parse_certs(&t, path) {
                    Err(e) => {
                        if first {
                            self.problem(
                                node,
                                path,
                                step,
                                e.to_string(),
                                "restore the certificate from a backup, or re-issue it with `kubeadm certs renew`",
                                Some((&t, pki_line(&e), "here")),
                            );
                        }
                        return None;
                    }
                    Ok(v) => v.into_iter().find(|c| !c.facts.is_ca),
                };
                let Some(leaf) = leaf else {
                    if first {
                        self.problem(
                            node,
                            path,
                            step,
                            "holds no leaf certificate".into(),
                            "restore the certificate from a backup",
                            Some((&t, 1, "here")),
                        );
                    }
                    return None;
                };
                if first {
                    self.leaf_key(input, node, step, path, &t);
                }
                (!want.holds_leaf(material.issuer_of(&leaf), &leaf.facts.not_after))
                    .then(|| fp.clone())
            }
            _ => None,
        }
    }

    /// A leaf's key (in the same file, or `.key` beside a `.crt`) must parse; with
    /// `issuance.keepKeys` it must exist.
    fn leaf_key(&mut self, input: &Input, node: &Node, step: &Step, path: &str, text: &str) {
        let (key_path, key_text) = if key_block(text, path).is_some() {
            (path.to_string(), Some(text.to_string()))
        } else {
            let Some(kp) = path.strip_suffix(".crt").map(|p| format!("{p}.key")) else {
                return;
            };
            match text_of(node, &kp) {
                Ok(t) => (kp, t),
                Err(why) => {
                    self.problem(
                        node,
                        &kp,
                        step,
                        why.to_string(),
                        "restore the key from a backup",
                        None,
                    );
                    return;
                }
            }
        };
        let Some(kt) = key_text else {
            if input.loaded.config.issuance.keep_keys {
                self.problem(
                    node,
                    &key_path,
                    step,
                    format!("no key for {path}, and issuance.keepKeys re-uses it"),
                    "restore the key, or set `issuance: { keepKeys: false }` so the step makes a new one",
                    None,
                );
            }
            return;
        };
        // Parsed, not paired with the certificate: a step interrupted between writing
        // the new key and the new certificate leaves them apart, and re-running it
        // re-issues the pair.
        let pk = key_block(&kt, &key_path).map(|k| public_key_fingerprint(&k, &key_path));
        let why = match pk {
            None => Some(format!("holds no private key for {path}")),
            Some(Err(e)) => Some(e.to_string()),
            Some(Ok(_)) => None,
        };
        if let Some(why) = why {
            let line = line_of(&kt, "PRIVATE KEY");
            self.problem(
                node,
                &key_path,
                step,
                why,
                "restore the matching key from a backup, or re-issue the pair with `kubeadm certs renew`",
                Some((&kt, line, "this key")),
            );
        }
    }

    /// A cluster object published by a component from one of its flags: every control
    /// plane's manifest must have that flag.
    fn publisher(&mut self, input: &Input, step: &Step, field: &Field) {
        let (component, flag) = match field {
            Field::KubeRootCa => ("kube-controller-manager", "root-ca-file"),
            Field::ExtensionAuth => ("kube-apiserver", "requestheader-client-ca-file"),
            _ => return,
        };
        for n in &input.snap.nodes {
            let Some(node) = input.nodes.get(&n.name) else {
                continue;
            };
            let Some(c) = n.components.get(component) else {
                continue;
            };
            if !self.checked.insert((node.name.clone(), c.manifest.clone())) {
                continue;
            }
            let path = c.manifest.clone();
            match text_of(node, &path) {
                Ok(Some(t)) if crate::manifest::flag_line(&t, flag).is_none() => self.problem(
                    node,
                    &path,
                    step,
                    format!("{component} has no --{flag}=: it publishes the CAs this step waits for from that file"),
                    &format!("put `- --{flag}=/etc/kubernetes/pki/…` back into {component}'s command (kubeadm writes it)"),
                    Some((&t, line_of(&t, "command:"), &format!("no --{flag}= in this command"))),
                ),
                Ok(Some(_)) => {}
                Ok(None) => self.problem(node, &path, step, "no such manifest".into(), "restore the manifest", None),
                Err(why) => self.problem(node, &path, step, why.to_string(), "restore the manifest", None),
            }
        }
    }

    /// A restart must be possible: the manifest it annotates, or a kubelet trustform can
    /// restart.
    fn restart(&mut self, node: &Node, step: &Step, component: &str) {
        if !self
            .restarted
            .insert((node.name.clone(), component.to_string()))
        {
            return;
        }
        self.restarts += 1;
        let fail = |s: &mut Self, why: String, help: &str| {
            s.problems.push(Problem::Restart {
                node: node.name.clone(),
                component: component.to_string(),
                step: step.id.clone(),
                why,
                help: help.to_string(),
            });
        };
        // The restart is watched with the node's own tools: they must be there.
        let tool = if component == "kubelet" {
            "systemctl"
        } else {
            "crictl"
        };
        self.tools
            .entry((node.name.clone(), tool))
            .or_insert_with(|| ToolUse {
                node: node.clone(),
                component: component.to_string(),
                step: step.id.clone(),
            });
        if component == "kubelet" {
            return;
        }
        let path = crate::layout::manifest(component);
        match text_of(node, &path) {
            Ok(Some(t)) => {
                if crate::manifest::set_annotation(&t, crate::manifest::RESTARTED_AT, "x").is_none()
                {
                    fail(
                        self,
                        format!("{path} has no top-level `metadata:` to annotate"),
                        "fix the manifest: a static pod has `metadata:` with its name",
                    );
                }
            }
            Ok(None) => fail(
                self,
                format!("{path} does not exist"),
                "restore the manifest from a backup",
            ),
            Err(why) => fail(self, why.to_string(), "restore the manifest"),
        }
    }
}

type KubeconfigProblem = (String, usize, &'static str, &'static str);

/// A kubeconfig a step reads: it parses, its current context has a cluster, and an
/// embedded client certificate has its key beside it. Returns the CA to issue from (a
/// client certificate not yet from `want`'s issuer) and the problem, if any.
fn kubeconfig_check(
    text: &str,
    path: &str,
    material: &Material,
    want: &State,
) -> (Option<Fingerprint>, Option<KubeconfigProblem>) {
    let kc: Kubeconfig = match serde_saphyr::from_str(text) {
        Ok(k) => k,
        Err(e) => {
            let line = e.location().map_or(1, |l| l.line() as usize);
            return (
                None,
                Some((
                    format!("not a kubeconfig: {e}"),
                    line,
                    "here",
                    "fix the YAML syntax, or restore the file from a backup",
                )),
            );
        }
    };
    let (cluster, user) = kc.current();
    if cluster.is_none() {
        return (
            None,
            Some((
                "no cluster in the current context".into(),
                line_of(text, "current-context"),
                "here",
                "set current-context to a context whose cluster exists",
            )),
        );
    }
    let Some(u) = user.map(|u| &u.user) else {
        return (None, None);
    };
    let Some(cert_data) = u.client_certificate_data.as_deref() else {
        if want.issuer().is_some() {
            return (
                None,
                Some((
                    "no client-certificate-data in the current user".into(),
                    line_of(text, "users:"),
                    "here",
                    "restore the kubeconfig from a backup",
                )),
            );
        }
        return (None, None);
    };
    let cert_line = line_of(text, "client-certificate-data");
    let leaf = unb64(cert_data)
        .ok_or_else(|| "client-certificate-data is not base64 PEM".to_string())
        .and_then(|t| parse_certs(&t, path).map_err(|e| e.to_string()))
        .and_then(|v| {
            v.into_iter()
                .find(|c| !c.facts.is_ca)
                .ok_or_else(|| "client-certificate-data holds no leaf certificate".to_string())
        });
    let leaf = match leaf {
        Ok(l) => l,
        Err(why) => {
            return (
                None,
                Some((
                    why,
                    cert_line,
                    "this certificate",
                    "restore the kubeconfig from a backup, or re-issue it with `kubeadm kubeconfig user`",
                )),
            );
        }
    };
    let issuer = want
        .issuer()
        .filter(|_| !want.holds_leaf(material.issuer_of(&leaf), &leaf.facts.not_after))
        .cloned();
    let key_line = line_of(text, "client-key-data");
    let Some(key_data) = u.client_key_data.as_ref() else {
        return (
            issuer,
            Some((
                "the client certificate has no client-key-data beside it".into(),
                cert_line,
                "this certificate",
                "restore the kubeconfig from a backup: its client key is missing",
            )),
        );
    };
    let why = match key_data.decode() {
        None => Some("client-key-data is not base64 PEM".to_string()),
        Some(k) => match public_key_fingerprint(&k, path) {
            Err(e) => Some(format!("client-key-data: {e}")),
            Ok(pk) if pk != leaf.facts.public_key => Some(format!(
                "client-key-data is not the key of the client certificate (public key {}, the certificate's is {})",
                pk.short(),
                leaf.facts.public_key.short()
            )),
            Ok(_) => None,
        },
    };
    (
        issuer,
        why.map(|w| {
            (
                w,
                key_line,
                "this key",
                "restore the kubeconfig from a backup (.trustform/backup, or kubeadm's /etc/kubernetes/tmp), or re-issue it with `kubeadm kubeconfig user`",
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_checked_once_per_node_and_each_failure_names_its_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let on = |name: &str, root: &std::path::Path| {
            Node::new(
                name,
                std::sync::Arc::new(crate::transport::Local::new(name, root)),
                None,
            )
        };
        let here = on("here", std::path::Path::new("/"));
        let mounted = on("mounted", tmp.path());
        let mut files = Files::default();
        for (node, tool, component) in [
            (&here, "true", "kubelet"),
            (&here, "false", "kube-apiserver"),
            (&mounted, "true", "kubelet"),
        ] {
            files.tools.insert(
                (node.name.clone(), tool),
                ToolUse {
                    node: node.clone(),
                    component: component.into(),
                    step: format!("s/{component}@{}", node.name),
                },
            );
        }
        files.check_tools();
        let mut seen: Vec<(String, String, String, String)> = files
            .problems
            .iter()
            .map(|p| match p {
                Problem::Restart {
                    node,
                    step,
                    why,
                    help,
                    ..
                } => (node.clone(), step.clone(), why.clone(), help.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        seen.sort();
        assert_eq!(seen.len(), 2, "{seen:?}");
        // A tool that answers with a failure.
        assert_eq!(seen[0].0, "here");
        assert_eq!(seen[0].1, "s/kube-apiserver@here");
        assert!(
            seen[0]
                .2
                .starts_with("`false --version` failed on the node"),
            "{seen:?}"
        );
        assert!(seen[0].3.contains("install them"), "{seen:?}");
        // A node where no command runs at all.
        assert_eq!(seen[1].0, "mounted");
        assert_eq!(seen[1].1, "s/kubelet@mounted");
        assert!(seen[1].3.contains("access.ssh"), "{seen:?}");
    }
}
