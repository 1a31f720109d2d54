//! The sandbox's simulated processes. A component holds what it read at its last
//! (re)start, not what is on disk now: `restart` reads the files the component's real
//! counterpart reads (its manifest flags, or the kubelet's config) and keeps a copy as the
//! process's memory in `run/trustform-sandbox/<component>.json` (0600: it holds the
//! component's key, as the process's memory would). The presence of that directory is
//! what marks a node root as a sandbox node.

use crate::atomic;
use crate::layout;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the processes' memories live, relative to the node root.
pub const RUN_DIR: &str = "run/trustform-sandbox";

pub use crate::held::{Held, Stamp};

/// Whether `root` is a sandbox node.
pub fn is_sandbox(root: &Path) -> bool {
    root.join(RUN_DIR).is_dir()
}

fn abs(rel: &str) -> String {
    format!("/{rel}")
}

fn state_path(root: &Path, component: &str) -> PathBuf {
    root.join(RUN_DIR).join(format!("{component}.json"))
}

/// The [`Stamp`] of `component`'s held state; `None` if it never started.
pub fn stamp(root: &Path, component: &str) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(state_path(root, component)).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Where node path `abs` is on this machine: symlinks (kubeadm's absolute
/// `kubelet-client-current.pem`) resolve inside the node root, as on the node itself.
pub(crate) fn host(root: &Path, abs: &str) -> PathBuf {
    crate::transport::resolve(root, abs).unwrap_or_else(|_| root.join(layout::rel(abs)))
}

/// The files a component reads at start, as absolute node paths.
pub fn inputs(root: &Path, component: &str) -> std::io::Result<Vec<String>> {
    let read = |abs: &str| std::fs::read_to_string(host(root, abs));
    let mut out = Vec::new();
    if component == "kubelet" {
        let config = read(&abs(layout::KUBELET_CONFIG))?;
        out.push(abs(layout::KUBELET_CONFIG));
        out.extend(kubelet_client_ca_file(&config));
        out.push(abs(layout::KUBELET_CONF));
        out.push(format!(
            "/{}/kubelet-client-current.pem",
            layout::KUBELET_PKI
        ));
        if let Ok(c) = crate::kubelet::Config::parse(&config) {
            out.extend(c.serving().files().into_iter().map(str::to_string));
        }
    } else {
        let manifest = layout::manifest(component);
        let text = read(&manifest)?;
        out.push(manifest);
        if let Ok(m) = crate::manifest::parse(&text) {
            out.extend(
                m.flags
                    .into_values()
                    .filter(|v| v.starts_with("/etc/kubernetes/")),
            );
        }
    }
    out.retain(|p| host(root, p).is_file());
    out.sort();
    out.dedup();
    Ok(out)
}

/// `authentication.x509.clientCAFile` of a KubeletConfiguration.
pub fn kubelet_client_ca_file(config: &str) -> Option<String> {
    crate::kubelet::client_ca_file(config)
}

/// A kubelet that serves a self-signed certificate makes `kubelet.crt`/`kubelet.key`
/// at start when it cannot read them (RSA-2048, as the kubelet does; the node's name is
/// its hostname).
fn kubelet_makes_its_certificate(root: &Path) -> std::io::Result<()> {
    let Ok(config) = std::fs::read_to_string(host(root, &abs(layout::KUBELET_CONFIG))) else {
        return Ok(()); // it will not start: the fit check says why
    };
    let Ok(c) = crate::kubelet::Config::parse(&config) else {
        return Ok(());
    };
    if !matches!(c.serving(), crate::kubelet::Serving::SelfSigned { .. }) {
        return Ok(());
    }
    let name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "localhost".into());
    super::kubelet_pki::ensure_self_signed(root, &name, crate::pki::KeyAlgorithm::Rsa2048)?;
    Ok(())
}

/// (Re)start a component: it reads its files now.
pub fn restart(root: &Path, component: &str) -> std::io::Result<Held> {
    if component == "kubelet" {
        kubelet_makes_its_certificate(root)?;
    }
    let before = held(root, component);
    let mut files = BTreeMap::new();
    for abs in inputs(root, component)? {
        let bytes = std::fs::read(host(root, &abs))?;
        files.insert(abs, bytes);
    }
    let held = Held::new(
        crate::clock::now(),
        before.map_or(1, |b| b.generation + 1),
        files,
    );
    let json = serde_json::to_vec(&held).expect("held state serialises");
    atomic::write(&state_path(root, component), &json, atomic::KEY_MODE)?;
    Ok(held)
}

/// What a component holds now; `None` if it never started.
pub fn held(root: &Path, component: &str) -> Option<Held> {
    let bytes = std::fs::read(state_path(root, component)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The components of a node: its static pods and, if configured, the kubelet.
pub fn components(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(root.join(layout::rel(layout::MANIFESTS)))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".yaml"))
                .map(str::to_string)
        })
        .collect();
    out.sort();
    if root.join(layout::KUBELET_CONFIG).is_file() {
        out.push("kubelet".into());
    }
    out
}

/// Start every component of a node (sandbox creation).
pub fn start_all(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join(RUN_DIR))?;
    for c in components(root) {
        restart(root, &c)?;
    }
    Ok(())
}
