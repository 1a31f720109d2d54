//! After `systemctl restart kubelet`, the kubelet is back for the cluster only once its
//! Node is `Ready` again with a heartbeat from the new process: the Ready condition's
//! `lastHeartbeatTime`, or the renewal of its Lease in `kube-node-lease` (which recent
//! kubelets renew instead of posting status every 10 s), at or after the restart.

use super::{Access, KubeError, api_error};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use std::time::{Duration, Instant};

/// What the API said of a Node at one look: ready, and its newest heartbeat.
#[derive(Clone, Debug, PartialEq)]
struct Look {
    ready: Option<String>,
    heartbeat: Option<Timestamp>,
}

fn look(node: &Node, lease: Option<&Lease>) -> Look {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let beat = ready.and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    Look {
        ready: ready.map(|c| c.status.clone()),
        heartbeat: beat.max(renewed),
    }
}

/// Wait until Node `name` is Ready with a heartbeat at or after `since` (to the second),
/// at most `timeout`. `Ok`: what was seen; `Err`: what was seen last.
pub async fn ready_after(
    access: &Access,
    name: &str,
    since: Timestamp,
    timeout: Duration,
) -> Result<String, String> {
    let client = access.client().await.map_err(|e| e.to_string())?;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    // Heartbeats are kept to the second.
    let since = Timestamp::from_second(since.as_second()).unwrap_or(since);
    let start = Instant::now();
    // The new kubelet posts its status as it starts: look again soon, then less often.
    let mut pause = Duration::from_millis(20);
    loop {
        let seen = async {
            let node = nodes
                .get_opt(name)
                .await
                .map_err(|e| api_error(&format!("get node {name}"), &e))?;
            let lease = leases.get_opt(name).await.ok().flatten();
            Ok::<_, KubeError>(node.map(|n| look(&n, lease.as_ref())))
        }
        .await;
        let last = match seen {
            Ok(Some(l)) => {
                let beat = l
                    .heartbeat
                    .map_or_else(|| "no heartbeat".to_string(), |t| format!("heartbeat {t}"));
                let ready = l.ready.clone().unwrap_or_else(|| "Unknown".into());
                let said = format!("node {name} Ready={ready}, {beat}");
                if l.ready.as_deref() == Some("True") && l.heartbeat.is_some_and(|t| t >= since) {
                    return Ok(said);
                }
                said
            }
            Ok(None) => format!("no Node {name} in the API"),
            Err(e) => e.to_string(),
        };
        if start.elapsed() >= timeout {
            return Err(last);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_of_status_heartbeat_and_lease_renewal_counts() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w-1"},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-11-29T06:00:00Z"}
            ]}
        }))
        .unwrap();
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "w-1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "w-1", "renewTime": "2026-11-29T06:00:30.000000Z"}
        }))
        .unwrap();
        let l = look(&node, Some(&lease));
        assert_eq!(l.ready.as_deref(), Some("True"));
        assert_eq!(
            l.heartbeat.map(|t| t.to_string()),
            Some("2026-11-29T06:00:30Z".into())
        );
        assert_eq!(
            look(&node, None).heartbeat.map(|t| t.to_string()),
            Some("2026-11-29T06:00:00Z".into())
        );
    }
}
