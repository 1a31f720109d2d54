//! Markdown for a pull-request comment: summary first, destructive steps bannered,
//! details folded per stage. As a comment ([`comment`]) it starts with a hidden marker
//! naming the cluster (a bot edits the one comment that carries it instead of adding
//! another) and fits a size limit: the details give way (step diffs first, then the
//! step lists), never the summary.

use super::{
    continuity_lines, destructive, diff_lines, doc_label, manual_nodes, mark, summary_line,
};
use crate::plan::Plan;
use std::fmt::Write;

/// GitHub refuses a comment over 65,536 characters; a little room is kept.
pub const COMMENT_LIMIT: usize = 65_000;

/// Plans of more steps than this fold each stage's steps.
const FOLD_ABOVE: usize = 16;

/// How much of the steps a rendering shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Detail {
    /// Per stage, one line per template, with the nodes it runs on.
    Templates,
    /// Per stage, the step lines only.
    Steps,
    /// Per stage, every step with its diff.
    Diffs,
}

/// Render a plan as markdown, whole.
pub fn markdown(plan: &Plan) -> String {
    let mut o = head(plan);
    if !plan.is_empty() {
        o.push_str(&details(plan, Detail::Diffs));
    }
    o.push_str(&footer(plan));
    o
}

/// The hidden marker of a cluster's plan comment: a bot finds the comment to update by
/// its first line (`<!-- trustform-plan cluster="NAME" -->`).
pub fn marker(plan: &Plan) -> String {
    format!(
        "<!-- trustform-plan cluster=\"{}\" -->\n<!-- trustform-plan-id {} -->\n",
        plan.cluster.replace("--", "- -").replace('"', "'"),
        plan.id()
    )
}

/// The plan as a pull-request comment of at most `max_bytes`: the marker and the summary
/// always; then every step's diff if it fits, else the step lists per stage, else a note
/// that the details are in the plan file.
pub fn comment(plan: &Plan, max_bytes: usize) -> String {
    let top = format!("{}{}", marker(plan), head(plan));
    let end = footer(plan);
    if plan.is_empty() {
        return format!("{top}{end}");
    }
    for detail in [Detail::Diffs, Detail::Steps, Detail::Templates] {
        let mut body = details(plan, detail);
        match detail {
            Detail::Diffs => {}
            Detail::Steps => body.push_str("\n> [!NOTE]\n> Step diffs left out to fit a comment: `trustform show plan.json` shows them all.\n"),
            Detail::Templates => body.push_str("\n> [!NOTE]\n> Steps grouped by what they do to fit a comment: `trustform show plan.json` lists each step with its diff.\n"),
        }
        if top.len() + body.len() + end.len() <= max_bytes {
            return format!("{top}{body}{end}");
        }
    }
    format!(
        "{top}\n> [!NOTE]\n> The {} steps are left out to fit a comment ({max_bytes} bytes): `trustform show plan.json` lists them.\n{end}",
        plan.steps.len()
    )
}

/// The summary: cluster, counts, continuity, what changes per authority, manual and
/// destructive steps.
fn head(plan: &Plan) -> String {
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
    if let Some(line) = plan.renewal_line() {
        writeln!(o).unwrap();
        writeln!(o, "**{line}**").unwrap();
    }
    if !plan.authorities.is_empty() {
        writeln!(o).unwrap();
        writeln!(o, "| authority | issuer | trust |").unwrap();
        writeln!(o, "|---|---|---|").unwrap();
    }
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
    o
}

/// The steps, per stage (folded when the plan is more than a few steps), and the
/// documented steps with nothing to do.
fn details(plan: &Plan, detail: Detail) -> String {
    let mut o = String::new();
    let fold = plan.steps.len() > FOLD_ABOVE;
    for stage in &plan.summary.stages {
        let steps: Vec<_> = plan.steps.iter().filter(|s| s.stage == *stage).collect();
        writeln!(o).unwrap();
        if fold {
            writeln!(
                o,
                "<details><summary>Stage <b>{}</b>: {} steps</summary>",
                stage.name(),
                steps.len()
            )
            .unwrap();
        } else {
            writeln!(o, "**Stage {}**: {} steps", stage.name(), steps.len()).unwrap();
        }
        writeln!(o).unwrap();
        if detail == Detail::Templates {
            templates(&mut o, &steps);
        }
        for s in steps.into_iter().filter(|_| detail > Detail::Templates) {
            let flag = flags(s);
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
            if detail < Detail::Diffs {
                continue;
            }
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
        if fold {
            writeln!(o).unwrap();
            writeln!(o, "</details>").unwrap();
        }
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
    o
}

/// A step's marks after its name: ⚠️ destructive, ✋ manual.
fn flags(s: &crate::plan::Step) -> String {
    let mut flag = if destructive(s) { " ⚠️" } else { "" }.to_string();
    if s.manual().is_some() {
        flag.push_str(" ✋ **manual**");
    }
    flag
}

/// One line per template of a stage's steps (in plan order): what it does, on which
/// targets.
fn templates(o: &mut String, steps: &[&crate::plan::Step]) {
    let mut groups: Vec<(&crate::plan::Step, Vec<&str>)> = vec![];
    for s in steps {
        match groups
            .iter_mut()
            .find(|(first, _)| first.procedure == s.procedure && first.template == s.template)
        {
            Some((_, targets)) => targets.push(&s.target),
            None => groups.push((s, vec![&s.target])),
        }
    }
    for (s, targets) in groups {
        let flag = flags(s);
        let on = match targets.len() {
            1 => targets[0].to_string(),
            n if n <= 4 => targets.join(", "),
            n => format!(
                "{n} targets ({}, … {})",
                targets[..2].join(", "),
                targets[n - 1]
            ),
        };
        writeln!(
            o,
            "- `{}` **[{}] {}/{}**{flag}: {} — on {on}",
            mark(s.kind),
            doc_label(s),
            s.procedure,
            s.template,
            s.title
        )
        .unwrap();
    }
}

/// What the plan was made on.
fn footer(plan: &Plan) -> String {
    let mut o = String::new();
    writeln!(o).unwrap();
    writeln!(
        o,
        "<sub>snapshot `{}` · config `{}` · trustform {}</sub>",
        plan.snapshot_fingerprint, plan.config_hash, plan.tool_version
    )
    .unwrap();
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Authority;
    use crate::diff::Desired;
    use crate::diff::tests::{cluster, desired, f_new, f_old, kubernetes_to_new, target};

    fn plan(cps: usize, workers: usize) -> Plan {
        plan_of(cps, workers, &kubernetes_to_new())
    }

    fn plan_of(cps: usize, workers: usize, d: &Desired) -> Plan {
        let procedures = crate::procedure::load_all().unwrap();
        crate::plan::build(&crate::plan::Input {
            snapshot: &cluster(cps, workers),
            desired: d,
            procedures: &procedures,
            cluster: "prod-eu",
            config_hash: "sha256:c",
            no_stages: false,
            manual: &Default::default(),
            now: time::OffsetDateTime::now_utc(),
        })
        .unwrap()
    }

    #[test]
    fn a_large_plans_comment_fits_and_starts_with_the_marker_and_the_summary() {
        let p = plan(3, 200);
        let whole = markdown(&p);
        assert!(
            whole.len() > COMMENT_LIMIT,
            "{} bytes: too small to test",
            whole.len()
        );
        let c = comment(&p, COMMENT_LIMIT);
        assert!(c.len() <= COMMENT_LIMIT, "{} bytes", c.len());
        let mut lines = c.lines();
        assert_eq!(
            lines.next(),
            Some("<!-- trustform-plan cluster=\"prod-eu\" -->")
        );
        assert_eq!(
            lines.next(),
            Some(format!("<!-- trustform-plan-id {} -->", p.id()).as_str())
        );
        assert_eq!(lines.next(), Some("### trustform plan: cluster `prod-eu`"));
        lines.next();
        assert_eq!(
            lines.next(),
            Some(format!("**{}**", summary_line(&p)).as_str())
        );
        assert!(c.contains(&head(&p)), "the summary is whole");
        assert!(
            c.contains("`trustform show plan.json`"),
            "it says where the rest is"
        );
        // Stages fold; every step of the plan is still named if the step lists fit.
        assert!(c.contains("<details><summary>Stage"));
    }

    #[test]
    fn a_tiny_plans_comment_is_whole_and_unfolded() {
        // A front-proxy rotation of one control plane.
        let p = plan_of(
            1,
            0,
            &desired(&[(
                Authority::FrontProxy,
                target(&f_old(), &[f_old()]),
                target(&f_new(), &[f_new()]),
            )]),
        );
        assert!(p.steps.len() <= FOLD_ABOVE, "{} steps", p.steps.len());
        let c = comment(&p, COMMENT_LIMIT);
        assert_eq!(c, format!("{}{}", marker(&p), markdown(&p)));
        assert!(!c.contains("<details><summary>Stage"), "{c}");
        assert!(!c.contains("[!NOTE]"), "{c}");
        insta::assert_snapshot!("tiny_plan_comment", c);
    }

    #[test]
    fn the_marker_cannot_end_its_html_comment() {
        let mut p = plan(1, 0);
        p.cluster = "a-->b\"c".into();
        let m = marker(&p);
        assert_eq!(m.matches("-->").count(), 2, "{m}");
    }
}
