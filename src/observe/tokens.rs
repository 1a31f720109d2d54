//! The service-account tokens a node's kubelet holds for its pods: the `token` of each
//! pod's projected volume ([`crate::layout::pod_token`]). Only what a plan needs is kept
//! (which key signed it, for which pod, when it was issued, expires and is refreshed);
//! the token itself is dropped as soon as it is read.

use super::{NodeTarget, ObserveError};
use crate::input::Kind;
use crate::pki::token;
use crate::snapshot::TokenFact;
use crate::transport::FileType;
use crate::transport::Transport;

/// Where the kubelet keeps its pods.
pub const PODS: &str = "/var/lib/kubelet/pods";
/// A projected volume's directory under a pod.
const PROJECTED: &str = "volumes/kubernetes.io~projected";

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map(crate::clock::format)
        .unwrap_or_default()
}

/// Every projected token on every node, nodes in parallel (a few round trips per pod:
/// read only when the service-account key moves, and by `trustform snapshot`). A node
/// without a kubelet pods directory has none; one that cannot be listed or read is an
/// error (a rotation of the service-account key must know them all).
pub fn read_all(targets: &[NodeTarget]) -> Result<Vec<TokenFact>, ObserveError> {
    let nodes: Vec<(&str, &dyn Transport)> = targets
        .iter()
        .map(|t| (t.name.as_str(), t.transport.as_ref()))
        .collect();
    read_nodes(&nodes)
}

/// [`read_all`] for nodes given by name and transport.
pub fn read_nodes(nodes: &[(&str, &dyn Transport)]) -> Result<Vec<TokenFact>, ObserveError> {
    let per_node = crate::parallel::map(nodes, 16, |(name, t)| read_on(name, *t));
    let mut out = vec![];
    for r in per_node {
        out.extend(r?);
    }
    Ok(out)
}

/// [`read`] on the node `name`, through `t`.
pub fn read_on(name: &str, t: &dyn Transport) -> Result<Vec<TokenFact>, ObserveError> {
    let err = |path: &str, e| super::files::transport_error_of(name, path, e);
    match t.stat(PODS).map_err(|e| err(PODS, e))? {
        Some(s) if s.kind == FileType::Dir => {}
        _ => return Ok(vec![]),
    }
    let mut out = vec![];
    let mut uids = t.list(PODS).map_err(|e| err(PODS, e))?;
    uids.sort();
    for (uid, kind) in uids {
        if kind != FileType::Dir {
            continue;
        }
        let dir = format!("{PODS}/{uid}/{PROJECTED}");
        let mut volumes = match t.stat(&dir).map_err(|e| err(&dir, e))? {
            Some(s) if s.kind == FileType::Dir => t.list(&dir).map_err(|e| err(&dir, e))?,
            _ => continue,
        };
        volumes.sort();
        for (volume, _) in volumes {
            let path = crate::layout::pod_token(&uid, &volume);
            let Some(bytes) = t.read(&path, Kind::NodeFile).map_err(|e| err(&path, e))? else {
                continue; // a projected volume without a token (a ConfigMap projection)
            };
            let Some(f) = std::str::from_utf8(&bytes).ok().and_then(token::facts) else {
                continue;
            };
            let refresh = rfc3339(token::refresh_at(f.issued, f.lifetime_end()));
            out.push(TokenFact {
                node: name.to_string(),
                pod: f.pod.unwrap_or_else(|| uid.clone()),
                path,
                key: f.key,
                issued: rfc3339(f.issued),
                expires: rfc3339(f.expires),
                refresh,
            });
        }
    }
    Ok(out)
}
