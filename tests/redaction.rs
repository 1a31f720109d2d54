//! No private key material in any error, log line or JSON output: a broken file next to
//! a key, or a broken key, fails with exit 1, names the file and the line, shows no
//! piece of any key, and changes nothing on disk.

use crate::common;

use common::Workdir;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

/// Pieces of key material this long are looked for (every window of every key).
const WINDOW: usize = 40;

fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    for (re, with) in common::redactions() {
        s.add_filter(re, with);
    }
    s.add_filter(r"https://127\.0\.0\.1:\d+", "https://127.0.0.1:[port]");
    s
}

/// A 2 + 1 sandbox, initialised and rotated to the end (a generated CA key in
/// `.trustform/keys` too).
fn rotated() -> Workdir {
    let w = common::initialised(2, 1);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    w
}

/// Every piece of private key material under the work dir (the sandbox included): the
/// base64 of every `client-key-data`, the body lines of every PRIVATE KEY block, every
/// line of every `*.key` file.
struct Keys {
    lines: HashSet<String>,
    windows: HashSet<Vec<u8>>,
}

impl Keys {
    fn of(w: &Workdir) -> Keys {
        let mut lines = HashSet::new();
        for p in common::files_under(w.path()) {
            let Ok(text) = std::fs::read_to_string(&p) else {
                continue;
            };
            let is_key = p.extension().is_some_and(|e| e == "key");
            let mut in_key = false;
            for l in text.lines() {
                let t = l.trim();
                if let Some(v) = t.strip_prefix("client-key-data:") {
                    let v = v.trim().to_string();
                    if let Some(pem) = trustform::pki::kubeconfig::unb64(&v) {
                        lines.extend(
                            pem.lines()
                                .filter(|l| !l.starts_with("-----"))
                                .map(str::to_string),
                        );
                    }
                    lines.insert(v);
                    continue;
                }
                if t.starts_with("-----BEGIN ") && t.contains("PRIVATE KEY") {
                    in_key = true;
                } else if t.starts_with("-----END ") {
                    in_key = false;
                } else if (in_key || is_key) && !t.is_empty() {
                    lines.insert(t.to_string());
                }
            }
        }
        assert!(lines.len() > 50, "the sandbox has keys: {}", lines.len());
        let windows = lines
            .iter()
            .flat_map(|l| l.as_bytes().windows(WINDOW).map(<[u8]>::to_vec))
            .collect();
        Keys { lines, windows }
    }

    /// Assert `text` shows no line of a key and no 40-character piece of one.
    fn assert_absent(&self, what: &str, text: &str) {
        for l in self.lines.iter().filter(|l| l.len() >= 16) {
            assert!(
                !text.contains(l.as_str()),
                "{what} shows key line {l:?}:\n{text}"
            );
        }
        for w in text.as_bytes().windows(WINDOW) {
            assert!(
                !self.windows.contains(w),
                "{what} shows key material {:?}:\n{text}",
                String::from_utf8_lossy(w)
            );
        }
    }
}

/// SHA-256 of every file under the work dir (the sandbox included).
fn hashes(w: &Workdir) -> BTreeMap<PathBuf, String> {
    common::files_under(w.path())
        .into_iter()
        .map(|p| {
            let h = hex::encode(Sha256::digest(std::fs::read(&p).unwrap()));
            (p, h)
        })
        .collect()
}

/// Run each command: exit 1, no key material in stdout or stderr, nothing on disk
/// changed. Returns the stderr of each.
fn fails_quietly(w: &Workdir, keys: &Keys, commands: &[&[&str]]) -> Vec<String> {
    let before = hashes(w);
    let mut errs = Vec::new();
    for args in commands {
        let (code, out, err) = w.run(args);
        assert_eq!(code, 1, "{args:?} fails\nstdout:\n{out}\nstderr:\n{err}");
        keys.assert_absent(&format!("{args:?} stdout"), &out);
        keys.assert_absent(&format!("{args:?} stderr"), &err);
        errs.push(err);
    }
    assert_eq!(hashes(w), before, "nothing on disk changed");
    errs
}

/// The commands that read every node: plan (text and JSON), snapshot, apply (JSON).
const READERS: &[&[&str]] = &[
    &["plan"],
    &["plan", "--format", "json"],
    &["snapshot"],
    &["apply", "--auto-approve", "--format", "json"],
];

fn append(path: &std::path::Path, line: &str) -> usize {
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(line);
    std::fs::write(path, &text).unwrap();
    text.lines().count()
}

fn scheduler_conf(w: &Workdir) -> PathBuf {
    w.node("cp-1").join("etc/kubernetes/scheduler.conf")
}

#[test]
fn broken_yaml_after_a_client_key_shows_no_key() {
    let w = rotated();
    let keys = Keys::of(&w);
    let line = append(&scheduler_conf(&w), "{{{{ not: yaml ::\n");
    let errs = fails_quietly(&w, &keys, READERS);
    for err in &errs {
        assert!(err.contains("trustform::observe::corrupt_file"), "{err}");
        assert!(
            err.contains(&format!("cp-1:/etc/kubernetes/scheduler.conf:{line}:")),
            "names the file and line {line}: {err}"
        );
        assert!(
            err.contains("client-key-data: [redacted: private key]"),
            "{err}"
        );
    }
    settings().bind(|| insta::assert_snapshot!("scheduler_conf_broken_yaml", errs[0]));
}

#[test]
fn a_tab_indented_line_after_a_client_key_shows_no_key() {
    let w = rotated();
    let keys = Keys::of(&w);
    let line = append(&scheduler_conf(&w), "\tleader-elect: true\n");
    let errs = fails_quietly(&w, &keys, READERS);
    for err in &errs {
        // The parser names the plain scalar the tab would continue: client-key-data's,
        // on the line above; the snippet shows both.
        let scalar = line - 1;
        assert!(
            err.contains(&format!("cp-1:/etc/kubernetes/scheduler.conf:{scalar}:")),
            "names the file and line {scalar}: {err}"
        );
        assert!(err.contains("found a tab"), "{err}");
        assert!(
            err.contains("client-key-data: [redacted: private key]"),
            "{err}"
        );
    }
    settings().bind(|| insta::assert_snapshot!("scheduler_conf_tab", errs[0]));
}

#[test]
fn a_garbage_line_inside_a_key_file_shows_no_line_of_it() {
    let w = rotated();
    let keys = Keys::of(&w);
    let path = w.node("cp-1").join("etc/kubernetes/pki/ca.key");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(2, "{{{{ this is not base64 }}}}");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let errs = fails_quietly(&w, &keys, READERS);
    for err in &errs {
        assert!(err.contains("cp-1:/etc/kubernetes/pki/ca.key:"), "{err}");
        assert!(!err.contains("this is not base64"), "{err}");
    }
    settings().bind(|| insta::assert_snapshot!("key_file_garbage_line", errs[0]));
}

#[test]
fn a_client_key_data_that_is_not_base64_is_an_error_that_shows_no_key() {
    let w = rotated();
    let keys = Keys::of(&w);
    let path = scheduler_conf(&w);
    let text = std::fs::read_to_string(&path).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("client-key-data:"))
        .unwrap()
        + 1;
    // Break the value in its middle: most of the key is still there.
    let at = text.find("client-key-data: ").unwrap() + "client-key-data: ".len() + 200;
    let broken = format!("{}!!{}", &text[..at], &text[at..]);
    std::fs::write(&path, broken).unwrap();
    let errs = fails_quietly(&w, &keys, READERS);
    for err in &errs {
        assert!(err.contains("client-key-data is not base64"), "{err}");
        assert!(
            err.contains(&format!("cp-1:/etc/kubernetes/scheduler.conf:{line}:")),
            "names the file and line {line}: {err}"
        );
    }
    settings().bind(|| insta::assert_snapshot!("client_key_data_not_base64", errs[0]));
}

#[test]
fn a_plan_file_with_a_pasted_key_shows_no_key() {
    let w = rotated();
    w.ok(&["plan", "-out", "plan.json"]);
    let keys = Keys::of(&w);
    let key = std::fs::read_to_string(w.node("cp-1").join("etc/kubernetes/pki/ca.key")).unwrap();
    let b64 = trustform::pki::kubeconfig::b64(&key);
    let text = std::fs::read_to_string(w.path().join("plan.json")).unwrap();
    // A key pasted in by hand, twice, around a syntax error.
    let edited = text.replacen(
        "{\n",
        &format!(
            "{{\n  \"client-key-data\": \"{b64}\",\n  oops\n  \"key\": {},\n",
            serde_json::to_string(&key).unwrap()
        ),
        1,
    );
    std::fs::write(w.path().join("bad.json"), edited).unwrap();
    let errs = fails_quietly(
        &w,
        &keys,
        &[
            &["apply", "bad.json"],
            &["apply", "bad.json", "--format", "json"],
        ],
    );
    for err in &errs {
        assert!(err.contains("trustform::apply::bad_plan"), "{err}");
        assert!(err.contains("bad.json:3:"), "names the line: {err}");
    }
    settings().bind(|| insta::assert_snapshot!("plan_file_pasted_key", errs[0]));
}

#[test]
fn a_key_pasted_into_trustform_yaml_is_not_shown() {
    let w = rotated();
    let keys = Keys::of(&w);
    let key = std::fs::read_to_string(w.node("cp-1").join("etc/kubernetes/pki/ca.key")).unwrap();
    // A key pasted as a block scalar, one of its lines not indented: a syntax error in
    // the middle of the key.
    let indented: String = key
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 2 {
                format!("{l}\n")
            } else {
                format!("      {l}\n")
            }
        })
        .collect();
    let mut text = std::fs::read_to_string(w.config()).unwrap();
    assert!(
        text.lines().last().unwrap().starts_with("  kubernetes-"),
        "`cas` ends the file:\n{text}"
    );
    let line = text.lines().count() + 6;
    text.push_str(&format!(
        "  pasted:\n    cert: cas/x.crt\n    key: |\n{indented}"
    ));
    std::fs::write(w.config(), text).unwrap();
    let errs = fails_quietly(&w, &keys, READERS);
    for err in &errs {
        assert!(err.contains("trustform::config::syntax"), "{err}");
        assert!(
            err.contains(&format!("trustform.yaml:{line}:")),
            "line {line}: {err}"
        );
    }
    settings().bind(|| insta::assert_snapshot!("config_pasted_key", errs[0]));
}
