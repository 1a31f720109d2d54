//! The shape of the code, read from its sources: the product does not know its simulator,
//! the modules depend on each other one way, and `diff` and `plan` do no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `src/`, with its path relative to `src/` and its code lines
/// (comments left out).
fn sources() -> Vec<(String, Vec<String>)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![];
    walk(&src, &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().display().to_string();
            let code = std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .map(str::to_string)
                .collect();
            (rel, code)
        })
        .collect()
}

/// The top-level module a file belongs to (`apply/gate.rs` → `apply`, `diff.rs` → `diff`).
fn module(rel: &str) -> String {
    rel.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string()
}

/// The top-level modules a line names through `crate::`.
fn named(line: &str) -> Vec<String> {
    line.match_indices("crate::")
        .map(|(i, _)| {
            line[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .filter(|m: &String| !m.is_empty())
        .collect()
}

#[test]
fn the_product_does_not_know_its_simulator() {
    let allowed = |rel: &str| {
        rel.starts_with("sandbox/")
            || rel == "sandbox.rs"
            || rel == "cli/sandbox.rs"
            || rel == "cli/demo.rs"
    };
    let mut found = vec![];
    for (rel, code) in sources() {
        if allowed(&rel) {
            continue;
        }
        for (i, line) in code.iter().enumerate() {
            if line.contains("crate::sandbox") || line.contains("trustform::sandbox") {
                found.push(format!("src/{rel}: {}", line.trim()));
            }
            let _ = i;
        }
    }
    assert!(
        found.is_empty(),
        "the simulator is named outside sandbox/, cli/sandbox.rs and cli/demo.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn modules_depend_on_each_other_one_way() {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in sources() {
        let m = module(&rel);
        if m == "lib" || m == "main" {
            continue;
        }
        let entry = deps.entry(m.clone()).or_default();
        for line in &code {
            entry.extend(named(line).into_iter().filter(|d| *d != m));
        }
    }
    // A cycle is a module that reaches itself.
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = deps.get(from).into_iter().flatten().cloned().collect();
        while let Some(m) = todo.pop() {
            if seen.insert(m.clone()) {
                todo.extend(deps.get(&m).into_iter().flatten().cloned());
            }
        }
        seen
    };
    let cycles: Vec<String> = deps
        .keys()
        .filter(|m| reach(m).contains(*m))
        .map(|m| {
            let back: Vec<&String> = deps[m].iter().filter(|d| reach(d).contains(m)).collect();
            format!("{m} → {back:?} → … → {m}")
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    // The shape the design names: observe → diff → plan → apply, never back up; the
    // simulator depends on the product, not the reverse.
    for (m, never) in [
        ("diff", &["plan", "apply", "exec", "observe", "cli"][..]),
        ("plan", &["apply", "exec", "observe", "cli"][..]),
        ("snapshot", &["observe", "diff", "plan", "apply", "cli"][..]),
        ("transport", &["exec", "apply", "observe", "cli"][..]),
    ] {
        let r = reach(m);
        for n in never {
            assert!(!r.contains(*n), "{m} reaches {n}");
        }
    }
    // The test reads what it claims to: these edges exist.
    assert!(deps["apply"].contains("plan") && deps["sandbox"].contains("transport"));
}

#[test]
fn diff_and_plan_do_no_io() {
    let io = [
        "std::fs",
        "std::net",
        "std::process",
        "std::env",
        "tokio::",
        "File::",
        "crate::transport",
        "crate::exec",
        "crate::observe",
        "read_to_string",
        "crate::input",
        "read_text",
    ];
    let mut found = vec![];
    let mut read = 0;
    for (rel, code) in sources() {
        if !(rel == "diff.rs" || rel.starts_with("plan/") || rel == "plan.rs") {
            continue;
        }
        read += 1;
        let mut in_tests = false;
        for line in &code {
            if line.contains("#[cfg(test)]") {
                in_tests = true;
            }
            if in_tests {
                continue;
            }
            if let Some(what) = io.iter().find(|w| line.contains(*w)) {
                found.push(format!("src/{rel} ({what}): {}", line.trim()));
            }
        }
    }
    assert!(read >= 5, "diff.rs and plan/ were not found ({read} files)");
    assert!(
        found.is_empty(),
        "I/O in diff or plan:\n{}",
        found.join("\n")
    );
}
