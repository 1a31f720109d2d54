//! The step graph as Graphviz DOT or a Mermaid flowchart.

use super::doc_label;
use crate::plan::Plan;
use crate::procedure::ActionKind;
use std::collections::HashMap;
use std::fmt::Write;

/// The plan's arcs as (dependency, dependent) step indices.
fn arcs(plan: &Plan) -> Vec<(usize, usize)> {
    let index: HashMap<&str, usize> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    plan.steps
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()))
                .map(move |j| (*j, i))
        })
        .collect()
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Graphviz DOT.
pub fn dot(plan: &Plan) -> String {
    let mut o = String::with_capacity(plan.steps.len() * 96);
    o.push_str(
        "digraph plan {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", fontsize=10];\n",
    );
    for (i, s) in plan.steps.iter().enumerate() {
        let style = match s.kind {
            _ if s.manual().is_some() => "rounded,bold",
            ActionKind::Write => "solid",
            ActionKind::Restart => "rounded",
            ActionKind::Wait => "dashed",
        };
        writeln!(
            o,
            "  s{i} [label=\"[{}] {}\\n{}{}\", style=\"{style}\"];",
            esc(&doc_label(s)),
            esc(&s.template),
            esc(&s.target),
            if s.manual().is_some() {
                " (manual)"
            } else {
                ""
            }
        )
        .unwrap();
    }
    for (j, i) in arcs(plan) {
        writeln!(o, "  s{j} -> s{i};").unwrap();
    }
    o.push_str("}\n");
    o
}

/// Mermaid flowchart.
pub fn mermaid(plan: &Plan) -> String {
    let mut o = String::with_capacity(plan.steps.len() * 80);
    o.push_str("flowchart TD\n");
    for (i, s) in plan.steps.iter().enumerate() {
        let manual = if s.manual().is_some() {
            " (manual)"
        } else {
            ""
        };
        let label =
            format!("[{}] {} @ {}{manual}", doc_label(s), s.template, s.target).replace('"', "'");
        writeln!(o, "  s{i}[\"{label}\"]").unwrap();
    }
    for (j, i) in arcs(plan) {
        writeln!(o, "  s{j} --> s{i}").unwrap();
    }
    o
}
