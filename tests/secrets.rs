//! No output and no file trustform writes (other than key files) holds key material.

use crate::common;

use std::os::unix::fs::PermissionsExt;

#[test]
fn no_private_key_in_any_output_or_written_file() {
    let w = common::sandbox(3, 2, false);
    let before: std::collections::BTreeSet<_> = common::files_under(w.path()).into_iter().collect();
    let mut outputs = Vec::new();
    for args in [
        vec!["init", "--sandbox", "cluster"],
        vec!["snapshot", "-o", "snap.json"],
        vec!["snapshot"],
        vec!["rotate", "kubernetes", "--to-end"],
        vec!["rotate", "front-proxy"],
        vec!["plan", "-out", "plan.json"],
        vec!["plan", "--format", "json"],
        vec!["plan", "--format", "markdown"],
        vec!["plan", "--format", "dot"],
        vec!["snapshot", "--root", "cluster/nodes/cp-1"],
    ] {
        let (code, out, err) = w.run(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        outputs.push((args, out, err));
    }
    for (args, out, err) in &outputs {
        for text in [out, err] {
            assert!(
                !text.contains("PRIVATE KEY"),
                "{args:?} printed key material"
            );
            assert!(
                !text.contains("client-key-data"),
                "{args:?} printed a kubeconfig key"
            );
        }
    }
    // Files trustform wrote: everything new outside the sandbox's own nodes.
    let written: Vec<_> = common::files_under(w.path())
        .into_iter()
        .filter(|p| !before.contains(p))
        .collect();
    let names: Vec<String> = written
        .iter()
        .map(|p| p.strip_prefix(w.path()).unwrap().display().to_string())
        .collect();
    for expected in [
        "trustform.yaml",
        "trustform.schema.json",
        ".gitignore",
        "snap.json",
        "plan.json",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} written: {names:?}"
        );
    }
    let mut keys = 0;
    for (p, name) in written.iter().zip(&names) {
        let text = std::fs::read_to_string(p).unwrap();
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        if name.starts_with(".trustform/keys/") {
            assert!(text.contains("PRIVATE KEY"), "{name} is a key");
            assert_eq!(mode, 0o600, "{name} is 0600");
            keys += 1;
        } else {
            assert!(!text.contains("PRIVATE KEY"), "{name} holds key material");
        }
    }
    assert_eq!(
        keys, 2,
        "one generated key per rotated authority: {names:?}"
    );
    let gitignore = std::fs::read_to_string(w.path().join(".gitignore")).unwrap();
    assert!(
        gitignore.lines().any(|l| l == ".trustform/"),
        "keys are git-ignored"
    );
    // The snapshot knows keys only by their public half.
    let snap: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.path().join("snap.json")).unwrap())
            .unwrap();
    let key = &snap["nodes"][0]["files"]["/etc/kubernetes/pki/ca.key"];
    assert_eq!(key["kind"], "private-key");
    assert!(key["public_key"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        key.as_object().unwrap().len(),
        2,
        "kind and public_key only: {key}"
    );
}

#[test]
fn snapshot_is_canonical_and_detects_edits() {
    let w = common::initialised(2, 1);
    let a = w.ok(&["snapshot"]);
    let b = w.ok(&["snapshot"]);
    assert_eq!(a, b, "same cluster, same bytes");
    let snap: trustform::snapshot::Snapshot = serde_json::from_str(&a).unwrap();
    assert!(snap.verify());
    assert_eq!(
        snap.nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["cp-1", "cp-2", "w-1"]
    );
    let cp = snap.node("cp-1").unwrap();
    // Issuers resolved by signature, flags mapped to files, kubelet config read.
    let api = &cp.certs("/etc/kubernetes/pki/apiserver.crt").unwrap()[0];
    let ca = &cp.certs("/etc/kubernetes/pki/ca.crt").unwrap()[0];
    assert_eq!(api.issued_by.as_ref(), Some(&ca.fingerprint));
    assert!(snap.cas[&ca.fingerprint].key_present);
    let kcm = &cp.components["kube-controller-manager"];
    assert_eq!(kcm.flags["root-ca-file"], "/etc/kubernetes/pki/ca.crt");
    assert!(
        kcm.inputs
            .contains(&"/etc/kubernetes/controller-manager.conf".to_string())
    );
    let kubelet = snap.node("w-1").unwrap().kubelet.as_ref().unwrap();
    assert_eq!(
        kubelet.client_ca_file.as_deref(),
        Some("/etc/kubernetes/pki/ca.crt")
    );
    assert!(kubelet.rotate_certificates && !kubelet.server_tls_bootstrap);
    // kubeadm's default: the kubelet serves the kubelet.crt it makes itself.
    assert_eq!(
        kubelet.serving,
        trustform::kubelet::Serving::SelfSigned {
            cert: "/var/lib/kubelet/pki/kubelet.crt".into(),
            key: "/var/lib/kubelet/pki/kubelet.key".into(),
        }
    );
    assert!(
        kubelet
            .inputs
            .contains(&"/var/lib/kubelet/pki/kubelet.crt".to_string())
    );
    let kc = cp.kubeconfig("/etc/kubernetes/admin.conf").unwrap();
    assert_eq!(kc.ca, std::slice::from_ref(&ca.fingerprint));
    assert_eq!(
        kc.client
            .as_ref()
            .unwrap()
            .leaf
            .as_ref()
            .unwrap()
            .common_name,
        "kubernetes-admin"
    );
    // A changed file changes the fingerprint.
    let p = w.node("w-1").join("etc/kubernetes/pki/ca.crt");
    let other =
        std::fs::read_to_string(w.node("cp-1").join("etc/kubernetes/pki/front-proxy-ca.crt"))
            .unwrap();
    std::fs::write(&p, std::fs::read_to_string(&p).unwrap() + &other).unwrap();
    let c: trustform::snapshot::Snapshot = serde_json::from_str(&w.ok(&["snapshot"])).unwrap();
    assert_ne!(c.fingerprint, snap.fingerprint);
}
