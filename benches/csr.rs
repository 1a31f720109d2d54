//! `cargo bench --bench csr`: `trustform csr plan` over 5,000 pending certificate signing
//! requests (issue 14's figure; target under 2 s and 200 MiB): a 1 + 2 sandbox whose
//! store holds 5,000 kubelet-serving requests (rcgen-made, ECDSA P-256, one key per node;
//! a fifth ask for an address their node does not have), decided under a node policy. Wall time, CPU
//! time and peak RSS, best of 3. `TRUSTFORM_BENCH_CSRS` changes the count.

mod common;

use common::{measure, run, sandbox_up};
use std::path::Path;
use std::process::{Command, Stdio};

fn main() {
    let bin = Path::new(env!("CARGO_BIN_EXE_trustform"));
    let n: usize = std::env::var("TRUSTFORM_BENCH_CSRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(
        bin,
        d,
        &[
            "sandbox",
            "create",
            "cluster",
            "--control-planes",
            "1",
            "--workers",
            "2",
            "--key-algorithm",
            "ecdsa-p256",
        ],
    );
    // The requests go into the store before the API server opens it.
    {
        use base64::Engine;
        let sb = trustform::sandbox::Sandbox::load(&d.join("cluster")).unwrap();
        let store = trustform::sandbox::apiserver::store::Store::open(&d.join("cluster")).unwrap();
        // One key per node: a key asked for two subjects would be denied (rule `key`).
        let keys: Vec<rcgen::KeyPair> = (0..2)
            .map(|_| rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap())
            .collect();
        let mut batch = vec![];
        for i in 0..n {
            let node = &sb.nodes[1 + i % 2];
            let ip = if i % 5 == 0 {
                "192.0.2.99".to_string()
            } else {
                node.ip.clone()
            };
            let mut p = rcgen::CertificateParams::new(vec![node.name.clone(), ip]).unwrap();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, "system:nodes");
            p.distinguished_name.push(
                rcgen::DnType::CommonName,
                format!("system:node:{}", node.name),
            );
            let pem = p.serialize_request(&keys[i % 2]).unwrap().pem().unwrap();
            batch.push((
                "certificatesigningrequests",
                serde_json::json!({
                    "apiVersion": "certificates.k8s.io/v1",
                    "kind": "CertificateSigningRequest",
                    "metadata": { "name": format!("csr-{i}") },
                    "spec": {
                        "request": base64::engine::general_purpose::STANDARD.encode(pem),
                        "signerName": "kubernetes.io/kubelet-serving",
                        "expirationSeconds": 86400,
                        "usages": ["digital signature", "key encipherment", "server auth"],
                        "username": format!("system:node:{}", node.name),
                        "groups": ["system:nodes", "system:authenticated"],
                    }
                }),
            ));
        }
        store.create_many(batch).unwrap();
    }
    let mut server = sandbox_up(bin, d);
    run(bin, d, &["init", "--sandbox", "cluster"]);
    let mut text = std::fs::read_to_string(d.join("trustform.yaml")).unwrap();
    text.push_str("csr:\n  policies:\n    - signer: kubernetes.io/kubelet-serving\n      node: true\n      usages: [digital signature, key encipherment, server auth]\n      maxDuration: 30d\n");
    std::fs::write(d.join("trustform.yaml"), text).unwrap();
    let mut best: Option<common::Measured> = None;
    for _ in 0..3 {
        let m = measure(
            Command::new(bin)
                .current_dir(d)
                .args(["csr", "plan", "--format", "json"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        assert!(m.ok, "csr plan");
        if best.as_ref().is_none_or(|b| m.wall < b.wall) {
            best = Some(m);
        }
    }
    let b = best.unwrap();
    println!(
        "csr plan, {n} pending requests: {:.3} s wall, {:.3} s CPU, {} MiB peak RSS",
        b.wall.as_secs_f64(),
        b.cpu.as_secs_f64(),
        b.rss_kib / 1024
    );
    let out = Command::new(bin)
        .current_dir(d)
        .args(["csr", "plan"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{}", text.lines().last().unwrap_or_default());
    let _ = server.kill();
    let _ = server.wait();
}
