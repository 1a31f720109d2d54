//! Restart a component and wait until it is *seen* back, as kubeadm does: a restart is
//! done when the new instance is observed, never when the command that asked for it
//! returned.
//!
//! - A static pod: its manifest changes (`trustform.dev/restarted-at`), so the kubelet
//!   replaces the pod. Done when `crictl pods` shows a ready pod of the component whose
//!   `kubernetes.io/config.hash` differs from the one before, and `crictl ps` shows its
//!   container running, at every look for [`Wait::settle`] (a container that crashes
//!   right after it starts is not back).
//! - The kubelet: `systemctl restart kubelet`. Done when `systemctl is-active kubelet` says
//!   `active` with a new `ActiveEnterTimestampMonotonic`, at every look for
//!   [`Wait::settle`].
//!
//! - In both cases the process is back only when its own health endpoint (the manifest's
//!   probe, the kubelet's `healthz`, see [`super::health`]) answers `2xx` at every look.
//!
//! Every wait has a time limit; on timeout the error names what was seen last and the
//! component's last log lines, and `trustform apply` resumes at that step.

use super::{ExecError, Files, Node, health};
use crate::input::Kind;
use crate::{layout, manifest};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How to wait.
#[derive(Clone, Copy, Debug)]
pub struct Wait {
    /// The longest a restart may take.
    pub timeout: Duration,
    /// How long it must stay healthy, seen at every look, to be done (0: the first
    /// healthy look).
    pub settle: Duration,
}

impl Default for Wait {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(300),
            settle: Duration::from_secs(2),
        }
    }
}

/// What a restart saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// How long from the change to the component seen healthy.
    pub waited: Duration,
    /// The new instance: `pod kube-apiserver-cp-1 (config.hash 3f9a…)`, `kubelet (active since …)`.
    pub what: String,
}

const CMD: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Pods {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize, Clone)]
struct Pod {
    id: String,
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    state: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default, Clone)]
struct Meta {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Containers {
    #[serde(default)]
    containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Container {
    id: String,
    #[serde(rename = "podSandboxId", default)]
    pod: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

const HASH: &str = "kubernetes.io/config.hash";

impl Pod {
    fn hash(&self) -> &str {
        self.annotations.get(HASH).map_or("", String::as_str)
    }
    fn ready(&self) -> bool {
        self.state == "SANDBOX_READY"
    }
    fn of(&self, component: &str) -> bool {
        self.labels.get("component").map(String::as_str) == Some(component)
            || self.metadata.name.starts_with(&format!("{component}-"))
    }
}

fn fail(node: &Node, component: &str, reason: String) -> ExecError {
    ExecError::Restart {
        node: node.name.clone(),
        component: component.to_string(),
        reason,
    }
}

/// Run a command on the node; a missing tool is named as such.
fn run(node: &Node, component: &str, argv: &[&str]) -> Result<String, ExecError> {
    let out = node.run(argv, CMD)?;
    if out.code == Some(127) {
        return Err(fail(
            node,
            component,
            format!(
                "`{}` is not on the node ({}): trustform watches restarts with the node's own tools (crictl from cri-tools, systemctl)",
                argv[0],
                out.reason()
            ),
        ));
    }
    if !out.success() {
        return Err(fail(
            node,
            component,
            format!("`{}`: {}", argv.join(" "), out.reason()),
        ));
    }
    Ok(out.text())
}

fn pods(node: &Node, component: &str) -> Result<Vec<Pod>, ExecError> {
    let text = run(
        node,
        component,
        &["crictl", "pods", "--name", component, "-o", "json"],
    )?;
    let p: Pods = serde_json::from_str(&text).map_err(|e| {
        fail(
            node,
            component,
            format!("`crictl pods -o json` printed something that is not its JSON: {e}"),
        )
    })?;
    Ok(p.items.into_iter().filter(|p| p.of(component)).collect())
}

fn containers(node: &Node, component: &str) -> Result<Vec<Container>, ExecError> {
    let text = run(
        node,
        component,
        &["crictl", "ps", "-a", "--name", component, "-o", "json"],
    )?;
    let c: Containers = serde_json::from_str(&text).map_err(|e| {
        fail(
            node,
            component,
            format!("`crictl ps -o json` printed something that is not its JSON: {e}"),
        )
    })?;
    Ok(c.containers)
}

/// The last lines a container logged, for a timeout's message.
fn last_log(node: &Node, container: &str) -> String {
    node.run(&["crictl", "logs", "--tail", "3", container], CMD)
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

/// Poll `check` until it has said healthy at every look for `wait.settle` (at least two
/// looks when `settle` is not zero), or time runs out. `check` returns (healthy, what it
/// saw).
fn poll(
    wait: Wait,
    mut check: impl FnMut() -> Result<(bool, String), ExecError>,
) -> Result<(Duration, String), (Duration, String)> {
    let start = Instant::now();
    let mut healthy_since: Option<Instant> = None;
    let mut pause = Duration::from_millis(20);
    let mut saw;
    loop {
        match check() {
            Ok((true, s)) => {
                saw = s;
                let since = *healthy_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= wait.settle {
                    return Ok((start.elapsed(), saw));
                }
            }
            Ok((false, s)) => {
                healthy_since = None;
                saw = s;
            }
            // A command failing while the node is busy is one more look, not the end.
            Err(e) => {
                healthy_since = None;
                saw = e.to_string();
            }
        }
        if start.elapsed() >= wait.timeout {
            return Err((start.elapsed(), saw));
        }
        let step = match healthy_since {
            // Healthy: look again within the settle time, a few times.
            Some(_) => (wait.settle / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            None => pause,
        };
        std::thread::sleep(step);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The pods of a static pod component before its manifest changes.
#[derive(Clone, Debug)]
pub struct Before {
    ids: Vec<String>,
    hash: Option<String>,
}

/// Look at a static pod's pods before its manifest changes.
pub fn before(node: &Node, component: &str) -> Result<Before, ExecError> {
    let pods = pods(node, component)?;
    Ok(Before {
        ids: pods.iter().map(|p| p.id.clone()).collect(),
        hash: pods
            .iter()
            .find(|p| p.ready())
            .map(|p| p.hash().to_string()),
    })
}

/// Restart a static pod by changing its manifest, and wait until the new pod is ready.
pub fn static_pod(
    files: &Files,
    node: &Node,
    component: &str,
    wait: Wait,
) -> Result<Seen, ExecError> {
    let was = before(node, component)?;
    let path = layout::manifest(component);
    let content = |reason: &str| ExecError::Content {
        node: node.name.clone(),
        path: path.clone(),
        reason: reason.to_string(),
    };
    let bytes = files
        .read(node, &path)?
        .ok_or_else(|| content("no such manifest"))?;
    let text = String::from_utf8(bytes).map_err(|_| content("not UTF-8"))?;
    let next = manifest::set_annotation(&text, manifest::RESTARTED_AT, &crate::clock::now())
        .ok_or_else(|| content("no top-level `metadata:`"))?;
    files.write(
        node,
        &path,
        next.as_bytes(),
        crate::atomic::PUBLIC_MODE,
        false,
    )?;
    awaited(node, component, &was, wait, health::of_manifest(&next))
}

/// Wait until a static pod's manifest change is seen: a ready pod that was not there
/// `before`, with another config.hash, its container running.
pub fn new_pod(
    node: &Node,
    component: &str,
    before: &Before,
    wait: Wait,
) -> Result<Seen, ExecError> {
    let probe = node
        .transport
        .read(&layout::manifest(component), Kind::NodeFile)
        .ok()
        .flatten()
        .and_then(|b| health::of_manifest(&String::from_utf8_lossy(&b)));
    awaited(node, component, before, wait, probe)
}

/// [`new_pod`], the manifest's health endpoint known.
fn awaited(
    node: &Node,
    component: &str,
    before: &Before,
    wait: Wait,
    probe: Option<health::Probe>,
) -> Result<Seen, ExecError> {
    let (before_ids, before_hash) = (&before.ids, &before.hash);
    let mut last_container = None;
    let result = poll(wait, || {
        let pods = pods(node, component)?;
        let new = pods.iter().find(|p| {
            p.ready() && !before_ids.contains(&p.id) && Some(p.hash()) != before_hash.as_deref()
        });
        let Some(pod) = new else {
            let states: Vec<String> = pods
                .iter()
                .map(|p| format!("pod {} {}", p.metadata.name, p.state))
                .collect();
            return Ok((
                false,
                if states.is_empty() {
                    format!("no pod of {component}")
                } else {
                    states.join(", ")
                },
            ));
        };
        let cs = containers(node, component)?;
        let mine: Vec<&Container> = cs.iter().filter(|c| c.pod == pod.id).collect();
        if let Some(c) = mine.first() {
            last_container = Some(c.id.clone());
        }
        let running = mine.iter().any(|c| c.state == "CONTAINER_RUNNING");
        let restarts = mine
            .iter()
            .filter_map(|c| c.annotations.get("io.kubernetes.container.restartCount"))
            .next()
            .cloned()
            .unwrap_or_else(|| "0".into());
        let states: Vec<&str> = mine.iter().map(|c| c.state.as_str()).collect();
        let seen = format!(
            "pod {} ready (config.hash {}), container {} (restarts {restarts})",
            pod.metadata.name,
            short(pod.hash()),
            if states.is_empty() {
                "not created".to_string()
            } else {
                states.join(", ")
            }
        );
        Ok(match (&probe, running) {
            (Some(p), true) => healthy(node, p, seen),
            _ => (running, seen),
        })
    });
    match result {
        Ok((waited, what)) => Ok(Seen { waited, what }),
        Err((waited, saw)) => {
            let saw = with_health(node, probe.as_ref(), saw);
            let log = last_container
                .map(|c| last_log(node, &c))
                .filter(|l| !l.is_empty())
                .map(|l| format!("; its log: {l}"))
                .unwrap_or_default();
            Err(fail(
                node,
                component,
                format!(
                    "not back after {}: last seen {saw}{log}",
                    humantime::format_duration(round(waited))
                ),
            ))
        }
    }
}

/// Restart the kubelet with `systemctl restart kubelet`, and wait until it is active
/// again (a new start, not the old process).
pub fn kubelet(node: &Node, wait: Wait) -> Result<Seen, ExecError> {
    let since = |node: &Node| -> Result<String, ExecError> {
        Ok(run(
            node,
            "kubelet",
            &[
                "systemctl",
                "show",
                "kubelet",
                "--property=ActiveEnterTimestampMonotonic",
                "--value",
            ],
        )?
        .trim()
        .to_string())
    };
    let before = since(node)?;
    let probe = node
        .transport
        .read(&format!("/{}", layout::KUBELET_CONFIG), Kind::NodeFile)
        .ok()
        .flatten()
        .and_then(|b| health::of_kubelet_config(&String::from_utf8_lossy(&b)));
    run(node, "kubelet", &["systemctl", "restart", "kubelet"])?;
    let result = poll(wait, || {
        // One look: the unit's state and when it last became active.
        let text = run(
            node,
            "kubelet",
            &[
                "systemctl",
                "show",
                "kubelet",
                "--property=ActiveState,ActiveEnterTimestampMonotonic",
            ],
        )?;
        let prop = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let state = prop("ActiveState");
        if state != "active" {
            return Ok((false, format!("kubelet {state}")));
        }
        let now = prop("ActiveEnterTimestampMonotonic");
        let seen = format!("kubelet active (started at {now} µs after boot)");
        Ok(match &probe {
            Some(p) if now != before => healthy(node, p, seen),
            _ => (now != before, seen),
        })
    });
    match result {
        Ok((waited, what)) => Ok(Seen { waited, what }),
        Err((waited, saw)) => {
            let saw = with_health(node, probe.as_ref(), saw);
            let journal = node
                .run(
                    &[
                        "journalctl",
                        "-u",
                        "kubelet",
                        "-n",
                        "3",
                        "--no-pager",
                        "-o",
                        "cat",
                    ],
                    CMD,
                )
                .map(|o| o.text().lines().collect::<Vec<_>>().join(" | "))
                .unwrap_or_default();
            Err(fail(
                node,
                "kubelet",
                format!(
                    "not back after {}: last seen {saw}{}",
                    humantime::format_duration(round(waited)),
                    if journal.is_empty() {
                        String::new()
                    } else {
                        format!("; its journal: {journal}")
                    }
                ),
            ))
        }
    }
}

/// How long one health check may take.
const HEALTH: Duration = Duration::from_secs(5);

/// A running process is back only when its own health endpoint says so.
fn healthy(node: &Node, probe: &health::Probe, seen: String) -> (bool, String) {
    match health::check(&node.transport, probe, HEALTH) {
        Ok(said) => (true, format!("{seen}, {} said {said}", probe.url())),
        Err(said) => (false, format!("{seen}, but {}: {said}", probe.url())),
    }
}

/// What was seen last, with what the health endpoint says now (when it was not part of
/// it: the process was not even running).
fn with_health(node: &Node, probe: Option<&health::Probe>, saw: String) -> String {
    match probe {
        Some(p) if !saw.contains(&p.url()) => match health::check(&node.transport, p, HEALTH) {
            Ok(said) => format!("{saw}; {} says {said}", p.url()),
            Err(said) => format!("{saw}; {}: {said}", p.url()),
        },
        _ => saw,
    }
}

fn short(h: &str) -> String {
    if h.len() > 12 {
        format!("{}…", &h[..12])
    } else {
        h.to_string()
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polling_needs_healthy_looks_for_the_settle_time_and_stops_at_the_limit() {
        let wait = Wait {
            timeout: Duration::from_secs(5),
            settle: Duration::from_millis(100),
        };
        let mut n = 0;
        // healthy, unhealthy (the clock starts again), then healthy for good.
        let start = Instant::now();
        let r = poll(wait, || {
            n += 1;
            Ok((n != 2, format!("look {n}")))
        });
        assert!(r.is_ok_and(|(_, s)| s != "look 1" && s != "look 3"));
        assert!(start.elapsed() >= Duration::from_millis(100));
        let mut n = 0;
        let zero = Wait {
            timeout: Duration::from_secs(5),
            settle: Duration::ZERO,
        };
        assert_eq!(
            poll(zero, || {
                n += 1;
                Ok((true, format!("look {n}")))
            })
            .map(|(_, s)| s),
            Ok("look 1".to_string())
        );
        let wait = Wait {
            timeout: Duration::from_millis(200),
            settle: Duration::ZERO,
        };
        let r = poll(wait, || Ok((false, "down".into())));
        assert!(matches!(r, Err((d, s)) if d >= Duration::from_millis(200) && s == "down"));
    }

    #[test]
    fn crictl_json_is_read_as_crictl_prints_it() {
        let pods: Pods = serde_json::from_str(
            r#"{"items":[{"id":"ab12","metadata":{"name":"kube-apiserver-cp-1","uid":"u","namespace":"kube-system","attempt":0},
            "state":"SANDBOX_READY","createdAt":"1700000000000000000","labels":{"component":"kube-apiserver","tier":"control-plane"},
            "annotations":{"kubernetes.io/config.hash":"9f3a","kubernetes.io/config.source":"file"},"runtimeHandler":""}]}"#,
        )
        .unwrap();
        let p = &pods.items[0];
        assert!(p.ready() && p.of("kube-apiserver") && !p.of("etcd"));
        assert_eq!(p.hash(), "9f3a");
        let cs: Containers = serde_json::from_str(
            r#"{"containers":[{"id":"c1","podSandboxId":"ab12","metadata":{"name":"kube-apiserver","attempt":1},
            "state":"CONTAINER_RUNNING","annotations":{"io.kubernetes.container.restartCount":"1"}}]}"#,
        )
        .unwrap();
        assert_eq!(cs.containers[0].pod, "ab12");
    }
}
