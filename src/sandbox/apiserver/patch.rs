//! The four patch types of the Kubernetes API: JSON merge patch (RFC 7386), JSON patch
//! (RFC 6902), strategic merge patch, and server-side apply.
//!
//! Strategic merge: maps merge recursively, `null` deletes, lists named like the
//! Kubernetes lists with a merge key (`containers`, `env`, `volumes`, … by `name`;
//! `ports` by `containerPort`/`port`; `conditions` by `type`; …) merge element by element,
//! other lists are replaced; the directives `$patch: replace|delete`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<list>` are honoured and `$setElementOrder/<list>` is accepted
//! (ordering is not changed). Server-side apply merges the applied configuration the same
//! way (field ownership is recorded, conflicts between managers are not detected).

use serde_json::{Map, Value};

/// A patch's body type, from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`.
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header.
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let mime = ct.split(';').next().unwrap_or_default().trim();
        match mime {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Parse a patch body: JSON, or YAML for server-side apply.
pub fn parse_body(ty: PatchType, body: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) if ty != PatchType::Apply => Err(format!("the patch is not valid JSON: {e}")),
        Err(_) => {
            let text = std::str::from_utf8(body).map_err(|_| "the patch is not UTF-8")?;
            serde_saphyr::from_str(text).map_err(|e| {
                let why = crate::redact::message(&e.without_snippet().to_string(), text);
                format!("the patch is not valid YAML: {why}")
            })
        }
    }
}

/// Apply a parsed patch of type `ty` to `doc`.
pub fn apply(ty: PatchType, doc: &mut Value, patch: &Value) -> Result<(), String> {
    match ty {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err("a merge patch must be a JSON object".into());
            }
            json_patch::merge(doc, patch);
            Ok(())
        }
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| format!("the JSON patch is malformed: {e}"))?;
            json_patch::patch(doc, &ops).map_err(|e| e.to_string())
        }
        PatchType::Strategic | PatchType::Apply => {
            if !patch.is_object() {
                return Err("a strategic merge patch must be a JSON object".into());
            }
            strategic(doc, patch);
            Ok(())
        }
    }
}

/// The merge key of a list field, judged by the list's name and its elements.
fn merge_key(field: &str, elements: &[Value]) -> Option<&'static str> {
    let candidates: &[&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets"
        | "secrets"
        | "resourceClaims"
        | "readinessGates"
        | "webhooks" => &["name"],
        "ports" => &["containerPort", "port"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "hostAliases" => &["ip"],
        "volumeDevices" => &["devicePath"],
        "topologySpreadConstraints" => &["topologyKey"],
        _ => return None,
    };
    candidates
        .iter()
        .copied()
        .find(|k| elements.iter().all(|e| e.get(k).is_some()))
        .or(candidates.first().copied())
}

/// Lists of scalars that Kubernetes merges as sets (`patchStrategy: merge`).
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge of `patch` into `doc`.
pub fn strategic(doc: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *doc = Value::Object(strip_directives(p));
            return;
        }
        Some("delete") => {
            *doc = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let Some(d) = doc.as_object_mut() else { return };
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(have)), Some(gone)) = (d.get_mut(list), v.as_array()) {
                have.retain(|x| !gone.contains(x));
            }
            continue;
        }
        if v.is_null() {
            d.remove(k);
            continue;
        }
        match (d.get_mut(k), v) {
            (Some(cur @ Value::Object(_)), Value::Object(_)) => strategic(cur, v),
            (Some(Value::Array(cur)), Value::Array(new)) => merge_list(k, cur, new),
            _ => {
                let mut fresh = Value::Null;
                strategic_fresh(&mut fresh, v);
                d.insert(k.clone(), fresh);
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        d.retain(|k, _| keep.contains(&k.as_str()));
    }
}

/// A value new to the document: directives removed, nulls dropped.
fn strategic_fresh(slot: &mut Value, v: &Value) {
    match v {
        Value::Object(m) => {
            let mut out = Value::Object(Map::new());
            strategic(&mut out, &Value::Object(m.clone()));
            *slot = out;
        }
        Value::Array(items) => {
            *slot = Value::Array(
                items
                    .iter()
                    .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                    .map(|i| {
                        let mut s = Value::Null;
                        strategic_fresh(&mut s, i);
                        s
                    })
                    .collect(),
            );
        }
        other => *slot = other.clone(),
    }
}

fn strip_directives(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn merge_list(field: &str, cur: &mut Vec<Value>, new: &[Value]) {
    if is_set_list(field) {
        for v in new {
            if !cur.contains(v) {
                cur.push(v.clone());
            }
        }
        return;
    }
    let replace = new
        .iter()
        .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"));
    let Some(key) = merge_key(field, new).filter(|_| !replace) else {
        let mut fresh = Value::Null;
        strategic_fresh(&mut fresh, &Value::Array(new.to_vec()));
        if let Value::Array(items) = fresh {
            *cur = items;
        }
        return;
    };
    for item in new {
        let id = item.get(key);
        let pos = id.and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut cur[i], item),
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_fresh(&mut fresh, item);
                cur.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut d = json!({"spec": {"template": {"metadata": {"annotations": {"a": "1"}},
            "spec": {"containers": [{"name": "app", "image": "v1", "env": [{"name": "X", "value": "1"}]},
                                    {"name": "side", "image": "s1"}]}}}});
        strategic(
            &mut d,
            &json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "now"}},
                "spec": {"containers": [{"name": "app", "image": "v2", "env": [{"name": "Y", "value": "2"}]},
                                        {"name": "side", "$patch": "delete"}]}}}}),
        );
        let t = &d["spec"]["template"];
        assert_eq!(
            t["metadata"]["annotations"],
            json!({"a": "1", "kubectl.kubernetes.io/restartedAt": "now"})
        );
        assert_eq!(
            t["spec"]["containers"],
            json!([{"name": "app", "image": "v2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]}])
        );
    }

    #[test]
    fn strategic_directives_and_nulls() {
        let mut d = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
                           "data": {"k": "v", "gone": "1"}, "args": ["a", "b"]});
        strategic(
            &mut d,
            &json!({"metadata": {"labels": {"$patch": "replace", "c": "3"}, "finalizers": ["y"]},
                    "data": {"gone": null, "ca.crt": "NEW"}, "args": ["c"],
                    "$setElementOrder/args": ["c"]}),
        );
        assert_eq!(
            d,
            json!({"metadata": {"labels": {"c": "3"}, "finalizers": ["x", "y"]},
                   "data": {"k": "v", "ca.crt": "NEW"}, "args": ["c"]})
        );
        let mut s = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        strategic(
            &mut s,
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        );
        assert_eq!(s, json!({"spec": {"strategy": {"type": "Recreate"}}}));
    }

    #[test]
    fn merge_and_json_patches() {
        let mut d = json!({"a": {"b": 1, "c": 2}});
        apply(PatchType::Merge, &mut d, &json!({"a": {"b": null, "d": 3}})).unwrap();
        assert_eq!(d, json!({"a": {"c": 2, "d": 3}}));
        apply(
            PatchType::Json,
            &mut d,
            &json!([{"op": "replace", "path": "/a/c", "value": 5}, {"op": "add", "path": "/e", "value": []}]),
        )
        .unwrap();
        assert_eq!(d, json!({"a": {"c": 5, "d": 3}, "e": []}));
        assert!(
            apply(
                PatchType::Json,
                &mut d,
                &json!([{"op": "test", "path": "/a/c", "value": 1}])
            )
            .is_err()
        );
        assert_eq!(d["a"]["c"], 5, "a failed JSON patch changes nothing");
        assert_eq!(
            parse_body(
                PatchType::Apply,
                b"apiVersion: v1\nkind: ConfigMap\ndata:\n  k: v\n"
            )
            .unwrap(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}})
        );
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::Strategic)
        );
    }
}
