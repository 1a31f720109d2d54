//! Seeding: the API objects of a realistic cluster, written into the sandbox API server's
//! store when the sandbox is created. Deterministic: the same sizes give the same names.
//!
//! Always: the system namespaces (`default`, `kube-system`, `kube-public`,
//! `kube-node-lease`), each with its `default` ServiceAccount and `kube-root-ca.crt`
//! (from the first control plane's controller manager's held `--root-ca-file`);
//! `kube-public/cluster-info` as kubeadm writes it; `kube-system/extension-apiserver-
//! authentication`; kubeadm's `coredns` Deployment (with a PDB) and `kube-proxy`
//! DaemonSet; a Node per running kubelet. Then, as asked: `app-1…app-N` namespaces,
//! workloads spread over them (mostly Deployments, some DaemonSets and StatefulSets, some
//! with a PodDisruptionBudget, and `bare_pods` pods without an owner in `default`, two by
//! default), legacy service-account token secrets (plus a few Opaque ones), and webhook
//! configurations whose `caBundle` is the cluster CA for every other pair and a separate
//! webhook CA otherwise, with an APIService and a CRD conversion webhook that trust the
//! cluster CA.
//!
//! Every pod records the trust it started with ([`objects::TRUSTED_CA`]). Objects the real
//! cluster's components write carry those components' `managedFields` entries.

use super::apiserver::store::{Manager, Store, StoreError, record_manager};
use super::controllers::disruption;
use super::controllers::extension_auth::held_data;
use super::controllers::rollout::{self, Kind};
use super::controllers::root_ca::held_root_ca;
use super::objects::{self, Trust};
use super::{Role, Sandbox, SandboxError, SandboxNode, runtime};
use crate::layout;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// How much to seed beyond the system objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seed {
    /// Application namespaces `app-1…app-N`.
    pub namespaces: usize,
    /// Application workloads spread over them.
    pub workloads: usize,
    /// Pods without an owner in `default`, seeded along with the workloads (none when
    /// `workloads` is 0). No rollout restarts them: a rotation leaves them to the
    /// operator, with a warning. Default 2.
    pub bare_pods: usize,
    /// Legacy service-account token secrets.
    pub legacy_token_secrets: usize,
    /// Admission webhook configurations.
    pub webhooks: usize,
}

impl Default for Seed {
    fn default() -> Self {
        Self {
            namespaces: 0,
            workloads: 0,
            bare_pods: DEFAULT_BARE_PODS,
            legacy_token_secrets: 0,
            webhooks: 0,
        }
    }
}

/// Bare pods seeded with the workloads unless asked otherwise.
pub const DEFAULT_BARE_PODS: usize = 2;

/// The bare pods' names and images, in seeding order; more than these repeat them
/// with a number (`netshoot-3`).
const BARE: [(&str, &str); 2] = [
    ("netshoot", "nicolaka/netshoot:v0.13"),
    ("toolbox", "busybox:1.36"),
];

/// What was seeded, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Namespaces (system ones included).
    pub namespaces: usize,
    /// ServiceAccounts.
    pub service_accounts: usize,
    /// ConfigMaps.
    pub configmaps: usize,
    /// Legacy service-account token secrets.
    pub token_secrets: usize,
    /// Opaque secrets.
    pub opaque_secrets: usize,
    /// Deployments.
    pub deployments: usize,
    /// DaemonSets.
    pub daemonsets: usize,
    /// StatefulSets.
    pub statefulsets: usize,
    /// Pods (bare ones included).
    pub pods: usize,
    /// Pods with no owner.
    pub bare_pods: usize,
    /// PodDisruptionBudgets.
    pub pod_disruption_budgets: usize,
    /// ValidatingWebhookConfigurations.
    pub validating_webhooks: usize,
    /// MutatingWebhookConfigurations.
    pub mutating_webhooks: usize,
    /// APIServices.
    pub api_services: usize,
    /// CustomResourceDefinitions.
    pub crds: usize,
    /// Nodes.
    pub nodes: usize,
}

impl SeedReport {
    /// One line of counts, for the CLI.
    pub fn summary(&self) -> String {
        format!(
            "{} namespaces, {} configmaps, {} token secrets (+{} opaque), {} deployments, {} daemonsets, {} statefulsets, {} pods, {} PDBs, {} webhook configurations, {} nodes",
            self.namespaces,
            self.configmaps,
            self.token_secrets,
            self.opaque_secrets,
            self.deployments,
            self.daemonsets,
            self.statefulsets,
            self.pods,
            self.pod_disruption_budgets,
            self.validating_webhooks + self.mutating_webhooks,
            self.nodes
        )
    }
}

const KCM: &str = "kube-controller-manager";
const KUBEADM: &str = "kubeadm";
const KUBECTL: &str = "kubectl-client-side-apply";
const KUBELET: &str = "kubelet";
const DEFAULT_SERVER: &str = "https://127.0.0.1:6443";
const BASES: [&str; 10] = [
    "web", "api", "worker", "cache", "frontend", "billing", "search", "auth", "queue", "metrics",
];

fn managed(mut obj: Value, manager: &str, subresource: Option<&str>) -> Value {
    record_manager(
        &mut obj,
        &Manager {
            name: manager.into(),
            operation: "Update".into(),
            subresource: subresource.map(str::to_string),
        },
    );
    obj
}

fn store_err(source: StoreError) -> SandboxError {
    SandboxError::Store(Box::new(source))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SandboxError + '_ {
    move |source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The API server URL kubeconfigs of the first control plane use.
fn server_of(cp: &SandboxNode) -> String {
    std::fs::read_to_string(cp.root.join(layout::KUBERNETES).join("admin.conf"))
        .ok()
        .and_then(|t| serde_saphyr::from_str::<crate::pki::kubeconfig::Kubeconfig>(&t).ok())
        .and_then(|k| k.clusters.first().map(|c| c.cluster.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_string())
}

/// A workload being seeded, with the pods it will have.
struct Planned {
    kind: Kind,
    obj: Value,
    pods: Vec<Value>,
    placeholder: String,
}

fn container(name: &str, image: &str, port: u16) -> Value {
    json!({
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{ "containerPort": port, "protocol": "TCP" }],
        "resources": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"
    })
}

fn pod_spec(containers: Value) -> Value {
    json!({
        "containers": containers,
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "securityContext": {},
        "terminationGracePeriodSeconds": 30
    })
}

fn workload(
    kind: Kind,
    ns: &str,
    name: &str,
    labels: Value,
    replicas: usize,
    spec: Value,
) -> Value {
    let selector = json!({ "matchLabels": labels });
    let template = json!({ "metadata": { "labels": labels }, "spec": spec });
    let s = match kind {
        Kind::Deployment => json!({
            "progressDeadlineSeconds": 600,
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "selector": selector,
            "strategy": { "rollingUpdate": { "maxSurge": "25%", "maxUnavailable": "25%" }, "type": "RollingUpdate" },
            "template": template
        }),
        Kind::DaemonSet => json!({
            "revisionHistoryLimit": 10,
            "selector": selector,
            "template": template,
            "updateStrategy": { "rollingUpdate": { "maxSurge": 0, "maxUnavailable": 1 }, "type": "RollingUpdate" }
        }),
        Kind::StatefulSet => json!({
            "persistentVolumeClaimRetentionPolicy": { "whenDeleted": "Retain", "whenScaled": "Retain" },
            "podManagementPolicy": "OrderedReady",
            "replicas": replicas,
            "revisionHistoryLimit": 10,
            "selector": selector,
            "serviceName": name,
            "template": template,
            "updateStrategy": { "rollingUpdate": { "partition": 0 }, "type": "RollingUpdate" }
        }),
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": kind.kind(),
        "metadata": { "name": name, "namespace": ns, "labels": labels, "annotations": {} },
        "spec": s
    })
}

fn coredns() -> Value {
    let labels = json!({ "k8s-app": "kube-dns" });
    let mut spec = pod_spec(json!([{
        "name": "coredns",
        "image": "registry.k8s.io/coredns/coredns:v1.11.3",
        "imagePullPolicy": "IfNotPresent",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [
            { "containerPort": 53, "name": "dns", "protocol": "UDP" },
            { "containerPort": 53, "name": "dns-tcp", "protocol": "TCP" },
            { "containerPort": 9153, "name": "metrics", "protocol": "TCP" }
        ],
        "resources": { "limits": { "memory": "170Mi" }, "requests": { "cpu": "100m", "memory": "70Mi" } },
        "volumeMounts": [{ "mountPath": "/etc/coredns", "name": "config-volume", "readOnly": true }],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"
    }]));
    spec["dnsPolicy"] = json!("Default");
    spec["priorityClassName"] = json!("system-cluster-critical");
    spec["serviceAccountName"] = json!("coredns");
    spec["tolerations"] = json!([
        { "key": "CriticalAddonsOnly", "operator": "Exists" },
        { "effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane" }
    ]);
    spec["volumes"] = json!([{
        "name": "config-volume",
        "configMap": { "defaultMode": 420, "items": [{ "key": "Corefile", "path": "Corefile" }], "name": "coredns" }
    }]);
    let mut d = workload(Kind::Deployment, "kube-system", "coredns", labels, 2, spec);
    d["spec"]["strategy"]["rollingUpdate"] = json!({ "maxSurge": "25%", "maxUnavailable": 1 });
    d
}

fn kube_proxy() -> Value {
    let labels = json!({ "k8s-app": "kube-proxy" });
    let mut spec = pod_spec(json!([{
        "name": "kube-proxy",
        "image": "registry.k8s.io/kube-proxy:v1.32.4",
        "imagePullPolicy": "IfNotPresent",
        "command": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kube-proxy/config.conf", "--hostname-override=$(NODE_NAME)"],
        "env": [{ "name": "NODE_NAME", "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "spec.nodeName" } } }],
        "resources": {},
        "securityContext": { "privileged": true },
        "volumeMounts": [
            { "mountPath": "/var/lib/kube-proxy", "name": "kube-proxy" },
            { "mountPath": "/run/xtables.lock", "name": "xtables-lock" },
            { "mountPath": "/lib/modules", "name": "lib-modules", "readOnly": true }
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"
    }]));
    spec["hostNetwork"] = json!(true);
    spec["nodeSelector"] = json!({ "kubernetes.io/os": "linux" });
    spec["priorityClassName"] = json!("system-node-critical");
    spec["serviceAccountName"] = json!("kube-proxy");
    spec["tolerations"] = json!([{ "operator": "Exists" }]);
    spec["volumes"] = json!([
        { "name": "kube-proxy", "configMap": { "defaultMode": 420, "name": "kube-proxy" } },
        { "name": "xtables-lock", "hostPath": { "path": "/run/xtables.lock", "type": "FileOrCreate" } },
        { "name": "lib-modules", "hostPath": { "path": "/lib/modules", "type": "" } }
    ]);
    workload(
        Kind::DaemonSet,
        "kube-system",
        "kube-proxy",
        labels,
        0,
        spec,
    )
}

/// The i-th application workload (0-based) of namespace `ns`.
fn app_workload(i: usize, ns: &str) -> (Kind, Value, bool) {
    let base = BASES[i % BASES.len()];
    let name = format!("{base}-{}", i + 1);
    let kind = match i % 10 {
        3 => Kind::DaemonSet,
        7 => Kind::StatefulSet,
        _ => Kind::Deployment,
    };
    let replicas = match kind {
        Kind::Deployment => 1 + i % 3,
        Kind::StatefulSet => 1 + (i / 10) % 3,
        Kind::DaemonSet => 0,
    };
    let port = 8000 + (i % 10) as u16 * 10;
    let image = format!("registry.example.com/{base}:1.{}.{}", i % 7, i % 4);
    let mut spec = pod_spec(json!([container(base, &image, port)]));
    spec["serviceAccountName"] = json!("default");
    let labels = json!({ "app": name });
    let w = workload(kind, ns, &name, labels, replicas, spec);
    let pdb = kind == Kind::Deployment && replicas >= 2 && i % 4 == 1;
    (kind, w, pdb)
}

fn pdb(
    ns: &str,
    name: &str,
    labels: Value,
    min_available: Option<i64>,
    max_unavailable: Option<i64>,
) -> Value {
    let mut spec = json!({ "selector": { "matchLabels": labels } });
    if let Some(m) = min_available {
        spec["minAvailable"] = json!(m);
    }
    if let Some(m) = max_unavailable {
        spec["maxUnavailable"] = json!(m);
    }
    json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": { "name": name, "namespace": ns, "generation": 1 },
        "spec": spec
    })
}

/// A legacy token secret as created; [`token_secrets`] signs its `token` as the
/// controller manager's tokens controller does ([`super::controllers::legacy_tokens`]).
fn token_secret(ns: &str, sa: &str, name: &str, ca_b64: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": { "kubernetes.io/service-account.name": sa }
        },
        "type": objects::TOKEN_SECRET_TYPE,
        "data": {
            "ca.crt": ca_b64,
            "namespace": objects::b64(ns.as_bytes())
        }
    })
}

fn webhook_configuration(w: usize, ns: &str, ca_b64: &str) -> (&'static str, Value) {
    let validating = w.is_multiple_of(2);
    let (plural, kind, base, path) = if validating {
        (
            "validatingwebhookconfigurations",
            "ValidatingWebhookConfiguration",
            "policy",
            "/validate",
        )
    } else {
        (
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
            "injector",
            "/mutate",
        )
    };
    let name = format!("{base}-{}", w + 1);
    let hooks: Vec<Value> = (0..1 + (w / 4) % 2)
        .map(|h| {
            let mut hook = json!({
                "name": format!("{}.{name}.example.com", if h == 0 { "pods" } else { "deployments" }),
                "admissionReviewVersions": ["v1"],
                "clientConfig": {
                    "caBundle": ca_b64,
                    "service": { "name": name, "namespace": ns, "path": path, "port": 443 }
                },
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "namespaceSelector": {},
                "objectSelector": {},
                "rules": [{
                    "apiGroups": [if h == 0 { "" } else { "apps" }],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": [if h == 0 { "pods" } else { "deployments" }],
                    "scope": "*"
                }],
                "sideEffects": "None",
                "timeoutSeconds": 10
            });
            if !validating {
                hook["reinvocationPolicy"] = json!("Never");
            }
            hook
        })
        .collect();
    (
        plural,
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": { "name": name },
            "webhooks": hooks
        }),
    )
}

fn api_service(ca_b64: &str) -> Value {
    json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": { "name": "v1beta1.metrics.k8s.io", "labels": { "k8s-app": "metrics-server" } },
        "spec": {
            "caBundle": ca_b64,
            "group": "metrics.k8s.io",
            "groupPriorityMinimum": 100,
            "service": { "name": "metrics-server", "namespace": "kube-system", "port": 443 },
            "version": "v1beta1",
            "versionPriority": 100
        }
    })
}

fn crd(ns: &str, ca_b64: &str) -> Value {
    let schema = json!({ "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.example.com" },
        "spec": {
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "clientConfig": {
                        "caBundle": ca_b64,
                        "service": { "name": "widgets-conversion", "namespace": ns, "path": "/convert", "port": 443 }
                    },
                    "conversionReviewVersions": ["v1"]
                }
            },
            "group": "example.com",
            "names": { "kind": "Widget", "listKind": "WidgetList", "plural": "widgets", "singular": "widget" },
            "scope": "Namespaced",
            "versions": [
                { "name": "v1", "served": true, "storage": true, "schema": schema },
                { "name": "v1beta1", "served": true, "storage": false, "schema": schema }
            ]
        }
    })
}

fn configmap(ns: &str, name: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": ns },
        "data": data
    })
}

const COREFILE: &str = ".:53 {\n    errors\n    health {\n       lameduck 5s\n    }\n    ready\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       ttl 30\n    }\n    prometheus :9153\n    forward . /etc/resolv.conf {\n       max_concurrent 1000\n    }\n    cache 30 {\n       disable success cluster.local\n       disable denial cluster.local\n    }\n    loop\n    reload\n    loadbalance\n}\n";

fn kube_proxy_configmap(server: &str) -> Value {
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n    server: {server}\n  name: default\ncontexts:\n- context:\n    cluster: default\n    namespace: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token\n"
    );
    let config = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nbindAddress: 0.0.0.0\nclientConnection:\n  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf\nclusterCIDR: 10.244.0.0/16\nkind: KubeProxyConfiguration\nmode: \"\"\n";
    configmap(
        "kube-system",
        "kube-proxy",
        json!({ "config.conf": config, "kubeconfig.conf": kubeconfig }),
    )
}

/// Objects for the store: (resource, object).
type Batch = Vec<(&'static str, Value)>;

/// The namespace of the `i`th app object: the app namespaces in turn (`default` when
/// there are none).
fn app_ns(apps: &[String], i: usize) -> &str {
    if apps.is_empty() {
        "default"
    } else {
        &apps[i % apps.len()]
    }
}

/// Seed sandbox `dir` (after its nodes started). Writes the store in two batches: every
/// object but pods and token secrets, then those (they name uids the store assigns).
pub fn seed(dir: &Path, seed: &Seed) -> Result<SeedReport, SandboxError> {
    let sandbox = Sandbox::load(dir).map_err(io_err(&dir.join("sandbox.json")))?;
    let nodes = &sandbox.nodes;
    let cp1 = nodes
        .iter()
        .find(|n| n.role == Role::ControlPlane)
        .ok_or(SandboxError::NoControlPlane)?;
    let ca_path = cp1.root.join(layout::PKI).join("ca.crt");
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(io_err(&ca_path))?;
    let root_ca = runtime::held(&cp1.root, KCM)
        .and_then(|h| held_root_ca(&h))
        .unwrap_or_else(|| ca_pem.clone());
    let ca_b64 = objects::b64(ca_pem.as_bytes());
    let trust = Trust {
        fingerprints: objects::bundle_fingerprints(&root_ca),
        resource_version: String::new(),
    };
    let apps: Vec<String> = (1..=seed.namespaces).map(|i| format!("app-{i}")).collect();
    let mut report = SeedReport::default();
    let mut batch = Batch::new();
    namespaces(&mut batch, &mut report, &apps, &root_ca);
    cluster_configmaps(&mut batch, &mut report, cp1, &ca_pem);
    registered_nodes(&mut batch, &mut report, nodes);
    let (planned, pdbs) = plan_workloads(&mut report, seed, &apps, nodes, &trust);
    let bare = bare_pods(seed, nodes, &trust);
    budgets_and_workloads(&mut batch, &mut report, pdbs, &planned, &bare);
    opaque_secrets(&mut batch, &mut report, seed, &apps);
    webhooks(&mut batch, &mut report, seed, &apps, &ca_b64)?;
    let store = Store::open(dir).map_err(store_err)?;
    store.create_many(batch).map_err(store_err)?;
    // Second batch: what names a uid the store assigned.
    let mut second = owned_pods(&store, &mut report, planned, bare);
    // The controller manager signed each legacy token with sa.key when it made it.
    let signer =
        if seed.legacy_token_secrets > 0 {
            let path = cp1.root.join(layout::PKI).join("sa.key");
            let key = std::fs::read_to_string(&path).map_err(io_err(&path))?;
            Some(crate::sandbox::tokens::Signer::new(&key).map_err(|e| {
                io_err(&path)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
            })?)
        } else {
            None
        };
    second.extend(token_secrets(
        &store,
        &mut report,
        seed,
        &apps,
        &objects::b64(root_ca.as_bytes()),
        signer.as_ref(),
    ));
    store.create_many(second).map_err(store_err)?;
    Ok(report)
}

/// Namespaces and what every namespace gets (its default service account and
/// kube-root-ca.crt), and kubeadm's service accounts.
fn namespaces(batch: &mut Batch, report: &mut SeedReport, apps: &[String], root_ca: &str) {
    let all_ns: Vec<&str> = objects::SYSTEM_NAMESPACES
        .iter()
        .copied()
        .chain(apps.iter().map(String::as_str))
        .collect();
    for ns in &all_ns {
        batch.push(("namespaces", managed(objects::namespace(ns), KUBECTL, None)));
        batch.push((
            "serviceaccounts",
            managed(objects::default_service_account(ns), KCM, None),
        ));
        batch.push((
            "configmaps",
            managed(objects::root_ca_configmap(ns, root_ca), KCM, None),
        ));
    }
    report.namespaces = all_ns.len();
    report.service_accounts = all_ns.len();
    report.configmaps = all_ns.len();
    for sa in ["coredns", "kube-proxy"] {
        batch.push((
            "serviceaccounts",
            managed(
                json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": sa, "namespace": "kube-system" } }),
                KUBEADM,
                None,
            ),
        ));
        report.service_accounts += 1;
    }
}

/// kubeadm's ConfigMaps (cluster-info, coredns, kube-proxy) and the API server's
/// extension-apiserver-authentication.
fn cluster_configmaps(batch: &mut Batch, report: &mut SeedReport, cp1: &SandboxNode, ca_pem: &str) {
    let server = server_of(cp1);
    batch.push((
        "configmaps",
        managed(objects::cluster_info(&server, ca_pem), KUBEADM, None),
    ));
    batch.push((
        "configmaps",
        managed(
            configmap("kube-system", "coredns", json!({ "Corefile": COREFILE })),
            KUBEADM,
            None,
        ),
    ));
    batch.push((
        "configmaps",
        managed(kube_proxy_configmap(&server), KUBEADM, None),
    ));
    report.configmaps += 3;
    if let Some(h) = runtime::held(&cp1.root, "kube-apiserver") {
        batch.push((
            "configmaps",
            managed(
                objects::extension_auth_configmap(held_data(&h)),
                "kube-apiserver",
                None,
            ),
        ));
        report.configmaps += 1;
    }
}

/// Nodes, as their running kubelets registered them.
fn registered_nodes(batch: &mut Batch, report: &mut SeedReport, nodes: &[SandboxNode]) {
    let now = objects::now();
    for (i, node) in nodes.iter().enumerate() {
        if let Some(h) = runtime::held(&node.root, KUBELET) {
            batch.push((
                "nodes",
                managed(
                    objects::node(node, i, h.generation, &now),
                    KUBELET,
                    Some("status"),
                ),
            ));
            report.nodes += 1;
        }
    }
}

/// kubeadm's workloads and the apps', each planned with its pods as the controllers would
/// create them (owner uids filled in once the store assigns them), and the budgets.
fn plan_workloads(
    report: &mut SeedReport,
    seed: &Seed,
    apps: &[String],
    nodes: &[SandboxNode],
    trust: &Trust,
) -> (Vec<Planned>, Vec<Value>) {
    let mut planned: Vec<Planned> = Vec::new();
    let mut pdbs: Vec<Value> = vec![pdb(
        "kube-system",
        "coredns",
        json!({ "k8s-app": "kube-dns" }),
        None,
        Some(1),
    )];
    let system = [
        (Kind::Deployment, coredns()),
        (Kind::DaemonSet, kube_proxy()),
    ];
    let mut app_workloads = Vec::new();
    for i in 0..seed.workloads {
        let (kind, w, with_pdb) = app_workload(i, app_ns(apps, i));
        if with_pdb {
            pdbs.push(pdb(
                objects::meta_str(&w, "namespace"),
                objects::name(&w),
                w["metadata"]["labels"].clone(),
                Some(1),
                None,
            ));
        }
        app_workloads.push((kind, w));
    }
    for (kind, mut obj) in system.into_iter().chain(app_workloads) {
        let placeholder = format!(
            "seed:{}/{}/{}",
            kind.plural(),
            objects::meta_str(&obj, "namespace"),
            objects::name(&obj)
        );
        obj["metadata"]["uid"] = json!(placeholder);
        obj["metadata"]["generation"] = json!(1);
        let pods = planned_pods(kind, &obj, nodes, trust);
        let refs: Vec<&Value> = pods.iter().collect();
        obj["status"] = rollout::status(kind, &obj, &refs, nodes);
        match kind {
            Kind::Deployment => report.deployments += 1,
            Kind::DaemonSet => report.daemonsets += 1,
            Kind::StatefulSet => report.statefulsets += 1,
        }
        planned.push(Planned {
            kind,
            obj,
            pods,
            placeholder,
        });
    }
    (planned, pdbs)
}

/// The pods a controller creates for a new workload.
fn planned_pods(kind: Kind, obj: &Value, nodes: &[SandboxNode], trust: &Trust) -> Vec<Value> {
    let owned: Vec<&Value> = Vec::new();
    let plan = rollout::plan(kind, obj, &owned, nodes);
    let base = format!(
        "{}/{}",
        objects::meta_str(obj, "namespace"),
        objects::name(obj)
    );
    let mut names = HashSet::new();
    plan.missing
        .iter()
        .enumerate()
        .filter_map(|(k, slot)| {
            // Generated names are deterministic; salt the rare collision away.
            (0..).find_map(|salt| {
                let pod =
                    rollout::new_pod(kind, obj, slot, nodes, trust, &format!("{base}/{k}/{salt}"));
                match pod {
                    Some(p) if !names.insert(objects::name(&p).to_string()) => None,
                    other => Some(other),
                }
            })?
        })
        .collect()
}

/// Bare pods in `default` (no owner: a rollout cannot move them).
fn bare_pods(seed: &Seed, nodes: &[SandboxNode], trust: &Trust) -> Vec<Value> {
    let mut bare: Vec<Value> = Vec::new();
    if seed.workloads == 0 {
        return bare;
    }
    for i in 0..seed.bare_pods {
        let (base, image) = BARE[i % BARE.len()];
        let name = if i < BARE.len() {
            base.to_string()
        } else {
            format!("{base}-{}", i + 1)
        };
        let name = name.as_str();
        let template = json!({
            "metadata": { "labels": { "run": name } },
            "spec": pod_spec(json!([{
                "name": name,
                "image": image,
                "command": ["sleep", "infinity"],
                "imagePullPolicy": "IfNotPresent",
                "resources": {}
            }]))
        });
        let eligible = rollout::eligible_nodes(Kind::Deployment, &template, nodes);
        let Some(&n) = eligible.first() else { continue };
        bare.push(objects::pod(&objects::PodSpec {
            namespace: "default",
            name,
            generate_name: None,
            owner: None,
            template: &template,
            extra_labels: &[],
            node: (&nodes[n], n),
            trust,
        }));
    }
    bare
}

/// The budgets, with their status from the planned pods, and the workloads.
fn budgets_and_workloads(
    batch: &mut Batch,
    report: &mut SeedReport,
    pdbs: Vec<Value>,
    planned: &[Planned],
    bare: &[Value],
) {
    let mut all_pods: HashMap<&str, Vec<Value>> = HashMap::new();
    for p in planned.iter().flat_map(|p| &p.pods).chain(bare) {
        all_pods
            .entry(objects::meta_str(p, "namespace"))
            .or_default()
            .push(p.clone());
    }
    let scales: disruption::Scales = planned
        .iter()
        .map(|p| {
            let scale = match p.kind {
                Kind::DaemonSet => p.obj["status"]["desiredNumberScheduled"]
                    .as_i64()
                    .unwrap_or(0),
                _ => p.obj["spec"]["replicas"].as_i64().unwrap_or(1),
            };
            (p.placeholder.clone(), scale)
        })
        .collect();
    for mut p in pdbs {
        let ns = objects::meta_str(&p, "namespace").to_string();
        let pods = all_pods.get(ns.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        p["status"] = disruption::status(&p, disruption::counts(&p, pods, &scales));
        batch.push(("poddisruptionbudgets", managed(p, KUBECTL, None)));
        report.pod_disruption_budgets += 1;
    }
    for p in planned {
        let mut obj = p.obj.clone();
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("uid");
        }
        let manager = if objects::meta_str(&obj, "namespace") == "kube-system" {
            KUBEADM
        } else {
            KUBECTL
        };
        let obj = managed(managed(obj, manager, None), KCM, Some("status"));
        batch.push((p.kind.plural(), obj));
    }
}

/// Opaque secrets of the apps (token secrets follow once their service accounts have
/// uids).
fn opaque_secrets(batch: &mut Batch, report: &mut SeedReport, seed: &Seed, apps: &[String]) {
    if seed.legacy_token_secrets == 0 {
        return;
    }
    for (k, name) in ["db-credentials", "registry-auth", "tls-client"]
        .iter()
        .enumerate()
    {
        let ns = apps.get(k).map_or("default", String::as_str);
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": name, "namespace": ns },
            "type": "Opaque",
            "data": {
                "username": objects::b64(b"app"),
                "password": objects::b64(objects::suffix(&format!("{ns}/{name}")).as_bytes())
            }
        });
        batch.push(("secrets", managed(secret, KUBECTL, None)));
        report.opaque_secrets += 1;
    }
}

/// Webhooks (every other pair trusts the cluster CA, the rest a CA of their own), an
/// APIService and a CRD with a conversion webhook, each with a caBundle.
fn webhooks(
    batch: &mut Batch,
    report: &mut SeedReport,
    seed: &Seed,
    apps: &[String],
    ca_b64: &str,
) -> Result<(), SandboxError> {
    if seed.webhooks == 0 {
        return Ok(());
    }
    let webhook_ca = if seed.webhooks > 2 {
        let ca = crate::pki::issue::new_ca(
            "sandbox-webhook-ca",
            crate::pki::KeyAlgorithm::EcdsaP256,
            3650,
        )?;
        objects::b64(ca.cert_pem.as_bytes())
    } else {
        String::new()
    };
    for w in 0..seed.webhooks {
        let bundle = if (w / 2) % 2 == 0 {
            ca_b64
        } else {
            &webhook_ca
        };
        let (plural, obj) = webhook_configuration(w, app_ns(apps, w), bundle);
        if plural == "validatingwebhookconfigurations" {
            report.validating_webhooks += 1;
        } else {
            report.mutating_webhooks += 1;
        }
        batch.push((plural, managed(obj, KUBECTL, None)));
    }
    batch.push(("apiservices", managed(api_service(ca_b64), KUBECTL, None)));
    batch.push((
        "customresourcedefinitions",
        managed(crd(app_ns(apps, 0), ca_b64), KUBECTL, None),
    ));
    report.api_services = 1;
    report.crds = 1;
    Ok(())
}

/// The pods, now that their owners have uids, each annotated with the kube-root-ca.crt
/// version it read.
fn owned_pods(
    store: &Store,
    report: &mut SeedReport,
    planned: Vec<Planned>,
    bare: Vec<Value>,
) -> Batch {
    let mut out = Batch::new();
    let mut root_rv: HashMap<String, String> = HashMap::new();
    let mut rv_of = |ns: &str| -> String {
        root_rv
            .entry(ns.to_string())
            .or_insert_with(|| {
                store
                    .get("configmaps", Some(ns), objects::ROOT_CA_CONFIGMAP)
                    .map(|c| objects::meta_str(&c, "resourceVersion").to_string())
                    .unwrap_or_default()
            })
            .clone()
    };
    for p in planned {
        let ns = objects::meta_str(&p.obj, "namespace").to_string();
        let uid = store
            .get(p.kind.plural(), Some(&ns), objects::name(&p.obj))
            .map(|o| objects::meta_str(&o, "uid").to_string())
            .unwrap_or_default();
        let rv = rv_of(&ns);
        for mut pod in p.pods {
            pod["metadata"]["ownerReferences"][0]["uid"] = json!(uid);
            objects::set_annotation(&mut pod, objects::TRUSTED_CA_AT, &rv);
            out.push((
                "pods",
                managed(managed(pod, KCM, None), KUBELET, Some("status")),
            ));
            report.pods += 1;
        }
    }
    for mut pod in bare {
        let rv = rv_of("default");
        objects::set_annotation(&mut pod, objects::TRUSTED_CA_AT, &rv);
        out.push((
            "pods",
            managed(managed(pod, KUBECTL, None), KUBELET, Some("status")),
        ));
        report.pods += 1;
        report.bare_pods += 1;
    }
    out
}

/// Legacy token secrets, now that their service accounts have uids, spread over
/// kube-system and the app namespaces.
fn token_secrets(
    store: &Store,
    report: &mut SeedReport,
    seed: &Seed,
    apps: &[String],
    root_b64: &str,
    signer: Option<&crate::sandbox::tokens::Signer>,
) -> Batch {
    let mut out = Batch::new();
    let secret_ns: Vec<&str> = std::iter::once("kube-system")
        .chain(apps.iter().map(String::as_str))
        .collect();
    let mut sa_uid: HashMap<String, String> = HashMap::new();
    let mut secret_names: HashSet<(&str, String)> = HashSet::new();
    for j in 0..seed.legacy_token_secrets {
        let ns = secret_ns[j % secret_ns.len()];
        let sa = if ns == "kube-system" {
            ["default", "coredns", "kube-proxy"][(j / secret_ns.len()) % 3]
        } else {
            "default"
        };
        let name = (0..)
            .map(|salt| {
                format!(
                    "{sa}-token-{}",
                    objects::suffix(&format!("{ns}/{j}/{salt}"))
                )
            })
            .find(|n| secret_names.insert((ns, n.clone())))
            .unwrap_or_default();
        let mut secret = token_secret(ns, sa, &name, root_b64);
        let uid = sa_uid
            .entry(format!("{ns}/{sa}"))
            .or_insert_with(|| {
                store
                    .get("serviceaccounts", Some(ns), sa)
                    .map(|o| objects::meta_str(&o, "uid").to_string())
                    .unwrap_or_default()
            })
            .clone();
        objects::set_annotation(&mut secret, "kubernetes.io/service-account.uid", &uid);
        if let Some(token) = signer.and_then(|s| {
            s.sign(&super::controllers::legacy_tokens::claims(
                ns, &name, sa, &uid,
            ))
            .ok()
        }) {
            secret["data"]["token"] = json!(objects::b64(token.as_bytes()));
        }
        out.push(("secrets", managed(secret, KCM, None)));
        report.token_secrets += 1;
    }
    out
}
