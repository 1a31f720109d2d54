//! Text: legend, authorities, one block per step grouped by stage, the summary line.

use super::{continuity_lines, diff_lines, doc_label, manual_nodes, mark, summary_line};
use crate::plan::Plan;
use std::fmt::Write;

/// Render a plan as text.
pub fn text(plan: &Plan) -> String {
    let mut o = String::new();
    if plan.is_empty() {
        writeln!(o, "{}", summary_line(plan)).unwrap();
        return o;
    }
    writeln!(
        o,
        "trustform will perform the following steps on cluster {}.",
        plan.cluster
    )
    .unwrap();
    writeln!(o).unwrap();
    writeln!(o, "Legend:  ~ write   ! restart   ? wait or verify   [n] documented step n   [+] step trustform adds").unwrap();
    if plan.summary.manual > 0 {
        writeln!(
            o,
            "         (manual) a step you carry out: trustform cannot run commands on {}; apply pauses there until you confirm it",
            manual_nodes(plan)
        )
        .unwrap();
    }
    writeln!(o).unwrap();
    if let Some(line) = plan.renewal_line() {
        writeln!(o, "{line}").unwrap();
    }
    for a in &plan.authorities {
        writeln!(o, "Authority {}:", a.authority).unwrap();
        writeln!(o, "  issuer  {}  →  {}", a.from.issuer, a.to.issuer).unwrap();
        writeln!(
            o,
            "  trust   [{}]  →  [{}]",
            a.from.trust.join(", "),
            a.to.trust.join(", ")
        )
        .unwrap();
    }
    let mut stage = None;
    for s in &plan.steps {
        if stage != Some((s.procedure.as_str(), s.stage)) {
            stage = Some((s.procedure.as_str(), s.stage));
            let n = plan
                .steps
                .iter()
                .filter(|x| x.stage == s.stage && x.procedure == s.procedure)
                .count();
            let title = format!("{}: stage {} ({n} steps) ", s.procedure, s.stage.name());
            writeln!(o).unwrap();
            writeln!(
                o,
                "── {title}{}",
                "─".repeat(60usize.saturating_sub(title.len()))
            )
            .unwrap();
        }
        writeln!(o).unwrap();
        let manual = s.manual();
        let tag = if manual.is_some() { " (manual)" } else { "" };
        writeln!(o, "  {} [{}] {}{tag}", mark(s.kind), doc_label(s), s.id).unwrap();
        writeln!(o, "      {}", s.title).unwrap();
        if let Some(lines) = manual {
            writeln!(
                o,
                "      manual: apply pauses here; do this, then `trustform apply --confirm {}`:",
                s.id
            )
            .unwrap();
            for l in lines {
                writeln!(o, "        {l}").unwrap();
            }
        }
        if let Some(d) = &s.disruption {
            writeln!(o, "      ⚠ disruption: {d}").unwrap();
        }
        for c in &s.changes {
            writeln!(o, "      {}", c.what).unwrap();
            for l in diff_lines(c) {
                writeln!(o, "        {l}").unwrap();
            }
        }
        if !s.depends_on.is_empty() {
            let shown: Vec<&str> = s.depends_on.iter().take(3).map(String::as_str).collect();
            let more = s.depends_on.len().saturating_sub(3);
            let tail = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            writeln!(o, "      after: {}{tail}", shown.join(", ")).unwrap();
        }
    }
    if !plan.skipped.is_empty() {
        writeln!(o).unwrap();
        writeln!(o, "Documented steps with nothing to do:").unwrap();
        for k in &plan.skipped {
            writeln!(o, "  [{}] {}: {}", k.doc_step, k.id, k.reason).unwrap();
        }
    }
    writeln!(o).unwrap();
    writeln!(o, "{}", summary_line(plan)).unwrap();
    for l in continuity_lines(plan) {
        writeln!(o, "{l}").unwrap();
    }
    o
}
