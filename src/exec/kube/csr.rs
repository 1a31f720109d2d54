//! Certificate signing requests through the API: the pending ones, the Nodes' names and
//! addresses (what a node may ask a serving certificate for), and the approval or denial
//! written to a request's `approval` subresource, with the reasons as its message.

use super::{KubeError, list_all, retry};
use crate::csr::{NodeAddresses, Request};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use std::collections::BTreeMap;

/// Every request, with its PKCS#10 request decoded from PEM.
pub async fn requests(client: &Client) -> Result<Vec<Request>, KubeError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let all = list_all(
        &api,
        &ListParams::default(),
        "list certificatesigningrequests",
    )
    .await?;
    Ok(all
        .into_iter()
        .map(|c| {
            let decided = c.status.as_ref().and_then(|s| {
                s.conditions.iter().flatten().find_map(|k| {
                    (["Approved", "Denied", "Failed"].contains(&k.type_.as_str())
                        && k.status == "True")
                        .then(|| k.type_.clone())
                })
            });
            let pem = String::from_utf8_lossy(&c.spec.request.0).into_owned();
            let der = crate::pki::cert::pem_blocks(&pem, "spec.request")
                .ok()
                .and_then(|b| b.into_iter().find(|b| b.label == "CERTIFICATE REQUEST"))
                .map(|b| b.der)
                .unwrap_or_default();
            Request {
                name: c.name_any(),
                signer: c.spec.signer_name.clone(),
                username: c.spec.username.clone().unwrap_or_default(),
                groups: c.spec.groups.clone().unwrap_or_default(),
                usages: c.spec.usages.clone().unwrap_or_default(),
                expiration_seconds: c.spec.expiration_seconds.map(i64::from),
                der,
                decided,
            }
        })
        .collect())
}

/// Every Node's names and addresses.
pub async fn nodes(client: &Client) -> Result<BTreeMap<String, NodeAddresses>, KubeError> {
    let api: Api<Node> = Api::all(client.clone());
    let all = list_all(&api, &ListParams::default(), "list nodes").await?;
    Ok(all
        .into_iter()
        .map(|n| {
            let mut a = NodeAddresses::default();
            for addr in n
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
            {
                match addr.type_.as_str() {
                    "InternalIP" | "ExternalIP" => {
                        a.ips.extend(addr.address.parse::<std::net::IpAddr>().ok())
                    }
                    _ => a.names.push(addr.address.clone()),
                }
            }
            (n.name_any(), a)
        })
        .collect())
}

/// Approve or deny request `name`, with `message` as the condition's message.
pub async fn decide(
    client: &Client,
    name: &str,
    approve: bool,
    message: &str,
) -> Result<(), KubeError> {
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let (kind, reason) = if approve {
        ("Approved", "TrustformPolicyAllows")
    } else {
        ("Denied", "TrustformPolicyForbids")
    };
    let patch = Patch::Merge(serde_json::json!({
        "status": { "conditions": [{
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastUpdateTime": crate::clock::now(),
        }]}
    }));
    let pp = PatchParams {
        field_manager: Some("trustform".into()),
        ..Default::default()
    };
    retry(&format!("{} {name}", kind.to_lowercase()), || {
        api.patch_approval(name, &pp, &patch)
    })
    .await?;
    Ok(())
}
