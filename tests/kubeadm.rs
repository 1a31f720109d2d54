//! kubeadm's own defaults, faithfully: `kubelet-client-current.pem` is an absolute symlink
//! to a dated file, which trustform rotates as the kubelet does (a new dated file, then
//! the link swapped); and after the cluster CA changes, `kubeadm join` needs a new
//! `--discovery-token-ca-cert-hash`, which apply prints (checked against openssl).

mod common;

use std::path::Path;

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
