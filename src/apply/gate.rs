//! Gates between stages. Three kinds of check, all with rustls in-process:
//! - every CA bundle of the authority holds exactly the stage's trust set, and every leaf
//!   issued in the authority's lineage verifies against that set;
//! - every kubeconfig's client certificate is accepted by the API server's
//!   `--client-ca-file` bundle, and its CA data accepts the API server's serving cert;
//! - on sandbox nodes, a real TLS handshake over loopback TCP for every trust edge, with
//!   each side holding what its process read at its last restart (an API server without
//!   `--kubelet-certificate-authority` does not verify a kubelet: that handshake checks
//!   the kubelet's acceptance of its client certificate only, and counts as unverified).

use super::material::Material;
use super::tls::{Proc, client_config, client_of};
use crate::config::Authority;
use crate::exec::{Node, files::read};
use crate::pki::kubeconfig::{Kubeconfig, unb64};
use crate::pki::tls::{Identity, provider, roots, server_name_of};
use crate::pki::{Fingerprint, ParsedCert, parse_certs};
use crate::plan::edges::UNVERIFIED_KUBELET;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

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
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Report {
    fn check(&mut self, what: impl FnOnce() -> String, r: Result<(), String>) {
        self.checks += 1;
        if let Err(e) = r {
            self.failures.push(format!("{}: {e}", what()));
        }
    }
}

/// Verify a leaf against a trust bundle as a client (clientAuth) or a server certificate.
pub fn verify_leaf(leaf: &ParsedCert, bundle_pem: &[u8]) -> Result<(), String> {
    let roots = roots(bundle_pem)?;
    let end = CertificateDer::from(leaf.der.clone());
    let now = UnixTime::now();
    let eku = &leaf.facts.ext_key_usage;
    if eku.iter().any(|e| e == "clientAuth") {
        let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| e.to_string())?;
        v.verify_client_cert(&end, &[], now)
            .map_err(|e| e.to_string())?;
    }
    if eku.iter().any(|e| e == "serverAuth") {
        let v = WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| e.to_string())?;
        let name = server_name_of(leaf)?;
        v.verify_server_cert(&end, &[], &name, &[], now)
            .map_err(|e| e.to_string())?;
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

/// Run the gate of one authority at one stage.
pub fn run(
    nodes: &BTreeMap<String, Node>,
    material: &Material,
    auth: Authority,
    issuer: &Fingerprint,
    trust: &[Fingerprint],
    retired: &[Fingerprint],
) -> Report {
    let mut r = on_disk(
        nodes,
        material,
        auth,
        issuer,
        trust,
        retired,
        Bundles::Exact,
    );
    // Handshakes are made on sandbox nodes only: ask no other node what it is.
    let cps: Vec<&Node> = nodes.values().filter(|n| n.sandbox && is_cp(n)).collect();
    handshakes(nodes, &cps, &mut r);
    r
}

/// The handshakes of a gate alone (sandbox nodes; none elsewhere): every trust edge, each
/// side holding what its process read at its last start.
pub fn handshakes_only(nodes: &BTreeMap<String, Node>) -> Report {
    let mut r = Report::default();
    let cps: Vec<&Node> = nodes.values().filter(|n| is_cp(n)).collect();
    handshakes(nodes, &cps, &mut r);
    r
}

/// The checks of a gate on the files on disk, without handshakes: bundles (judged as
/// `bundles` says), leaves against `trust`, kubeconfigs against the API server on disk.
pub fn on_disk(
    nodes: &BTreeMap<String, Node>,
    material: &Material,
    auth: Authority,
    issuer: &Fingerprint,
    trust: &[Fingerprint],
    retired: &[Fingerprint],
    bundles_are: Bundles,
) -> Report {
    // Every file of every node is read below: read each node's trees in one go.
    let views = crate::exec::read_views(nodes);
    let nodes = &views;
    let mut r = Report::default();
    let lineage: Vec<&Fingerprint> = trust.iter().chain(retired).chain([issuer]).collect();
    let bundle = match material.bundle(trust) {
        Ok(b) => b,
        Err(fp) => {
            r.check(
                || "trust set".into(),
                Err(format!("CA {} is unknown", fp.short())),
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
                .and_then(|t| crate::sandbox::runtime::kubelet_client_ca_file(&t))
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
                Err(format!(
                    "holds [{}], the stage needs [{}]",
                    shorts(&have),
                    shorts(trust)
                ))
            } else if authority_file && bundles_are == Bundles::Between && !have.contains(issuer) {
                Err(format!(
                    "holds [{}], without the issuing CA {}",
                    shorts(&have),
                    issuer.short()
                ))
            } else if let Some(old) = have.iter().find(|f| retired.contains(f)) {
                Err(format!("still holds retired CA {}", old.short()))
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
                verify_leaf(&leaf, bundle.as_bytes()),
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
                    Some(old) => Err(format!(
                        "certificate-authority-data still holds retired CA {}",
                        old.facts.fingerprint.short()
                    )),
                    None => kubeconfig_against_disk(node, &kc, api),
                };
                r.check(|| format!("{}:{path}", node.name), res);
            }
        }
    }
    r
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

fn kubeconfig_against_disk(node: &Node, kc: &Kubeconfig, api: &Node) -> Result<(), String> {
    let file = |p: &str| read(node, p).ok().flatten();
    let c = client_of(kc, &file)?;
    let (ca, id) = (c.ca, c.identity);
    let api_file = |p: &str| read(api, p).ok().flatten();
    let flags = api_file("/etc/kubernetes/manifests/kube-apiserver.yaml")
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| crate::manifest::parse(&t).ok())
        .map(|m| m.flags)
        .unwrap_or_default();
    let serving = flags
        .get("tls-cert-file")
        .and_then(|p| api_file(p))
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| parse_certs(&t, "serving").ok())
        .and_then(|v| v.into_iter().next())
        .ok_or("the API server has no serving certificate")?;
    verify_leaf(&serving, &ca).map_err(|e| format!("its CA data rejects the API server: {e}"))?;
    if let Some(id) = id {
        let client_ca = flags
            .get("client-ca-file")
            .and_then(|p| api_file(p))
            .ok_or("the API server has no --client-ca-file")?;
        let leaf = parse_certs(&pem_of(&id.chain[0]), "client")
            .map_err(|e| e.to_string())?
            .remove(0);
        verify_leaf(&leaf, &client_ca).map_err(|e| {
            format!("the API server's --client-ca-file rejects its client certificate: {e}")
        })?;
    }
    Ok(())
}

fn pem_of(der: &CertificateDer) -> String {
    crate::pki::cert::pem_block("CERTIFICATE", der.as_ref())
}

struct Edge {
    name: String,
    server: Result<(Identity, Option<Vec<u8>>), String>,
    /// The client's roots (`None`: it does not verify the server) and identity.
    client: Result<(Option<Vec<u8>>, Option<Identity>), String>,
    server_name: String,
}

fn handshakes(nodes: &BTreeMap<String, Node>, cps: &[&Node], r: &mut Report) {
    let mut edges: Vec<Edge> = vec![];
    let sandbox_cps: Vec<&Node> = cps.iter().copied().filter(|n| n.sandbox).collect();
    let Some(first) = sandbox_cps.first().copied() else {
        return;
    };
    for node in nodes.values().filter(|n| n.sandbox) {
        let api_node = if is_cp(node) { node } else { first };
        let Some(api) = Proc::of(api_node, "kube-apiserver") else {
            continue;
        };
        let api_server = || -> Result<(Identity, Option<Vec<u8>>), String> {
            Ok((
                api.identity("tls-cert-file", "tls-private-key-file")?,
                Some(
                    api.flag_file("client-ca-file")
                        .ok_or("no --client-ca-file")?,
                ),
            ))
        };
        // Kubeconfig clients → the API server.
        let mut clients: Vec<(String, Option<Proc>)> = vec![(
            "/etc/kubernetes/kubelet.conf".into(),
            Proc::of(node, "kubelet"),
        )];
        if is_cp(node) {
            for (conf, comp) in [
                ("admin.conf", None),
                ("super-admin.conf", None),
                ("controller-manager.conf", Some("kube-controller-manager")),
                ("scheduler.conf", Some("kube-scheduler")),
            ] {
                let path = format!("/etc/kubernetes/{conf}");
                if node.is_file(&path) {
                    clients.push((path, comp.and_then(|c| Proc::of(node, c))));
                }
            }
        }
        // Copies of admin.conf: kubectl reads them at every use.
        for path in &node.kubeconfigs {
            if node.is_file(path) {
                clients.push((path.clone(), None));
            }
        }
        for (path, proc_) in clients {
            let file = |p: &str| match &proc_ {
                Some(pr) => pr.file(p),
                None => read(node, p).ok().flatten(),
            };
            let Some(text) = file(&path).and_then(|b| String::from_utf8(b).ok()) else {
                continue;
            };
            let Ok(kc) = serde_saphyr::from_str::<Kubeconfig>(&text) else {
                continue;
            };
            let client = client_of(&kc, &file);
            let server_name = client.as_ref().map(|c| c.host.clone()).unwrap_or_default();
            edges.push(Edge {
                name: format!("{}:{path} → kube-apiserver on {}", node.name, api_node.name),
                server: api_server(),
                client: client.map(|c| (Some(c.ca), c.identity)),
                server_name,
            });
        }
        // The API server → this node's kubelet. Without --kubelet-certificate-authority
        // (kubeadm's default) the API server does not verify the kubelet's serving
        // certificate: the handshake still proves the kubelet accepts its client
        // certificate, and the edge is counted unverified.
        if let Some(kubelet) = Proc::of(node, "kubelet") {
            let server = (|| {
                Ok((
                    kubelet.kubelet_serving()?,
                    Some(kubelet.kubelet_client_ca()?),
                ))
            })();
            let verifies = api.flags.contains_key("kubelet-certificate-authority");
            let client = (|| {
                let roots = if verifies {
                    Some(
                        api.flag_file("kubelet-certificate-authority")
                            .ok_or("no --kubelet-certificate-authority file")?,
                    )
                } else {
                    None
                };
                Ok((
                    roots,
                    Some(api.identity("kubelet-client-certificate", "kubelet-client-key")?),
                ))
            })();
            let name = format!(
                "kube-apiserver on {} → kubelet on {}",
                api_node.name, node.name
            );
            edges.push(Edge {
                name: if verifies {
                    name
                } else {
                    format!("{name} (unverified: {UNVERIFIED_KUBELET})")
                },
                server,
                client,
                server_name: node.name.clone(),
            });
        }
        if !is_cp(node) {
            continue;
        }
        // The API server → an aggregated API server trusting requestheader-client-ca-file
        // (extension-apiserver-authentication), and → etcd.
        let aggregated = (|| {
            let ca = crate::pki::issue::new_ca(
                "aggregated-apiserver",
                crate::pki::KeyAlgorithm::EcdsaP256,
                1,
            )
            .map_err(|e| e.to_string())?;
            let key = crate::pki::issue::generate_key(crate::pki::KeyAlgorithm::EcdsaP256)
                .map_err(|e| e.to_string())?;
            let cert = crate::pki::issue::issue_leaf(
                &crate::pki::LeafSpec::server("aggregated", vec!["DNS:aggregated".into()]),
                &key,
                &ca,
            )
            .map_err(|e| e.to_string())?;
            let id = Identity::from_pem(cert.as_bytes(), key.serialize_pem().as_bytes())?;
            let requestheader = api
                .flag_file("requestheader-client-ca-file")
                .ok_or("no --requestheader-client-ca-file")?;
            let client = api.identity("proxy-client-cert-file", "proxy-client-key-file")?;
            Ok::<_, String>((
                (id, Some(requestheader)),
                (Some(ca.cert_pem.into_bytes()), Some(client)),
            ))
        })();
        let (server, client) = match aggregated {
            Ok((s, c)) => (Ok(s), Ok(c)),
            Err(e) => (Err(e.clone()), Err(e)),
        };
        edges.push(Edge {
            name: format!(
                "kube-apiserver on {} → aggregated API server (front-proxy)",
                node.name
            ),
            server,
            client,
            server_name: "aggregated".into(),
        });
        if let Some(etcd) = Proc::of(node, "etcd") {
            edges.push(Edge {
                name: format!("kube-apiserver on {} → etcd on {}", node.name, node.name),
                server: (|| {
                    Ok((
                        etcd.identity("cert-file", "key-file")?,
                        Some(
                            etcd.flag_file("trusted-ca-file")
                                .ok_or("no --trusted-ca-file")?,
                        ),
                    ))
                })(),
                client: (|| {
                    Ok((
                        Some(api.flag_file("etcd-cafile").ok_or("no --etcd-cafile")?),
                        Some(api.identity("etcd-certfile", "etcd-keyfile")?),
                    ))
                })(),
                server_name: "127.0.0.1".into(),
            });
        }
    }
    // Handshakes in parallel, a few at a time.
    let results: Vec<(String, Result<(), String>)> = std::thread::scope(|s| {
        let chunks: Vec<&[Edge]> = edges.chunks(edges.len().div_ceil(8).max(1)).collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|e| (e.name.clone(), handshake(e)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("handshake thread"))
            .collect()
    });
    r.unverified += edges
        .iter()
        .filter(|e| matches!(e.client, Ok((None, _))))
        .count();
    for (name, res) in results {
        r.handshakes += 1;
        r.check(|| format!("handshake {name}"), res);
    }
}

/// A real TLS handshake over loopback TCP; the server answers "ok" once it accepted the
/// client, so both directions of trust are proven.
fn handshake(e: &Edge) -> Result<(), String> {
    let (server_id, client_roots) = e.server.as_ref().map_err(|x| format!("server side: {x}"))?;
    let (server_roots, client_id) = e.client.as_ref().map_err(|x| format!("client side: {x}"))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|x| x.to_string())?;
    let builder = match client_roots {
        Some(pem) => builder.with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots(pem)?, provider())
                .build()
                .map_err(|x| x.to_string())?,
        ),
        None => builder.with_no_client_auth(),
    };
    let server_cfg = Arc::new(
        builder
            .with_single_cert(server_id.chain.clone(), server_id.key.clone_key())
            .map_err(|x| format!("server identity: {x}"))?,
    );
    let client_cfg = Arc::new(client_config(server_roots.as_deref(), client_id.clone())?);
    let name = ServerName::try_from(e.server_name.clone()).map_err(|x| x.to_string())?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|x| x.to_string())?;
    let addr = listener.local_addr().map_err(|x| x.to_string())?;
    let timeout = Some(Duration::from_secs(5));
    std::thread::scope(|s| {
        let server = s.spawn(move || -> Result<(), String> {
            let (mut sock, _) = listener.accept().map_err(|x| x.to_string())?;
            sock.set_read_timeout(timeout).map_err(|x| x.to_string())?;
            let mut conn = rustls::ServerConnection::new(server_cfg).map_err(|x| x.to_string())?;
            while conn.is_handshaking() {
                conn.complete_io(&mut sock)
                    .map_err(|x| format!("the server rejected the client: {x}"))?;
            }
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            tls.write_all(b"ok").map_err(|x| x.to_string())?;
            tls.flush().map_err(|x| x.to_string())?;
            Ok(())
        });
        let client = (|| -> Result<(), String> {
            let mut sock = std::net::TcpStream::connect(addr).map_err(|x| x.to_string())?;
            sock.set_read_timeout(timeout).map_err(|x| x.to_string())?;
            let mut conn =
                rustls::ClientConnection::new(client_cfg, name).map_err(|x| x.to_string())?;
            let mut tls = rustls::Stream::new(&mut conn, &mut sock);
            let mut buf = [0u8; 2];
            tls.read_exact(&mut buf)
                .map_err(|x| format!("the client rejected the server, or was rejected: {x}"))?;
            (buf == *b"ok").then_some(()).ok_or("no answer".into())
        })();
        let server = server
            .join()
            .unwrap_or(Err("server thread panicked".into()));
        match (client, server) {
            (Ok(()), Ok(())) => Ok(()),
            (_, Err(s)) => Err(s),
            (Err(c), Ok(())) => Err(c),
        }
    })
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
            assert!(verify_leaf(&leaf, ca.cert_pem.as_bytes()).is_ok());
            assert!(verify_leaf(&leaf, other.cert_pem.as_bytes()).is_err());
            let both = format!("{}{}", other.cert_pem, ca.cert_pem);
            assert!(verify_leaf(&leaf, both.as_bytes()).is_ok(), "a bundle");
        }
    }
}
