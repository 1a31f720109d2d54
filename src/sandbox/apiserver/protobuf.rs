//! Request bodies in `application/vnd.kubernetes.protobuf`, turned into the JSON the rest
//! of the server works with. Since Kubernetes 1.31, client-go's typed clients send
//! protobuf for built-in kinds, so `kubectl create namespace|configmap|secret|
//! serviceaccount` and `kubectl certificate approve|deny` do. Only those kinds are
//! decoded (fields this table does not name are skipped); others get 415, and every
//! answer is JSON, which such clients also accept.

use base64::Engine;
use serde_json::{Map, Value};

/// The content type.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The 4-byte prefix of every Kubernetes protobuf document.
const MAGIC: &[u8] = b"k8s\0";

/// How a field's value reads.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    /// Bytes, shown base64 in JSON.
    Bytes,
    Int,
    Bool,
    /// `meta.v1.Time`, shown RFC 3339.
    Time,
    /// Raw JSON bytes (`FieldsV1`).
    RawJson,
    Msg(&'static [Field]),
    /// `map<string, string>`.
    MapStr,
    /// `map<string, bytes>`.
    MapBytes,
    /// `map<string, ExtraValue>` where ExtraValue is `repeated string items = 1`.
    MapStrList,
}

/// A field: number, JSON name, kind, repeated.
type Field = (u32, &'static str, Kind, bool);

const OWNER_REFERENCE: &[Field] = &[
    (1, "kind", Kind::Str, false),
    (3, "name", Kind::Str, false),
    (4, "uid", Kind::Str, false),
    (5, "apiVersion", Kind::Str, false),
    (6, "controller", Kind::Bool, false),
    (7, "blockOwnerDeletion", Kind::Bool, false),
];

const MANAGED_FIELDS: &[Field] = &[
    (1, "manager", Kind::Str, false),
    (2, "operation", Kind::Str, false),
    (3, "apiVersion", Kind::Str, false),
    (4, "time", Kind::Time, false),
    (6, "fieldsType", Kind::Str, false),
    (7, "fieldsV1", Kind::RawJson, false),
    (8, "subresource", Kind::Str, false),
];

const OBJECT_META: &[Field] = &[
    (1, "name", Kind::Str, false),
    (2, "generateName", Kind::Str, false),
    (3, "namespace", Kind::Str, false),
    (5, "uid", Kind::Str, false),
    (6, "resourceVersion", Kind::Str, false),
    (7, "generation", Kind::Int, false),
    (8, "creationTimestamp", Kind::Time, false),
    (11, "labels", Kind::MapStr, false),
    (12, "annotations", Kind::MapStr, false),
    (13, "ownerReferences", Kind::Msg(OWNER_REFERENCE), true),
    (14, "finalizers", Kind::Str, true),
    (17, "managedFields", Kind::Msg(MANAGED_FIELDS), true),
];

const NAMESPACE: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META), false),
    (
        2,
        "spec",
        Kind::Msg(&[(1, "finalizers", Kind::Str, true)]),
        false,
    ),
    (
        3,
        "status",
        Kind::Msg(&[(1, "phase", Kind::Str, false)]),
        false,
    ),
];

const CONFIG_MAP: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META), false),
    (2, "data", Kind::MapStr, false),
    (3, "binaryData", Kind::MapBytes, false),
    (4, "immutable", Kind::Bool, false),
];

const SECRET: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META), false),
    (2, "data", Kind::MapBytes, false),
    (3, "type", Kind::Str, false),
    (4, "stringData", Kind::MapStr, false),
    (5, "immutable", Kind::Bool, false),
];

const OBJECT_REFERENCE: &[Field] = &[
    (1, "kind", Kind::Str, false),
    (2, "namespace", Kind::Str, false),
    (3, "name", Kind::Str, false),
    (4, "uid", Kind::Str, false),
    (5, "apiVersion", Kind::Str, false),
    (6, "resourceVersion", Kind::Str, false),
    (7, "fieldPath", Kind::Str, false),
];

const SERVICE_ACCOUNT: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META), false),
    (2, "secrets", Kind::Msg(OBJECT_REFERENCE), true),
    (
        3,
        "imagePullSecrets",
        Kind::Msg(&[(1, "name", Kind::Str, false)]),
        true,
    ),
    (4, "automountServiceAccountToken", Kind::Bool, false),
];

const CSR_CONDITION: &[Field] = &[
    (1, "type", Kind::Str, false),
    (2, "reason", Kind::Str, false),
    (3, "message", Kind::Str, false),
    (4, "lastUpdateTime", Kind::Time, false),
    (5, "lastTransitionTime", Kind::Time, false),
    (6, "status", Kind::Str, false),
];

const CSR: &[Field] = &[
    (1, "metadata", Kind::Msg(OBJECT_META), false),
    (
        2,
        "spec",
        Kind::Msg(&[
            (1, "request", Kind::Bytes, false),
            (2, "username", Kind::Str, false),
            (3, "uid", Kind::Str, false),
            (4, "groups", Kind::Str, true),
            (5, "usages", Kind::Str, true),
            (6, "extra", Kind::MapStrList, false),
            (7, "signerName", Kind::Str, false),
            (8, "expirationSeconds", Kind::Int, false),
        ]),
        false,
    ),
    (
        3,
        "status",
        Kind::Msg(&[
            (1, "conditions", Kind::Msg(CSR_CONDITION), true),
            (2, "certificate", Kind::Bytes, false),
        ]),
        false,
    ),
];

fn schema(api_version: &str, kind: &str) -> Option<&'static [Field]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("certificates.k8s.io/v1", "CertificateSigningRequest") => CSR,
        _ => return None,
    })
}

/// A protobuf value on the wire.
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = u32::try_from(tag >> 3).map_err(|_| "bad field number")?;
        let wire = match tag & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "bad length")?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            t => return Err(format!("unsupported wire type {t}")),
        };
        Ok(Some((number, wire)))
    }
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_string())
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `None` for the zero time (Go's `time.Time{}`), which means unset.
fn time(b: &[u8]) -> Result<Option<Value>, String> {
    let mut r = Reader { buf: b };
    let mut secs = 0i64;
    while let Some((n, w)) = r.next()? {
        if let (1, Wire::Varint(v)) = (n, w) {
            secs = v as i64;
        }
    }
    if secs <= 0 {
        return Ok(None);
    }
    let t = time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| e.to_string())?;
    let s = t
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
        ))
        .map_err(|e| e.to_string())?;
    Ok(Some(Value::String(s)))
}

/// The (key, value) of a map entry.
fn entry(b: &[u8]) -> Result<(String, Option<&[u8]>), String> {
    let mut r = Reader { buf: b };
    let (mut k, mut v) = (String::new(), None);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(x)) => k = text(x)?,
            (2, Wire::Bytes(x)) => v = Some(x),
            _ => {}
        }
    }
    Ok((k, v))
}

fn message(b: &[u8], fields: &[Field]) -> Result<Value, String> {
    let mut out = Map::new();
    let mut r = Reader { buf: b };
    while let Some((n, w)) = r.next()? {
        let Some(&(_, name, kind, repeated)) = fields.iter().find(|f| f.0 == n) else {
            continue;
        };
        let value = match (kind, w) {
            // Go marshals unset scalars as zero values: they mean "not set".
            (Kind::Str, Wire::Bytes(x)) if x.is_empty() && !repeated => continue,
            (Kind::Int, Wire::Varint(0)) => continue,
            (Kind::Str, Wire::Bytes(x)) => Value::String(text(x)?),
            (Kind::Bytes, Wire::Bytes(x)) => Value::String(b64(x)),
            (Kind::Int, Wire::Varint(v)) => Value::from(v as i64),
            (Kind::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
            (Kind::Time, Wire::Bytes(x)) => match time(x)? {
                Some(t) => t,
                None => continue,
            },
            (Kind::RawJson, Wire::Bytes(x)) => {
                let mut raw = Reader { buf: x };
                let mut v = Value::Object(Map::new());
                while let Some((n, w)) = raw.next()? {
                    if let (1, Wire::Bytes(j)) = (n, w) {
                        v = serde_json::from_slice(j).map_err(|e| e.to_string())?;
                    }
                }
                v
            }
            (Kind::Msg(sub), Wire::Bytes(x)) => message(x, sub)?,
            (Kind::MapStr | Kind::MapBytes | Kind::MapStrList, Wire::Bytes(x)) => {
                let (k, v) = entry(x)?;
                let v = v.unwrap_or_default();
                let v = match kind {
                    Kind::MapStr => Value::String(text(v)?),
                    Kind::MapBytes => Value::String(b64(v)),
                    _ => message(v, &[(1, "items", Kind::Str, true)])?
                        .get("items")
                        .cloned()
                        .unwrap_or_else(|| Value::Array(vec![])),
                };
                let map = out.entry(name).or_insert_with(|| Value::Object(Map::new()));
                if let Some(m) = map.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            _ => return Err(format!("field {name} has an unexpected wire type")),
        };
        if repeated {
            let list = out.entry(name).or_insert_with(|| Value::Array(vec![]));
            if let Some(a) = list.as_array_mut() {
                a.push(value);
            }
        } else {
            out.insert(name.to_string(), value);
        }
    }
    Ok(Value::Object(out))
}

/// Decode a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or("not a Kubernetes protobuf document (no k8s\\0 prefix)")?;
    let mut r = Reader { buf: rest };
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), None);
    while let Some((n, w)) = r.next()? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader { buf: tm };
                while let Some((n, w)) = t.next()? {
                    match (n, w) {
                        (1, Wire::Bytes(x)) => api_version = text(x)?,
                        (2, Wire::Bytes(x)) => kind = text(x)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(x)) => raw = Some(x),
            _ => {}
        }
    }
    let fields = schema(&api_version, &kind).ok_or_else(|| {
        format!("the server reads protobuf only for Namespace, ConfigMap, Secret, ServiceAccount and CertificateSigningRequest, not {api_version} {kind}; send JSON")
    })?;
    let mut obj = message(raw.unwrap_or_default(), fields)?;
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(n: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3 | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_config_map() {
        let meta = [
            field(1, b"c1"),
            field(3, b"x"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"k"), field(2, b"v")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        assert_eq!(
            decode(&body).unwrap(),
            json!({"metadata": {"name": "c1", "namespace": "x", "labels": {"app": "web"}},
                   "data": {"k": "v"}, "apiVersion": "v1", "kind": "ConfigMap"})
        );
        assert!(decode(b"{}").is_err());
    }
}
