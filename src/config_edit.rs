//! Edits of trustform.yaml that keep the file: `rotate` changes the values it must (an
//! authority's `issuer` and `trust`, one new `cas` entry) in the text itself, so every
//! comment, the key order, the quoting and the blank lines stay, and the pull request
//! shows the lines that changed. An edit is accepted only when the edited text parses to
//! exactly the configuration wanted; otherwise the caller writes the canonical layout.

use crate::config::{Authority, CaSpec, Config};
use serde_saphyr::Spanned;

/// One replacement: `len` bytes at `at` become `with`.
struct Splice {
    at: usize,
    len: usize,
    with: String,
}

/// `text` with `authorities.<auth>` set to `issuer` and `trust`, and `new_ca` added under
/// `cas`, keeping everything else. `None` when the text does not lend itself to it (the
/// values are anchors, or the result would not parse to `want`).
pub fn rotate(
    text: &str,
    have: &Config,
    want: &Config,
    auth: Authority,
    new_ca: Option<(&str, &CaSpec)>,
) -> Option<String> {
    let from = have.authorities.get(&auth)?;
    let to = want.authorities.get(&auth)?;
    let mut splices = vec![scalar(text, &from.issuer, &to.issuer.value)?];
    splices.extend(sequence(
        text,
        &from.trust,
        &to.trust.iter().map(|t| t.value.clone()).collect::<Vec<_>>(),
    ));
    if let Some((name, spec)) = new_ca {
        splices.push(cas_entry(text, name, spec)?);
    }
    let edited = apply(text, splices)?;
    let parsed: Config = serde_saphyr::from_str(&edited).ok()?;
    (crate::config::render(&parsed) == crate::config::render(want)).then_some(edited)
}

fn apply(text: &str, mut splices: Vec<Splice>) -> Option<String> {
    splices.sort_by_key(|s| s.at);
    if splices.windows(2).any(|w| w[0].at + w[0].len > w[1].at) {
        return None;
    }
    let mut out = text.to_string();
    for s in splices.iter().rev() {
        out.replace_range(s.at..s.at + s.len, &s.with);
    }
    Some(out)
}

/// Where a scalar stands in the text: (offset, length), quotes included.
fn span(text: &str, v: &Spanned<String>) -> Option<(usize, usize)> {
    let s = v.defined.span();
    let (at, len) = (s.byte_offset()? as usize, s.byte_len()? as usize);
    let raw = text.get(at..at + len)?;
    // Only a plain or quoted scalar of that very value (not an alias, not a block).
    let bare = raw.trim_matches(|c| c == '"' || c == '\'');
    (bare == v.value).then_some((at, len))
}

/// `value` written as `like` was (plain, 'single' or "double" quoted).
fn quoted(like: &str, value: &str) -> String {
    match like.chars().next() {
        Some('"') => format!("\"{value}\""),
        Some('\'') => format!("'{value}'"),
        _ => value.to_string(),
    }
}

fn scalar(text: &str, from: &Spanned<String>, to: &str) -> Option<Splice> {
    let (at, len) = span(text, from)?;
    Some(Splice {
        at,
        len,
        with: quoted(&text[at..at + len], to),
    })
}

/// The items of a sequence changed: a flow sequence (`[a, b]`) is rewritten inside its
/// brackets; in a block sequence, the line of an item that goes is removed (its comment
/// with it), an item that comes gets a line of its own after the last, and the lines of
/// the items that stay are not touched.
fn sequence(text: &str, from: &[Spanned<String>], to: &[String]) -> Vec<Splice> {
    let Some(spans) = from
        .iter()
        .map(|v| span(text, v))
        .collect::<Option<Vec<_>>>()
    else {
        return vec![];
    };
    let (Some(&first), Some(&last)) = (spans.first(), spans.last()) else {
        return vec![];
    };
    let like = &text[first.0..first.0 + first.1];
    let line_of = |at: usize| {
        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
        (start, end)
    };
    let before = &text[line_of(first.0).0..first.0];
    if !(before.trim() == "-" && before.ends_with(' ')) {
        let with = to
            .iter()
            .map(|v| quoted(like, v))
            .collect::<Vec<_>>()
            .join(", ");
        return vec![Splice {
            at: first.0,
            len: last.0 + last.1 - first.0,
            with,
        }];
    }
    let mut out: Vec<Splice> = from
        .iter()
        .zip(&spans)
        .filter(|(v, _)| !to.contains(&v.value))
        .map(|(_, (at, _))| {
            let (start, end) = line_of(*at);
            Splice {
                at: start,
                len: end - start,
                with: String::new(),
            }
        })
        .collect();
    let end = line_of(last.0).1;
    let nl = if text[..end].ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let added: String = to
        .iter()
        .filter(|v| !from.iter().any(|f| &f.value == *v))
        .map(|v| format!("{before}{}\n", quoted(like, v)))
        .collect();
    if !added.is_empty() {
        out.push(Splice {
            at: end,
            len: 0,
            with: format!("{nl}{added}"),
        });
    }
    out
}

/// A new entry at the end of the top-level `cas:` block (indented as its entries are),
/// or a new `cas:` block at the end of the file.
fn cas_entry(text: &str, name: &str, spec: &CaSpec) -> Option<Splice> {
    let lines: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .scan(0, |at, l| {
            let here = *at;
            *at += l.len();
            Some((here, l))
        })
        .collect();
    let top = |l: &str| !l.starts_with([' ', '\t', '#', '\n', '\r']) && !l.trim().is_empty();
    let q = crate::config::q;
    let fields = crate::config::ca_fields(spec);
    // As the other entries are written: `name: { … }` on one line, or a block.
    let entry = |ind: &str, flow: bool| {
        if flow {
            format!("{ind}{}: {{ {} }}\n", q(name), fields.join(", "))
        } else {
            let mut e = format!("{ind}{}:\n", q(name));
            for f in &fields {
                e.push_str(&format!("{ind}{ind}{f}\n"));
            }
            e
        }
    };
    let Some(i) = lines.iter().position(|(_, l)| {
        l.strip_prefix("cas:")
            .is_some_and(|r| r.trim().is_empty() || r.trim_start().starts_with('#'))
    }) else {
        if lines.iter().any(|(_, l)| l.starts_with("cas:")) {
            return None; // a flow mapping: the canonical layout will do
        }
        let sep = if text.ends_with('\n') || text.is_empty() {
            ""
        } else {
            "\n"
        };
        return Some(Splice {
            at: text.len(),
            len: 0,
            with: format!("{sep}cas:\n{}", entry("  ", true)),
        });
    };
    // The block runs until the next top-level key; the entry goes after its last
    // indented line (trailing blank lines and comments stay after it).
    let end = lines[i + 1..]
        .iter()
        .position(|(_, l)| top(l))
        .map_or(lines.len(), |p| i + 1 + p);
    let body = &lines[i + 1..end];
    let last = body.iter().rposition(|(_, l)| {
        l.starts_with([' ', '\t']) && !l.trim_start().starts_with('#') && !l.trim().is_empty()
    })?;
    let first = body
        .iter()
        .find(|(_, l)| l.starts_with([' ', '\t']) && !l.trim_start().starts_with('#'))?
        .1;
    let ind: String = first.chars().take_while(|c| *c == ' ').collect();
    let flow = first.contains(": {");
    if ind.is_empty() {
        return None;
    }
    let (at, l) = body[last];
    let at = at + l.len();
    let nl = if l.ends_with('\n') { "" } else { "\n" };
    Some(Splice {
        at,
        len: 0,
        with: format!("{nl}{}", entry(&ind, flow)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::spanned;

    const FILE: &str = "# kept\napiVersion: trustform.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: lab\ninventory:\n  layout: kubeadm\n  nodes:\n    - { name: cp-1, role: control-plane, access: { local: { root: n/cp-1 } } }\nauthorities:\n  kubernetes:\n    issuer: old   # kept too\n    trust: [old]\ncas:\n  old: { fingerprint: \"sha256:1111111111111111111111111111111111111111111111111111111111111111\" }\n";

    fn rotated(text: &str, issuer: &str, trust: &[&str], add: bool) -> Option<String> {
        let have: Config = serde_saphyr::from_str(text).unwrap();
        let mut want = have.clone();
        let a = want.authorities.get_mut(&Authority::Kubernetes).unwrap();
        a.issuer = spanned(issuer);
        a.trust = trust.iter().map(|t| spanned(*t)).collect();
        let spec = CaSpec {
            fingerprint: None,
            cert: Some(spanned("cas/new.crt")),
            key: Some(".trustform/keys/new.key".into()),
            algorithm: None,
            public_key: None,
        };
        if add {
            want.cas.insert("new".into(), spec.clone());
        }
        rotate(
            text,
            &have,
            &want,
            Authority::Kubernetes,
            add.then_some(("new", &spec)),
        )
    }

    #[test]
    fn a_flow_sequence_and_a_flow_cas_entry_are_edited_in_place() {
        let pre = rotated(FILE, "old", &["old", "new"], true).expect("edited");
        assert_eq!(
            pre,
            FILE.replace("trust: [old]", "trust: [old, new]").replace(
                "\"sha256:1111111111111111111111111111111111111111111111111111111111111111\" }\n",
                "\"sha256:1111111111111111111111111111111111111111111111111111111111111111\" }\n  new: { cert: cas/new.crt, key: \".trustform/keys/new.key\" }\n"
            )
        );
        let post = rotated(&pre, "new", &["new"], false).expect("edited");
        assert!(
            post.contains("    issuer: new   # kept too\n    trust: [new]\n"),
            "{post}"
        );
        assert!(post.starts_with("# kept\n"));
    }

    #[test]
    fn a_flow_cas_mapping_is_left_to_the_canonical_layout() {
        let text = FILE.replace(
            "cas:\n  old: { fingerprint: \"sha256:1111111111111111111111111111111111111111111111111111111111111111\" }\n",
            "cas: { old: { fingerprint: \"sha256:1111111111111111111111111111111111111111111111111111111111111111\" } }\n",
        );
        assert_ne!(text, FILE);
        assert_eq!(rotated(&text, "old", &["old", "new"], true), None);
    }

    #[test]
    fn an_alias_is_left_to_the_canonical_layout() {
        let text = FILE.replace(
            "    issuer: old   # kept too\n    trust: [old]\n",
            "    issuer: &i old\n    trust: [*i]\n",
        );
        assert_eq!(rotated(&text, "old", &["old", "new"], true), None);
    }
}
