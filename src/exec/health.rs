//! A component's own health endpoint, as its kubelet probes it: the `httpGet` of a static
//! pod's `readinessProbe` (else `startupProbe`, else `livenessProbe`) in its manifest —
//! kube-apiserver `/readyz` on its secure port, kube-controller-manager `:10257/healthz`,
//! kube-scheduler `:10259/healthz`, etcd `:2381/readyz` in kubeadm's manifests — and the
//! kubelet's `healthzBindAddress:healthzPort/healthz` from its config.yaml.
//!
//! The endpoint is reached through the node's transport ([`Transport::dial`]: on a node
//! reached over SSH, `127.0.0.1` is the node's own loopback). Like the kubelet's probes,
//! an HTTPS health check does not verify the server's certificate: it asks whether the
//! process is up and says it is healthy, nothing about trust (the gates check trust).

use super::https::{self, Handshake, HttpsError};
use crate::transport::Transport;
use rustls::pki_types::ServerName;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Where a component says whether it is healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// `https` or `http`.
    pub https: bool,
    /// Host as the node reaches it.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path (with its query).
    pub path: String,
}

impl Probe {
    /// `https://127.0.0.1:10257/healthz`.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{}://{host}:{}{}",
            if self.https { "https" } else { "http" },
            self.port,
            self.path
        )
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PodDoc {
    spec: PodSpec,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PodSpec {
    containers: Vec<ContainerDoc>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ContainerDoc {
    readiness_probe: Option<ProbeDoc>,
    startup_probe: Option<ProbeDoc>,
    liveness_probe: Option<ProbeDoc>,
    ports: Vec<PortDoc>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ProbeDoc {
    http_get: Option<HttpGet>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HttpGet {
    host: Option<String>,
    path: Option<String>,
    port: Option<PortRef>,
    scheme: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PortDoc {
    name: String,
    container_port: u16,
}

/// The health endpoint of the static pod whose manifest is `text` (`None`: the manifest
/// has no HTTP probe, or is not a pod).
pub fn of_manifest(text: &str) -> Option<Probe> {
    let pod: PodDoc = serde_saphyr::from_str(text).ok()?;
    let c = pod.spec.containers.into_iter().next()?;
    let get = [c.readiness_probe, c.startup_probe, c.liveness_probe]
        .into_iter()
        .flatten()
        .find_map(|p| p.http_get)?;
    let port = match get.port? {
        PortRef::Number(n) => n,
        PortRef::Name(name) => match name.parse() {
            Ok(n) => n,
            Err(_) => c.ports.iter().find(|p| p.name == name)?.container_port,
        },
    };
    Some(Probe {
        https: get.scheme.is_some_and(|s| s.eq_ignore_ascii_case("https")),
        // An empty host is the pod's IP: a static pod is on the host network.
        host: get
            .host
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into()),
        port,
        path: get
            .path
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into()),
    })
}

/// The kubelet's health endpoint from its config.yaml (`None`: `healthzPort: 0`, or not
/// a KubeletConfiguration).
pub fn of_kubelet_config(text: &str) -> Option<Probe> {
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Cfg {
        kind: String,
        healthz_bind_address: Option<String>,
        healthz_port: Option<u16>,
    }
    let cfg: Cfg = serde_saphyr::from_str(text).ok()?;
    if cfg.kind != "KubeletConfiguration" {
        return None;
    }
    let port = cfg.healthz_port.unwrap_or(10248);
    (port != 0).then(|| Probe {
        https: false,
        host: cfg
            .healthz_bind_address
            .filter(|h| !h.is_empty() && h != "0.0.0.0")
            .unwrap_or_else(|| "127.0.0.1".into()),
        port,
        path: "/healthz".into(),
    })
}

/// GET the probe through `t`, within `timeout`. `Ok`: the status and body of a 2xx
/// answer (`200 ok`); `Err`: what was wrong (`connection refused`, `500 [-]etcd failed`).
pub fn check(t: &Arc<dyn Transport>, probe: &Probe, timeout: Duration) -> Result<String, String> {
    let (t, p) = (t.clone(), probe.clone());
    let answer = https::within(timeout, move || {
        let stream = t.dial(&p.host, p.port).map_err(|e| HttpsError::Connect {
            address: format!("{}:{}", p.host, p.port),
            reason: e.to_string(),
        })?;
        if p.https {
            let name = ServerName::try_from(p.host.clone())
                .map_err(|e| HttpsError::Handshake(format!("{:?}: {e}", p.host)))?;
            let h = Handshake {
                roots: None,
                identity: None,
                name,
                host: p.host.clone(),
                port: p.port,
                path: p.path.clone(),
                bearer: None,
            };
            h.over(stream)
        } else {
            https::get(stream, &p.host, p.port, &p.path)
        }
    })
    .map_err(|e| e.to_string())?;
    judge(&answer)
}

/// `200 ok` for a 2xx answer, else `Err("500 [-]etcd failed")`.
fn judge(answer: &https::Answer) -> Result<String, String> {
    let body: Vec<&str> = answer
        .body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let said = format!(
        "{} {}",
        answer.status,
        crate::input::clip_lines(&body.join("; "), 200)
    );
    if (200..300).contains(&answer.status) {
        Ok(said)
    } else {
        Err(said)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::tls::provider;
    use std::io::{Read, Write};

    const KCM: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-controller-manager\nspec:\n  containers:\n  - command:\n    - kube-controller-manager\n    livenessProbe:\n      failureThreshold: 8\n      httpGet:\n        host: 127.0.0.1\n        path: /healthz\n        port: 10257\n        scheme: HTTPS\n    name: kube-controller-manager\n";

    #[test]
    fn probes_are_read_as_the_kubelet_reads_them() {
        assert_eq!(
            of_manifest(KCM).map(|p| p.url()),
            Some("https://127.0.0.1:10257/healthz".into())
        );
        // readinessProbe wins; a named port is looked up; no host is the pod's (host) IP.
        let api = "spec:\n  containers:\n  - livenessProbe:\n      httpGet:\n        host: 10.0.0.11\n        path: /livez\n        port: 6443\n        scheme: HTTPS\n    readinessProbe:\n      httpGet:\n        path: /readyz\n        port: probe-port\n        scheme: HTTPS\n    ports:\n    - containerPort: 6443\n      name: probe-port\n";
        assert_eq!(
            of_manifest(api).map(|p| p.url()),
            Some("https://127.0.0.1:6443/readyz".into())
        );
        let etcd = "spec:\n  containers:\n  - livenessProbe:\n      httpGet:\n        host: 127.0.0.1\n        path: /health?exclude=NOSPACE&serializable=true\n        port: 2381\n        scheme: HTTP\n";
        assert_eq!(
            of_manifest(etcd).map(|p| p.url()),
            Some("http://127.0.0.1:2381/health?exclude=NOSPACE&serializable=true".into())
        );
        assert_eq!(of_manifest("spec:\n  containers:\n  - name: x\n"), None);
        let kubelet = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzBindAddress: 127.0.0.1\nhealthzPort: 10248\n";
        assert_eq!(
            of_kubelet_config(kubelet).map(|p| p.url()),
            Some("http://127.0.0.1:10248/healthz".into())
        );
        assert_eq!(
            of_kubelet_config("kind: KubeletConfiguration\n").map(|p| p.url()),
            Some("http://127.0.0.1:10248/healthz".into())
        );
        assert_eq!(
            of_kubelet_config("kind: KubeletConfiguration\nhealthzPort: 0\n"),
            None
        );
    }

    #[test]
    fn answers_are_judged_by_their_status() {
        let judged = |raw: &[u8]| {
            https::parse(raw)
                .map_err(|e| e.to_string())
                .and_then(|a| judge(&a))
        };
        assert_eq!(
            judged(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            Ok("200 ok".into())
        );
        assert_eq!(
            judged(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\ne\r\n[-]etcd failed\r\n\r\n0\r\n\r\n"),
            Err("500 [-]etcd failed".into())
        );
        assert!(judged(b"").is_err());
        assert!(judged(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[test]
    fn a_real_https_server_is_checked_without_verifying_it() {
        // openssl s_server as the component: a self-signed certificate, as
        // kube-controller-manager makes for itself.
        let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
            return;
        };
        let port = listener.local_addr().unwrap().port();
        let ca = crate::pki::issue::new_ca("health-test", crate::pki::KeyAlgorithm::EcdsaP256, 1)
            .unwrap();
        let identity =
            crate::pki::tls::Identity::from_pem(ca.cert_pem.as_bytes(), ca.key.expose().as_bytes())
                .unwrap();
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .unwrap();
        let server = Arc::new(server);
        let serve = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(server).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp);
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            s.conn.send_close_notify();
            let _ = s.flush();
        });
        let t: Arc<dyn Transport> =
            Arc::new(crate::transport::Local::new("n", std::path::Path::new("/")));
        let probe = Probe {
            https: true,
            host: "127.0.0.1".into(),
            port,
            path: "/healthz".into(),
        };
        assert_eq!(
            check(&t, &probe, Duration::from_secs(10)),
            Ok("200 ok".into())
        );
        serve.join().unwrap();
        // Nobody listens any more: refused, named.
        let refused = check(&t, &probe, Duration::from_secs(10)).unwrap_err();
        assert!(refused.contains("refused"), "{refused}");
    }
}
