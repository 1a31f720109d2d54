//! The kubeadm layout: where a kubeadm node keeps its trust, relative to the node's root.

/// PKI directory.
pub const PKI: &str = "etc/kubernetes/pki";
/// Static pod manifests.
pub const MANIFESTS: &str = "etc/kubernetes/manifests";
/// Kubeconfigs directory.
pub const KUBERNETES: &str = "etc/kubernetes";
/// Kubelet configuration file.
pub const KUBELET_CONFIG: &str = "var/lib/kubelet/config.yaml";
/// Kubelet certificate directory.
pub const KUBELET_PKI: &str = "var/lib/kubelet/pki";

/// Where the kubelet keeps a pod's projected service-account token: the `token` of its
/// projected volume, under the pod's uid.
pub fn pod_token(uid: &str, volume: &str) -> String {
    format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~projected/{volume}/token")
}
/// Kubelet kubeconfig.
pub const KUBELET_CONF: &str = "etc/kubernetes/kubelet.conf";

/// Control-plane static pods, in the order kubeadm starts them.
pub const STATIC_PODS: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
];

/// The manifest that marks a node as a control plane.
pub const APISERVER_MANIFEST: &str = "etc/kubernetes/manifests/kube-apiserver.yaml";

/// The static pod manifest of `component`, as an absolute node path
/// (`/etc/kubernetes/manifests/kube-apiserver.yaml`).
pub fn manifest(component: &str) -> String {
    format!("/{MANIFESTS}/{component}.yaml")
}

/// Turn an absolute node path (`/etc/kubernetes/pki/ca.crt`) into a root-relative one.
pub fn rel(abs: &str) -> &str {
    abs.trim_start_matches('/')
}

/// Whether a kubeconfig path is a copy outside the kubeadm layout (one that
/// trustform.yaml lists under a node's `kubeconfigs`), not one of kubeadm's own.
pub fn is_copy(abs: &str) -> bool {
    !abs.starts_with("/etc/kubernetes/")
}

/// A dated `kubelet-client-…pem` / `kubelet-server-…pem` beside the `-current.pem` link:
/// the kubelet's certificate manager keeps its earlier certificates there; only the one
/// the link points at is live (and is read through the link).
pub fn kubelet_history(abs: &str) -> bool {
    let Some(name) = abs.strip_prefix("/var/lib/kubelet/pki/") else {
        return false;
    };
    ["kubelet-client-", "kubelet-server-"]
        .iter()
        .any(|p| name.starts_with(p))
        && name.ends_with(".pem")
        && !name.ends_with("-current.pem")
}
