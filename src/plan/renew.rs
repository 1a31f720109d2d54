//! Renewal before expiry: the leaves (certificate files, kubeconfig client
//! certificates) of every authority that does not rotate and that end inside their
//! window (trustform.yaml `renewBefore`, default 30 days, per leaf under `leaves`), to be
//! re-issued from the CA that issued them by the renewal procedure (`plans/renew.yaml`);
//! and what the operator should know of the certificates it does not renew: a CA inside
//! its window (renewal cannot outlive it: rotate it), a leaf no step renews (the
//! kubelet's own, which the kubelet rotates). Pure: the snapshot, the desired state and
//! the time in.

use super::expand::covers;
use crate::config::Authority;
use crate::diff::{Consumer, Desired, Field, State, consumers, lineage};
use crate::pki::{CertFacts, Fingerprint};
use crate::procedure::Procedure;
use crate::snapshot::{FileFact, NodeSnapshot, Snapshot};
use time::OffsetDateTime;

/// What a survey found.
#[derive(Debug, Default)]
pub struct Survey<'p> {
    /// The renewal procedure, when there is one.
    pub procedure: Option<&'p Procedure>,
    /// Each leaf to renew: its consumer, its state now, its state renewed.
    pub renew: Vec<(Consumer, State, State)>,
    /// What the operator should know.
    pub notes: Vec<String>,
}

/// The leaf at a consumer: the first certificate that is not a CA in its file, or the
/// kubeconfig's client certificate.
fn leaf<'s>(snap: &'s Snapshot, c: &Consumer) -> Option<&'s CertFacts> {
    let node = snap.node(c.node.as_deref()?)?;
    match (node.files.get(&c.path)?, &c.field) {
        (FileFact::Certificates { certs, .. }, Field::Leaf) => {
            certs.iter().find(|f| !f.ca)?.leaf.as_ref()
        }
        (FileFact::Kubeconfig(k), Field::KubeconfigClient) => k.client.as_ref()?.leaf.as_ref(),
        _ => None,
    }
}

/// RFC 3339 to the second.
fn rfc3339(t: OffsetDateTime) -> String {
    crate::clock::format(t.replace_nanosecond(0).unwrap_or(t))
}

/// A window as trustform.yaml would say it: `30d`, else humantime's `36h`.
fn days(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// The leaves to renew at `now`, and the notes.
pub fn survey<'p>(
    snap: &Snapshot,
    d: &Desired,
    procedures: &'p [Procedure],
    now: OffsetDateTime,
) -> Survey<'p> {
    let procedure = procedures.iter().find(|p| p.authority.is_none());
    let mut out = Survey {
        procedure,
        ..Survey::default()
    };
    for (auth, (current, want)) in &d.authorities {
        let Some(renewal) = d.renewals.get(auth) else {
            continue;
        };
        if renewal.before.is_zero() && renewal.leaves.is_empty() {
            continue;
        }
        // The CA that will sign, inside its window: no renewal outlives it.
        if let Some(ca) = snap.cas.get(&want.issuer)
            && let Some(end) = crate::clock::parse(&ca.cert.not_after)
            && end <= now + renewal.before
        {
            out.notes.push(format!(
                "the {auth} CA {} ends {} (inside renewBefore {}): a leaf it signs cannot outlive it; rotate it: `trustform rotate {}`",
                d.label(&want.issuer),
                ca.cert.not_after,
                days(renewal.before),
                auth.name()
            ));
        }
        if current != want {
            // A rotation re-issues every leaf of the authority.
            continue;
        }
        for (c, state) in consumers(snap, *auth, current, &lineage(current, want)) {
            let State::IssuedBy(issuer) = &state else {
                continue;
            };
            let Some(cert) = leaf(snap, &c) else {
                continue;
            };
            let window = renewal.window(&c.path);
            let deadline = now + window;
            let Some(end) = crate::clock::parse(&cert.not_after) else {
                continue;
            };
            if end > deadline {
                continue;
            }
            let renewed = State::Renewed {
                issuer: issuer.clone(),
                after: rfc3339(deadline),
            };
            if !renewable(snap, procedure, &c, &renewed) {
                out.notes
                    .push(not_renewed(*auth, &c, cert, window, issuer, d));
                continue;
            }
            // A renewed leaf lives as long as it did, at least a year: a window as long
            // would renew it at every plan.
            let lifetime = crate::clock::parse(&cert.not_before)
                .map_or(0, |start| (end - start).whole_days())
                .max(crate::pki::issue::RENEWED_DAYS);
            if window.as_secs() >= lifetime as u64 * 86_400 {
                out.notes.push(format!(
                    "{} of {auth} is not renewed: its window (renewBefore {}) is as long as a renewed leaf lives ({lifetime}d): it would be renewed at every plan; shorten renewBefore in trustform.yaml",
                    c.describe(),
                    days(window)
                ));
                continue;
            }
            out.renew.push((c, state, renewed));
        }
    }
    out
}

/// Whether a step of the renewal procedure re-issues the leaf.
fn renewable(snap: &Snapshot, p: Option<&Procedure>, c: &Consumer, want: &State) -> bool {
    let kubelet_ca = c
        .node
        .as_deref()
        .and_then(|n| snap.node(n))
        .and_then(NodeSnapshot::kubelet_client_ca);
    p.is_some_and(|p| p.steps.iter().any(|t| covers(t, c, want, kubelet_ca)))
}

fn not_renewed(
    auth: Authority,
    c: &Consumer,
    cert: &CertFacts,
    window: std::time::Duration,
    issuer: &Fingerprint,
    d: &Desired,
) -> String {
    let why = if c
        .path
        .starts_with(&format!("/{}/", crate::layout::KUBELET_PKI))
    {
        "the kubelet renews its own certificates (rotateCertificates: a CSR to the API server, seed 002 \"Certificate Rotation\"); check that it can (`trustform expiry`, the kubelet's log)".to_string()
    } else {
        "no step of plans/renew.yaml re-issues this file; renew it by hand, or rotate the CA (`trustform rotate`) to re-issue every leaf".to_string()
    };
    format!(
        "{} of {auth}, issued by CA {}, ends {} (inside renewBefore {}) and is not renewed: {why}",
        c.describe(),
        d.label(issuer),
        cert.not_after,
        days(window)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::tests::*;
    use crate::snapshot::CertEntry;
    use std::time::Duration;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> OffsetDateTime {
        crate::clock::parse("2027-06-01T00:00:00Z").unwrap()
    }

    /// Give the leaf at `node:path` an end `days` from [`now`].
    fn ends(snap: &mut Snapshot, node: &str, path: &str, days: i64) {
        let n = snap.nodes.iter_mut().find(|n| n.name == node).unwrap();
        let end = rfc3339(now() + time::Duration::days(days));
        let facts = |e: &CertEntry| CertFacts {
            fingerprint: e.fingerprint.clone(),
            subject: "CN=x".into(),
            common_name: "x".into(),
            organizations: vec![],
            issuer: "CN=ca".into(),
            is_ca: false,
            not_before: "2026-06-01T00:00:00Z".into(),
            not_after: end.clone(),
            sans: vec![],
            key_usage: vec![],
            ext_key_usage: vec![],
            public_key: e.fingerprint.clone(),
        };
        match n.files.get_mut(path).unwrap() {
            FileFact::Certificates { certs, .. } => certs[0].leaf = Some(facts(&certs[0])),
            FileFact::Kubeconfig(k) => {
                let c = k.client.as_mut().unwrap();
                c.leaf = Some(facts(c));
            }
            _ => panic!("{path}"),
        }
    }

    fn staying() -> Desired {
        let k = target(&k_old(), &[k_old()]);
        let mut d = desired(&[(Authority::Kubernetes, k.clone(), k)]);
        d.renewals.insert(
            Authority::Kubernetes,
            crate::config::Renewal {
                before: 30 * DAY,
                leaves: Default::default(),
            },
        );
        d
    }

    fn renewed(s: &Survey) -> Vec<String> {
        s.renew
            .iter()
            .map(|(c, _, _)| format!("{}:{}", c.node.as_deref().unwrap(), c.path))
            .collect()
    }

    #[test]
    fn exactly_the_leaves_inside_their_window_are_renewed_from_their_own_ca() {
        let procedures = crate::procedure::load_all().unwrap();
        let mut snap = cluster(2, 1);
        ends(&mut snap, "cp-1", "/etc/kubernetes/pki/apiserver.crt", 10);
        ends(&mut snap, "cp-2", "/etc/kubernetes/pki/apiserver.crt", 40);
        ends(&mut snap, "cp-2", "/etc/kubernetes/admin.conf", 29);
        ends(
            &mut snap,
            "cp-1",
            "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            -3,
        );
        let s = survey(&snap, &staying(), &procedures, now());
        assert_eq!(
            renewed(&s),
            [
                "cp-1:/etc/kubernetes/pki/apiserver-kubelet-client.crt",
                "cp-1:/etc/kubernetes/pki/apiserver.crt",
                "cp-2:/etc/kubernetes/admin.conf",
            ]
        );
        for (_, was, want) in &s.renew {
            assert_eq!(was, &State::IssuedBy(k_old()));
            assert_eq!(
                want,
                &State::Renewed {
                    issuer: k_old(),
                    after: "2027-07-01T00:00:00Z".into()
                }
            );
        }
        assert!(s.notes.is_empty(), "{:?}", s.notes);
        // A leaf's own window wins over its authority's.
        let mut d = staying();
        let r = d.renewals.get_mut(&Authority::Kubernetes).unwrap();
        r.leaves
            .insert("/etc/kubernetes/pki/apiserver.crt".into(), 5 * DAY);
        r.leaves
            .insert("/etc/kubernetes/admin.conf".into(), 60 * DAY);
        let s = survey(&snap, &d, &procedures, now());
        assert_eq!(
            renewed(&s),
            [
                "cp-1:/etc/kubernetes/pki/apiserver-kubelet-client.crt",
                "cp-2:/etc/kubernetes/admin.conf",
            ]
        );
    }

    #[test]
    fn a_rotating_authority_renews_nothing_and_what_cannot_be_renewed_is_said() {
        let procedures = crate::procedure::load_all().unwrap();
        let mut snap = cluster(1, 1);
        ends(&mut snap, "cp-1", "/etc/kubernetes/pki/apiserver.crt", 10);
        ends(
            &mut snap,
            "w-1",
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            3,
        );
        // The CA itself ends within the window.
        snap.cas.get_mut(&k_old()).unwrap().cert.not_after =
            rfc3339(now() + time::Duration::days(20));
        let s = survey(&snap, &staying(), &procedures, now());
        assert_eq!(renewed(&s), ["cp-1:/etc/kubernetes/pki/apiserver.crt"]);
        assert!(
            s.notes.iter().any(|n| n.contains("the kubernetes CA ca-1")
                && n.contains("`trustform rotate kubernetes`")),
            "{:?}",
            s.notes
        );
        assert!(
            s.notes.iter().any(|n| n
                .starts_with("w-1:/var/lib/kubelet/pki/kubelet-client-current.pem (certificate)")
                && n.contains("the kubelet renews its own certificates")),
            "{:?}",
            s.notes
        );
        // A window as long as a renewed leaf lives would renew it at every plan.
        let mut d = staying();
        d.renewals.get_mut(&Authority::Kubernetes).unwrap().before = 400 * DAY;
        let s = survey(&snap, &d, &procedures, now());
        assert!(!renewed(&s).contains(&"cp-1:/etc/kubernetes/pki/apiserver.crt".to_string()));
        assert!(
            s.notes
                .iter()
                .any(|n| n.starts_with("cp-1:/etc/kubernetes/pki/apiserver.crt")
                    && n.contains("renewBefore 400d) is as long as a renewed leaf lives (375d)")),
            "{:?}",
            s.notes
        );
        // A rotation re-issues every leaf: nothing to renew besides.
        let mut d = staying();
        d.authorities.insert(
            Authority::Kubernetes,
            (target(&k_old(), &[k_old()]), target(&k_new(), &[k_new()])),
        );
        assert!(survey(&snap, &d, &procedures, now()).renew.is_empty());
        // Without a renewal procedure, nothing is renewed and each leaf is named.
        let rotations: Vec<Procedure> = procedures
            .into_iter()
            .filter(|p| p.authority.is_some())
            .collect();
        let s = survey(&snap, &staying(), &rotations, now());
        assert!(s.renew.is_empty());
        assert!(
            s.notes
                .iter()
                .any(|n| n.contains("apiserver.crt") && n.contains("no step of plans/renew.yaml")),
            "{:?}",
            s.notes
        );
    }
}
