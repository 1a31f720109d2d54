//! Certificate signing requests through the API: the pending ones, the Nodes' names and
//! addresses (what a node may ask a serving certificate for), and the approval or denial
//! written to a request's `approval` subresource, with the reasons as its message.

use super::{KubeError, list_all, retry};
use crate::csr::{NodeAddresses, Request};
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
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
    // Read, check it is still undecided, add the condition, and write back with the
    // resourceVersion read: a concurrent approver's decision is never overwritten (a
    // conflict reads again; a request decided meanwhile is left as it is).
    let what = format!("{} {name}", kind.to_lowercase());
    retry(&what, || async {
        let mut csr = api.get(name).await?;
        let status = csr.status.get_or_insert_with(Default::default);
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if conditions
            .iter()
            .any(|c| ["Approved", "Denied", "Failed"].contains(&c.type_.as_str()))
        {
            return Ok(csr);
        }
        conditions.push(CertificateSigningRequestCondition {
            type_: kind.into(),
            status: "True".into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            )),
            last_transition_time: None,
        });
        let pp = PostParams {
            field_manager: Some("trustform".into()),
            ..Default::default()
        };
        api.replace_subresource("approval", name, &pp, &csr).await
    })
    .await?;
    Ok(())
}
