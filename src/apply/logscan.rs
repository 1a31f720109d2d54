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
    // Exited containers too: a restart replaces the container whose log holds the error.
    match node.run(&["crictl", "ps", "-a", "-o", "json"], CMD) {
        Ok(o) if o.success() => {
            let cs: Containers = serde_json::from_slice(&o.stdout).unwrap_or_default();
            for c in cs
                .containers
                .iter()
                .filter(|c| COMPONENTS.contains(&c.metadata.name.as_str()))
            {
                match node.run(&["crictl", "logs", "--since", &secs, &c.id], CMD) {
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
        Ok(_) => {}
        Err(e) => {
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
/// node).
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
}
