//! The book cannot drift from the tool: every page is in SUMMARY.md, every relative link
//! and anchor resolves, and every `trustform …` command line it shows names a command and
//! flags the command line accepts (checked against `trustform <command> --help`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn book() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("book/src")
}

fn pages() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(book()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".md") {
            out.insert(name, std::fs::read_to_string(e.path()).unwrap());
        }
    }
    out
}

/// GitHub/mdBook heading anchors: lower case, spaces to dashes, punctuation dropped.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// `](target)` links outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            code = !code;
            continue;
        }
        if code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

#[test]
fn every_page_is_listed_and_every_link_resolves() {
    let pages = pages();
    let summary = &pages["SUMMARY.md"];
    let listed: BTreeSet<String> = links(summary).into_iter().collect();
    for name in pages.keys().filter(|n| *n != "SUMMARY.md") {
        assert!(listed.contains(name), "{name} is not in SUMMARY.md");
    }
    let mut checked = 0;
    for (name, text) in &pages {
        for link in links(text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() { name.as_str() } else { file };
            let path = book().join(target);
            assert!(
                path.exists(),
                "{name}: link to {link}: {} is missing",
                path.display()
            );
            if !anchor.is_empty() {
                let t = &pages[target];
                let anchors: BTreeSet<String> = t
                    .lines()
                    .filter_map(|l| l.strip_prefix('#'))
                    .map(|h| slug(h.trim_start_matches('#')))
                    .collect();
                assert!(
                    anchors.contains(anchor),
                    "{name}: no heading #{anchor} in {target}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "only {checked} links found");
}

/// `trustform <command> --help`'s text.
fn help(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trustform"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "trustform {args:?} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The commands `help` lists under `Commands:`.
fn commands(help: &str) -> BTreeSet<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter(|l| l.as_bytes().get(2) != Some(&b' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn every_command_line_in_the_book_is_one_trustform_accepts() {
    let top = commands(&help(&[]));
    assert!(top.contains("plan") && top.contains("show"), "{top:?}");
    let mut cache: BTreeMap<Vec<String>, String> = BTreeMap::new();
    let mut checked = 0;
    for (name, text) in pages() {
        // Shell blocks only (```sh, ```bash, ```console): other blocks show output.
        let mut shell: Option<bool> = None;
        for line in text.lines() {
            if let Some(lang) = line.trim_start().strip_prefix("```") {
                shell = match shell {
                    Some(_) => None,
                    None => Some(matches!(lang.trim(), "sh" | "bash" | "shell" | "console")),
                };
                continue;
            }
            let Some(cmd) = line
                .trim_start()
                .trim_start_matches("$ ")
                .strip_prefix("trustform ")
                .filter(|_| shell == Some(true))
            else {
                continue;
            };
            let mut words: Vec<&str> = cmd
                .split('#')
                .next()
                .unwrap()
                .split_whitespace()
                .take_while(|w| !matches!(*w, "|" | ">" | "&&" | ";" | "2>&1"))
                .collect();
            // Global options before the command (`trustform -v apply …`).
            loop {
                match words.first().copied() {
                    Some("-q" | "--quiet" | "-v" | "--verbose") => {
                        words.remove(0);
                    }
                    Some("-c" | "--config") => {
                        words.drain(..2.min(words.len()));
                    }
                    _ => break,
                }
            }
            let Some(first) = words.first() else { continue };
            if first.starts_with('-') {
                continue;
            }
            assert!(
                top.contains(*first),
                "{name}: `trustform {cmd}`: no command {first}"
            );
            // A command with subcommands (sandbox): its subcommand too.
            let mut path = vec![first.to_string()];
            let h = cache
                .entry(path.clone())
                .or_insert_with(|| help(&[first]))
                .clone();
            let subs = commands(&h);
            let h = match words.get(1) {
                Some(sub) if !subs.is_empty() => {
                    assert!(
                        subs.contains(*sub),
                        "{name}: `trustform {cmd}`: no {first} {sub}"
                    );
                    path.push(sub.to_string());
                    cache
                        .entry(path.clone())
                        .or_insert_with(|| help(&[first, sub]))
                        .clone()
                }
                _ => h,
            };
            for flag in words.iter().filter(|w| w.starts_with("--")) {
                let flag = flag.split('=').next().unwrap();
                assert!(
                    h.contains(&format!("{flag} "))
                        || h.contains(&format!("{flag}\n"))
                        || h.contains(&format!("{flag}="))
                        || h.contains(&format!("{flag} <")),
                    "{name}: `trustform {cmd}`: {} has no {flag}",
                    path.join(" ")
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} command lines found");
}

/// Every command's `--help`, as the CLI prints it, in the order `trustform --help` lists
/// them (subcommands after their command).
fn reference() -> String {
    let mut out = String::from(
        "# Command reference\n\n\
         Every command's `--help`, generated from the command line itself (`tests/book.rs`\n\
         checks this page against the tool; `UPDATE_BOOK=1 cargo test --test it book::` rewrites\n\
         it). The same text is in the man pages (`trustform man --out DIR`).\n",
    );
    let mut paths: Vec<Vec<String>> = vec![vec![]];
    let mut i = 0;
    while i < paths.len() {
        let path = paths[i].clone();
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let h = help(&args);
        let title = if path.is_empty() {
            "trustform".to_string()
        } else {
            format!("trustform {}", path.join(" "))
        };
        out.push_str(&format!("\n## `{title}`\n\n```text\n{}```\n", h));
        let mut subs: Vec<Vec<String>> = commands(&h)
            .into_iter()
            .filter(|c| c != "help")
            .map(|c| path.iter().cloned().chain([c]).collect())
            .collect();
        // In the order the help lists them, not sorted.
        subs.sort_by_key(|p| {
            h.find(&format!("  {} ", p.last().unwrap()))
                .unwrap_or(usize::MAX)
        });
        for (k, p) in subs.into_iter().enumerate() {
            paths.insert(i + 1 + k, p);
        }
        i += 1;
    }
    out
}

#[test]
fn the_command_reference_is_generated_from_the_cli() {
    let path = book().join("reference.md");
    let want = reference();
    if std::env::var_os("UPDATE_BOOK").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "book/src/reference.md is not the CLI's --help: run `UPDATE_BOOK=1 cargo test --test it book::`"
    );
    for c in [
        "trustform apply",
        "trustform sandbox create",
        "trustform show",
    ] {
        assert!(want.contains(&format!("## `{c}`")), "{c}");
    }
}
