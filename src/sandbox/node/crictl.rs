//! `crictl` on a sandbox node: the container runtime's view of the static pods.
//!
//! - `crictl pods [--name RE] [--namespace RE] [--state ready|notready] [--label K=V]…
//!   [--id ID] [-l|--latest] [--last N] [-q] [-o json|yaml|table] [--no-trunc]`:
//!   `{"items":[{id, metadata{name,uid,namespace,attempt}, state (SANDBOX_READY |
//!   SANDBOX_NOTREADY), createdAt (ns since the epoch, a string), labels, annotations,
//!   runtimeHandler}]}`, newest first. A static pod is `<component>-<node>` in
//!   `kube-system`, labelled `component`, `tier: control-plane` and
//!   `io.kubernetes.pod.{name,namespace,uid}`, annotated with its manifest's annotations
//!   and `kubernetes.io/config.hash` (= its UID), `kubernetes.io/config.seen`,
//!   `kubernetes.io/config.source: file`.
//! - `crictl ps [-a] [--name RE] [--state created|running|exited] [--pod ID]
//!   [--label K=V]… [--id ID] [-l] [--last N] [-q] [-o json|yaml|table] [--no-trunc]`:
//!   `{"containers":[{id, podSandboxId, metadata{name,attempt}, image{image,…},
//!   imageRef, state (CONTAINER_RUNNING | CONTAINER_EXITED), createdAt, labels,
//!   annotations (io.kubernetes.container.restartCount, …)}]}`, newest first; without
//!   `-a` or `--state` only running containers.
//! - `crictl logs [--since T] [--until T] [--tail N] [-t] [-p] CONTAINER-ID`: what the
//!   container printed. Its lines were written to stderr (klog), so they come out on
//!   **stderr**, as real `crictl logs` prints each stream to its own.
//! - `crictl inspectp POD-ID`, `crictl inspect CONTAINER-ID`: their status as JSON.
//!
//! IDs may be abbreviated to any unique prefix. Global options (`-r`, `--timeout`, …)
//! are accepted and ignored.

use super::kubelet::{Container, Machine, Pod, State};
use super::logs::{self, Nanos};
use super::output;
use crate::transport::Output;
use serde_json::{Value, json};
use std::collections::BTreeMap;

const NAMESPACE: &str = "kube-system";

fn image_id(image: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(image.as_bytes()))
    )
}

struct Row<'a> {
    component: &'a str,
    pod: &'a Pod,
}

fn pod_name(m: &Machine, component: &str) -> String {
    format!("{component}-{}", m.name)
}

// Go prints maps with their keys sorted: BTreeMaps do the same.

fn pod_labels(m: &Machine, r: &Row) -> BTreeMap<String, String> {
    let mut l = r.pod.labels.clone();
    l.insert("io.kubernetes.pod.name".into(), pod_name(m, r.component));
    l.insert("io.kubernetes.pod.namespace".into(), NAMESPACE.into());
    l.insert("io.kubernetes.pod.uid".into(), r.pod.hash.clone());
    l
}

fn pod_annotations(r: &Row) -> BTreeMap<String, String> {
    let mut a = r.pod.annotations.clone();
    a.insert("kubernetes.io/config.hash".into(), r.pod.hash.clone());
    a.insert(
        "kubernetes.io/config.seen".into(),
        logs::rfc3339_nanos(r.pod.seen),
    );
    a.insert("kubernetes.io/config.source".into(), "file".into());
    a
}

fn pod_state(p: &Pod) -> &'static str {
    if p.ready {
        "SANDBOX_READY"
    } else {
        "SANDBOX_NOTREADY"
    }
}

fn container_state(c: &Container) -> &'static str {
    if c.running() {
        "CONTAINER_RUNNING"
    } else {
        "CONTAINER_EXITED"
    }
}

fn pod_json(m: &Machine, r: &Row) -> Value {
    json!({
        "id": r.pod.id,
        "metadata": {
            "name": pod_name(m, r.component),
            "uid": r.pod.hash,
            "namespace": NAMESPACE,
            "attempt": 0,
        },
        "state": pod_state(r.pod),
        "createdAt": r.pod.created.to_string(),
        "labels": pod_labels(m, r),
        "annotations": pod_annotations(r),
        "runtimeHandler": "",
    })
}

fn container_labels(m: &Machine, r: &Row) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert("io.kubernetes.container.name".into(), r.component.into());
    l.insert("io.kubernetes.pod.name".into(), pod_name(m, r.component));
    l.insert("io.kubernetes.pod.namespace".into(), NAMESPACE.into());
    l.insert("io.kubernetes.pod.uid".into(), r.pod.hash.clone());
    l
}

fn container_annotations(r: &Row, c: &Container) -> Value {
    json!({
        "io.kubernetes.container.hash": &r.pod.hash[..8.min(r.pod.hash.len())],
        "io.kubernetes.container.restartCount": c.attempt.to_string(),
        "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
        "io.kubernetes.container.terminationMessagePolicy": "File",
        "io.kubernetes.pod.terminationGracePeriod": "30",
    })
}

fn container_json(m: &Machine, r: &Row, c: &Container) -> Value {
    json!({
        "id": c.id,
        "podSandboxId": r.pod.id,
        "metadata": { "name": r.component, "attempt": c.attempt },
        "image": {
            "image": image_id(&r.pod.image),
            "annotations": {},
            "userSpecifiedImage": "",
            "runtimeHandler": "",
        },
        "imageRef": image_id(&r.pod.image),
        "state": container_state(c),
        "createdAt": c.created.to_string(),
        "labels": container_labels(m, r),
        "annotations": container_annotations(r, c),
    })
}

/// go-units' `HumanDuration`, as crictl's tables print ages.
fn human(now: Nanos, t: Nanos) -> String {
    let s = (now - t).max(0) / 1_000_000_000;
    let d = match s {
        0 => "Less than a second".to_string(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86400),
    };
    format!("{d} ago")
}

/// Go's tabwriter as crictl sets it up: minimum width 20, padding 3.
fn table(rows: Vec<Vec<String>>) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(20)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn trunc(id: &str, full: bool) -> String {
    if full {
        id.to_string()
    } else {
        id.chars().take(13).collect()
    }
}

/// Options shared by `pods` and `ps`.
#[derive(Default)]
struct Filter {
    name: Option<regex::Regex>,
    namespace: Option<regex::Regex>,
    state: Option<String>,
    labels: Vec<(String, String)>,
    id: Option<String>,
    pod: Option<String>,
    all: bool,
    quiet: bool,
    latest: bool,
    last: usize,
    output: String,
    no_trunc: bool,
}

fn fail(msg: &str) -> Output {
    output(
        1,
        "",
        format!(
            "time=\"{}\" level=fatal msg=\"{msg}\"\n",
            logs::rfc3339_nanos(logs::now())
        ),
    )
}

fn parse_filter(args: &[&str], ps: bool) -> Result<(Filter, Vec<String>), Output> {
    let mut f = Filter {
        output: "table".into(),
        ..Filter::default()
    };
    let mut positional = vec![];
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((fl, v)) if fl.starts_with('-') => (fl, Some(v.to_string())),
            _ => (a, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().map(|s| s.to_string()))
                .ok_or_else(|| fail(&format!("flag needs an argument: {flag}")))
        };
        let re = |v: String| {
            regex::Regex::new(&v)
                .map_err(|e| fail(&format!("invalid regular expression {v:?}: {e}")))
        };
        match flag {
            "--name" => f.name = Some(re(value()?)?),
            "--namespace" => f.namespace = Some(re(value()?)?),
            "--state" | "-s" => f.state = Some(value()?.to_lowercase()),
            "--label" => {
                let v = value()?;
                let (k, val) = v.split_once('=').unwrap_or((&v, ""));
                f.labels.push((k.to_string(), val.to_string()));
            }
            "--id" => f.id = Some(value()?),
            "-p" | "--pod" if ps => f.pod = Some(value()?),
            "-a" | "--all" if ps => f.all = true,
            "-q" | "--quiet" => f.quiet = true,
            "-l" | "--latest" => f.latest = true,
            "-n" | "--last" => f.last = value()?.parse().unwrap_or(0),
            "-o" | "--output" => f.output = value()?,
            "--no-trunc" => f.no_trunc = true,
            "-v" | "--verbose" | "--image" | "-r" | "--resolve" => {}
            _ if a.starts_with('-') => {
                return Err(output(
                    1,
                    "",
                    format!(
                        "Incorrect Usage: flag provided but not defined: -{}\n",
                        a.trim_start_matches('-')
                    ),
                ));
            }
            _ => positional.push(a.to_string()),
        }
    }
    if !matches!(f.output.as_str(), "json" | "yaml" | "table") {
        return Err(fail(&format!("unsupported output format {:?}", f.output)));
    }
    Ok((f, positional))
}

fn rows(st: &State) -> Vec<Row<'_>> {
    st.pods
        .iter()
        .flat_map(|(c, slot)| {
            slot.pods.iter().map(move |p| Row {
                component: c.as_str(),
                pod: p,
            })
        })
        .collect()
}

fn labels_match(labels: &BTreeMap<String, String>, want: &[(String, String)]) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn limit<T>(mut v: Vec<T>, f: &Filter) -> Vec<T> {
    if f.latest {
        v.truncate(1);
    } else if f.last > 0 {
        v.truncate(f.last);
    }
    v
}

fn render(
    f: &Filter,
    key: &str,
    items: Vec<Value>,
    ids: Vec<String>,
    table_rows: Vec<Vec<String>>,
) -> Output {
    match f.output.as_str() {
        _ if f.quiet => output(
            0,
            ids.iter().map(|i| format!("{i}\n")).collect::<String>(),
            "",
        ),
        "json" => output(
            0,
            format!(
                "{}\n",
                serde_json::to_string_pretty(&json!({ key: items })).unwrap_or_default()
            ),
            "",
        ),
        "yaml" => output(
            0,
            serde_saphyr::to_string(&json!({ key: items })).unwrap_or_default(),
            "",
        ),
        _ => output(0, table(table_rows), ""),
    }
}

fn pods(m: &Machine, st: &State, args: &[&str], now: Nanos) -> Output {
    let (f, _) = match parse_filter(args, false) {
        Ok(x) => x,
        Err(o) => return o,
    };
    if let Some(s) = &f.state
        && !matches!(
            s.as_str(),
            "ready" | "notready" | "sandbox_ready" | "sandbox_notready"
        )
    {
        return fail(&format!("--state should be ready or notready, got {s:?}"));
    }
    let mut list: Vec<Row> = rows(st)
        .into_iter()
        .filter(|r| {
            let name = pod_name(m, r.component);
            f.name.as_ref().is_none_or(|re| re.is_match(&name))
                && f.namespace.as_ref().is_none_or(|re| re.is_match(NAMESPACE))
                && f.state.as_deref().is_none_or(|s| {
                    s.trim_start_matches("sandbox_")
                        == if r.pod.ready { "ready" } else { "notready" }
                })
                && f.id.as_deref().is_none_or(|id| r.pod.id.starts_with(id))
                && labels_match(&pod_labels(m, r), &f.labels)
        })
        .collect();
    list.sort_by_key(|r| std::cmp::Reverse(r.pod.created));
    let list = limit(list, &f);
    let mut table_rows = vec![
        [
            "POD ID",
            "CREATED",
            "STATE",
            "NAME",
            "NAMESPACE",
            "ATTEMPT",
            "RUNTIME",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in &list {
        table_rows.push(vec![
            trunc(&r.pod.id, f.no_trunc),
            human(now, r.pod.created),
            if r.pod.ready { "Ready" } else { "NotReady" }.into(),
            pod_name(m, r.component),
            NAMESPACE.into(),
            "0".into(),
            "(default)".into(),
        ]);
    }
    let ids = list.iter().map(|r| r.pod.id.clone()).collect();
    let items = list.iter().map(|r| pod_json(m, r)).collect();
    render(&f, "items", items, ids, table_rows)
}

fn ps(m: &Machine, st: &State, args: &[&str], now: Nanos) -> Output {
    let (f, _) = match parse_filter(args, true) {
        Ok(x) => x,
        Err(o) => return o,
    };
    if let Some(s) = &f.state
        && !matches!(
            s.trim_start_matches("container_"),
            "created" | "running" | "exited" | "unknown"
        )
    {
        return fail(&format!(
            "--state should be one of created, running, exited or unknown, got {s:?}"
        ));
    }
    let all_rows = rows(st);
    let mut list: Vec<(&Row, &Container)> = all_rows
        .iter()
        .flat_map(|r| r.pod.containers.iter().map(move |c| (r, c)))
        .filter(|(r, c)| {
            let state = if c.running() { "running" } else { "exited" };
            let state_ok = match &f.state {
                Some(s) => s.trim_start_matches("container_") == state,
                None => f.all || c.running(),
            };
            state_ok
                && f.name.as_ref().is_none_or(|re| re.is_match(r.component))
                && f.namespace.as_ref().is_none_or(|re| re.is_match(NAMESPACE))
                && f.id.as_deref().is_none_or(|id| c.id.starts_with(id))
                && f.pod.as_deref().is_none_or(|id| r.pod.id.starts_with(id))
                && labels_match(&container_labels(m, r), &f.labels)
        })
        .collect();
    list.sort_by_key(|(_, c)| std::cmp::Reverse(c.created));
    let list = limit(list, &f);
    let mut table_rows = vec![
        [
            "CONTAINER",
            "IMAGE",
            "CREATED",
            "STATE",
            "NAME",
            "ATTEMPT",
            "POD ID",
            "POD",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (r, c) in &list {
        table_rows.push(vec![
            trunc(&c.id, f.no_trunc),
            trunc(
                image_id(&r.pod.image).trim_start_matches("sha256:"),
                f.no_trunc,
            ),
            human(now, c.created),
            if c.running() { "Running" } else { "Exited" }.into(),
            r.component.to_string(),
            c.attempt.to_string(),
            trunc(&r.pod.id, f.no_trunc),
            pod_name(m, r.component),
        ]);
    }
    let ids = list.iter().map(|(_, c)| c.id.clone()).collect();
    let items = list.iter().map(|(r, c)| container_json(m, r, c)).collect();
    render(&f, "containers", items, ids, table_rows)
}

fn not_found(kind: &str, id: &str) -> Output {
    let desc = format!("an error occurred when try to find {kind} \"{id}\": not found");
    output(
        1,
        "",
        format!(
            "time=\"{}\" level=fatal msg=\"rpc error: code = NotFound desc = {}\"\n",
            logs::rfc3339_nanos(logs::now()),
            desc.replace('"', "\\\"")
        ),
    )
}

fn find_container<'a>(st: &'a State, id: &str) -> Result<(Row<'a>, &'a Container), Output> {
    let mut hits = vec![];
    for (c, slot) in &st.pods {
        for p in &slot.pods {
            for k in &p.containers {
                if !id.is_empty() && k.id.starts_with(id) {
                    hits.push((
                        Row {
                            component: c.as_str(),
                            pod: p,
                        },
                        k,
                    ));
                }
            }
        }
    }
    match hits.len() {
        1 => Ok(hits.pop().expect("one")),
        0 => Err(not_found("container", id)),
        _ => Err(fail(&format!("ID {id} is ambiguous"))),
    }
}

fn logs_cmd(m: &Machine, st: &State, args: &[&str], now: Nanos) -> Output {
    let mut since = None;
    let mut until = None;
    let mut tail: Option<usize> = None;
    let mut stamps = false;
    let mut previous = false;
    let mut id = None;
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((fl, v)) if fl.starts_with('-') => (fl, Some(v.to_string())),
            _ => (a, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().map(|s| s.to_string()))
                .unwrap_or_default()
        };
        let time = |v: &str| -> Option<Nanos> {
            logs::parse_rfc3339(v).or_else(|| {
                humantime::parse_duration(v)
                    .ok()
                    .map(|d| now - d.as_nanos() as Nanos)
            })
        };
        match flag {
            "--since" => {
                let v = value();
                match time(&v) {
                    Some(t) => since = Some(t),
                    None => return fail(&format!("failed to parse --since {v:?}")),
                }
            }
            "--until" => {
                let v = value();
                match time(&v) {
                    Some(t) => until = Some(t),
                    None => return fail(&format!("failed to parse --until {v:?}")),
                }
            }
            "--tail" => {
                tail = value()
                    .parse::<i64>()
                    .ok()
                    .and_then(|n| usize::try_from(n).ok())
            }
            "-t" | "--timestamps" => stamps = true,
            "-p" | "--previous" => previous = true,
            "-f" | "--follow" => {}
            "--limit-bytes" => {
                value();
            }
            _ if a.starts_with('-') => {
                return output(
                    1,
                    "",
                    format!(
                        "Incorrect Usage: flag provided but not defined: -{}\n",
                        a.trim_start_matches('-')
                    ),
                );
            }
            _ => id = Some(a.to_string()),
        }
    }
    let Some(id) = id else {
        return fail("ID cannot be empty");
    };
    let (row, mut c) = match find_container(st, &id) {
        Ok(x) => x,
        Err(o) => return o,
    };
    if previous {
        let idx = row
            .pod
            .containers
            .iter()
            .position(|k| k.id == c.id)
            .unwrap_or(0);
        match idx.checked_sub(1).and_then(|i| row.pod.containers.get(i)) {
            Some(p) => c = p,
            None => return fail("previous terminated container not found"),
        }
    }
    let mut lines = logs::container_lines(&m.root, row.component, c.log_from, c.log_to);
    lines.retain(|l| since.is_none_or(|s| l.time >= s) && until.is_none_or(|u| l.time <= u));
    if let Some(n) = tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    let (mut out, mut err) = (String::new(), String::new());
    for l in lines {
        let text = if stamps {
            format!("{} {}\n", logs::rfc3339_nanos(l.time), l.message)
        } else {
            format!("{}\n", l.message)
        };
        if l.stream == "stdout" {
            out.push_str(&text);
        } else {
            err.push_str(&text);
        }
    }
    output(0, out, err)
}

fn inspectp(m: &Machine, st: &State, args: &[&str]) -> Output {
    let ids: Vec<&&str> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let Some(id) = ids.first() else {
        return fail("ID cannot be empty");
    };
    let hits: Vec<Row> = rows(st)
        .into_iter()
        .filter(|r| r.pod.id.starts_with(**id))
        .collect();
    let [r] = hits.as_slice() else {
        return not_found("sandbox", id);
    };
    let v = json!({
        "status": {
            "id": r.pod.id,
            "metadata": {
                "attempt": 0,
                "name": pod_name(m, r.component),
                "namespace": NAMESPACE,
                "uid": r.pod.hash,
            },
            "state": pod_state(r.pod),
            "createdAt": logs::rfc3339_nanos(r.pod.created),
            "network": { "additionalIps": [], "ip": "" },
            "linux": { "namespaces": { "options": {
                "ipc": "NODE", "network": "NODE", "pid": "CONTAINER", "targetId": ""
            } } },
            "labels": pod_labels(m, r),
            "annotations": pod_annotations(r),
            "runtimeHandler": "",
        },
        "info": {
            "pid": 0,
            "processStatus": if r.pod.ready { "running" } else { "deleted" },
            "image": "registry.k8s.io/pause:3.10",
        },
    });
    output(
        0,
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()),
        "",
    )
}

fn inspect(m: &Machine, st: &State, args: &[&str]) -> Output {
    let ids: Vec<&&str> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let Some(id) = ids.first() else {
        return fail("ID cannot be empty");
    };
    let (r, c) = match find_container(st, id) {
        Ok(x) => x,
        Err(o) => return o,
    };
    let v = json!({
        "status": {
            "id": c.id,
            "metadata": { "attempt": c.attempt, "name": r.component },
            "state": container_state(c),
            "createdAt": logs::rfc3339_nanos(c.created),
            "startedAt": logs::rfc3339_nanos(c.created),
            "finishedAt": c.finished.map_or("0001-01-01T00:00:00Z".to_string(), logs::rfc3339_nanos),
            "exitCode": c.exit_code,
            "image": { "image": r.pod.image },
            "imageRef": image_id(&r.pod.image),
            "reason": c.reason,
            "message": "",
            "labels": container_labels(m, &r),
            "annotations": container_annotations(&r, c),
            "mounts": [],
            "logPath": format!(
                "/var/log/pods/{NAMESPACE}_{}_{}/{}/{}.log",
                pod_name(m, r.component), r.pod.hash, r.component, c.attempt
            ),
        },
        "info": { "sandboxID": r.pod.id, "pid": if c.running() { 1 } else { 0 } },
    });
    output(
        0,
        format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()),
        "",
    )
}

/// Run `crictl ARGS`.
pub fn run(m: &Machine, args: &[&str]) -> std::io::Result<Output> {
    let mut rest = args;
    // Global options before the command.
    while let Some((a, more)) = rest.split_first() {
        match *a {
            "-r" | "--runtime-endpoint" | "-i" | "--image-endpoint" | "-t" | "--timeout" | "-c"
            | "--config" => rest = more.get(1..).unwrap_or(&[]),
            "-D" | "--debug" => rest = more,
            "-v" | "--version" => {
                return Ok(output(0, "crictl version v1.32.0\n", ""));
            }
            _ if a.starts_with("--") && a.contains('=') => rest = more,
            _ => break,
        }
    }
    let now = logs::now();
    let st = m.reconcile_at(now)?;
    let Some((verb, args)) = rest.split_first() else {
        return Ok(output(
            0,
            "NAME:\n   crictl - client for CRI\n\nUSAGE:\n   crictl [global options] command [command options]\n",
            "",
        ));
    };
    Ok(match *verb {
        "pods" => pods(m, &st, args, now),
        "ps" => ps(m, &st, args, now),
        "logs" => logs_cmd(m, &st, args, now),
        "inspectp" => inspectp(m, &st, args),
        "inspect" => inspect(m, &st, args),
        other => output(1, "", format!("No help topic for '{other}'\n")),
    })
}
