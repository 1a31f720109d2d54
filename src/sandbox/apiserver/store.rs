//! The API server's object store: every object as JSON in memory, indexed by resource
//! and `(namespace, name)`, persisted as an append-only JSON-lines log in
//! `DIR/apiserver/objects.jsonl` (0600: it holds Secrets, base64 `data` as the API holds
//! them).
//!
//! Durability: each write is appended to the log with one `write(2)` before it is visible,
//! so a killed server loses nothing; the log is `fdatasync`'d at most every
//! [`SYNC_INTERVAL`] (and by [`Store::sync`], [`Store::create_many`] and when the store is
//! dropped), which keeps a burst of thousands of writes cheap. Opening replays the log
//! (a torn last line is ignored) and compacts it when it is much larger than the live set.
//! One process at a time: `DIR/apiserver/lock` is locked while a store is open.

use super::ids;
use super::resources::{self, Resource};
use miette::Diagnostic;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::sync::broadcast;

/// The longest a committed write waits for its `fdatasync`.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(20);

/// Events kept for slow subscribers before they see `Lagged`.
const EVENT_CAPACITY: usize = 16 * 1024;

/// An object's key within its resource: (namespace, or `""` when cluster-scoped; name).
pub type Key = (String, String);

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created.
    Added,
    /// Updated (its resourceVersion changed).
    Modified,
    /// Deleted.
    Deleted,
}

/// One committed change.
#[derive(Clone, Debug)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The resource's plural (`configmaps`).
    pub resource: &'static str,
    /// The namespace, for namespaced resources.
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

/// One committed change with the object as it was written (for watches).
#[derive(Clone, Debug)]
pub struct Change {
    /// What happened, to which object.
    pub event: Event,
    /// The resourceVersion of the change.
    pub resource_version: u64,
    /// The object after the change (before it, for a deletion).
    pub object: Arc<Value>,
}

/// Errors of the store. Their messages are the ones a real API server puts in `Status`.
#[derive(Debug, Error, Diagnostic)]
pub enum StoreError {
    /// No such object.
    #[error("{resource} \"{name}\" not found")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::not_found),
        help("list the resource to see which objects exist")
    )]
    NotFound {
        /// Resource, qualified by group (`deployments.apps`).
        resource: String,
        /// Namespace, for namespaced resources.
        namespace: Option<String>,
        /// Name.
        name: String,
    },
    /// An object with that name exists.
    #[error("{resource} \"{name}\" already exists")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::already_exists),
        help("update or delete the existing object instead")
    )]
    AlreadyExists {
        /// Resource, qualified by group.
        resource: String,
        /// Namespace, for namespaced resources.
        namespace: Option<String>,
        /// Name.
        name: String,
    },
    /// The write was based on an older resourceVersion.
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    #[diagnostic(
        code(trustform::sandbox::apiserver::conflict),
        help("read the object again and retry the change on its latest version")
    )]
    Conflict {
        /// Resource, qualified by group.
        resource: String,
        /// Namespace, for namespaced resources.
        namespace: Option<String>,
        /// Name.
        name: String,
    },
    /// The object is malformed or breaks a rule of its resource.
    #[error("{0}")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::invalid),
        help("fix the object and send it again")
    )]
    Invalid(String),
    /// The log could not be read or written.
    #[error("cannot {action} {path}")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::io),
        help("check the sandbox directory's permissions and free space")
    )]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process has this store open.
    #[error("the API server store {path} is in use by another process")]
    #[diagnostic(
        code(trustform::sandbox::apiserver::busy),
        help(
            "one `trustform sandbox up` per sandbox: stop the other one, or talk to it through its kubeconfig"
        )
    )]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
}

/// Who makes a write, for its `metadata.managedFields` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manager {
    /// The field manager (`kubectl-client-side-apply`, `kube-controller-manager`).
    pub name: String,
    /// `Update` or `Apply`.
    pub operation: String,
    /// The subresource written (`status`), if any.
    pub subresource: Option<String>,
}

impl Manager {
    /// An `Update` by `name`.
    pub fn update(name: &str) -> Self {
        Self {
            name: name.into(),
            operation: "Update".into(),
            subresource: None,
        }
    }
}

/// How a write is made.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// Record (or refresh) a managedFields entry for this manager when the write changes
    /// the object.
    pub manager: Option<Manager>,
    /// Check and return the result, but store nothing (`dryRun=All`).
    pub dry_run: bool,
}

/// One page of a list.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// The objects, sorted by key.
    pub items: Vec<Value>,
    /// The key of the last item when more matching objects follow (the continue point).
    pub next: Option<Key>,
    /// The store's resourceVersion when the page was read.
    pub resource_version: u64,
}

struct State {
    objects: BTreeMap<&'static str, BTreeMap<Key, Value>>,
    rv: u64,
}

impl State {
    fn table(&self, plural: &str) -> Option<&BTreeMap<Key, Value>> {
        self.objects.get(plural)
    }
    fn namespace_exists(&self, ns: &str) -> bool {
        self.table("namespaces")
            .is_some_and(|t| t.contains_key(&(String::new(), ns.to_string())))
    }
}

struct Inner {
    state: RwLock<State>,
    log: File,
    path: PathBuf,
    _lock: File,
    events: broadcast::Sender<Event>,
    changes: broadcast::Sender<Change>,
    last_sync: Mutex<Instant>,
    dirty: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.dirty.load(Ordering::Acquire) {
            let _ = self.log.sync_data();
        }
    }
}

/// The object store of one sandbox's API server. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

/// A line of the log.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    Put {
        rv: u64,
        resource: String,
        object: Value,
    },
    Delete {
        rv: u64,
        resource: String,
        namespace: String,
        name: String,
    },
    Mark {
        rv: u64,
    },
}

fn put_line(out: &mut Vec<u8>, rv: u64, plural: &str, obj: &Value) {
    out.extend_from_slice(
        format!("{{\"op\":\"put\",\"rv\":{rv},\"resource\":\"{plural}\",\"object\":").as_bytes(),
    );
    // Serialising a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, obj);
    out.extend_from_slice(b"}\n");
}

fn delete_line(out: &mut Vec<u8>, rv: u64, plural: &str, key: &Key) {
    let line =
        json!({"op": "delete", "rv": rv, "resource": plural, "namespace": key.0, "name": key.1});
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

/// `configmaps`, or `deployments.apps`: how a real server names a resource in messages.
pub fn qualified(res: &Resource) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

fn resource(plural: &str) -> Result<&'static Resource, StoreError> {
    resources::by_plural(plural).ok_or_else(|| {
        StoreError::Invalid(format!("the server does not serve resource {plural:?}"))
    })
}

fn ns_of(key: &Key) -> Option<String> {
    (!key.0.is_empty()).then(|| key.0.clone())
}

fn not_found(res: &Resource, key: &Key) -> StoreError {
    StoreError::NotFound {
        resource: qualified(res),
        namespace: ns_of(key),
        name: key.1.clone(),
    }
}

/// The Conflict error of the object at `key`.
pub fn conflict(res: &Resource, key: &Key) -> StoreError {
    StoreError::Conflict {
        resource: qualified(res),
        namespace: ns_of(key),
        name: key.1.clone(),
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, StoreError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| StoreError::Invalid("the object must be a JSON object".into()))?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    meta.as_object_mut()
        .ok_or_else(|| StoreError::Invalid("metadata must be an object".into()))
}

fn check_name(what: &str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && !name.contains(['/', '%'])
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "metadata.{what}: Invalid value: {name:?}: a name must be a non-empty DNS subdomain"
        )))
    }
}

/// The key of `obj` as an object of `res`. Cluster-scoped objects lose any namespace.
fn key_of(res: &Resource, obj: &mut Value) -> Result<Key, StoreError> {
    let kind = obj.get("kind").and_then(Value::as_str);
    if kind.is_some_and(|k| k != res.kind) {
        return Err(StoreError::Invalid(format!(
            "kind {:?} does not match resource {} (kind {})",
            kind.unwrap_or_default(),
            res.plural,
            res.kind
        )));
    }
    let meta = metadata_mut(obj)?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if name.is_empty() {
        return Err(StoreError::Invalid(
            "metadata.name: Required value: name or generateName is required".into(),
        ));
    }
    check_name("name", &name)?;
    let ns = if res.namespaced {
        let ns = meta
            .get("namespace")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if ns.is_empty() {
            return Err(StoreError::Invalid(format!(
                "metadata.namespace: Required value: {} is namespaced",
                res.kind
            )));
        }
        check_name("namespace", &ns)?;
        ns
    } else {
        meta.remove("namespace");
        String::new()
    };
    Ok((ns, name))
}

fn set_type_meta(res: &Resource, obj: &mut Value) -> Result<(), StoreError> {
    let map = obj
        .as_object_mut()
        .ok_or_else(|| StoreError::Invalid("the object must be a JSON object".into()))?;
    if !map.get("apiVersion").is_some_and(Value::is_string) {
        map.insert("apiVersion".into(), Value::String(res.api_version()));
    }
    if !map.get("kind").is_some_and(Value::is_string) {
        map.insert("kind".into(), Value::String(res.kind.into()));
    }
    Ok(())
}

/// Record (or refresh) `manager`'s entry in `metadata.managedFields`, with the time now.
pub fn record_manager(obj: &mut Value, manager: &Manager) {
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1")
        .to_string();
    let Ok(meta) = metadata_mut(obj) else { return };
    let fields = meta
        .entry("managedFields")
        .or_insert_with(|| Value::Array(vec![]));
    if !fields.is_array() {
        *fields = Value::Array(vec![]);
    }
    let Some(list) = fields.as_array_mut() else {
        return;
    };
    let same = |e: &Value| {
        e.get("manager").and_then(Value::as_str) == Some(manager.name.as_str())
            && e.get("operation").and_then(Value::as_str) == Some(manager.operation.as_str())
            && e.get("subresource").and_then(Value::as_str) == manager.subresource.as_deref()
    };
    let mut entry = json!({
        "manager": manager.name,
        "operation": manager.operation,
        "apiVersion": api_version,
        "time": ids::timestamp(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    });
    if let Some(sub) = &manager.subresource {
        entry["subresource"] = Value::String(sub.clone());
    }
    match list.iter_mut().find(|e| same(e)) {
        Some(e) => {
            if let Some(old) = e.get("fieldsV1").filter(|f| f.is_object()) {
                entry["fieldsV1"] = old.clone();
            }
            *e = entry;
        }
        None => list.push(entry),
    }
}

/// A new object of `res`, made ready to store (but not yet given a resourceVersion).
fn prepare_create(res: &Resource, mut obj: Value) -> Result<(Key, Value), StoreError> {
    set_type_meta(res, &mut obj)?;
    let meta = metadata_mut(&mut obj)?;
    let has_name = meta
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name && let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
        let name = format!("{prefix}{}", ids::name_suffix());
        meta.insert("name".into(), Value::String(name));
    }
    let key = key_of(res, &mut obj)?;
    let meta = metadata_mut(&mut obj)?;
    meta.insert("uid".into(), Value::String(ids::uid()));
    meta.insert("creationTimestamp".into(), Value::String(ids::timestamp()));
    meta.insert("generation".into(), json!(1));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    let typed = obj
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty());
    if res.plural == "secrets" && !typed {
        obj["type"] = json!("Opaque");
    }
    if res.plural == "namespaces" {
        if obj.get("spec").is_none() {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
        }
        obj["status"] = json!({"phase": "Active"});
    }
    Ok((key, obj))
}

/// `new` as the replacement of `old`: identity kept, generation bumped when `spec`
/// changed. Returns `None` when nothing changed.
fn prepare_update(
    res: &Resource,
    key: &Key,
    old: &Value,
    mut new: Value,
    manager: Option<&Manager>,
) -> Result<Option<Value>, StoreError> {
    set_type_meta(res, &mut new)?;
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let meta = metadata_mut(&mut new)?;
    meta.insert("name".into(), Value::String(key.1.clone()));
    if res.namespaced {
        meta.insert("namespace".into(), Value::String(key.0.clone()));
    } else {
        meta.remove("namespace");
    }
    for field in ["uid", "creationTimestamp", "resourceVersion"] {
        match old_meta.get(field) {
            Some(v) => meta.insert(field.into(), v.clone()),
            None => meta.remove(field),
        };
    }
    if !meta.contains_key("managedFields")
        && let Some(m) = old_meta.get("managedFields")
    {
        meta.insert("managedFields".into(), m.clone());
    }
    let generation = old_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let bump = old.get("spec") != new.get("spec");
    metadata_mut(&mut new)?.insert(
        "generation".into(),
        json!(if bump { generation + 1 } else { generation }),
    );
    if &new == old {
        return Ok(None);
    }
    if let Some(m) = manager {
        record_manager(&mut new, m);
    }
    Ok(Some(new))
}

fn set_rv(obj: &mut Value, rv: u64) {
    if let Ok(meta) = metadata_mut(obj) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// Replay a log: the objects, the resourceVersion, and how many records it held.
fn replay(bytes: &[u8], path: &Path) -> Result<(State, usize, bool), StoreError> {
    let mut state = State {
        objects: BTreeMap::new(),
        rv: 0,
    };
    let mut records = 0;
    let mut torn = false;
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let rec: Record = match serde_json::from_slice(line) {
            Ok(r) => r,
            // A write cut short by a crash: only ever the last line.
            Err(_) if i == last || (i + 1 == last && lines[last].is_empty()) => {
                torn = true;
                continue;
            }
            Err(e) => {
                return Err(StoreError::Io {
                    action: "replay",
                    path: path.to_path_buf(),
                    source: std::io::Error::other(format!("line {}: {e}", i + 1)),
                });
            }
        };
        records += 1;
        match rec {
            Record::Put {
                rv,
                resource,
                mut object,
            } => {
                state.rv = state.rv.max(rv);
                let Some(res) = resources::by_plural(&resource) else {
                    continue;
                };
                if let Ok(key) = key_of(res, &mut object) {
                    state
                        .objects
                        .entry(res.plural)
                        .or_default()
                        .insert(key, object);
                }
            }
            Record::Delete {
                rv,
                resource,
                namespace,
                name,
            } => {
                state.rv = state.rv.max(rv);
                if let Some(t) = state.objects.get_mut(resource.as_str()) {
                    t.remove(&(namespace, name));
                }
            }
            Record::Mark { rv } => state.rv = state.rv.max(rv),
        }
    }
    Ok((state, records, torn))
}

fn compacted(state: &State) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = serde_json::to_writer(&mut out, &json!({"op": "mark", "rv": state.rv}));
    out.push(b'\n');
    for (plural, table) in &state.objects {
        for obj in table.values() {
            let rv = meta_str(obj, "resourceVersion")
                .and_then(|s| s.parse().ok())
                .unwrap_or(state.rv);
            put_line(&mut out, rv, plural, obj);
        }
    }
    out
}

impl Store {
    /// Open (or create) the store of sandbox `dir`: data in `dir/apiserver/`. Replays the log.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let base = dir.join("apiserver");
        std::fs::create_dir_all(&base).map_err(io("create", &base))?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
            .map_err(io("set the mode of", &base))?;
        let lock_path = base.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("open", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Busy { path: lock_path });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &lock_path)(e)),
        }
        let path = base.join("objects.jsonl");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read", &path)(e)),
        };
        let (state, records, torn) = replay(&bytes, &path)?;
        let live: usize = state.objects.values().map(BTreeMap::len).sum();
        if torn || records > 2 * live + 1024 {
            crate::atomic::write(&path, &compacted(&state), crate::atomic::KEY_MODE)
                .map_err(io("compact", &path))?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (changes, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(Store {
            inner: Arc::new(Inner {
                state: RwLock::new(state),
                log,
                path,
                _lock: lock,
                events,
                changes,
                last_sync: Mutex::new(Instant::now()),
                dirty: AtomicBool::new(false),
            }),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Append records to the log (the state lock is held by the caller).
    fn append(&self, bytes: &[u8]) -> Result<(), StoreError> {
        (&self.inner.log)
            .write_all(bytes)
            .map_err(io("append to", &self.inner.path))?;
        self.inner.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// `fdatasync` the log if the last one is older than [`SYNC_INTERVAL`].
    fn maybe_sync(&self) -> Result<(), StoreError> {
        let due = self
            .inner
            .last_sync
            .lock()
            .map(|t| t.elapsed() >= SYNC_INTERVAL)
            .unwrap_or(true);
        if due { self.sync() } else { Ok(()) }
    }

    /// Make every committed write durable now.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut last = self
            .inner
            .last_sync
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.inner.dirty.swap(false, Ordering::AcqRel) {
            self.inner
                .log
                .sync_data()
                .map_err(io("sync", &self.inner.path))?;
        }
        *last = Instant::now();
        Ok(())
    }

    fn emit(&self, kind: EventKind, res: &'static Resource, key: &Key, rv: u64, obj: &Value) {
        let event = Event {
            kind,
            resource: res.plural,
            namespace: ns_of(key),
            name: key.1.clone(),
        };
        if self.inner.changes.receiver_count() > 0 {
            let mut object = obj.clone();
            set_rv(&mut object, rv);
            let _ = self.inner.changes.send(Change {
                event: event.clone(),
                resource_version: rv,
                object: Arc::new(object),
            });
        }
        let _ = self.inner.events.send(event);
    }

    /// One object.
    pub fn get(&self, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let res = resources::by_plural(plural)?;
        let ns = if res.namespaced {
            namespace.unwrap_or_default()
        } else {
            ""
        };
        self.read()
            .table(res.plural)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Sorted by (namespace, name). `namespace: None` on a namespaced resource = all namespaces.
    pub fn list(&self, plural: &str, namespace: Option<&str>) -> Vec<Value> {
        self.list_page(plural, namespace, None, None, &|_| true)
            .items
    }

    /// A page of a list: the objects after `after` (exclusive) that pass `filter`, at most
    /// `limit` of them, sorted by key. `next` is set when more matching objects follow.
    pub fn list_page(
        &self,
        plural: &str,
        namespace: Option<&str>,
        after: Option<&Key>,
        limit: Option<usize>,
        filter: &dyn Fn(&Value) -> bool,
    ) -> Page {
        let state = self.read();
        let mut page = Page {
            resource_version: state.rv,
            ..Page::default()
        };
        let Some(res) = resources::by_plural(plural) else {
            return page;
        };
        let Some(table) = state.table(res.plural) else {
            return page;
        };
        let ns = namespace.filter(|_| res.namespaced);
        let start = match (after, ns) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let limit = limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let mut last: Option<&Key> = None;
        for (key, obj) in table.range((start, Bound::Unbounded)) {
            if let Some(ns) = ns
                && key.0 != ns
            {
                if key.0.as_str() > ns {
                    break;
                }
                continue;
            }
            if !filter(obj) {
                continue;
            }
            if page.items.len() == limit {
                page.next = last.cloned();
                break;
            }
            page.items.push(obj.clone());
            last = Some(key);
        }
        page
    }

    /// Sets apiVersion/kind if missing, metadata.uid, resourceVersion, creationTimestamp,
    /// generation (1); namespace comes from obj.metadata.namespace (error if namespaced and
    /// missing, or the namespace object does not exist — except when creating namespaces
    /// themselves). `metadata.generateName` is honoured.
    pub fn create(&self, plural: &str, obj: Value) -> Result<Value, StoreError> {
        self.create_with(plural, obj, &WriteOptions::default())
    }

    /// [`Store::create`] with a manager and dry-run.
    pub fn create_with(
        &self,
        plural: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, StoreError> {
        let res = resource(plural)?;
        let (key, mut obj) = prepare_create(res, obj)?;
        if let Some(m) = &opts.manager {
            record_manager(&mut obj, m);
        }
        let state = self.write();
        if res.namespaced && !state.namespace_exists(&key.0) {
            return Err(not_found(
                resources::by_plural("namespaces").unwrap_or(res),
                &(String::new(), key.0.clone()),
            ));
        }
        if state
            .table(res.plural)
            .is_some_and(|t| t.contains_key(&key))
        {
            return Err(StoreError::AlreadyExists {
                resource: qualified(res),
                namespace: ns_of(&key),
                name: key.1,
            });
        }
        self.store_one(state, res, key, obj, EventKind::Added, opts.dry_run)
    }

    /// Replace. If obj.metadata.resourceVersion is set and differs from the stored one →
    /// Conflict. Bumps metadata.generation when `spec` changed (not for status-only or
    /// metadata-only changes). An update that changes nothing writes nothing.
    pub fn update(&self, plural: &str, obj: Value) -> Result<Value, StoreError> {
        self.update_with(plural, obj, &WriteOptions::default())
    }

    /// [`Store::update`] with a manager and dry-run.
    pub fn update_with(
        &self,
        plural: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Value, StoreError> {
        let res = resource(plural)?;
        let key = key_of(res, &mut obj)?;
        let want_rv = meta_str(&obj, "resourceVersion")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        self.commit(res, key, opts, |old| {
            if let Some(want) = &want_rv
                && meta_str(old, "resourceVersion") != Some(want.as_str())
            {
                return Err(());
            }
            Ok(obj)
        })
    }

    /// Atomic read-modify-write for controllers (no resourceVersion check); skips the
    /// write (and the event) when `f` leaves the object unchanged. Returns the stored
    /// object. `f` runs under the store's lock: it must not call the store.
    pub fn mutate(
        &self,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value, StoreError> {
        self.mutate_with(plural, namespace, name, &WriteOptions::default(), |v| {
            f(v);
            Ok(())
        })
    }

    /// [`Store::mutate`] with a manager, dry-run, and a change that may fail (a patch that
    /// does not apply, a precondition that does not hold).
    pub fn mutate_with(
        &self,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        opts: &WriteOptions,
        f: impl FnOnce(&mut Value) -> Result<(), StoreError>,
    ) -> Result<Value, StoreError> {
        let res = resource(plural)?;
        let key = (
            if res.namespaced {
                namespace.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name.to_string(),
        );
        let mut failure = None;
        let out = self.commit(res, key, opts, |old| {
            let mut new = old.clone();
            match f(&mut new) {
                Ok(()) => Ok(new),
                Err(e) => {
                    failure = Some(e);
                    Err(())
                }
            }
        });
        match failure {
            Some(e) => Err(e),
            None => out,
        }
    }

    /// The one write path of updates: `change` turns the stored object into the new one,
    /// or refuses (a conflict).
    fn commit(
        &self,
        res: &'static Resource,
        key: Key,
        opts: &WriteOptions,
        change: impl FnOnce(&Value) -> Result<Value, ()>,
    ) -> Result<Value, StoreError> {
        let state = self.write();
        let old = state
            .table(res.plural)
            .and_then(|t| t.get(&key))
            .ok_or_else(|| not_found(res, &key))?;
        let new = change(old).map_err(|()| conflict(res, &key))?;
        let Some(new) = prepare_update(res, &key, old, new, opts.manager.as_ref())? else {
            return Ok(old.clone());
        };
        self.store_one(state, res, key, new, EventKind::Modified, opts.dry_run)
    }

    /// Give `obj` the next resourceVersion and, unless a dry run, log it, keep it and
    /// announce it: the tail every create and update shares.
    fn store_one(
        &self,
        mut state: std::sync::RwLockWriteGuard<'_, State>,
        res: &'static Resource,
        key: Key,
        mut obj: Value,
        kind: EventKind,
        dry_run: bool,
    ) -> Result<Value, StoreError> {
        let rv = state.rv + 1;
        set_rv(&mut obj, rv);
        if dry_run {
            return Ok(obj);
        }
        let mut line = Vec::new();
        put_line(&mut line, rv, res.plural, &obj);
        self.append(&line)?;
        state.rv = rv;
        state
            .objects
            .entry(res.plural)
            .or_default()
            .insert(key.clone(), obj.clone());
        self.emit(kind, res, &key, rv, &obj);
        drop(state);
        self.maybe_sync()?;
        Ok(obj)
    }

    /// Delete an object; returns it as it was. Deleting a namespace deletes everything
    /// in it.
    pub fn delete(
        &self,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, StoreError> {
        self.delete_with(plural, namespace, name, &WriteOptions::default())
    }

    /// [`Store::delete`] with dry-run.
    pub fn delete_with(
        &self,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        opts: &WriteOptions,
    ) -> Result<Value, StoreError> {
        let res = resource(plural)?;
        let key = (
            if res.namespaced {
                namespace.unwrap_or_default().to_string()
            } else {
                String::new()
            },
            name.to_string(),
        );
        let mut state = self.write();
        let obj = state
            .table(res.plural)
            .and_then(|t| t.get(&key))
            .cloned()
            .ok_or_else(|| not_found(res, &key))?;
        if opts.dry_run {
            return Ok(obj);
        }
        // The namespace's content first, then the namespace.
        let mut doomed: Vec<(&'static Resource, Key)> = Vec::new();
        if res.plural == "namespaces" {
            for r in resources::RESOURCES.iter().filter(|r| r.namespaced) {
                if let Some(t) = state.table(r.plural) {
                    let from = (key.1.clone(), String::new());
                    doomed.extend(
                        t.range(from..)
                            .take_while(|(k, _)| k.0 == key.1)
                            .map(|(k, _)| (r, k.clone())),
                    );
                }
            }
        }
        doomed.push((res, key));
        let mut lines = Vec::new();
        let mut rv = state.rv;
        for (r, k) in &doomed {
            rv += 1;
            delete_line(&mut lines, rv, r.plural, k);
        }
        self.append(&lines)?;
        let first = state.rv;
        state.rv = rv;
        for (i, (r, k)) in doomed.iter().enumerate() {
            if let Some(gone) = state.objects.get_mut(r.plural).and_then(|t| t.remove(k)) {
                self.emit(EventKind::Deleted, r, k, first + 1 + i as u64, &gone);
            }
        }
        drop(state);
        self.maybe_sync()?;
        Ok(obj)
    }

    /// Many creates with one append and one fsync (seeding tens of thousands of objects).
    /// All or nothing: if one object is refused, nothing is stored. A namespaced object
    /// may follow its namespace in the same batch.
    pub fn create_many(&self, items: Vec<(&'static str, Value)>) -> Result<(), StoreError> {
        let mut prepared = Vec::with_capacity(items.len());
        for (plural, obj) in items {
            let res = resource(plural)?;
            let (key, obj) = prepare_create(res, obj)?;
            prepared.push((res, key, obj));
        }
        let mut state = self.write();
        let mut seen: HashSet<(&'static str, &Key)> = HashSet::new();
        let mut new_namespaces: HashSet<&str> = HashSet::new();
        for (res, key, _) in &prepared {
            if res.namespaced
                && !new_namespaces.contains(key.0.as_str())
                && !state.namespace_exists(&key.0)
            {
                return Err(StoreError::NotFound {
                    resource: "namespaces".into(),
                    namespace: None,
                    name: key.0.clone(),
                });
            }
            let exists = state.table(res.plural).is_some_and(|t| t.contains_key(key));
            if exists || !seen.insert((res.plural, key)) {
                return Err(StoreError::AlreadyExists {
                    resource: qualified(res),
                    namespace: ns_of(key),
                    name: key.1.clone(),
                });
            }
            if res.plural == "namespaces" {
                new_namespaces.insert(key.1.as_str());
            }
        }
        drop(seen);
        drop(new_namespaces);
        let mut lines = Vec::with_capacity(prepared.len() * 256);
        let mut rv = state.rv;
        for (res, _, obj) in &mut prepared {
            rv += 1;
            set_rv(obj, rv);
            put_line(&mut lines, rv, res.plural, obj);
        }
        self.append(&lines)?;
        state.rv = rv;
        for (res, key, obj) in prepared {
            let rv = meta_str(&obj, "resourceVersion")
                .and_then(|s| s.parse().ok())
                .unwrap_or(rv);
            self.emit(EventKind::Added, res, &key, rv, &obj);
            state
                .objects
                .entry(res.plural)
                .or_default()
                .insert(key, obj);
        }
        drop(state);
        self.sync()
    }

    /// Every committed change, in order. A receiver that falls more than 16,384 events
    /// behind gets `Lagged` and should list again.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// Every committed change with its object, in order (what watches stream). Sending
    /// costs a clone of the object only while someone listens.
    pub fn watch(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.read().rv
    }

    /// How many objects are stored, over all resources.
    pub fn len(&self) -> usize {
        self.read().objects.values().map(BTreeMap::len).sum()
    }

    /// Whether the store holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    fn cm(ns: &str, name: &str, v: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": ns}, "data": {"k": v}})
    }

    #[test]
    fn create_sets_identity_and_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(matches!(
            s.create("configmaps", cm("a", "x", "1")),
            Err(StoreError::NotFound { .. })
        ));
        s.create("namespaces", ns("a")).unwrap();
        let c = s.create("configmaps", cm("a", "x", "1")).unwrap();
        assert_eq!(c["apiVersion"], "v1");
        assert_eq!(c["kind"], "ConfigMap");
        assert_eq!(c["metadata"]["generation"], 1);
        assert_eq!(c["metadata"]["resourceVersion"], "2");
        assert_eq!(c["metadata"]["uid"].as_str().unwrap().len(), 36);
        assert!(matches!(
            s.create("configmaps", cm("a", "x", "1")),
            Err(StoreError::AlreadyExists { .. })
        ));
        assert!(matches!(
            s.create("configmaps", json!({"metadata": {"name": "y"}})),
            Err(StoreError::Invalid(_))
        ));
        let g = s
            .create(
                "configmaps",
                json!({"metadata": {"generateName": "gen-", "namespace": "a"}}),
            )
            .unwrap();
        assert!(g["metadata"]["name"].as_str().unwrap().starts_with("gen-"));
        s.delete(
            "configmaps",
            Some("a"),
            g["metadata"]["name"].as_str().unwrap(),
        )
        .unwrap();
        let rv = s.resource_version();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.resource_version(), rv);
        assert_eq!(s.get("configmaps", Some("a"), "x"), Some(c));
        assert_eq!(s.list("configmaps", None).len(), 1);
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(s.path()).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Busy { .. })
        ));
        drop(s);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn update_conflicts_and_generation() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.create("namespaces", ns("a")).unwrap();
        let d = s
            .create(
                "deployments",
                json!({"metadata": {"name": "d", "namespace": "a"}, "spec": {"replicas": 1}}),
            )
            .unwrap();
        let mut stale = d.clone();
        let mut next = d.clone();
        next["spec"]["replicas"] = json!(2);
        let d2 = s.update("deployments", next).unwrap();
        assert_eq!(d2["metadata"]["generation"], 2);
        assert_ne!(
            d2["metadata"]["resourceVersion"],
            d["metadata"]["resourceVersion"]
        );
        stale["spec"]["replicas"] = json!(3);
        assert!(matches!(
            s.update("deployments", stale),
            Err(StoreError::Conflict { .. })
        ));
        // Status and metadata changes keep the generation.
        let mut st = d2.clone();
        st["status"] = json!({"replicas": 2});
        st["metadata"]["labels"] = json!({"x": "y"});
        let d3 = s.update("deployments", st).unwrap();
        assert_eq!(d3["metadata"]["generation"], 2);
        // No resourceVersion: last write wins.
        let mut blind = d3.clone();
        blind["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        blind["spec"]["replicas"] = json!(5);
        assert_eq!(
            s.update("deployments", blind).unwrap()["metadata"]["generation"],
            3
        );
        // A no-op changes nothing.
        let rv = s.resource_version();
        let same = s.get("deployments", Some("a"), "d").unwrap();
        s.update("deployments", same).unwrap();
        assert_eq!(s.resource_version(), rv);
        assert!(matches!(
            s.update(
                "deployments",
                json!({"metadata": {"name": "nope", "namespace": "a"}})
            ),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn mutate_skips_no_ops_and_emits_events() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut rx = s.subscribe();
        s.create("namespaces", ns("a")).unwrap();
        s.create("configmaps", cm("a", "x", "1")).unwrap();
        let rv = s.resource_version();
        s.mutate("configmaps", Some("a"), "x", |_| {}).unwrap();
        assert_eq!(s.resource_version(), rv);
        let m = s
            .mutate("configmaps", Some("a"), "x", |o| {
                o["data"]["k"] = json!("2")
            })
            .unwrap();
        assert_eq!(m["data"]["k"], "2");
        s.delete("namespaces", None, "a").unwrap();
        assert!(s.get("configmaps", Some("a"), "x").is_none());
        let kinds: Vec<(EventKind, &str)> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| (e.kind, e.resource))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::Added, "namespaces"),
                (EventKind::Added, "configmaps"),
                (EventKind::Modified, "configmaps"),
                (EventKind::Deleted, "configmaps"),
                (EventKind::Deleted, "namespaces"),
            ]
        );
    }

    #[test]
    fn pages_continue_from_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut batch = vec![("namespaces", ns("a")), ("namespaces", ns("b"))];
        for i in 0..25 {
            batch.push((
                "configmaps",
                cm(if i % 2 == 0 { "a" } else { "b" }, &format!("c{i:02}"), "v"),
            ));
        }
        s.create_many(batch).unwrap();
        let mut seen = vec![];
        let mut after = None;
        loop {
            let p = s.list_page("configmaps", None, after.as_ref(), Some(10), &|_| true);
            seen.extend(p.items.iter().map(|o| o["metadata"]["name"].clone()));
            match p.next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(seen.len(), 25);
        let only_b = s.list_page("configmaps", Some("b"), None, Some(100), &|_| true);
        assert_eq!(only_b.items.len(), 12);
        assert!(only_b.next.is_none());
        let exact = s.list_page("configmaps", Some("a"), None, Some(13), &|_| true);
        assert_eq!(exact.items.len(), 13);
        assert!(exact.next.is_none(), "no more items: no continue");
        assert!(matches!(
            s.create_many(vec![("configmaps", cm("zz", "x", "1"))]),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn torn_last_line_is_ignored_and_logs_compact() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.create("namespaces", ns("a")).unwrap();
        s.create("configmaps", cm("a", "x", "0")).unwrap();
        for i in 1..=3000 {
            s.mutate("configmaps", Some("a"), "x", |o| {
                o["data"]["k"] = json!(i.to_string())
            })
            .unwrap();
        }
        let path = s.path().to_path_buf();
        drop(s);
        let before = std::fs::read(&path).unwrap();
        assert_eq!(before.iter().filter(|b| **b == b'\n').count(), 3002);
        // A crash in the middle of an append.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"op\":\"put\",\"rv\":9999,\"resource\":\"configm")
            .unwrap();
        drop(f);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(
            s.get("configmaps", Some("a"), "x").unwrap()["data"]["k"],
            "3000"
        );
        assert_eq!(s.resource_version(), 3002);
        let after = std::fs::read(&path).unwrap();
        assert_eq!(
            after.iter().filter(|b| **b == b'\n').count(),
            3,
            "mark + 2 objects"
        );
        s.create("configmaps", cm("a", "y", "1")).unwrap();
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.resource_version(), 3003);
    }

    #[test]
    fn a_corrupt_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.create("namespaces", ns("a")).unwrap();
        let path = s.path().to_path_buf();
        drop(s);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "garbage\n");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(
            Store::open(dir.path()),
            Err(StoreError::Io { .. })
        ));
    }

    /// Functional only: how long it takes is `cargo bench --bench sandbox`'s figure.
    #[test]
    fn seeding_twenty_thousand_in_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut batch: Vec<(&'static str, Value)> = (0..100)
            .map(|i| ("namespaces", ns(&format!("ns-{i}"))))
            .collect();
        for i in 0..20_000 {
            batch.push((
                "secrets",
                json!({"metadata": {"name": format!("s-{i}"), "namespace": format!("ns-{}", i % 100)},
                       "type": "kubernetes.io/service-account-token", "data": {"ca.crt": "QUJD"}}),
            ));
        }
        s.create_many(batch).unwrap();
        assert_eq!(s.list("secrets", None).len(), 20_000);
        assert_eq!(s.list("secrets", Some("ns-7")).len(), 200);
        assert_eq!(s.resource_version(), 20_100);
        // Durable: the same objects after a reopen.
        drop(s);
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.list("secrets", None).len(), 20_000);
    }
}
