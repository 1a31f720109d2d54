//! The sandbox is a faithful kubeadm cluster: real certificates, verified by openssl,
//! kubeconfigs read by kubectl.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use trustform::pki::kubeconfig::{Kubeconfig, unb64};
use trustform::pki::parse_certs;

fn openssl_verify(ca: &std::path::Path, leaf: &std::path::Path) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(leaf)
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with(": OK"),
        "openssl verify {} against {}: {stdout}{}",
        leaf.display(),
        ca.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl verify` fails: `leaf` does not chain to `ca`.
fn openssl_rejects(ca: &std::path::Path, leaf: &std::path::Path) {
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(leaf)
        .output()
        .expect("openssl is installed");
    assert!(
        !out.status.success(),
        "openssl verify {} against {} should fail",
        leaf.display(),
        ca.display()
    );
}

/// The second PEM block of the self-signed `kubelet.crt`: the kubelet's own CA.
fn kubelet_own_ca(crt: &std::path::Path, to: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(crt).unwrap();
    let second = text
        .match_indices("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .expect("kubelet.crt holds its CA after the leaf")
        .0;
    std::fs::write(to, &text[second..]).unwrap();
    to.to_path_buf()
}

#[test]
fn openssl_accepts_every_leaf_against_its_ca() {
    let w = common::sandbox(3, 2, true);
    let tmp = tempfile::tempdir().unwrap();
    let mut verified = 0;
    for node in ["cp-1", "cp-2", "cp-3", "w-1", "w-2"] {
        let root = w.node(node);
        let pki = root.join("etc/kubernetes/pki");
        let ca = pki.join("ca.crt");
        // kubeadm's default: the kubelet serves a kubelet.crt from a CA of its own, not
        // from the cluster CA.
        let serving = root.join("var/lib/kubelet/pki/kubelet.crt");
        openssl_rejects(&ca, &serving);
        let own_ca = kubelet_own_ca(&serving, &tmp.path().join(format!("{node}-kubelet-ca.crt")));
        let mut leaves: Vec<(std::path::PathBuf, std::path::PathBuf)> = vec![
            (
                ca.clone(),
                root.join("var/lib/kubelet/pki/kubelet-client-current.pem"),
            ),
            (own_ca, serving),
        ];
        if node.starts_with("cp") {
            for l in ["apiserver", "apiserver-kubelet-client"] {
                leaves.push((ca.clone(), pki.join(format!("{l}.crt"))));
            }
            leaves.push((
                pki.join("front-proxy-ca.crt"),
                pki.join("front-proxy-client.crt"),
            ));
            let etcd = pki.join("etcd/ca.crt");
            leaves.push((etcd.clone(), pki.join("apiserver-etcd-client.crt")));
            for l in ["server", "peer", "healthcheck-client"] {
                leaves.push((etcd.clone(), pki.join(format!("etcd/{l}.crt"))));
            }
            // Client certificates embedded in kubeconfigs.
            for conf in ["admin.conf", "controller-manager.conf", "scheduler.conf"] {
                let kc: Kubeconfig = serde_saphyr::from_str(
                    &std::fs::read_to_string(root.join("etc/kubernetes").join(conf)).unwrap(),
                )
                .unwrap();
                let cert =
                    unb64(kc.users[0].user.client_certificate_data.as_ref().unwrap()).unwrap();
                let p = tmp.path().join(format!("{node}-{conf}.crt"));
                std::fs::write(&p, cert).unwrap();
                leaves.push((ca.clone(), p));
            }
        }
        for (ca, leaf) in leaves {
            openssl_verify(&ca, &leaf);
            verified += 1;
        }
    }
    assert_eq!(verified, 3 * 12 + 2 * 2);
}

/// `--kubelet-serving ca`: serving certificates from the cluster CA, as with
/// `serverTLSBootstrap: true`.
#[test]
fn with_the_ca_option_kubelets_serve_certificates_from_the_cluster_ca() {
    let w = common::sandbox_serving(1, 1, false, trustform::sandbox::KubeletServing::Ca);
    for node in ["cp-1", "w-1"] {
        let root = w.node(node);
        let ca = root.join("etc/kubernetes/pki/ca.crt");
        openssl_verify(
            &ca,
            &root.join("var/lib/kubelet/pki/kubelet-server-current.pem"),
        );
        assert!(!root.join("var/lib/kubelet/pki/kubelet.crt").exists());
        let config = std::fs::read_to_string(root.join("var/lib/kubelet/config.yaml")).unwrap();
        assert!(config.contains("\nserverTLSBootstrap: true\n"));
    }
    let apiserver = std::fs::read_to_string(
        w.node("cp-1")
            .join("etc/kubernetes/manifests/kube-apiserver.yaml"),
    )
    .unwrap();
    assert!(
        apiserver.contains("    - --kubelet-certificate-authority=/etc/kubernetes/pki/ca.crt\n")
    );
}

#[test]
fn leaves_carry_kubeadm_identities() {
    let w = common::sandbox(1, 1, false);
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    let facts = |p: &str| {
        parse_certs(&std::fs::read_to_string(pki.join(p)).unwrap(), p)
            .unwrap()
            .remove(0)
            .facts
    };
    let api = facts("apiserver.crt");
    assert_eq!(api.common_name, "kube-apiserver");
    assert_eq!(api.ext_key_usage, ["serverAuth"]);
    let own = format!("IP:{}", w.ip("cp-1"));
    for san in [
        "DNS:kubernetes.default.svc.cluster.local",
        "DNS:cp-1",
        "IP:10.96.0.1",
        own.as_str(),
    ] {
        assert!(api.sans.iter().any(|s| s == san), "{san} in {:?}", api.sans);
    }
    let kc = facts("apiserver-kubelet-client.crt");
    assert_eq!(
        (kc.common_name.as_str(), kc.organizations.as_slice()),
        (
            "kube-apiserver-kubelet-client",
            &["kubeadm:cluster-admins".to_string()][..]
        )
    );
    assert_eq!(
        facts("front-proxy-client.crt").common_name,
        "front-proxy-client"
    );
    let peer = facts("etcd/peer.crt");
    assert_eq!(peer.ext_key_usage, ["serverAuth", "clientAuth"]);
    let ca = facts("ca.crt");
    assert!(ca.is_ca && ca.key_usage.contains(&"keyCertSign".to_string()));
    // Workers get only what a kubeadm worker has.
    let worker = w.node("w-1");
    assert!(worker.join("etc/kubernetes/pki/ca.crt").exists());
    assert!(!worker.join("etc/kubernetes/pki/ca.key").exists());
    assert!(!worker.join("etc/kubernetes/admin.conf").exists());
    assert!(
        !worker
            .join("etc/kubernetes/manifests/kube-apiserver.yaml")
            .exists()
    );
    let worker_files: Vec<_> = common::files_under(&worker)
        .into_iter()
        .filter(|p| !p.starts_with(worker.join("run")))
        .collect();
    assert_eq!(
        worker_files.len(),
        6,
        "ca.crt, kubelet.conf, config.yaml, kubelet-client-current.pem, kubelet.crt, kubelet.key"
    );
    // The self-signed serving certificate, as the kubelet makes it.
    let serving = parse_certs(
        &std::fs::read_to_string(worker.join("var/lib/kubelet/pki/kubelet.crt")).unwrap(),
        "kubelet.crt",
    )
    .unwrap();
    assert_eq!(serving.len(), 2, "the leaf, then its CA");
    assert!(serving[0].facts.common_name.starts_with("w-1@"));
    assert!(serving[1].facts.common_name.starts_with("w-1-ca@") && serving[1].facts.is_ca);
    assert_eq!(serving[0].facts.sans, ["DNS:w-1"]);
    // The only simulated process on a worker is its kubelet, holding what it read.
    let held = trustform::sandbox::runtime::held(&worker, "kubelet").expect("kubelet started");
    assert_eq!(held.generation, 1);
    assert_eq!(
        held.file("/etc/kubernetes/pki/ca.crt"),
        std::fs::read(worker.join("etc/kubernetes/pki/ca.crt")).ok()
    );
}

#[test]
fn key_files_are_0600_and_manifests_carry_kubeadm_flags() {
    let w = common::sandbox(1, 0, false);
    let root = w.node("cp-1");
    for f in common::files_under(&root) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        if text.contains("PRIVATE KEY") || text.contains("client-key-data") {
            assert_eq!(mode, 0o600, "{}", f.display());
        }
    }
    let apiserver =
        std::fs::read_to_string(root.join("etc/kubernetes/manifests/kube-apiserver.yaml")).unwrap();
    // kubeadm sets no --kubelet-certificate-authority.
    assert!(!apiserver.contains("--kubelet-certificate-authority"));
    for flag in [
        "--client-ca-file=/etc/kubernetes/pki/ca.crt",
        "--kubelet-client-certificate=/etc/kubernetes/pki/apiserver-kubelet-client.crt",
        "--requestheader-client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt",
        "--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
        "--service-account-key-file=/etc/kubernetes/pki/sa.pub",
        "--etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt",
    ] {
        assert!(apiserver.contains(&format!("    - {flag}\n")), "{flag}");
    }
    let kcm =
        std::fs::read_to_string(root.join("etc/kubernetes/manifests/kube-controller-manager.yaml"))
            .unwrap();
    for flag in [
        "--root-ca-file=/etc/kubernetes/pki/ca.crt",
        "--cluster-signing-cert-file=/etc/kubernetes/pki/ca.crt",
        "--client-ca-file=/etc/kubernetes/pki/ca.crt",
    ] {
        assert!(kcm.contains(flag), "{flag}");
    }
    let kubelet = std::fs::read_to_string(root.join("var/lib/kubelet/config.yaml")).unwrap();
    assert!(
        kubelet.contains("clientCAFile: /etc/kubernetes/pki/ca.crt")
            && kubelet.contains("rotateCertificates: true")
            && !kubelet.contains("serverTLSBootstrap"),
        "kubeadm's KubeletConfiguration has no serverTLSBootstrap"
    );
    let key = root.join("var/lib/kubelet/pki/kubelet.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn kubectl_reads_the_kubeconfigs_we_write() {
    let w = common::sandbox(1, 1, false);
    for conf in [
        "cp-1/etc/kubernetes/admin.conf",
        "cp-1/etc/kubernetes/super-admin.conf",
        "w-1/etc/kubernetes/kubelet.conf",
    ] {
        let path = w.cluster().join("nodes").join(conf);
        let out = Command::new("kubectl")
            .args([
                "config",
                "view",
                "--raw",
                "-o",
                "jsonpath={.clusters[0].cluster.certificate-authority-data}",
            ])
            .arg("--kubeconfig")
            .arg(&path)
            .output()
            .expect("kubectl is installed (.ci/run installs it)");
        assert!(
            out.status.success(),
            "kubectl on {conf}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ca = unb64(&String::from_utf8_lossy(&out.stdout)).expect("base64 CA data");
        let on_disk = std::fs::read_to_string(
            w.node(conf.split('/').next().unwrap())
                .join("etc/kubernetes/pki/ca.crt"),
        )
        .unwrap();
        assert_eq!(ca, on_disk, "{conf}: kubectl sees the cluster CA");
    }
}
