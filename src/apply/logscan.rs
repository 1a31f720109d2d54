//! The seed's step 10: "make sure control plane components log no TLS errors" and
//! "validate the logs from control plane components, along with the kubelet … are not
//! throwing any tls errors". At every gate, the logs of every control-plane container
//! (`crictl logs`) and every kubelet (`journalctl -u kubelet`) since the stage began are
//! read through the node's transport, and a line with a TLS error fails the gate,
//! quoted.
//!
//! Times are relative (`--since 95000ms`, `--since -95000ms`), so the node's clock need not
//! agree with this machine's. A node whose transport cannot run commands (a mounted
//! copy) is not scanned, and the report says so.

use crate::exec::Node;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a Go TLS client or server logs when a handshake fails for a reason of trust.
pub const PATTERNS: &[&str] = &[
    "x509: certificate signed by unknown authority",
    "tls: bad certificate",
    "remote error: tls",
    "tls: failed to verify certificate",
    "x509: certificate has expired or is not yet valid",
    "tls: unknown certificate authority",
];

/// The static pods whose logs are read.
const COMPONENTS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];

/// How long one command may take.
const CMD: Duration = Duration::from_secs(30);

/// At most this many lines are quoted per log.
const QUOTED: usize = 2;

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Logs read (one per container, one per kubelet journal).
    pub logs: usize,
    /// `cp-1 kube-apiserver: "…line…"`, per line with a TLS error.
    pub hits: Vec<String>,
    /// Nodes whose logs could not be read, and why.
    pub unread: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Containers {
    containers: Vec<Container>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Container {
    id: String,
    metadata: Meta,
    /// When it was created: nanoseconds since the epoch, as a string.
    #[serde(rename = "createdAt")]
    created_at: String,
}

/// How far a node's clock may be behind or ahead of this machine's.
const SKEW: Duration = Duration::from_secs(5);

/// The containers of the control-plane components whose logs may hold lines of the last
/// `since`: all but those replaced (a newer container of the same name created) before
/// the window began, give or take [`SKEW`]. A container stops before its successor
/// starts, so a replaced one wrote nothing since.
fn in_window(cs: &[Container], since: Duration) -> Vec<&Container> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let began = now.saturating_sub(since + SKEW).as_nanos();
    let created = |c: &Container| c.created_at.parse::<u128>().ok();
    cs.iter()
        .filter(|c| COMPONENTS.contains(&c.metadata.name.as_str()))
        .filter(|c| {
            // Replaced before the window: a newer one of its name was made by then.
            !cs.iter().any(|o| {
                o.metadata.name == c.metadata.name
                    && o.id != c.id
                    && matches!((created(o), created(c)), (Some(o), Some(c)) if o > c && o < began)
            })
        })
        .collect()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Meta {
    name: String,
}

/// The lines of `text` with a TLS error, quoted (at most [`QUOTED`], the last ones).
fn tls_errors(text: &str) -> Vec<String> {
    let hits: Vec<&str> = text
        .lines()
        .filter(|l| PATTERNS.iter().any(|p| l.contains(p)))
        .collect();
    let skip = hits.len().saturating_sub(QUOTED);
    let mut out: Vec<String> = hits[skip..]
        .iter()
        .map(|l| format!("\"{}\"", crate::input::clip_lines(l.trim(), 300)))
        .collect();
    if skip > 0 {
        out.insert(0, format!("({skip} more lines like these)"));
    }
    out
}

fn scan_node(node: &Node, since: Duration) -> Scan {
    let mut scan = Scan::default();
    let secs = format!("{}ms", since.as_millis() + 1);
    let both = |o: &crate::transport::Output| {
        format!(
            "{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    // A node with no static pod manifest (a worker) runs no control-plane container.
    let manifests = node
        .transport
        .list(&format!("/{}", crate::layout::MANIFESTS))
        .unwrap_or_default();
    let control_plane = manifests
        .iter()
        .any(|(n, _)| n.ends_with(".yaml") || n.ends_with(".yml"));
    // Exited containers too: a restart replaces the container whose log holds the error.
    match control_plane.then(|| node.run(&["crictl", "ps", "-a", "-o", "json"], CMD)) {
        None => {}
        Some(Ok(o)) if o.success() => {
            let cs: Containers = serde_json::from_slice(&o.stdout).unwrap_or_default();
            let read = crate::parallel::map(&in_window(&cs.containers, since), 4, |c| {
                (
                    *c,
                    node.run(&["crictl", "logs", "--since", &secs, &c.id], CMD),
                )
            });
            for (c, out) in read {
                match out {
                    Ok(o) if o.success() => {
                        scan.logs += 1;
                        let found = tls_errors(&both(&o));
                        if !found.is_empty() {
                            scan.hits.push(format!(
                                "{} {}: {}",
                                node.name,
                                c.metadata.name,
                                found.join(" ")
                            ));
                        }
                    }
                    Ok(o) => scan.unread.push(format!(
                        "{} {}: `crictl logs`: {}",
                        node.name,
                        c.metadata.name,
                        o.reason()
                    )),
                    Err(e) => scan.unread.push(format!("{}: {e}", node.name)),
                }
            }
        }
        // No container runtime CLI: a worker without crictl still has its kubelet.
        Some(Ok(_)) => {}
        Some(Err(e)) => {
            scan.unread.push(format!("{}: {e}", node.name));
            return scan;
        }
    }
    let argv = [
        "journalctl",
        "-u",
        "kubelet",
        "--since",
        &format!("-{secs}"),
        "--no-pager",
        "-o",
        "cat",
    ];
    match node.run(&argv, CMD) {
        Ok(o) if o.success() => {
            scan.logs += 1;
            let found = tls_errors(&both(&o));
            if !found.is_empty() {
                scan.hits
                    .push(format!("{} kubelet: {}", node.name, found.join(" ")));
            }
        }
        Ok(o) => scan.unread.push(format!(
            "{} kubelet: `journalctl`: {}",
            node.name,
            o.reason()
        )),
        Err(e) => scan.unread.push(format!("{}: {e}", node.name)),
    }
    scan
}

/// Read every node's logs of the last `since`, 32 nodes at a time (each waits on its
/// node). `nodes` are best read views ([`crate::exec::read_views`]): which nodes run
/// control-plane containers is then known without asking.
pub fn scan(nodes: &BTreeMap<String, Node>, since: Duration) -> Scan {
    let list: Vec<&Node> = nodes.values().collect();
    let mut all = Scan::default();
    for f in crate::parallel::map(&list, 32, |n| scan_node(n, since)) {
        all.logs += f.logs;
        all.hits.extend(f.hits);
        all.unread.extend(f.unread);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_errors_are_quoted_and_others_are_not() {
        let log = "I1129 06:03:12.8 1 server.go:160] \"Starting kube-apiserver\"\n\
                   I1129 06:03:13.1 1 log.go:245] http: TLS handshake error from 127.0.0.1:5555: remote error: tls: bad certificate\n\
                   E1129 06:03:14.0 1 reflector.go:1] failed to list: x509: certificate signed by unknown authority\n\
                   I1129 06:03:15.0 1 log.go:245] http: TLS handshake error from 127.0.0.1:5556: EOF\n";
        let found = tls_errors(log);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("remote error: tls: bad certificate"));
        assert!(found[1].contains("unknown authority"));
        assert!(tls_errors("all good\nhttp: TLS handshake error from x: EOF\n").is_empty());
        let many = "x509: certificate signed by unknown authority\n".repeat(5);
        assert_eq!(tls_errors(&many)[0], "(3 more lines like these)");
    }

    #[test]
    fn containers_replaced_before_the_window_are_not_read() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let ago = |s: u64| (now - Duration::from_secs(s)).as_nanos().to_string();
        let c = |id: &str, name: &str, created: String| Container {
            id: id.into(),
            metadata: Meta { name: name.into() },
            created_at: created,
        };
        let cs = vec![
            // Replaced an hour ago: wrote nothing in the last minute.
            c("old", "kube-apiserver", ago(7200)),
            c("mid", "kube-apiserver", ago(3600)),
            // Replaced 30 s ago, inside the window: its last lines count.
            c("prev", "kube-apiserver", ago(40)),
            c("cur", "kube-apiserver", ago(30)),
            // The only one of its name, however old: running.
            c("kcm", "kube-controller-manager", ago(9000)),
            // Not a control-plane component.
            c("proxy", "kube-proxy", ago(10)),
            // A creation time that does not parse: read, to be safe.
            c("odd", "etcd", "yesterday".into()),
        ];
        let read: Vec<&str> = in_window(&cs, Duration::from_secs(60))
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(read, ["mid", "prev", "cur", "kcm", "odd"]);
        // A window of ten seconds (plus the skew allowed): `prev` was replaced before it.
        let read: Vec<&str> = in_window(&cs, Duration::from_secs(10))
            .iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(read, ["cur", "kcm", "odd"]);
    }
}
