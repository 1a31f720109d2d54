//! Certificate expiry: every certificate a [`Snapshot`] knows (the CAs, every leaf in a
//! file, every kubeconfig's client certificate), when it ends and how long is left, as
//! `kubeadm certs check-expiration` lists them, for the whole cluster at once. Pure: the
//! snapshot and the time in, a [`Listing`] out; rendered as a table, JSON (its schema is
//! `schemas/expiry.schema.json`) or a Prometheus textfile for node_exporter.

use crate::snapshot::{FileFact, Snapshot};
use serde::Serialize;
use std::fmt::Write;
use time::OffsetDateTime;

/// The version of the JSON listing.
pub const FORMAT_VERSION: u32 = 1;

/// What a certificate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A certificate authority (listed once, with every place it was found).
    Ca,
    /// A leaf certificate in a file (a serving or client certificate).
    Leaf,
    /// A kubeconfig's client certificate (embedded or referenced).
    KubeconfigClient,
}

/// Where a certificate stands against the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Its `notAfter` has passed.
    Expired,
    /// It ends inside the window.
    Expiring,
    /// It ends after the window.
    Ok,
}

/// One certificate.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// The node whose file holds it (none for a CA: see `found_in`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The file on that node (none for a CA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its subject's common name.
    pub subject: String,
    /// Its issuer's common name.
    pub issuer: String,
    /// SHA-256 of its DER.
    pub fingerprint: String,
    /// When it ends (RFC 3339).
    pub not_after: String,
    /// Seconds from `now` to `not_after` (negative once expired).
    pub seconds_left: i64,
    /// Against the window.
    pub state: State,
    /// Where it is used: for a CA every `node:path` it was found in; for a leaf the
    /// components that read its file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<String>,
    /// For a certificate the kubelet renews itself (its client certificate with
    /// `rotateCertificates`, its serving one with `serverTLSBootstrap`): when it should.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
}

/// When the kubelet renews a certificate: "at any point between 30% and 10% of the time
/// remaining" (seed 002 §1), that is between 70% and 90% of its lifetime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Rotation {
    /// 70% of its lifetime (RFC 3339).
    pub from: String,
    /// 90% of its lifetime (RFC 3339).
    pub until: String,
    /// Where `now` is.
    pub stage: RotationStage,
}

/// Where a kubelet-rotated certificate stands in its renewal window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RotationStage {
    /// Before the window: nothing to do yet.
    Before,
    /// Inside it: the kubelet renews it at any moment.
    Due,
    /// Past it: the kubelet should have renewed it and has not (its CSR pending or
    /// denied, or the kubelet cannot reach an API server).
    Overdue,
}

/// The renewal window of a certificate issued at `not_before` that ends at `not_after`.
pub fn rotation(not_before: &str, not_after: &str, now: OffsetDateTime) -> Option<Rotation> {
    let (b, a) = (
        crate::clock::parse(not_before)?,
        crate::clock::parse(not_after)?,
    );
    let life = a - b;
    let (from, until) = (b + life * 0.7, b + life * 0.9);
    Some(Rotation {
        from: crate::clock::format(from),
        until: crate::clock::format(until),
        stage: if now < from {
            RotationStage::Before
        } else if now <= until {
            RotationStage::Due
        } else {
            RotationStage::Overdue
        },
    })
}

/// The counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Summary {
    /// Certificates listed.
    pub total: usize,
    /// Already expired.
    pub expired: usize,
    /// Ending inside the window.
    pub expiring: usize,
    /// Certificates the kubelet should have renewed by now and has not.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub overdue: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Every certificate, soonest end first.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Listing {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// When it was listed (RFC 3339).
    pub now: String,
    /// The window: a certificate ending within it is `expiring`.
    pub window_seconds: u64,
    /// The snapshot it was listed from.
    pub snapshot_fingerprint: String,
    /// The certificates.
    pub certificates: Vec<Entry>,
    /// The counts.
    pub summary: Summary,
}

/// The JSON Schema of the listing.
pub fn schema() -> String {
    crate::schema::versioned(schemars::schema_for!(Listing), "expiry", FORMAT_VERSION)
}

/// The certificates of `snap` at `now`, with `window` for [`State::Expiring`].
pub fn list(snap: &Snapshot, now: OffsetDateTime, window: std::time::Duration) -> Listing {
    let window_seconds = window.as_secs();
    let entry = |kind, node: Option<&str>, path: Option<&str>, f: &crate::pki::CertFacts| {
        let seconds_left =
            crate::clock::parse(&f.not_after).map_or(i64::MIN, |t| (t - now).whole_seconds());
        let state = if seconds_left <= 0 {
            State::Expired
        } else if (seconds_left as u64) <= window_seconds {
            State::Expiring
        } else {
            State::Ok
        };
        Entry {
            kind,
            node: node.map(str::to_string),
            path: path.map(str::to_string),
            subject: f.common_name.clone(),
            issuer: issuer_cn(&f.issuer),
            fingerprint: f.fingerprint.0.clone(),
            not_after: f.not_after.clone(),
            seconds_left,
            state,
            used_by: vec![],
            rotation: None,
        }
    };
    let mut out: Vec<Entry> = snap
        .cas
        .values()
        .map(|ca| Entry {
            used_by: ca.found_in.clone(),
            ..entry(Kind::Ca, None, None, &ca.cert)
        })
        .collect();
    for node in &snap.nodes {
        let readers = |path: &str| -> Vec<String> {
            let mut r: Vec<String> = node
                .components
                .iter()
                .filter(|(_, c)| c.inputs.iter().any(|i| i == path))
                .map(|(name, _)| name.clone())
                .collect();
            if node
                .kubelet
                .as_ref()
                .is_some_and(|k| k.inputs.iter().any(|i| i == path))
            {
                r.push("kubelet".into());
            }
            r
        };
        // What the kubelet renews itself.
        let rotated: Vec<&str> = node.kubelet.as_ref().map_or(vec![], |k| {
            let mut v = vec![];
            if k.rotate_certificates {
                v.push("/var/lib/kubelet/pki/kubelet-client-current.pem");
            }
            if let crate::kubelet::Serving::Rotated { pem } = &k.serving {
                v.push(pem.as_str());
            }
            v
        });
        for (path, fact) in &node.files {
            let leaves: Vec<(Kind, &crate::pki::CertFacts)> = match fact {
                FileFact::Certificates { certs, .. } => certs
                    .iter()
                    .filter_map(|c| c.leaf.as_ref())
                    .map(|f| (Kind::Leaf, f))
                    .collect(),
                FileFact::Kubeconfig(k) => k
                    .client
                    .as_ref()
                    .and_then(|c| c.leaf.as_ref())
                    .map(|f| (Kind::KubeconfigClient, f))
                    .into_iter()
                    .collect(),
                FileFact::PrivateKey(_) | FileFact::PublicKeys { .. } => vec![],
            };
            for (kind, f) in leaves {
                out.push(Entry {
                    used_by: readers(path),
                    rotation: rotated
                        .contains(&path.as_str())
                        .then(|| rotation(&f.not_before, &f.not_after, now))
                        .flatten(),
                    ..entry(kind, Some(&node.name), Some(path), f)
                });
            }
        }
    }
    out.sort_by(|a, b| {
        (a.seconds_left, &a.node, &a.path, a.kind).cmp(&(b.seconds_left, &b.node, &b.path, b.kind))
    });
    let summary = Summary {
        total: out.len(),
        expired: out.iter().filter(|e| e.state == State::Expired).count(),
        expiring: out.iter().filter(|e| e.state == State::Expiring).count(),
        overdue: out
            .iter()
            .filter(|e| {
                e.rotation
                    .as_ref()
                    .is_some_and(|r| r.stage == RotationStage::Overdue)
            })
            .count(),
    };
    Listing {
        format_version: FORMAT_VERSION,
        now: crate::clock::format(now),
        window_seconds,
        snapshot_fingerprint: snap.fingerprint.clone(),
        certificates: out,
        summary,
    }
}

/// The `CN=` of a distinguished name as x509-parser writes it (`O=…, CN=kubernetes`),
/// or the whole name when it has none.
fn issuer_cn(dn: &str) -> String {
    dn.split(", ")
        .find_map(|p| p.strip_prefix("CN="))
        .unwrap_or(dn)
        .to_string()
}

/// `90d`, `23h`, `-3d` (expired three days ago).
pub fn left(seconds: i64) -> String {
    let (sign, s) = if seconds < 0 {
        ("-", seconds.unsigned_abs())
    } else {
        ("", seconds as u64)
    };
    if s >= 86_400 {
        format!("{sign}{}d", s / 86_400)
    } else if s >= 3_600 {
        format!("{sign}{}h", s / 3_600)
    } else {
        format!("{sign}{}m", s / 60)
    }
}

impl Listing {
    /// A table, soonest end first, and a summary line.
    pub fn text(&self) -> String {
        let rows: Vec<[String; 6]> = self
            .certificates
            .iter()
            .map(|e| {
                let place = match (&e.node, &e.path) {
                    (Some(n), Some(p)) => format!("{n}:{p}"),
                    // A CA: its first place, and how many more.
                    _ => match e.used_by.as_slice() {
                        [] => "CA".into(),
                        [one] => one.clone(),
                        [first, rest @ ..] => format!("{first} (+{} more)", rest.len()),
                    },
                };
                [
                    match e.state {
                        State::Expired => "EXPIRED",
                        State::Expiring => "EXPIRING",
                        State::Ok => "ok",
                    }
                    .to_string(),
                    left(e.seconds_left),
                    e.not_after.replace('T', " ").replace('Z', ""),
                    e.subject.clone(),
                    e.issuer.clone(),
                    place,
                ]
            })
            .collect();
        let head = [
            "STATE",
            "LEFT",
            "EXPIRES (UTC)",
            "SUBJECT",
            "ISSUER",
            "WHERE",
        ];
        let mut width = head.map(str::len);
        for r in &rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    let _ = write!(l, "{c:<w$}  ", w = width[i]);
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&head.map(str::to_string));
        for r in &rows {
            line(r);
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\n{} certificates: {} expired, {} ending within {}, {} fine.",
            s.total,
            s.expired,
            s.expiring,
            left(self.window_seconds as i64),
            s.total - s.expired - s.expiring
        );
        for e in &self.certificates {
            if let (Some(r), Some(n), Some(p)) = (&e.rotation, &e.node, &e.path)
                && r.stage == RotationStage::Overdue
            {
                let _ = writeln!(
                    out,
                    "{n}:{p}: the kubelet should have renewed it between {} and {} (70–90% of its life) and has not: look for its CertificateSigningRequest (`kubectl get csr`: pending or denied?) and at the kubelet's log",
                    r.from, r.until
                );
            }
        }
        out
    }

    /// The listing as pretty JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the listing serialises") + "\n"
    }

    /// A Prometheus textfile (node_exporter's textfile collector): each certificate's
    /// `notAfter` as Unix time, labelled with where it is; alerting is
    /// `trustform_certificate_not_after_seconds - time() < 30 * 86400`.
    pub fn prometheus(&self) -> String {
        let mut out = String::from(
            "# HELP trustform_certificate_not_after_seconds When the certificate expires, in Unix time.\n\
             # TYPE trustform_certificate_not_after_seconds gauge\n",
        );
        for e in &self.certificates {
            let Some(t) = crate::clock::parse(&e.not_after) else {
                continue;
            };
            let mut labels = vec![
                ("kind", kind_name(e.kind).to_string()),
                ("subject", e.subject.clone()),
                ("issuer", e.issuer.clone()),
                ("fingerprint", e.fingerprint.clone()),
            ];
            if let (Some(n), Some(p)) = (&e.node, &e.path) {
                labels.push(("node", n.clone()));
                labels.push(("path", p.clone()));
            }
            let labels: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = writeln!(
                out,
                "trustform_certificate_not_after_seconds{{{}}} {}",
                labels.join(","),
                t.unix_timestamp()
            );
        }
        out
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Ca => "ca",
        Kind::Leaf => "leaf",
        Kind::KubeconfigClient => "kubeconfig-client",
    }
}

/// A label value as the exposition format wants it: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubelet_rotated_certificate_is_due_between_70_and_90_percent_of_its_life() {
        let at = |t: &str| crate::clock::parse(t).unwrap();
        let (b, a) = ("2026-01-01T00:00:00Z", "2026-01-11T00:00:00Z");
        let r = rotation(b, a, at("2026-01-05T00:00:00Z")).unwrap();
        assert_eq!(
            (r.from.as_str(), r.until.as_str(), r.stage),
            (
                "2026-01-08T00:00:00Z",
                "2026-01-10T00:00:00Z",
                RotationStage::Before
            )
        );
        assert_eq!(
            rotation(b, a, at("2026-01-09T00:00:00Z")).unwrap().stage,
            RotationStage::Due
        );
        assert_eq!(
            rotation(b, a, at("2026-01-10T12:00:00Z")).unwrap().stage,
            RotationStage::Overdue
        );
    }

    #[test]
    fn left_reads_as_days_hours_minutes() {
        assert_eq!(left(90 * 86_400 + 5), "90d");
        assert_eq!(left(5 * 3_600), "5h");
        assert_eq!(left(125), "2m");
        assert_eq!(left(-3 * 86_400), "-3d");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn the_issuer_is_named_by_its_common_name() {
        assert_eq!(issuer_cn("O=system:masters, CN=kubernetes"), "kubernetes");
        assert_eq!(issuer_cn("O=acme"), "O=acme");
    }
}
