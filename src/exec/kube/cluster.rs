//! Reading the trust a cluster's API objects hold: kube-root-ca.crt per namespace,
//! cluster-info, extension-apiserver-authentication, legacy token secrets, caBundles,
//! workloads and what their pods trust. Every list is paginated; the lists run
//! concurrently. Observation and the apply's actions read through here.

use super::{KubeError, all, list_all, retry};
use crate::pki::Fingerprint;
use crate::pki::cert::pem_blocks;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The ConfigMap every namespace gets from the controller manager.
pub const ROOT_CA: &str = "kube-root-ca.crt";
/// Where a pod reports the CAs it holds in memory (the sandbox's pods do; a real
/// cluster's pods do not, and their trust is inferred from start times).
pub const TRUSTED_CA_ANNOTATION: &str = "sandbox.trustform.dev/trusted-ca-sha256";
/// The pod-template annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
/// Legacy service-account token secrets.
pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";

/// Fingerprints of the certificates in a PEM text (no X.509 parse: fast on 20,000
/// secrets); a text that is not PEM holds none.
pub fn fingerprints(pem: &str) -> Vec<Fingerprint> {
    pem_blocks(pem, "API object")
        .map(|bs| {
            bs.into_iter()
                .filter(|b| b.label == "CERTIFICATE")
                .map(|b| Fingerprint::of(&b.der))
                .collect()
        })
        .unwrap_or_default()
}

/// A namespace's kube-root-ca.crt.
#[derive(Clone, Debug)]
pub struct RootCa {
    /// The CAs in `data["ca.crt"]`.
    pub cas: Vec<Fingerprint>,
    /// When it was last written (RFC 3339, from managedFields; creation otherwise).
    pub written: Option<String>,
}

/// What a pod trusts in memory.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "cas")]
pub enum PodTrust {
    /// These CAs (reported by the pod, or read from kube-root-ca.crt after the pod started).
    Known(Vec<Fingerprint>),
    /// The pod started before its namespace's kube-root-ca.crt was last written: it
    /// holds an earlier content, which the API no longer shows.
    Unknown,
}

impl PodTrust {
    /// Does it trust every CA of `want`?
    pub fn covers(&self, want: &[Fingerprint]) -> bool {
        match self {
            PodTrust::Known(have) => want.iter().all(|f| have.contains(f)),
            PodTrust::Unknown => false,
        }
    }
}

/// A running pod.
#[derive(Clone, Debug)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The workload that owns it (`Deployment/coredns`), if any.
    pub owner: Option<String>,
    /// Start time (RFC 3339).
    pub started: Option<String>,
    /// What it trusts.
    pub trust: PodTrust,
    /// Where its node's kubelet keeps its service-account token: (node, node path of the
    /// projected volume's `token`), when it mounts one.
    pub token: Option<(String, String)>,
}

/// Where the kubelet of `pod`'s node writes its projected service-account token
/// ([`crate::layout::pod_token`]).
pub fn token_path(pod: &k8s_openapi::api::core::v1::Pod) -> Option<(String, String)> {
    let uid = pod.metadata.uid.as_deref()?;
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.as_deref()?;
    let volume = spec.volumes.iter().flatten().find(|v| {
        v.projected.as_ref().is_some_and(|p| {
            p.sources
                .iter()
                .flatten()
                .any(|s| s.service_account_token.is_some())
        })
    })?;
    Some((
        node.to_string(),
        crate::layout::pod_token(uid, &volume.name),
    ))
}

/// A workload kind trustform restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 StatefulSet.
    StatefulSet,
}

impl std::fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::StatefulSet => "StatefulSet",
        })
    }
}

/// A workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Kind.
    pub kind: WorkloadKind,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Its pod template's labels (what a PodDisruptionBudget selects).
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// `Deployment/coredns`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// A caBundle that holds certificates.
#[derive(Clone, Debug)]
pub struct CaBundle {
    /// `ValidatingWebhookConfiguration/name`, `APIService/name`, `CustomResourceDefinition/name`.
    pub object: String,
    /// JSON pointer of the field (`/webhooks/0/clientConfig/caBundle`).
    pub pointer: String,
    /// The PEM text it holds (decoded).
    pub pem: String,
    /// Its CAs.
    pub cas: Vec<Fingerprint>,
}

/// Workloads and pods.
#[derive(Clone, Debug, Default)]
pub struct Workloads {
    /// Deployments, DaemonSets, StatefulSets.
    pub workloads: Vec<Workload>,
    /// Every pod.
    pub pods: Vec<PodInfo>,
}

/// Every namespace's name.
pub async fn namespaces(client: &Client) -> Result<Vec<String>, KubeError> {
    let api: Api<Namespace> = Api::all(client.clone());
    Ok(list_all(&api, &ListParams::default(), "list namespaces")
        .await?
        .into_iter()
        .map(|n| n.name_any())
        .collect())
}

fn last_write(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.time.as_ref())
        .map(|t| t.0.to_string())
        .max()
        .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0.to_string()))
}

/// kube-root-ca.crt of every namespace that has one.
pub async fn root_cas(client: &Client) -> Result<BTreeMap<String, RootCa>, KubeError> {
    let lp = ListParams::default().fields(&format!("metadata.name={ROOT_CA}"));
    let api = all::<ConfigMap>(client);
    let cms = list_all(&api, &lp, "list kube-root-ca.crt").await?;
    let mut cache: HashMap<String, Vec<Fingerprint>> = HashMap::new();
    Ok(cms
        .into_iter()
        .filter(|cm| cm.metadata.name.as_deref() == Some(ROOT_CA))
        .map(|cm| {
            let pem = cm
                .data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .cloned()
                .unwrap_or_default();
            let cas = cache
                .entry(pem.clone())
                .or_insert_with(|| fingerprints(&pem))
                .clone();
            (
                cm.namespace().unwrap_or_default(),
                RootCa {
                    cas,
                    written: last_write(&cm.metadata),
                },
            )
        })
        .collect())
}

/// A ConfigMap, or `None` when it does not exist.
pub async fn config_map(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<ConfigMap>, KubeError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    retry(&format!("get configmap {namespace}/{name}"), || {
        api.get_opt(name)
    })
    .await
}

/// A legacy service-account token secret: the CAs of its `ca.crt`, and the key that
/// signed its `token` (never the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenSecret {
    /// The CAs of `ca.crt`.
    pub cas: Vec<Fingerprint>,
    /// `None`: no token yet (the controller manager fills it in); `Some(None)`: its
    /// `kid` names no key.
    pub key: Option<Option<Fingerprint>>,
}

/// Every legacy service-account token secret (`type: kubernetes.io/service-account-token`)
/// by `namespace/name`.
pub async fn token_secrets(client: &Client) -> Result<BTreeMap<String, TokenSecret>, KubeError> {
    let lp = ListParams::default().fields(&format!("type={TOKEN_TYPE}"));
    let api = all::<Secret>(client);
    let secrets = list_all(&api, &lp, "list token secrets").await?;
    let mut cache: HashMap<Vec<u8>, Vec<Fingerprint>> = HashMap::new();
    Ok(secrets
        .into_iter()
        .filter(|s| s.type_.as_deref() == Some(TOKEN_TYPE))
        .map(|s| {
            let data = s.data.as_ref();
            let bytes = data
                .and_then(|d| d.get("ca.crt"))
                .map(|b| b.0.clone())
                .unwrap_or_default();
            let cas = cache
                .entry(bytes.clone())
                .or_insert_with(|| fingerprints(&String::from_utf8_lossy(&bytes)))
                .clone();
            let key = data
                .and_then(|d| d.get("token"))
                .filter(|t| !t.0.is_empty())
                .map(|t| crate::pki::token::key_of(&String::from_utf8_lossy(&t.0)));
            (
                format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
                TokenSecret { cas, key },
            )
        })
        .collect())
}

fn bundle(
    object: String,
    pointer: String,
    bytes: Option<&k8s_openapi::ByteString>,
) -> Option<CaBundle> {
    let pem = String::from_utf8_lossy(&bytes?.0).to_string();
    let cas = fingerprints(&pem);
    (!cas.is_empty()).then_some(CaBundle {
        object,
        pointer,
        pem,
        cas,
    })
}

/// caBundles of webhook configurations, APIServices and CRD conversion webhooks.
pub async fn ca_bundles(client: &Client) -> Result<Vec<CaBundle>, KubeError> {
    let lp = ListParams::default();
    let vw_api = Api::<ValidatingWebhookConfiguration>::all(client.clone());
    let mw_api = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let as_api = Api::<APIService>::all(client.clone());
    let crd_api = Api::<CustomResourceDefinition>::all(client.clone());
    let (vw, mw, aps, crds) = tokio::try_join!(
        list_all(&vw_api, &lp, "list validatingwebhookconfigurations"),
        list_all(&mw_api, &lp, "list mutatingwebhookconfigurations"),
        list_all(&as_api, &lp, "list apiservices"),
        list_all(&crd_api, &lp, "list customresourcedefinitions"),
    )?;
    let mut out = Vec::new();
    for o in vw {
        for (i, w) in o.webhooks.iter().flatten().enumerate() {
            out.extend(bundle(
                format!("ValidatingWebhookConfiguration/{}", o.name_any()),
                format!("/webhooks/{i}/clientConfig/caBundle"),
                w.client_config.ca_bundle.as_ref(),
            ));
        }
    }
    for o in mw {
        for (i, w) in o.webhooks.iter().flatten().enumerate() {
            out.extend(bundle(
                format!("MutatingWebhookConfiguration/{}", o.name_any()),
                format!("/webhooks/{i}/clientConfig/caBundle"),
                w.client_config.ca_bundle.as_ref(),
            ));
        }
    }
    for o in aps {
        out.extend(bundle(
            format!("APIService/{}", o.name_any()),
            "/spec/caBundle".into(),
            o.spec.as_ref().and_then(|s| s.ca_bundle.as_ref()),
        ));
    }
    for o in crds {
        out.extend(bundle(
            format!("CustomResourceDefinition/{}", o.name_any()),
            "/spec/conversion/webhook/clientConfig/caBundle".into(),
            o.spec
                .conversion
                .as_ref()
                .and_then(|c| c.webhook.as_ref())
                .and_then(|w| w.client_config.as_ref())
                .and_then(|c| c.ca_bundle.as_ref()),
        ));
    }
    Ok(out)
}

/// Workloads and pods; each pod's trust from its report or, failing that, from its
/// start time against its namespace's kube-root-ca.crt.
pub async fn workloads(
    client: &Client,
    root_cas: &BTreeMap<String, RootCa>,
) -> Result<Workloads, KubeError> {
    let lp = ListParams::default();
    let (da, dsa, sa, pa) = (
        all::<Deployment>(client),
        all::<DaemonSet>(client),
        all::<StatefulSet>(client),
        all::<Pod>(client),
    );
    let (deps, dss, stss, pods) = tokio::try_join!(
        list_all(&da, &lp, "list deployments"),
        list_all(&dsa, &lp, "list daemonsets"),
        list_all(&sa, &lp, "list statefulsets"),
        list_all(&pa, &lp, "list pods"),
    )?;
    let labels = |t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>| {
        t.and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    };
    let mut out = Workloads::default();
    for d in &deps {
        out.workloads.push(Workload {
            kind: WorkloadKind::Deployment,
            namespace: d.namespace().unwrap_or_default(),
            name: d.name_any(),
            labels: labels(Some(&d.spec.template)),
        });
    }
    for d in &dss {
        out.workloads.push(Workload {
            kind: WorkloadKind::DaemonSet,
            namespace: d.namespace().unwrap_or_default(),
            name: d.name_any(),
            labels: labels(Some(&d.spec.template)),
        });
    }
    for d in &stss {
        out.workloads.push(Workload {
            kind: WorkloadKind::StatefulSet,
            namespace: d.namespace().unwrap_or_default(),
            name: d.name_any(),
            labels: labels(Some(&d.spec.template)),
        });
    }
    let deployments: std::collections::HashSet<(String, String)> = out
        .workloads
        .iter()
        .filter(|w| w.kind == WorkloadKind::Deployment)
        .map(|w| (w.namespace.clone(), w.name.clone()))
        .collect();
    for p in pods {
        let namespace = p.namespace().unwrap_or_default();
        let owner = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .and_then(|o| match o.kind.as_str() {
                "Deployment" | "DaemonSet" | "StatefulSet" => {
                    Some(format!("{}/{}", o.kind, o.name))
                }
                // A ReplicaSet `<deployment>-<hash>` belongs to its Deployment.
                "ReplicaSet" => o
                    .name
                    .rsplit_once('-')
                    .filter(|(d, _)| deployments.contains(&(namespace.clone(), d.to_string())))
                    .map(|(d, _)| format!("Deployment/{d}")),
                _ => None,
            });
        let started = p
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.to_string())
            .or_else(|| {
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
            });
        let reported = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRUSTED_CA_ANNOTATION))
            .map(|v| {
                v.split(',')
                    .filter_map(Fingerprint::parse)
                    .collect::<Vec<_>>()
            });
        let trust = match reported {
            Some(cas) => PodTrust::Known(cas),
            None => match root_cas.get(&namespace) {
                Some(rc) if started_after(started.as_deref(), rc.written.as_deref()) => {
                    PodTrust::Known(rc.cas.clone())
                }
                _ => PodTrust::Unknown,
            },
        };
        out.pods.push(PodInfo {
            namespace,
            name: p.name_any(),
            owner,
            started,
            trust,
            token: token_path(&p),
        });
    }
    Ok(out)
}

/// Did the pod start strictly after the ConfigMap's last write? Both RFC 3339; a tie
/// (second resolution) counts as before: the pod may hold the older content.
fn started_after(started: Option<&str>, written: Option<&str>) -> bool {
    let parse = crate::clock::parse;
    match (started.and_then(parse), written.and_then(parse)) {
        (Some(s), Some(w)) => s > w,
        (Some(_), None) => true,
        _ => false,
    }
}

/// PodDisruptionBudgets of a namespace.
pub async fn pdbs(client: &Client, namespace: &str) -> Result<Vec<PodDisruptionBudget>, KubeError> {
    let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), namespace);
    list_all(
        &api,
        &ListParams::default(),
        &format!("list poddisruptionbudgets in {namespace}"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_started_in_the_same_second_as_the_write_may_hold_the_old_content() {
        let w = Some("2026-11-23T10:00:00Z");
        assert!(!started_after(Some("2026-11-23T10:00:00Z"), w));
        assert!(started_after(Some("2026-11-23T10:00:01Z"), w));
        assert!(!started_after(Some("2026-11-23T09:59:59Z"), w));
        assert!(!started_after(None, w));
    }

    #[test]
    fn unknown_trust_covers_nothing() {
        let a = Fingerprint::of(b"a");
        let b = Fingerprint::of(b"b");
        assert!(PodTrust::Known(vec![a.clone(), b.clone()]).covers(std::slice::from_ref(&b)));
        assert!(!PodTrust::Known(vec![a.clone()]).covers(&[a.clone(), b]));
        assert!(!PodTrust::Unknown.covers(&[a]));
    }
}
