//! Where the TLS processes of a simulated cluster listen, as whoever runs them publishes
//! it (`sandbox up` writes `DIR/run/endpoints.json`): what the prober (`apply --probe`)
//! handshakes with. Public data only.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the endpoints are recorded, relative to the sandbox directory.
pub const ENDPOINTS: &str = "run/endpoints.json";

/// `DIR/run/endpoints.json`: where every listener is. Public data only.
///
/// ```json
/// { "processes": { "cp-1/kube-apiserver": "127.0.0.1:41234", "cp-1/etcd": "127.0.0.1:41235",
///                  "cp-1/etcd-peer": "127.0.0.1:41236", "cp-1/kubelet": "127.0.0.1:41237",
///                  "w-1/kubelet": "127.0.0.1:41238" },
///   "aggregated": { "address": "127.0.0.1:41239", "ca": "-----BEGIN CERTIFICATE-----\n…" },
///   "pid": 4242 }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoints {
    /// `node/process` → `127.0.0.1:port`; processes are `kube-apiserver`, `etcd`,
    /// `etcd-peer` and `kubelet`.
    pub processes: BTreeMap<String, String>,
    /// The aggregated API server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregated: Option<AggregatedEndpoint>,
    /// The process that serves them.
    #[serde(default)]
    pub pid: u32,
}

/// The aggregated API server's endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatedEndpoint {
    /// `127.0.0.1:port`.
    pub address: String,
    /// Its serving CA (PEM): what its APIService's caBundle would hold.
    pub ca: String,
}

impl Endpoints {
    /// The file of sandbox `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(ENDPOINTS)
    }

    /// Read the file of sandbox `dir`.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(Self::path(dir))?;
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)
    }

    /// The address of `process` on `node`.
    pub fn process(&self, node: &str, process: &str) -> Option<&str> {
        self.processes
            .get(&format!("{node}/{process}"))
            .map(String::as_str)
    }
}
