//! Private key material out of everything trustform shows: error snippets, error
//! messages, log lines, JSON.
//!
//! Pure: text in, text out; no I/O. Redaction keeps the line count and every line's
//! terminator, so a line number found in the original text names the same line in the
//! redacted one; a byte span is carried over with [`Redacted::span`].
//!
//! What is hidden, in any text:
//! - the value of every `*-key-data` key (kubeconfig `client-key-data`), YAML or JSON,
//!   with its continuation lines (block scalars, multi-line quotes);
//! - the body of every PEM block whose label is not a known public one (`… PRIVATE KEY`,
//!   and labels a corruption made unreadable); the BEGIN/END lines stay;
//! - every run of 40 or more base64 characters (unless all hex: digests, fingerprints),
//!   wherever it is: certificate data too. Unknown base64 is treated as secret; a run that
//!   decodes to a PEM private key is marked as one.
//!
//! In a key file ([`Redacted::of`] on a `*.key` name) every line but the BEGIN/END lines
//! is hidden: a broken line in a key is still part of the key.

use base64::Engine;
use miette::{NamedSource, SourceSpan};
use std::borrow::Cow;

/// What replaces private key material.
pub const KEY: &str = "[redacted: private key]";
/// What replaces other long base64 text.
pub const BASE64: &str = "[redacted: base64]";

/// What ends a line cut short.
pub const CUT: &str = "…[line cut]";

/// Runs of base64 at least this long are hidden.
const RUN: usize = 40;
/// Shown lines are cut after this many bytes: nobody reads further, and miette cannot
/// underline a label past column 65535 (it panics).
const LINE: usize = 1000;

/// PEM labels whose bodies are public.
const PUBLIC_LABELS: [&str; 7] = [
    "CERTIFICATE",
    "TRUSTED CERTIFICATE",
    "X509 CRL",
    "CERTIFICATE REQUEST",
    "NEW CERTIFICATE REQUEST",
    "PUBLIC KEY",
    "RSA PUBLIC KEY",
];

/// `text` with key material and long base64 hidden; the same lines.
pub fn text(s: &str) -> Cow<'_, str> {
    let r = Redacted::new(s);
    if r.changed() {
        Cow::Owned(r.text)
    } else {
        Cow::Borrowed(s)
    }
}

/// An error message about `source`, with anything secret of `source` taken out of it.
pub fn message(msg: &str, source: &str) -> String {
    Redacted::new(source).message(msg)
}

/// An error as trustform shows it: its message, help and labels go through [`text`], so
/// a value quoted from a file (a path, a flag, a CA name that a corruption filled with key
/// text) is hidden too. The source code it points into is redacted where the error is
/// made ([`Redacted::source`]).
pub struct Shown(miette::Report);

impl Shown {
    /// Wrap a report for printing.
    pub fn new(report: miette::Report) -> Self {
        Self(report)
    }
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&text(&self.0.to_string()))
    }
}

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Shown").field(&self.to_string()).finish()
    }
}

impl std::error::Error for Shown {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl miette::Diagnostic for Shown {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.code()
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.0.severity()
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        let help = self.0.help()?.to_string();
        Some(Box::new(text(&help).into_owned()))
    }
    fn url<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.0.url()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let labels = self.0.labels()?.map(|l| {
            let label = l.label().map(|t| text(t).into_owned());
            if l.primary() {
                miette::LabeledSpan::new_primary_with_span(label, *l.inner())
            } else {
                miette::LabeledSpan::new_with_span(label, *l.inner())
            }
        });
        Some(Box::new(labels))
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        self.0.related()
    }
    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.0.diagnostic_source()
    }
}

/// A file whose every line is key material (kubeadm's `*.key`).
pub fn is_key_file(name: &str) -> bool {
    name.ends_with(".key")
}

/// One replacement inside a line: original bytes `from..to` became `marker`.
#[derive(Clone, Debug)]
struct Edit {
    from: usize,
    to: usize,
    marker: &'static str,
}

/// Where one line starts in the original and in the redacted text.
#[derive(Clone, Debug)]
struct Line {
    orig: usize,
    red: usize,
    edits: Vec<Edit>,
}

/// A text with its secrets hidden, and what is needed to point into it.
#[derive(Clone, Debug)]
pub struct Redacted {
    text: String,
    lines: Vec<Line>,
    /// The pieces taken out (trimmed), to scrub them from messages.
    secrets: Vec<String>,
}

/// Where the scanner is, between lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Ordinary text.
    Text,
    /// Inside a public PEM block.
    Public,
    /// Inside a private (or unreadable) PEM block.
    Key,
    /// After a `*-key-data:` whose value may go on: lines indented deeper than `indent`.
    Value { indent: usize },
    /// After a bare line of long base64 outside any block (a PEM body whose BEGIN line
    /// is gone): the body's short last line is hidden too.
    Body,
}

impl Redacted {
    /// Redact a text (any file but a key file).
    pub fn new(text: &str) -> Self {
        let mut state = State::Text;
        Self::build(text, |body| scan(body, &mut state))
    }

    /// Redact a key file: every line but BEGIN/END markers.
    pub fn key_file(text: &str) -> Self {
        Self::build(text, |body| {
            let t = body.trim();
            if t.is_empty() || is_marker_line(t) {
                return vec![];
            }
            let from = body.len() - body.trim_start().len();
            vec![Edit {
                from,
                to: from + t.len(),
                marker: KEY,
            }]
        })
    }

    /// Redact the file `name`: a key file when its name says so.
    pub fn of(name: &str, text: &str) -> Self {
        if is_key_file(name) {
            Self::key_file(text)
        } else {
            Self::new(text)
        }
    }

    fn build(text: &str, mut edits_of: impl FnMut(&str) -> Vec<Edit>) -> Self {
        let mut out = String::with_capacity(text.len());
        let mut lines = Vec::new();
        let mut secrets = Vec::new();
        let mut orig = 0;
        for line in text.split_inclusive('\n') {
            let body = line.trim_end_matches(['\n', '\r']);
            let edits = edits_of(body);
            for e in &edits {
                let gone = body[e.from..e.to].trim();
                if !gone.is_empty() {
                    secrets.push(gone.to_string());
                }
            }
            let edits = cut(body, edits);
            let red = out.len();
            let mut at = 0;
            for e in &edits {
                out.push_str(&body[at..e.from]);
                out.push_str(e.marker);
                at = e.to;
            }
            out.push_str(&line[at..]);
            lines.push(Line { orig, red, edits });
            orig += line.len();
        }
        Self {
            text: out,
            lines,
            secrets,
        }
    }

    /// The redacted text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether anything was hidden.
    pub fn changed(&self) -> bool {
        self.lines.iter().any(|l| !l.edits.is_empty())
    }

    /// A miette source of the redacted text.
    pub fn source(&self, name: impl AsRef<str>) -> NamedSource<String> {
        NamedSource::new(name, self.text.clone())
    }

    /// The span of 1-based `line` in the redacted text (trailing blanks excluded).
    pub fn line_span(&self, line: usize) -> SourceSpan {
        line_span(&self.text, line)
    }

    /// A byte span of the original text, carried over to the redacted text: a span that
    /// starts or ends inside a hidden piece covers its marker.
    pub fn span(&self, original: SourceSpan) -> SourceSpan {
        let start = self.offset(original.offset(), false);
        let end = self.offset(original.offset() + original.len(), true);
        (start, end.saturating_sub(start)).into()
    }

    fn offset(&self, orig: usize, end: bool) -> usize {
        let i = self.lines.partition_point(|l| l.orig <= orig);
        let Some(line) = i.checked_sub(1).and_then(|i| self.lines.get(i)) else {
            return orig.min(self.text.len());
        };
        let col = orig - line.orig;
        let mut shift: isize = 0;
        for e in &line.edits {
            if col < e.from || (end && col == e.from) {
                break;
            }
            if col < e.to || (end && col == e.to) {
                let base = (e.from as isize + shift) as usize;
                return line.red + if end { base + e.marker.len() } else { base };
            }
            shift += e.marker.len() as isize - (e.to - e.from) as isize;
        }
        let red = line.red as isize + col as isize + shift;
        (red.max(0) as usize).min(self.text.len())
    }

    /// `msg` (a parser's message about this text) without anything hidden here: the
    /// hidden pieces, base64 runs taken from them, and whatever [`Redacted::new`] hides.
    pub fn message(&self, msg: &str) -> String {
        let mut out = msg.to_string();
        for s in self.secrets.iter().filter(|s| s.len() >= 8) {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), KEY);
            }
        }
        let runs = base64_runs(&out, 16);
        let mut scrubbed = String::with_capacity(out.len());
        let mut at = 0;
        for (from, to) in runs {
            let run = &out[from..to];
            if self.secrets.iter().any(|s| s.contains(run)) {
                scrubbed.push_str(&out[at..from]);
                scrubbed.push_str(KEY);
                at = to;
            }
        }
        scrubbed.push_str(&out[at..]);
        text(&scrubbed).into_owned()
    }
}

/// `edits` of a line, and one more that cuts it if it would be longer than [`LINE`].
fn cut(body: &str, mut edits: Vec<Edit>) -> Vec<Edit> {
    let shown = |edits: &[Edit]| {
        body.len() - edits.iter().map(|e| e.to - e.from).sum::<usize>()
            + edits.iter().map(|e| e.marker.len()).sum::<usize>()
    };
    if shown(&edits) <= LINE {
        return edits;
    }
    // Walk the line as shown; cut where it reaches LINE, never inside a marker.
    let (mut at, mut len) = (0, 0);
    let mut keep = 0;
    for e in &edits {
        if len + (e.from - at) >= LINE {
            break;
        }
        len += e.from - at + e.marker.len();
        at = e.to;
        keep += 1;
    }
    let mut from = (at + LINE.saturating_sub(len)).min(body.len());
    if keep < edits.len() {
        from = from.min(edits[keep].from);
    }
    while !body.is_char_boundary(from) {
        from -= 1;
    }
    edits.truncate(keep);
    edits.push(Edit {
        from,
        to: body.len(),
        marker: CUT,
    });
    edits
}

/// The span of 1-based `line` in `text` (trailing blanks excluded); empty at 0 when the
/// text has no such line.
pub fn line_span(text: &str, line: usize) -> SourceSpan {
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return (offset, l.trim_end().len()).into();
        }
        offset += l.len();
    }
    (0, 0).into()
}

fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='
}

/// Byte ranges of the maximal base64 runs of at least `min` characters, not all hex.
fn base64_runs(s: &str, min: usize) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if !is_b64(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_b64(b[i]) {
            i += 1;
        }
        let run = &b[start..i];
        if run.len() >= min && !run.iter().all(|c| c.is_ascii_hexdigit() || *c == b'=') {
            out.push((start, i));
        }
    }
    out
}

/// Whether base64 `run` decodes to the start of a PEM private key.
fn is_key_b64(run: &str) -> bool {
    if !run.starts_with("LS0tLS1CRUdJT") {
        return false;
    }
    let head = run.trim_end_matches('=');
    let head = &head[..head.len().min(120) / 4 * 4];
    base64::engine::general_purpose::STANDARD
        .decode(head)
        .is_ok_and(|d| String::from_utf8_lossy(&d).contains("PRIVATE KEY"))
}

/// `-----BEGIN X-----` / `-----END X-----` and nothing else.
fn is_marker_line(t: &str) -> bool {
    let Some(label) = t
        .strip_prefix("-----BEGIN ")
        .or_else(|| t.strip_prefix("-----END "))
        .and_then(|r| r.strip_suffix("-----"))
    else {
        return false;
    };
    label
        .bytes()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' ')
}

/// The edits of one line (without its terminator), moving `state` along.
fn scan(body: &str, state: &mut State) -> Vec<Edit> {
    let mut edits = Vec::new();
    let indent = body.len() - body.trim_start().len();
    let bare = body.trim();
    let bare = !bare.is_empty() && bare.bytes().all(is_b64);
    if *state == State::Body {
        if bare {
            hide(body, 0, body.len(), BASE64, &mut edits);
            return edits;
        }
        *state = State::Text;
    }
    if let State::Value { indent: key } = *state {
        if body.trim().is_empty() {
            return edits;
        }
        if indent > key {
            edits.push(Edit {
                from: indent,
                to: body.trim_end().len(),
                marker: KEY,
            });
            return edits;
        }
        *state = State::Text;
    }
    let mut pos = 0;
    while pos < body.len() {
        match *state {
            State::Key => {
                let end = body[pos..].find("-----END ").map(|i| pos + i);
                let stop = end.unwrap_or(body.len());
                hide(body, pos, stop, KEY, &mut edits);
                let Some(end) = end else { break };
                pos = after_marker(body, end + "-----END ".len(), &mut edits);
                *state = State::Text;
            }
            State::Public => {
                let end = body[pos..].find("-----END ").map(|i| pos + i);
                let begin = body[pos..].find("-----BEGIN ").map(|i| pos + i);
                let stop = match (end, begin) {
                    (Some(e), Some(b)) => e.min(b),
                    (Some(x), None) | (None, Some(x)) => x,
                    (None, None) => body.len(),
                };
                runs(body, pos, stop, &mut edits);
                if stop == body.len() {
                    break;
                }
                if Some(stop) == end {
                    pos = after_marker(body, stop + "-----END ".len(), &mut edits);
                    *state = State::Text;
                } else {
                    pos = begin_block(body, stop, state, &mut edits);
                }
            }
            State::Text | State::Value { .. } | State::Body => {
                let begin = body[pos..].find("-----BEGIN ").map(|i| pos + i);
                let stop = begin.unwrap_or(body.len());
                if text_segment(body, pos, stop, state, &mut edits) {
                    break; // a value runs to the end of the line
                }
                let Some(b) = begin else { break };
                pos = begin_block(body, b, state, &mut edits);
            }
        }
    }
    if *state == State::Text && bare && body.trim().len() >= RUN {
        *state = State::Body;
    }
    edits
}

/// Enter the block whose BEGIN marker starts at `at`; returns where its body starts.
fn begin_block(body: &str, at: usize, state: &mut State, edits: &mut Vec<Edit>) -> usize {
    let (label, next) = label(body, at + "-----BEGIN ".len(), edits);
    *state = if PUBLIC_LABELS.contains(&label.trim()) {
        State::Public
    } else {
        State::Key
    };
    next
}

/// Past the `X-----` of an END marker whose label starts at `at`.
fn after_marker(body: &str, at: usize, edits: &mut Vec<Edit>) -> usize {
    label(body, at, edits).1
}

/// The label of a PEM marker starting at `at`, and where the marker ends. A label that
/// is not one (a corruption ran key text into it) is hidden.
fn label<'a>(body: &'a str, at: usize, edits: &mut Vec<Edit>) -> (&'a str, usize) {
    let (label, next) = match body[at..].find("-----") {
        Some(i) => (&body[at..at + i], at + i + 5),
        None => (&body[at..], body.len()),
    };
    let clean = label.len() <= 40
        && label
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' ');
    if !clean {
        hide(body, at, at + label.len(), KEY, edits);
    }
    (label, next)
}

/// Hide `from..to` of `body` (its surrounding blanks stay), if anything is there.
fn hide(body: &str, from: usize, to: usize, marker: &'static str, edits: &mut Vec<Edit>) {
    let seg = &body[from..to];
    let t = seg.trim();
    if t.is_empty() {
        return;
    }
    let from = from + (seg.len() - seg.trim_start().len());
    edits.push(Edit {
        from,
        to: from + t.len(),
        marker,
    });
}

/// Hide the long base64 runs of `body[from..to]`.
fn runs(body: &str, from: usize, to: usize, edits: &mut Vec<Edit>) {
    for (a, b) in base64_runs(&body[from..to], RUN) {
        let run = &body[from + a..from + b];
        edits.push(Edit {
            from: from + a,
            to: from + b,
            marker: if is_key_b64(run) { KEY } else { BASE64 },
        });
    }
}

/// Ordinary text `body[from..to]`: `*-key-data` values and long base64 runs. Returns
/// whether a value took the rest of the line (and may go on below it).
fn text_segment(
    body: &str,
    from: usize,
    to: usize,
    state: &mut State,
    edits: &mut Vec<Edit>,
) -> bool {
    let mut pos = from;
    while let Some(i) = body[pos..to].find("-key-data").map(|i| pos + i) {
        let key_end = i + "-key-data".len();
        let Some((value, key_col)) = value_start(body, i, key_end, to) else {
            runs(body, pos, key_end, edits);
            pos = key_end;
            continue;
        };
        runs(body, pos, value, edits);
        let rest = &body[value..to];
        let goes_on = State::Value { indent: key_col };
        match rest.bytes().next() {
            None => {
                *state = goes_on;
                return true;
            }
            Some(b'|' | b'>') => {
                // A block scalar: its lines follow. Anything but an indicator after the
                // `|` is value text (or a corruption of it).
                let header = rest[1..].trim_end();
                let indicator = header.len() <= 2
                    && header
                        .bytes()
                        .all(|c| matches!(c, b'-' | b'+' | b'1'..=b'9'));
                if !indicator {
                    hide(body, value + 1, to, KEY, edits);
                }
                *state = goes_on;
                return true;
            }
            Some(q @ (b'"' | b'\'')) => match rest[1..].find(q as char) {
                Some(close) => {
                    hide(body, value + 1, value + 1 + close, KEY, edits);
                    pos = value + 2 + close;
                }
                None => {
                    hide(body, value + 1, body.len(), KEY, edits);
                    *state = goes_on;
                    return true;
                }
            },
            Some(_) => {
                let stop = rest.find([',', '}', ']']).map(|j| value + j);
                let comment = rest.find(" #").map(|j| value + j);
                let end = match (stop, comment) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).unwrap_or(to),
                };
                hide(body, value, end, KEY, edits);
                if stop.is_none() && to == body.len() {
                    *state = goes_on;
                    return true;
                }
                pos = end;
            }
        }
    }
    runs(body, pos, to, edits);
    false
}

/// For `*-key-data` ending at `key_end`: where its value starts (after `:`, blanks and
/// before `to`) and the column its key starts at; `None` when no `:` follows.
fn value_start(body: &str, key_at: usize, key_end: usize, to: usize) -> Option<(usize, usize)> {
    let b = body.as_bytes();
    let mut j = key_end;
    if j < to && (b[j] == b'"' || b[j] == b'\'') {
        j += 1;
    }
    while j < to && (b[j] == b' ' || b[j] == b'\t') {
        j += 1;
    }
    if j >= to || b[j] != b':' {
        return None;
    }
    j += 1;
    while j < to && (b[j] == b' ' || b[j] == b'\t') {
        j += 1;
    }
    let key_col = body[..key_at]
        .rfind(|c: char| c.is_whitespace() || matches!(c, '{' | ',' | '['))
        .map_or(0, |k| k + 1);
    Some((j, key_col))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B64: &str =
        "LS0tLS1CRUdJTiBFQyBQUklWQVRFIEtFWS0tLS0tCk1IY0NBUUVFSUxrZ3B0dWhYT0tLLWZha2UK";
    const BODY: &str = "MHcCAQEEIOn7B9Vq0mS1cC3fWm2mXQ3YtYv7x5m0FQk0p1y8pZzGoAoGCCqGSM49";

    fn kubeconfig(tail: &str) -> String {
        format!(
            "apiVersion: v1\nusers:\n- name: admin\n  user:\n    client-certificate-data: Zm9v\n    client-key-data: {B64}\n{tail}"
        )
    }

    #[test]
    fn client_key_data_is_hidden_and_lines_are_kept() {
        let k = kubeconfig("{{{{ not: yaml ::\n");
        let r = Redacted::new(&k);
        assert!(!r.text().contains(B64), "{}", r.text());
        assert!(r.text().contains(&format!("    client-key-data: {KEY}\n")));
        assert_eq!(r.text().lines().count(), k.lines().count());
        assert!(r.text().ends_with("{{{{ not: yaml ::\n"));
    }

    #[test]
    fn json_and_flow_values_are_hidden() {
        let j = format!("{{\"client-key-data\": \"{B64}\", \"x\": 1}}\n");
        assert_eq!(
            text(&j),
            format!("{{\"client-key-data\": \"{KEY}\", \"x\": 1}}\n")
        );
        let f = format!("user: {{client-key-data: {B64}, name: a}}\n");
        assert_eq!(
            text(&f),
            format!("user: {{client-key-data: {KEY}, name: a}}\n")
        );
        let short = "etcd-key-data: abc\nnext: 1\n";
        assert_eq!(text(short), format!("etcd-key-data: {KEY}\nnext: 1\n"));
    }

    #[test]
    fn block_scalar_values_are_hidden_to_their_end() {
        let y = format!("  client-key-data: |\n    {BODY}\n\n    abc\n  name: x\n");
        assert_eq!(
            text(&y),
            format!("  client-key-data: |\n    {KEY}\n\n    {KEY}\n  name: x\n")
        );
        let glued = format!("  client-key-data: |{BODY}\n  name: x\n");
        assert_eq!(
            text(&glued),
            format!("  client-key-data: |{KEY}\n  name: x\n")
        );
        let list = "- client-key-data: abc\n  name: x\n";
        assert_eq!(text(list), format!("- client-key-data: {KEY}\n  name: x\n"));
    }

    #[test]
    fn private_key_pem_bodies_go_and_markers_stay() {
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n-----BEGIN RSA PRIVATE KEY-----\n{BODY}\n{{{{ garbage\nAb==\n-----END RSA PRIVATE KEY-----\nafter\n"
        );
        let want = format!(
            "-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n-----BEGIN RSA PRIVATE KEY-----\n{KEY}\n{KEY}\n{KEY}\n-----END RSA PRIVATE KEY-----\nafter\n"
        );
        assert_eq!(text(&pem), want);
        // An unclosed key hides everything after it; a garbled label counts as a key.
        let open = "-----BEGIN PRIVATE KEY-----\nabc\n";
        assert_eq!(text(open), format!("-----BEGIN PRIVATE KEY-----\n{KEY}\n"));
        let garbled = "-----BEGIN RSA PRIVATE KEZ-----\nabc\n-----END X-----\n";
        assert_eq!(
            text(garbled),
            format!("-----BEGIN RSA PRIVATE KEZ-----\n{KEY}\n-----END X-----\n")
        );
        // Key text run into a marker's label (found by tests/fuzz.rs).
        let run_in = format!("-----BEGIN PRIVATE {BODY}\nabc\n-----END {BODY}-----x\n");
        assert_eq!(
            text(&run_in),
            format!("-----BEGIN {KEY}\n{KEY}\n-----END {KEY}-----x\n")
        );
    }

    #[test]
    fn escaped_pem_on_one_line_is_hidden() {
        let j = "{\"tls.key\": \"-----BEGIN EC PRIVATE KEY-----\\nabc\\n-----END EC PRIVATE KEY-----\\n\"}";
        assert_eq!(
            text(j),
            format!(
                "{{\"tls.key\": \"-----BEGIN EC PRIVATE KEY-----{KEY}-----END EC PRIVATE KEY-----\\n\"}}"
            )
        );
    }

    #[test]
    fn long_base64_goes_hex_stays() {
        let fp = "fingerprint: sha256:9f3a1b2c3d4e5f60718293a4b5c6d7e8f9f3a1b2c3d4e5f60718293a4b5c6d7e8\n";
        assert_eq!(text(fp), fp);
        let ca = format!("certificate-authority-data: {BODY}\n");
        assert_eq!(text(&ca), format!("certificate-authority-data: {BASE64}\n"));
        let key = format!("tls.key: {B64}\n");
        assert_eq!(text(&key), format!("tls.key: {KEY}\n"));
        let orphan = format!("{BODY}\n{BODY}\nAb12==\nname: x\nAb12==\n");
        assert_eq!(
            text(&orphan),
            format!("{BASE64}\n{BASE64}\n{BASE64}\nname: x\nAb12==\n")
        );
        let plain =
            "server: https://10.0.0.1:6443\n  - --client-ca-file=/etc/kubernetes/pki/ca.crt\n";
        assert!(matches!(text(plain), Cow::Borrowed(_)));
    }

    #[test]
    fn key_files_hide_every_line_but_markers() {
        let k = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{BODY}\n  not: yaml\n-----END EC PRIVATE KEY-----\n"
        );
        let r = Redacted::of("/etc/kubernetes/pki/ca.key", &k);
        assert_eq!(
            r.text(),
            format!(
                "-----BEGIN EC PRIVATE KEY-----\n{KEY}\n  {KEY}\n-----END EC PRIVATE KEY-----\n"
            )
        );
        assert_eq!(
            r.line_span(3),
            SourceSpan::from((31 + KEY.len() + 1, KEY.len() + 2))
        );
    }

    #[test]
    fn long_lines_are_cut_and_spans_follow() {
        let long = format!("x: {}\nnext\n", "é".repeat(2000));
        let r = Redacted::new(&long);
        let first = r.text().lines().next().unwrap();
        assert!(
            first.ends_with(CUT) && first.len() <= LINE + CUT.len(),
            "{first}"
        );
        assert_eq!(r.text().lines().nth(1), Some("next"));
        let end = long.find('\n').unwrap();
        let span = r.span((end - 2, 2).into());
        assert_eq!(&r.text()[span.offset()..span.offset() + span.len()], CUT);
        let keys = format!("{}client-key-data: {B64}\n", "a ".repeat(600));
        let r = Redacted::new(&keys);
        assert!(!r.text().contains(&B64[..20]), "{}", r.text());
        assert!(r.text().trim_end().ends_with(CUT));
        // A key value that runs past the cut is still a secret for messages.
        assert_eq!(
            r.message(&format!("bad {}", &B64[30..60])),
            format!("bad {KEY}")
        );
    }

    #[test]
    fn spans_follow_the_redaction() {
        let k = kubeconfig("  name: x\n");
        let r = Redacted::new(&k);
        let at = k.find("name: x").unwrap();
        let span = r.span((at, 7).into());
        assert_eq!(
            &r.text()[span.offset()..span.offset() + span.len()],
            "name: x"
        );
        let inside = k.find(B64).unwrap() + 10;
        let span = r.span((inside, 5).into());
        assert_eq!(&r.text()[span.offset()..span.offset() + span.len()], KEY);
        let before = k.find("client-key-data").unwrap();
        let span = r.span((before, 15).into());
        assert_eq!(
            &r.text()[span.offset()..span.offset() + span.len()],
            "client-key-data"
        );
        assert_eq!(r.span((k.len(), 0).into()).offset(), r.text().len());
    }

    #[test]
    fn shown_errors_hide_quoted_values() {
        #[derive(Debug, thiserror::Error, miette::Diagnostic)]
        #[error("cannot read {path}")]
        #[diagnostic(code(trustform::test), help("use one of: {path}"))]
        struct E {
            path: String,
            #[label("{path}")]
            span: SourceSpan,
        }
        let e = E {
            path: BODY.into(),
            span: (0, 1).into(),
        };
        let shown = Shown::new(miette::Report::new(e));
        use miette::Diagnostic;
        assert_eq!(shown.to_string(), format!("cannot read {BASE64}"));
        assert_eq!(
            shown.help().unwrap().to_string(),
            format!("use one of: {BASE64}")
        );
        let label = shown.labels().unwrap().next().unwrap();
        assert_eq!(label.label(), Some(BASE64));
        assert_eq!(shown.code().unwrap().to_string(), "trustform::test");
    }

    #[test]
    fn messages_lose_what_the_source_hides() {
        let k = kubeconfig("{{{{\n");
        let quoted = format!("invalid type: string \"{}…\", expected a map", &B64[..30]);
        let m = message(&quoted, &k);
        assert!(!m.contains(&B64[..20]), "{m}");
        assert!(m.starts_with("invalid type: string \""), "{m}");
        let snippet = format!("error at line 7\n 6 | client-key-data: {B64}\n 7 | {{{{{{{{\n");
        assert!(!message(&snippet, &k).contains(&B64[..20]));
        let key = format!("-----BEGIN EC PRIVATE KEY-----\n{BODY}\n-----END EC PRIVATE KEY-----\n");
        let m = message(&format!("bad line {}", &BODY[5..30]), &key);
        assert_eq!(m, format!("bad line {KEY}"));
        assert_eq!(
            message("expected a map at line 3", &k),
            "expected a map at line 3"
        );
    }
}
