//! The cluster-side lock and status: a `coordination.k8s.io/v1` Lease `trustform` in
//! kube-system whose holder is the lock's JSON, and a ConfigMap `trustform-status` in
//! kube-system holding the latest apply status, so `trustform status` works from any
//! machine that reaches the cluster.

use super::{KubeError, api_error, retry};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};

/// The Lease's name (in kube-system).
pub const LEASE: &str = "trustform";
/// The status ConfigMap's name (in kube-system).
pub const STATUS: &str = "trustform-status";
/// How long a Lease stays held without renewal.
pub const LEASE_SECONDS: i32 = 60;

fn leases(client: &Client) -> Api<Lease> {
    Api::namespaced(client.clone(), "kube-system")
}

/// Is this Lease held (a holder, renewed within its duration)?
fn held(l: &Lease, now: Timestamp) -> Option<String> {
    let spec = l.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
    (now.as_second() - renewed.as_second() < ttl).then_some(holder)
}

fn spec(holder: &str, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.to_string()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..Default::default()
    }
}

/// Take the Lease for `holder` (the lock's JSON). `mine(h)` says whether a holder is
/// this very lock (a resumed apply). `Ok(None)`: taken; `Ok(Some(h))`: `h` holds it.
pub async fn acquire(
    client: &Client,
    holder: &str,
    mine: impl Fn(&str) -> bool,
) -> Result<Option<String>, KubeError> {
    let api = leases(client);
    loop {
        let now = Timestamp::now();
        let current = retry("get lease kube-system/trustform", || api.get_opt(LEASE)).await?;
        let result = match current {
            None => {
                let l = Lease {
                    metadata: ObjectMeta {
                        name: Some(LEASE.into()),
                        namespace: Some("kube-system".into()),
                        ..Default::default()
                    },
                    spec: Some(spec(holder, now)),
                };
                api.create(&PostParams::default(), &l).await.map(|_| ())
            }
            Some(l) => {
                if let Some(h) = held(&l, now)
                    && !mine(&h)
                {
                    return Ok(Some(h));
                }
                let mut l = l;
                l.spec = Some(spec(holder, now));
                api.replace(LEASE, &PostParams::default(), &l)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => return Ok(None),
            // Someone else created or changed it between our read and write: look again.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code >= 500 || s.code == 429 => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(api_error("take lease kube-system/trustform", &e)),
        }
    }
}

/// Renew the Lease if `mine` holds it.
pub async fn renew(client: &Client, mine: impl Fn(&str) -> bool) -> Result<(), KubeError> {
    let api = leases(client);
    retry("renew lease kube-system/trustform", || {
        let api = api.clone();
        let mine = &mine;
        async move {
            let Some(mut l) = api.get_opt(LEASE).await? else {
                return Ok(());
            };
            let Some(s) = l.spec.as_mut() else {
                return Ok(());
            };
            if !s.holder_identity.as_deref().is_some_and(mine) {
                return Ok(());
            }
            s.renew_time = Some(MicroTime(Timestamp::now()));
            api.replace(LEASE, &PostParams::default(), &l)
                .await
                .map(|_| ())
        }
    })
    .await
}

/// Release the Lease if `mine` holds it (or, for force-unlock, the holder matches).
pub async fn release(client: &Client, mine: impl Fn(&str) -> bool) -> Result<bool, KubeError> {
    let api = leases(client);
    let Some(l) = retry("get lease kube-system/trustform", || api.get_opt(LEASE)).await? else {
        return Ok(false);
    };
    let holder = l.spec.as_ref().and_then(|s| s.holder_identity.clone());
    if !holder.as_deref().is_some_and(&mine) {
        return Ok(false);
    }
    retry("delete lease kube-system/trustform", || async {
        match api.delete(LEASE, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await?;
    Ok(true)
}

/// The Lease's holder, if held.
pub async fn holder(client: &Client) -> Result<Option<String>, KubeError> {
    let api = leases(client);
    Ok(
        retry("get lease kube-system/trustform", || api.get_opt(LEASE))
            .await?
            .and_then(|l| held(&l, Timestamp::now())),
    )
}

/// Write the status JSON to kube-system/trustform-status.
pub async fn write_status(client: &Client, json: &str) -> Result<(), KubeError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    retry("write configmap kube-system/trustform-status", || {
        let api = api.clone();
        async move {
            let mut cm = api.get_opt(STATUS).await?.unwrap_or_else(|| ConfigMap {
                metadata: ObjectMeta {
                    name: Some(STATUS.into()),
                    namespace: Some("kube-system".into()),
                    ..Default::default()
                },
                ..Default::default()
            });
            cm.data
                .get_or_insert_with(Default::default)
                .insert("status.json".into(), json.to_string());
            if cm.metadata.resource_version.is_some() {
                api.replace(STATUS, &PostParams::default(), &cm)
                    .await
                    .map(|_| ())
            } else {
                api.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        }
    })
    .await
}

/// The status JSON in kube-system/trustform-status, if any.
pub async fn read_status(client: &Client) -> Result<Option<String>, KubeError> {
    let cm = super::cluster::config_map(client, "kube-system", STATUS).await?;
    Ok(cm
        .and_then(|c| c.data)
        .and_then(|d| d.get("status.json").cloned()))
}
