//! Inputs trustform did not make: every certificate, key and kubeconfig of a 1 + 2
//! kubeadm cluster re-made with the openssl and kubectl CLIs (`tests/data/kubeadm-openssl.sh`:
//! PKCS#1 RSA keys, an EC key behind its `EC PARAMETERS` block, kubeconfigs written by
//! `kubectl config`, kubeadm's absolute `kubelet-client-current.pem` symlink to a dated
//! file). The simulated processes are restarted onto those files (they start only if
//! every pair fits), then trustform observes, plans and rotates the kubernetes and
//! front-proxy CAs and the service-account key; openssl and kubectl check the result.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn verify(ca: &Path, cert: &Path) {
    if let Err(e) = common::openssl_verify(ca, cert) {
        panic!(
            "openssl verify {} against {}: {e}",
            cert.display(),
            ca.display()
        );
    }
}

fn new_ca(w: &common::Workdir, authority: &str) -> PathBuf {
    std::fs::read_dir(w.path().join("cas"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{authority}-2")) && name.ends_with(".crt")
        })
        .unwrap_or_else(|| panic!("the new {authority} CA in cas/"))
}

/// A kubeconfig's client certificate, as kubectl reads it, in a file.
fn kubectl_client_cert(kubeconfig: &Path, out: &Path) {
    let b64 = sh(&[
        "kubectl",
        "config",
        "view",
        "--raw",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "-o",
        "jsonpath={.users[0].user.client-certificate-data}",
    ]);
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap();
    std::fs::write(out, pem).unwrap();
}

#[test]
fn a_layout_made_with_openssl_and_kubectl_is_observed_planned_and_rotated() {
    let w = common::sandbox_restarting(1, 2, "0");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kubeadm-openssl.sh");
    for (n, role) in [
        ("cp-1", "control-plane"),
        ("w-1", "worker"),
        ("w-2", "worker"),
    ] {
        sh(&[
            "bash",
            script.to_str().unwrap(),
            w.node(n).to_str().unwrap(),
            role,
            n,
            &w.ip(n),
        ]);
    }
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    assert!(
        std::fs::read_to_string(pki.join("front-proxy-ca.key"))
            .unwrap()
            .starts_with("-----BEGIN EC PARAMETERS-----"),
        "the EC key comes after its parameters, as openssl ecparam writes it"
    );
    // Every process starts again on the new files: static pods as their manifests
    // change, the kubelets by systemctl.
    for m in std::fs::read_dir(w.node("cp-1").join("etc/kubernetes/manifests")).unwrap() {
        let p = m.unwrap().path();
        let mut text = std::fs::read_to_string(&p).unwrap();
        text.push_str("# certificates re-made with openssl\n");
        std::fs::write(&p, text).unwrap();
    }
    for n in ["cp-1", "w-1", "w-2"] {
        w.ok(&[
            "sandbox",
            "node-exec",
            "cluster",
            n,
            "--",
            "systemctl",
            "restart",
            "kubelet",
        ]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = w.run(&[
            "sandbox",
            "node-exec",
            "cluster",
            "cp-1",
            "--",
            "crictl",
            "ps",
        ]);
        if out.matches("Running").count() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "every static pod runs: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }

    w.ok(&["init", "--sandbox", "cluster"]);
    assert!(
        w.ok(&["plan"]).contains("No changes."),
        "trustform reads the openssl layout as it is"
    );
    common::fast_issuance(&w);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    w.ok(&["rotate", "front-proxy", "--to-end"]);
    w.ok(&["rotate", "service-account", "--to-end"]);
    let out = w.ok(&["apply", "--auto-approve"]);
    assert!(out.contains("Apply complete!"), "{out}");
    assert!(w.ok(&["plan"]).contains("No changes."));

    // openssl's sa.key and sa.pub became the new pair: openssl derives sa.pub's key from
    // sa.key, and both are the public key `rotate` wrote.
    let new_pub: PathBuf = std::fs::read_dir(w.path().join("cas"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "pub"))
        .expect("rotate wrote cas/service-account-*.pub");
    let public = |args: &[&str]| sh(&[&["openssl", "pkey"][..], args, &["-pubout"]].concat());
    let want = public(&["-pubin", "-in", new_pub.to_str().unwrap()]);
    assert!(want.starts_with("-----BEGIN PUBLIC KEY-----"), "{want}");
    assert_eq!(public(&["-in", pki.join("sa.key").to_str().unwrap()]), want);
    assert_eq!(
        public(&["-pubin", "-in", pki.join("sa.pub").to_str().unwrap()]),
        want
    );
    let (kube, fp) = (new_ca(&w, "kubernetes"), new_ca(&w, "front-proxy"));
    for leaf in ["apiserver.crt", "apiserver-kubelet-client.crt"] {
        verify(&kube, &pki.join(leaf));
    }
    verify(&fp, &pki.join("front-proxy-client.crt"));
    let tmp = tempfile::tempdir().unwrap();
    for conf in [
        "admin.conf",
        "super-admin.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ] {
        let cert = tmp.path().join(format!("{conf}.crt"));
        kubectl_client_cert(&w.node("cp-1").join("etc/kubernetes").join(conf), &cert);
        verify(&kube, &cert);
    }
    for n in ["cp-1", "w-1", "w-2"] {
        let kpki = w.node(n).join("var/lib/kubelet/pki");
        let link = kpki.join("kubelet-client-current.pem");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{n}: still kubeadm's symlink"
        );
        let to = std::fs::read_link(&link).unwrap();
        assert!(
            to.is_absolute() && !to.ends_with("kubelet-client-2025-06-01-12-00-00.pem"),
            "{n}: points at a new dated file: {}",
            to.display()
        );
        assert!(
            kpki.join("kubelet-client-2025-06-01-12-00-00.pem")
                .is_file(),
            "{n}: the old dated file is kept"
        );
        verify(&kube, &w.node(n).join(to.strip_prefix("/").unwrap()));
        // The kubelet's kubeconfig, as kubectl resolves it, names the link.
        let kc = sh(&[
            "kubectl",
            "config",
            "view",
            "--kubeconfig",
            w.node(n)
                .join("etc/kubernetes/kubelet.conf")
                .to_str()
                .unwrap(),
            "-o",
            "jsonpath={.users[0].user.client-certificate}",
        ]);
        assert_eq!(kc.trim(), "/var/lib/kubelet/pki/kubelet-client-current.pem");
        verify(&kube, &w.node(n).join("etc/kubernetes/pki/ca.crt"));
    }
}
