//! The API side of a snapshot, read with kube-rs: kube-root-ca.crt per namespace,
//! cluster-info, extension-apiserver-authentication, legacy token secrets, caBundles,
//! workloads and what their pods trust. Every list is paginated ([`PAGE`] per page)
//! and the lists run concurrently.
//!
//! [`PAGE`]: crate::exec::kube::PAGE

use crate::exec::kube::cluster::{self, PodTrust};
use crate::exec::kube::publish::{EXTENSION_AUTH, cluster_info_cas};
use crate::exec::kube::{Access, KubeError, block};
use crate::pki::Fingerprint;
use crate::snapshot::{CaBundleFact, KubeSnapshot, PodGroup, Published};
use std::collections::BTreeMap;

fn group<I: IntoIterator<Item = (String, Vec<Fingerprint>)>>(items: I) -> Vec<Published> {
    let mut by: BTreeMap<Vec<Fingerprint>, Vec<String>> = BTreeMap::new();
    for (holder, cas) in items {
        by.entry(cas).or_default().push(holder);
    }
    let mut out: Vec<Published> = by
        .into_iter()
        .map(|(cas, mut holders)| {
            holders.sort();
            Published { cas, holders }
        })
        .collect();
    // The most common content first.
    out.sort_by(|a, b| {
        b.holders
            .len()
            .cmp(&a.holders.len())
            .then(a.cas.cmp(&b.cas))
    });
    out
}

/// Read the API side of the cluster.
pub async fn read(access: &Access) -> Result<KubeSnapshot, KubeError> {
    let client = access.connect().await?;
    let c = &client;
    let (namespaces, root_cas, secrets, cluster_info, ext_auth, bundles) = tokio::try_join!(
        cluster::namespaces(c),
        cluster::root_cas(c),
        cluster::token_secrets(c),
        cluster::config_map(c, "kube-public", "cluster-info"),
        cluster::config_map(c, "kube-system", EXTENSION_AUTH),
        cluster::ca_bundles(c),
    )?;
    let model = cluster::workloads(c, &root_cas).await?;
    let missing: Vec<String> = namespaces
        .iter()
        .filter(|ns| !root_cas.contains_key(*ns))
        .cloned()
        .collect();
    let mut pods: BTreeMap<Option<Vec<Fingerprint>>, PodGroup> = BTreeMap::new();
    for p in &model.pods {
        let trust = match &p.trust {
            PodTrust::Known(cas) => Some(cas.clone()),
            PodTrust::Unknown => None,
        };
        let g = pods.entry(trust.clone()).or_insert_with(|| PodGroup {
            trust,
            pods: vec![],
            workloads: vec![],
            bare: vec![],
        });
        let name = format!("{}/{}", p.namespace, p.name);
        match &p.owner {
            Some(o) => g.workloads.push(format!("{}/{o}", p.namespace)),
            None => g.bare.push(name.clone()),
        }
        g.pods.push(name);
    }
    let pods = pods
        .into_values()
        .map(|mut g| {
            g.pods.sort();
            g.workloads.sort();
            g.workloads.dedup();
            g.bare.sort();
            g
        })
        .collect();
    Ok(KubeSnapshot {
        server: access.server(),
        namespaces: namespaces.len(),
        kube_root_ca: group(root_cas.into_iter().map(|(ns, rc)| (ns, rc.cas))),
        kube_root_ca_missing: missing,
        token_secrets: group(secrets.iter().map(|(n, t)| (n.clone(), t.cas.clone()))),
        legacy_tokens: group(
            secrets
                .iter()
                .filter_map(|(n, t)| Some((n.clone(), t.key.clone()?.into_iter().collect()))),
        ),
        cluster_info: cluster_info
            .as_ref()
            .and_then(cluster_info_cas)
            .map(|(cas, _)| cas),
        extension_auth: ext_auth
            .as_ref()
            .and_then(|cm| cm.data.as_ref())
            .and_then(|d| d.get("requestheader-client-ca-file"))
            .map(|pem| cluster::fingerprints(pem)),
        ca_bundles: bundles
            .into_iter()
            .map(|b| CaBundleFact {
                object: b.object,
                pointer: b.pointer,
                cas: b.cas,
            })
            .collect(),
        workloads: model.workloads.len(),
        pods,
    })
}

/// [`read`] from synchronous code.
pub fn read_blocking(access: &Access) -> Result<KubeSnapshot, KubeError> {
    block(read(access))
}
