//! Plan renderers: text (Terraform's manner), markdown (pull-request comment), json,
//! dot and mermaid (the graph).

mod graph;
mod markdown;
mod text;

pub use graph::{dot, mermaid};
pub use markdown::{COMMENT_LIMIT, comment, markdown, marker};
pub use text::text;

use crate::plan::rehearse::Rehearsal;
use crate::plan::{Plan, Step, StepChange};
use crate::procedure::ActionKind;

/// Output formats of `plan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable, Terraform style.
    Text,
    /// The plan file's JSON.
    Json,
    /// A pull-request comment.
    Markdown,
    /// Graphviz DOT of the step graph.
    Dot,
    /// Mermaid flowchart of the step graph.
    Mermaid,
}

/// Render in a format.
pub fn render(plan: &Plan, format: Format) -> String {
    match format {
        Format::Text => text(plan),
        Format::Json => json(plan),
        Format::Markdown => markdown(plan),
        Format::Dot => dot(plan),
        Format::Mermaid => mermaid(plan),
    }
}

/// The plan file's JSON (see `plan::model` for the format).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("plan serialises") + "\n"
}

/// `Plan: N steps (A writes, R restarts, W waits) across S stages.`
pub fn summary_line(plan: &Plan) -> String {
    if plan.is_empty() {
        return "No changes. The cluster's trust matches trustform.yaml.".into();
    }
    let s = &plan.summary;
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let manual = if s.manual > 0 {
        format!(" ({} manual)", s.manual)
    } else {
        String::new()
    };
    format!(
        "Plan: {} ({}, {}{manual}, {}) across {}.",
        plural(s.steps, "step", "steps"),
        plural(s.writes, "write", "writes"),
        plural(s.restarts, "restart", "restarts"),
        plural(s.waits, "wait", "waits"),
        plural(s.stages.len(), "stage", "stages"),
    )
}

/// The continuity lines under a plan: the proof, availability gaps, bare-pod warnings,
/// edges broken before the plan (at most 5 of each kind of note).
pub fn continuity_lines(plan: &Plan) -> Vec<String> {
    plan.continuity
        .as_ref()
        .map_or_else(Vec::new, |r| rehearsal_lines(r, 5))
}

/// A rehearsal as text: its line, every break (with the step after which the edge is
/// live again), availability gaps, and up to `shown` bare-pod warnings and notes.
pub fn rehearsal_lines(r: &Rehearsal, shown: usize) -> Vec<String> {
    let mut out = vec![r.line()];
    for b in &r.breaks {
        let back = b
            .restored
            .as_ref()
            .map(|s| format!(" (live again after {s})"))
            .unwrap_or_default();
        out.push(format!("  ✗ {}: {}: {}{back}", b.at, b.edge, b.why));
    }
    for g in &r.gaps {
        out.push(format!("  availability gap at {}: {}", g.at, g.what));
    }
    for b in r.warnings.iter().take(shown) {
        out.push(format!(
            "  warning: {} loses trust at {} (a bare pod: no rollout restarts it; recreate it after documented step 4): {}",
            b.edge, b.at, b.why
        ));
    }
    if r.warnings.len() > shown {
        out.push(format!(
            "  warning: … and {} more edges of bare pods (`trustform rehearse` lists them)",
            r.warnings.len() - shown
        ));
    }
    for b in r.broken_before.iter().take(shown) {
        out.push(format!(
            "  note: {} is broken before the plan starts: {}",
            b.edge, b.why
        ));
    }
    if r.broken_before.len() > shown {
        out.push(format!(
            "  note: … and {} more edges broken before the plan starts",
            r.broken_before.len() - shown
        ));
    }
    out
}

/// The unverified edges of a rehearsal, under their reason (`trustform rehearse`; a
/// plan only counts them in its continuity line).
pub fn unverified_lines(r: &Rehearsal) -> Vec<String> {
    let mut reasons: Vec<&str> = vec![];
    for u in &r.unverified {
        if !reasons.contains(&u.why.as_str()) {
            reasons.push(&u.why);
        }
    }
    let mut out = vec![];
    for why in reasons {
        out.push(format!(
            "  unverified ({why}; the client certificate is still checked):"
        ));
        out.extend(
            r.unverified
                .iter()
                .filter(|u| u.why == why)
                .map(|u| format!("    {}", u.edge)),
        );
    }
    out
}

/// The one-character mark of a step kind.
pub fn mark(kind: ActionKind) -> char {
    match kind {
        ActionKind::Write => '~',
        ActionKind::Restart => '!',
        ActionKind::Wait => '?',
    }
}

/// The nodes a plan's manual steps are on, joined: `w-1, w-2`.
pub fn manual_nodes(plan: &Plan) -> String {
    let mut v: Vec<&str> = plan
        .steps
        .iter()
        .filter(|s| s.manual().is_some())
        .map(|s| s.target.as_str())
        .collect();
    v.sort_unstable();
    v.dedup();
    v.join(", ")
}

/// A step that takes something away (trust, a certificate, a key) or disrupts.
pub fn destructive(step: &Step) -> bool {
    let takes_away = |l: &String| {
        l.starts_with("CA ") || l.starts_with("certificate issued by") || l.starts_with("key of CA")
    };
    step.disruption.is_some()
        || step.changes.iter().any(|c| {
            c.before
                .iter()
                .any(|l| takes_away(l) && !c.after.contains(l))
        })
}

/// A change as diff lines: ` kept`, `-removed`, `+added`.
pub fn diff_lines(c: &StepChange) -> Vec<String> {
    let before = c.before.join("\n") + "\n";
    let after = c.after.join("\n") + "\n";
    let diff = similar::TextDiff::from_lines(&before, &after);
    diff.iter_all_changes()
        .filter(|ch| !ch.value().trim().is_empty())
        .map(|ch| {
            let sign = match ch.tag() {
                similar::ChangeTag::Equal => ' ',
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
            };
            format!("{sign}{}", ch.value().trim_end())
        })
        .collect()
}

/// `1`, `8.3` or `+` (a step trustform adds).
pub fn doc_label(step: &Step) -> String {
    step.doc_step.clone().unwrap_or_else(|| "+".into())
}
