//! Markdown for a pull-request comment: summary first, destructive steps bannered,
//! details folded per stage.

use super::{
    continuity_lines, destructive, diff_lines, doc_label, manual_nodes, mark, summary_line,
};
use crate::plan::Plan;
use std::fmt::Write;

/// Render a plan as a pull-request comment.
pub fn markdown(plan: &Plan) -> String {
    let mut o = String::new();
    writeln!(o, "### trustform plan: cluster `{}`", plan.cluster).unwrap();
    writeln!(o).unwrap();
    writeln!(o, "**{}**", summary_line(plan)).unwrap();
    if plan.is_empty() {
        return o;
    }
    let cont = continuity_lines(plan);
    if !cont.is_empty() {
        writeln!(o).unwrap();
        writeln!(o, "✅ {}", cont[0]).unwrap();
        for l in &cont[1..] {
            writeln!(o, "- {}", l.trim_start()).unwrap();
        }
    }
    writeln!(o).unwrap();
    writeln!(o, "| authority | issuer | trust |").unwrap();
    writeln!(o, "|---|---|---|").unwrap();
    for a in &plan.authorities {
        writeln!(
            o,
            "| {} | {} → **{}** | {} → **{}** |",
            a.authority,
            a.from.issuer,
            a.to.issuer,
            a.from.trust.join(", "),
            a.to.trust.join(", ")
        )
        .unwrap();
    }
    if plan.summary.manual > 0 {
        writeln!(o).unwrap();
        writeln!(o, "> [!IMPORTANT]").unwrap();
        writeln!(
            o,
            "> **{} manual steps** ✋: trustform cannot run commands on {}. `apply` pauses at each and prints what to do; the operator does it and confirms it with `trustform apply --confirm STEP-ID`.",
            plan.summary.manual,
            manual_nodes(plan)
        )
        .unwrap();
    }
    let bad: Vec<_> = plan.steps.iter().filter(|s| destructive(s)).collect();
    if !bad.is_empty() {
        writeln!(o).unwrap();
        writeln!(o, "> [!WARNING]").unwrap();
        writeln!(o, "> **{} destructive steps**: they replace certificates or keys, remove trust, or restart an API server.", bad.len()).unwrap();
        let mut templates: Vec<String> = bad
            .iter()
            .map(|s| format!("`{}/{}`", s.procedure, s.template))
            .collect();
        templates.dedup();
        writeln!(o, "> {}", templates.join(", ")).unwrap();
        for d in bad
            .iter()
            .filter_map(|s| s.disruption.as_deref())
            .collect::<std::collections::BTreeSet<_>>()
        {
            writeln!(o, "> - {d}").unwrap();
        }
    }
    for stage in &plan.summary.stages {
        let steps: Vec<_> = plan.steps.iter().filter(|s| s.stage == *stage).collect();
        writeln!(o).unwrap();
        writeln!(
            o,
            "<details><summary>Stage <b>{}</b>: {} steps</summary>",
            stage.name(),
            steps.len()
        )
        .unwrap();
        writeln!(o).unwrap();
        for s in steps {
            let mut flag = if destructive(s) { " ⚠️" } else { "" }.to_string();
            if s.manual().is_some() {
                flag.push_str(" ✋ **manual**");
            }
            writeln!(
                o,
                "- `{}` **[{}] {}**{flag}: {}",
                mark(s.kind),
                doc_label(s),
                s.id,
                s.title
            )
            .unwrap();
            let body: Vec<String> = s
                .changes
                .iter()
                .flat_map(|c| std::iter::once(format!("# {}", c.what)).chain(diff_lines(c)))
                .collect();
            if let Some(lines) = s.manual() {
                writeln!(o, "  ```text").unwrap();
                for l in lines {
                    writeln!(o, "  {l}").unwrap();
                }
                writeln!(o, "  ```").unwrap();
            }
            if !body.is_empty() {
                writeln!(o, "  ```diff").unwrap();
                for l in body {
                    writeln!(o, "  {l}").unwrap();
                }
                writeln!(o, "  ```").unwrap();
            }
        }
        writeln!(o).unwrap();
        writeln!(o, "</details>").unwrap();
    }
    if !plan.skipped.is_empty() {
        writeln!(o).unwrap();
        writeln!(
            o,
            "<details><summary>Documented steps with nothing to do ({})</summary>",
            plan.skipped.len()
        )
        .unwrap();
        writeln!(o).unwrap();
        for k in &plan.skipped {
            writeln!(o, "- [{}] `{}`: {}", k.doc_step, k.id, k.reason).unwrap();
        }
        writeln!(o).unwrap();
        writeln!(o, "</details>").unwrap();
    }
    writeln!(o).unwrap();
    writeln!(
        o,
        "<sub>snapshot `{}` · config `{}` · trustform {}</sub>",
        plan.snapshot_fingerprint, plan.config_hash, plan.tool_version
    )
    .unwrap();
    o
}
