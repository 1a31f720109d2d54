//! `cargo bench --bench sandbox`: the sandbox's own figures, in process. The tests check
//! only what these do (`tests/apiserver.rs`, `tests/controllers.rs`, the store's unit
//! tests); how long it takes is measured here, where a slow machine cannot fail a test.
//!
//! - the object store: 100 namespaces and 20,000 legacy token secrets in one batch;
//! - the HTTPS API server: those 20,000 secrets listed through kube-rs in pages of 500;
//! - a large seeded sandbox (5,000 namespaces, 2,000 workloads, 20,000 token secrets, 20
//!   webhooks): creating and seeding it, reopening its store, and the controller
//!   manager republishing its root CA to every namespace and token secret after a
//!   restart onto a bundle.
//!
//! `TRUSTFORM_BENCH_SCALE` (default 1.0) scales every count, for a quick look.

use serde_json::json;
use std::time::{Duration, Instant};
use trustform::pki::KeyAlgorithm;
use trustform::pki::issue::new_ca;
use trustform::sandbox::apiserver::{self, Store};
use trustform::sandbox::controllers::{self, root_ca};
use trustform::sandbox::objects;
use trustform::sandbox::seed::Seed;
use trustform::sandbox::{self, Spec, runtime};

fn scale() -> f64 {
    std::env::var("TRUSTFORM_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

fn n(x: f64) -> usize {
    ((x * scale()) as usize).max(1)
}

fn rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_default()
}

/// 100 namespaces and `secrets` legacy token secrets, spread over them.
fn token_batch(secrets: usize) -> Vec<(&'static str, serde_json::Value)> {
    let mut batch: Vec<(&'static str, serde_json::Value)> = (0..100)
        .map(|i| {
            (
                "namespaces",
                json!({"metadata": {"name": format!("ns-{i:03}")}}),
            )
        })
        .collect();
    for i in 0..secrets {
        batch.push((
            "secrets",
            json!({"metadata": {"name": format!("token-{i:05}"), "namespace": format!("ns-{:03}", i % 100),
                                "annotations": {"kubernetes.io/service-account.name": "default"}},
                   "type": "kubernetes.io/service-account-token",
                   "data": {"ca.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJlekNDQVNHZ0F3SUJBZ0lRZXhhbXBsZQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==",
                            "namespace": "bnMtMDAw", "token": "ZXlKaGJHY2lPaUpTVXpJMU5pSXNJbXRwWkNJNklpSjk="}}),
        ));
    }
    batch
}

/// Wait (polling every `every`) until `ok` holds; panics naming `what` after `limit`.
async fn until(limit: Duration, every: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(every).await;
    }
}

fn spec(seed: Seed) -> Spec {
    Spec {
        control_planes: 1,
        workers: 1,
        algorithm: KeyAlgorithm::EcdsaP256,
        seed,
        kubelet_serving: Default::default(),
    }
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let secrets = n(20_000.0);
    let mut rows: Vec<(String, Duration)> = vec![];

    // The store alone.
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let batch = token_batch(secrets);
    let t = Instant::now();
    store.create_many(batch).unwrap();
    rows.push((
        format!("store: 100 namespaces + {secrets} token secrets in one batch"),
        t.elapsed(),
    ));
    assert_eq!(store.list("secrets", None).len(), secrets);
    drop(store);

    // The API server, through kube-rs.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    sandbox::create(&dir, &spec(Seed::default())).expect("sandbox");
    let listed = rt.block_on(async {
        let server = apiserver::serve(&dir, apiserver::Options::default())
            .await
            .expect("serves");
        server.store.create_many(token_batch(secrets)).unwrap();
        let kc = kube::config::Kubeconfig::read_from(server.admin_kubeconfig()).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(cfg).unwrap();
        let all: kube::Api<k8s_openapi::api::core::v1::Secret> = kube::Api::all(client);
        let t = Instant::now();
        let mut count = 0;
        let mut token: Option<String> = None;
        loop {
            let mut lp = kube::api::ListParams::default().limit(500);
            if let Some(c) = &token {
                lp = lp.continue_token(c);
            }
            let page = all.list(&lp).await.unwrap();
            count += page.items.len();
            token = page.metadata.continue_.filter(|c| !c.is_empty());
            if token.is_none() {
                break;
            }
        }
        let took = t.elapsed();
        assert_eq!(count, secrets);
        server.shutdown().await;
        took
    });
    rows.push((
        format!("API server: {secrets} secrets listed via kube-rs, pages of 500"),
        listed,
    ));

    // A large seeded sandbox and the controller manager's republish.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let t = Instant::now();
    let (_, report) = sandbox::create_seeded(
        &dir,
        &spec(Seed {
            namespaces: n(5000.0),
            workloads: n(2000.0),
            legacy_token_secrets: secrets,
            webhooks: 20,
            ..Seed::default()
        }),
    )
    .expect("seeded sandbox");
    rows.push(("sandbox create, seeded".into(), t.elapsed()));
    let t = Instant::now();
    let store = Store::open(&dir).unwrap();
    rows.push(("reopen its store".into(), t.elapsed()));
    let cp1 = dir.join("nodes/cp-1");
    let republished = rt.block_on(async {
        let ctl = controllers::spawn(&dir, store.clone());
        // The first pass publishes what the controller manager holds now: let it finish
        // before the clock starts.
        until(
            Duration::from_secs(300),
            Duration::from_millis(50),
            "the root-CA publisher's first pass",
            || ctl.passes(root_ca::NAME) >= 1,
        )
        .await;
        let ca = cp1.join("etc/kubernetes/pki/ca.crt");
        let mut bundle = std::fs::read_to_string(&ca).unwrap();
        bundle.push_str(
            &new_ca("kubernetes-next", KeyAlgorithm::EcdsaP256, 365)
                .unwrap()
                .cert_pem,
        );
        std::fs::write(&ca, &bundle).unwrap();
        let t = Instant::now();
        runtime::restart(&cp1, "kube-controller-manager").unwrap();
        let b64 = objects::b64(bundle.as_bytes());
        let everywhere = |store: &Store| {
            let cms = store
                .list_page("configmaps", None, None, Some(1), &|cm| {
                    objects::name(cm) == objects::ROOT_CA_CONFIGMAP
                        && cm["data"]["ca.crt"] != bundle.as_str()
                })
                .items
                .is_empty();
            let secrets = store
                .list_page("secrets", None, None, Some(1), &|s| {
                    s["type"] == objects::TOKEN_SECRET_TYPE && s["data"]["ca.crt"] != b64.as_str()
                })
                .items
                .is_empty();
            cms && secrets
        };
        until(
            Duration::from_secs(300),
            Duration::from_millis(100),
            "the bundle republished",
            || everywhere(&store),
        )
        .await;
        let took = t.elapsed();
        ctl.stop().await;
        took
    });
    rows.push((
        format!(
            "republish to {} namespaces + {} token secrets",
            report.namespaces, report.token_secrets
        ),
        republished,
    ));

    println!("seeded: {}", report.summary());
    println!("| what | wall |");
    println!("|---|---|");
    for (what, took) in rows {
        println!("| {what} | {:.2} s |", took.as_secs_f64());
    }
    println!("peak RSS of the bench process: {}", rss());
}
