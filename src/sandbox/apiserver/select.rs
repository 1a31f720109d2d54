//! Label and field selectors, as `labelSelector=` and `fieldSelector=` of a list.
//!
//! Labels: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists), `!k`.
//! Fields: `path=v`, `path==v`, `path!=v` where `path` is a dotted path into the object
//! (`metadata.name`, `metadata.namespace`, `type`, `spec.nodeName`, `status.phase`, …);
//! a missing field reads as `""`.

use serde_json::Value;

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

/// Split at commas outside parentheses.
fn split_top(text: &str) -> Vec<&str> {
    let mut out = vec![];
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn check_key(key: &str, whole: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: {whole:?}: invalid key {key:?}"
        ))
    }
}

fn set_of(rest: &str, whole: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: {whole:?}: expected (values)"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_label(req: &str) -> Result<Requirement, String> {
    if let Some(k) = req.strip_prefix('!') {
        return Ok(Requirement::NotExists(check_key(k.trim(), req)?));
    }
    for (op, ctor) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = req.split_once(op) {
            return Ok(ctor(check_key(k.trim(), req)?, v.trim().to_string()));
        }
    }
    let mut words = req.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    if rest.is_empty() {
        return Ok(Requirement::Exists(check_key(key, req)?));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(check_key(key, req)?, set_of(set, req)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(check_key(key, req)?, set_of(set, req)?));
    }
    Err(format!("unable to parse requirement: {req:?}"))
}

fn parse_field(req: &str) -> Result<Requirement, String> {
    for (op, ctor) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = req.split_once(op) {
            return Ok(ctor(check_key(k.trim(), req)?, v.trim().to_string()));
        }
    }
    Err(format!(
        "invalid selector: {req:?}; a field selector is FIELD=VALUE, FIELD==VALUE or FIELD!=VALUE"
    ))
}

fn holds(req: &Requirement, get: &dyn Fn(&str) -> Option<String>) -> bool {
    match req {
        Requirement::Equals(k, v) => get(k).as_deref() == Some(v.as_str()),
        Requirement::NotEquals(k, v) => get(k).as_deref() != Some(v.as_str()),
        Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
        Requirement::Exists(k) => get(k).is_some(),
        Requirement::NotExists(k) => get(k).is_none(),
    }
}

/// A field of `obj` at a dotted path, as text (`""` when absent).
fn field(obj: &Value, path: &str) -> String {
    let mut v = obj;
    for part in path.split('.') {
        match v.get(part) {
            Some(x) => v = x,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

impl Selector {
    /// Parse a `labelSelector` and a `fieldSelector` (either may be empty).
    pub fn parse(labels: &str, fields: &str) -> Result<Selector, String> {
        Ok(Selector {
            labels: split_top(labels)
                .into_iter()
                .map(parse_label)
                .collect::<Result<_, _>>()?,
            fields: split_top(fields)
                .into_iter()
                .map(parse_field)
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let label = |k: &str| {
            labels
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let value = |k: &str| Some(field(obj, k));
        self.labels.iter().all(|r| holds(r, &label)) && self.fields.iter().all(|r| holds(r, &value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_fields() {
        let o = json!({"metadata": {"name": "a", "namespace": "x", "labels": {"app": "web", "tier": "fe"}},
                       "type": "kubernetes.io/service-account-token"});
        let yes = |l: &str, f: &str| Selector::parse(l, f).unwrap().matches(&o);
        assert!(yes("", ""));
        assert!(yes("app=web", ""));
        assert!(yes("app==web,tier", ""));
        assert!(!yes("app!=web", ""));
        assert!(yes("app in (web, db),tier notin (be)", ""));
        assert!(!yes("app notin (web)", ""));
        assert!(yes("!missing", ""));
        assert!(!yes("!app", ""));
        assert!(yes("missing notin (a)", ""));
        assert!(!yes("missing in (a)", ""));
        assert!(yes("", "metadata.name=a,metadata.namespace==x"));
        assert!(yes("", "type=kubernetes.io/service-account-token"));
        assert!(!yes("", "type!=kubernetes.io/service-account-token"));
        assert!(yes("", "spec.nodeName="));
        assert!(!yes("", "spec.nodeName=w-1"));
        assert!(Selector::parse("app in web", "").is_err());
        assert!(Selector::parse("", "metadata.name").is_err());
    }
}
