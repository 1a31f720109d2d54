//! The Kubernetes API side end to end: a seeded sandbox, its API server running as its own
//! process (`trustform sandbox up`), and `trustform` observing and acting through kube-rs;
//! `kubectl` and `openssl` as witnesses.

use crate::common;

use common::Workdir;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// kubectl with the sandbox's admin kubeconfig: (success, stdout, stderr).
fn kubectl(w: &Workdir, args: &[&str]) -> (bool, String, String) {
    common::kubectl_with(&w.admin_conf(), args)
}

/// kubectl's JSON; tried up to five times, as kubectl itself does not retry the 500s
/// the fault test injects.
fn kubectl_json(w: &Workdir, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let mut last = String::new();
    for _ in 0..5 {
        let (ok, out, err) = kubectl(w, &a);
        if ok {
            return serde_json::from_str(&out).expect("kubectl prints JSON");
        }
        last = err;
    }
    panic!("kubectl {args:?}: {last}");
}

/// A seeded sandbox: 2 control planes, 1 worker.
fn seeded(namespaces: usize, workloads: usize, secrets: usize, webhooks: usize) -> Workdir {
    common::seeded(&[
        "--namespaces",
        &namespaces.to_string(),
        "--workloads",
        &workloads.to_string(),
        "--legacy-token-secrets",
        &secrets.to_string(),
        "--webhooks",
        &webhooks.to_string(),
    ])
}

/// SHA-256 fingerprints of the certificates in a PEM text.
fn fps(pem: &str) -> Vec<String> {
    trustform::exec::kube::cluster::fingerprints(pem)
        .into_iter()
        .map(|f| f.0)
        .collect()
}

fn b64d(s: &str) -> String {
    use base64::Engine;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64"),
    )
    .expect("utf-8")
}

fn ca_fps(w: &Workdir, file: &str) -> Vec<String> {
    fps(&std::fs::read_to_string(w.node("cp-1").join("etc/kubernetes/pki").join(file)).unwrap())
}

/// Every namespace's kube-root-ca.crt, as fingerprint lists.
fn root_cas(w: &Workdir) -> Vec<(String, Vec<String>)> {
    let v = kubectl_json(
        w,
        &[
            "get",
            "configmaps",
            "-A",
            "--field-selector",
            "metadata.name=kube-root-ca.crt",
        ],
    );
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|cm| {
            (
                cm["metadata"]["namespace"].as_str().unwrap().to_string(),
                fps(cm["data"]["ca.crt"].as_str().unwrap()),
            )
        })
        .collect()
}

/// Every legacy token secret's ca.crt, raw bytes (base64 as the API holds them).
fn token_secrets(w: &Workdir) -> Vec<(String, String)> {
    let v = kubectl_json(
        w,
        &[
            "get",
            "secrets",
            "-A",
            "--field-selector",
            "type=kubernetes.io/service-account-token",
        ],
    );
    let mut out: Vec<(String, String)> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                format!(
                    "{}/{}",
                    s["metadata"]["namespace"].as_str().unwrap(),
                    s["metadata"]["name"].as_str().unwrap()
                ),
                s["data"]["ca.crt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Every pod's in-memory trust (the sandbox's pods report it).
fn pod_trust(w: &Workdir) -> Vec<(String, Option<String>, Vec<String>)> {
    let v = kubectl_json(w, &["get", "pods", "-A"]);
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let owner = p["metadata"]["ownerReferences"][0]["kind"]
                .as_str()
                .map(str::to_string);
            let trust = p["metadata"]["annotations"]["sandbox.trustform.dev/trusted-ca-sha256"]
                .as_str()
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            (
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap()
                ),
                owner,
                trust,
            )
        })
        .collect()
}

fn webhook_bundles(w: &Workdir) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for kind in [
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
    ] {
        let v = kubectl_json(w, &["get", kind]);
        for o in v["items"].as_array().unwrap() {
            for (i, h) in o["webhooks"].as_array().unwrap().iter().enumerate() {
                out.push((
                    format!("{kind}/{}/{i}", o["metadata"]["name"].as_str().unwrap()),
                    fps(&b64d(h["clientConfig"]["caBundle"].as_str().unwrap())),
                ));
            }
        }
    }
    out.sort();
    out
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_full_rotation_moves_every_api_object_and_pod_to_the_new_ca() {
    let w = seeded(4, 6, 12, 4);
    let _up = common::Up::start(&w, None);
    let (ok, out, _) = kubectl(&w, &["get", "--raw", "/healthz"]);
    assert!(ok && out.trim() == "ok");
    w.ok(&["init", "--sandbox", "cluster"]);
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    assert!(cfg.contains("kube:"), "init records the API access:\n{cfg}");
    let old = ca_fps(&w, "ca.crt");
    assert_eq!(old.len(), 1);
    let before_bundles = webhook_bundles(&w);
    assert!(before_bundles.iter().any(|(_, f)| f == &old));
    assert!(before_bundles.iter().any(|(_, f)| f != &old));
    // The snapshot reads the API.
    let snap: Value = serde_json::from_str(&w.ok(&["snapshot"])).unwrap();
    let k = &snap["kube"];
    assert_eq!(
        k["namespaces"].as_u64(),
        Some(8),
        "4 system + 4 app namespaces"
    );
    assert_eq!(
        k["kube_root_ca"][0]["cas"][0].as_str(),
        Some(old[0].as_str())
    );
    assert!(
        k["pods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| !g["pods"].as_array().unwrap().is_empty())
    );

    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let plan = w.ok(&["plan", "-out", "plan.json"]);
    for doc in ["3", "4", "9", "11.1"] {
        assert!(
            plan.contains(&format!("[{doc}] kubernetes-ca/")),
            "documented step {doc} in the plan:\n{plan}"
        );
    }
    assert!(
        plan.contains("caBundle"),
        "caBundle updates are planned:\n{plan}"
    );
    let out = w.ok(&["apply", "plan.json", "--format", "json"]);
    assert!(out.contains("\"ok\":true"), "{out}");
    let new = ca_fps(&w, "ca.crt");
    assert_eq!(new.len(), 1);
    assert_ne!(new, old);

    // Every kube-root-ca.crt and token secret holds only the new CA.
    let rc = root_cas(&w);
    assert_eq!(rc.len(), 8);
    for (ns, cas) in &rc {
        assert_eq!(cas, &new, "{ns}/kube-root-ca.crt");
    }
    let secrets = token_secrets(&w);
    assert_eq!(secrets.len(), 12);
    for (name, data) in &secrets {
        assert_eq!(fps(&b64d(data)), new, "{name}");
    }
    // No pod with an owner trusts only a CA that is gone.
    for (pod, owner, trust) in pod_trust(&w) {
        if owner.is_some() {
            assert!(trust.contains(&new[0]), "{pod} trusts {trust:?}");
        }
    }
    // cluster-info holds one CA, and it verifies the new API server certificate.
    let ci = kubectl_json(
        &w,
        &["get", "configmap", "cluster-info", "-n", "kube-public"],
    );
    let kc: Value = serde_saphyr::from_str(ci["data"]["kubeconfig"].as_str().unwrap()).unwrap();
    let ca = b64d(
        kc["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(fps(&ca), new);
    write(&w.path().join("cluster-info-ca.pem"), &ca);
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(w.path().join("cluster-info-ca.pem"))
        .arg(w.node("cp-1").join("etc/kubernetes/pki/apiserver.crt"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // caBundles that held the old CA hold the new one; the others did not move.
    for ((name, before), (_, after)) in before_bundles.iter().zip(webhook_bundles(&w)) {
        if before == &old {
            assert_eq!(after, new, "{name}");
        } else {
            assert_eq!(&after, before, "{name}");
        }
    }
    // kubectl reaches the rotated API server with the rotated admin.conf.
    let (ok, out, err) = kubectl(&w, &["get", "--raw", "/healthz"]);
    assert!(ok && out.trim() == "ok", "{err}");
    // The Lease is released and the status is in the cluster for any machine.
    let lease = kubectl(
        &w,
        &[
            "get",
            "lease",
            "trustform",
            "-n",
            "kube-system",
            "-o",
            "json",
        ],
    );
    if lease.0 {
        let l: Value = serde_json::from_str(&lease.1).unwrap();
        assert!(
            l["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .is_empty()
        );
    }
    let other = tempfile::tempdir().unwrap();
    let cfg = std::fs::read_to_string(w.config())
        .unwrap()
        .replace(
            "kubeconfig: ",
            &format!("kubeconfig: {}/", w.path().display()),
        )
        .replace("root: ", &format!("root: {}/", w.path().display()));
    write(&other.path().join("trustform.yaml"), &cfg);
    let out = Command::new(assert_cmd::cargo::cargo_bin!("trustform"))
        .current_dir(other.path())
        .args(["status", "--format", "json"])
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "status from another machine: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(s["state"].as_str(), Some("done"), "{s}");
    let text = Command::new(assert_cmd::cargo::cargo_bin!("trustform"))
        .current_dir(other.path())
        .args(["status"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    insta::with_settings!({filters => vec![
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[port]"),
        (r"\b[0-9a-f]{12}\b", "[plan-id]"),
    ]}, {
        insta::assert_snapshot!("status_from_the_cluster", String::from_utf8_lossy(&text.stdout));
    });
    // Nothing left to do.
    let plan = w.ok(&["plan"]);
    assert!(plan.contains("No changes."), "{plan}");
}

#[test]
fn apply_completes_with_five_percent_500s_and_409s() {
    let w = seeded(3, 4, 6, 2);
    let _up = common::Up::start(&w, Some("500=0.05,409=0.05"));
    w.ok(&["init", "--sandbox", "cluster"]);
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let out = w.ok(&["apply", "--auto-approve", "--format", "json"]);
    assert!(out.contains("\"ok\":true"), "{out}");
    let new = ca_fps(&w, "ca.crt");
    for (ns, cas) in root_cas(&w) {
        assert_eq!(cas, new, "{ns}");
    }
}

#[test]
fn the_seed_shell_loop_gives_the_same_secrets_as_apply() {
    let w = seeded(3, 2, 9, 0);
    let _up = common::Up::start(&w, None);
    w.ok(&["init", "--sandbox", "cluster"]);
    let before = token_secrets(&w);
    assert_eq!(before.len(), 9);
    // Pre-rotate only: trustform's step 3 (the controller manager publishes the bundle).
    w.ok(&["rotate", "kubernetes"]);
    w.ok(&["apply", "--auto-approve"]);
    let ours = token_secrets(&w);
    assert_ne!(ours, before);
    for (name, data) in &ours {
        assert_eq!(fps(&b64d(data)).len(), 2, "{name} holds old and new CA");
    }
    // The documented loop (seed 001, doc step 3), verbatim but for the file path.
    let bundle = w.node("cp-1").join("etc/kubernetes/pki/ca.crt");
    let script = format!(
        r#"set -eu
base64_encoded_ca="$(base64 -w0 {bundle})"
for namespace in $(kubectl get ns --no-headers | awk '{{print $1}}'); do
for token in $(kubectl get secrets --namespace "$namespace" --field-selector type=kubernetes.io/service-account-token -o name); do
kubectl get $token --namespace "$namespace" -o yaml | \
/bin/sed "s/\(ca.crt:\).*/\1 ${{base64_encoded_ca}}/" | \
kubectl apply -f -
done
done
"#,
        bundle = bundle.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("KUBECONFIG", w.admin_conf())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        applied.lines().filter(|l| l.starts_with("secret/")).count(),
        9,
        "the loop applies every token secret:\n{applied}"
    );
    assert_eq!(
        token_secrets(&w),
        ours,
        "the loop and trustform agree byte for byte"
    );
}

/// kube-rs against the in-process server and controllers: a wait that names its
/// laggards, a rollout held back by a PodDisruptionBudget, then the same rollout once the
/// budget allows it.
#[test]
fn kube_rs_waits_and_rollouts_against_the_in_process_server() {
    use trustform::exec::kube::{Access, cluster, publish, rollout};
    use trustform::pki::{Fingerprint, KeyAlgorithm, issue::new_ca};
    use trustform::sandbox::{apiserver, controllers, runtime};
    let w = seeded(2, 3, 4, 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let server = apiserver::serve(&w.cluster(), apiserver::Options::default())
            .await
            .expect("serves");
        let ctl = controllers::spawn(&w.cluster(), server.store.clone());
        let access = Access {
            kubeconfigs: vec![w.admin_conf()],
            context: None,
        };
        let client = access
            .connect()
            .await
            .expect("connects over TLS with admin.conf");
        let old: Vec<Fingerprint> = ca_fps(&w, "ca.crt").into_iter().map(Fingerprint).collect();
        // A CA nobody publishes: the wait times out and names who is late.
        let other = new_ca("other", KeyAlgorithm::EcdsaP256, 30).unwrap();
        let other_fp = Fingerprint(fps(&other.cert_pem)[0].clone());
        let want = vec![old[0].clone(), other_fp.clone()];
        let e = publish::wait_root_ca(&client, &want, Duration::from_millis(600))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("kube-root-ca.crt") && e.contains("in all"),
            "{e}"
        );
        // Every pod trusts the old CA: nothing to restart.
        let r = rollout::restart_stale(&client, &old, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(r.restarted.is_empty(), "{:?}", r.restarted);
        // The controller manager publishes a bundle after its restart.
        let ca = w.node("cp-1").join("etc/kubernetes/pki/ca.crt");
        let bundle = std::fs::read_to_string(&ca).unwrap() + &other.cert_pem;
        std::fs::write(&ca, bundle).unwrap();
        runtime::restart(&w.node("cp-1"), "kube-controller-manager").unwrap();
        publish::wait_root_ca(&client, &want, Duration::from_secs(10))
            .await
            .expect("published");
        // A budget that allows no disruption holds a stale workload's rollout back.
        let rc = cluster::root_cas(&client).await.unwrap();
        let model = cluster::workloads(&client, &rc).await.unwrap();
        let target = model
            .workloads
            .iter()
            .find(|x| x.namespace.starts_with("app-") && !x.labels.is_empty())
            .expect("an app workload")
            .clone();
        let pdbs: kube::Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
            kube::Api::namespaced(client.clone(), &target.namespace);
        let pdb: k8s_openapi::api::policy::v1::PodDisruptionBudget =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "hold", "namespace": target.namespace},
                "spec": {"minAvailable": 1000, "selector": {"matchLabels": target.labels}}
            }))
            .unwrap();
        pdbs.create(&Default::default(), &pdb).await.unwrap();
        // The disruption controller has judged the new budget: no disruption allowed.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let b = pdbs.get("hold").await.unwrap();
            let judged = b.status.as_ref().is_some_and(|s| {
                s.observed_generation.is_some()
                    && s.observed_generation == b.metadata.generation
                    && s.disruptions_allowed == Some(0)
            });
            if judged {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for the status of PodDisruptionBudget hold: {:?}",
                b.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let e = rollout::restart_stale(&client, &want, Duration::from_millis(800))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("PodDisruptionBudget") && e.contains("hold"),
            "{e}"
        );
        pdbs.delete("hold", &Default::default()).await.unwrap();
        let r = rollout::restart_stale(&client, &want, Duration::from_secs(20))
            .await
            .expect("rollouts complete");
        assert!(
            r.restarted
                .contains(&format!("{}/{}", target.namespace, target.key())),
            "{:?}",
            r.restarted
        );
        let rc = cluster::root_cas(&client).await.unwrap();
        let after = cluster::workloads(&client, &rc).await.unwrap();
        for p in after.pods.iter().filter(|p| p.owner.is_some()) {
            assert!(
                p.trust.covers(&want),
                "{}/{} {:?}",
                p.namespace,
                p.name,
                p.trust
            );
        }
        ctl.stop().await;
        server.shutdown().await;
    });
}

/// The client certificate embedded in a kubeconfig, written beside it for openssl.
fn client_cert_of(kubeconfig: &Path, out: &Path) -> trustform::pki::CertFacts {
    let kc: trustform::pki::kubeconfig::Kubeconfig =
        serde_saphyr::from_str(&std::fs::read_to_string(kubeconfig).unwrap()).unwrap();
    let user = kc.current().1.expect("a current user").user.clone();
    let pem = b64d(user.client_certificate_data.as_deref().expect("embedded"));
    write(out, &pem);
    trustform::pki::parse_certs(&pem, "client")
        .unwrap()
        .remove(0)
        .facts
}

#[test]
fn a_copied_admin_conf_rotates_with_it_and_stays_live() {
    use std::os::unix::fs::PermissionsExt;
    let w = seeded(0, 0, 0, 0);
    let copy = w.node("cp-1").join("root/.kube/config");
    // `sandbox create` did what `kubeadm init` tells its user to.
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(w.admin_conf()).unwrap()
    );
    let _up = common::Up::start(&w, None);
    let (ok, out, err) = common::kubectl_with(&copy, &["get", "--raw", "/healthz"]);
    assert!(ok && out.trim() == "ok", "the copy reaches the API: {err}");
    w.ok(&["init", "--sandbox", "cluster"]);
    let cfg = std::fs::read_to_string(w.config()).unwrap();
    let cp1 = cfg.lines().find(|l| l.contains("name: cp-1")).unwrap();
    assert!(
        cp1.ends_with(", kubeconfigs: [/root/.kube/config] }"),
        "init lists the copy under cp-1: {cp1}"
    );
    assert!(
        cfg.lines().filter(|l| l.contains("kubeconfigs:")).count() == 1,
        "only cp-1 has a copy:\n{cfg}"
    );
    let original = std::fs::read(&copy).unwrap();
    let before = client_cert_of(&copy, &w.path().join("before.crt"));
    let old_ca = w.path().join("old-ca.crt");
    std::fs::copy(w.node("cp-1").join("etc/kubernetes/pki/ca.crt"), &old_ca).unwrap();

    // The plan moves the copy with admin.conf: in documented step 7 and when the old CA
    // leaves the control-plane kubeconfigs.
    w.ok(&["rotate", "kubernetes", "--to-end"]);
    let text = w.ok(&["plan", "-out", "plan.json"]);
    assert!(
        text.contains("cp-1:/root/.kube/config (client certificate)"),
        "{text}"
    );
    let plan: Value =
        serde_json::from_str(&std::fs::read_to_string(w.path().join("plan.json")).unwrap())
            .unwrap();
    let fields_at = |template: &str| -> Vec<String> {
        plan["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["template"] == template && s["target"] == "cp-1")
            .flat_map(|s| s["ops"].as_array().unwrap().iter())
            .filter(|op| op["path"] == "/root/.kube/config")
            .map(|op| op["field"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        fields_at("user-kubeconfigs"),
        ["kubeconfig-ca", "kubeconfig-client"],
        "documented step 7"
    );
    assert_eq!(
        fields_at("control-plane-kubeconfigs-drop-old"),
        ["kubeconfig-ca"],
        "the old CA leaves the copy with admin.conf"
    );
    let step7 = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["template"] == "user-kubeconfigs" && s["target"] == "cp-1")
        .unwrap();
    assert_eq!(step7["doc_step"], "7");

    let out = w.ok(&["apply", "plan.json", "--format", "json"]);
    assert!(out.contains("\"ok\":true"), "{out}");

    // The witnesses: kubectl with the copy reaches the rotated API server, and openssl
    // verifies its new client certificate against the new CA (and not the old one).
    let (ok, out, err) = common::kubectl_with(&copy, &["get", "--raw", "/healthz"]);
    assert!(ok && out.trim() == "ok", "the copy stays live: {err}");
    let new_ca = w.node("cp-1").join("etc/kubernetes/pki/ca.crt");
    let after = client_cert_of(&copy, &w.path().join("after.crt"));
    assert!(common::openssl_verify(&new_ca, &w.path().join("after.crt")).is_ok());
    assert!(common::openssl_verify(&old_ca, &w.path().join("after.crt")).is_err());
    assert!(common::openssl_verify(&new_ca, &w.path().join("before.crt")).is_err());
    // Same identity, re-issued.
    assert_eq!(
        (&after.common_name, &after.organizations),
        (&before.common_name, &before.organizations)
    );
    assert_ne!(after.fingerprint, before.fingerprint);
    // Its CA data is the new CA alone, as admin.conf's.
    let (_, data, _) = common::kubectl_with(
        &copy,
        &[
            "config",
            "view",
            "--raw",
            "-o",
            "jsonpath={.clusters[0].cluster.certificate-authority-data}",
        ],
    );
    assert_eq!(
        fps(&b64d(data.trim())),
        fps(&std::fs::read_to_string(&new_ca).unwrap())
    );
    // 0600 (it holds a key), and backed up byte for byte before the first change.
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let backups = common::files_under(&w.path().join(".trustform/backup"));
    let backup = backups
        .iter()
        .find(|p| p.ends_with("cp-1/root/.kube/config"))
        .expect("a backup of the copy");
    assert_eq!(std::fs::read(backup).unwrap(), original);
    assert!(w.ok(&["plan"]).contains("No changes."));
}

#[test]
fn bare_pods_are_a_seed_option() {
    let count = |bare: Option<&str>| {
        let w = Workdir {
            tmp: tempfile::tempdir().expect("tempdir"),
        };
        let mut args = vec![
            "sandbox",
            "create",
            "cluster",
            "--control-planes",
            "1",
            "--workers",
            "1",
            "--key-algorithm",
            "ecdsa-p256",
            "--workloads",
            "3",
        ];
        if let Some(n) = bare {
            args.extend(["--bare-pods", n]);
        }
        w.ok(&args);
        let store = trustform::sandbox::apiserver::store::Store::open(&w.cluster()).unwrap();
        let pods = store.list("pods", None);
        assert!(!pods.is_empty());
        pods.iter()
            .filter(|p| p["metadata"]["ownerReferences"].is_null())
            .map(|p| {
                format!(
                    "{}/{}",
                    p["metadata"]["namespace"].as_str().unwrap(),
                    p["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(count(Some("0")), Vec::<String>::new());
    assert_eq!(count(None), ["default/netshoot", "default/toolbox"]);
    assert_eq!(
        count(Some("3")),
        ["default/netshoot", "default/netshoot-3", "default/toolbox"]
    );
}
