//! The registry of the kinds the sandbox API server serves: group, version, kind, plural,
//! scope, short names and subresources, as a real server's discovery documents them.

/// One served resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// API group, `""` for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind, e.g. `ConfigMap`.
    pub kind: &'static str,
    /// Plural resource name, e.g. `configmaps`: its key in paths and in the store.
    pub plural: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl's short names, e.g. `cm`.
    pub short_names: &'static [&'static str],
    /// Subresources, e.g. `status`.
    pub subresources: &'static [&'static str],
}

impl Resource {
    /// `apiVersion` of its objects: `v1` for core, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The singular name (`configmap`), the lower-cased kind.
    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// Whether it has the `status` subresource (then a plain update leaves `.status` alone).
    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }
}

const fn core(
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: &'static [&'static str],
) -> Resource {
    Resource {
        group: "",
        version: "v1",
        kind,
        plural,
        namespaced,
        short_names,
        subresources,
    }
}

const fn grouped(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    subresources: &'static [&'static str],
) -> Resource {
    Resource {
        group,
        version: "v1",
        kind,
        plural,
        namespaced,
        short_names,
        subresources,
    }
}

/// Every resource the sandbox serves. Plurals are unique across groups.
pub const RESOURCES: &[Resource] = &[
    core("Namespace", "namespaces", false, &["ns"], &["status"]),
    core("ConfigMap", "configmaps", true, &["cm"], &[]),
    core("Secret", "secrets", true, &[], &[]),
    core("ServiceAccount", "serviceaccounts", true, &["sa"], &[]),
    core("Pod", "pods", true, &["po"], &["status"]),
    core("Node", "nodes", false, &["no"], &["status"]),
    core("Event", "events", true, &["ev"], &[]),
    grouped(
        "apps",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        &["status"],
    ),
    grouped(
        "apps",
        "DaemonSet",
        "daemonsets",
        true,
        &["ds"],
        &["status"],
    ),
    grouped(
        "apps",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        &["status"],
    ),
    grouped(
        "apps",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        &["status"],
    ),
    grouped(
        "policy",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
        &["status"],
    ),
    grouped("coordination.k8s.io", "Lease", "leases", true, &[], &[]),
    grouped(
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
        &["csr"],
        &["approval", "status"],
    ),
    grouped(
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        false,
        &[],
        &[],
    ),
    grouped(
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        &[],
        &[],
    ),
    grouped(
        "apiregistration.k8s.io",
        "APIService",
        "apiservices",
        false,
        &[],
        &["status"],
    ),
    grouped(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        &["status"],
    ),
];

/// The resource with this plural name.
pub fn by_plural(plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.plural == plural)
}

/// The resource served at `group`/`version` under `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of objects with this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The API groups other than core, in registry order, each with its versions.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// The resources of one group version.
pub fn in_group_version(group: &str, version: &str) -> Vec<&'static Resource> {
    RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_unique_and_found() {
        for r in RESOURCES {
            assert_eq!(by_plural(r.plural), Some(r));
            assert_eq!(by_kind(&r.api_version(), r.kind), Some(r));
        }
        let mut plurals: Vec<_> = RESOURCES.iter().map(|r| r.plural).collect();
        plurals.sort();
        plurals.dedup();
        assert_eq!(plurals.len(), RESOURCES.len());
        assert_eq!(by_plural("configmaps").unwrap().api_version(), "v1");
        assert_eq!(by_plural("deployments").unwrap().api_version(), "apps/v1");
        assert!(groups().iter().any(|(g, _)| *g == "certificates.k8s.io"));
    }
}
