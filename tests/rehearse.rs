//! Rehearse: the continuity proof `plan` prints, and the plans it refuses.

use crate::common;

use trustform::plan::Plan;

fn rotated(cps: usize, workers: usize) -> common::Workdir {
    let w = common::initialised(cps, workers);
    for auth in ["kubernetes", "front-proxy"] {
        w.ok(&["rotate", auth, "--to-end", "--algorithm", "ecdsa-p256"]);
    }
    w
}

#[test]
fn plan_proves_every_edge_stays_live() {
    let w = rotated(2, 1);
    let out = w.ok(&["plan", "-out", "plan.json"]);
    let plan: Plan =
        serde_json::from_slice(&std::fs::read(w.path().join("plan.json")).unwrap()).unwrap();
    let r = plan
        .continuity
        .as_ref()
        .expect("a plan carries its rehearsal");
    // 2 control planes + 1 worker, no API objects:
    //   controller-manager, scheduler, kubelet → own API server:  2 × 3 = 6
    //   worker kubelet → both API servers:                         2
    //   admin.conf on each cp, super-admin.conf and the copy
    //   /root/.kube/config on cp-1 → both API servers:            4 × 2 = 8
    //   API servers → 3 kubelets:                          2 × 3 = 6
    //   API server → own etcd, → aggregated server:        2 × 2 = 4
    //   etcd peers, both directions:                               2
    assert_eq!(r.edges, 28, "{out}");
    assert_eq!(r.steps, plan.steps.len());
    assert!(r.breaks.is_empty() && r.broken_before.is_empty(), "{r:?}");
    assert!(r.gaps.is_empty(), "two API servers: no gap: {:?}", r.gaps);
    // kubeadm sets no --kubelet-certificate-authority: the API servers → kubelets edges
    // are unverified on the server side (their client side is judged).
    assert_eq!(r.unverified.len(), 6, "{r:?}");
    assert!(
        r.unverified
            .iter()
            .all(|u| u.edge.starts_with("kube-apiserver on cp-")
                && u.edge.contains(" → kubelet on ")
                && u.why.contains("no --kubelet-certificate-authority")),
        "{r:?}"
    );
    assert!(
        out.contains(&format!(
            "Continuity: 28 edges stay live through all {} steps; 6 edges unverified (the API server does not verify kubelet serving certificates: no --kubelet-certificate-authority, as kubeadm leaves it).",
            plan.steps.len()
        )),
        "{out}"
    );
    // The saved plan rehearses the same on the unchanged cluster.
    let again = w.ok(&["rehearse", "plan.json"]);
    assert!(
        again.starts_with("Continuity: 28 edges stay live"),
        "{again}"
    );
    let json = w.ok(&["rehearse", "plan.json", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["edges"], 28);
    assert_eq!(v["breaks"].as_array().unwrap().len(), 0);
    assert_eq!(v["unverified"].as_array().unwrap().len(), 6);
    assert!(
        again.contains("\n    kube-apiserver on cp-2 → kubelet on w-1\n"),
        "rehearse lists the unverified edges:\n{again}"
    );
}

#[test]
fn a_single_api_server_restart_is_an_availability_gap_not_a_break() {
    let w = rotated(1, 1);
    let out = w.ok(&["plan"]);
    assert!(out.contains("edges stay live through all"), "{out}");
    assert!(
        out.contains(
            "availability gap at step 5 apiserver-client-ca on cp-1: the only API server restarts"
        ),
        "{out}"
    );
}

#[test]
fn a_plan_that_swaps_the_api_server_cert_before_the_kubelets_trust_is_refused() {
    let w = rotated(2, 1);
    w.ok(&["plan", "-out", "plan.json"]);
    common::swap_apiserver_before_kubelets(&w, "plan.json", "swapped.json");
    let (code, out, err) = w.run(&["rehearse", "swapped.json"]);
    assert_eq!(code, 1, "{out}{err}");
    {
        let mut settings = insta::Settings::clone_current();
        for (re, with) in common::redactions() {
            settings.add_filter(re, with);
        }
        settings.bind(|| {
            insta::assert_snapshot!("rehearse_swapped_stdout", out);
            insta::assert_snapshot!("rehearse_swapped_stderr", err);
        });
    }
    let flat = err
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" │ ", " ");
    assert!(
        flat.contains("trustform::plan::trust_break")
            && flat.contains("step restart-apiserver on cp-1 would break a trust edge: kubelet on cp-1 → kube-apiserver on cp-1"),
        "{err}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&w.run(&["rehearse", "swapped.json", "--format", "json"]).1).unwrap();
    let first = &v["breaks"][0];
    assert_eq!(first["at"], "step restart-apiserver on cp-1");
    assert_eq!(first["edge"], "kubelet on cp-1 → kube-apiserver on cp-1");
    let why = first["why"].as_str().unwrap();
    assert!(
        why.starts_with("kube-apiserver on cp-1 serves a certificate issued by kubernetes-")
            && why.contains("but kubelet on cp-1 trusts only kubernetes (sha256:")
            && why.ends_with("(/etc/kubernetes/kubelet.conf as it read it at its last start)"),
        "{why}"
    );
    // Every edge between the API servers and the kubelets breaks, in both directions,
    // and comes back when the kubelets restart; nothing else breaks.
    let mut broken: Vec<String> = v["breaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["edge"].as_str().unwrap().to_string())
        .collect();
    broken.sort();
    let mut want = vec![];
    for api in ["cp-1", "cp-2"] {
        for k in ["cp-1", "cp-2", "w-1"] {
            want.push(format!("kube-apiserver on {api} → kubelet on {k}"));
        }
    }
    for (k, apis) in [
        ("cp-1", vec!["cp-1"]),
        ("cp-2", vec!["cp-2"]),
        ("w-1", vec!["cp-1", "cp-2"]),
    ] {
        for api in apis {
            want.push(format!("kubelet on {k} → kube-apiserver on {api}"));
        }
    }
    want.sort();
    assert_eq!(broken, want);
    assert!(
        v["breaks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["restored"].as_str().unwrap().contains("restart-kubelet")),
        "{v}"
    );
    // apply refuses it too, before touching anything.
    let (code, _, err) = w.run(&["apply", "swapped.json"]);
    assert_eq!(code, 1);
    assert!(err.contains("would break a trust edge"), "{err}");
    assert!(
        !w.path().join(".trustform/journal").exists()
            || common::files_under(&w.path().join(".trustform/journal")).is_empty()
    );
}

#[test]
fn no_stages_is_refused_with_the_reason() {
    let w = rotated(1, 1);
    let (code, _, err) = w.run(&["plan", "--no-stages"]);
    assert_eq!(code, 1, "{err}");
    let mut settings = insta::Settings::clone_current();
    for (re, with) in common::redactions() {
        settings.add_filter(re, with);
    }
    settings.bind(|| insta::assert_snapshot!("plan_no_stages_refused", err));
    assert!(err.contains("would break a trust edge"), "{err}");
    assert!(err.contains("--no-stages"), "{err}");
}
