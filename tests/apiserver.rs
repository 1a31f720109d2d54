//! The sandbox's HTTPS API server, in-process, over real TLS: kube-rs and kubectl talk to
//! it as to a kube-apiserver; client certificates are judged by what the kube-apiserver
//! process holds; objects survive a restart; faults are injected on demand.

use crate::common;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trustform::pki::issue::{generate_key, issue_leaf, new_ca};
use trustform::pki::kubeconfig::Kubeconfig;
use trustform::pki::{CaMaterial, KeyAlgorithm, LeafSpec, SecretPem};
use trustform::sandbox::apiserver::{self, Faults, Options, Server};
use trustform::sandbox::runtime;

fn provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

async fn start(dir: &Path, faults: Faults) -> Server {
    apiserver::serve(
        dir,
        Options {
            faults,
            ..Options::default()
        },
    )
    .await
    .expect("the API server starts")
}

async fn client_from(path: &Path) -> Client {
    provider();
    let kc = kube::config::Kubeconfig::read_from(path).expect("kubeconfig reads");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kube config");
    Client::try_from(cfg).expect("client")
}

async fn admin(w: &common::Workdir) -> Client {
    client_from(&admin_conf(w)).await
}

fn admin_conf(w: &common::Workdir) -> PathBuf {
    w.node("cp-1").join("etc/kubernetes/admin.conf")
}

fn cluster_ca(w: &common::Workdir) -> CaMaterial {
    let pki = w.node("cp-1").join("etc/kubernetes/pki");
    CaMaterial {
        cert_pem: std::fs::read_to_string(pki.join("ca.crt")).unwrap(),
        key: SecretPem::new(std::fs::read_to_string(pki.join("ca.key")).unwrap()),
    }
}

/// A kubeconfig for `cn`, with a client certificate from `issuer`, trusting the cluster CA.
fn kubeconfig_for(w: &common::Workdir, server: &Server, issuer: &CaMaterial, cn: &str) -> PathBuf {
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let cert = issue_leaf(&LeafSpec::client(cn, &["devs"]), &key, issuer).unwrap();
    let user = Kubeconfig::embedded_user(&cert, &SecretPem::new(key.serialize_pem()));
    let ca = cluster_ca(w).cert_pem;
    let text = Kubeconfig::single("kubernetes", &server.url(), &ca, cn, user).to_yaml();
    let path = w.path().join(format!(
        "{cn}-{}.conf",
        trustform::sandbox::apiserver::ids::name_suffix()
    ));
    trustform::atomic::write(&path, text.as_bytes(), 0o600).unwrap();
    path
}

/// Wait (polling) until `ok` holds; panics naming `what` after `secs` seconds.
async fn until(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_crud_patches_paging_selectors_and_persistence() {
    let w = common::sandbox(1, 0, false);
    let server = start(&w.cluster(), Faults::default()).await;
    let client = admin(&w).await;

    // Discovery and version as a real server answers them.
    let v = client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "32"));
    let groups = client.list_api_groups().await.unwrap();
    assert!(groups.groups.iter().any(|g| g.name == "apps"));
    let core = client.list_core_api_resources("v1").await.unwrap();
    assert!(
        core.resources
            .iter()
            .any(|r| r.name == "configmaps" && r.namespaced)
    );

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let again = namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_err();
    assert_eq!(api_code(again), 409, "AlreadyExists");

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let created = cms
        .create(&PostParams::default(), &cm("app", json!({"a": "1"})))
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let fields = created.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(fields.len(), 1);
    assert_eq!(fields[0].operation.as_deref(), Some("Update"));
    assert!(fields[0].time.is_some());

    // Update, then a stale update is refused.
    let mut next = created.clone();
    next.data.as_mut().unwrap().insert("b".into(), "2".into());
    let updated = cms
        .replace("app", &PostParams::default(), &next)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let mut stale = created.clone();
    stale.data.as_mut().unwrap().insert("c".into(), "3".into());
    let conflict = cms
        .replace("app", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match conflict {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
        other => panic!("{other:?}"),
    }

    // The four patch types.
    let pp = PatchParams::default();
    cms.patch(
        "app",
        &pp,
        &Patch::Merge(json!({"data": {"a": null, "m": "merge"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "app",
        &pp,
        &Patch::Strategic(json!({"metadata": {"labels": {"tier": "web"}}, "data": {"s": "smp"}})),
    )
    .await
    .unwrap();
    let json_patch = hyper::Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/team/configmaps/app")
        .header("Content-Type", "application/json-patch+json")
        .body(
            serde_json::to_vec(&json!([{"op": "add", "path": "/data/j", "value": "json"}]))
                .unwrap(),
        )
        .unwrap();
    let _: ConfigMap = client.request(json_patch).await.unwrap();
    let applied = cms
        .patch(
            "app",
            &PatchParams::apply("tester").force(),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app", "namespace": "team"},
                "data": {"ssa": "yes"},
            })),
        )
        .await
        .unwrap();
    let data = applied.data.clone().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(keys, ["b", "j", "m", "s", "ssa"], "{data:?}");
    let managers: Vec<(String, String)> = applied
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert!(
        managers.contains(&("tester".into(), "Apply".into())),
        "{managers:?}"
    );
    // Server-side apply creates what does not exist.
    let made = cms
        .patch(
            "made-by-apply",
            &PatchParams::apply("tester"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "made-by-apply"}, "data": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(made.metadata.namespace.as_deref(), Some("team"));

    // dryRun=All writes nothing.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    cms.create(&dry, &cm("dry", json!({}))).await.unwrap();
    assert_eq!(api_code(cms.get("dry").await.unwrap_err()), 404);

    // The status subresource.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "team");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}
    }))
    .unwrap();
    let d = deploys.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let st = deploys
        .patch_status(
            "web",
            &pp,
            &Patch::Merge(json!({"status": {"readyReplicas": 1}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().ready_replicas, Some(1));
    assert_eq!(
        st.spec.replicas,
        Some(1),
        "a status write leaves spec alone"
    );
    let main = deploys
        .patch(
            "web",
            &pp,
            &Patch::Merge(json!({"status": {"readyReplicas": 7}, "spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.unwrap().ready_replicas,
        Some(1),
        "a main write leaves status alone"
    );
    assert_eq!(main.metadata.generation, Some(2));
    let restarted = deploys
        .patch(
            "web",
            &pp,
            &Patch::Strategic(json!({"spec": {"template": {"metadata": {"annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}})),
        )
        .await
        .unwrap();
    let tpl = restarted.spec.template;
    assert_eq!(tpl.spec.unwrap().containers.len(), 1);
    assert!(
        tpl.metadata
            .unwrap()
            .annotations
            .unwrap()
            .contains_key("kubectl.kubernetes.io/restartedAt")
    );

    // Paging: 1,200 secrets over two namespaces, pages of 500, every one seen once.
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap(),
        )
        .await
        .unwrap();
    let batch: Vec<(&'static str, Value)> = (0..1200)
        .map(|i| {
            let ns = if i % 3 == 0 { "other" } else { "team" };
            let ty = if i % 2 == 0 { "kubernetes.io/service-account-token" } else { "Opaque" };
            ("secrets", json!({"metadata": {"name": format!("s-{i:04}"), "namespace": ns,
                                             "labels": {"parity": if i % 2 == 0 { "even" } else { "odd" }}},
                               "type": ty, "data": {"ca.crt": "T0xE"}}))
        })
        .collect();
    server.store.create_many(batch).unwrap();
    let all: Api<Secret> = Api::all(client.clone());
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = all.list(&lp).await.unwrap();
        pages += 1;
        for s in &page.items {
            let key = (
                s.metadata.namespace.clone().unwrap(),
                s.metadata.name.clone().unwrap(),
            );
            assert!(seen.insert(key), "seen twice");
        }
        // A continue token keeps working while objects change.
        if pages == 1 {
            server
                .store
                .delete("secrets", Some("team"), "s-0001")
                .unwrap();
        }
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert!(seen.len() >= 1199, "{}", seen.len());

    // Selectors.
    let team: Api<Secret> = Api::namespaced(client.clone(), "team");
    let tokens = team
        .list(&ListParams::default().fields("type=kubernetes.io/service-account-token"))
        .await
        .unwrap();
    assert!(!tokens.items.is_empty());
    assert!(
        tokens
            .items
            .iter()
            .all(|s| s.type_.as_deref() == Some("kubernetes.io/service-account-token"))
    );
    let odd = team
        .list(&ListParams::default().labels("parity in (odd),parity!=even"))
        .await
        .unwrap();
    assert!(
        odd.items
            .iter()
            .all(|s| s.type_.as_deref() == Some("Opaque"))
    );
    assert_eq!(
        odd.items.len() + tokens.items.len(),
        team.list(&ListParams::default()).await.unwrap().items.len()
    );
    let named = all
        .list(&ListParams::default().fields("metadata.name=s-0003,metadata.namespace==other"))
        .await
        .unwrap();
    assert_eq!(named.items.len(), 1);
    assert!(
        team.list(&ListParams::default().labels("parity in odd"))
            .await
            .is_err()
    );

    // Delete.
    cms.delete("made-by-apply", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_code(cms.get("made-by-apply").await.unwrap_err()), 404);
    assert_eq!(
        api_code(
            cms.delete("made-by-apply", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );

    // Objects survive a restart of the server.
    let before = cms.get("app").await.unwrap();
    drop(client);
    server.shutdown().await;
    let server = start(&w.cluster(), Faults::default()).await;
    let client = admin(&w).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    let after = cms.get("app").await.unwrap();
    assert_eq!(after.data, before.data);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(
        Api::<Secret>::all(client)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1199
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_judged_by_the_held_client_ca() {
    let w = common::sandbox(1, 0, false);
    let server = start(&w.cluster(), Faults::default()).await;

    // A certificate from a CA the server never trusted: 401.
    let rogue = new_ca("rogue-ca", KeyAlgorithm::EcdsaP256, 10).unwrap();
    let mallory = client_from(&kubeconfig_for(&w, &server, &rogue, "mallory")).await;
    let ns: Api<Namespace> = Api::all(mallory);
    assert_eq!(
        api_code(ns.list(&ListParams::default()).await.unwrap_err()),
        401
    );

    // One from the cluster CA: accepted.
    let alice = client_from(&kubeconfig_for(&w, &server, &cluster_ca(&w), "alice")).await;
    Api::<Namespace>::all(alice)
        .list(&ListParams::default())
        .await
        .unwrap();
    // The admin connects now, before the restart below: its pooled connection belongs to
    // the process generation held now.
    let cp1 = w.node("cp-1");
    let before = runtime::held(&cp1, "kube-apiserver").unwrap().generation;
    let admin_before = Api::<Namespace>::all(admin(&w).await);
    admin_before.list(&ListParams::default()).await.unwrap();
    assert!(
        server.connections().contains_key(&before),
        "{:?}",
        server.connections()
    );

    // A new CA added to the bundle on disk is not trusted until the process restarts.
    let next = new_ca("kubernetes-next", KeyAlgorithm::EcdsaP256, 10).unwrap();
    let bundle = cp1.join("etc/kubernetes/pki/ca.crt");
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&bundle).unwrap(),
        next.cert_pem
    );
    trustform::atomic::write(&bundle, both.as_bytes(), 0o644).unwrap();
    let bob_conf = kubeconfig_for(&w, &server, &next, "bob");
    let bob = Api::<Namespace>::all(client_from(&bob_conf).await);
    assert_eq!(
        api_code(bob.list(&ListParams::default()).await.unwrap_err()),
        401
    );

    runtime::restart(&cp1, "kube-apiserver").unwrap();
    let bob = Api::<Namespace>::all(client_from(&bob_conf).await);
    bob.list(&ListParams::default()).await.unwrap();

    // The admin's pooled connection of the old generation is closed once the server has
    // drained it; the same client's next request reconnects and is still accepted (the
    // old CA is still in the bundle).
    let after = runtime::held(&cp1, "kube-apiserver").unwrap().generation;
    assert_ne!(after, before);
    until(30, "the old generation's connections closed", || {
        !server.connections().contains_key(&before)
    })
    .await;
    admin_before.list(&ListParams::default()).await.unwrap();

    // openssl, the external witness: the serving chain verifies against the cluster CA.
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    let cert = issue_leaf(&LeafSpec::client("openssl", &[]), &key, &cluster_ca(&w)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("c.crt"), cert).unwrap();
    trustform::atomic::write(
        &tmp.path().join("c.key"),
        key.serialize_pem().as_bytes(),
        0o600,
    )
    .unwrap();
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{}", server.port),
            "-CAfile",
        ])
        .arg(&bundle)
        .arg("-cert")
        .arg(tmp.path().join("c.crt"))
        .arg("-key")
        .arg(tmp.path().join("c.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let out = tokio::task::spawn_blocking(move || {
        let _ = child.stdin.take();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Verify return code: 0 (ok)"), "{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_injected_before_anything_happens() {
    let w = common::sandbox(1, 0, false);
    let server = start(
        &w.cluster(),
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let client = admin(&w).await;
    let ns: Api<Namespace> = Api::all(client.clone());
    assert_eq!(api_code(ns.get("default").await.unwrap_err()), 500);
    assert_eq!(
        client.apiserver_version().await.unwrap().major,
        "1",
        "discovery is spared"
    );
    drop(client);
    server.shutdown().await;

    let server = start(
        &w.cluster(),
        Faults {
            conflict_rate: 1.0,
            latency: Duration::from_millis(30),
            ..Faults::default()
        },
    )
    .await;
    server
        .store
        .create("namespaces", json!({"metadata": {"name": "x"}}))
        .unwrap();
    let rv = server.store.resource_version();
    let client = admin(&w).await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "x");
    let started = Instant::now();
    assert_eq!(
        api_code(
            cms.create(&PostParams::default(), &cm("c", json!({})))
                .await
                .unwrap_err()
        ),
        409
    );
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert_eq!(server.store.resource_version(), rv, "nothing changed");
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "reads pass"
    );
    drop(client);
    server.shutdown().await;
}

struct Kubectl {
    conf: PathBuf,
    cache: tempfile::TempDir,
}

impl Kubectl {
    fn cmd(&self) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", &self.conf)
            .env("HOME", self.cache.path())
            .arg("--cache-dir")
            .arg(self.cache.path().join("cache"));
        c
    }
    fn run(&self, args: &[&str]) -> String {
        let out = self.cmd().args(args).output().expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn shell(&self, script: &str) -> String {
        let out = Command::new("sh")
            .args(["-c", script])
            .env("KUBECONFIG", &self.conf)
            .env("HOME", self.cache.path())
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_talks_to_it_like_a_real_server() {
    common::require_kubectl();
    let w = common::sandbox(1, 1, false);
    let server = start(&w.cluster(), Faults::default()).await;
    let store = server.store.clone();
    let k = Kubectl {
        conf: admin_conf(&w),
        cache: tempfile::tempdir().unwrap(),
    };
    let k = tokio::task::spawn_blocking(move || {
        assert_eq!(k.run(&["get", "--raw", "/healthz"]).trim(), "ok");

        // Create with kubectl apply (client-side), then read back.
        let manifest = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: x
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: x
data:
  k: v
---
apiVersion: v1
kind: Secret
metadata:
  name: sa-token
  namespace: x
type: kubernetes.io/service-account-token
data:
  ca.crt: T0xE
---
apiVersion: v1
kind: Secret
metadata:
  name: other-token
  namespace: x
type: kubernetes.io/service-account-token
data:
  ca.crt: T0xE
---
apiVersion: v1
kind: Secret
metadata:
  name: plain
  namespace: x
type: Opaque
data:
  k: dg==
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: x
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx
---
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: node-csr-1
spec:
  request: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KLS0tLS1FTkQgQ0VSVElGSUNBVEUgUkVRVUVTVC0tLS0tCg==
  signerName: kubernetes.io/kubelet-serving
  usages: [digital signature, server auth]
"#;
        let mut apply = k.cmd().args(["apply", "-f", "-"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        apply.stdin.take().unwrap().write_all(manifest.as_bytes()).unwrap();
        let out = apply.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));

        let cms = k.run(&["get", "configmaps", "-A"]);
        assert!(cms.contains("settings") && cms.contains("NAMESPACE"), "{cms}");
        let csr = k.run(&["get", "csr"]);
        assert!(csr.contains("node-csr-1") && csr.contains("kubernetes-admin") && csr.contains("Pending"), "{csr}");
        // Typed clients send protobuf: certificate approve, create namespace|configmap|secret.
        k.run(&["certificate", "approve", "node-csr-1"]);
        let csr = k.run(&["get", "csr", "node-csr-1"]);
        assert!(csr.contains("Approved"), "{csr}");
        k.run(&["create", "namespace", "made"]);
        k.run(&["create", "configmap", "conf", "-n", "made", "--from-literal=a=b"]);
        k.run(&["create", "secret", "generic", "creds", "-n", "made", "--from-literal=p=q"]);
        let made = k.run(&["get", "configmap/conf", "secret/creds", "-n", "made", "-o", "jsonpath={.items[*].data}"]);
        assert_eq!(made, r#"{"a":"b"} {"p":"cQ=="}"#);
        let names = k.run(&["get", "secrets", "-n", "x", "--field-selector", "type=kubernetes.io/service-account-token", "-o", "name"]);
        let mut names: Vec<&str> = names.lines().collect();
        names.sort();
        assert_eq!(names, ["secret/other-token", "secret/sa-token"]);

        // The seed procedure's loop: rewrite ca.crt through kubectl apply.
        k.shell("kubectl get secret/sa-token -n x -o yaml | sed 's/\\(ca.crt:\\).*/\\1 TkVXQjY0/' | kubectl apply -f -");
        let ca = k.run(&["get", "secret/sa-token", "-n", "x", "-o", "jsonpath={.data.ca\\.crt}"]);
        assert_eq!(ca, "TkVXQjY0");

        k.run(&["rollout", "restart", "deployment/web", "-n", "x"]);
        k.run(&["patch", "deployment", "web", "-n", "x", "-p", r#"{"spec":{"template":{"metadata":{"annotations":{"ca-rotation":"1"}}}}}"#]);
        let ann = k.run(&["get", "deployment", "web", "-n", "x", "-o", "jsonpath={.spec.template.metadata.annotations}"]);
        let ann: Value = serde_json::from_str(&ann).unwrap();
        assert_eq!(ann["ca-rotation"], "1");
        assert!(ann["kubectl.kubernetes.io/restartedAt"].is_string(), "{ann}");

        // A watch sees a change committed while it runs.
        // Printed as Tables, so one header for the list and the events.
        let mut watch = k
            .cmd()
            .args(["get", "configmaps", "-n", "x", "--watch", "--request-timeout=20s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        k.run(&["delete", "secret", "plain", "-n", "x"]);
        (k, watch.stdout.take().unwrap(), watch)
    })
    .await
    .unwrap();
    let (k, stdout, mut watch) = k;
    // Every line the watch prints, as it prints it.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The lines up to the first one that starts with `name ` (at most 30 s).
    let lines_until = |rx: std::sync::mpsc::Receiver<String>, name: &'static str| {
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut out: Vec<String> = vec![];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let line = rx.recv_timeout(left).unwrap_or_else(|e| {
                    panic!("the watch printed no {name} row ({e}); it printed {out:?}")
                });
                let done = line.starts_with(&format!("{name} "));
                out.push(line);
                if done {
                    return (rx, out);
                }
            }
        })
    };
    // The initial list arrives first; only then is a new object created, so it reaches
    // kubectl as a watch event.
    let (rx, mut lines) = lines_until(rx, "settings").await.unwrap();
    store
        .create(
            "configmaps",
            json!({"metadata": {"name": "late", "namespace": "x"}}),
        )
        .unwrap();
    let (_, more) = lines_until(rx, "late").await.unwrap();
    lines.extend(more);
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        lines.iter().any(|l| l.starts_with("settings ")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("late ")), "{lines:?}");
    let headers = lines.iter().filter(|l| l.starts_with("NAME ")).count();
    assert_eq!(headers, 1, "{lines:?}");
    let secrets =
        tokio::task::spawn_blocking(move || k.run(&["get", "secrets", "-n", "x", "-o", "name"]))
            .await
            .unwrap();
    assert!(!secrets.contains("plain"), "{secrets}");
    server.shutdown().await;
}

/// Functional only: the figures (seeding, listing time, memory) are
/// `cargo bench --bench sandbox`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_twenty_thousand_secrets_in_pages() {
    let w = common::sandbox(1, 0, false);
    let server = start(&w.cluster(), Faults::default()).await;
    let mut batch: Vec<(&'static str, Value)> = (0..100)
        .map(|i| {
            (
                "namespaces",
                json!({"metadata": {"name": format!("ns-{i:03}")}}),
            )
        })
        .collect();
    for i in 0..20_000 {
        batch.push((
            "secrets",
            json!({"metadata": {"name": format!("token-{i:05}"), "namespace": format!("ns-{:03}", i % 100),
                                "annotations": {"kubernetes.io/service-account.name": "default"}},
                   "type": "kubernetes.io/service-account-token",
                   "data": {"ca.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJlekNDQVNHZ0F3SUJBZ0lRZXhhbXBsZQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg==",
                            "namespace": "bnMtMDAw", "token": "ZXlKaGJHY2lPaUpTVXpJMU5pSXNJbXRwWkNJNklpSjk="}}),
        ));
    }
    server.store.create_many(batch).unwrap();
    let client = admin(&w).await;
    let all: Api<Secret> = Api::all(client);
    let mut names = std::collections::BTreeSet::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(500);
        if let Some(c) = &token {
            lp = lp.continue_token(c);
        }
        let page = all.list(&lp).await.unwrap();
        assert!(page.items.len() <= 500, "a page of {}", page.items.len());
        for s in &page.items {
            let id = format!(
                "{}/{}",
                s.metadata.namespace.as_deref().unwrap_or(""),
                s.metadata.name.as_deref().unwrap_or("")
            );
            assert!(names.insert(id.clone()), "{id} listed twice");
        }
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names.len(), 20_000);
    server.shutdown().await;
}

#[test]
fn sandbox_up_serves_until_sigterm() {
    use std::io::BufRead;
    let w = common::sandbox(1, 0, false);
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("trustform"))
        .args(["sandbox", "up", "cluster", "--port", "0"])
        .current_dir(w.path())
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let port: u16 = line
        .strip_prefix("API server https://127.0.0.1:")
        .and_then(|r| r.split_once(' '))
        .and_then(|(p, _)| p.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        line.trim_end()
            .ends_with(" (cluster) ready; KUBECONFIG=cluster/nodes/cp-1/etc/kubernetes/admin.conf"),
        "{line}"
    );
    let endpoint: Value = serde_json::from_slice(
        &std::fs::read(w.cluster().join("apiserver/endpoint.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(endpoint["port"], port);
    assert_eq!(endpoint["pid"], child.id());
    let conf = std::fs::read_to_string(admin_conf(&w)).unwrap();
    assert!(conf.contains(&format!("server: https://127.0.0.1:{port}\n")));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!w.cluster().join("apiserver/endpoint.json").exists());
}
