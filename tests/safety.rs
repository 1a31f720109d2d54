//! Safety: what trustform refuses to read, to overwrite, or to accept, each through the
//! CLI with its message, its exit code, and nothing on disk changed.

use crate::common;

use common::{Workdir, assert_unchanged, tree_state};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} contains {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// A diagnostic as one line: miette wraps at 100 columns behind a `│` gutter.
fn flat(err: &str) -> String {
    let mut out = String::new();
    for line in err.lines() {
        let line = line.trim().trim_start_matches('│').trim();
        if line.is_empty() {
            continue;
        }
        // A path broken at a `/` is one word again.
        if !out.is_empty() && !out.ends_with('/') {
            out.push(' ');
        }
        out.push_str(&line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    out
}

/// Run, expecting exit 1 within `limit` and nothing on disk changed; returns stderr.
fn refused(w: &Workdir, args: &[&str], limit: Duration) -> String {
    let before = tree_state(w.path());
    let start = Instant::now();
    let (code, out, err) = w.run(args);
    assert!(
        start.elapsed() < limit,
        "{args:?} took {:?}: nothing may block or grow",
        start.elapsed()
    );
    assert_eq!(code, 1, "{args:?}: stdout:\n{out}\nstderr:\n{err}");
    assert_unchanged(&before, &tree_state(w.path()));
    err
}

fn snapshot_filters() -> Vec<(&'static str, &'static str)> {
    let mut f = common::redactions();
    f.push((r"/tmp/\.tmp\w+", "[tmp]"));
    f.push((r"unreadable-[0-9a-f]{12}", "unreadable-[id]"));
    f
}

#[test]
fn a_fifo_in_pki_is_refused_at_once() {
    let w = common::initialised(1, 0);
    let fifo = w.node("cp-1").join("etc/kubernetes/pki/stray.crt");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let err = refused(&w, &["plan"], Duration::from_secs(20));
    assert!(
        flat(&err).contains("trustform::observe::unreadable"),
        "{err}"
    );
    assert!(
        flat(&err)
            .contains("node cp-1: /etc/kubernetes/pki/stray.crt is a FIFO, not a regular file"),
        "{err}"
    );
    insta::with_settings!({ filters => snapshot_filters() }, {
        insta::assert_snapshot!("fifo_in_pki", err);
    });
}

#[test]
fn a_device_behind_a_symlink_and_an_oversized_file_are_refused() {
    let w = common::initialised(1, 0);
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    // An absolute symlink resolves inside the node's root, as on the node itself: to the
    // node's own /dev/zero, a character device trustform never opens.
    std::fs::create_dir_all(w.node("cp-1").join("dev")).unwrap();
    let made = std::process::Command::new("mknod")
        .arg(w.node("cp-1").join("dev/zero"))
        .args(["c", "1", "5"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root, as CI runs");
    std::os::unix::fs::symlink("/dev/zero", pki.join("zero.crt")).unwrap();
    let err = refused(&w, &["plan"], Duration::from_secs(20));
    assert!(flat(&err).contains("is a character device"), "{err}");
    std::fs::remove_file(pki.join("zero.crt")).unwrap();
    // A symlink that climbs out of the root stays inside it: this one dangles.
    std::os::unix::fs::symlink(
        "../../../../../../../../../../etc/hostname",
        pki.join("up.crt"),
    )
    .unwrap();
    let err = refused(&w, &["plan"], Duration::from_secs(20));
    assert!(
        flat(&err).contains("node cp-1: /etc/kubernetes/pki/up.crt is a symlink to ../../../../../../../../../../etc/hostname, which does not exist on the node"),
        "resolved inside the node's root: {err}"
    );
    std::fs::remove_file(pki.join("up.crt")).unwrap();
    // 2 MiB in a .crt: over the 1 MiB cap for node files.
    let mut big = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    big.resize(2 << 20, b'A');
    std::fs::write(pki.join("big.crt"), big).unwrap();
    let err = refused(&w, &["plan"], Duration::from_secs(20));
    assert!(
        flat(&err).contains("node cp-1: /etc/kubernetes/pki/big.crt is larger than 1048576 bytes, the most trustform reads for a node file"),
        "{err}"
    );
    assert!(
        err.len() < 4000,
        "the error quotes no file: {} bytes",
        err.len()
    );
}

#[test]
fn a_plan_that_is_a_device_or_huge_is_refused_without_echo() {
    let w = common::initialised(1, 0);
    let err = refused(&w, &["apply", "/dev/zero"], Duration::from_secs(10));
    assert!(
        flat(&err).contains("is a character device, not a regular file"),
        "{err}"
    );
    // 70 MB on one line: over the 64 MiB cap, refused before it is read.
    let huge = w.path().join("huge.json");
    std::fs::write(&huge, vec![b'x'; 70_000_000]).unwrap();
    let err = refused(&w, &["apply", "huge.json"], Duration::from_secs(10));
    assert!(
        flat(&err).contains(
            "huge.json: is larger than 67108864 bytes, the most trustform reads for a plan file"
        ),
        "{err}"
    );
    assert!(err.len() < 4000, "no echo: {} bytes", err.len());
    // 8 MB of garbage on one line: read, refused, and quoted in at most a short excerpt.
    std::fs::write(&huge, vec![b'x'; 8_000_000]).unwrap();
    let err = refused(&w, &["apply", "huge.json"], Duration::from_secs(10));
    assert!(flat(&err).contains("not a trustform plan"), "{err}");
    assert!(err.len() < 4000, "a short excerpt: {} bytes", err.len());
    // A FIFO as trustform.yaml.
    let cfg = w.path().join("fifo.yaml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&cfg)
            .status()
            .unwrap()
            .success()
    );
    let err = refused(
        &w,
        &["plan", "--config", "fifo.yaml"],
        Duration::from_secs(10),
    );
    assert!(
        flat(&err).contains("is a FIFO, not a regular file"),
        "{err}"
    );
}

#[test]
fn two_nodes_with_one_name_or_one_root_are_refused_at_the_second() {
    let w = common::initialised(2, 1);
    let text = std::fs::read_to_string(w.config()).unwrap();
    let dup = text.replace("name: w-1", "name: cp-2");
    std::fs::write(w.config(), &dup).unwrap();
    let err = refused(&w, &["plan"], Duration::from_secs(20));
    let line = dup
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name: cp-2"))
        .nth(1)
        .expect("the second cp-2")
        .0
        + 1;
    assert!(flat(&err).contains("node cp-2 is listed twice"), "{err}");
    assert!(
        flat(&err).contains(&format!("trustform.yaml:{line}:")),
        "line {line}: {err}"
    );
    insta::with_settings!({ filters => snapshot_filters() }, {
        insta::assert_snapshot!("duplicate_node_name", err);
    });
    let same_root = text.replace("cluster/nodes/w-1", "cluster/nodes/cp-2");
    assert_ne!(same_root, text, "roots are written as cluster/nodes/<name>");
    std::fs::write(w.config(), &same_root).unwrap();
    let err = refused(&w, &["plan"], Duration::from_secs(20));
    assert!(
        flat(&err).contains("nodes cp-2 and w-1 have the same root"),
        "{err}"
    );
    let line = same_root
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("cluster/nodes/cp-2"))
        .nth(1)
        .expect("the second root")
        .0
        + 1;
    assert!(
        flat(&err).contains(&format!("trustform.yaml:{line}:")),
        "line {line}: {err}"
    );
}

#[test]
fn a_ca_listed_twice_in_a_trust_set_is_refused_not_a_panic() {
    let w = common::initialised(1, 0);
    edit(
        &w.config(),
        "trust: [kubernetes]",
        "trust: [kubernetes, kubernetes]",
    );
    for args in [&["plan"][..], &["rotate", "kubernetes"]] {
        let err = refused(&w, args, Duration::from_secs(20));
        assert!(
            flat(&err).contains("CA kubernetes is listed twice in its trust set"),
            "{err}"
        );
        assert!(!flat(&err).contains("panicked"), "{err}");
    }
}

#[test]
fn rotate_never_overwrites_a_ca_file() {
    let w = common::initialised(1, 0);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    w.ok(&["apply", "--auto-approve"]);
    let cas_before = tree_state(&w.path().join("cas"));
    let keys_before = tree_state(&w.path().join(".trustform/keys"));
    assert_eq!(cas_before.len(), 1);
    // Forget the names: init --force describes the cluster as it is now.
    w.ok(&["init", "--sandbox", "cluster", "--force"]);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let cas_after = tree_state(&w.path().join("cas"));
    let keys_after = tree_state(&w.path().join(".trustform/keys"));
    for (p, v) in cas_before.iter().chain(&keys_before) {
        assert_eq!(
            cas_after.get(p).or(keys_after.get(p)),
            Some(v),
            "{} is kept byte for byte",
            p.display()
        );
    }
    assert_eq!(cas_after.len(), 2, "a second CA file: {cas_after:?}");
    let new: Vec<_> = cas_after
        .keys()
        .filter(|p| !cas_before.contains_key(*p))
        .collect();
    assert!(
        new[0].to_string_lossy().ends_with("-2.crt"),
        "a unique name: {new:?}"
    );
    assert_eq!(keys_after.len(), 2);
}

#[test]
fn an_unreadable_lock_is_named_and_force_unlock_removes_it() {
    let w = common::initialised(1, 0);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    std::fs::create_dir_all(w.path().join(".trustform")).unwrap();
    for body in ["", "{ garbage"] {
        std::fs::write(w.path().join(".trustform/lock.json"), body).unwrap();
        let err = refused(&w, &["apply", "--auto-approve"], Duration::from_secs(30));
        assert!(
            flat(&err).contains("trustform::apply::unreadable_lock"),
            "{err}"
        );
        let id = err
            .split("trustform force-unlock ")
            .nth(1)
            .and_then(|r| r.split('`').next())
            .expect("names the command")
            .to_string();
        assert!(id.starts_with("unreadable-"), "{id}");
        insta::with_settings!({ filters => snapshot_filters() }, {
            insta::assert_snapshot!(format!("unreadable_lock_{}", if body.is_empty() { "empty" } else { "garbage" }), err);
        });
        let err = refused(
            &w,
            &["force-unlock", "some-other-id"],
            Duration::from_secs(10),
        );
        assert!(
            flat(&err).contains("is not a lock trustform can read"),
            "{err}"
        );
        let out = w.ok(&["force-unlock", &id]);
        assert!(
            out.contains("which was not a lock trustform wrote"),
            "{out}"
        );
        assert!(!w.path().join(".trustform/lock.json").exists());
    }
    w.ok(&["apply", "--auto-approve"]);
}

#[test]
fn temp_files_of_a_killed_write_are_removed_at_the_next_apply() {
    let w = common::initialised(1, 0);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    let state = w.path().join(".trustform/journal");
    std::fs::create_dir_all(&state).unwrap();
    for p in [
        pki.join(".trustform-Ab3xY9"),
        state.join(".trustform-q1w2e3"),
    ] {
        std::fs::write(&p, b"torn").unwrap();
    }
    std::fs::write(pki.join(".trustform-not-ours"), b"kept").unwrap();
    let (code, _, err) = w.run(&["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        flat(&err).contains("removed 2 temp file(s) an interrupted write left behind"),
        "{err}"
    );
    assert!(!pki.join(".trustform-Ab3xY9").exists());
    assert!(!state.join(".trustform-q1w2e3").exists());
    assert!(pki.join(".trustform-not-ours").exists(), "only ours");
}

#[test]
fn errors_follow_the_terminal_no_color_and_clicolor_force() {
    let w = common::initialised(1, 0);
    edit(&w.config(), "issuer: kubernetes\n", "issuer: nope\n");
    let run = |env: &[(&str, &str)]| {
        let mut c = w.cmd();
        c.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.arg("plan").output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let plain = run(&[]);
    assert!(
        !plain.contains('\x1b'),
        "stderr is not a terminal: {plain:?}"
    );
    assert!(plain.contains("which is not in `cas`"), "{plain}");
    assert!(run(&[("CLICOLOR_FORCE", "1")]).contains('\x1b'));
    assert!(!run(&[("CLICOLOR_FORCE", "0")]).contains('\x1b'));
    assert!(!run(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).contains('\x1b'));
}

#[test]
fn a_readable_key_is_warned_about_and_written_back_0600() {
    let w = common::initialised(1, 0);
    let key = w.node("cp-1").join("etc/kubernetes/pki/apiserver.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let (code, _, err) = w.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        flat(&err).contains(
            "Warning: cp-1:/etc/kubernetes/pki/apiserver.key is a private key with mode 0644"
        ),
        "{err}"
    );
    w.ok(&["apply", "--auto-approve"]);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "apply rewrote the key 0600");
    let (_, _, err) = w.run(&["plan"]);
    assert!(
        !flat(&err).contains("apiserver.key is a private key with mode"),
        "{err}"
    );
}

#[test]
fn a_pinned_ca_that_matches_nothing_is_named() {
    let w = common::initialised(1, 0);
    let mut text = std::fs::read_to_string(w.config()).unwrap();
    let fp = "sha256:".to_string() + &"ab".repeat(32);
    text = text.replace(
        "cas:\n",
        &format!("cas:\n  retired:\n    fingerprint: \"{fp}\"\n"),
    );
    std::fs::write(w.config(), &text).unwrap();
    let (code, _, err) = w.run(&["plan"]);
    assert_eq!(code, 0, "{err}");
    let line = text.lines().position(|l| l.contains(&fp)).unwrap() + 1;
    assert!(
        flat(&err).contains(&format!(
            "trustform.yaml:{line}: CA retired (sha256:abababababab…) is on no node and no authority names it: it is ignored"
        )),
        "{err}"
    );
}

#[test]
fn random_bytes_in_a_certificate_file_are_named_as_such() {
    let w = common::initialised(1, 0);
    let crt = w.node("cp-1").join("etc/kubernetes/pki/apiserver.crt");
    // Bytes that are never UTF-8 (0xff), among others.
    let noise: Vec<u8> = (0..2048u32)
        .map(|i| {
            if i % 7 == 0 {
                0xff
            } else {
                (i * 31 % 251) as u8
            }
        })
        .collect();
    std::fs::write(&crt, noise).unwrap();
    let err = refused(&w, &["plan"], Duration::from_secs(20));
    assert!(
        flat(&err).contains(
            "node cp-1: /etc/kubernetes/pki/apiserver.crt is not a PEM file (binary data)"
        ),
        "{err}"
    );
    assert!(!flat(&err).contains("has no --tls-cert-file"), "{err}");
    std::fs::write(&crt, "hello\n").unwrap();
    let err = refused(&w, &["plan"], Duration::from_secs(20));
    assert!(
        flat(&err).contains("apiserver.crt is not a PEM file (text with no PEM block)"),
        "{err}"
    );
}

#[test]
fn a_crashed_and_resumed_apply_prints_and_writes_no_key_material() {
    let w = common::initialised(1, 1);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let plan: serde_json::Value =
        serde_json::from_str(&w.ok(&["plan", "--format", "json"])).unwrap();
    let write = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "write")
        .nth(3)
        .expect("a fourth write step")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut printed = vec![];
    let out = w
        .cmd()
        .args(["apply", "--auto-approve", "--format", "json"])
        .env("TRUSTFORM_FAULT", format!("during:{write}"))
        .output()
        .unwrap();
    assert!(
        common::fault_fired(&out),
        "the apply failed mid-step: {:?}",
        out.status
    );
    printed.push(("crashed apply", out.stdout, out.stderr));
    for args in [
        &["status", "--format", "json"][..],
        &["apply", "--auto-approve", "--format", "json"],
        &["status"],
        &["snapshot"],
        &["plan", "--format", "markdown"],
    ] {
        let out = w.cmd().args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        printed.push(("command", out.stdout, out.stderr));
    }
    // Every key of the cluster before and after, and the new CA's.
    let needles = common::key_needles(&[w.path()]);
    assert!(needles.len() > 20, "{}", needles.len());
    let mut found = vec![];
    for (what, out, err) in &printed {
        found.extend(common::leaks(what, &String::from_utf8_lossy(out), &needles));
        found.extend(common::leaks(what, &String::from_utf8_lossy(err), &needles));
    }
    let mut scanned = 0;
    for p in common::files_under(w.path()) {
        let rel = p
            .strip_prefix(w.path())
            .unwrap()
            .to_string_lossy()
            .to_string();
        if rel.starts_with("cluster/nodes/")
            || rel.starts_with(".trustform/keys/")
            || rel.starts_with(".trustform/backup/")
        {
            continue;
        }
        scanned += 1;
        found.extend(common::leaks(
            &rel,
            &std::fs::read_to_string(&p).unwrap_or_default(),
            &needles,
        ));
    }
    assert!(scanned >= 5, "{scanned}");
    assert!(found.is_empty(), "key material:\n{}", found.join("\n"));
}
