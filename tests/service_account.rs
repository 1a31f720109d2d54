//! The service-account key's rotation (`plans/service-account-key.yaml`) on a sandbox
//! whose pods hold tokens the old key signed: the API servers accept both keys, then sign
//! with the new one, the kubelets refresh every token, and only then is the old key
//! dropped. The prober presents each pod's token all along; openssl computes the keys'
//! ids on its own.

use crate::common::{self, Up, Workdir};
use crate::tokens::{openssl_kid, part, token_files};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// How long the sandbox's tokens live: the kubelets refresh them at 80% (32 s).
const TOKEN_SECONDS: &str = "40";

/// A 2 + 1 sandbox serving its API, with short-lived tokens and three legacy token
/// secrets, and trustform.yaml.
fn cluster() -> (Workdir, Up) {
    let w = common::sandbox_with(2, 1, "0.1s", &["--legacy-token-secrets", "3"]);
    let up = Up::start_env(
        &w,
        &[],
        None,
        &[("TRUSTFORM_SANDBOX_TOKEN_SECONDS", TOKEN_SECONDS)],
    );
    w.ok(&["init", "--sandbox", "cluster"]);
    common::fast_issuance(&w);
    // Every pod holds its token before the rotation.
    common::eventually("a token per pod", Duration::from_secs(30), || {
        let (ok, pods, err) =
            common::kubectl_with(&w.admin_conf(), &["get", "pods", "-A", "-o", "json"]);
        let n = serde_json::from_str::<Value>(&pods)
            .ok()
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .unwrap_or(0);
        let tokens = token_files(&w).len();
        let legacy = legacy_kids(&w);
        if ok && n >= 3 && tokens == n && legacy.len() == 3 && legacy.iter().all(Option::is_some) {
            Ok(())
        } else {
            Err(format!("{tokens} tokens for {n} pods {err}"))
        }
    });
    (w, up)
}

/// The kid of each pod's token, by file.
fn kids(w: &Workdir) -> Vec<(PathBuf, String)> {
    token_files(w)
        .into_iter()
        .map(|(_, _, p)| {
            let t = std::fs::read_to_string(&p).unwrap();
            let kid = part(&t, 0)["kid"].as_str().unwrap().to_string();
            (p, kid)
        })
        .collect()
}

/// The kid of each legacy token secret's token (`None`: no token yet).
fn legacy_kids(w: &Workdir) -> Vec<Option<String>> {
    let (ok, text, err) = common::kubectl_with(
        &w.admin_conf(),
        &[
            "get",
            "secrets",
            "-A",
            "--field-selector",
            "type=kubernetes.io/service-account-token",
            "-o",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            use base64::Engine;
            let b = s["data"]["token"].as_str().filter(|t| !t.is_empty())?;
            let token = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
            let token = String::from_utf8(token).ok()?;
            part(&token, 0)["kid"].as_str().map(str::to_string)
        })
        .collect()
}

/// openssl's kid of the public half of a private key file.
fn openssl_private_kid(w: &Workdir, key: &Path) -> String {
    let out = w.path().join("pub-of-key.pem");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(key)
        .arg("-out")
        .arg(&out)
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl reads {}", key.display());
    openssl_kid(&out)
}

/// The one `cas/service-account-*.pub` that `rotate` wrote.
fn new_public_key(w: &Workdir) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(w.path().join("cas"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

#[test]
fn a_full_service_account_key_rotation_keeps_every_pods_requests_accepted() {
    let (w, _up) = cluster();
    let sa_pub = |n: &str| w.node(n).join("etc/kubernetes/pki/sa.pub");
    let sa_key = |n: &str| w.node(n).join("etc/kubernetes/pki/sa.key");
    let old = openssl_kid(&sa_pub("cp-1"));
    assert!(kids(&w).iter().all(|(_, k)| *k == old), "{:?}", kids(&w));
    // The controller manager signed the legacy tokens with sa.key.
    assert_eq!(legacy_kids(&w), vec![Some(old.clone()); 3]);
    let (code, _, said) = w.run(&["rotate", "service-account", "--to-end"]);
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("Generated service-account key"), "{said}");
    let new_pub = new_public_key(&w);
    let new = openssl_kid(&new_pub);
    assert_ne!(new, old);
    let plan = w.ok(&["plan", "-out", "plan.json"]);
    // The plan names every pod whose token the old key signed, and when it is refreshed.
    let pods = token_files(&w).len();
    assert!(
        plan.contains(&format!(
            "{pods} of {pods} tokens are signed by another key; the kubelets refresh the last at"
        )),
        "{plan}"
    );
    assert!(
        plan.contains("service-account-key/wait-tokens@cluster"),
        "{plan}"
    );
    assert!(plan.contains("kube-system/kube-proxy-"), "{plan}");
    let (code, out, err) = w.run(&["apply", "plan.json", "--probe", "--format", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    // No pod's request was refused at any time: the prober presented each pod's token to
    // every API server in every round.
    let summary = common::probe_summary(&out);
    assert_eq!(summary["probe"]["failures"], 0, "{summary:#}");
    let edges = summary["probe"]["edges"].as_array().unwrap();
    let pod_edges: Vec<&Value> = edges.iter().filter(|e| e["kind"] == "pod").collect();
    assert!(pod_edges.len() >= 2 * pods, "{summary:#}");
    for e in &pod_edges {
        assert!(e["attempts"].as_u64() > Some(0), "{e}");
        assert_eq!(e["failures"], 0, "{e}");
    }
    // The wait ended on fresh tokens, each signed by the new key.
    let waited = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["event"] == "step_done" && v["step"] == "service-account-key/wait-tokens@cluster"
        })
        .unwrap_or_else(|| panic!("no wait-tokens step: {out}"));
    assert!(
        waited
            .to_string()
            .contains("service-account tokens are signed by key sha256:"),
        "{waited}"
    );
    for (p, kid) in kids(&w) {
        assert_eq!(kid, new, "{}", p.display());
    }
    // Every legacy token secret's token was re-issued: the new key signed it.
    assert_eq!(legacy_kids(&w), vec![Some(new.clone()); 3]);
    assert!(
        out.contains("3 legacy token secrets hold tokens signed by key sha256:")
            && out.contains("3 re-issued by the controller manager"),
        "{out}"
    );
    // Afterwards, per openssl: sa.pub holds the new key alone, and sa.key is its private
    // half, on every control plane.
    for n in ["cp-1", "cp-2"] {
        let text = std::fs::read_to_string(sa_pub(n)).unwrap();
        assert_eq!(text.matches("BEGIN PUBLIC KEY").count(), 1, "{n}: {text}");
        assert_eq!(openssl_kid(&sa_pub(n)), new, "{n}");
        assert_eq!(openssl_private_kid(&w, &sa_key(n)), new, "{n}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sa_key(n)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{n}: sa.key");
    }
    assert!(w.ok(&["plan"]).contains("No changes."));
    // Never a token or a key in what trustform printed or kept.
    let kept = [
        out.clone(),
        err,
        std::fs::read_to_string(w.path().join("plan.json")).unwrap(),
    ];
    for (_, _, path) in token_files(&w) {
        let token = std::fs::read_to_string(path).unwrap();
        assert!(kept.iter().all(|k| !k.contains(token.trim())));
    }
    assert!(kept.iter().all(|k| !k.contains("PRIVATE KEY")));
}

/// Move the post-rotate drop of the old key before the wait for fresh tokens: the API
/// servers stop accepting the old key while the pods still present tokens it signed.
fn drop_before_wait(w: &Workdir, from: &str, to: &str) {
    let mut plan: trustform::plan::Plan =
        serde_json::from_slice(&std::fs::read(w.path().join(from)).unwrap()).unwrap();
    let ids = |t: &str| -> Vec<String> {
        plan.steps
            .iter()
            .filter(|s| s.template == t)
            .map(|s| s.id.clone())
            .collect()
    };
    let last_kcm = ids("restart-controller-manager")
        .pop()
        .expect("kcm restarts");
    let last_drop_restart = ids("restart-apiserver-drop-old").pop().expect("restarts");
    let drops = ids("drop-old");
    let verify = ids("verify").pop().expect("the rotate stage's gate");
    for s in &mut plan.steps {
        if drops.contains(&s.id) {
            s.depends_on = vec![last_kcm.clone()];
        } else if s.template == "wait-tokens" {
            s.depends_on = vec![last_drop_restart.clone()];
        } else if s.template == "verify-post-rotate" {
            s.depends_on = vec![verify.clone()];
        }
    }
    let order = trustform::plan::rehearse::order(&plan);
    let steps = std::mem::take(&mut plan.steps);
    let mut slots: Vec<Option<trustform::plan::Step>> = steps.into_iter().map(Some).collect();
    plan.steps = order
        .into_iter()
        .map(|i| slots[i].take().unwrap())
        .collect();
    plan.checksum = String::new();
    plan.checksum = plan.compute_checksum();
    std::fs::write(w.path().join(to), serde_json::to_vec_pretty(&plan).unwrap()).unwrap();
}

#[test]
fn dropping_the_old_key_before_the_tokens_are_refreshed_is_refused_naming_the_pods() {
    let (w, _up) = cluster();
    w.ok(&["rotate", "service-account", "--to-end"]);
    w.ok(&["plan", "-out", "plan.json"]);
    drop_before_wait(&w, "plan.json", "early.json");
    let (code, out, err) = w.run(&["rehearse", "early.json"]);
    assert_eq!(code, 1, "{out}{err}");
    let flat = err
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" │ ", " ");
    assert!(flat.contains("trustform::plan::trust_break"), "{err}");
    let (_, json, _) = w.run(&["rehearse", "early.json", "--format", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let breaks = v["breaks"].as_array().unwrap();
    // Every pod → API server edge breaks when that API server restarts without the old
    // key, and comes back with the fresh tokens; nothing else breaks.
    let pods: Vec<String> = {
        let (_, text, _) =
            common::kubectl_with(&w.admin_conf(), &["get", "pods", "-A", "-o", "json"]);
        let v: Value = serde_json::from_str(&text).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let mut broken: Vec<String> = breaks
        .iter()
        .map(|b| b["edge"].as_str().unwrap().to_string())
        .collect();
    broken.sort();
    let mut want: Vec<String> = pods
        .iter()
        .flat_map(|p| ["cp-1", "cp-2"].map(|api| format!("pod {p} → kube-apiserver on {api}")))
        .collect();
    want.sort();
    assert_eq!(broken, want, "{json}");
    for b in breaks {
        let why = b["why"].as_str().unwrap();
        assert!(
            why.contains("presents a service-account token signed by service-account (sha256:")
                && why.contains("accepts only service-account-20")
                && why.ends_with(
                    "(--service-account-key-file /etc/kubernetes/pki/sa.pub as it read it at its last start)"
                ),
            "{why}"
        );
        assert!(
            b["at"]
                .as_str()
                .unwrap()
                .contains("restart-apiserver-drop-old"),
            "{b}"
        );
        assert!(
            b["restored"].as_str().unwrap().contains("wait-tokens"),
            "{b}"
        );
    }
    // The first break names its pod in the refusal; apply refuses too, before touching
    // anything.
    assert!(flat.contains("would break a trust edge: pod "), "{err}");
    let before = std::fs::read(w.node("cp-1").join("etc/kubernetes/pki/sa.pub")).unwrap();
    let (code, _, err) = w.run(&["apply", "early.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("would break a trust edge"), "{err}");
    assert_eq!(
        std::fs::read(w.node("cp-1").join("etc/kubernetes/pki/sa.pub")).unwrap(),
        before
    );
}

/// `systemctl <verb> kubelet` on w-1.
fn kubelet(w: &Workdir, verb: &str) {
    let (code, _, err) = w.run(&[
        "sandbox",
        "node-exec",
        "cluster",
        "w-1",
        "--",
        "systemctl",
        verb,
        "kubelet",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_kubelet_that_does_not_refresh_its_pods_tokens_fails_the_wait_naming_them_and_apply_resumes() {
    let (w, _up) = cluster();
    let sa_pub = w.node("cp-1").join("etc/kubernetes/pki/sa.pub");
    w.ok(&["rotate", "service-account", "--to-end"]);
    w.ok(&["plan", "-out", "plan.json"]);
    // The API servers and controller managers sign with the new key; then w-1's kubelet
    // stops, so its pods keep the tokens the old key signed.
    let out = w
        .cmd()
        .args(["apply", "plan.json"])
        .env(
            "TRUSTFORM_FAULT",
            "after:service-account-key/restart-controller-manager@cp-2",
        )
        .output()
        .unwrap();
    assert!(common::fault_fired(&out), "{out:?}");
    kubelet(&w, "stop");
    let on_w1: Vec<String> = token_files(&w)
        .into_iter()
        .filter(|(n, _, _)| n == "w-1")
        .map(|(_, uid, _)| uid)
        .collect();
    assert!(!on_w1.is_empty());
    let (code, out, err) = w.run(&["apply", "plan.json", "--wait-timeout", "2s"]);
    assert_eq!(code, 1, "{out}{err}");
    let err = format!("{out}{err}");
    let flat = err.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("then `trustform apply` resumes with this step; the old key stays accepted until the tokens are fresh"),
        "{err}"
    );
    assert!(
        flat.contains(&format!(
            "{} pods still hold a service-account token not signed by key sha256:",
            on_w1.len()
        )),
        "{err}"
    );
    assert!(flat.contains(" on w-1 (key sha256:"), "{err}");
    assert!(
        !flat.contains(" on cp-1 (key"),
        "cp-1's kubelet refreshed: {err}"
    );
    // The old key is still accepted: nothing after the wait ran.
    assert_eq!(
        std::fs::read_to_string(&sa_pub)
            .unwrap()
            .matches("BEGIN PUBLIC KEY")
            .count(),
        2
    );
    // The kubelet comes back (its restart fetches a token for each of its pods), and the
    // apply resumes at the wait, to the end.
    kubelet(&w, "start");
    let (code, out, err) = w.run(&["apply", "plan.json"]);
    assert_eq!(code, 0, "{out}{err}");
    let new = openssl_kid(&new_public_key(&w));
    for (p, kid) in kids(&w) {
        assert_eq!(kid, new, "{}", p.display());
    }
    assert!(w.ok(&["plan"]).contains("No changes."));
}
