//! Rehearse: prove on paper that every trust edge stays live through every step.
//!
//! The model holds, per node, what each trust file says (a CA set, a leaf's issuer, a
//! kubeconfig's CA data and client certificate, a manifest's flags), and per running
//! process a copy of its node's files as they were at its last start. Steps act on it as
//! apply acts on the cluster: a write changes the disk, a restart loads the disk into the
//! process, a rollout replaces the owned pods (they read the published trust), and the
//! API server publishes `extension-apiserver-authentication` from what it read at start.
//! After each step, every edge touched by it is judged: the server's certificate must
//! chain to a CA the client trusts, and the client's certificate (if any) to a CA the
//! server accepts, both as the processes hold them. A client that does not verify its
//! server (an API server without `--kubelet-certificate-authority`, kubeadm's default,
//! → a kubelet serving its self-signed `kubelet.crt`) leaves the edge *unverified*: only
//! its client side is judged, and the rehearsal lists it.
//!
//! Rehearse never stops early: it reports the first break of every edge, so the plan's
//! refusal names the first step, and a forced apply can be compared edge by edge with
//! what the live prober sees. It does no I/O.

use super::edges::{Client, Edge, Server, edges};
use super::{Op, Plan, Step};
use crate::diff::{Field, State};
use crate::pki::Fingerprint;
use crate::snapshot::{FileFact, Snapshot};
use petgraph::Direction;
use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

/// What rehearse found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rehearsal {
    /// Edges trustform keeps live (bare pods' excluded).
    pub edges: usize,
    /// Edges of bare pods: judged, but a break is a warning (no rollout restarts them).
    pub unmanaged: usize,
    /// Steps simulated.
    pub steps: usize,
    /// Edges already broken before the first step (not the plan's doing).
    pub broken_before: Vec<Break>,
    /// Managed edges that break, each at its first breaking step, in step order.
    pub breaks: Vec<Break>,
    /// Unmanaged edges (bare pods) that break.
    pub warnings: Vec<Break>,
    /// Steps with an inherent outage (the only API server or etcd member restarts).
    pub gaps: Vec<Gap>,
    /// Edges whose client does not verify the server's certificate (an API server
    /// without `--kubelet-certificate-authority` → a kubelet, as kubeadm leaves it): only
    /// their client side is judged. Counted in `edges` too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unverified: Vec<Unverified>,
}

/// An edge judged on its client side only: its client does not verify the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Unverified {
    /// The edge's name.
    pub edge: String,
    /// Why the server's certificate goes unverified.
    pub why: String,
}

/// An edge that stops verifying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Break {
    /// The step's id (empty: before the first step).
    pub step: String,
    /// `step 8.3 apiserver-certs on cp-2` (or `before the first step`).
    pub at: String,
    /// The edge's name.
    pub edge: String,
    /// Why, with CA names.
    pub why: String,
    /// The step after which it verifies again, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<String>,
}

/// An availability gap: a documented step that takes the only instance down briefly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Gap {
    /// The step's id.
    pub step: String,
    /// `step 5 apiserver-client-ca on cp-1`.
    pub at: String,
    /// What is unavailable.
    pub what: String,
}

impl Rehearsal {
    /// Whether every managed edge stays live.
    pub fn holds(&self) -> bool {
        self.breaks.is_empty()
    }

    /// `Err` naming the first break (and how many follow), with `help`.
    pub fn verdict(&self, help: impl Into<String>) -> Result<(), super::PlanError> {
        match self.breaks.first() {
            None => Ok(()),
            Some(first) => Err(super::PlanError::Break {
                at: first.at.clone(),
                edge: first.edge.clone(),
                why: first.why.clone(),
                more: self.breaks.len() - 1,
                help: help.into(),
            }),
        }
    }

    /// `Continuity: 412 edges stay live through all 135 steps.`, with the unverified
    /// edges counted: `…; 3 edges unverified (the API server does not verify …).`
    pub fn line(&self) -> String {
        let mut s = format!(
            "Continuity: {} edges stay live through all {} steps",
            self.edges, self.steps
        );
        if !self.holds() {
            s = format!(
                "Continuity: {} of {} edges break (first: {})",
                distinct(&self.breaks),
                self.edges,
                self.breaks[0].at
            );
        }
        // One count per reason, in order of first appearance.
        let mut reasons: Vec<(&str, usize)> = vec![];
        for u in &self.unverified {
            match reasons.iter_mut().find(|(w, _)| *w == u.why) {
                Some((_, n)) => *n += 1,
                None => reasons.push((&u.why, 1)),
            }
        }
        for (i, (why, n)) in reasons.into_iter().enumerate() {
            let sep = if i == 0 { ";" } else { "," };
            let edges = if n == 1 { "edge" } else { "edges" };
            s.push_str(&format!("{sep} {n} {edges} unverified ({why})"));
        }
        s.push('.');
        s
    }
}

fn distinct(v: &[Break]) -> usize {
    let mut names: Vec<&str> = v.iter().map(|b| b.edge.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

/// How a step is named in reports.
pub fn step_label(s: &Step) -> String {
    let doc = s
        .doc_step
        .as_deref()
        .map_or_else(|| "step".to_string(), |d| format!("step {d}"));
    format!("{doc} {} on {}", s.template, s.target)
}

/// What a file says, for trust.
#[derive(Clone, Debug, PartialEq)]
enum Content {
    /// CA certificates (a bundle).
    Cas(Vec<Fingerprint>),
    /// A leaf: its issuer, when known.
    Leaf(Option<Fingerprint>),
    /// A kubeconfig: CA data, client certificate.
    Kubeconfig { ca: Vec<Fingerprint>, client: Cred },
    /// A static pod manifest's flags.
    Manifest(BTreeMap<String, String>),
    /// The kubelet's config: its client CA file, and where its serving certificate
    /// comes from.
    KubeletConfig {
        client_ca: Option<String>,
        serving: crate::kubelet::Serving,
    },
}

/// A kubeconfig's client certificate.
#[derive(Clone, Debug, PartialEq)]
enum Cred {
    None,
    /// Embedded, issued by (when known).
    Data(Option<Fingerprint>),
    /// A file it names.
    File(String),
}

type Files = HashMap<String, Content>;

/// What a dependency of an edge is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Disk(String),
    Proc(String, String),
    Pods,
    ExtensionAuth,
}

struct World<'a> {
    disk: HashMap<String, Files>,
    held: HashMap<(String, String), Files>,
    manifests: HashMap<(String, String), String>,
    kubelet_config: HashMap<String, String>,
    /// Trust of each pod group's owned pods, and of its bare pods.
    pods: Vec<(Vec<Fingerprint>, Vec<Fingerprint>)>,
    /// The key that signed each pod's service-account token (`None`: a kid naming no
    /// key), by `namespace/name`.
    tokens: HashMap<String, Option<Fingerprint>>,
    extension_auth: Option<Vec<Fingerprint>>,
    label: &'a dyn Fn(&Fingerprint) -> String,
}

fn content_of(fact: &FileFact) -> Option<Content> {
    Some(match fact {
        FileFact::Certificates { certs, .. } if certs.iter().all(|c| c.ca) => {
            Content::Cas(certs.iter().map(|c| c.fingerprint.clone()).collect())
        }
        FileFact::Certificates { certs, .. } => {
            Content::Leaf(certs.iter().find(|c| !c.ca)?.issued_by.clone())
        }
        // Public keys (sa.pub) are the service-account authority's trust set.
        FileFact::PublicKeys { keys } => Content::Cas(keys.clone()),
        FileFact::Kubeconfig(k) => Content::Kubeconfig {
            ca: k.ca.clone(),
            client: match (&k.client, k.client_source.as_deref()) {
                (Some(c), Some("data")) => Cred::Data(c.issued_by.clone()),
                (_, Some(path)) => Cred::File(path.to_string()),
                _ => Cred::None,
            },
        },
        _ => return None,
    })
}

impl<'a> World<'a> {
    fn new(snap: &Snapshot, label: &'a dyn Fn(&Fingerprint) -> String) -> Self {
        let mut w = World {
            disk: HashMap::new(),
            held: HashMap::new(),
            manifests: HashMap::new(),
            kubelet_config: HashMap::new(),
            pods: vec![],
            tokens: snap
                .tokens
                .iter()
                .map(|t| (t.pod.clone(), t.key.clone()))
                .collect(),
            extension_auth: None,
            label,
        };
        for n in &snap.nodes {
            let mut files: Files = n
                .files
                .iter()
                .filter_map(|(p, f)| Some((p.clone(), content_of(f)?)))
                .collect();
            for (name, c) in &n.components {
                files.insert(c.manifest.clone(), Content::Manifest(c.flags.clone()));
                w.manifests
                    .insert((n.name.clone(), name.clone()), c.manifest.clone());
            }
            if let Some(k) = &n.kubelet {
                files.insert(
                    k.config.clone(),
                    Content::KubeletConfig {
                        client_ca: k.client_ca_file.clone(),
                        serving: k.serving.clone(),
                    },
                );
                w.kubelet_config.insert(n.name.clone(), k.config.clone());
            }
            // A running process is assumed to hold what is on disk now: the snapshot
            // cannot see a process's memory, and a cluster at rest holds its files.
            let procs = n
                .components
                .keys()
                .cloned()
                .chain(n.kubelet.as_ref().map(|_| "kubelet".to_string()));
            for p in procs {
                w.held.insert((n.name.clone(), p), files.clone());
            }
            w.disk.insert(n.name.clone(), files);
        }
        if let Some(k) = &snap.kube {
            w.pods = k
                .pods
                .iter()
                .map(|g| {
                    let t = g.trust.clone().unwrap_or_default();
                    (t.clone(), t)
                })
                .collect();
            w.extension_auth = k.extension_auth.clone();
        }
        if w.extension_auth.is_none()
            && let Some(cp) = snap
                .nodes
                .iter()
                .find(|n| n.components.contains_key("kube-apiserver"))
        {
            w.extension_auth = w.flag_cas(
                &w.disk[&cp.name],
                &cp.name,
                "kube-apiserver",
                "requestheader-client-ca-file",
            );
        }
        w
    }

    fn flags<'f>(
        &self,
        files: &'f Files,
        node: &str,
        comp: &str,
    ) -> Option<&'f BTreeMap<String, String>> {
        let m = self.manifests.get(&(node.to_string(), comp.to_string()))?;
        match files.get(m)? {
            Content::Manifest(f) => Some(f),
            _ => None,
        }
    }

    fn flag_path<'f>(
        &self,
        files: &'f Files,
        node: &str,
        comp: &str,
        flag: &str,
    ) -> Option<&'f String> {
        self.flags(files, node, comp)?.get(flag)
    }

    fn flag_cas(
        &self,
        files: &Files,
        node: &str,
        comp: &str,
        flag: &str,
    ) -> Option<Vec<Fingerprint>> {
        match files.get(self.flag_path(files, node, comp, flag)?)? {
            Content::Cas(v) => Some(v.clone()),
            _ => None,
        }
    }

    fn flag_leaf(
        &self,
        files: &Files,
        node: &str,
        comp: &str,
        flag: &str,
    ) -> Option<Option<Fingerprint>> {
        match files.get(self.flag_path(files, node, comp, flag)?)? {
            Content::Leaf(i) => Some(i.clone()),
            _ => None,
        }
    }

    fn proc_files(&self, node: &str, comp: &str) -> Option<&Files> {
        self.held.get(&(node.to_string(), comp.to_string()))
    }

    fn labels(&self, v: &[Fingerprint]) -> String {
        if v.is_empty() {
            return "no CA".into();
        }
        v.iter()
            .map(|f| (self.label)(f))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn issuer(&self, i: &Option<Fingerprint>) -> String {
        i.as_ref()
            .map_or_else(|| "an unknown CA".to_string(), |f| (self.label)(f))
    }

    /// The server's serving certificate issuer (`None` inside: unknown; outer `None`: a
    /// server the cluster's CAs do not sign) and the CAs it accepts client certificates
    /// from, with where they come from.
    #[allow(clippy::type_complexity)]
    fn server(
        &self,
        s: &Server,
    ) -> Result<(Option<Option<Fingerprint>>, Vec<Fingerprint>, String), String> {
        let who = s.describe();
        let (node, comp, cert, ca) = match s {
            Server::ApiServer { node } => {
                (node, "kube-apiserver", "tls-cert-file", "client-ca-file")
            }
            Server::Etcd { node, peer: false } => (node, "etcd", "cert-file", "trusted-ca-file"),
            Server::Etcd { node, peer: true } => {
                (node, "etcd", "peer-cert-file", "peer-trusted-ca-file")
            }
            Server::Kubelet { node } => {
                let files = self
                    .proc_files(node, "kubelet")
                    .ok_or(format!("{who} is not running"))?;
                let cfg = self.kubelet_config.get(node).and_then(|p| files.get(p));
                let Some(Content::KubeletConfig { client_ca, serving }) = cfg else {
                    return Err(format!("{who} has no configuration"));
                };
                let issuer = match (files.get(serving.cert()), serving) {
                    (Some(Content::Leaf(i)), _) => i.clone(),
                    // A certificate that is its own CA (older kubelets made kubelet.crt
                    // so): issued by itself.
                    (Some(Content::Cas(v)), _) if !v.is_empty() => Some(v[0].clone()),
                    // The kubelet makes a self-signed one at start, from a new CA of its
                    // own: nobody's trust holds it.
                    (None, crate::kubelet::Serving::SelfSigned { .. }) => None,
                    _ => {
                        return Err(format!(
                            "{who} has no serving certificate {}",
                            serving.describe()
                        ));
                    }
                };
                let Some(path) = client_ca else {
                    return Err(format!("{who} has no authentication.x509.clientCAFile"));
                };
                let Some(Content::Cas(cas)) = files.get(path) else {
                    return Err(format!("{who}'s clientCAFile {path} holds no CA"));
                };
                return Ok((
                    Some(issuer),
                    cas.clone(),
                    format!("its clientCAFile {path} as it read it at its last start"),
                ));
            }
            Server::Aggregated => {
                let cas = self.extension_auth.clone().unwrap_or_default();
                return Ok((
                    None,
                    cas,
                    "requestheader-client-ca-file of extension-apiserver-authentication".into(),
                ));
            }
        };
        let files = self
            .proc_files(node, comp)
            .ok_or(format!("{who} is not running"))?;
        let serving = self
            .flag_leaf(files, node, comp, cert)
            .ok_or(format!("{who} has no --{cert}"))?;
        let cas = self
            .flag_cas(files, node, comp, ca)
            .ok_or(format!("{who} has no --{ca}"))?;
        let path = self
            .flag_path(files, node, comp, ca)
            .cloned()
            .unwrap_or_default();
        Ok((
            Some(serving),
            cas,
            format!("--{ca} {path} as it read it at its last start"),
        ))
    }

    /// The client's trust (`None`: it does not verify against the cluster's CAs) with its
    /// source, and its certificate's issuer (`None`: no certificate).
    #[allow(clippy::type_complexity)]
    fn client(
        &self,
        c: &Client,
        managed: bool,
    ) -> Result<
        (
            Option<(Vec<Fingerprint>, String)>,
            Option<Option<Fingerprint>>,
        ),
        String,
    > {
        let who = c.describe();
        match c {
            Client::Kubeconfig {
                node,
                path,
                component,
            } => {
                let (files, how) = match component {
                    Some(comp) => (
                        self.proc_files(node, comp)
                            .ok_or(format!("{who} is not running"))?,
                        format!("{path} as it read it at its last start"),
                    ),
                    None => (
                        self.disk.get(node).ok_or(format!("no node {node}"))?,
                        format!("{path} on disk"),
                    ),
                };
                let Some(Content::Kubeconfig { ca, client }) = files.get(path) else {
                    return Err(format!("{who}: {path} is not a kubeconfig"));
                };
                let cert = match client {
                    Cred::None => None,
                    Cred::Data(i) => Some(i.clone()),
                    Cred::File(p) => match files.get(p) {
                        Some(Content::Leaf(i)) => Some(i.clone()),
                        _ => Some(None),
                    },
                };
                Ok((Some((ca.clone(), how)), cert))
            }
            Client::Flags {
                node,
                component,
                ca,
                cert,
                ..
            } => {
                let files = self
                    .proc_files(node, component)
                    .ok_or(format!("{who} is not running"))?;
                let trust = match ca {
                    Some(flag) => {
                        let cas = self
                            .flag_cas(files, node, component, flag)
                            .ok_or(format!("{who} has no --{flag}"))?;
                        let path = self
                            .flag_path(files, node, component, flag)
                            .cloned()
                            .unwrap_or_default();
                        Some((
                            cas,
                            format!("--{flag} {path} as it read it at its last start"),
                        ))
                    }
                    None => None,
                };
                let leaf = self
                    .flag_leaf(files, node, component, cert)
                    .ok_or(format!("{who} has no --{cert}"))?;
                Ok((trust, Some(leaf)))
            }
            Client::Pod { name, group } => {
                let (owned, bare) = self
                    .pods
                    .get(*group)
                    .ok_or(format!("{who}: unknown pod {name}"))?;
                let trust = if managed { owned } else { bare };
                Ok((
                    Some((
                        trust.clone(),
                        "the kube-root-ca.crt it read at its start".into(),
                    )),
                    None,
                ))
            }
        }
    }

    /// Judge one edge: `Ok` when both directions verify.
    fn judge(&self, e: &Edge) -> Result<(), String> {
        let server = e.server.describe();
        let client = e.client.describe();
        let (serving, accepts, accepts_from) = self.server(&e.server)?;
        let (trust, cert) = self.client(&e.client, e.managed)?;
        if let (Some(serving), Some((trust, from))) = (serving, trust)
            && !serving.as_ref().is_some_and(|i| trust.contains(i))
        {
            return Err(format!(
                "{server} serves a certificate issued by {}, but {client} trusts only {} ({from})",
                self.issuer(&serving),
                self.labels(&trust)
            ));
        }
        if let Some(cert) = cert
            && !cert.as_ref().is_some_and(|i| accepts.contains(i))
        {
            return Err(format!(
                "{client} presents a certificate issued by {}, but {server} accepts only {} ({accepts_from})",
                self.issuer(&cert),
                self.labels(&accepts)
            ));
        }
        self.token(e)
    }

    /// A pod's service-account token against the keys its API server accepts
    /// (`--service-account-key-file`, as it read it at its last start).
    fn token(&self, e: &Edge) -> Result<(), String> {
        let (Client::Pod { name, .. }, Server::ApiServer { node }) = (&e.client, &e.server) else {
            return Ok(());
        };
        let Some(key) = self.tokens.get(name) else {
            return Ok(());
        };
        let flag = "service-account-key-file";
        let comp = "kube-apiserver";
        let Some(files) = self.proc_files(node, comp) else {
            return Ok(());
        };
        let Some(accepts) = self.flag_cas(files, node, comp, flag) else {
            return Ok(());
        };
        if key.as_ref().is_some_and(|k| accepts.contains(k)) {
            return Ok(());
        }
        let path = self
            .flag_path(files, node, comp, flag)
            .cloned()
            .unwrap_or_default();
        Err(format!(
            "{} presents a service-account token signed by {}, but {} accepts only {} (--{flag} {path} as it read it at its last start)",
            e.client.describe(),
            key.as_ref()
                .map_or_else(|| "an unknown key".to_string(), |k| (self.label)(k)),
            e.server.describe(),
            self.labels(&accepts)
        ))
    }

    /// Apply one step to the model; returns what changed.
    fn apply(&mut self, step: &Step) -> Vec<Key> {
        let mut touched = Vec::new();
        for op in &step.ops {
            match op {
                Op::Set {
                    node: Some(n),
                    path,
                    field,
                    want,
                    ..
                } => {
                    let Some(files) = self.disk.get_mut(n) else {
                        continue;
                    };
                    write(files, path, field, want);
                    touched.push(Key::Disk(n.clone()));
                }
                Op::Set {
                    node: None,
                    field: Field::PodTrust,
                    want: State::Members(v),
                    ..
                } => {
                    // A rollout replaces every owned pod that does not trust `v`; the new
                    // pods read the published kube-root-ca.crt. Bare pods stay.
                    for (owned, _) in &mut self.pods {
                        owned.clone_from(v);
                    }
                    touched.push(Key::Pods);
                }
                Op::Set {
                    node: None,
                    field: Field::Tokens,
                    want: State::Members(v),
                    ..
                } => {
                    // The kubelets refresh every pod's token from API servers that sign
                    // with the new key.
                    for key in self.tokens.values_mut() {
                        *key = v.first().cloned();
                    }
                    touched.push(Key::Pods);
                }
                Op::Set { node: None, .. } | Op::Verify { .. } => {}
                // A manual restart is rehearsed as the restart it stands for: apply goes
                // on only once the operator confirms it was done.
                Op::Restart { node, component }
                | Op::ManualRestart {
                    node, component, ..
                } => {
                    let Some(files) = self.disk.get(node).cloned() else {
                        continue;
                    };
                    if component == "kube-apiserver" {
                        // At start, an API server publishes its requestheader CA.
                        if let Some(cas) =
                            self.flag_cas(&files, node, component, "requestheader-client-ca-file")
                        {
                            self.extension_auth = Some(cas);
                            touched.push(Key::ExtensionAuth);
                        }
                    }
                    self.held.insert((node.clone(), component.clone()), files);
                    touched.push(Key::Proc(node.clone(), component.clone()));
                }
            }
        }
        touched
    }
}

/// Write `want` into the model's file at `path`.
fn write(files: &mut Files, path: &str, field: &Field, want: &State) {
    match (field, want) {
        (Field::Bundle | Field::SignerCopy, State::Members(v)) => {
            files.insert(path.to_string(), Content::Cas(v.clone()));
        }
        (Field::Bundle | Field::SignerCopy, State::Absent) => {
            files.remove(path);
        }
        (Field::Leaf, State::IssuedBy(i) | State::Renewed { issuer: i, .. }) => {
            files.insert(path.to_string(), Content::Leaf(Some(i.clone())));
        }
        (Field::KubeconfigCa, State::Members(v)) => {
            if let Some(Content::Kubeconfig { ca, .. }) = files.get_mut(path) {
                ca.clone_from(v);
            }
        }
        (Field::KubeconfigClient, State::IssuedBy(i) | State::Renewed { issuer: i, .. }) => {
            if let Some(Content::Kubeconfig { client, .. }) = files.get_mut(path) {
                *client = Cred::Data(Some(i.clone()));
            }
        }
        (Field::Flag(_, flag), State::Path(p)) => {
            if let Some(Content::Manifest(flags)) = files.get_mut(path) {
                flags.insert(flag.clone(), p.clone());
            }
        }
        _ => {}
    }
}

/// The things an edge's verdict depends on.
fn keys(e: &Edge) -> Vec<Key> {
    let mut k = vec![];
    match &e.client {
        Client::Kubeconfig {
            node,
            component: Some(c),
            ..
        }
        | Client::Flags {
            node, component: c, ..
        } => k.push(Key::Proc(node.clone(), c.clone())),
        Client::Kubeconfig {
            node,
            component: None,
            ..
        } => k.push(Key::Disk(node.clone())),
        Client::Pod { .. } => k.push(Key::Pods),
    }
    match &e.server {
        Server::ApiServer { node } => k.push(Key::Proc(node.clone(), "kube-apiserver".into())),
        Server::Kubelet { node } => k.push(Key::Proc(node.clone(), "kubelet".into())),
        Server::Etcd { node, .. } => k.push(Key::Proc(node.clone(), "etcd".into())),
        Server::Aggregated => k.push(Key::ExtensionAuth),
    }
    k
}

/// The plan's steps in the order rehearse (and a walker with one slot) runs them: a
/// topological order of `depends_on` ([`Plan::graph`]), ties broken by position in the
/// file. A plan whose graph does not build (never one `build` or `load_plan_text` let
/// through) is taken in file order.
pub fn order(plan: &Plan) -> Vec<usize> {
    let Ok(g) = plan.graph() else {
        return (0..plan.steps.len()).collect();
    };
    let mut indegree: Vec<usize> = g
        .node_indices()
        .map(|i| g.neighbors_directed(i, Direction::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = (0..indegree.len())
        .filter(|i| indegree[*i] == 0)
        .map(Reverse)
        .collect();
    let mut out = Vec::with_capacity(indegree.len());
    while let Some(Reverse(i)) = ready.pop() {
        out.push(i);
        for d in g.neighbors_directed(NodeIndex::new(i), Direction::Outgoing) {
            let d = d.index();
            indegree[d] -= 1;
            if indegree[d] == 0 {
                ready.push(Reverse(d));
            }
        }
    }
    out
}

/// Rehearse `plan` on the cluster in `snap`. `label` names a CA for people.
pub fn rehearse(snap: &Snapshot, plan: &Plan, label: &dyn Fn(&Fingerprint) -> String) -> Rehearsal {
    let edges = edges(snap);
    let mut world = World::new(snap, label);
    let mut by_key: HashMap<Key, Vec<usize>> = HashMap::new();
    for (i, e) in edges.iter().enumerate() {
        for k in keys(e) {
            by_key.entry(k).or_default().push(i);
        }
    }
    let mut out = Rehearsal {
        edges: edges.iter().filter(|e| e.managed).count(),
        unmanaged: edges.iter().filter(|e| !e.managed).count(),
        steps: plan.steps.len(),
        unverified: edges
            .iter()
            .filter_map(|e| {
                Some(Unverified {
                    edge: e.name.clone(),
                    why: e.unverified()?.to_string(),
                })
            })
            .collect(),
        ..Default::default()
    };
    // Per edge: broken now? and the index of its open break in `out`.
    let mut live: Vec<bool> = Vec::with_capacity(edges.len());
    for e in &edges {
        let verdict = world.judge(e);
        live.push(verdict.is_ok());
        if let Err(why) = verdict {
            out.broken_before.push(Break {
                step: String::new(),
                at: "before the first step".into(),
                edge: e.name.clone(),
                why,
                restored: None,
            });
        }
    }
    let was_live = live.clone();
    let mut open: HashMap<usize, (bool, usize)> = HashMap::new();
    let cps = snap
        .nodes
        .iter()
        .filter(|n| n.components.contains_key("kube-apiserver"))
        .count();
    let etcds = snap
        .nodes
        .iter()
        .filter(|n| n.components.contains_key("etcd"))
        .count();
    for i in order(plan) {
        let step = &plan.steps[i];
        let at = step_label(step);
        for op in &step.ops {
            if let Op::Restart { component, node }
            | Op::ManualRestart {
                component, node, ..
            } = op
            {
                let what = match component.as_str() {
                    "kube-apiserver" if cps == 1 => {
                        Some("the only API server restarts: its clients wait or retry")
                    }
                    "etcd" if etcds == 1 => {
                        Some("the only etcd member restarts: the API server cannot read or write")
                    }
                    _ => None,
                };
                if let Some(what) = what {
                    out.gaps.push(Gap {
                        step: step.id.clone(),
                        at: at.clone(),
                        what: format!("{what} ({node})"),
                    });
                }
            }
        }
        let mut todo: Vec<usize> = world
            .apply(step)
            .iter()
            .flat_map(|k| by_key.get(k).into_iter().flatten().copied())
            .collect();
        todo.sort_unstable();
        todo.dedup();
        for e in todo {
            if !was_live[e] {
                continue;
            }
            let verdict = world.judge(&edges[e]);
            match (live[e], verdict) {
                (true, Err(why)) => {
                    live[e] = false;
                    let b = Break {
                        step: step.id.clone(),
                        at: at.clone(),
                        edge: edges[e].name.clone(),
                        why,
                        restored: None,
                    };
                    let list = if edges[e].managed {
                        &mut out.breaks
                    } else {
                        &mut out.warnings
                    };
                    open.insert(e, (edges[e].managed, list.len()));
                    list.push(b);
                }
                (false, Ok(())) => {
                    live[e] = true;
                    if let Some((managed, j)) = open.remove(&e) {
                        let list = if managed {
                            &mut out.breaks
                        } else {
                            &mut out.warnings
                        };
                        list[j].restored = Some(at.clone());
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Authority;
    use crate::diff::tests::*;
    use crate::procedure::{Action, Stage};

    /// `ca-1`, `ca-2`, … after the fixture's made-up fingerprints.
    fn label(f: &Fingerprint) -> String {
        format!("ca-{}", &f.0[7..8])
    }

    /// A hand-made step of `template` (documented number `doc`) on `target`.
    fn step(template: &str, doc: Option<&str>, target: &str, ops: Vec<Op>) -> Step {
        Step {
            id: format!("kubernetes-ca/{template}@{target}"),
            procedure: "kubernetes-ca".into(),
            template: template.into(),
            doc_step: doc.map(str::to_string),
            title: String::new(),
            stage: Stage::Rotate,
            target: target.into(),
            action: Action::WriteCaFiles,
            kind: Action::WriteCaFiles.kind(),
            changes: vec![],
            why: None,
            disruption: None,
            ops,
            depends_on: vec![],
        }
    }

    fn set(node: &str, path: &str, field: Field, want: State) -> Op {
        Op::Set {
            node: Some(node.into()),
            authority: Authority::Kubernetes,
            path: path.into(),
            field,
            want,
            replaces: vec![],
        }
    }

    fn restart(template: &str, node: &str, component: &str) -> Step {
        step(
            template,
            None,
            node,
            vec![Op::Restart {
                node: node.into(),
                component: component.into(),
            }],
        )
    }

    /// Restart every process of `cp-1` + `w-1`.
    fn restart_all(template: &str) -> Vec<Step> {
        vec![
            restart(template, "cp-1", "kube-apiserver"),
            restart(template, "cp-1", "kube-controller-manager"),
            restart(template, "cp-1", "kube-scheduler"),
            restart(template, "cp-1", "kubelet"),
            restart(template, "w-1", "kubelet"),
        ]
    }

    fn plan(steps: Vec<Step>) -> Plan {
        Plan {
            format_version: super::super::FORMAT_VERSION,
            tool_version: "0".into(),
            cluster: "t".into(),
            checksum: String::new(),
            snapshot_fingerprint: String::new(),
            config_hash: String::new(),
            observed: BTreeMap::new(),
            authorities: vec![],
            summary: super::super::Summary::of(&steps),
            steps,
            skipped: vec![],
            continuity: None,
        }
    }

    fn run(snap: &Snapshot, steps: Vec<Step>) -> Rehearsal {
        rehearse(snap, &plan(steps), &label)
    }

    const CP_KUBECONFIGS: [&str; 5] = [ADMIN, SUPER_ADMIN, KCM_CONF, SCHED_CONF, KUBELET_CONF];

    /// Every trust file of the cluster CA on cp-1 and w-1 holds `cas`.
    fn trust(template: &str, cas: &[Fingerprint]) -> Vec<Step> {
        let m = || State::Members(cas.to_vec());
        let mut cp = vec![set("cp-1", CA, Field::Bundle, m())];
        cp.extend(
            CP_KUBECONFIGS
                .iter()
                .map(|p| set("cp-1", p, Field::KubeconfigCa, m())),
        );
        let w = vec![
            set("w-1", CA, Field::Bundle, m()),
            set("w-1", KUBELET_CONF, Field::KubeconfigCa, m()),
        ];
        vec![
            step(template, None, "cp-1", cp),
            step(template, None, "w-1", w),
        ]
    }

    /// Every leaf of the cluster CA on cp-1 and w-1 re-issued by `issuer`.
    fn reissue(issuer: &Fingerprint) -> Vec<Step> {
        let by = || State::IssuedBy(issuer.clone());
        let mut cp: Vec<Op> = [APISERVER, APISERVER_KUBELET, KUBELET_CLIENT]
            .iter()
            .map(|p| set("cp-1", p, Field::Leaf, by()))
            .collect();
        cp.extend(
            [ADMIN, SUPER_ADMIN, KCM_CONF, SCHED_CONF]
                .iter()
                .map(|p| set("cp-1", p, Field::KubeconfigClient, by())),
        );
        vec![
            step("apiserver-certs", Some("8.3"), "cp-1", cp),
            step(
                "kubelet-trust",
                Some("8.2"),
                "w-1",
                vec![set("w-1", KUBELET_CLIENT, Field::Leaf, by())],
            ),
        ]
    }

    fn break_names(v: &[Break]) -> Vec<&str> {
        let mut n: Vec<&str> = v.iter().map(|b| b.edge.as_str()).collect();
        n.sort_unstable();
        n
    }

    /// The six clients of the API server on cp-1 of a 1 + 1 cluster.
    fn api_clients() -> Vec<&'static str> {
        let mut v = vec![
            "kube-controller-manager on cp-1 → kube-apiserver on cp-1",
            "kube-scheduler on cp-1 → kube-apiserver on cp-1",
            "kubectl (cp-1:/etc/kubernetes/admin.conf) → kube-apiserver on cp-1",
            "kubectl (cp-1:/etc/kubernetes/super-admin.conf) → kube-apiserver on cp-1",
            "kubelet on cp-1 → kube-apiserver on cp-1",
            "kubelet on w-1 → kube-apiserver on cp-1",
        ];
        v.sort_unstable();
        v
    }

    #[test]
    fn the_documented_order_keeps_every_edge_live() {
        // Trust both, restart; re-issue from the new CA, restart; trust only the new,
        // restart.
        let (o, n) = (k_old(), k_new());
        let mut steps = trust("trust-both", &[o.clone(), n.clone()]);
        steps.extend(restart_all("restart-pre"));
        steps.extend(reissue(&n));
        steps.extend(restart_all("restart-rotate"));
        steps.extend(trust("drop-old", std::slice::from_ref(&n)));
        steps.extend(restart_all("restart-post"));
        let count = steps.len();
        let r = run(&cluster(1, 1), steps);
        assert_eq!(r.breaks, []);
        assert!(r.holds() && r.broken_before.is_empty() && r.warnings.is_empty());
        assert_eq!((r.edges, r.unmanaged, r.steps), (10, 0, count));
        assert!(r.verdict("h").is_ok());
    }

    #[test]
    fn a_bundle_of_old_and_new_accepts_client_certificates_of_both() {
        // The API server trusts both; only w-1's kubelet moves to the new CA.
        let (o, n) = (k_old(), k_new());
        let mut steps = vec![step(
            "distribute-ca",
            Some("1"),
            "cp-1",
            vec![set(
                "cp-1",
                CA,
                Field::Bundle,
                State::Members(vec![o, n.clone()]),
            )],
        )];
        steps.push(restart("apiserver-client-ca", "cp-1", "kube-apiserver"));
        steps.push(step(
            "kubelet-trust",
            Some("8.2"),
            "w-1",
            vec![set("w-1", KUBELET_CLIENT, Field::Leaf, State::IssuedBy(n))],
        ));
        steps.push(restart("restart-kubelet", "w-1", "kubelet"));
        let r = run(&cluster(1, 1), steps);
        assert_eq!(r.breaks, []);
    }

    #[test]
    fn a_written_file_breaks_nothing_until_its_reader_restarts() {
        let r = run(
            &cluster(1, 1),
            vec![step(
                "control-plane-drop-old",
                Some("11.2"),
                "cp-1",
                vec![set(
                    "cp-1",
                    CA,
                    Field::Bundle,
                    State::Members(vec![k_new()]),
                )],
            )],
        );
        assert_eq!(r.breaks, []);
    }

    #[test]
    fn dropping_the_old_ca_before_the_leaves_are_reissued_is_refused_at_the_restart() {
        let steps = vec![
            step(
                "control-plane-drop-old",
                Some("11.2"),
                "cp-1",
                vec![set(
                    "cp-1",
                    CA,
                    Field::Bundle,
                    State::Members(vec![k_new()]),
                )],
            ),
            restart("restart-apiserver-drop-old", "cp-1", "kube-apiserver"),
        ];
        let r = run(&cluster(1, 1), steps);
        // Every client of the API server presents a certificate of the old CA.
        assert_eq!(break_names(&r.breaks), api_clients());
        assert!(
            r.breaks
                .iter()
                .all(|b| b.at == "step restart-apiserver-drop-old on cp-1"
                    && b.step == "kubernetes-ca/restart-apiserver-drop-old@cp-1")
        );
        let w1 = r
            .breaks
            .iter()
            .find(|b| b.edge == "kubelet on w-1 → kube-apiserver on cp-1")
            .unwrap();
        assert_eq!(
            w1.why,
            "kubelet on w-1 presents a certificate issued by ca-1, but kube-apiserver on cp-1 accepts only ca-2 (--client-ca-file /etc/kubernetes/pki/ca.crt as it read it at its last start)"
        );
        // The kubelets' own clientCAFile was not touched: the API server → kubelet edges hold.
        assert!(!r.breaks.iter().any(|b| b.edge.contains("→ kubelet on")));
    }

    #[test]
    fn reissuing_the_serving_certificate_before_clients_trust_the_new_ca_is_refused() {
        let steps = vec![
            step(
                "apiserver-certs",
                Some("8.3"),
                "cp-1",
                vec![set(
                    "cp-1",
                    APISERVER,
                    Field::Leaf,
                    State::IssuedBy(k_new()),
                )],
            ),
            restart("restart-apiserver", "cp-1", "kube-apiserver"),
        ];
        let r = run(&cluster(1, 1), steps);
        assert_eq!(break_names(&r.breaks), api_clients());
        let w1 = r
            .breaks
            .iter()
            .find(|b| b.edge == "kubelet on w-1 → kube-apiserver on cp-1")
            .unwrap();
        assert_eq!(w1.at, "step restart-apiserver on cp-1");
        assert_eq!(
            w1.why,
            "kube-apiserver on cp-1 serves a certificate issued by ca-2, but kubelet on w-1 trusts only ca-1 (/etc/kubernetes/kubelet.conf as it read it at its last start)"
        );
        let kubectl = r
            .breaks
            .iter()
            .find(|b| {
                b.edge
                    .starts_with("kubectl (cp-1:/etc/kubernetes/admin.conf)")
            })
            .unwrap();
        assert!(
            kubectl
                .why
                .ends_with("(/etc/kubernetes/admin.conf on disk)")
        );
    }

    #[test]
    fn the_verdict_names_the_first_break_and_counts_the_rest() {
        let steps = vec![
            step(
                "apiserver-certs",
                Some("8.3"),
                "cp-1",
                vec![set(
                    "cp-1",
                    APISERVER,
                    Field::Leaf,
                    State::IssuedBy(k_new()),
                )],
            ),
            restart("restart-apiserver", "cp-1", "kube-apiserver"),
        ];
        let r = run(&cluster(1, 1), steps);
        let Err(super::super::PlanError::Break {
            at,
            edge,
            more,
            help,
            ..
        }) = r.verdict("fix it")
        else {
            panic!("a break passes the verdict");
        };
        assert_eq!(at, "step restart-apiserver on cp-1");
        assert_eq!(edge, r.breaks[0].edge);
        assert_eq!((more, help.as_str()), (5, "fix it"));
        assert!(r.line().starts_with(
            "Continuity: 6 of 10 edges break (first: step restart-apiserver on cp-1)"
        ));
    }

    #[test]
    fn a_break_is_restored_by_the_step_that_mends_it() {
        let steps = vec![
            step(
                "apiserver-certs",
                Some("8.3"),
                "cp-1",
                vec![set(
                    "cp-1",
                    APISERVER,
                    Field::Leaf,
                    State::IssuedBy(k_new()),
                )],
            ),
            restart("restart-apiserver", "cp-1", "kube-apiserver"),
            step(
                "kubelet-trust",
                Some("8.2"),
                "w-1",
                vec![set(
                    "w-1",
                    KUBELET_CONF,
                    Field::KubeconfigCa,
                    State::Members(vec![k_old(), k_new()]),
                )],
            ),
            restart("restart-kubelet", "w-1", "kubelet"),
        ];
        let r = run(&cluster(1, 1), steps);
        for b in &r.breaks {
            let want = (b.edge == "kubelet on w-1 → kube-apiserver on cp-1")
                .then(|| "step restart-kubelet on w-1".to_string());
            assert_eq!(b.restored, want, "{}", b.edge);
        }
        assert_eq!(r.breaks.len(), 6, "a mended break is still reported");
    }

    #[test]
    fn an_edge_broken_before_the_plan_is_not_the_plans_break() {
        let mut snap = cluster(1, 1);
        snap.nodes[1].files.insert(
            KUBELET_CONF.into(),
            kubeconfig(&[fp('9')], &k_old(), Some(KUBELET_CLIENT)),
        );
        let r = run(&snap, restart_all("restart"));
        assert_eq!(
            break_names(&r.broken_before),
            ["kubelet on w-1 → kube-apiserver on cp-1"]
        );
        assert_eq!(r.broken_before[0].at, "before the first step");
        assert_eq!(r.breaks, []);
    }

    #[test]
    fn a_front_proxy_client_from_a_ca_the_aggregated_servers_do_not_trust_breaks() {
        let steps = vec![
            step(
                "front-proxy-client",
                Some("8.3"),
                "cp-1",
                vec![set(
                    "cp-1",
                    FP_CLIENT,
                    Field::Leaf,
                    State::IssuedBy(f_new()),
                )],
            ),
            restart("restart-apiserver", "cp-1", "kube-apiserver"),
        ];
        let r = run(&cluster(1, 0), steps);
        assert_eq!(
            break_names(&r.breaks),
            ["kube-apiserver on cp-1 → aggregated API server (front proxy)"]
        );
        assert!(
            r.breaks[0]
                .why
                .contains("presents a certificate issued by ca-4")
        );
    }

    #[test]
    fn aggregated_servers_trust_what_the_restarted_api_server_publishes() {
        let both = State::Members(vec![f_old(), f_new()]);
        let steps = vec![
            step(
                "distribute-ca",
                Some("1"),
                "cp-1",
                vec![set("cp-1", FP_CA, Field::Bundle, both)],
            ),
            restart("apiserver-requestheader-ca", "cp-1", "kube-apiserver"),
            step(
                "front-proxy-client",
                Some("8.3"),
                "cp-1",
                vec![set(
                    "cp-1",
                    FP_CLIENT,
                    Field::Leaf,
                    State::IssuedBy(f_new()),
                )],
            ),
            restart("restart-apiserver", "cp-1", "kube-apiserver"),
        ];
        assert_eq!(run(&cluster(1, 0), steps).breaks, []);
    }

    #[test]
    fn the_only_api_server_or_etcd_member_restarting_is_a_gap() {
        let steps = vec![
            restart("restart-apiserver", "cp-1", "kube-apiserver"),
            restart("restart-etcd", "cp-1", "etcd"),
            restart("restart-kubelet", "cp-1", "kubelet"),
        ];
        let r = run(&cluster(1, 1), steps.clone());
        let gaps: Vec<(&str, &str)> = r
            .gaps
            .iter()
            .map(|g| (g.at.as_str(), g.what.as_str()))
            .collect();
        assert_eq!(
            gaps,
            [
                (
                    "step restart-apiserver on cp-1",
                    "the only API server restarts: its clients wait or retry (cp-1)"
                ),
                (
                    "step restart-etcd on cp-1",
                    "the only etcd member restarts: the API server cannot read or write (cp-1)"
                ),
            ]
        );
        assert_eq!(run(&cluster(2, 0), steps).gaps, []);
    }

    #[test]
    fn api_server_to_kubelet_edges_are_listed_as_unverified() {
        let r = run(&cluster(2, 1), vec![]);
        assert_eq!(r.unverified.len(), 2 * 3);
        assert!(
            r.unverified
                .iter()
                .all(|u| u.why == crate::plan::edges::UNVERIFIED_KUBELET)
        );
        assert_eq!(
            r.line(),
            format!(
                "Continuity: {} edges stay live through all 0 steps; 6 edges unverified ({}).",
                r.edges,
                crate::plan::edges::UNVERIFIED_KUBELET
            )
        );
    }

    #[test]
    fn a_bare_pods_break_is_a_warning_and_a_rollout_moves_only_owned_pods() {
        let mut snap = cluster(1, 0);
        snap.kube = Some(crate::snapshot::KubeSnapshot {
            server: String::new(),
            namespaces: 1,
            kube_root_ca: vec![],
            kube_root_ca_missing: vec![],
            token_secrets: vec![],
            legacy_tokens: vec![],
            cluster_info: None,
            extension_auth: Some(vec![f_old()]),
            ca_bundles: vec![],
            workloads: 1,
            pods: vec![crate::snapshot::PodGroup {
                trust: Some(vec![k_old()]),
                pods: vec!["a/owned".into(), "a/bare".into()],
                workloads: vec!["a/Deployment/d".into()],
                bare: vec!["a/bare".into()],
            }],
        });
        let rollout = Op::Set {
            node: None,
            authority: Authority::Kubernetes,
            path: String::new(),
            field: Field::PodTrust,
            want: State::Members(vec![k_old(), k_new()]),
            replaces: vec![],
        };
        let steps = vec![
            step(
                "restart-in-cluster-pods",
                Some("4"),
                "cluster",
                vec![rollout],
            ),
            step(
                "apiserver-certs",
                Some("8.3"),
                "cp-1",
                vec![set(
                    "cp-1",
                    APISERVER,
                    Field::Leaf,
                    State::IssuedBy(k_new()),
                )],
            ),
            restart("restart-apiserver", "cp-1", "kube-apiserver"),
        ];
        let r = run(&snap, steps);
        // cp-1 alone: 5 clients of its API server, and it reaches its kubelet, its etcd
        // and the aggregated servers; plus the owned pod. The bare pod is unmanaged.
        assert_eq!((r.unmanaged, r.edges), (1, 5 + 3 + 1));
        assert_eq!(
            break_names(&r.warnings),
            ["pod a/bare → kube-apiserver on cp-1"]
        );
        assert!(!r.breaks.iter().any(|b| b.edge.starts_with("pod ")));
    }

    #[test]
    fn steps_run_in_dependency_order_ties_by_file_position() {
        let mut steps = vec![
            step("a", None, "cp-1", vec![]),
            step("b", None, "cp-1", vec![]),
            step("c", None, "cp-1", vec![]),
            step("d", None, "cp-1", vec![]),
        ];
        steps[1].depends_on = vec!["kubernetes-ca/d@cp-1".into()];
        assert_eq!(order(&plan(steps.clone())), [0, 2, 3, 1]);
        steps[0].depends_on = vec!["kubernetes-ca/b@cp-1".into()];
        steps[3].depends_on = vec!["kubernetes-ca/a@cp-1".into()];
        assert_eq!(order(&plan(steps)), [0, 1, 2, 3], "a cycle: file order");
    }

    #[test]
    fn a_step_is_labelled_by_documented_number_template_and_target() {
        assert_eq!(
            step_label(&step("apiserver-certs", Some("8.3"), "cp-2", vec![])),
            "step 8.3 apiserver-certs on cp-2"
        );
        assert_eq!(
            step_label(&step("restart-kcm", None, "cp-1", vec![])),
            "step restart-kcm on cp-1"
        );
    }
}
