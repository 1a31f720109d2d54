//! Objects that publish a CA: waiting for the ones the control plane writes
//! (kube-root-ca.crt and token secrets from the controller manager's `--root-ca-file`,
//! extension-apiserver-authentication from the API server's flags), and updating the
//! ones trustform writes (cluster-info, caBundles).

use super::cluster::{self, CaBundle, fingerprints};
use super::{KubeError, laggards, retry};
use crate::pki::Fingerprint;
use crate::pki::kubeconfig::{Kubeconfig, b64, unb64};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(150);

fn same(a: &[Fingerprint], b: &[Fingerprint]) -> bool {
    a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
}

fn short(v: &[Fingerprint]) -> String {
    v.iter().map(|f| f.short()).collect::<Vec<_>>().join(", ")
}

/// Wait until every namespace's kube-root-ca.crt, and every legacy token secret's
/// `ca.crt`, holds exactly `want`. Returns a one-line summary; a timeout names the laggards.
pub async fn wait_root_ca(
    client: &Client,
    want: &[Fingerprint],
    timeout: Duration,
) -> Result<String, KubeError> {
    let start = Instant::now();
    loop {
        let (namespaces, root_cas, secrets) = tokio::try_join!(
            cluster::namespaces(client),
            cluster::root_cas(client),
            cluster::token_secrets(client),
        )?;
        let mut late: Vec<String> = namespaces
            .iter()
            .filter_map(|ns| match root_cas.get(ns) {
                Some(rc) if same(&rc.cas, want) => None,
                Some(rc) => Some(format!("{ns}/{} [{}]", cluster::ROOT_CA, short(&rc.cas))),
                None => Some(format!("{ns}/{} (missing)", cluster::ROOT_CA)),
            })
            .collect();
        late.extend(
            secrets
                .iter()
                .filter(|(_, t)| !same(&t.cas, want))
                .map(|(name, t)| format!("secret {name} [{}]", short(&t.cas))),
        );
        if late.is_empty() {
            return Ok(format!(
                "{} in {} namespaces and ca.crt of {} token secrets hold [{}] ({:.1}s)",
                cluster::ROOT_CA,
                namespaces.len(),
                secrets.len(),
                short(want),
                start.elapsed().as_secs_f64()
            ));
        }
        if start.elapsed() >= timeout {
            return Err(KubeError::Timeout {
                what: format!("waiting for {} to hold [{}]", cluster::ROOT_CA, short(want)),
                waited: humantime::format_duration(timeout).to_string(),
                laggards: format!("{} ({} in all)", laggards(&late), late.len()),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The API server's publication for aggregated API servers.
pub const EXTENSION_AUTH: &str = "extension-apiserver-authentication";

/// Wait until kube-system/extension-apiserver-authentication's
/// `requestheader-client-ca-file` holds exactly `want` (the API server writes it from
/// its flags when it starts).
pub async fn wait_extension_auth(
    client: &Client,
    want: &[Fingerprint],
    timeout: Duration,
) -> Result<String, KubeError> {
    let start = Instant::now();
    loop {
        let cm = cluster::config_map(client, "kube-system", EXTENSION_AUTH).await?;
        let have = cm
            .as_ref()
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get("requestheader-client-ca-file"))
            .map(|p| fingerprints(p));
        if let Some(have) = &have
            && same(have, want)
        {
            return Ok(format!(
                "kube-system/{EXTENSION_AUTH} requestheader-client-ca-file holds [{}]",
                short(want)
            ));
        }
        if start.elapsed() >= timeout {
            return Err(KubeError::Timeout {
                what: format!("waiting for kube-system/{EXTENSION_AUTH}"),
                waited: humantime::format_duration(timeout).to_string(),
                laggards: match have {
                    Some(h) => format!("requestheader-client-ca-file holds [{}]", short(&h)),
                    None => "the ConfigMap or its requestheader-client-ca-file is missing".into(),
                },
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The CAs in kube-public/cluster-info's kubeconfig, and the kubeconfig text.
pub fn cluster_info_cas(cm: &ConfigMap) -> Option<(Vec<Fingerprint>, String)> {
    let text = cm.data.as_ref()?.get("kubeconfig")?.clone();
    let k: Kubeconfig = serde_saphyr::from_str(&text).ok()?;
    let data = k
        .clusters
        .first()?
        .cluster
        .certificate_authority_data
        .clone()?;
    Some((fingerprints(&unb64(&data)?), text))
}

/// An error of our own making, shaped as the API's: not retried (`retryable` lets
/// 404 and 422 through).
fn refused(message: &str, reason: &str, code: u16) -> kube::Error {
    kube::Error::Api(
        kube::core::Status::failure(message, reason)
            .with_code(code)
            .boxed(),
    )
}

/// Set kube-public/cluster-info's certificate-authority-data to `pem` (kubeadm join
/// reads it; kubeadm#1399: it must stay a form kubeadm accepts, so trustform writes the
/// one CA that signs the API server's certificate, never a bundle). `None`: already so.
pub async fn update_cluster_info(client: &Client, pem: &str) -> Result<Option<String>, KubeError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let want = fingerprints(pem);
    let what = "update kube-public/cluster-info";
    // A conflict (someone wrote between our read and write) re-reads: `retry` calls again.
    retry(what, || {
        let api = api.clone();
        let want = want.clone();
        async move {
            let Some(mut cm) = api.get_opt("cluster-info").await? else {
                return Err(refused(
                    "kube-public/cluster-info does not exist",
                    "NotFound",
                    404,
                ));
            };
            let text = cm
                .data
                .as_ref()
                .and_then(|d| d.get("kubeconfig"))
                .cloned()
                .unwrap_or_default();
            let mut k: Kubeconfig = serde_saphyr::from_str(&text).map_err(|e| {
                let why = crate::redact::message(&e.without_snippet().to_string(), &text);
                refused(
                    &format!("cluster-info's kubeconfig does not parse: {why}"),
                    "Invalid",
                    422,
                )
            })?;
            let Some(c) = k.clusters.first_mut() else {
                return Err(refused(
                    "cluster-info's kubeconfig has no cluster",
                    "Invalid",
                    422,
                ));
            };
            let have = c
                .cluster
                .certificate_authority_data
                .as_deref()
                .and_then(unb64)
                .map(|p| fingerprints(&p))
                .unwrap_or_default();
            if have == want {
                return Ok(None);
            }
            c.cluster.certificate_authority_data = Some(b64(pem));
            cm.data
                .get_or_insert_with(Default::default)
                .insert("kubeconfig".into(), k.to_yaml());
            api.replace("cluster-info", &PostParams::default(), &cm)
                .await?;
            Ok(Some(format!(
                "kube-public/cluster-info: certificate-authority-data [{}] → [{}]",
                short(&have),
                short(&want)
            )))
        }
    })
    .await
}

/// The new content of a caBundle: the rotating CAs it held are replaced by `want`
/// (PEMs, in order); every other CA stays where it was. `None`: no change.
pub fn new_bundle(
    b: &CaBundle,
    lineage: &[Fingerprint],
    want: &[(Fingerprint, String)],
) -> Option<String> {
    let ours: Vec<&Fingerprint> = b.cas.iter().filter(|f| lineage.contains(f)).collect();
    let wanted: Vec<&Fingerprint> = want.iter().map(|(f, _)| f).collect();
    if ours.is_empty() || ours == wanted {
        return None;
    }
    let blocks = crate::pki::cert::pem_blocks(&b.pem, &b.object).ok()?;
    let mut out = String::new();
    let mut placed = false;
    for blk in blocks.iter().filter(|x| x.label == "CERTIFICATE") {
        let fp = Fingerprint::of(&blk.der);
        if lineage.contains(&fp) {
            if !placed {
                for (_, pem) in want {
                    out.push_str(pem);
                }
                placed = true;
            }
        } else {
            out.push_str(&crate::pki::cert::pem_block("CERTIFICATE", &blk.der));
        }
    }
    Some(out)
}

async fn patch_bundle<K>(
    api: Api<K>,
    name: &str,
    pointer: &str,
    pem: &str,
    what: &str,
) -> Result<(), KubeError>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(pem.as_bytes());
    retry(what, || {
        let api = api.clone();
        let encoded = encoded.clone();
        async move {
            let obj = api.get(name).await?;
            let mut v = serde_json::to_value(&obj).map_err(kube::Error::SerdeError)?;
            if let Some(slot) = v.pointer_mut(pointer) {
                *slot = serde_json::Value::String(encoded);
            }
            let obj: K = serde_json::from_value(v).map_err(kube::Error::SerdeError)?;
            api.replace(name, &PostParams::default(), &obj).await?;
            Ok(())
        }
    })
    .await
}

/// Update every caBundle (or only `(object, pointer)`) that holds a CA of `lineage` so
/// its rotating part is `want`. Returns one line per object changed.
pub async fn update_ca_bundles(
    client: &Client,
    lineage: &[Fingerprint],
    want: &[(Fingerprint, String)],
    only: Option<(&str, &str)>,
) -> Result<Vec<String>, KubeError> {
    let mut did = Vec::new();
    for b in cluster::ca_bundles(client).await? {
        if only.is_some_and(|(o, p)| o != b.object || p != b.pointer) {
            continue;
        }
        let Some(pem) = new_bundle(&b, lineage, want) else {
            continue;
        };
        let (kind, name) = b.object.split_once('/').unwrap_or(("", &b.object));
        let what = format!("update {} {}", b.object, b.pointer);
        let c = client.clone();
        match kind {
            "ValidatingWebhookConfiguration" => {
                patch_bundle(
                    Api::<ValidatingWebhookConfiguration>::all(c),
                    name,
                    &b.pointer,
                    &pem,
                    &what,
                )
                .await?
            }
            "MutatingWebhookConfiguration" => {
                patch_bundle(
                    Api::<MutatingWebhookConfiguration>::all(c),
                    name,
                    &b.pointer,
                    &pem,
                    &what,
                )
                .await?
            }
            "APIService" => {
                patch_bundle(Api::<APIService>::all(c), name, &b.pointer, &pem, &what).await?
            }
            "CustomResourceDefinition" => {
                patch_bundle(
                    Api::<CustomResourceDefinition>::all(c),
                    name,
                    &b.pointer,
                    &pem,
                    &what,
                )
                .await?
            }
            _ => continue,
        }
        did.push(format!(
            "{} {}: [{}] → [{}]",
            b.object,
            b.pointer,
            short(&b.cas),
            short(&fingerprints(&pem))
        ));
    }
    Ok(did)
}

/// Re-issue the token of every legacy service-account token secret not signed by `key`:
/// empty its `data.token` (the controller manager fills an empty one, with the key it
/// signs with now, and never re-signs one that is there), then wait until every token
/// secret holds a token `key` signed. The tokens themselves are never read into a
/// message.
pub async fn reissue_token_secrets(
    client: &Client,
    key: &Fingerprint,
    timeout: Duration,
) -> Result<String, KubeError> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    let start = Instant::now();
    let pp = PatchParams {
        field_manager: Some("trustform".into()),
        ..Default::default()
    };
    let empty = Patch::Merge(serde_json::json!({ "data": { "token": "" } }));
    let secrets = cluster::token_secrets(client).await?;
    let mut emptied = 0;
    for (name, t) in &secrets {
        if matches!(&t.key, Some(k) if k.as_ref() != Some(key)) {
            let (ns, n) = name.split_once('/').unwrap_or(("", name));
            let api: Api<Secret> = Api::namespaced(client.clone(), ns);
            retry(&format!("re-issue the token of secret {name}"), || {
                api.patch(n, &pp, &empty)
            })
            .await?;
            emptied += 1;
        }
    }
    loop {
        let secrets = cluster::token_secrets(client).await?;
        let late: Vec<String> = secrets
            .iter()
            .filter(|(_, t)| t.key != Some(Some(key.clone())))
            .map(|(name, t)| match &t.key {
                None => format!("secret {name} (no token yet)"),
                Some(k) => format!(
                    "secret {name} (key {})",
                    k.as_ref().map_or("unknown".into(), Fingerprint::short)
                ),
            })
            .collect();
        if late.is_empty() {
            return Ok(format!(
                "{} legacy token secrets hold tokens signed by key {}: {emptied} re-issued by the controller manager ({:.1}s)",
                secrets.len(),
                key.short(),
                start.elapsed().as_secs_f64()
            ));
        }
        if start.elapsed() >= timeout {
            return Err(KubeError::Timeout {
                what: format!(
                    "waiting for the controller manager to sign legacy tokens with key {}",
                    key.short()
                ),
                waited: humantime::format_duration(timeout).to_string(),
                laggards: format!("{} ({} in all)", laggards(&late), late.len()),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}
