//! The review loop: `plan --snapshot` offline, `show` of a saved plan (a pull-request
//! comment with its marker and size limit), completions and man pages checked by bash and
//! groff.

use crate::common;

use common::Workdir;
use std::process::Command;

fn rotated(cps: usize, workers: usize) -> Workdir {
    let w = common::initialised(cps, workers);
    common::fast_issuance(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    w
}

fn plan_id(w: &Workdir, file: &str) -> (String, String) {
    let text = std::fs::read_to_string(w.path().join(file)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    (
        v["checksum"].as_str().unwrap().to_string(),
        v["cluster"].as_str().unwrap().to_string(),
    )
}

#[test]
fn a_plan_from_a_saved_snapshot_is_the_live_plan_and_apply_refuses_it_once_the_cluster_moved() {
    let w = rotated(1, 1);
    w.ok(&["snapshot", "-o", "snap.json"]);
    w.ok(&["plan", "--snapshot", "snap.json", "-out", "offline.json"]);
    w.ok(&["plan", "-out", "live.json"]);
    let (offline, _) = plan_id(&w, "offline.json");
    let (live, _) = plan_id(&w, "live.json");
    assert_eq!(offline, live, "same state, same plan");
    // The nodes' files out of reach: a live plan cannot read them, the snapshot is all
    // an offline plan reads.
    let away = |from: &str, to: &str| {
        for n in ["cp-1", "w-1"] {
            for d in ["etc", "var"] {
                std::fs::rename(
                    w.node(n).join(format!("{d}{from}")),
                    w.node(n).join(format!("{d}{to}")),
                )
                .unwrap();
            }
        }
    };
    away("", ".away");
    let (code, _, err) = w.run(&["plan"]);
    assert_ne!(code, 0, "a live plan needs the nodes: {err}");
    w.ok(&["plan", "--snapshot", "snap.json", "-out", "again.json"]);
    assert_eq!(plan_id(&w, "again.json").0, live);
    away(".away", "");
    // The cluster moves: a kubeconfig loses its client certificate.
    let conf = w.node("cp-1").join("etc/kubernetes/scheduler.conf");
    let text: String = std::fs::read_to_string(&conf)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("client-certificate-data"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&conf, text).unwrap();
    let (code, _, err) = w.run(&["apply", "offline.json"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("trustform::apply::stale_plan"), "{err}");
    assert!(
        err.contains("cp-1:/etc/kubernetes/scheduler.conf changed"),
        "{err}"
    );
    assert!(!w.path().join(".trustform/journal").exists());
}

#[test]
fn an_edited_or_foreign_snapshot_is_refused_by_name() {
    let w = rotated(1, 0);
    w.ok(&["snapshot", "-o", "snap.json"]);
    let path = w.path().join("snap.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let name = v["nodes"][0]["name"].as_str().unwrap().to_string();
    std::fs::write(&path, text.replace(&format!("\"{name}\""), "\"cp-9\"")).unwrap();
    let (code, _, err) = w.run(&["plan", "--snapshot", "snap.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("trustform::plan::bad_snapshot"), "{err}");
    assert!(err.contains("changed after trustform wrote it"), "{err}");
    // A key passed as a snapshot: refused, and its material never shown.
    let key = w.node("cp-1").join("etc/kubernetes/pki/ca.key");
    let key_text = std::fs::read_to_string(&key).unwrap();
    let (code, out, err) = w.run(&["plan", "--snapshot", key.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("not a trustform snapshot"), "{err}");
    let body = key_text.lines().nth(1).unwrap();
    assert!(
        !err.contains(&body[..20]) && !out.contains(&body[..20]),
        "{err}"
    );
}

#[test]
fn show_gives_the_saved_plan_as_a_pull_request_comment_within_its_limit() {
    let w = rotated(3, 2);
    w.ok(&["plan", "-out", "plan.json"]);
    let (checksum, cluster) = plan_id(&w, "plan.json");
    let id = &checksum.trim_start_matches("sha256:")[..12];
    let full = w.ok(&["show", "plan.json", "--format", "markdown"]);
    let first = full.lines().next().unwrap();
    assert_eq!(
        first,
        format!("<!-- trustform-plan cluster=\"{cluster}\" -->")
    );
    assert!(
        full.contains(&format!("<!-- trustform-plan-id {id} -->")),
        "{full}"
    );
    assert!(full.contains("**Plan: "), "the summary: {full}");
    assert!(full.contains("```diff"), "every step's diff fits: {full}");
    assert!(full.len() <= 65_000);
    // The same plan under a small limit: the summary stays, the diffs go, and it says so.
    let small = w.ok(&[
        "show",
        "plan.json",
        "--format",
        "markdown",
        "--max-bytes",
        "6000",
    ]);
    assert!(small.len() <= 6000, "{} bytes", small.len());
    assert!(small.starts_with(first));
    assert!(small.contains("**Plan: "), "{small}");
    assert!(!small.contains("```diff"), "{small}");
    assert!(small.contains("`trustform show plan.json`"), "{small}");
    // Text and JSON read the same file; a changed plan is refused as apply refuses it.
    let text = w.ok(&["show", "plan.json"]);
    assert!(text.contains("Plan: "), "{text}");
    let json = w.ok(&["show", "plan.json", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&json).unwrap()["checksum"],
        checksum.as_str()
    );
    let path = w.path().join("plan.json");
    let edited =
        std::fs::read_to_string(&path)
            .unwrap()
            .replacen("\"title\": \"", "\"title\": \"x", 1);
    std::fs::write(&path, edited).unwrap();
    let (code, _, err) = w.run(&["show", "plan.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("checksum does not match"), "{err}");
}

#[test]
fn completions_parse_in_their_shell_and_man_pages_render_without_warnings() {
    let w = common::initialised(1, 0);
    let bash = w.ok(&["completions", "bash"]);
    let script = w.path().join("trustform.bash");
    std::fs::write(&script, &bash).unwrap();
    let ok = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(ok.success(), "bash -n on the completion script");
    for sub in ["plan", "show", "apply", "rollback", "completions"] {
        assert!(bash.contains(sub), "{sub} completes");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let s = w.ok(&["completions", shell]);
        assert!(s.contains("trustform") && s.contains("show"), "{shell}");
    }
    let listed = w.ok(&["man", "--out", "man"]);
    let pages: Vec<&str> = listed.lines().collect();
    for want in [
        "trustform.1",
        "trustform-plan.1",
        "trustform-show.1",
        "trustform-sandbox-up.1",
    ] {
        assert!(
            pages.iter().any(|p| p.ends_with(want)),
            "{want} in {pages:?}"
        );
    }
    for page in &pages {
        let out = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .arg(w.path().join(page))
            .output()
            .expect("groff runs (.ci/run installs it)");
        assert!(out.status.success(), "{page}");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.trim().is_empty(), "{page}: {warnings}");
    }
    let top = Command::new("groff")
        .args(["-k", "-man", "-Tutf8"])
        .arg(w.path().join(pages[0]))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(
        text.contains("trustform-show(1)") || text.contains("show"),
        "{text}"
    );
}

/// The book's example workflow, run step by step as its runners would: each `run:` of the
/// plan and apply jobs in bash, `gh` replaced by tests/data/fake-gh.py (comments and
/// artifacts kept in a directory), `actions/upload-artifact` by a copy.
#[test]
fn the_example_workflow_comments_once_and_applies_only_the_reviewed_plan() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("book/src/examples/trustform.yml")).unwrap();
    let wf: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let runs = |job: &str| -> Vec<String> {
        wf["jobs"][job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"].as_str().map(str::to_string))
            .collect()
    };
    let w = rotated(1, 1);
    // The snapshot job's command (its commit and push are git's).
    let snapshot = runs("snapshot");
    assert!(snapshot[0].starts_with("trustform snapshot -o snapshot.json"));
    w.ok(&["snapshot", "-o", "snapshot.json"]);
    let state = w.path().join("gh");
    let bin = w.path().join("bin");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(root.join("tests/data/fake-gh.py"), bin.join("gh")).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_trustform"), bin.join("trustform")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let step = |script: &str| -> (bool, String) {
        let out = Command::new("bash")
            .args(["-eo", "pipefail", "-c", script])
            .current_dir(w.path())
            .env("PATH", &path)
            .env("NO_COLOR", "1")
            .env("TRUSTFORM_RESTART_SETTLE", "0s")
            .env_remove("TRUSTFORM_CONFIG")
            .envs([
                ("FAKE_GH", state.to_str().unwrap()),
                ("FAKE_PR", "7"),
                ("FAKE_HEAD", "headsha"),
                ("FAKE_MERGE", "mergesha"),
                ("GH_TOKEN", "x"),
                ("PR", "7"),
                ("REPO", "org/cluster-config"),
                ("SHA", "mergesha"),
            ])
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let comments = || -> Vec<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(state.join("comments.json")).unwrap())
            .unwrap()
    };
    // The pull request: plan, comment, upload; pushed to twice, it keeps one comment.
    for _ in 0..2 {
        for s in runs("plan") {
            let (ok, said) = step(&s);
            assert!(ok, "{s}\n{said}");
        }
        let artifact = state.join("artifacts/trustform-plan-headsha");
        std::fs::create_dir_all(&artifact).unwrap();
        std::fs::copy(w.path().join("plan.json"), artifact.join("plan.json")).unwrap();
    }
    let c = comments();
    assert_eq!(c.len(), 1, "one sticky comment: {c:?}");
    let body = c[0]["body"].as_str().unwrap();
    let (checksum, _) = plan_id(&w, "plan.json");
    let id = &checksum.trim_start_matches("sha256:")[..12];
    assert!(body.contains(&format!("<!-- trustform-plan-id {id} -->")));
    // On merge: a plan other than the one reviewed is refused before apply runs.
    let apply = runs("apply");
    let forged = body.replace(id, "000000000000");
    std::fs::write(
        state.join("comments.json"),
        serde_json::json!([{ "id": 1000, "body": forged }]).to_string(),
    )
    .unwrap();
    let (ok, said) = step(&apply[0]);
    assert!(!ok, "{said}");
    assert!(
        said.contains(&format!(
            "plan {id} is not the plan 000000000000 reviewed on #7"
        )),
        "{said}"
    );
    assert!(
        !w.path().join(".trustform/journal").exists(),
        "nothing applied"
    );
    // The reviewed plan is applied.
    std::fs::write(
        state.join("comments.json"),
        serde_json::json!([{ "id": 1000, "body": body }]).to_string(),
    )
    .unwrap();
    for s in &apply {
        let (ok, said) = step(s);
        assert!(ok, "{s}\n{said}");
    }
    let summary = std::fs::read_to_string(w.path().join("apply.json")).unwrap();
    let last: serde_json::Value = serde_json::from_str(summary.lines().last().unwrap()).unwrap();
    assert_eq!(last["ok"], true, "{summary}");
    assert_eq!(last["plan_id"], id, "{summary}");
}

/// A trustform.yaml as a person keeps it: comments, blank lines, a block sequence.
fn commented(canonical: &str) -> String {
    canonical
        .replace(
            "inventory:\n",
            "\n# Nodes: kept in sync with the CMDB (ticket PLAT-1234).\ninventory:\n",
        )
        .replace(
            "authorities:\n  kubernetes:\n    issuer: kubernetes\n    trust: [kubernetes]\n",
            "\n# Rotated yearly; see RUNBOOK.md.\nauthorities:\n  kubernetes:   # the cluster CA\n    issuer: kubernetes   # signs every leaf\n    trust:   # what every verifier accepts\n      - kubernetes\n",
        )
        .replace("cas:\n", "\n# Every CA the cluster holds.\ncas:\n")
        .replace("issuance:\n", "# Faster keys for the lab.\nissuance:\n")
}

#[test]
fn a_rotation_keeps_the_files_comments_and_changes_only_its_lines() {
    let w = common::initialised(1, 1);
    common::fast_issuance(&w);
    let canonical = std::fs::read_to_string(w.config()).unwrap();
    let text = commented(&canonical);
    assert_ne!(text, canonical);
    std::fs::write(w.config(), &text).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "color.ui=never",
            ])
            .args(args)
            .current_dir(w.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "trustform.yaml"]);
    git(&["commit", "-q", "-m", "as kept"]);
    let (_, _, err) = w.run(&["rotate", "kubernetes"]);
    assert!(!err.contains("rewritten in trustform's layout"), "{err}");
    // pre-rotate: the issuer stays, the new CA joins the trust and `cas`.
    let stat = git(&["diff", "--numstat", "trustform.yaml"]);
    assert_eq!(
        stat.split_whitespace().take(2).collect::<Vec<_>>(),
        ["2", "0"],
        "{stat}"
    );
    w.ok(&["rotate", "kubernetes"]);
    w.ok(&["rotate", "kubernetes"]);
    let now = std::fs::read_to_string(w.config()).unwrap();
    for comment in text.lines().filter(|l| l.contains('#')) {
        let kept = comment.split('#').nth(1).unwrap();
        assert!(now.contains(kept), "{kept:?} lost:\n{now}");
    }
    let diff = git(&["diff", "-U0", "trustform.yaml"]);
    let shown: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\d{4}-\d{2}-\d{2}", "[date]");
    settings.bind(|| insta::assert_snapshot!("rotation_diff", shown.join("\n")));
    // The edited file is what trustform reads: a plan of it.
    assert!(w.ok(&["plan"]).contains("Plan: "));
    // fmt --check says it is not the canonical layout; validate passes without the cluster.
    let (code, _, err) = w.run(&["fmt", "--check"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("trustform::fmt::check"), "{err}");
    let moved = w.path().join("moved");
    std::fs::rename(w.cluster(), &moved).unwrap();
    assert!(w.ok(&["validate"]).contains("is valid: 2 nodes"));
    std::fs::rename(&moved, w.cluster()).unwrap();
    w.ok(&["fmt"]);
    w.ok(&["fmt", "--check"]);
    assert!(
        !std::fs::read_to_string(w.config())
            .unwrap()
            .contains("RUNBOOK")
    );
}
