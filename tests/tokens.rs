//! Service-account tokens in the sandbox, as on a real cluster: each pod's kubelet holds a
//! JWT the API server signed with its `--service-account-signing-key-file`, written where
//! a kubelet writes it; the API servers verify the tokens pods present against their
//! `--service-account-key-file`; the prober presents each pod's token, so an API server
//! that no longer holds the key that signed them shows as failed pod edges.

use crate::common::{self, Up, Workdir};
use base64::Engine;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Every token file of every node: (node, pod uid, path).
pub(crate) fn token_files(w: &Workdir) -> Vec<(String, String, PathBuf)> {
    let mut out = vec![];
    for node in ["cp-1", "cp-2", "w-1"] {
        let pods = w.node(node).join("var/lib/kubelet/pods");
        for pod in std::fs::read_dir(&pods).into_iter().flatten().flatten() {
            let projected = pod.path().join("volumes/kubernetes.io~projected");
            for vol in std::fs::read_dir(&projected)
                .into_iter()
                .flatten()
                .flatten()
            {
                let token = vol.path().join("token");
                if token.is_file() {
                    out.push((
                        node.to_string(),
                        pod.file_name().to_string_lossy().into_owned(),
                        token,
                    ));
                }
            }
        }
    }
    out
}

/// The `kid` of the public key in `pem`, per openssl: base64url of the SHA-256 of its DER.
pub(crate) fn openssl_kid(pem: &Path) -> String {
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    assert!(der.status.success());
    let digest = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&der.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.stdout)
}

pub(crate) fn part(token: &str, i: usize) -> Value {
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(i).unwrap())
        .unwrap();
    serde_json::from_slice(&b).unwrap()
}

#[test]
fn pods_hold_tokens_the_api_servers_verify_and_a_dropped_key_fails_their_edges() {
    let w = common::sandbox_restarting(2, 1, "0.1s");
    let _up = Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    let (ok, pods, err) =
        common::kubectl_with(&w.admin_conf(), &["get", "pods", "-A", "-o", "json"]);
    assert!(ok, "{err}");
    let pods: Value = serde_json::from_str(&pods).unwrap();
    let pods: Vec<&Value> = pods["items"].as_array().unwrap().iter().collect();
    assert!(pods.len() >= 3, "{} pods", pods.len());
    // Every pod's token is on its node, 0600, signed with sa.key (openssl computes the
    // key id of sa.pub), bound to the pod.
    let files = common::eventually("a token per pod", Duration::from_secs(30), || {
        let f = token_files(&w);
        if f.len() == pods.len() {
            Ok(f)
        } else {
            Err(format!("{} tokens for {} pods", f.len(), pods.len()))
        }
    });
    let kid = openssl_kid(&w.node("cp-1").join("etc/kubernetes/pki/sa.pub"));
    for (node, uid, path) in &files {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
        let token = std::fs::read_to_string(path).unwrap();
        let (header, claims) = (part(&token, 0), part(&token, 1));
        assert_eq!(header["kid"], kid.as_str(), "{}", path.display());
        assert_eq!(header["alg"], "ES256");
        let pod = pods
            .iter()
            .find(|p| p["metadata"]["uid"] == uid.as_str())
            .unwrap_or_else(|| panic!("{uid}: no such pod"));
        assert_eq!(pod["spec"]["nodeName"], node.as_str());
        let b = &claims["kubernetes.io"];
        assert_eq!(b["pod"]["name"], pod["metadata"]["name"]);
        assert_eq!(
            claims["sub"],
            format!(
                "system:serviceaccount:{}:{}",
                pod["metadata"]["namespace"].as_str().unwrap(),
                pod["spec"]["serviceAccountName"].as_str().unwrap()
            )
        );
        assert!(claims["exp"].as_i64() > claims["iat"].as_i64());
    }
    // A kubelet restart fetches a new token for each of its pods (its cache is in
    // memory); the other nodes' tokens stay.
    let iat = |path: &Path| part(&std::fs::read_to_string(path).unwrap(), 1)["iat"].as_i64();
    let (w1, others): (Vec<_>, Vec<_>) = files.iter().partition(|(n, _, _)| n == "w-1");
    assert!(!w1.is_empty() && !others.is_empty(), "{files:?}");
    let before: Vec<Option<i64>> = w1.iter().map(|(_, _, p)| iat(p)).collect();
    let others_before: Vec<Option<i64>> = others.iter().map(|(_, _, p)| iat(p)).collect();
    std::thread::sleep(Duration::from_millis(1100));
    let (code, _, err) = w.run(&[
        "sandbox",
        "node-exec",
        "cluster",
        "w-1",
        "--",
        "systemctl",
        "restart",
        "kubelet",
    ]);
    assert_eq!(code, 0, "{err}");
    common::eventually("w-1's tokens renewed", Duration::from_secs(30), || {
        let now: Vec<Option<i64>> = w1.iter().map(|(_, _, p)| iat(p)).collect();
        if now.iter().zip(&before).all(|(a, b)| a > b) {
            Ok(())
        } else {
            Err(format!("{now:?} after {before:?}"))
        }
    });
    let others_now: Vec<Option<i64>> = others.iter().map(|(_, _, p)| iat(p)).collect();
    assert_eq!(others_now, others_before, "only w-1's kubelet restarted");
    // cp-2's API server drops the key (sa.pub holds an unrelated one) and restarts: a
    // drop before the pods' tokens were re-issued.
    let sa_pub = w.node("cp-2").join("etc/kubernetes/pki/sa.pub");
    let key = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .unwrap();
    let mut c = Command::new("openssl")
        .args(["pkey", "-pubout", "-out"])
        .arg(&sa_pub)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(&key.stdout).unwrap();
    }
    assert!(c.wait().unwrap().success());
    // A front-proxy rotation, under the prober: every pod edge to cp-2 fails on its
    // token (its API server restarts in the rotation and reads the new sa.pub), every
    // pod edge to cp-1 holds.
    w.ok(&["rotate", "front-proxy", "--to-end"]);
    w.ok(&["plan", "-out", "plan.json"]);
    let (_, out, err) = w.run(&["apply", "plan.json", "--probe", "--format", "json"]);
    let summary = common::probe_summary(&out);
    let edges = summary["probe"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("{err}"));
    let pod_edges: Vec<&Value> = edges.iter().filter(|e| e["kind"] == "pod").collect();
    assert!(!pod_edges.is_empty(), "{summary:#}");
    for e in pod_edges {
        let name = e["name"].as_str().unwrap();
        assert!(e["attempts"].as_u64() > Some(0), "{name}");
        if name.ends_with("kube-apiserver on cp-2") {
            assert!(e["failures"].as_u64() > Some(0), "{name}: {e}");
            assert!(
                e["first_error"]
                    .as_str()
                    .is_some_and(|f| f.contains("does not accept the service-account token")),
                "{name}: {e}"
            );
        } else {
            assert_eq!(e["failures"], 0, "{name}: {e}");
        }
    }
    // Never a token in the output.
    for (_, _, path) in token_files(&w) {
        let token = std::fs::read_to_string(path).unwrap();
        assert!(!out.contains(&token) && !err.contains(&token));
    }
}
