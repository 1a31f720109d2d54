//! The etcd cluster whole before and after a member restarts: every member answers
//! `GET /health` on its client URL with `{"health":"true"}`, which etcd says only with a
//! leader and a read that went through quorum. It is the check `etcdctl endpoint health
//! --cluster` makes, asked from the restarting member's node with what kubeadm gives
//! etcdctl there: `--trusted-ca-file` as roots and `etcd/healthcheck-client.crt` next to
//! it as client certificate (the API server's `--etcd-certfile` where there is none).
//!
//! Before the restart, a cluster that is not whole stops the step: with one of three
//! members already down, restarting another loses quorum, and the API servers stop
//! answering. After it, the next member goes down only when this one has rejoined and
//! every member is healthy again (its own probe on `:2381` says only that it runs).
//!
//! The members are the etcd manifests of the inventory's nodes, each dialed at its
//! `--advertise-client-urls`.

use super::error::{StepError, TrustError};
use super::live::{etcd_address, exchange, file, flag_file, flags};
use crate::exec::https::{Handshake, authority};
use crate::exec::{Node, restart::Wait};
use crate::pki::tls::Identity;
use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one member's answer may take.
const ANSWER: Duration = Duration::from_secs(5);
/// How often the members are asked again.
const LOOK: Duration = Duration::from_millis(250);

/// When the cluster is asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Before `node`'s member is restarted.
    Before,
    /// After it came back.
    After,
}

impl When {
    /// `before` or `after`.
    fn name(self) -> &'static str {
        match self {
            When::Before => "before",
            When::After => "after",
        }
    }
}

/// One member to ask.
struct Member {
    node: String,
    host: String,
    port: u16,
}

/// Wait until every etcd member of `nodes` is healthy, asked from `from` (the node whose
/// member restarts), at most `wait.timeout`. `Ok(None)`: `from` runs no etcd member, or
/// its transport reaches no port (a directory: nothing to ask). `Ok(Some(line))`: what
/// was seen.
pub fn healthy(
    nodes: &BTreeMap<String, Node>,
    from: &Node,
    when: When,
    wait: Wait,
) -> Result<Option<String>, StepError> {
    let fail = |last: String| StepError::Quorum {
        node: from.name.clone(),
        when: when.name(),
        within: humantime::format_duration(wait.timeout).to_string(),
        last,
    };
    let Some(own) = flags(from, "etcd") else {
        return Ok(None);
    };
    let handshake = credentials(from, &own).map_err(|e| fail(super::error::line(&e)))?;
    let members: Vec<Member> = nodes
        .values()
        .filter_map(|n| {
            let (host, port) = etcd_address(&flags(n, "etcd")?, false)?;
            Some(Member {
                node: n.name.clone(),
                host,
                port,
            })
        })
        .collect();
    let start = Instant::now();
    loop {
        let answers = crate::parallel::map(&members, 8, |m| ask(from, &handshake, m));
        if answers.iter().any(|a| matches!(a, Err(Ask::NotLive))) {
            return Ok(None);
        }
        let sick: Vec<String> = members
            .iter()
            .zip(&answers)
            .filter_map(|(m, a)| match a {
                Err(Ask::Sick(why)) => Some(format!(
                    "{} (https://{}): {why}",
                    m.node,
                    authority(&m.host, m.port)
                )),
                _ => None,
            })
            .collect();
        if sick.is_empty() {
            let names: Vec<&str> = members.iter().map(|m| m.node.as_str()).collect();
            return Ok(Some(format!(
                "etcd cluster healthy {}: {n} of {n} members ({}) answered /health true in {:.1} s",
                when.name(),
                names.join(", "),
                start.elapsed().as_secs_f64(),
                n = members.len(),
            )));
        }
        if start.elapsed() >= wait.timeout {
            return Err(fail(format!(
                "{} of {} members unhealthy: {}",
                sick.len(),
                members.len(),
                sick.join("; ")
            )));
        }
        std::thread::sleep(LOOK);
    }
}

/// The client etcdctl would be on `from`.
fn credentials(from: &Node, own: &BTreeMap<String, String>) -> Result<Handshake, TrustError> {
    let ca = flag_file(from, "etcd", own, "trusted-ca-file")?;
    let dir = own
        .get("trusted-ca-file")
        .and_then(|p| p.rsplit_once('/'))
        .map(|(d, _)| d.to_string())
        .unwrap_or_default();
    let healthcheck = (
        file(from, &format!("{dir}/healthcheck-client.crt")),
        file(from, &format!("{dir}/healthcheck-client.key")),
    );
    let identity = match healthcheck {
        (Some(cert), Some(key)) => Identity::from_pem(&cert, &key)?,
        _ => {
            let api = flags(from, "kube-apiserver").unwrap_or_default();
            Identity::from_pem(
                &flag_file(from, "kube-apiserver", &api, "etcd-certfile")?,
                &flag_file(from, "kube-apiserver", &api, "etcd-keyfile")?,
            )?
        }
    };
    Ok(Handshake {
        roots: Some(ca),
        identity: Some(identity),
        // Set per member.
        name: ServerName::try_from("localhost").expect("a valid name"),
        host: String::new(),
        port: 0,
        path: "/health".into(),
        bearer: None,
    })
}

enum Ask {
    /// `from`'s transport reaches no port.
    NotLive,
    /// Not healthy: why.
    Sick(String),
}

/// One member's `/health`.
fn ask(from: &Node, base: &Handshake, m: &Member) -> Result<(), Ask> {
    let mut h = base.clone();
    h.name = ServerName::try_from(m.host.clone())
        .map_err(|e| Ask::Sick(format!("{:?} is no server name: {e}", m.host)))?;
    h.host = m.host.clone();
    h.port = m.port;
    let answer = exchange(from, h, ANSWER);
    match answer {
        Ok(None) => Err(Ask::NotLive),
        Ok(Some(a)) if a.status == 200 && says_healthy(&a.body) => Ok(()),
        Ok(Some(a)) => Err(Ask::Sick(format!("{} {}", a.status, a.body.trim()))),
        Err(e) => Err(Ask::Sick(e.to_string())),
    }
}

/// etcd's `/health` answer says healthy: `{"health":"true"}` (3.5 adds a `reason`).
fn says_healthy(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v["health"] == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_true_health_is_healthy() {
        assert!(says_healthy(r#"{"health":"true"}"#));
        assert!(says_healthy(r#"{"health":"true","reason":""}"#));
        assert!(!says_healthy(
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#
        ));
        assert!(!says_healthy("ok"));
    }
}
