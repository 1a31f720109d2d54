//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`), with the columns a real
//! server prints for the common kinds (NAME and AGE for the others).

use super::resources::Resource;
use serde_json::{Value, json};

/// Whether an `Accept` header asks for a Table.
pub fn wanted(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn age(obj: &Value) -> Value {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        });
    match created {
        Some(t) => Value::String(human_duration(
            (time::OffsetDateTime::now_utc() - t).whole_seconds(),
        )),
        None => Value::String("<unknown>".into()),
    }
}

fn s(obj: &Value, ptr: &str) -> String {
    match obj.pointer(ptr) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn n(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn count(obj: &Value, ptrs: &[&str]) -> i64 {
    ptrs.iter()
        .map(|p| match obj.pointer(p) {
            Some(Value::Object(m)) => m.len() as i64,
            Some(Value::Array(a)) => a.len() as i64,
            _ => 0,
        })
        .sum()
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

type Cells = fn(&Value) -> Vec<Value>;

/// Column names and types (after NAME), and how to fill them.
fn columns(res: &Resource) -> (Vec<(&'static str, &'static str)>, Cells) {
    match res.plural {
        "namespaces" => (vec![("Status", "string"), ("Age", "string")], |o| {
            vec![json!(s(o, "/status/phase")), age(o)]
        }),
        "configmaps" => (vec![("Data", "integer"), ("Age", "string")], |o| {
            vec![json!(count(o, &["/data", "/binaryData"])), age(o)]
        }),
        "secrets" => (
            vec![("Type", "string"), ("Data", "integer"), ("Age", "string")],
            |o| {
                vec![
                    json!(s(o, "/type")),
                    json!(count(o, &["/data", "/stringData"])),
                    age(o),
                ]
            },
        ),
        "serviceaccounts" => (vec![("Secrets", "integer"), ("Age", "string")], |o| {
            vec![json!(count(o, &["/secrets"])), age(o)]
        }),
        "pods" => (
            vec![
                ("Ready", "string"),
                ("Status", "string"),
                ("Restarts", "string"),
                ("Age", "string"),
            ],
            |o| {
                let statuses = o
                    .pointer("/status/containerStatuses")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let ready = statuses
                    .iter()
                    .filter(|c| c.get("ready") == Some(&Value::Bool(true)))
                    .count();
                let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
                let total = count(o, &["/spec/containers"]);
                let phase = s(o, "/status/reason");
                let phase = if phase.is_empty() {
                    s(o, "/status/phase")
                } else {
                    phase
                };
                vec![
                    json!(format!("{ready}/{total}")),
                    json!(phase),
                    json!(restarts.to_string()),
                    age(o),
                ]
            },
        ),
        "nodes" => (
            vec![
                ("Status", "string"),
                ("Roles", "string"),
                ("Age", "string"),
                ("Version", "string"),
            ],
            |o| {
                let ready = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|cs| {
                        cs.iter()
                            .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                    })
                    .map(|c| s(c, "/status"));
                let status = match ready.as_deref() {
                    Some("True") => "Ready",
                    Some(_) => "NotReady",
                    None => "Unknown",
                };
                let roles: Vec<String> = o
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .map(|l| {
                        l.keys()
                            .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    json!(status),
                    json!(or_none(roles.join(","))),
                    age(o),
                    json!(s(o, "/status/nodeInfo/kubeletVersion")),
                ]
            },
        ),
        "deployments" => (
            vec![
                ("Ready", "string"),
                ("Up-to-date", "integer"),
                ("Available", "integer"),
                ("Age", "string"),
            ],
            |o| {
                vec![
                    json!(format!(
                        "{}/{}",
                        n(o, "/status/readyReplicas"),
                        n(o, "/spec/replicas")
                    )),
                    json!(n(o, "/status/updatedReplicas")),
                    json!(n(o, "/status/availableReplicas")),
                    age(o),
                ]
            },
        ),
        "daemonsets" => (
            vec![
                ("Desired", "integer"),
                ("Current", "integer"),
                ("Ready", "integer"),
                ("Up-to-date", "integer"),
                ("Available", "integer"),
                ("Age", "string"),
            ],
            |o| {
                vec![
                    json!(n(o, "/status/desiredNumberScheduled")),
                    json!(n(o, "/status/currentNumberScheduled")),
                    json!(n(o, "/status/numberReady")),
                    json!(n(o, "/status/updatedNumberScheduled")),
                    json!(n(o, "/status/numberAvailable")),
                    age(o),
                ]
            },
        ),
        "statefulsets" => (vec![("Ready", "string"), ("Age", "string")], |o| {
            vec![
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    n(o, "/spec/replicas")
                )),
                age(o),
            ]
        }),
        "replicasets" => (
            vec![
                ("Desired", "integer"),
                ("Current", "integer"),
                ("Ready", "integer"),
                ("Age", "string"),
            ],
            |o| {
                vec![
                    json!(n(o, "/spec/replicas")),
                    json!(n(o, "/status/replicas")),
                    json!(n(o, "/status/readyReplicas")),
                    age(o),
                ]
            },
        ),
        "poddisruptionbudgets" => (
            vec![
                ("Min Available", "string"),
                ("Max Unavailable", "string"),
                ("Allowed Disruptions", "integer"),
                ("Age", "string"),
            ],
            |o| {
                vec![
                    json!(or_na(s(o, "/spec/minAvailable"))),
                    json!(or_na(s(o, "/spec/maxUnavailable"))),
                    json!(n(o, "/status/disruptionsAllowed")),
                    age(o),
                ]
            },
        ),
        "leases" => (vec![("Holder", "string"), ("Age", "string")], |o| {
            vec![json!(s(o, "/spec/holderIdentity")), age(o)]
        }),
        "certificatesigningrequests" => (
            vec![
                ("Age", "string"),
                ("SignerName", "string"),
                ("Requestor", "string"),
                ("RequestedDuration", "string"),
                ("Condition", "string"),
            ],
            |o| {
                let conds: Vec<String> = o
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .map(|cs| {
                        cs.iter()
                            .filter(|c| s(c, "/status") != "False")
                            .map(|c| s(c, "/type"))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut cond = conds.join(",");
                if o.pointer("/status/certificate")
                    .is_some_and(|c| c.is_string())
                {
                    cond = if cond.is_empty() {
                        "Issued".into()
                    } else {
                        format!("{cond},Issued")
                    };
                }
                let duration = o
                    .pointer("/spec/expirationSeconds")
                    .and_then(Value::as_i64)
                    .map(human_duration)
                    .unwrap_or_default();
                vec![
                    age(o),
                    json!(s(o, "/spec/signerName")),
                    json!(s(o, "/spec/username")),
                    json!(or_none(duration)),
                    json!(if cond.is_empty() {
                        "Pending".into()
                    } else {
                        cond
                    }),
                ]
            },
        ),
        _ => (vec![("Age", "string")], |o| vec![age(o)]),
    }
}

fn or_na(x: String) -> String {
    if x.is_empty() { "N/A".into() } else { x }
}

/// How much of each object a row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// From the `includeObject` query parameter.
    pub fn parse(v: Option<&str>) -> Include {
        match v {
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            _ => Include::Metadata,
        }
    }
}

/// The Table of `items`, with `meta` as its list metadata.
pub fn render(res: &Resource, items: &[Value], meta: Value, include: Include) -> Value {
    let (cols, cells) = columns(res);
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    })];
    defs.extend(cols.iter().map(|(name, ty)| {
        json!({"name": name, "type": ty, "format": "", "description": name, "priority": 0})
    }));
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let mut c = vec![json!(s(o, "/metadata/name"))];
            c.extend(cells(o));
            let mut row = json!({"cells": c});
            match include {
                Include::None => {}
                Include::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                    });
                }
                Include::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::apiserver::resources::by_plural;

    #[test]
    fn durations_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(400 * 86400), "400d");
    }

    #[test]
    fn secret_rows() {
        let o = json!({"metadata": {"name": "s", "namespace": "x", "creationTimestamp": "2020-01-01T00:00:00Z"},
                       "type": "Opaque", "data": {"a": "", "b": ""}});
        let t = render(
            by_plural("secrets").unwrap(),
            &[o],
            json!({}),
            Include::Metadata,
        );
        assert_eq!(t["rows"][0]["cells"][0], "s");
        assert_eq!(t["rows"][0]["cells"][1], "Opaque");
        assert_eq!(t["rows"][0]["cells"][2], 2);
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "x");
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }
}
