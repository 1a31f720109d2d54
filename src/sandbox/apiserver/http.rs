//! Routing and the verbs: paths like a real kube-apiserver's, JSON in and out, errors as
//! `Status` objects. Every authenticated user may do everything (no RBAC: the sandbox
//! authorizes like `--authorization-mode=AlwaysAllow`).

use super::discovery;
use super::faults::Faults;
use super::patch::{self, PatchType};
use super::resources::{self, Resource};
use super::select::Selector;
use super::status::ApiError;
use super::store::{self, Change, EventKind, Key, Manager, Store, StoreError, WriteOptions};
use super::table;
use super::tls::Auth;
use base64::Engine;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};

/// A response body: a whole document, or a watch stream.
pub type Body = BoxBody<Bytes, Infallible>;
/// A response.
pub type Response = hyper::Response<Body>;

/// The largest request body accepted (a real server's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// What every request handler shares.
pub struct Ctx {
    /// The objects.
    pub store: Store,
    /// Injected faults.
    pub faults: Faults,
    /// `host:port` clients reach the server at (for `/api`).
    pub address: String,
    /// Becomes `true` when the server shuts down (ends watches).
    pub stop: watch::Receiver<bool>,
}

fn respond(code: u16, content_type: &str, body: Vec<u8>) -> Response {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_response(code: u16, v: &Value) -> Response {
    respond(
        code,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status())
}

/// The answer for a request that brought no acceptable client certificate.
pub fn unauthorized() -> Response {
    error_response(&ApiError::unauthorized())
}

/// Decode `%XX` escapes of a path segment.
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request's query, first value of each parameter.
struct Query(HashMap<String, Vec<String>>);

impl Query {
    fn parse(q: Option<&str>) -> Self {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
            m.entry(k.into_owned()).or_default().push(v.into_owned());
        }
        Query(m)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(String::as_str)
    }
    fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or_default()
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("1" | "true" | "True"))
    }
}

/// Where a resource request points.
struct Target {
    res: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn key(&self) -> Key {
        (
            self.namespace.clone().unwrap_or_default(),
            self.name.clone().unwrap_or_default(),
        )
    }
    fn what(&self) -> String {
        let mut w = store::qualified(self.res);
        if let Some(n) = &self.name {
            w = format!("{w}/{n}");
        }
        if let Some(s) = &self.sub {
            w = format!("{w}/{s}");
        }
        w
    }
}

fn route(group: &str, version: &str, rest: &[String]) -> Result<Target, ApiError> {
    let find = |plural: &str| resources::find(group, version, plural);
    let none = || ApiError::no_route(&format!("{group}/{version}/{}", rest.join("/")));
    let t = |res, ns: Option<&String>, name: Option<&String>, sub: Option<&String>| Target {
        res,
        namespace: ns.cloned(),
        name: name.cloned(),
        sub: sub.cloned(),
    };
    match rest {
        [ns_word, ns, plural, tail @ ..]
            if ns_word == "namespaces"
                && find(plural).is_some_and(|r| r.namespaced)
                && tail.len() <= 2 =>
        {
            let res = find(plural).ok_or_else(none)?;
            Ok(t(res, Some(ns), tail.first(), tail.get(1)))
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let res = find(plural).ok_or_else(none)?;
            if res.namespaced && !tail.is_empty() {
                return Err(none());
            }
            Ok(t(res, None, tail.first(), tail.get(1)))
        }
        _ => Err(none()),
    }
}

fn manager_name(q: &Query, user_agent: &str) -> String {
    q.get("fieldManager")
        .filter(|m| !m.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| {
            let first = user_agent.split('/').next().unwrap_or_default().trim();
            if first.is_empty() {
                "unknown".into()
            } else {
                first.to_string()
            }
        })
}

fn continue_token(key: &Key) -> String {
    let raw = serde_json::to_vec(&json!([key.0, key.1])).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn parse_continue(token: &str) -> Result<Key, ApiError> {
    let bad = || ApiError::bad_request(format!("invalid continue token {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let (ns, name): (String, String) = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((ns, name))
}

fn parse_object(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let mime = content_type.split(';').next().unwrap_or_default().trim();
    let v: Value = match mime {
        "" | "application/json" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?,
        "application/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
            serde_saphyr::from_str(text).map_err(|e| {
                let why = crate::redact::message(&e.without_snippet().to_string(), text);
                ApiError::bad_request(format!("the body is not valid YAML: {why}"))
            })?
        }
        super::protobuf::CONTENT_TYPE => super::protobuf::decode(body).map_err(|e| {
            let mut err = ApiError::unsupported_media_type(super::protobuf::CONTENT_TYPE);
            err.message = format!("{}: {e}", err.message);
            err
        })?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

/// Make the body's namespace and name agree with the path, as a real server insists.
fn align_identity(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    let meta = obj
        .as_object_mut()
        .map(|m| m.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
    if let Some(ns) = &t.namespace {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), Value::String(ns.clone()));
            }
        }
    }
    if let Some(name) = &t.name {
        match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                meta.insert("name".into(), Value::String(name.clone()));
            }
        }
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != t.res.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind {kind:?} does not match the resource {} (kind {})",
            t.res.plural, t.res.kind
        )));
    }
    Ok(())
}

/// A CSR names who asked for it: the server fills `spec.username` and `spec.groups`.
fn stamp_requestor(obj: &mut Value, auth: &Auth) {
    let Auth::User { name, groups } = auth else {
        return;
    };
    let mut groups = groups.clone();
    groups.push("system:authenticated".into());
    if let Some(m) = obj.as_object_mut() {
        let spec = m.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.insert("username".into(), json!(name));
            spec.insert("groups".into(), json!(groups));
        }
    }
}

fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The object a subresource write leaves: `old` with only the subresource's part taken
/// from `new`; for a main-resource write of a kind with a status subresource, `new`
/// with `old`'s status.
fn merge_sub(res: &Resource, sub: Option<&str>, old: &Value, new: Value) -> Value {
    let take = |mut into: Value, from: &Value, ptr: &str| {
        let (parent, field) = ptr.rsplit_once('/').unwrap_or(("", ptr));
        let value = from.pointer(ptr).cloned();
        if into.pointer(parent).is_none()
            && value.is_some()
            && let Some(m) = into.as_object_mut()
        {
            m.insert(parent.trim_start_matches('/').into(), json!({}));
        }
        if let Some(obj) = into.pointer_mut(parent).and_then(Value::as_object_mut) {
            match value {
                Some(v) => {
                    obj.insert(field.into(), v);
                }
                None => {
                    obj.remove(field);
                }
            }
        }
        into
    };
    match sub {
        Some("status") => stamp_conditions(take(old.clone(), &new, "/status"), old),
        Some("approval") => stamp_conditions(take(old.clone(), &new, "/status/conditions"), old),
        _ if res.has_status() => take(new, old, "/status"),
        _ => new,
    }
}

/// New or changed `status.conditions` get `lastTransitionTime` now when unset, as the
/// server defaults it (CSR approvals).
fn stamp_conditions(mut obj: Value, old: &Value) -> Value {
    let before = old
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(conds) = obj
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    {
        for c in conds {
            let known = before
                .iter()
                .any(|b| b.get("type") == c.get("type") && b.get("status") == c.get("status"));
            if !known
                && let Some(m) = c.as_object_mut()
                && !m.contains_key("lastTransitionTime")
            {
                m.insert("lastTransitionTime".into(), json!(super::ids::timestamp()));
            }
        }
    }
    obj
}

/// Handle one authenticated request.
pub async fn handle(ctx: &Ctx, auth: &Auth, req: hyper::Request<Incoming>) -> Response {
    if !matches!(auth, Auth::User { .. }) {
        return unauthorized();
    }
    match handle_inner(ctx, auth, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

async fn handle_inner(
    ctx: &Ctx,
    auth: &Auth,
    req: hyper::Request<Incoming>,
) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let header = |h: hyper::header::HeaderName| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let accept = header(hyper::header::ACCEPT);
    let content_type = header(hyper::header::CONTENT_TYPE);
    let user_agent = header(hyper::header::USER_AGENT);
    let q = Query::parse(uri.query());
    let segs: Vec<String> = uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    // Health, version and discovery: never faulted.
    if let Some(answer) = discovery_answer(ctx, &method, &seg, &accept, uri.path()) {
        return answer;
    }
    let target = match seg.as_slice() {
        ["api", "v1", ..] => route("", "v1", &segs[2..])?,
        ["apis", g, v, ..] => route(g, v, &segs[3..])?,
        _ => return Err(ApiError::no_route(uri.path())),
    };
    // Faults, before doing anything.
    if !ctx.faults.latency.is_zero() {
        tokio::time::sleep(ctx.faults.latency).await;
    }
    if ctx.faults.roll_error() {
        return Err(ApiError::injected_error());
    }
    if is_write(&method) && ctx.faults.roll_conflict() {
        return Err(ApiError::injected_conflict());
    }
    let body = if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        Limited::new(req.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| ApiError::too_large())?
            .to_bytes()
    } else {
        Bytes::new()
    };
    let request = ObjectRequest {
        method: &method,
        path: uri.path(),
        target: &target,
        accept: &accept,
        content_type: &content_type,
        body: &body,
        dry_run: dry_run(&q)?,
        manager: manager_name(&q, &user_agent),
        q: &q,
    };
    request.answer(ctx, auth)
}

/// `?dryRun=All` (the one value the API server supports), or none.
fn dry_run(q: &Query) -> Result<bool, ApiError> {
    match q.all("dryRun") {
        [] => Ok(false),
        v if v.iter().all(|x| x == "All") => Ok(true),
        v => Err(ApiError::bad_request(format!(
            "dryRun: Unsupported value: {:?}: supported values: \"All\"",
            v.join(",")
        ))),
    }
}

/// Health, version, discovery and OpenAPI (`None`: not one of those paths).
fn discovery_answer(
    ctx: &Ctx,
    method: &Method,
    seg: &[&str],
    accept: &str,
    path: &str,
) -> Option<Result<Response, ApiError>> {
    let method = method.clone();
    let answer = |r: Result<Response, ApiError>| Some(r);
    match seg {
        ["healthz" | "livez" | "readyz", ..] => answer(Ok(respond(
            200,
            "text/plain; charset=utf-8",
            b"ok".to_vec(),
        ))),
        ["version"] => answer(Ok(json_response(200, &discovery::version()))),
        ["api"] if method == Method::GET => answer(Ok(if discovery::wants_aggregated(accept) {
            respond(
                200,
                discovery::AGGREGATED,
                serde_json::to_vec(&discovery::aggregated(true)).unwrap_or_default(),
            )
        } else {
            json_response(200, &discovery::api_versions(&ctx.address))
        })),
        ["apis"] if method == Method::GET => answer(Ok(if discovery::wants_aggregated(accept) {
            respond(
                200,
                discovery::AGGREGATED,
                serde_json::to_vec(&discovery::aggregated(false)).unwrap_or_default(),
            )
        } else {
            json_response(200, &discovery::group_list())
        })),
        ["api", "v1"] if method == Method::GET => answer(
            discovery::resource_list("", "v1")
                .map(|v| json_response(200, &v))
                .ok_or_else(|| ApiError::no_route(path)),
        ),
        ["apis", g] if method == Method::GET => answer(
            discovery::group(g)
                .map(|v| json_response(200, &v))
                .ok_or_else(|| ApiError::no_route(path)),
        ),
        ["apis", g, v] if method == Method::GET => answer(
            discovery::resource_list(g, v)
                .map(|v| json_response(200, &v))
                .ok_or_else(|| ApiError::no_route(path)),
        ),
        ["openapi", "v3"] if method == Method::GET => {
            answer(Ok(json_response(200, &discovery::openapi_v3_index())))
        }
        ["openapi", "v3", "api", v] if method == Method::GET => answer(
            discovery::openapi_v3("", v)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::no_route(path)),
        ),
        ["openapi", "v3", "apis", g, v] if method == Method::GET => answer(
            discovery::openapi_v3(g, v)
                .map(|d| json_response(200, &d))
                .ok_or_else(|| ApiError::no_route(path)),
        ),
        ["openapi", ..] => answer(Err(ApiError::no_route(path))),
        _ => None,
    }
}

/// A request for objects of one resource: a collection or one object (or its
/// subresource).
struct ObjectRequest<'a> {
    method: &'a Method,
    path: &'a str,
    target: &'a Target,
    accept: &'a str,
    content_type: &'a str,
    body: &'a Bytes,
    dry_run: bool,
    manager: String,
    q: &'a Query,
}

impl ObjectRequest<'_> {
    fn answer(self, ctx: &Ctx, auth: &Auth) -> Result<Response, ApiError> {
        let (method, target) = (self.method, self.target);
        match (method, &target.name, &target.sub) {
            (&Method::GET, None, _) if self.q.flag("watch") => {
                watch_list(ctx, target, self.q, self.accept)
            }
            (&Method::GET, None, _) => list(ctx, target, self.q, self.accept),
            (&Method::POST, None, _) => self.create(ctx, auth),
            (&Method::DELETE, None, _) => delete_collection(ctx, target, self.q, self.dry_run),
            (_, None, _) => Err(ApiError::method_not_allowed(
                method.as_str(),
                &target.what(),
            )),
            (_, Some(_), Some(sub)) if !target.res.subresources.contains(&sub.as_str()) => {
                Err(ApiError::no_route(self.path))
            }
            (&Method::GET, Some(name), _) => self.get(ctx, name),
            (&Method::PUT, Some(_), sub) => self.replace(ctx, sub.clone()),
            (&Method::PATCH, Some(_), sub) => patch_object(
                ctx,
                target,
                sub.as_deref(),
                self.content_type,
                self.body,
                self.q,
                self.manager,
                self.dry_run,
            ),
            (&Method::DELETE, Some(name), None) => self.delete(ctx, name),
            _ => Err(ApiError::method_not_allowed(
                method.as_str(),
                &target.what(),
            )),
        }
    }

    fn create(&self, ctx: &Ctx, auth: &Auth) -> Result<Response, ApiError> {
        let target = self.target;
        let mut obj = parse_object(self.content_type, self.body)?;
        align_identity(target, &mut obj)?;
        if target.res.plural == "certificatesigningrequests" {
            stamp_requestor(&mut obj, auth);
        }
        let opts = WriteOptions {
            manager: Some(Manager::update(&self.manager)),
            dry_run: self.dry_run,
        };
        let created = ctx.store.create_with(target.res.plural, obj, &opts)?;
        Ok(json_response(201, &created))
    }

    fn get(&self, ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
        let target = self.target;
        let obj = ctx
            .store
            .get(target.res.plural, target.namespace.as_deref(), name)
            .ok_or_else(|| {
                ApiError::from(StoreError::NotFound {
                    resource: store::qualified(target.res),
                    namespace: target.namespace.clone(),
                    name: name.to_string(),
                })
            })?;
        if table::wanted(self.accept) {
            let meta = json!({"resourceVersion": rv_of(&obj).unwrap_or_default()});
            let include = table::Include::parse(self.q.get("includeObject"));
            return Ok(json_response(
                200,
                &table::render(target.res, &[obj], meta, include),
            ));
        }
        Ok(json_response(200, &obj))
    }

    /// PUT: the object (or its subresource) replaced, when its resourceVersion, if it
    /// names one, is current.
    fn replace(&self, ctx: &Ctx, sub: Option<String>) -> Result<Response, ApiError> {
        let target = self.target;
        let mut obj = parse_object(self.content_type, self.body)?;
        align_identity(target, &mut obj)?;
        let mut m = Manager::update(&self.manager);
        m.subresource = sub.clone();
        let opts = WriteOptions {
            manager: Some(m),
            dry_run: self.dry_run,
        };
        let updated = write_checked(ctx, target, sub.as_deref(), &opts, |_| Ok(obj))?;
        Ok(json_response(200, &updated))
    }

    fn delete(&self, ctx: &Ctx, name: &str) -> Result<Response, ApiError> {
        let target = self.target;
        let opts = WriteOptions {
            manager: None,
            dry_run: self.dry_run,
        };
        let gone =
            ctx.store
                .delete_with(target.res.plural, target.namespace.as_deref(), name, &opts)?;
        let mut details = json!({
            "name": name,
            "kind": target.res.plural,
            "uid": gone.pointer("/metadata/uid").cloned().unwrap_or(Value::Null),
        });
        if !target.res.group.is_empty() {
            details["group"] = json!(target.res.group);
        }
        Ok(json_response(
            200,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
        ))
    }
}

/// Replace an object (or its subresource) with what `next` makes of it, refused as a
/// conflict when the new object names a resourceVersion that is not the current one.
fn write_checked(
    ctx: &Ctx,
    target: &Target,
    sub: Option<&str>,
    opts: &WriteOptions,
    next: impl FnOnce(&Value) -> Result<Value, StoreError>,
) -> Result<Value, ApiError> {
    let (res, key) = (target.res, target.key());
    Ok(ctx.store.mutate_with(
        res.plural,
        target.namespace.as_deref(),
        &key.1,
        opts,
        |cur| {
            let new = next(cur)?;
            if let Some(want) = rv_of(&new)
                && rv_of(cur) != Some(want)
            {
                return Err(store::conflict(res, &key));
            }
            *cur = merge_sub(res, sub, cur, new);
            Ok(())
        },
    )?)
}

#[allow(clippy::too_many_arguments)]
fn patch_object(
    ctx: &Ctx,
    target: &Target,
    sub: Option<&str>,
    content_type: &str,
    body: &[u8],
    q: &Query,
    manager: String,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let ty = PatchType::from_content_type(content_type)
        .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    let p = patch::parse_body(ty, body).map_err(ApiError::bad_request)?;
    let res = target.res;
    let key = target.key();
    let mut m = Manager::update(&manager);
    if ty == PatchType::Apply {
        if q.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::bad_request(
                "PATCH requests with apply patch type require fieldManager",
            ));
        }
        m.operation = "Apply".into();
    }
    m.subresource = sub.map(str::to_string);
    let opts = WriteOptions {
        manager: Some(m),
        dry_run,
    };
    if ty == PatchType::Apply
        && sub.is_none()
        && ctx
            .store
            .get(res.plural, target.namespace.as_deref(), &key.1)
            .is_none()
    {
        let mut obj = p;
        align_identity(target, &mut obj)?;
        for field in ["apiVersion", "kind"] {
            if obj.get(field).is_none_or(|v| !v.is_string()) {
                return Err(ApiError::invalid(format!(
                    "{field}: Required value: an applied configuration names its {field}"
                )));
            }
        }
        let created = ctx.store.create_with(res.plural, obj, &opts)?;
        return Ok(json_response(201, &created));
    }
    let updated = write_checked(ctx, target, sub, &opts, |cur| {
        let mut new = cur.clone();
        patch::apply(ty, &mut new, &p).map_err(StoreError::Invalid)?;
        Ok(new)
    })?;
    Ok(json_response(200, &updated))
}

fn selector_of(q: &Query) -> Result<Selector, ApiError> {
    Selector::parse(
        q.get("labelSelector").unwrap_or_default(),
        q.get("fieldSelector").unwrap_or_default(),
    )
    .map_err(ApiError::bad_request)
}

fn list(ctx: &Ctx, t: &Target, q: &Query, accept: &str) -> Result<Response, ApiError> {
    let sel = selector_of(q)?;
    let limit = match q.get("limit") {
        Some(l) if !l.is_empty() => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("limit: invalid value {l:?}")))?,
        ),
        _ => None,
    };
    let after = match q.get("continue") {
        Some(c) if !c.is_empty() => Some(parse_continue(c)?),
        _ => None,
    };
    let page = ctx.store.list_page(
        t.res.plural,
        t.namespace.as_deref(),
        after.as_ref(),
        limit,
        &|o| sel.matches(o),
    );
    let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(next) = &page.next {
        meta["continue"] = json!(continue_token(next));
    }
    if table::wanted(accept) {
        let include = table::Include::parse(q.get("includeObject"));
        return Ok(json_response(
            200,
            &table::render(t.res, &page.items, meta, include),
        ));
    }
    let list = json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.res.api_version(),
        "metadata": meta,
        "items": page.items,
    });
    Ok(json_response(200, &list))
}

fn delete_collection(
    ctx: &Ctx,
    t: &Target,
    q: &Query,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let sel = selector_of(q)?;
    let page = ctx
        .store
        .list_page(t.res.plural, t.namespace.as_deref(), None, None, &|o| {
            sel.matches(o)
        });
    let opts = WriteOptions {
        manager: None,
        dry_run,
    };
    let mut gone = vec![];
    for obj in page.items {
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
        let Some(name) = obj.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        match ctx.store.delete_with(t.res.plural, ns, name, &opts) {
            Ok(o) => gone.push(o),
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", t.res.kind),
            "apiVersion": t.res.api_version(),
            "metadata": {"resourceVersion": ctx.store.resource_version().to_string()},
            "items": gone,
        }),
    ))
}

/// A streamed body fed by a channel.
struct Stream(mpsc::Receiver<Bytes>);

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn watch_line(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// `?watch=1`: the matching objects as ADDED (or, from a `resourceVersion`, those changed
/// since), then every change as it is committed. Deletions between a list and a watch
/// started from its resourceVersion are not replayed (the store keeps no history).
fn watch_list(ctx: &Ctx, t: &Target, q: &Query, accept: &str) -> Result<Response, ApiError> {
    let sel = selector_of(q)?;
    let since: Option<u64> =
        match q.get("resourceVersion") {
            None | Some("" | "0") => None,
            Some(v) => Some(v.parse().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion: invalid value {v:?}"))
            })?),
        };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), Duration::from_secs);
    let mut rx = ctx.store.watch();
    let page = ctx
        .store
        .list_page(t.res.plural, t.namespace.as_deref(), None, None, &|o| {
            sel.matches(o)
                && since
                    .is_none_or(|s| rv_of(o).and_then(|r| r.parse::<u64>().ok()).unwrap_or(0) > s)
        });
    // kubectl get --watch asks for each object as a one-row Table.
    let res = t.res;
    let include = table::Include::parse(q.get("includeObject"));
    let as_table = table::wanted(accept);
    let render = move |o: &Value| -> Value {
        if as_table {
            let meta = json!({"resourceVersion": rv_of(o).unwrap_or_default()});
            table::render(res, std::slice::from_ref(o), meta, include)
        } else {
            o.clone()
        }
    };
    let initial_kind = if since.is_none() { "ADDED" } else { "MODIFIED" };
    let initial: Vec<Bytes> = page
        .items
        .iter()
        .map(|o| watch_line(initial_kind, &render(o)))
        .collect();
    let seen = page.resource_version;
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    let plural = t.res.plural;
    let ns = t.namespace.clone();
    let mut stop = ctx.stop.clone();
    tokio::spawn(async move {
        for line in initial {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let change: Change = tokio::select! {
                _ = &mut deadline => return,
                _ = stop.changed() => return,
                r = rx.recv() => match r {
                    Ok(c) => c,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::expired("the watch fell behind; list again");
                        let _ = tx.send(watch_line("ERROR", &e.status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            if change.event.resource != plural
                || change.resource_version <= seen
                || ns
                    .as_ref()
                    .is_some_and(|n| change.event.namespace.as_ref() != Some(n))
                || !sel.matches(&change.object)
            {
                continue;
            }
            let kind = match change.event.kind {
                EventKind::Added => "ADDED",
                EventKind::Modified => "MODIFIED",
                EventKind::Deleted => "DELETED",
            };
            if tx
                .send(watch_line(kind, &render(&change.object)))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut r = hyper::Response::new(Stream(body_rx).boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let t = route("", "v1", &s(&["namespaces", "x", "configmaps", "c"])).unwrap();
        assert_eq!(
            (t.res.plural, t.namespace.as_deref(), t.name.as_deref()),
            ("configmaps", Some("x"), Some("c"))
        );
        let t = route("", "v1", &s(&["namespaces", "x"])).unwrap();
        assert_eq!(
            (t.res.plural, t.namespace, t.name.as_deref()),
            ("namespaces", None, Some("x"))
        );
        let t = route("", "v1", &s(&["namespaces", "x", "status"])).unwrap();
        assert_eq!(
            (t.name.as_deref(), t.sub.as_deref()),
            (Some("x"), Some("status"))
        );
        let t = route("", "v1", &s(&["secrets"])).unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(route("", "v1", &s(&["secrets", "x"])).is_err());
        let t = route(
            "apps",
            "v1",
            &s(&["namespaces", "x", "deployments", "d", "status"]),
        )
        .unwrap();
        assert_eq!(t.sub.as_deref(), Some("status"));
        assert!(route("apps", "v1", &s(&["configmaps"])).is_err());
        assert_eq!(percent_decode("system%3Anode%3Aw-1"), "system:node:w-1");
        let k = ("ns".to_string(), "n".to_string());
        assert_eq!(parse_continue(&continue_token(&k)).unwrap(), k);
    }

    #[test]
    fn subresource_writes_keep_their_part() {
        let d = resources::by_plural("deployments").unwrap();
        let old = json!({"spec": {"replicas": 1}, "status": {"ready": 1}});
        let new = json!({"spec": {"replicas": 2}, "status": {"ready": 5}});
        assert_eq!(
            merge_sub(d, None, &old, new.clone()),
            json!({"spec": {"replicas": 2}, "status": {"ready": 1}})
        );
        assert_eq!(
            merge_sub(d, Some("status"), &old, new),
            json!({"spec": {"replicas": 1}, "status": {"ready": 5}})
        );
        let csr = resources::by_plural("certificatesigningrequests").unwrap();
        let old = json!({"spec": {"x": 1}});
        let new = json!({"spec": {"x": 2}, "status": {"conditions": [{"type": "Approved"}], "certificate": "no"}});
        let approved = merge_sub(csr, Some("approval"), &old, new);
        assert_eq!(approved["spec"], json!({"x": 1}));
        assert_eq!(approved["status"]["conditions"][0]["type"], "Approved");
        assert!(approved["status"]["conditions"][0]["lastTransitionTime"].is_string());
        assert!(approved["status"].get("certificate").is_none());
    }
}
