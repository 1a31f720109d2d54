//! Static pod manifests as text: read the command-line flags, change one flag's value or
//! one annotation while keeping every other byte of the file.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The annotation a restart changes, so the kubelet recreates the static pod.
pub const RESTARTED_AT: &str = "trustform.dev/restarted-at";

/// A parsed manifest: pod name and the flags of its containers' commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// `metadata.name`.
    pub name: String,
    /// `--flag=value` (a bare `--flag` is `true`).
    pub flags: BTreeMap<String, String>,
}

/// Parse a manifest.
pub fn parse(text: &str) -> Result<Manifest, serde_saphyr::Error> {
    #[derive(Deserialize)]
    struct Pod {
        metadata: Meta,
        spec: Spec,
    }
    #[derive(Deserialize)]
    struct Meta {
        name: String,
    }
    #[derive(Deserialize)]
    struct Spec {
        containers: Vec<Container>,
    }
    #[derive(Deserialize)]
    struct Container {
        #[serde(default)]
        command: Vec<String>,
    }
    let pod: Pod = serde_saphyr::from_str(text)?;
    let mut flags = BTreeMap::new();
    for c in &pod.spec.containers {
        for arg in &c.command {
            if let Some(f) = arg.strip_prefix("--") {
                let (k, v) = f.split_once('=').unwrap_or((f, "true"));
                flags.insert(k.to_string(), v.to_string());
            }
        }
    }
    Ok(Manifest {
        name: pod.metadata.name,
        flags,
    })
}

/// The 1-based line of `--flag=`, if any.
pub fn flag_line(text: &str, flag: &str) -> Option<usize> {
    let needle = format!("--{flag}=");
    text.lines()
        .position(|l| l.contains(&needle))
        .map(|i| i + 1)
}

/// Set `--flag=value` in place. Only the value bytes of that one line change; quoting
/// is kept. Returns `None` when the flag is not in the file.
pub fn set_flag(text: &str, flag: &str, value: &str) -> Option<String> {
    let needle = format!("--{flag}=");
    let mut out = String::with_capacity(text.len() + value.len());
    let mut found = false;
    for line in text.split_inclusive('\n') {
        if !found && let Some(at) = line.find(&needle) {
            let start = at + needle.len();
            let body = line.trim_end_matches(['\n', '\r']);
            let eol = &line[body.len()..];
            // Keep a closing quote if the argument was quoted.
            let rest = &body[start..];
            let close = match rest.chars().last() {
                Some(q @ ('"' | '\'')) if body[..at].trim_end().ends_with(q) => q.to_string(),
                _ => String::new(),
            };
            out.push_str(&body[..start]);
            out.push_str(value);
            out.push_str(&close);
            out.push_str(eol);
            found = true;
        } else {
            out.push_str(line);
        }
    }
    found.then_some(out)
}

/// Set a `metadata.annotations` entry, adding the `annotations:` map if the manifest has
/// none. Every other byte stays. Returns `None` when there is no top-level `metadata:`.
pub fn set_annotation(text: &str, key: &str, value: &str) -> Option<String> {
    let entry = format!("    {key}: \"{value}\"\n");
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let meta = lines.iter().position(|l| l.trim_end() == "metadata:")?;
    // The metadata block: indented lines after `metadata:`.
    let end = lines[meta + 1..]
        .iter()
        .position(|l| !l.starts_with(' ') && !l.trim().is_empty())
        .map_or(lines.len(), |i| meta + 1 + i);
    let mut out: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    if let Some(ann) = (meta + 1..end).find(|&i| lines[i].trim_end() == "  annotations:") {
        let prefix = format!("    {key}:");
        let block_end = (ann + 1..end)
            .find(|&i| !lines[i].starts_with("    "))
            .unwrap_or(end);
        if let Some(i) = (ann + 1..block_end).find(|&i| lines[i].starts_with(&prefix)) {
            out[i] = entry;
        } else {
            out.insert(block_end, entry);
        }
    } else {
        out.insert(meta + 1, format!("  annotations:\n{entry}"));
    }
    Some(out.concat())
}

/// The value of an annotation written by [`set_annotation`].
pub fn annotation(text: &str, key: &str) -> Option<String> {
    let prefix = format!("    {key}: ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    kubeadm.kubernetes.io/x: 1.2.3.4:6443\n  creationTimestamp: null\n  name: kube-controller-manager\nspec:\n  containers:\n  - command:\n    - kube-controller-manager\n    - --client-ca-file=/etc/kubernetes/pki/ca.crt\n    - --root-ca-file=/etc/kubernetes/pki/ca.crt\n    image: x\n";

    #[test]
    fn set_flag_changes_only_the_value() {
        let out = set_flag(POD, "root-ca-file", "/etc/kubernetes/pki/ca-signer.crt").unwrap();
        assert_eq!(
            out,
            POD.replace(
                "--root-ca-file=/etc/kubernetes/pki/ca.crt",
                "--root-ca-file=/etc/kubernetes/pki/ca-signer.crt"
            )
        );
        assert_eq!(
            parse(&out).unwrap().flags["root-ca-file"],
            "/etc/kubernetes/pki/ca-signer.crt"
        );
        assert!(set_flag(POD, "nope", "x").is_none());
        assert_eq!(flag_line(POD, "root-ca-file"), Some(13));
    }

    #[test]
    fn annotation_is_added_then_replaced() {
        let once = set_annotation(POD, RESTARTED_AT, "2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            annotation(&once, RESTARTED_AT).as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        let twice = set_annotation(&once, RESTARTED_AT, "2026-01-02T00:00:00Z").unwrap();
        assert_eq!(twice.len(), once.len());
        assert_eq!(parse(&twice).unwrap(), parse(POD).unwrap());
        let bare = POD.replace(
            "  annotations:\n    kubeadm.kubernetes.io/x: 1.2.3.4:6443\n",
            "",
        );
        let added = set_annotation(&bare, RESTARTED_AT, "t").unwrap();
        assert!(
            added.contains("metadata:\n  annotations:\n    trustform.dev/restarted-at: \"t\"\n")
        );
        assert_eq!(parse(&added).unwrap(), parse(&bare).unwrap());
    }
}
