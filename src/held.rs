//! What a running process holds: the files it read at its last (re)start, not what is on
//! disk now. A real node's process memory cannot be read, so on a real cluster nothing
//! answers ([`crate::transport::Transport::held`] is `None`); a simulated node's
//! transport can tell it, and the checks that compare a process with its files (the
//! prober, the published ConfigMaps without API access) use it there.

use crate::layout;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Identity of what a process holds (a restart changes it), cheaper to learn than the
/// held files themselves: a follower re-reads them only when it changes.
pub type Stamp = (u64, u64, i64, i64);

/// What a process holds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Held {
    /// RFC 3339 time of the last (re)start.
    pub restarted_at: String,
    /// How many times it has started.
    pub generation: u64,
    /// Absolute path → content (base64) as read at that start.
    files: BTreeMap<String, String>,
}

impl Held {
    /// A process started at `restarted_at` for the `generation`-th time, having read
    /// `files` (absolute node path → bytes).
    pub fn new(restarted_at: String, generation: u64, files: BTreeMap<String, Vec<u8>>) -> Self {
        let files = files
            .into_iter()
            .map(|(p, b)| (p, base64::engine::general_purpose::STANDARD.encode(b)))
            .collect();
        Self {
            restarted_at,
            generation,
            files,
        }
    }

    /// The content of `abs` as the process read it.
    pub fn file(&self, abs: &str) -> Option<Vec<u8>> {
        self.files
            .get(abs)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    }

    /// The paths it read.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Its flags (static pods), from the manifest as it read it.
    pub fn flags(&self, component: &str) -> BTreeMap<String, String> {
        self.file(&layout::manifest(component))
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| crate::manifest::parse(&t).ok())
            .map(|m| m.flags)
            .unwrap_or_default()
    }

    /// The file a flag of `component` names, as the process read it.
    pub fn flag_file(&self, component: &str, flag: &str) -> Option<Vec<u8>> {
        self.file(self.flags(component).get(flag)?)
    }

    fn kubelet_config(&self) -> Option<crate::kubelet::Config> {
        let text = String::from_utf8(self.file(&format!("/{}", layout::KUBELET_CONFIG))?).ok()?;
        crate::kubelet::Config::parse(&text).ok()
    }

    /// The kubelet's `authentication.x509.clientCAFile` bundle, as it read it.
    pub fn kubelet_client_ca(&self) -> Option<Vec<u8>> {
        self.file(&self.kubelet_config()?.authentication.x509.client_ca_file?)
    }

    /// Where the kubelet's serving certificate comes from, by its configuration as it
    /// read it.
    pub fn kubelet_serving_source(&self) -> Option<crate::kubelet::Serving> {
        Some(self.kubelet_config()?.serving())
    }

    /// The kubelet's serving certificate and key (PEM, the same bytes for
    /// `kubelet-server-current.pem`) as it read them, whichever it serves.
    pub fn kubelet_serving(&self) -> Result<(Vec<u8>, Vec<u8>), String> {
        let source = self
            .kubelet_serving_source()
            .ok_or("the kubelet holds no readable configuration")?;
        let read = |p: &str| {
            self.file(p)
                .ok_or_else(|| format!("the kubelet holds no serving certificate {p}"))
        };
        Ok((read(source.cert())?, read(source.key())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_answers_with_the_files_it_read_and_its_flags() {
        let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: kube-apiserver}\nspec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    - --client-ca-file=/etc/kubernetes/pki/ca.crt\n";
        let held = Held::new(
            "2026-12-07T00:00:00Z".into(),
            2,
            BTreeMap::from([
                (
                    "/etc/kubernetes/manifests/kube-apiserver.yaml".to_string(),
                    manifest.as_bytes().to_vec(),
                ),
                ("/etc/kubernetes/pki/ca.crt".to_string(), b"\x00CA".to_vec()),
            ]),
        );
        assert_eq!(
            held.flag_file("kube-apiserver", "client-ca-file"),
            Some(b"\x00CA".to_vec())
        );
        assert_eq!(held.flag_file("kube-apiserver", "tls-cert-file"), None);
        assert_eq!(held.paths().count(), 2);
        // It survives its own serialisation (the sandbox keeps it as JSON).
        let back: Held = serde_json::from_slice(&serde_json::to_vec(&held).unwrap()).unwrap();
        assert_eq!(
            back.file("/etc/kubernetes/pki/ca.crt"),
            Some(b"\x00CA".to_vec())
        );
        assert_eq!(back.generation, 2);
    }
}
