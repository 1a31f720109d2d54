//! Manual steps: restarts trustform cannot carry out itself.
//!
//! A node reached through a directory that is not this machine's `/` (a `local` access
//! whose root is a mounted or synced copy of the node) can be read and written, but no
//! command runs there ([`crate::transport::Transport::can_run`]). Its restarts become
//! [`Op::ManualRestart`] operations: `apply` stops at such a step, prints
//! [`restart_instructions`], and goes on once the operator confirms it
//! (`trustform apply --confirm STEP-ID`). The instructions are a pure function of the
//! node, the component and its manifest, so the validator can recompute them: a plan
//! file cannot make apply print anything else.

use super::{Op, Step};

/// Where kubeadm keeps static pod manifests.
const MANIFESTS: &str = "/etc/kubernetes/manifests";

/// What the operator does, exactly, to restart `component` on `node`, and how to check
/// that it came back: one line each. `manifest` is a static pod's manifest path as
/// observed (ignored for `kubelet`).
pub fn restart_instructions(node: &str, component: &str, manifest: Option<&str>) -> Vec<String> {
    if component == "kubelet" {
        return vec![
            format!("On {node}, restart the kubelet so that it reads its changed files:"),
            "  systemctl restart kubelet".into(),
            format!(
                "Check that it came back: `systemctl is-active kubelet` prints `active`, `journalctl -u kubelet --since -5min` shows no x509 or TLS error, and `kubectl get node {node}` shows it Ready."
            ),
        ];
    }
    let default = format!("{MANIFESTS}/{component}.yaml");
    let manifest = manifest.unwrap_or(&default);
    let (dir, file) = manifest.rsplit_once('/').unwrap_or((MANIFESTS, manifest));
    // Park the manifest beside its directory: the same file system, outside the
    // directory the kubelet watches.
    let parent = dir.rsplit_once('/').map_or("", |(p, _)| p);
    let parked = format!("{parent}/{file}");
    vec![
        format!(
            "On {node}, restart the static pod {component} so that it reads its changed files. The kubelet stops a static pod whose manifest leaves {dir} and starts it again when the manifest returns (kubeadm's documented way):"
        ),
        format!("  mv {manifest} {parked}"),
        format!(
            "  # wait until `crictl ps --name {component}` lists no container (up to 20 s, the kubelet's fileCheckFrequency)"
        ),
        format!("  mv {parked} {manifest}"),
        format!(
            "Check that it came back: `crictl ps --name {component}` shows its container Running, created after the second mv, and `kubectl -n kube-system get pod {component}-{node}` shows it Ready."
        ),
    ]
}

impl Step {
    /// The instructions of a manual step: one whose operations include a manual one
    /// (`None` for a step trustform carries out itself).
    pub fn manual(&self) -> Option<&[String]> {
        self.ops.iter().find_map(|op| match op {
            Op::ManualRestart { instructions, .. } => Some(instructions.as_slice()),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_instructions_name_the_command_and_the_check() {
        let l = restart_instructions("w-1", "kubelet", None);
        assert_eq!(l[1], "  systemctl restart kubelet");
        assert!(l[0].starts_with("On w-1, restart the kubelet"));
        assert!(l[2].contains("kubectl get node w-1"));
    }

    #[test]
    fn static_pod_instructions_move_the_manifest_out_and_back() {
        let l = restart_instructions(
            "cp-1",
            "kube-apiserver",
            Some("/etc/kubernetes/manifests/kube-apiserver.yaml"),
        );
        assert_eq!(
            l[1],
            "  mv /etc/kubernetes/manifests/kube-apiserver.yaml /etc/kubernetes/kube-apiserver.yaml"
        );
        assert_eq!(
            l[3],
            "  mv /etc/kubernetes/kube-apiserver.yaml /etc/kubernetes/manifests/kube-apiserver.yaml"
        );
        assert!(l[4].contains("kube-apiserver-cp-1"));
        // Without an observed manifest, kubeadm's path.
        assert_eq!(
            restart_instructions("cp-1", "etcd", None)[1],
            "  mv /etc/kubernetes/manifests/etcd.yaml /etc/kubernetes/etcd.yaml"
        );
    }
}
