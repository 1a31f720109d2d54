//! The sandbox's seeded API objects and its simulated controllers, in process: a seeded
//! store, `controllers::spawn`, and the simulated processes restarted by hand.

use crate::common;

use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use trustform::pki::KeyAlgorithm;
use trustform::pki::issue::new_ca;
use trustform::sandbox::apiserver::store::{EventKind, Store};
use trustform::sandbox::controllers::{
    self, Controllers, Options, extension_auth, rollout, root_ca,
};
use trustform::sandbox::objects::{self, KUBELET_GENERATION, TRUSTED_CA};
use trustform::sandbox::seed::{Seed, SeedReport};
use trustform::sandbox::{self, Spec, runtime};

struct Cluster {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    report: SeedReport,
}

impl Cluster {
    fn new(cps: usize, workers: usize, seed: Seed) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cluster");
        let spec = Spec {
            control_planes: cps,
            workers,
            algorithm: KeyAlgorithm::EcdsaP256,
            seed,
            kubelet_serving: Default::default(),
        };
        let (_, report) = sandbox::create_seeded(&dir, &spec).expect("sandbox");
        Self {
            _tmp: tmp,
            dir,
            report,
        }
    }
    fn node(&self, name: &str) -> PathBuf {
        self.dir.join("nodes").join(name)
    }
    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.node("cp-1").join("etc/kubernetes/pki/ca.crt")).unwrap()
    }
    /// Append a new CA to a PEM file of cp-1 (on disk only: nothing has restarted).
    fn append_ca(&self, rel: &str, cn: &str) -> String {
        let path = self.node("cp-1").join(rel);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&new_ca(cn, KeyAlgorithm::EcdsaP256, 365).unwrap().cert_pem);
        std::fs::write(&path, &text).unwrap();
        text
    }
}

fn fast() -> Options {
    Options {
        poll: Duration::from_millis(50),
        rollout_step: Duration::from_millis(20),
        heartbeat: Duration::from_millis(500),
    }
}

/// Wait (polling) until `ok` holds; panics with `what` after `secs` seconds.
async fn until(secs: u64, what: &str, ok: impl FnMut() -> bool) {
    until_every(secs, Duration::from_millis(25), what, ok).await;
}

/// [`until`], checking every `every`.
async fn until_every(secs: u64, every: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

/// Wait until `n` passes that began after this call have finished (`passes` counts the
/// finished ones): the witness that a controller has had its chance to act on what the
/// test did before calling. Panics naming `what` after `secs` seconds.
async fn passes_after(secs: u64, n: u64, what: &str, passes: impl Fn() -> u64) {
    // A pass in flight now may have begun before the change: it does not count.
    let target = passes() + n + 1;
    until(secs, what, || passes() >= target).await;
}

/// [`passes_after`] for a controller's passes ([`Controllers::passes`]).
async fn controller_passes(ctl: &Controllers, controller: &str, n: u64) {
    let what = format!("{n} passes of the {controller} controller");
    passes_after(20, n, &what, || ctl.passes(controller)).await;
}

fn count(store: &Store, plural: &str, f: impl Fn(&Value) -> bool) -> usize {
    store.list(plural, None).iter().filter(|o| f(o)).count()
}

fn fingerprints(pem: &str) -> String {
    objects::bundle_fingerprints(pem)
}

/// Whether no object of `plural` matches `bad` (nothing is copied out of the store).
fn none(store: &Store, plural: &str, bad: &dyn Fn(&Value) -> bool) -> bool {
    store
        .list_page(plural, None, None, Some(1), bad)
        .items
        .is_empty()
}

fn root_ca_everywhere(store: &Store, pem: &str) -> bool {
    let with = std::sync::Mutex::new(std::collections::HashSet::new());
    let good = none(store, "configmaps", &|cm| {
        if objects::name(cm) != "kube-root-ca.crt" {
            return false;
        }
        with.lock()
            .unwrap()
            .insert(objects::meta_str(cm, "namespace").to_string());
        cm["data"]["ca.crt"] != pem
    });
    let with = with.into_inner().unwrap();
    good && none(store, "namespaces", &|ns| !with.contains(objects::name(ns)))
}

fn tokens_hold(store: &Store, pem: &str) -> bool {
    let b64 = objects::b64(pem.as_bytes());
    none(store, "secrets", &|s| {
        s["type"] == objects::TOKEN_SECRET_TYPE && s["data"]["ca.crt"] != b64.as_str()
    })
}

fn pods_of<'a>(pods: &'a [Value], workload: &Value) -> Vec<&'a Value> {
    let uid = objects::meta_str(workload, "uid");
    pods.iter()
        .filter(|p| objects::controller_uid(p) == Some(uid))
        .collect()
}

fn restart_template(store: &Store, plural: &str, ns: &str, name: &str, at: &str) {
    store
        .mutate(plural, Some(ns), name, |w| {
            w["spec"]["template"]["metadata"]["annotations"] =
                json!({ "kubectl.kubernetes.io/restartedAt": at });
        })
        .expect("workload exists");
}

#[test]
fn seeding_counts_are_exact_and_survive_reopen() {
    let (n, m, k, w) = (7, 23, 40, 6);
    let c = Cluster::new(
        1,
        2,
        Seed {
            namespaces: n,
            workloads: m,
            legacy_token_secrets: k,
            webhooks: w,
            ..Seed::default()
        },
    );
    let store = Store::open(&c.dir).unwrap();
    // What the seeding rules make.
    let mut deployments = 1;
    let mut daemonsets = 1;
    let mut statefulsets = 0;
    let mut pdbs = 1;
    let workers = 2;
    let mut pods = 2 + 3 + 2; // coredns, kube-proxy on every node, two bare pods
    for i in 0..m {
        match i % 10 {
            3 => {
                daemonsets += 1;
                pods += workers;
            }
            7 => {
                statefulsets += 1;
                pods += 1 + (i / 10) % 3;
            }
            _ => {
                deployments += 1;
                pods += 1 + i % 3;
                if 1 + i % 3 >= 2 && i % 4 == 1 {
                    pdbs += 1;
                }
            }
        }
    }
    let expected = SeedReport {
        namespaces: 4 + n,
        service_accounts: 4 + n + 2,
        configmaps: 4 + n + 4,
        token_secrets: k,
        opaque_secrets: 3,
        deployments,
        daemonsets,
        statefulsets,
        pods,
        bare_pods: 2,
        pod_disruption_budgets: pdbs,
        validating_webhooks: w.div_ceil(2),
        mutating_webhooks: w / 2,
        api_services: 1,
        crds: 1,
        nodes: 3,
    };
    assert_eq!(c.report, expected);
    let check = |store: &Store| {
        let all = |p: &str| store.list(p, None).len();
        assert_eq!(all("namespaces"), expected.namespaces);
        assert_eq!(all("serviceaccounts"), expected.service_accounts);
        assert_eq!(all("configmaps"), expected.configmaps);
        assert_eq!(
            count(store, "secrets", |s| s["type"]
                == objects::TOKEN_SECRET_TYPE),
            k
        );
        assert_eq!(count(store, "secrets", |s| s["type"] == "Opaque"), 3);
        assert_eq!(all("deployments"), deployments);
        assert_eq!(all("daemonsets"), daemonsets);
        assert_eq!(all("statefulsets"), statefulsets);
        assert_eq!(all("pods"), pods);
        assert_eq!(
            count(store, "pods", |p| p
                .pointer("/metadata/ownerReferences")
                .is_none()),
            2
        );
        assert_eq!(all("poddisruptionbudgets"), pdbs);
        assert_eq!(all("validatingwebhookconfigurations"), 3);
        assert_eq!(all("mutatingwebhookconfigurations"), 3);
        assert_eq!(all("apiservices"), 1);
        assert_eq!(all("customresourcedefinitions"), 1);
        assert_eq!(all("nodes"), 3);
    };
    check(&store);

    // Trust: every kube-root-ca.crt and token secret holds cp-1's CA; pods remember it.
    let ca = c.ca_pem();
    assert!(root_ca_everywhere(&store, &ca));
    assert!(tokens_hold(&store, &ca));
    let fp = fingerprints(&ca);
    assert!(fp.starts_with("sha256:") && fp.len() == 71, "{fp}");
    for p in store.list("pods", None) {
        assert_eq!(objects::annotation(&p, TRUSTED_CA), Some(fp.as_str()));
        let at = objects::annotation(&p, objects::TRUSTED_CA_AT).unwrap();
        let cm = store
            .get(
                "configmaps",
                Some(objects::meta_str(&p, "namespace")),
                "kube-root-ca.crt",
            )
            .unwrap();
        assert_eq!(at, objects::meta_str(&cm, "resourceVersion"));
        assert_eq!(p["status"]["phase"], "Running");
        let projected = p["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"].as_str().unwrap().starts_with("kube-api-access-"))
            .expect("service-account volume");
        assert_eq!(
            projected["projected"]["sources"][1]["configMap"]["name"],
            "kube-root-ca.crt"
        );
    }
    // Owner references point at the workloads.
    for d in store.list("deployments", None) {
        let ps = store.list("pods", Some(objects::meta_str(&d, "namespace")));
        assert_eq!(
            pods_of(&ps, &d).len() as i64,
            d["spec"]["replicas"].as_i64().unwrap()
        );
        assert_eq!(d["status"]["updatedReplicas"], d["spec"]["replicas"]);
    }
    // cluster-info is kubeadm's: one cluster, the CA, no users.
    let info = store
        .get("configmaps", Some("kube-public"), "cluster-info")
        .unwrap();
    // (`contexts: null`, `users: null`: Go's nil slices, as kubeadm marshals them.)
    let kc: Value = serde_saphyr::from_str(info["data"]["kubeconfig"].as_str().unwrap()).unwrap();
    assert_eq!(kc["clusters"].as_array().unwrap().len(), 1);
    assert!(kc["users"].is_null() && kc["contexts"].is_null());
    assert_eq!(
        kc["clusters"][0]["cluster"]["certificate-authority-data"],
        objects::b64(ca.as_bytes()).as_str()
    );
    assert_eq!(
        kc["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:6443"
    );
    // Webhooks: every other pair trusts the cluster CA; the others a CA of their own.
    let ca_b64 = objects::b64(ca.as_bytes());
    let mut cluster_ca = 0;
    let mut other = 0;
    for plural in [
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
    ] {
        for cfg in store.list(plural, None) {
            for hook in cfg["webhooks"].as_array().unwrap() {
                if hook["clientConfig"]["caBundle"] == ca_b64.as_str() {
                    cluster_ca += 1;
                } else {
                    other += 1;
                    let pem = objects::b64(b"");
                    assert_ne!(hook["clientConfig"]["caBundle"], pem.as_str());
                }
            }
        }
    }
    assert!(cluster_ca > 0 && other > 0, "{cluster_ca} {other}");
    let api = store
        .get("apiservices", None, "v1beta1.metrics.k8s.io")
        .unwrap();
    assert_eq!(api["spec"]["caBundle"], ca_b64.as_str());
    let crd = store
        .get("customresourcedefinitions", None, "widgets.example.com")
        .unwrap();
    assert_eq!(
        crd["spec"]["conversion"]["webhook"]["clientConfig"]["caBundle"],
        ca_b64.as_str()
    );
    // The store is durable. (A process another test forks at the moment holds a copy of
    // the lock's descriptor until it execs: flock locks follow the open file, so the
    // reopen may see it busy for that instant.)
    drop(store);
    let start = std::time::Instant::now();
    let store = loop {
        match Store::open(&c.dir) {
            Err(trustform::sandbox::apiserver::store::StoreError::Busy { .. })
                if start.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => break r.unwrap(),
        }
    };
    check(&store);
}

#[test]
fn default_seed_is_the_system_cluster() {
    let c = Cluster::new(1, 0, Seed::default());
    let store = Store::open(&c.dir).unwrap();
    let names: Vec<String> = store
        .list("namespaces", None)
        .iter()
        .map(|n| objects::name(n).to_string())
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert!(
        store
            .get("deployments", Some("kube-system"), "coredns")
            .is_some()
    );
    assert!(
        store
            .get("daemonsets", Some("kube-system"), "kube-proxy")
            .is_some()
    );
    assert!(store.list("secrets", None).is_empty());
    assert!(
        store
            .list("validatingwebhookconfigurations", None)
            .is_empty()
    );
    // Control planes only: coredns tolerates the control-plane taint, runs there.
    assert_eq!(store.list("pods", Some("kube-system")).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_ca_follows_the_controller_manager_not_the_disk() {
    let c = Cluster::new(
        1,
        1,
        Seed {
            namespaces: 20,
            workloads: 0,
            legacy_token_secrets: 60,
            webhooks: 0,
            ..Seed::default()
        },
    );
    let store = Store::open(&c.dir).unwrap();
    let old = c.ca_pem();
    let ctl = controllers::spawn_with(&c.dir, store.clone(), fast());
    let bundle = c.append_ca("etc/kubernetes/pki/ca.crt", "kubernetes-next");
    // The publisher looks at the controller manager (twice) after the disk changed.
    controller_passes(&ctl, root_ca::NAME, 2).await;
    assert!(root_ca_everywhere(&store, &old), "KCM has not restarted");
    assert!(tokens_hold(&store, &old));

    runtime::restart(&c.node("cp-1"), "kube-controller-manager").unwrap();
    until(5, "kube-root-ca.crt everywhere", || {
        root_ca_everywhere(&store, &bundle)
    })
    .await;
    until(5, "token secrets", || tokens_hold(&store, &bundle)).await;
    let cm = store
        .get("configmaps", Some("app-3"), "kube-root-ca.crt")
        .unwrap();
    assert!(
        cm["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["manager"] == "kube-controller-manager"),
        "{cm}"
    );

    // A new namespace gets it at once.
    store
        .create("namespaces", objects::namespace("late"))
        .unwrap();
    until(3, "kube-root-ca.crt in a new namespace", || {
        store
            .get("configmaps", Some("late"), "kube-root-ca.crt")
            .is_some_and(|cm| cm["data"]["ca.crt"] == bundle.as_str())
    })
    .await;
    // A new legacy token secret gets the CA too.
    store
        .create(
            "secrets",
            json!({"metadata": {"name": "ci-token", "namespace": "late",
                    "annotations": {"kubernetes.io/service-account.name": "default"}},
                   "type": objects::TOKEN_SECRET_TYPE, "data": {}}),
        )
        .unwrap();
    until(3, "ca.crt in a new token secret", || {
        tokens_hold(&store, &bundle)
    })
    .await;

    // A hand edit is put back, so is a deletion.
    store
        .mutate("configmaps", Some("app-1"), "kube-root-ca.crt", |cm| {
            cm["data"]["ca.crt"] = json!("tampered");
        })
        .unwrap();
    store
        .delete("configmaps", Some("app-2"), "kube-root-ca.crt")
        .unwrap();
    until(3, "hand edits reverted", || {
        root_ca_everywhere(&store, &bundle)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_the_next_running_controller_manager() {
    let c = Cluster::new(2, 0, Seed::default());
    let store = Store::open(&c.dir).unwrap();
    // cp-2's controller manager restarts onto a bundle; cp-1 still leads.
    let cp2_ca = c.dir.join("nodes/cp-2/etc/kubernetes/pki/ca.crt");
    let mut bundle = std::fs::read_to_string(&cp2_ca).unwrap();
    bundle.push_str(
        &new_ca("next", KeyAlgorithm::EcdsaP256, 30)
            .unwrap()
            .cert_pem,
    );
    std::fs::write(&cp2_ca, &bundle).unwrap();
    runtime::restart(&c.node("cp-2"), "kube-controller-manager").unwrap();
    let ctl = controllers::spawn_with(&c.dir, store.clone(), fast());
    // The publisher has seen both controller managers and chosen its leader.
    controller_passes(&ctl, root_ca::NAME, 2).await;
    assert!(root_ca_everywhere(&store, &c.ca_pem()));
    // cp-1's controller manager stops: cp-2 leads and publishes what it holds.
    std::fs::remove_file(
        c.node("cp-1")
            .join("run/trustform-sandbox/kube-controller-manager.json"),
    )
    .unwrap();
    until(5, "the new leader's CA", || {
        root_ca_everywhere(&store, &bundle)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts_replace_pods_which_read_the_new_bundle() {
    let c = Cluster::new(
        1,
        2,
        Seed {
            namespaces: 2,
            workloads: 8,
            legacy_token_secrets: 0,
            webhooks: 0,
            ..Seed::default()
        },
    );
    let store = Store::open(&c.dir).unwrap();
    let _ctl = controllers::spawn_with(&c.dir, store.clone(), fast());
    let bundle = c.append_ca("etc/kubernetes/pki/ca.crt", "kubernetes-next");
    runtime::restart(&c.node("cp-1"), "kube-controller-manager").unwrap();
    until(5, "new bundle published", || {
        root_ca_everywhere(&store, &bundle)
    })
    .await;
    let new_trust = fingerprints(&bundle);
    assert_eq!(new_trust.split(',').count(), 2);

    // worker-3: a Deployment with 3 replicas in app-1.
    let before = store.list("pods", Some("app-1"));
    let d = store.get("deployments", Some("app-1"), "worker-3").unwrap();
    let old_pods: Vec<String> = pods_of(&before, &d)
        .iter()
        .map(|p| objects::name(p).to_string())
        .collect();
    assert_eq!(old_pods.len(), 3);
    let mut events = store.subscribe();
    restart_template(
        &store,
        "deployments",
        "app-1",
        "worker-3",
        "2025-01-01T00:00:00Z",
    );
    until(10, "worker-3 rolled out", || {
        let d = store.get("deployments", Some("app-1"), "worker-3").unwrap();
        let pods = store.list("pods", Some("app-1"));
        let mine = pods_of(&pods, &d);
        let s = &d["status"];
        s["observedGeneration"] == d["metadata"]["generation"]
            && s["updatedReplicas"] == 3
            && s["replicas"] == 3
            && s["availableReplicas"] == 3
            && mine.len() == 3
            && mine
                .iter()
                .all(|p| objects::annotation(p, TRUSTED_CA) == Some(new_trust.as_str()))
    })
    .await;
    let after = store.list("pods", Some("app-1"));
    let d = store.get("deployments", Some("app-1"), "worker-3").unwrap();
    let hash = objects::template_hash(&d);
    for p in pods_of(&after, &d) {
        assert!(!old_pods.contains(&objects::name(p).to_string()));
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
        assert!(objects::name(p).starts_with(&format!("worker-3-{hash}-")));
        assert_eq!(
            p["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
            "2025-01-01T00:00:00Z"
        );
    }
    assert_eq!(
        d["status"]["conditions"][1]["reason"],
        "NewReplicaSetAvailable"
    );
    // One at a time: each deletion is followed by its replacement before the next.
    let mut seen = String::new();
    while let Ok(e) = events.try_recv() {
        if e.resource == "pods" && e.name.starts_with("worker-3-") {
            match e.kind {
                EventKind::Deleted => seen.push('D'),
                EventKind::Added => seen.push('A'),
                EventKind::Modified => {}
            }
        }
    }
    assert_eq!(seen, "DADADA");

    // A DaemonSet (cache-4, app-2) and a StatefulSet (auth-8, app-2).
    restart_template(&store, "daemonsets", "app-2", "cache-4", "t1");
    restart_template(&store, "statefulsets", "app-2", "auth-8", "t1");
    until(10, "daemonset and statefulset rolled out", || {
        let ds = store.get("daemonsets", Some("app-2"), "cache-4").unwrap();
        let sts = store.get("statefulsets", Some("app-2"), "auth-8").unwrap();
        let pods = store.list("pods", Some("app-2"));
        let fresh = |w: &Value| {
            pods_of(&pods, w)
                .iter()
                .all(|p| objects::annotation(p, TRUSTED_CA) == Some(new_trust.as_str()))
        };
        let d = &ds["status"];
        let s = &sts["status"];
        d["observedGeneration"] == ds["metadata"]["generation"]
            && d["desiredNumberScheduled"] == 2
            && d["updatedNumberScheduled"] == 2
            && d["numberAvailable"] == 2
            && s["observedGeneration"] == sts["metadata"]["generation"]
            && s["updatedReplicas"] == 1
            && s["readyReplicas"] == 1
            && s["currentRevision"] == s["updateRevision"]
            && fresh(&ds)
            && fresh(&sts)
    })
    .await;
    let sts_pod = store
        .get("pods", Some("app-2"), "auth-8-0")
        .expect("ordinal name kept");
    let sts = store.get("statefulsets", Some("app-2"), "auth-8").unwrap();
    assert_eq!(
        sts_pod["metadata"]["labels"]["controller-revision-hash"],
        sts["status"]["updateRevision"]
    );

    // A new workload gets its pods at once.
    let mut fresh = d.clone();
    fresh["metadata"] = json!({"name": "fresh", "namespace": "app-1"});
    fresh["spec"]["replicas"] = json!(2);
    fresh.as_object_mut().unwrap().remove("status");
    store.create("deployments", fresh).unwrap();
    until(5, "pods of a new deployment", || {
        let d = store.get("deployments", Some("app-1"), "fresh").unwrap();
        pods_of(&store.list("pods", Some("app-1")), &d).len() == 2
            && d["status"]["availableReplicas"] == 2
    })
    .await;
    // Deleting it deletes its pods.
    store.delete("deployments", Some("app-1"), "fresh").unwrap();
    until(5, "pods garbage-collected", || {
        !store
            .list("pods", Some("app-1"))
            .iter()
            .any(|p| objects::name(p).starts_with("fresh-"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_at_its_limit_blocks_the_rollout() {
    let c = Cluster::new(
        1,
        1,
        Seed {
            namespaces: 1,
            workloads: 3,
            legacy_token_secrets: 0,
            webhooks: 0,
            ..Seed::default()
        },
    );
    let store = Store::open(&c.dir).unwrap();
    let ctl = controllers::spawn_with(&c.dir, store.clone(), fast());
    // worker-3 has 3 replicas; a budget that wants all 3.
    store
        .create(
            "poddisruptionbudgets",
            json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                   "metadata": {"name": "all-of-worker", "namespace": "app-1"},
                   "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "worker-3"}}}}),
        )
        .unwrap();
    until(3, "budget status", || {
        store
            .get("poddisruptionbudgets", Some("app-1"), "all-of-worker")
            .is_some_and(|p| {
                p["status"]["currentHealthy"] == 3
                    && p["status"]["desiredHealthy"] == 3
                    && p["status"]["expectedPods"] == 3
                    && p["status"]["disruptionsAllowed"] == 0
            })
    })
    .await;
    let d = store.get("deployments", Some("app-1"), "worker-3").unwrap();
    let before: Vec<String> = pods_of(&store.list("pods", Some("app-1")), &d)
        .iter()
        .map(|p| objects::name(p).to_string())
        .collect();
    restart_template(&store, "deployments", "app-1", "worker-3", "now");
    // The rollout controller reconciles app-1 with the new template three times (a
    // blocked rollout is retried): it has had its chances to replace a pod.
    passes_after(
        20,
        3,
        "3 reconciles of app-1 by the rollout controller",
        || ctl.reconciles(rollout::NAME, "app-1"),
    )
    .await;
    let d = store.get("deployments", Some("app-1"), "worker-3").unwrap();
    let during: Vec<String> = pods_of(&store.list("pods", Some("app-1")), &d)
        .iter()
        .map(|p| objects::name(p).to_string())
        .collect();
    assert_eq!(
        before, during,
        "no pod replaced while the budget forbids it"
    );
    assert_eq!(d["status"]["updatedReplicas"], 0);
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    // Relax the budget: the rollout proceeds.
    store
        .mutate(
            "poddisruptionbudgets",
            Some("app-1"),
            "all-of-worker",
            |p| {
                p["spec"]["minAvailable"] = json!(2);
            },
        )
        .unwrap();
    until(10, "rollout after the budget relaxed", || {
        let d = store.get("deployments", Some("app-1"), "worker-3").unwrap();
        d["status"]["updatedReplicas"] == 3 && d["status"]["replicas"] == 3
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_post_their_nodes() {
    let c = Cluster::new(1, 2, Seed::default());
    let store = Store::open(&c.dir).unwrap();
    let _ctl = controllers::spawn_with(&c.dir, store.clone(), fast());
    for name in ["cp-1", "w-1", "w-2"] {
        let n = store.get("nodes", None, name).expect("node registered");
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(n["status"]["nodeInfo"]["kubeletVersion"], "v1.32.0");
        assert_eq!(
            n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"],
            10250
        );
        assert_eq!(n["metadata"]["labels"]["kubernetes.io/hostname"], name);
        assert_eq!(
            n["metadata"]["labels"]
                .get("node-role.kubernetes.io/control-plane")
                .is_some(),
            name == "cp-1"
        );
        assert_eq!(n["metadata"]["annotations"][KUBELET_GENERATION], "1");
    }
    let w1 = store.get("nodes", None, "w-1").unwrap();
    assert_eq!(w1["status"]["addresses"][0]["type"], "InternalIP");
    let ip = sandbox::Sandbox::load(&c.dir)
        .unwrap()
        .nodes
        .into_iter()
        .find(|n| n.name == "w-1")
        .unwrap()
        .ip;
    assert_eq!(w1["status"]["addresses"][0]["address"], ip.as_str());
    runtime::restart(&c.node("w-1"), "kubelet").unwrap();
    until(3, "kubelet generation 2", || {
        store
            .get("nodes", None, "w-1")
            .is_some_and(|n| n["metadata"]["annotations"][KUBELET_GENERATION] == "2")
    })
    .await;
    // Heartbeats keep coming (0.5 s here; 10 s by default).
    let beat = |store: &Store| {
        store.get("nodes", None, "w-2").unwrap()["status"]["conditions"][3]["lastHeartbeatTime"]
            .clone()
    };
    let first = beat(&store);
    until(4, "a fresh heartbeat", || beat(&store) != first).await;
    // A deleted Node registers again.
    store.delete("nodes", None, "w-2").unwrap();
    until(3, "node re-registered", || {
        store.get("nodes", None, "w-2").is_some()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_apiserver_authentication_follows_the_apiserver() {
    let c = Cluster::new(1, 0, Seed::default());
    let store = Store::open(&c.dir).unwrap();
    let get = |store: &Store| {
        store
            .get(
                "configmaps",
                Some("kube-system"),
                "extension-apiserver-authentication",
            )
            .unwrap()["data"]
            .clone()
    };
    let data = get(&store);
    assert_eq!(data["client-ca-file"], c.ca_pem().as_str());
    assert_eq!(
        data["requestheader-allowed-names"],
        r#"["front-proxy-client"]"#
    );
    assert_eq!(
        data["requestheader-username-headers"],
        r#"["X-Remote-User"]"#
    );
    assert_eq!(data["requestheader-group-headers"], r#"["X-Remote-Group"]"#);
    assert_eq!(
        data["requestheader-extra-headers-prefix"],
        r#"["X-Remote-Extra-"]"#
    );
    let ctl = controllers::spawn_with(&c.dir, store.clone(), fast());
    let bundle = c.append_ca("etc/kubernetes/pki/front-proxy-ca.crt", "front-proxy-next");
    // The publisher looks at the API server (twice) after the disk changed.
    controller_passes(&ctl, extension_auth::NAME, 2).await;
    assert_eq!(get(&store), data, "the API server has not restarted");
    runtime::restart(&c.node("cp-1"), "kube-apiserver").unwrap();
    until(3, "the new request-header CA published", || {
        get(&store)["requestheader-client-ca-file"] == bundle.as_str()
    })
    .await;
    // A hand edit is put back.
    store
        .mutate(
            "configmaps",
            Some("kube-system"),
            "extension-apiserver-authentication",
            |cm| {
                cm["data"]["client-ca-file"] = json!("x");
            },
        )
        .unwrap();
    until(3, "hand edit reverted", || {
        get(&store)["client-ca-file"] == c.ca_pem().as_str()
    })
    .await;
}

/// kubectl, the external witness: through the sandbox API server, `rollout restart` and
/// `rollout status` behave as on a real cluster, and the restarted pods trust the bundle
/// the restarted controller manager published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_restart_and_status_through_the_api_server() {
    use trustform::sandbox::apiserver;
    common::require_kubectl();
    let c = Cluster::new(
        1,
        1,
        Seed {
            namespaces: 2,
            workloads: 4,
            legacy_token_secrets: 0,
            webhooks: 0,
            ..Seed::default()
        },
    );
    let server = apiserver::serve(&c.dir, apiserver::Options::default())
        .await
        .expect("the API server starts");
    let ctl = controllers::spawn_with(&c.dir, server.store.clone(), fast());
    let bundle = c.append_ca("etc/kubernetes/pki/ca.crt", "kubernetes-next");
    runtime::restart(&c.node("cp-1"), "kube-controller-manager").unwrap();
    let store = server.store.clone();
    until(5, "new bundle published", || {
        root_ca_everywhere(&store, &bundle)
    })
    .await;
    let conf = c.node("cp-1").join("etc/kubernetes/admin.conf");
    let home = tempfile::tempdir().unwrap();
    let want = fingerprints(&bundle);
    let home_path = home.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let kubectl = |args: &[&str]| {
            let out = std::process::Command::new("kubectl")
                .env("KUBECONFIG", &conf)
                .env("HOME", &home_path)
                .args(args)
                .output()
                .expect("kubectl runs");
            assert!(
                out.status.success(),
                "kubectl {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        kubectl(&["-n", "app-1", "rollout", "restart", "deployment/worker-3"]);
        let status = kubectl(&[
            "-n", "app-1", "rollout", "status", "deployment/worker-3", "--timeout=20s",
        ]);
        assert!(status.contains("successfully rolled out"), "{status}");
        kubectl(&["-n", "app-2", "rollout", "restart", "daemonset/cache-4"]);
        let status = kubectl(&[
            "-n", "app-2", "rollout", "status", "daemonset/cache-4", "--timeout=20s",
        ]);
        assert!(status.contains("successfully rolled out"), "{status}");
        let trust = kubectl(&[
            "-n",
            "app-1",
            "get",
            "pods",
            "-l",
            "app=worker-3",
            "-o",
            r"jsonpath={range .items[*]}{.metadata.annotations.sandbox\.trustform\.dev/trusted-ca-sha256}{'\n'}{end}",
        ]);
        let lines: Vec<&str> = trust.lines().collect();
        assert_eq!(lines.len(), 3, "{trust}");
        assert!(lines.iter().all(|l| *l == want), "{trust}");
        let nodes = kubectl(&["get", "nodes", "--no-headers"]);
        assert_eq!(nodes.lines().filter(|l| l.contains(" Ready ")).count(), 2, "{nodes}");
    })
    .await
    .expect("kubectl witness");
    ctl.stop().await;
    server.shutdown().await;
}
