//! The Kubernetes objects the sandbox cluster writes itself, shaped like a real cluster's:
//! namespaces and their defaults, `kube-root-ca.crt`, `cluster-info`,
//! `extension-apiserver-authentication`, Node objects and the pods of workloads.
//!
//! Seeding and the simulated controllers build every object here, so a seeded pod and a
//! pod a rollout creates look the same. Objects are `serde_json::Value`s in the API's JSON.

use super::{Role, SandboxNode};
use crate::pki::parse_certs;
use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Annotation: the SHA-256 fingerprints of the CAs a pod trusts (the `kube-root-ca.crt`
/// of its namespace when it started), comma-separated `sha256:<hex>`.
pub const TRUSTED_CA: &str = "sandbox.trustform.dev/trusted-ca-sha256";
/// Annotation: the `resourceVersion` of the `kube-root-ca.crt` a pod read at start.
pub const TRUSTED_CA_AT: &str = "sandbox.trustform.dev/trusted-ca-at";
/// Annotation on a Node: the generation of the kubelet process that last posted it.
pub const KUBELET_GENERATION: &str = "sandbox.trustform.dev/kubelet-generation";
/// The ConfigMap every namespace gets from the controller manager.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The ConfigMap the API server publishes in kube-system.
pub const EXTENSION_AUTH_CONFIGMAP: &str = "extension-apiserver-authentication";
/// The type of a legacy service-account token secret.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// The kubelet version the simulated kubelets report.
pub const KUBELET_VERSION: &str = "v1.32.0";
/// The namespaces every cluster has.
pub const SYSTEM_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Now, as the API server writes times: RFC 3339, UTC, whole seconds.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Base64 (standard alphabet), as `data` of Secrets and `caBundle` fields hold bytes.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `metadata.<field>` as a string, or `""`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name")
}

/// `metadata.generation`, or 0.
pub fn generation(obj: &Value) -> i64 {
    obj.pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// The labels of an object.
pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.pointer("/metadata/labels").and_then(Value::as_object)
}

/// One annotation.
pub fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// Set one annotation, creating `metadata.annotations` if needed.
pub fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let ann = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !ann.is_object() {
            *ann = Value::Object(Map::new());
        }
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

/// The same JSON with every object's keys sorted: the form hashes are taken over.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let ordered: BTreeMap<&String, Value> =
                    m.iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// The pod template hash of a workload: the first 10 hex digits of the SHA-256 of the
/// canonical JSON of `spec.template`.
pub fn template_hash(workload: &Value) -> String {
    let template = workload.pointer("/spec/template").unwrap_or(&Value::Null);
    hex::encode(Sha256::digest(canonical(template).as_bytes()))[..10].to_string()
}

/// Five characters from the alphabet Kubernetes uses for generated names, derived from `seed`.
pub fn suffix(seed: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    Sha256::digest(seed.as_bytes())[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A seed that differs on every call (the clock and a counter): for names the
/// controllers generate.
pub fn fresh_seed(base: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{base}/{nanos}/{}/{}",
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    )
}

/// The SHA-256 fingerprints of the certificates of a PEM bundle, comma-separated
/// (`sha256:<64 hex>`, as [`crate::pki::Fingerprint`] renders them). Unparsable text
/// gives the empty string: a pod trusting nothing.
pub fn bundle_fingerprints(pem: &str) -> String {
    parse_certs(pem, ROOT_CA_CONFIGMAP)
        .map(|certs| {
            certs
                .iter()
                .map(|c| c.facts.fingerprint.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// A Namespace.
pub fn namespace(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": { "kubernetes.io/metadata.name": name }
        },
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active" }
    })
}

/// The `default` ServiceAccount of a namespace.
pub fn default_service_account(namespace: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": { "name": "default", "namespace": namespace }
    })
}

/// `kube-root-ca.crt` of a namespace, holding `pem` exactly.
pub fn root_ca_configmap(namespace: &str, pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": ROOT_CA_CONFIGMAP,
            "namespace": namespace,
            "annotations": { "kubernetes.io/description": ROOT_CA_DESCRIPTION }
        },
        "data": { "ca.crt": pem }
    })
}

/// `kube-public/cluster-info` as kubeadm writes it: one cluster, no users.
pub fn cluster_info(server: &str, ca_pem: &str) -> Value {
    let kubeconfig = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {server}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        b64(ca_pem.as_bytes())
    );
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "cluster-info", "namespace": "kube-public" },
        "data": { "kubeconfig": kubeconfig }
    })
}

/// The `data` of `kube-system/extension-apiserver-authentication` as an API server with
/// these flags (and CA files, read at its start) publishes it: the request-header keys
/// only when it has a request-header CA, as the real one does.
pub fn extension_auth_data(
    flags: &BTreeMap<String, String>,
    file: impl Fn(&str) -> Option<Vec<u8>>,
) -> Map<String, Value> {
    let mut data = Map::new();
    let pem = |flag: &str| {
        flags
            .get(flag)
            .and_then(|p| file(p))
            .and_then(|b| String::from_utf8(b).ok())
    };
    if let Some(ca) = pem("client-ca-file") {
        data.insert("client-ca-file".into(), Value::String(ca));
    }
    if let Some(ca) = pem("requestheader-client-ca-file") {
        for flag in [
            "requestheader-allowed-names",
            "requestheader-extra-headers-prefix",
            "requestheader-group-headers",
            "requestheader-username-headers",
        ] {
            let list: Vec<&str> = flags
                .get(flag)
                .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            data.insert(flag.into(), Value::String(json!(list).to_string()));
        }
        data.insert("requestheader-client-ca-file".into(), Value::String(ca));
    }
    // A real API server writes the keys in this order.
    let order = [
        "client-ca-file",
        "requestheader-allowed-names",
        "requestheader-client-ca-file",
        "requestheader-extra-headers-prefix",
        "requestheader-group-headers",
        "requestheader-username-headers",
    ];
    order
        .iter()
        .filter_map(|k| data.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

/// The `extension-apiserver-authentication` ConfigMap with `data`.
pub fn extension_auth_configmap(data: Map<String, Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": EXTENSION_AUTH_CONFIGMAP, "namespace": "kube-system" },
        "data": data
    })
}

/// The Ready condition and the pressure conditions a healthy kubelet posts.
fn node_conditions(heartbeat: &str, ready_since: &str) -> Value {
    let cond = |ty: &str, status: &str, reason: &str, message: &str, since: &str| {
        json!({
            "type": ty,
            "status": status,
            "lastHeartbeatTime": heartbeat,
            "lastTransitionTime": since,
            "reason": reason,
            "message": message
        })
    };
    json!([
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            ready_since
        ),
        cond(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            ready_since
        ),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            ready_since
        ),
        cond(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
            ready_since
        ),
    ])
}

/// Index of a node among the sandbox's nodes: its pod CIDR is `10.244.<index>.0/24`.
fn pod_cidr(index: usize) -> String {
    format!("10.244.{}.0/24", index % 256)
}

/// The Node object a kubelet registers and keeps posting. `index` is the node's position
/// in `sandbox.json`; `generation` the kubelet process's.
pub fn node(node: &SandboxNode, index: usize, generation: u64, heartbeat: &str) -> Value {
    let mut labels = json!({
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux"
    });
    let mut spec = json!({ "podCIDR": pod_cidr(index), "podCIDRs": [pod_cidr(index)] });
    if node.role == Role::ControlPlane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
        spec["taints"] =
            json!([{ "effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane" }]);
    }
    let id = hex::encode(Sha256::digest(node.name.as_bytes()));
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": labels,
            "annotations": {
                "kubeadm.alpha.kubernetes.io/cri-socket": "unix:///var/run/containerd/containerd.sock",
                "node.alpha.kubernetes.io/ttl": "0",
                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                KUBELET_GENERATION: generation.to_string()
            }
        },
        "spec": spec,
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": node.ip },
                { "type": "Hostname", "address": node.name }
            ],
            "allocatable": { "cpu": "2", "ephemeral-storage": "95491020658", "memory": "3930784Ki", "pods": "110" },
            "capacity": { "cpu": "2", "ephemeral-storage": "103612600Ki", "memory": "4033184Ki", "pods": "110" },
            "conditions": node_conditions(heartbeat, heartbeat),
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": format!("{}-{}-{}-{}-{}", &id[0..8], &id[8..12], &id[12..16], &id[16..20], &id[20..32]),
                "containerRuntimeVersion": "containerd://1.7.24",
                "kernelVersion": "6.1.0-28-amd64",
                "kubeProxyVersion": KUBELET_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "machineID": &id[32..64],
                "operatingSystem": "linux",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "systemUUID": format!("{}-{}-{}-{}-{}", &id[32..40], &id[40..44], &id[44..48], &id[48..52], &id[52..64])
            }
        }
    })
}

/// Post a heartbeat on an existing Node object: the desired labels, annotations and
/// status of `node(..)` with the `lastTransitionTime`s it already had kept.
pub fn post_node_status(existing: &mut Value, desired: &Value) {
    let ready_since = existing
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "Ready" && c["status"] == "True")
        })
        .and_then(|c| c["lastTransitionTime"].as_str())
        .map(str::to_string);
    for field in ["labels", "annotations"] {
        if let Some(want) = desired["metadata"][field].as_object() {
            let have = existing["metadata"]
                .as_object_mut()
                .map(|m| m.entry(field).or_insert_with(|| json!({})));
            if let Some(have) = have.and_then(Value::as_object_mut) {
                for (k, v) in want {
                    have.insert(k.clone(), v.clone());
                }
            }
        }
    }
    let mut status = desired["status"].clone();
    if let Some(since) = ready_since {
        let heartbeat = status["conditions"][0]["lastHeartbeatTime"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        status["conditions"] = node_conditions(&heartbeat, &since);
    }
    existing["status"] = status;
}

/// What a pod read from its namespace's `kube-root-ca.crt` when it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    /// Comma-separated fingerprints ([`bundle_fingerprints`]).
    pub fingerprints: String,
    /// The ConfigMap's `resourceVersion`.
    pub resource_version: String,
}

impl Trust {
    /// The trust a pod starting now gets from this `kube-root-ca.crt`.
    pub fn of_configmap(cm: &Value) -> Self {
        Self {
            fingerprints: bundle_fingerprints(
                cm.pointer("/data/ca.crt")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            ),
            resource_version: meta_str(cm, "resourceVersion").to_string(),
        }
    }
}

/// The controller owning a pod.
#[derive(Clone, Debug)]
pub struct Owner<'a> {
    /// `apps/v1`.
    pub api_version: &'a str,
    /// `Deployment`, `DaemonSet` or `StatefulSet`.
    pub kind: &'a str,
    /// The workload's name.
    pub name: &'a str,
    /// The workload's uid.
    pub uid: &'a str,
}

/// Everything that decides a pod's shape.
#[derive(Clone, Debug)]
pub struct PodSpec<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Pod name.
    pub name: &'a str,
    /// `generateName` for controller-made pods with a random suffix.
    pub generate_name: Option<&'a str>,
    /// The controller, or `None` for a bare pod.
    pub owner: Option<Owner<'a>>,
    /// `spec.template` (`metadata` + `spec`), or for a bare pod its `metadata` + `spec`.
    pub template: &'a Value,
    /// Labels the controller adds (`pod-template-hash`, `controller-revision-hash`, …).
    pub extra_labels: &'a [(&'a str, String)],
    /// The node it runs on and that node's index in `sandbox.json`.
    pub node: (&'a SandboxNode, usize),
    /// What it read from `kube-root-ca.crt` at start.
    pub trust: &'a Trust,
}

/// A running, ready pod, as the kubelet reports it once its containers started: the
/// template's metadata and spec, the service-account volume real pods get, the node,
/// and the trusted-CA annotations that stand in for the pod's memory.
pub fn pod(p: &PodSpec) -> Value {
    let started = now();
    let tmeta = &p.template["metadata"];
    let mut labels = tmeta["labels"].as_object().cloned().unwrap_or_default();
    for (k, v) in p.extra_labels {
        labels.insert(k.to_string(), Value::String(v.clone()));
    }
    let mut annotations = tmeta["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.insert(TRUSTED_CA.into(), json!(p.trust.fingerprints));
    annotations.insert(TRUSTED_CA_AT.into(), json!(p.trust.resource_version));
    let mut metadata = json!({
        "name": p.name,
        "namespace": p.namespace,
        "labels": labels,
        "annotations": annotations
    });
    if let Some(g) = p.generate_name {
        metadata["generateName"] = json!(g);
    }
    if let Some(o) = &p.owner {
        metadata["ownerReferences"] = json!([{
            "apiVersion": o.api_version,
            "kind": o.kind,
            "name": o.name,
            "uid": o.uid,
            "controller": true,
            "blockOwnerDeletion": true
        }]);
    }
    let (node, index) = p.node;
    let mut spec = p.template["spec"].clone();
    if !spec.is_object() {
        spec = json!({});
    }
    let sa = spec["serviceAccountName"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    spec["serviceAccountName"] = json!(sa);
    spec["serviceAccount"] = json!(sa);
    spec["nodeName"] = json!(node.name);
    let host_network = spec["hostNetwork"].as_bool().unwrap_or(false);
    let automount = spec["automountServiceAccountToken"]
        .as_bool()
        .unwrap_or(true);
    if automount {
        let volume = format!(
            "kube-api-access-{}",
            suffix(&format!("{}/{}", p.namespace, p.name))
        );
        let mount = json!({
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "name": volume,
            "readOnly": true
        });
        if let Some(containers) = spec["containers"].as_array_mut() {
            for c in containers {
                if !c["volumeMounts"].is_array() {
                    c["volumeMounts"] = json!([]);
                }
                if let Some(m) = c["volumeMounts"].as_array_mut() {
                    m.push(mount.clone());
                }
            }
        }
        if !spec["volumes"].is_array() {
            spec["volumes"] = json!([]);
        }
        if let Some(v) = spec["volumes"].as_array_mut() {
            v.push(json!({
                "name": volume,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        { "serviceAccountToken": { "expirationSeconds": 3607, "path": "token" } },
                        { "configMap": {
                            "name": ROOT_CA_CONFIGMAP,
                            "items": [{ "key": "ca.crt", "path": "ca.crt" }]
                        } },
                        { "downwardAPI": { "items": [{
                            "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" },
                            "path": "namespace"
                        }] } }
                    ]
                }
            }));
        }
    }
    let pod_ip = if host_network {
        node.ip.clone()
    } else {
        let h = Sha256::digest(format!("{}/{}", p.namespace, p.name).as_bytes());
        format!("10.244.{}.{}", index % 256, 2 + (h[0] as usize % 250))
    };
    let container_statuses: Vec<Value> = spec["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    json!({
                        "name": c["name"],
                        "image": c["image"],
                        "imageID": "",
                        "containerID": format!("containerd://{}", hex::encode(Sha256::digest(format!("{}/{}/{}", p.namespace, p.name, c["name"]).as_bytes()))),
                        "ready": true,
                        "restartCount": 0,
                        "started": true,
                        "state": { "running": { "startedAt": started } }
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let cond = |ty: &str| json!({ "type": ty, "status": "True", "lastProbeTime": null, "lastTransitionTime": started });
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [
                cond("PodReadyToStartContainers"),
                cond("Initialized"),
                cond("Ready"),
                cond("ContainersReady"),
                cond("PodScheduled")
            ],
            "hostIP": node.ip,
            "hostIPs": [{ "ip": node.ip }],
            "podIP": pod_ip,
            "podIPs": [{ "ip": pod_ip }],
            "qosClass": "BestEffort",
            "startTime": started,
            "containerStatuses": container_statuses
        }
    })
}

/// Whether a pod is Ready (and not being deleted).
pub fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
}

/// The uid of a pod's controller, if any.
pub fn controller_uid(pod: &Value) -> Option<&str> {
    pod.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|o| o["controller"] == true)
        .and_then(|o| o["uid"].as_str())
}

/// Whether a label selector (`matchLabels` + `matchExpressions`) selects these labels.
/// A missing selector selects nothing; an empty one selects everything.
pub fn selects(selector: Option<&Value>, labels: Option<&Map<String, Value>>) -> bool {
    let Some(sel) = selector.filter(|s| s.is_object()) else {
        return false;
    };
    let empty = Map::new();
    let labels = labels.unwrap_or(&empty);
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    let by_label = sel["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| get(k) == v.as_str()));
    let by_expr = sel["matchExpressions"].as_array().is_none_or(|es| {
        es.iter().all(|e| {
            let key = e["key"].as_str().unwrap_or("");
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e["operator"].as_str() {
                Some("In") => get(key).is_some_and(|v| values.contains(&v)),
                Some("NotIn") => get(key).is_none_or(|v| !values.contains(&v)),
                Some("Exists") => get(key).is_some(),
                Some("DoesNotExist") => get(key).is_none(),
                _ => false,
            }
        })
    });
    by_label && by_expr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_hash_ignores_key_order() {
        let a = json!({"spec": {"template": {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {}}}});
        let b = json!({"spec": {"template": {"spec": {}, "metadata": {"labels": {"b": "2", "a": "1"}}}}});
        assert_eq!(template_hash(&a), template_hash(&b));
        assert_eq!(template_hash(&a).len(), 10);
        let c = json!({"spec": {"template": {"metadata": {"labels": {"a": "1"}}, "spec": {}}}});
        assert_ne!(template_hash(&a), template_hash(&c));
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let labels = json!({"app": "web", "tier": "front"});
        let l = labels.as_object();
        assert!(selects(Some(&json!({"matchLabels": {"app": "web"}})), l));
        assert!(!selects(Some(&json!({"matchLabels": {"app": "db"}})), l));
        assert!(selects(Some(&json!({})), l));
        assert!(!selects(None, l));
        let expr = json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}, {"key": "x", "operator": "DoesNotExist"}]});
        assert!(selects(Some(&expr), l));
    }

    #[test]
    fn extension_auth_publishes_json_arrays() {
        let flags: BTreeMap<String, String> = [
            ("client-ca-file", "/ca"),
            ("requestheader-client-ca-file", "/fp"),
            ("requestheader-allowed-names", "front-proxy-client"),
            ("requestheader-group-headers", "X-Remote-Group"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let data = extension_auth_data(&flags, |p| Some(format!("pem of {p}").into_bytes()));
        assert_eq!(data["client-ca-file"], "pem of /ca");
        assert_eq!(
            data["requestheader-allowed-names"],
            r#"["front-proxy-client"]"#
        );
        assert_eq!(data["requestheader-extra-headers-prefix"], "[]");
        let keys: Vec<&String> = data.keys().collect();
        assert_eq!(keys[0], "client-ca-file");
        assert_eq!(keys[2], "requestheader-client-ca-file");
    }
}
