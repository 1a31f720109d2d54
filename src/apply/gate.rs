//! Gates between stages. Three kinds of check, all with rustls in-process:
//! - every CA bundle of the authority holds exactly the stage's trust set, and every leaf
//!   issued in the authority's lineage verifies against that set;
//! - every kubeconfig's client certificate is accepted by the API server's
//!   `--client-ca-file` bundle, and its CA data accepts the API server's serving cert;
//! - live: a real TLS handshake with the real endpoint of every trust edge, through the
//!   transport of the client's node, with the credentials the client holds on disk (see
//!   [`super::live`]; an API server without `--kubelet-certificate-authority` does not
//!   verify a kubelet: that handshake checks the kubelet's acceptance of its client
//!   certificate only, and counts as unverified). Nodes whose transport cannot reach
//!   ports are reported as not checked live.

use super::error::{TrustError, line};
use super::material::Material;
use super::tls::client_of;
use crate::config::Authority;
use crate::exec::{Node, files::read};
use crate::pki::kubeconfig::{Kubeconfig, unb64};
use crate::pki::tls::{provider, roots, server_name_of};
use crate::pki::{Fingerprint, ParsedCert, parse_certs};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::collections::BTreeMap;

/// A gate's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    /// Checks made (handshakes included).
    pub checks: usize,
    /// TLS handshakes made.
    pub handshakes: usize,
    /// Of those, handshakes whose client does not verify the server's certificate (an
    /// API server without `--kubelet-certificate-authority` → a kubelet): only the
    /// server's check of the client certificate counts.
    #[serde(skip_serializing_if = "is_zero")]
    pub unverified: usize,
    /// Logs read for TLS errors (see [`super::logscan`]).
    #[serde(skip_serializing_if = "is_zero")]
    pub logs: usize,
    /// One line per failure.
    pub failures: Vec<String>,
    /// Nodes whose transport cannot reach ports (a local directory other than `/`):
    /// their edges were not checked live.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_live: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Report {
    fn check(&mut self, what: impl FnOnce() -> String, r: Result<(), TrustError>) {
        self.checks += 1;
        if let Err(e) = r {
            self.failures.push(format!("{}: {}", what(), line(&e)));
        }
    }
}

/// Verify a leaf against a trust bundle as a client (clientAuth) or a server certificate;
/// `who` says who rejects it (`the bundle`).
pub fn verify_leaf(leaf: &ParsedCert, bundle_pem: &[u8], who: &str) -> Result<(), TrustError> {
    let roots = roots(bundle_pem)?;
    let end = CertificateDer::from(leaf.der.clone());
    let now = UnixTime::now();
    let eku = &leaf.facts.ext_key_usage;
    let rejected = |reason: String| TrustError::Rejected {
        who: who.to_string(),
        reason,
    };
    if eku.iter().any(|e| e == "clientAuth") {
        let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| rejected(e.to_string()))?;
        v.verify_client_cert(&end, &[], now)
            .map_err(|e| rejected(e.to_string()))?;
    }
    if eku.iter().any(|e| e == "serverAuth") {
        let v = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| rejected(e.to_string()))?;
        let name = server_name_of(leaf)?;
        v.verify_server_cert(&end, &[], &name, &[], now)
            .map_err(|e| rejected(e.to_string()))?;
    }
    Ok(())
}

/// How a gate judges the authority's CA bundle on each control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bundles {
    /// At a stage boundary: it holds exactly the stage's trust set.
    Exact,
    /// Inside a stage (apply's pre-flight on a resumed apply, or before the first step):
    /// it holds the stage's issuer; files move between two trust sets.
    Between,
}

/// Run the gate of one authority at one stage on `views` of the nodes (see
/// [`crate::exec::read_views`]: every file of every node is read below).
pub fn run(
    views: &BTreeMap<String, Node>,
    material: &Material,
    auth: Authority,
    issuer: &Fingerprint,
    trust: &[Fingerprint],
    retired: &[Fingerprint],
) -> Report {
    let mut r = on_disk(
        views,
        material,
        auth,
        issuer,
        trust,
        retired,
        Bundles::Exact,
    );
    live(views, &mut r);
    r
}

/// The live handshakes of a gate alone (see [`super::live`]): every trust edge, each
/// client with the credentials it holds on disk, through its node's transport. `views`
/// as for [`run`].
pub fn handshakes_only(views: &BTreeMap<String, Node>) -> Report {
    let mut r = Report::default();
    live(views, &mut r);
    r
}

fn live(views: &BTreeMap<String, Node>, r: &mut Report) {
    let l = super::live::check(views);
    r.checks += l.handshakes;
    r.handshakes += l.handshakes;
    r.unverified += l.unverified;
    r.failures.extend(l.failures);
    r.not_live = l.not_live;
}

/// The checks of a gate on the files on disk, without handshakes: bundles (judged as
/// `bundles` says), leaves against `trust`, kubeconfigs against the API server on disk.
/// `nodes` as for [`run`]: read views.
pub fn on_disk(
    nodes: &BTreeMap<String, Node>,
    material: &Material,
    auth: Authority,
    issuer: &Fingerprint,
    trust: &[Fingerprint],
    retired: &[Fingerprint],
    bundles_are: Bundles,
) -> Report {
    let mut r = Report::default();
    let lineage: Vec<&Fingerprint> = trust.iter().chain(retired).chain([issuer]).collect();
    if auth.keys_only() {
        service_account(nodes, material, issuer, trust, retired, bundles_are, &mut r);
        return r;
    }
    let bundle = match material.bundle(trust) {
        Ok(b) => b,
        Err(fp) => {
            r.check(
                || "trust set".into(),
                Err(TrustError::UnknownCa(fp.short())),
            );
            return r;
        }
    };
    let sorted = |mut v: Vec<Fingerprint>| {
        v.sort();
        v
    };
    let want_set = sorted(trust.to_vec());
    let cps: Vec<&Node> = nodes.values().filter(|n| is_cp(n)).collect();
    for node in nodes.values() {
        let file = |p: &str| read(node, p).ok().flatten();
        // Bundles.
        let mut bundles = vec![];
        if is_cp(node) {
            bundles.push(auth.ca_file().to_string());
        }
        if auth == Authority::Kubernetes
            && let Some(ca) = file("/var/lib/kubelet/config.yaml")
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| crate::kubelet::client_ca_file(&t))
            && !bundles.contains(&ca)
        {
            bundles.push(ca);
        }
        for (i, path) in bundles.iter().enumerate() {
            let have = file(path)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| parse_certs(&t, path).ok())
                .map(|v| sorted(v.into_iter().map(|c| c.facts.fingerprint).collect()))
                .unwrap_or_default();
            // The authority's CA file holds exactly the stage's trust; every other bundle
            // (the kubelet's clientCAFile on workers moves in its own documented step)
            // must at least no longer hold a retired CA.
            let authority_file = i == 0 && is_cp(node);
            let res = if authority_file && bundles_are == Bundles::Exact && have != want_set {
                Err(TrustError::Bundle {
                    have: shorts(&have),
                    want: shorts(trust),
                })
            } else if authority_file && bundles_are == Bundles::Between && !have.contains(issuer) {
                Err(TrustError::NoIssuer {
                    have: shorts(&have),
                    issuer: issuer.short(),
                })
            } else if let Some(old) = have.iter().find(|f| retired.contains(f)) {
                Err(TrustError::Retired {
                    what: "the bundle",
                    ca: old.short(),
                })
            } else {
                Ok(())
            };
            r.check(|| format!("{}:{path}", node.name), res);
        }
        // Leaves of this authority.
        for (path, text) in leaf_files(node) {
            let Ok(certs) = parse_certs(&text, &path) else {
                continue;
            };
            let Some(leaf) = certs.into_iter().find(|c| !c.facts.is_ca) else {
                continue;
            };
            let Some(from) = material.issuer_of(&leaf) else {
                continue;
            };
            if !lineage.contains(&from) {
                continue;
            }
            r.check(
                || format!("{}:{path} ({})", node.name, leaf.facts.common_name),
                verify_leaf(&leaf, bundle.as_bytes(), "the stage's trust set"),
            );
        }
        // Kubeconfigs against the API server on disk.
        if auth == Authority::Kubernetes {
            let Some(api) = (if is_cp(node) {
                Some(node)
            } else {
                cps.first().copied()
            }) else {
                continue;
            };
            for (path, kc) in kubeconfigs(node) {
                let held = kc
                    .current()
                    .0
                    .and_then(|c| c.cluster.certificate_authority_data.as_deref())
                    .and_then(unb64)
                    .and_then(|t| parse_certs(&t, &path).ok())
                    .unwrap_or_default();
                let res = match held.iter().find(|c| retired.contains(&c.facts.fingerprint)) {
                    Some(old) => Err(TrustError::Retired {
                        what: "certificate-authority-data",
                        ca: old.facts.fingerprint.short(),
                    }),
                    None => kubeconfig_against_disk(node, &path, &kc, api),
                };
                r.check(|| format!("{}:{path}", node.name), res);
            }
        }
    }
    r
}

/// The service-account key's gate: every control plane's sa.pub holds the stage's keys
/// (sa.key the signing one, at a stage boundary), and every pod's projected token on
/// every node verifies (signature, issuer, audience, expiry) against the stage's keys.
fn service_account(
    nodes: &BTreeMap<String, Node>,
    material: &Material,
    issuer: &Fingerprint,
    trust: &[Fingerprint],
    retired: &[Fingerprint],
    bundles_are: Bundles,
    r: &mut Report,
) {
    let auth = Authority::ServiceAccount;
    let keys_pem = match material.bundle(trust) {
        Ok(b) => b,
        Err(fp) => {
            r.check(
                || "trust set".into(),
                Err(TrustError::UnknownCa(fp.short())),
            );
            return;
        }
    };
    let sorted = |mut v: Vec<Fingerprint>| {
        v.sort();
        v
    };
    let want_set = sorted(trust.to_vec());
    let now = crate::pki::token::unix_now();
    for node in nodes.values() {
        let text = |p: &str| {
            read(node, p)
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
        };
        if is_cp(node) {
            let path = auth.ca_file();
            let have = sorted(
                text(path)
                    .map(|t| {
                        crate::pki::token::public_keys(&t)
                            .into_iter()
                            .filter_map(|(kid, _)| crate::pki::token::key_of_kid(&kid))
                            .collect()
                    })
                    .unwrap_or_default(),
            );
            let res = if bundles_are == Bundles::Exact && have != want_set {
                Err(TrustError::Bundle {
                    have: shorts(&have),
                    want: shorts(trust),
                })
            } else if bundles_are == Bundles::Between && !have.contains(issuer) {
                Err(TrustError::NoIssuer {
                    have: shorts(&have),
                    issuer: issuer.short(),
                })
            } else if let Some(old) = have.iter().find(|f| retired.contains(f)) {
                Err(TrustError::Retired {
                    what: "sa.pub",
                    ca: old.short(),
                })
            } else {
                Ok(())
            };
            r.check(|| format!("{}:{path}", node.name), res);
            if bundles_are == Bundles::Exact {
                let path = auth.key_file();
                let signing = text(path)
                    .and_then(|t| super::material::key_block(&t, path))
                    .and_then(|k| crate::pki::public_key_fingerprint(&k, path).ok());
                let res = if signing.as_ref() == Some(issuer) {
                    Ok(())
                } else {
                    Err(TrustError::Rejected {
                        who: "the stage".into(),
                        reason: format!(
                            "it signs with key {}, not {}",
                            signing.as_ref().map_or("(none)".into(), Fingerprint::short),
                            issuer.short()
                        ),
                    })
                };
                r.check(|| format!("{}:{path}", node.name), res);
            }
        }
        let Ok(tokens) = crate::observe::tokens::read_on(&node.name, node.transport.as_ref())
        else {
            r.check(
                || format!("{}:{}", node.name, crate::observe::tokens::PODS),
                Err(TrustError::Unreadable {
                    at: format!("{}:{}", node.name, crate::observe::tokens::PODS),
                }),
            );
            continue;
        };
        for t in tokens {
            let res = match text(&t.path) {
                None => Err(TrustError::Unreadable {
                    at: format!("{}:{}", node.name, t.path),
                }),
                Some(token) => crate::pki::token::verify_signature(token.trim(), &keys_pem, now)
                    .map_err(|reason| TrustError::Pod {
                        pod: t.pod.clone(),
                        reason: format!("its service-account token is rejected: {reason}"),
                    }),
            };
            r.check(|| format!("{}: token of pod {}", node.name, t.pod), res);
        }
    }
}

fn shorts(v: &[Fingerprint]) -> String {
    v.iter().map(|f| f.short()).collect::<Vec<_>>().join(", ")
}

fn is_cp(n: &Node) -> bool {
    n.is_file("/etc/kubernetes/manifests/kube-apiserver.yaml")
}

fn leaf_files(node: &Node) -> Vec<(String, String)> {
    let mut out = vec![];
    for dir in [
        "/etc/kubernetes/pki",
        "/etc/kubernetes/pki/etcd",
        "/var/lib/kubelet/pki",
    ] {
        let names = node.list(dir);
        for n in names.into_iter().filter(|n| {
            (n.ends_with(".crt") || n.ends_with(".pem"))
                && !crate::layout::kubelet_history(&format!("{dir}/{n}"))
        }) {
            let path = format!("{dir}/{n}");
            if let Some(t) = read(node, &path)
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
            {
                out.push((path, t));
            }
        }
    }
    out
}

fn kubeconfigs(node: &Node) -> Vec<(String, Kubeconfig)> {
    node.list("/etc/kubernetes")
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .map(|n| format!("/etc/kubernetes/{n}"))
        .chain(node.kubeconfigs.iter().cloned())
        .filter_map(|path| {
            let text = String::from_utf8(read(node, &path).ok()??).ok()?;
            Some((path, serde_saphyr::from_str(&text).ok()?))
        })
        .collect()
}

fn kubeconfig_against_disk(
    node: &Node,
    path: &str,
    kc: &Kubeconfig,
    api: &Node,
) -> Result<(), TrustError> {
    let file = |p: &str| read(node, p).ok().flatten();
    let c = client_of(kc, &format!("{}:{path}", node.name), &file)?;
    let (ca, id) = (c.ca, c.identity);
    let api_file = |p: &str| read(api, p).ok().flatten();
    let flags = api_file("/etc/kubernetes/manifests/kube-apiserver.yaml")
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| crate::manifest::parse(&t).ok())
        .map(|m| m.flags)
        .unwrap_or_default();
    let not_configured = |what: &str| TrustError::NotConfigured {
        component: format!("kube-apiserver on {}", api.name),
        what: what.to_string(),
    };
    let serving = flags
        .get("tls-cert-file")
        .and_then(|p| api_file(p))
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| parse_certs(&t, "serving").ok())
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| not_configured("readable --tls-cert-file"))?;
    verify_leaf(&serving, &ca, "its CA data rejects the API server")?;
    if let Some(id) = id {
        let client_ca = flags
            .get("client-ca-file")
            .and_then(|p| api_file(p))
            .ok_or_else(|| not_configured("readable --client-ca-file"))?;
        let leaf = parse_certs(&pem_of(&id.chain[0]), "client")?.remove(0);
        verify_leaf(
            &leaf,
            &client_ca,
            "the API server's --client-ca-file rejects its client certificate",
        )?;
    }
    Ok(())
}

fn pem_of(der: &CertificateDer) -> String {
    crate::pki::cert::pem_block("CERTIFICATE", der.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue::{generate_key, issue_leaf, new_ca};
    use crate::pki::{KeyAlgorithm, LeafSpec};

    #[test]
    fn a_leaf_verifies_only_against_its_issuer() {
        let alg = KeyAlgorithm::EcdsaP256;
        let ca = new_ca("a", alg, 10).unwrap();
        let other = new_ca("b", alg, 10).unwrap();
        let key = generate_key(alg).unwrap();
        for spec in [
            LeafSpec::client("system:node:w-1", &["system:nodes"]),
            LeafSpec::server("kube-apiserver", vec!["IP:127.0.0.1".into()]),
        ] {
            let pem = issue_leaf(&spec, &key, &ca).unwrap();
            let leaf = parse_certs(&pem, "leaf").unwrap().remove(0);
            assert!(verify_leaf(&leaf, ca.cert_pem.as_bytes(), "a").is_ok());
            assert!(verify_leaf(&leaf, other.cert_pem.as_bytes(), "b").is_err());
            let both = format!("{}{}", other.cert_pem, ca.cert_pem);
            assert!(
                verify_leaf(&leaf, both.as_bytes(), "both").is_ok(),
                "a bundle"
            );
        }
    }
}
