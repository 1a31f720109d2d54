//! kubeadm's own defaults, faithfully: `kubelet-client-current.pem` is an absolute symlink
//! to a dated file, which trustform rotates as the kubelet does (a new dated file, then
//! the link swapped); after the cluster CA changes, `kubeadm join` needs a new
//! `--discovery-token-ca-cert-hash`, which apply prints (checked against openssl); and
//! the kubelet serves a self-signed `kubelet.crt` which the API server, without
//! `--kubelet-certificate-authority`, does not verify: those edges are unverified, not
//! broken, and trustform leaves the certificate alone.

use crate::common;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use trustform::apply::probe::{self, EdgeKind};

const OLD: &str = "kubelet-client-2025-01-01-00-00-00.pem";

/// Make every node's kubelet-client-current.pem what kubeadm makes it: an absolute
/// symlink to a dated file.
fn kubeadm_links(w: &common::Workdir, nodes: &[&str]) {
    for n in nodes {
        let pki = w.node(n).join("var/lib/kubelet/pki");
        std::fs::rename(pki.join("kubelet-client-current.pem"), pki.join(OLD)).unwrap();
        std::os::unix::fs::symlink(
            format!("/var/lib/kubelet/pki/{OLD}"),
            pki.join("kubelet-client-current.pem"),
        )
        .unwrap();
    }
}

/// `sha256:` of a CA's SubjectPublicKeyInfo, as kubeadm's documentation computes it.
fn openssl_join_hash(ca: &Path) -> String {
    let sh = format!(
        "openssl x509 -pubkey -noout -in '{}' | openssl pkey -pubin -outform der | openssl dgst -sha256 -hex",
        ca.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &sh])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.trim().rsplit(' ').next().unwrap())
}

#[test]
fn the_kubelet_link_stays_a_link_to_a_new_dated_file_and_the_join_hash_is_printed() {
    let w = common::sandbox(1, 1, false);
    kubeadm_links(&w, &["cp-1", "w-1"]);
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let out = w.ok(&["apply", "--auto-approve"]);
    let new_ca = std::fs::read_dir(w.path().join("cas"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("kubernetes-"))
        .unwrap();
    let hash = openssl_join_hash(&new_ca);
    assert!(
        out.contains(&format!("--discovery-token-ca-cert-hash {hash}")),
        "the join hash openssl computes ({hash}):\n{out}"
    );
    for n in ["cp-1", "w-1"] {
        let pki = w.node(n).join("var/lib/kubelet/pki");
        let link = pki.join("kubelet-client-current.pem");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{n}: still a symlink"
        );
        let to = std::fs::read_link(&link).unwrap();
        let to = to.to_string_lossy();
        assert!(
            to.starts_with("/var/lib/kubelet/pki/kubelet-client-") && !to.ends_with(OLD),
            "{n}: an absolute link to a new dated file: {to}"
        );
        let dated = w.node(n).join(to.trim_start_matches('/'));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&dated).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{n}: the new file is a key: 0600");
        assert!(pki.join(OLD).is_file(), "{n}: the old dated file is kept");
        let ok = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&new_ca)
            .arg(&dated)
            .output()
            .unwrap()
            .status
            .success();
        assert!(
            ok,
            "{n}: the new client certificate verifies against the new CA"
        );
    }
    assert!(w.ok(&["plan"]).contains("No changes."));
    // Rollback points the links back.
    let status: serde_json::Value =
        serde_json::from_str(&w.ok(&["status", "--format", "json"])).unwrap();
    w.ok(&["rollback", status["plan_id"].as_str().unwrap()]);
    for n in ["cp-1", "w-1"] {
        let link = w
            .node(n)
            .join("var/lib/kubelet/pki/kubelet-client-current.pem");
        assert_eq!(
            std::fs::read_link(&link).unwrap().to_string_lossy(),
            format!("/var/lib/kubelet/pki/{OLD}"),
            "{n}: rolled back to the old file"
        );
    }
}

/// `openssl x509 -noout -issuer -subject` of a file's first certificate: (issuer CN,
/// subject CN).
fn openssl_issuer_subject(cert: &Path) -> (String, String) {
    let out = std::process::Command::new("openssl")
        .args([
            "x509", "-noout", "-issuer", "-subject", "-nameopt", "RFC2253", "-in",
        ])
        .arg(cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.trim().strip_prefix("CN="))
            .unwrap_or_else(|| panic!("{name} in {text}"))
            .to_string()
    };
    (field("issuer"), field("subject"))
}

/// Every kubelet's `kubelet.crt` and `kubelet.key`, by path, with their bytes.
fn self_signed_files(w: &common::Workdir, nodes: &[&str]) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for n in nodes {
        for f in ["kubelet.crt", "kubelet.key"] {
            let p = w.node(n).join("var/lib/kubelet/pki").join(f);
            out.insert(p.clone(), std::fs::read(&p).unwrap());
        }
    }
    out
}

/// kubeadm's default: each kubelet serves the `kubelet.crt` it made itself and the API
/// server has no `--kubelet-certificate-authority`. The API servers → kubelets edges are
/// unverified (not broken), a full rotation keeps every edge live under the prober, and
/// `kubelet.crt`/`kubelet.key` come out byte-identical, with no flag added anywhere.
#[test]
fn a_default_kubeadm_node_serves_a_self_signed_kubelet_certificate_that_stays_untouched() {
    let w = common::seeded(&[]);
    let nodes = ["cp-1", "cp-2", "w-1"];
    // The external witness: the certificate is the kubelet's own, not the cluster CA's.
    for n in nodes {
        let pki = w.node(n).join("var/lib/kubelet/pki");
        let (issuer, subject) = openssl_issuer_subject(&pki.join("kubelet.crt"));
        let stamp = |cn: &str, prefix: &str| {
            cn.strip_prefix(prefix)
                .is_some_and(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
        };
        assert!(
            stamp(&subject, &format!("{n}@")),
            "{n}: subject CN={subject}"
        );
        assert!(
            stamp(&issuer, &format!("{n}-ca@")),
            "{n}: issuer CN={issuer}"
        );
        let ca = w.node(n).join("etc/kubernetes/pki/ca.crt");
        assert!(
            common::openssl_verify(&ca, &pki.join("kubelet.crt")).is_err(),
            "{n}: the cluster CA did not issue kubelet.crt"
        );
    }
    let before = self_signed_files(&w, &nodes);
    let _up = common::Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let plan = w.ok(&["plan", "-out", "plan.json"]);
    assert!(
        !plan.contains("broken before the plan starts") && !plan.contains("no serving certificate"),
        "no pre-existing break:\n{plan}"
    );
    assert!(
        plan.contains("; 6 edges unverified (the API server does not verify kubelet serving certificates: no --kubelet-certificate-authority, as kubeadm leaves it)."),
        "{plan}"
    );
    assert!(
        !plan.contains("kubelet.crt") && !plan.contains("kubelet.key"),
        "the plan leaves the kubelet's own certificate alone:\n{plan}"
    );
    // rehearse lists them, in text and JSON.
    let text = w.ok(&["rehearse", "plan.json"]);
    let json: Value =
        serde_json::from_str(&w.ok(&["rehearse", "plan.json", "--format", "json"])).unwrap();
    assert_eq!(json["broken_before"].as_array().unwrap().len(), 0, "{json}");
    assert_eq!(json["breaks"].as_array().unwrap().len(), 0, "{json}");
    let unverified: Vec<&str> = json["unverified"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["edge"].as_str().unwrap())
        .collect();
    let mut want = vec![];
    for api in ["cp-1", "cp-2"] {
        for k in nodes {
            want.push(format!("kube-apiserver on {api} → kubelet on {k}"));
        }
    }
    assert_eq!(unverified, want);
    for e in &want {
        assert!(
            text.contains(&format!("\n    {e}\n")),
            "{e} listed:\n{text}"
        );
    }
    // The rotation, under the prober: not one failed handshake, the kubelet edges
    // handshaken (the kubelets accepting the API servers' client certificates) and
    // labelled unverified.
    let out = w.ok(&["apply", "--auto-approve", "--probe", "--format", "json"]);
    let summary: Value = common::probe_summary(&out);
    assert_eq!(summary["ok"], true, "{summary}");
    let report: probe::Report = serde_json::from_value(summary["probe"].clone()).unwrap();
    assert_eq!(report.failures, 0, "{:?}", report.lines());
    assert_eq!(report.unverified, 6, "{:?}", report.lines());
    let kubelet_edges: Vec<&probe::EdgeReport> = report
        .edges
        .iter()
        .filter(|e| e.kind == Some(EdgeKind::Kubelet))
        .collect();
    assert_eq!(kubelet_edges.len(), 6);
    for e in kubelet_edges {
        assert!(e.attempts > 0 && e.failures == 0, "{e:?}");
        assert!(
            e.unverified
                .as_deref()
                .is_some_and(|u| u.contains("no --kubelet-certificate-authority")),
            "{e:?}"
        );
    }
    // The kubelet's own certificate and key: byte-identical, never backed up.
    assert_eq!(self_signed_files(&w, &nodes), before);
    assert!(
        common::files_under(&w.path().join(".trustform/backup"))
            .iter()
            .all(|p| !p.ends_with("kubelet.crt") && !p.ends_with("kubelet.key"))
    );
    // No flag kubeadm did not set.
    for n in nodes {
        for m in common::files_under(&w.node(n).join("etc/kubernetes/manifests")) {
            let text = std::fs::read_to_string(&m).unwrap();
            assert!(
                !text.contains("kubelet-certificate-authority"),
                "{}",
                m.display()
            );
        }
        let config =
            std::fs::read_to_string(w.node(n).join("var/lib/kubelet/config.yaml")).unwrap();
        assert!(!config.contains("serverTLSBootstrap"), "{n}");
    }
    assert!(w.ok(&["plan"]).contains("No changes."));
}

/// `sandbox create --kubelet-serving ca` (serving certificates from the cluster CA, as
/// with `serverTLSBootstrap`, verified with `--kubelet-certificate-authority`): the
/// rotation re-issues them from the new CA, and no edge is unverified.
#[test]
fn with_ca_issued_serving_certificates_the_rotation_reissues_them() {
    let w = common::Workdir {
        tmp: tempfile::tempdir().unwrap(),
    };
    w.ok(&[
        "sandbox",
        "create",
        "cluster",
        "--control-planes",
        "1",
        "--workers",
        "1",
        "--key-algorithm",
        "ecdsa-p256",
        "--restart-time",
        "0",
        "--kubelet-serving",
        "ca",
    ]);
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let plan = w.ok(&["plan"]);
    for n in ["cp-1", "w-1"] {
        assert!(
            plan.contains(&format!(
                "{n}:/var/lib/kubelet/pki/kubelet-server-current.pem (certificate)"
            )),
            "{n}'s serving certificate is re-issued:\n{plan}"
        );
    }
    assert!(!plan.contains("unverified"), "{plan}");
    let out = w.ok(&["apply", "--auto-approve"]);
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(
        !out.contains("unverified"),
        "every handshake verified both ways:\n{out}"
    );
    let new_ca = std::fs::read_dir(w.path().join("cas"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("kubernetes-"))
        .unwrap();
    for n in ["cp-1", "w-1"] {
        let serving = w
            .node(n)
            .join("var/lib/kubelet/pki/kubelet-server-current.pem");
        assert!(
            common::openssl_verify(&new_ca, &serving).is_ok(),
            "{n}: from the new CA"
        );
    }
    assert!(w.ok(&["plan"]).contains("No changes."));
}

/// The API server verifies kubelets (`--kubelet-certificate-authority`) but one kubelet
/// serves a self-signed certificate: a real break before the plan, which trustform names
/// (an unverified edge never hides one).
#[test]
fn a_verifying_api_server_and_a_self_signed_kubelet_is_a_break_named_before_the_plan() {
    let w = common::sandbox_serving(1, 1, false, trustform::sandbox::KubeletServing::Ca);
    // w-1's kubelet loses serverTLSBootstrap: at its restart it makes itself kubelet.crt.
    let config = w.node("w-1").join("var/lib/kubelet/config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("serverTLSBootstrap: true\n", "")).unwrap();
    trustform::sandbox::runtime::restart(&w.node("w-1"), "kubelet").unwrap();
    assert!(
        w.node("w-1")
            .join("var/lib/kubelet/pki/kubelet.crt")
            .is_file()
    );
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let plan = w.ok(&["plan"]);
    let note = plan
        .lines()
        .find(|l| {
            l.contains("kube-apiserver on cp-1 → kubelet on w-1 is broken before the plan starts")
        })
        .unwrap_or_else(|| panic!("the break is named:\n{plan}"));
    assert!(
        note.contains("kubelet on w-1 serves a certificate issued by CN=w-1-ca@")
            && note.contains("but kube-apiserver on cp-1 trusts only kubernetes"),
        "{note}"
    );
    assert!(
        !plan.contains("unverified"),
        "the API server verifies: {plan}"
    );
}

/// Older kubelets made `kubelet.crt` as one self-signed certificate that is its own CA
/// (no separate leaf): still the kubelet's own serving certificate, unverified, no break.
#[test]
fn an_older_kubelets_single_self_signed_certificate_is_no_break() {
    let w = common::sandbox(1, 1, false);
    let pki = w.node("w-1").join("var/lib/kubelet/pki");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-subj",
            "/CN=w-1@1700000000",
            "-addext",
            "subjectAltName=DNS:w-1",
        ])
        .args(["-days", "365", "-keyout"])
        .arg(pki.join("kubelet.key"))
        .arg("-out")
        .arg(pki.join("kubelet.crt"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(made.success());
    let (issuer, subject) = openssl_issuer_subject(&pki.join("kubelet.crt"));
    assert_eq!(issuer, subject, "self-signed");
    trustform::sandbox::runtime::restart(&w.node("w-1"), "kubelet").unwrap();
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let plan = w.ok(&["plan"]);
    assert!(!plan.contains("broken before the plan starts"), "{plan}");
    assert!(plan.contains("; 2 edges unverified ("), "{plan}");
}
