//! Validate a plan read from a file: accept only what the embedded procedures can produce
//! for this cluster's layout.
//!
//! A plan file is data; its checksum only proves it was not damaged (see
//! [`Plan::compute_checksum`]). Before `apply` (or `rehearse`) acts on one, every step and
//! operation is checked against what [`super::build`] can emit:
//! - the step names an embedded procedure and template, with that template's action,
//!   stage and kind, and a target its `for_each` allows (a node of the inventory, a
//!   control plane for control-plane steps, `cluster` for cluster steps);
//! - each operation is of a kind the action has, on the step's own target, for the
//!   procedure's authority;
//! - a file operation names a field the action moves at a path the layout gives that
//!   field (the authority's CA bundle and key, trustform's single-cert copy of the issuer,
//!   the kubeconfigs the template lists and the copies trustform.yaml lists for the node,
//!   kube-controller-manager's flags in its manifest, the kubelet's client CA file,
//!   kubelet.conf and its certificates under `/var/lib/kubelet/pki`), with the state
//!   shape of that field; the path is normal (absolute, no `.`, `..`, `//` or NUL, so it
//!   stays inside the node's root) and was observed on that node, except the signer copy,
//!   which the plan may create;
//! - a restart names a static pod the node runs, or `kubelet` on a node that has one; it
//!   is manual (`manual-restart`) exactly on the nodes trustform cannot run commands on,
//!   and a manual restart's instructions are exactly the ones trustform writes for it;
//! - a cluster operation names a cluster field with no node and no path, except a
//!   caBundle, which must be one the cluster holds.
//!
//! Everything else is refused with the step, the operation's index and the path named.
//! No I/O: the caller passes what it observed ([`Known`]).

use super::{Op, Plan, Step};
use crate::config::Authority;
use crate::diff::{Field, KCM_ROOT_CA_FLAG, KCM_SINGLE_CERT_FLAGS, SIGNER_COPY, State};
use crate::procedure::{Action, ForEach, Procedure, StepTemplate};
use crate::snapshot::Role;
use crate::snapshot::Snapshot;
use miette::{Diagnostic, NamedSource, SourceSpan};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// What the validator knows about one node (from the snapshot and trustform.yaml).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownNode {
    /// A control plane.
    pub control_plane: bool,
    /// Every file path observed on it.
    pub files: BTreeSet<String>,
    /// The kubeconfig copies trustform.yaml lists for it.
    pub copies: BTreeSet<String>,
    /// Static pods it runs: component → manifest path.
    pub static_pods: BTreeMap<String, String>,
    /// It has a kubelet.
    pub kubelet: bool,
    /// The kubelet's `clientCAFile`.
    pub kubelet_client_ca: Option<String>,
    /// trustform cannot run commands on it: its restarts are manual.
    pub manual: bool,
}

/// What the validator knows about the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// Nodes of the inventory, by name.
    pub nodes: BTreeMap<String, KnownNode>,
    /// `Kind/name#/pointer` of every caBundle the API holds (`None`: no API access).
    pub ca_bundles: Option<BTreeSet<String>>,
}

impl Known {
    /// From a snapshot of every inventory node, the kubeconfig copies trustform.yaml
    /// lists per node, and the nodes trustform cannot run commands on.
    pub fn of(
        snap: &Snapshot,
        copies: &BTreeMap<String, Vec<String>>,
        manual: &BTreeSet<String>,
    ) -> Self {
        let nodes = snap
            .nodes
            .iter()
            .map(|n| {
                let kn = KnownNode {
                    control_plane: n.role == Role::ControlPlane,
                    files: n.files.keys().cloned().collect(),
                    copies: copies.get(&n.name).into_iter().flatten().cloned().collect(),
                    static_pods: n
                        .components
                        .iter()
                        .map(|(c, comp)| (c.clone(), comp.manifest.clone()))
                        .collect(),
                    kubelet: n.kubelet.is_some(),
                    kubelet_client_ca: n.kubelet.as_ref().and_then(|k| k.client_ca_file.clone()),
                    manual: manual.contains(&n.name),
                };
                (n.name.clone(), kn)
            })
            .collect();
        let ca_bundles = snap.kube.as_ref().map(|k| {
            k.ca_bundles
                .iter()
                .map(|b| format!("{}#{}", b.object, b.pointer))
                .collect()
        });
        Self { nodes, ca_bundles }
    }
}

/// Why an operation (or a step) is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No embedded procedure has this name.
    UnknownProcedure(String),
    /// The procedure has no such step template.
    UnknownTemplate(String),
    /// The step's action, stage or kind is not its template's.
    NotTheTemplate(String),
    /// The step's id is not `procedure/template@target`.
    BadId(String),
    /// The target is not what the template expands over.
    BadTarget(String),
    /// The node is not in trustform.yaml's inventory.
    UnknownNode(String),
    /// The operation is on another node than its step's target.
    OtherNode {
        /// The operation's node (none: a cluster object).
        node: Option<String>,
        /// The step's target.
        target: String,
    },
    /// The component is not a static pod the node runs, nor `kubelet`.
    UnknownComponent(String),
    /// The operation's authority is not its procedure's.
    OtherAuthority(String),
    /// The action has no operation of this kind.
    OpNotOfAction(String),
    /// The action never moves this field.
    FieldNotOfAction(String),
    /// The path is not absolute and normal.
    PathNotNormal(String),
    /// The layout gives this field another path.
    PathNotOfField(String),
    /// The path was not observed on the node.
    PathNotObserved,
    /// The state is not a shape this field takes.
    WantNotOfField(String),
    /// A cluster object the cluster does not hold.
    UnknownObject(String),
    /// A restart on a node trustform cannot run commands on that is not manual, or a
    /// manual one on a node it can.
    Manual(String),
    /// A manual restart's instructions are not the ones trustform writes for it.
    NotTheInstructions,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::UnknownProcedure(p) => write!(f, "no embedded procedure is named {p:?}"),
            Reason::UnknownTemplate(t) => write!(f, "the procedure has no step {t:?}"),
            Reason::NotTheTemplate(w) => write!(f, "not what its template does: {w}"),
            Reason::BadId(want) => write!(f, "the step id must be {want:?}"),
            Reason::BadTarget(w) => write!(f, "bad target: {w}"),
            Reason::UnknownNode(n) => {
                write!(f, "node {n:?} is not in trustform.yaml's inventory")
            }
            Reason::OtherNode { node, target } => match node {
                Some(n) => write!(
                    f,
                    "the operation is on node {n:?}, not on the step's target {target:?}"
                ),
                None => write!(
                    f,
                    "a cluster object in a step on node {target:?}: this action changes files on its node"
                ),
            },
            Reason::UnknownComponent(c) => write!(
                f,
                "component {c:?} is neither a static pod this node runs nor `kubelet`"
            ),
            Reason::OtherAuthority(a) => {
                write!(f, "authority {a} is not the one this procedure rotates")
            }
            Reason::OpNotOfAction(w) => write!(f, "this action has no {w} operation"),
            Reason::FieldNotOfAction(w) => write!(f, "this action never changes {w}"),
            Reason::PathNotNormal(w) => write!(f, "not a normal absolute node path: {w}"),
            Reason::PathNotOfField(w) => write!(f, "not a path this action writes: {w}"),
            Reason::PathNotObserved => write!(
                f,
                "no such file was observed on the node (the plan may only change files trustform read)"
            ),
            Reason::WantNotOfField(w) => write!(f, "not a state this field takes: {w}"),
            Reason::UnknownObject(o) => write!(f, "the cluster holds no caBundle {o:?}"),
            Reason::Manual(w) => write!(f, "{w}"),
            Reason::NotTheInstructions => write!(
                f,
                "the manual step's instructions are not the ones trustform writes for this restart"
            ),
        }
    }
}

/// One refused step or operation. A diagnostic: `rehearse` and `apply`'s pre-flight list
/// every one.
#[derive(Clone, Debug, Error, Diagnostic)]
#[error("step {step}{}{}: {reason}", .op.map(|i| format!(", op {i}")).unwrap_or_default(), .path.as_ref().map(|p| format!(" ({p})")).unwrap_or_default())]
#[diagnostic(
    code(trustform::plan::refused),
    help(
        "a plan may only hold what `trustform plan` makes from the embedded procedures; never edit a plan by hand: run `trustform plan -out <file>` again and review that"
    )
)]
pub struct Refusal {
    /// The step's id.
    pub step: String,
    /// The operation's index in the step's `ops` (none: the step itself).
    pub op: Option<usize>,
    /// What the operation names: its node path, object name or (a restart) component.
    pub path: Option<String>,
    /// Why.
    pub reason: Reason,
    /// The plan file's text, when known.
    #[source_code]
    pub src: Option<NamedSource<String>>,
    /// Where in it.
    #[label("refused")]
    pub span: Option<SourceSpan>,
}

impl Refusal {
    fn new(step: &Step, op: Option<usize>, path: Option<&str>, reason: Reason) -> Self {
        Self {
            step: step.id.clone(),
            op,
            path: path.map(str::to_string),
            reason,
            src: None,
            span: None,
        }
    }

    /// Point at the refused step (its path, if any) in the plan file's text `text`,
    /// named `name`.
    pub fn located(mut self, name: &str, text: &str) -> Self {
        let id = format!("\"id\": {}", serde_json::Value::String(self.step.clone()));
        if let Some(start) = text.find(&id) {
            let mut span: SourceSpan = (start, id.len()).into();
            let json = |v: &str| serde_json::Value::String(v.to_string()).to_string();
            // A node that is wrong: its `"node"` entry; else what the operation names.
            let needle = match (&self.reason, self.op) {
                (_, None) => None,
                (Reason::UnknownNode(n) | Reason::OtherNode { node: Some(n), .. }, Some(_)) => {
                    Some(format!("\"node\": {}", json(n)))
                }
                (_, Some(_)) => self.path.as_deref().filter(|p| !p.is_empty()).map(json),
            };
            if let Some(needle) = needle
                && let Some(o) = text[start..].find(&needle)
            {
                span = (start + o, needle.len()).into();
            }
            self.src = Some(NamedSource::new(name, text.to_string()));
            self.span = Some(span);
        }
        self
    }
}

/// All refusals of a plan: the error of `rehearse` (apply lists them in its pre-flight).
#[derive(Debug, Error, Diagnostic)]
#[error("the plan holds {} step(s) or operation(s) trustform's procedures never make", .refusals.len())]
#[diagnostic(
    code(trustform::plan::unsafe_plan),
    help(
        "the plan was edited after `trustform plan` wrote it (its checksum only detects damage): make it again with `trustform plan -out <file>`, review it, and apply that"
    )
)]
pub struct Refused {
    /// Each refusal.
    #[related]
    pub refusals: Vec<Refusal>,
}

/// Whether `path` is absolute and normal: no empty, `.` or `..` component, no NUL, no
/// trailing slash. `Err` says what is wrong.
pub fn normal_path(path: &str) -> Result<(), String> {
    if path.contains('\0') {
        return Err("it holds a NUL byte".into());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("it is not absolute".into());
    };
    if rest.is_empty() {
        return Err("it is the node's root".into());
    }
    for c in rest.split('/') {
        match c {
            "" => return Err("it has an empty component (`//` or a trailing `/`)".into()),
            "." => return Err("it has a `.` component".into()),
            ".." => return Err("it has a `..` component".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Validate every step and operation of `plan`; empty when the plan holds only what the
/// procedures make.
pub fn validate(plan: &Plan, known: &Known, procedures: &[Procedure]) -> Vec<Refusal> {
    let mut out = Vec::new();
    for step in &plan.steps {
        step_refusals(step, known, procedures, &mut out);
    }
    out
}

/// The number of checks [`validate`] makes on `plan` (one per step, one per operation).
pub fn checks(plan: &Plan) -> usize {
    plan.steps.iter().map(|s| 1 + s.ops.len()).sum()
}

fn step_refusals(step: &Step, known: &Known, procedures: &[Procedure], out: &mut Vec<Refusal>) {
    let refuse = |r: Reason| Refusal::new(step, None, None, r);
    let Some(proc_) = procedures.iter().find(|p| p.procedure == step.procedure) else {
        out.push(refuse(Reason::UnknownProcedure(step.procedure.clone())));
        return;
    };
    let Some(t) = proc_.steps.iter().find(|t| t.id == step.template) else {
        out.push(refuse(Reason::UnknownTemplate(step.template.clone())));
        return;
    };
    if step.action != t.action {
        out.push(refuse(Reason::NotTheTemplate(format!(
            "action {} (the template's is {})",
            step.action.name(),
            t.action.name()
        ))));
        return;
    }
    if step.stage != t.stage {
        out.push(refuse(Reason::NotTheTemplate(format!(
            "stage {} (the template's is {})",
            step.stage.name(),
            t.stage.name()
        ))));
    }
    if step.kind != t.action.kind() {
        out.push(refuse(Reason::NotTheTemplate(format!(
            "kind {:?} (the action's is {:?})",
            step.kind,
            t.action.kind()
        ))));
    }
    let id = format!("{}/{}@{}", proc_.procedure, t.id, step.target);
    if step.id != id {
        out.push(refuse(Reason::BadId(id)));
    }
    // The target.
    let node = match t.for_each {
        ForEach::Cluster => {
            if step.target != "cluster" {
                out.push(refuse(Reason::BadTarget(format!(
                    "{:?}: this step runs once for the cluster",
                    step.target
                ))));
                return;
            }
            None
        }
        ForEach::Node | ForEach::ControlPlaneNode => {
            let Some(n) = known.nodes.get(&step.target) else {
                out.push(refuse(Reason::UnknownNode(step.target.clone())));
                return;
            };
            if t.for_each == ForEach::ControlPlaneNode && !n.control_plane {
                out.push(refuse(Reason::BadTarget(format!(
                    "{} is not a control plane",
                    step.target
                ))));
                return;
            }
            Some((step.target.as_str(), n))
        }
    };
    for (i, op) in step.ops.iter().enumerate() {
        if let Err(r) = op_ok(op, step, t, proc_.authority, node, known) {
            let path = match op {
                Op::Set { path, .. } => Some(path.as_str()),
                Op::Restart { component, .. } | Op::ManualRestart { component, .. } => {
                    Some(component.as_str())
                }
                Op::Verify { .. } => None,
            };
            out.push(Refusal::new(step, Some(i), path, r));
        }
    }
}

fn op_ok(
    op: &Op,
    step: &Step,
    t: &StepTemplate,
    authority: Option<Authority>,
    node: Option<(&str, &KnownNode)>,
    known: &Known,
) -> Result<(), Reason> {
    match op {
        Op::Verify { authority: a, .. } => {
            if t.action != Action::VerifyTrust {
                return Err(Reason::OpNotOfAction("verify".into()));
            }
            if authority.is_some_and(|auth| *a != auth) {
                return Err(Reason::OtherAuthority(a.to_string()));
            }
            Ok(())
        }
        Op::Restart { node: n, component }
        | Op::ManualRestart {
            node: n, component, ..
        } => {
            let want = match t.action {
                Action::RestartStaticPod => t.component.clone().unwrap_or_default(),
                Action::RestartKubelet => "kubelet".to_string(),
                _ => return Err(Reason::OpNotOfAction("restart".into())),
            };
            let (target, kn) = on_target(n, step, node, known)?;
            let runs = if component == "kubelet" {
                kn.kubelet
            } else {
                crate::layout::STATIC_PODS.contains(&component.as_str())
                    && kn.static_pods.contains_key(component)
            };
            if !runs {
                return Err(Reason::UnknownComponent(component.clone()));
            }
            if *component != want {
                return Err(Reason::NotTheTemplate(format!(
                    "restarts {component}, the template restarts {want}"
                )));
            }
            match op {
                Op::Restart { .. } if kn.manual => Err(Reason::Manual(format!(
                    "trustform cannot run commands on {target} (it is reached through a directory): its restarts are manual steps"
                ))),
                Op::ManualRestart { .. } if !kn.manual => Err(Reason::Manual(format!(
                    "a manual restart on {target}, which trustform restarts itself"
                ))),
                Op::ManualRestart { instructions, .. } => {
                    let manifest = kn.static_pods.get(component).map(String::as_str);
                    if *instructions
                        != super::manual::restart_instructions(target, component, manifest)
                    {
                        return Err(Reason::NotTheInstructions);
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        }
        Op::Set {
            node: n,
            authority: a,
            path,
            field,
            want,
            replaces,
        } => {
            if matches!(
                t.action,
                Action::RestartStaticPod | Action::RestartKubelet | Action::VerifyTrust
            ) {
                return Err(Reason::OpNotOfAction("set".into()));
            }
            if authority.is_some_and(|auth| *a != auth) {
                return Err(Reason::OtherAuthority(a.to_string()));
            }
            if !replaces.is_empty() && *field != Field::CaBundle {
                return Err(Reason::WantNotOfField(
                    "only a caBundle lists the CAs it replaces".into(),
                ));
            }
            match n {
                None => cluster_set(t, &step.target, path, field, want, known),
                Some(n) => {
                    let (_, kn) = on_target(n, step, node, known)?;
                    normal_path(path).map_err(Reason::PathNotNormal)?;
                    node_set(t, *a, kn, path, field, want)
                }
            }
        }
    }
}

/// The operation's node must be in the inventory and be the step's target.
fn on_target<'k>(
    n: &str,
    step: &Step,
    node: Option<(&str, &'k KnownNode)>,
    known: &'k Known,
) -> Result<(&'k str, &'k KnownNode), Reason> {
    let Some((name, kn)) = known.nodes.get_key_value(n) else {
        return Err(Reason::UnknownNode(n.to_string()));
    };
    match node {
        Some((target, _)) if target == n => Ok((name.as_str(), kn)),
        _ => Err(Reason::OtherNode {
            node: Some(n.to_string()),
            target: step.target.clone(),
        }),
    }
}

fn field_name(f: &Field) -> String {
    match f {
        Field::Flag(c, fl) => format!("the flag {c} --{fl}"),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}

fn cluster_set(
    t: &StepTemplate,
    target: &str,
    path: &str,
    field: &Field,
    want: &State,
    known: &Known,
) -> Result<(), Reason> {
    if t.for_each != ForEach::Cluster {
        return Err(Reason::OtherNode {
            node: None,
            target: target.to_string(),
        });
    }
    let ok_field = match t.action {
        Action::WaitKubeRootCa => *field == Field::KubeRootCa,
        Action::RestartWorkloads => *field == Field::PodTrust,
        Action::UpdateClusterInfo => *field == Field::ClusterInfo,
        Action::RestartExtensionServers => *field == Field::ExtensionAuth,
        Action::UpdateCaBundles => *field == Field::CaBundle,
        Action::WaitTokens => *field == Field::Tokens,
        Action::ReissueTokenSecrets => *field == Field::TokenSecrets,
        _ => false,
    };
    if !ok_field {
        return Err(Reason::FieldNotOfAction(field_name(field)));
    }
    if !matches!(want, State::Members(_)) {
        return Err(Reason::WantNotOfField(format!("{want:?}")));
    }
    if *field == Field::CaBundle {
        let held = known.ca_bundles.as_ref().is_some_and(|b| b.contains(path));
        if !held {
            return Err(Reason::UnknownObject(path.to_string()));
        }
    } else if !path.is_empty() {
        return Err(Reason::PathNotOfField(format!(
            "{} is a cluster object: its path is empty",
            field_name(field)
        )));
    }
    Ok(())
}

fn node_set(
    t: &StepTemplate,
    authority: Authority,
    kn: &KnownNode,
    path: &str,
    field: &Field,
    want: &State,
) -> Result<(), Reason> {
    let listed = |p: &str| t.files.iter().any(|f| p == format!("/etc/kubernetes/{f}"));
    let kcm_manifest = || kn.static_pods.get("kube-controller-manager");
    let not_path = |why: String| Err(Reason::PathNotOfField(why));
    let members = matches!(want, State::Members(_));
    let issued = want.issuer().is_some();
    // (path allowed, state shape allowed) for this action and field.
    let (path_ok, want_ok): (Result<(), Reason>, bool) = match (t.action, field) {
        (Action::WriteCaFiles, Field::Bundle) => (
            if path == authority.ca_file() {
                Ok(())
            } else {
                not_path(format!(
                    "the {authority} CA bundle is {}",
                    authority.ca_file()
                ))
            },
            members,
        ),
        (Action::WriteCaFiles | Action::SwitchSigner, Field::SignerCopy)
        | (Action::RemoveSignerCopy, Field::SignerCopy) => (
            if path == SIGNER_COPY && authority == Authority::Kubernetes {
                Ok(())
            } else {
                not_path(format!(
                    "the single-cert copy of the issuer is {SIGNER_COPY}"
                ))
            },
            if t.action == Action::RemoveSignerCopy {
                *want == State::Absent
            } else {
                members
            },
        ),
        (Action::SwitchSigner, Field::SigningKey) => (
            if path == authority.key_file() && kn.control_plane {
                Ok(())
            } else {
                not_path(format!(
                    "the {authority} CA key is {} on a control plane",
                    authority.key_file()
                ))
            },
            matches!(want, State::KeyOf(_)),
        ),
        (Action::SetKcmSigningFlags | Action::SetKcmRootCaNewOnly, Field::Flag(c, f)) => {
            let flag_ok = c == "kube-controller-manager"
                && authority == Authority::Kubernetes
                && if t.action == Action::SetKcmRootCaNewOnly {
                    f == KCM_ROOT_CA_FLAG
                } else {
                    KCM_SINGLE_CERT_FLAGS.contains(&f.as_str()) || f == KCM_ROOT_CA_FLAG
                };
            if !flag_ok {
                return Err(Reason::FieldNotOfAction(field_name(field)));
            }
            (
                match kcm_manifest() {
                    Some(m) if m == path => Ok(()),
                    Some(m) => not_path(format!("kube-controller-manager's manifest is {m}")),
                    None => Err(Reason::UnknownComponent("kube-controller-manager".into())),
                },
                matches!(want, State::Path(p) if p == authority.ca_file() || p == SIGNER_COPY),
            )
        }
        (Action::WriteKubeconfigs, Field::KubeconfigCa | Field::KubeconfigClient) => (
            if listed(path) || (t.copies && kn.copies.contains(path)) {
                Ok(())
            } else {
                not_path(format!(
                    "this step writes {}{}",
                    t.files
                        .iter()
                        .map(|f| format!("/etc/kubernetes/{f}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if t.copies {
                        " and the copies trustform.yaml lists for the node"
                    } else {
                        ""
                    }
                ))
            },
            if *field == Field::KubeconfigCa {
                members
            } else {
                issued
            },
        ),
        (Action::WriteKubeletTrust, Field::Bundle) => (
            if kn.kubelet_client_ca.as_deref() == Some(path) {
                Ok(())
            } else {
                not_path("not the kubelet's clientCAFile".into())
            },
            members,
        ),
        (Action::WriteKubeletTrust, Field::KubeconfigCa | Field::KubeconfigClient) => (
            if path == format!("/{}", crate::layout::KUBELET_CONF) {
                Ok(())
            } else {
                not_path(format!(
                    "the kubelet's kubeconfig is /{}",
                    crate::layout::KUBELET_CONF
                ))
            },
            if *field == Field::KubeconfigCa {
                members
            } else {
                issued
            },
        ),
        (Action::WriteKubeletTrust, Field::Leaf) => (
            if path.starts_with(&format!("/{}/", crate::layout::KUBELET_PKI)) {
                Ok(())
            } else {
                not_path(format!(
                    "the kubelet's certificates are under /{}",
                    crate::layout::KUBELET_PKI
                ))
            },
            issued,
        ),
        (Action::ReissueLeaves, Field::Leaf) => (
            if listed(path) && path.ends_with(".crt") {
                Ok(())
            } else {
                not_path(format!(
                    "this step re-issues {}",
                    t.files
                        .iter()
                        .map(|f| format!("/etc/kubernetes/{f}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            },
            issued,
        ),
        _ => return Err(Reason::FieldNotOfAction(field_name(field))),
    };
    path_ok?;
    if !want_ok {
        return Err(Reason::WantNotOfField(format!("{want:?}")));
    }
    // The signer copy is the one file the plan creates; every other was read (a
    // manifest, as its component's).
    let observed = kn.files.contains(path)
        || kn.copies.contains(path)
        || kn.static_pods.values().any(|m| m == path);
    if *field != Field::SignerCopy && !observed {
        return Err(Reason::PathNotObserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::Fingerprint;
    use crate::plan::{Summary, TargetLabels};
    use crate::procedure::{ActionKind, Stage};

    fn fp(c: char) -> Fingerprint {
        Fingerprint::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
    }

    fn known() -> Known {
        let mut cp = KnownNode {
            control_plane: true,
            kubelet: true,
            kubelet_client_ca: Some("/etc/kubernetes/pki/ca.crt".into()),
            copies: ["/root/.kube/config".to_string()].into(),
            ..Default::default()
        };
        for f in [
            "/etc/kubernetes/pki/ca.crt",
            "/etc/kubernetes/pki/ca.key",
            "/etc/kubernetes/admin.conf",
            "/etc/kubernetes/kubelet.conf",
            "/etc/kubernetes/pki/apiserver.crt",
            "/var/lib/kubelet/pki/kubelet-client-current.pem",
            "/root/.kube/config",
        ] {
            cp.files.insert(f.into());
        }
        for c in ["kube-apiserver", "kube-controller-manager", "etcd"] {
            cp.static_pods.insert(c.into(), crate::layout::manifest(c));
        }
        let w = KnownNode {
            kubelet: true,
            files: ["/etc/kubernetes/kubelet.conf".to_string()].into(),
            ..Default::default()
        };
        Known {
            nodes: [("cp-1".to_string(), cp), ("w-1".to_string(), w)].into(),
            ca_bundles: Some(["ValidatingWebhookConfiguration/v#/webhooks/0".to_string()].into()),
        }
    }

    fn step(template: &str, target: &str, ops: Vec<Op>) -> Step {
        let procs = crate::procedure::load_all().unwrap();
        let t = procs[0]
            .steps
            .iter()
            .find(|t| t.id == template)
            .unwrap_or_else(|| panic!("template {template}"));
        Step {
            id: format!("kubernetes-ca/{template}@{target}"),
            procedure: "kubernetes-ca".into(),
            template: template.into(),
            doc_step: t.doc.clone(),
            title: t.title.clone(),
            stage: t.stage,
            target: target.into(),
            action: t.action,
            kind: t.action.kind(),
            changes: vec![],
            why: None,
            disruption: None,
            ops,
            depends_on: vec![],
        }
    }

    fn set(node: Option<&str>, path: &str, field: Field, want: State) -> Op {
        Op::Set {
            node: node.map(str::to_string),
            authority: Authority::Kubernetes,
            path: path.into(),
            field,
            want,
            replaces: vec![],
        }
    }

    fn plan(steps: Vec<Step>) -> Plan {
        let labels = TargetLabels {
            issuer: "a".into(),
            trust: vec!["a".into()],
        };
        Plan {
            format_version: 1,
            tool_version: "0".into(),
            cluster: "c".into(),
            checksum: String::new(),
            snapshot_fingerprint: String::new(),
            config_hash: String::new(),
            observed: BTreeMap::new(),
            authorities: vec![crate::plan::AuthorityChange {
                authority: "kubernetes".into(),
                from: labels.clone(),
                to: labels,
            }],
            summary: Summary::of(&steps),
            steps,
            skipped: vec![],
            continuity: None,
        }
    }

    fn refusals(steps: Vec<Step>) -> Vec<Refusal> {
        validate(
            &plan(steps),
            &known(),
            &crate::procedure::load_all().unwrap(),
        )
    }

    fn none(steps: Vec<Step>) {
        let r = refusals(steps);
        assert!(r.is_empty(), "{r:?}");
    }

    /// The one reason a single-step plan is refused for.
    fn reason(s: Step) -> Reason {
        let r = refusals(vec![s]);
        assert_eq!(r.len(), 1, "{r:?}");
        r[0].reason.clone()
    }

    fn bundle(path: &str) -> Step {
        step(
            "distribute-ca",
            "cp-1",
            vec![set(
                Some("cp-1"),
                path,
                Field::Bundle,
                State::Members(vec![fp('a'), fp('b')]),
            )],
        )
    }

    #[test]
    fn what_the_planner_makes_is_accepted() {
        let m = |c| State::Members(vec![fp(c)]);
        let steps = vec![
            bundle("/etc/kubernetes/pki/ca.crt"),
            step(
                "distribute-ca",
                "cp-1",
                vec![set(Some("cp-1"), SIGNER_COPY, Field::SignerCopy, m('a'))],
            ),
            step(
                "kcm-single-cert-flags",
                "cp-1",
                vec![set(
                    Some("cp-1"),
                    "/etc/kubernetes/manifests/kube-controller-manager.yaml",
                    Field::Flag("kube-controller-manager".into(), "client-ca-file".into()),
                    State::Path(SIGNER_COPY.into()),
                )],
            ),
            step(
                "restart-kcm",
                "cp-1",
                vec![Op::Restart {
                    node: "cp-1".into(),
                    component: "kube-controller-manager".into(),
                }],
            ),
            step(
                "wait-kube-root-ca",
                "cluster",
                vec![set(None, "", Field::KubeRootCa, m('a'))],
            ),
            step(
                "ca-bundles",
                "cluster",
                vec![Op::Set {
                    node: None,
                    authority: Authority::Kubernetes,
                    path: "ValidatingWebhookConfiguration/v#/webhooks/0".into(),
                    field: Field::CaBundle,
                    want: m('a'),
                    replaces: vec![fp('b')],
                }],
            ),
            step(
                "verify-pre-rotate",
                "cluster",
                vec![Op::Verify {
                    authority: Authority::Kubernetes,
                    issuer: fp('a'),
                    trust: vec![fp('a')],
                    retired: vec![],
                }],
            ),
        ];
        none(steps);
    }

    #[test]
    fn paths_must_be_normal_absolute_node_paths() {
        for (path, why) in [
            ("/etc/kubernetes/pki/../../../../x.crt", "`..`"),
            ("/etc/kubernetes/pki/./ca.crt", "`.`"),
            ("/etc/kubernetes//pki/ca.crt", "empty"),
            ("/etc/kubernetes/pki/ca.crt/", "empty"),
            ("etc/kubernetes/pki/ca.crt", "not absolute"),
            ("/etc/kubernetes/pki/ca.crt\0", "NUL"),
            ("/", "root"),
        ] {
            match reason(bundle(path)) {
                Reason::PathNotNormal(w) => assert!(w.contains(why), "{path}: {w}"),
                other => panic!("{path}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_the_layout_paths_of_a_field() {
        // A path outside the layout, even a normal one.
        assert!(matches!(
            reason(bundle("/root/.ssh/authorized_keys")),
            Reason::PathNotOfField(_)
        ));
        // A kubeconfig the template does not list, and one it does that was not observed.
        let kc = |path: &str| {
            step(
                "user-kubeconfigs",
                "cp-1",
                vec![set(
                    Some("cp-1"),
                    path,
                    Field::KubeconfigCa,
                    State::Members(vec![fp('a')]),
                )],
            )
        };
        assert!(matches!(
            reason(kc("/root/.ssh/authorized_keys")),
            Reason::PathNotOfField(_)
        ));
        assert_eq!(
            reason(kc("/etc/kubernetes/super-admin.conf")),
            Reason::PathNotObserved
        );
        // The listed copy and admin.conf are fine.
        none(vec![kc("/root/.kube/config")]);
        none(vec![kc("/etc/kubernetes/admin.conf")]);
    }

    #[test]
    fn fields_and_states_must_be_the_actions() {
        // distribute-ca never writes a key.
        let s = step(
            "distribute-ca",
            "cp-1",
            vec![set(
                Some("cp-1"),
                "/etc/kubernetes/pki/ca.key",
                Field::SigningKey,
                State::KeyOf(fp('a')),
            )],
        );
        assert!(matches!(reason(s), Reason::FieldNotOfAction(_)));
        // A bundle is a set of CAs, not a flag value.
        let s = step(
            "distribute-ca",
            "cp-1",
            vec![set(
                Some("cp-1"),
                "/etc/kubernetes/pki/ca.crt",
                Field::Bundle,
                State::Path("/x".into()),
            )],
        );
        assert!(matches!(reason(s), Reason::WantNotOfField(_)));
        // A flag points at the bundle or the signer copy only.
        let s = step(
            "kcm-single-cert-flags",
            "cp-1",
            vec![set(
                Some("cp-1"),
                "/etc/kubernetes/manifests/kube-controller-manager.yaml",
                Field::Flag("kube-controller-manager".into(), "client-ca-file".into()),
                State::Path("/root/.ssh/id_rsa".into()),
            )],
        );
        assert!(matches!(reason(s), Reason::WantNotOfField(_)));
        // Another component's flag.
        let s = step(
            "kcm-single-cert-flags",
            "cp-1",
            vec![set(
                Some("cp-1"),
                "/etc/kubernetes/manifests/kube-apiserver.yaml",
                Field::Flag("kube-apiserver".into(), "client-ca-file".into()),
                State::Path(SIGNER_COPY.into()),
            )],
        );
        assert!(matches!(reason(s), Reason::FieldNotOfAction(_)));
        // A restart step has no set operation.
        let s = step(
            "restart-kcm",
            "cp-1",
            vec![bundle("/etc/kubernetes/pki/ca.crt").ops.remove(0)],
        );
        assert!(matches!(reason(s), Reason::OpNotOfAction(_)));
        // A verify in a write step.
        let s = step(
            "distribute-ca",
            "cp-1",
            vec![Op::Verify {
                authority: Authority::Kubernetes,
                issuer: fp('a'),
                trust: vec![],
                retired: vec![],
            }],
        );
        assert!(matches!(reason(s), Reason::OpNotOfAction(_)));
        // Another authority's file in the kubernetes procedure.
        let mut s = bundle("/etc/kubernetes/pki/front-proxy-ca.crt");
        if let Op::Set { authority, .. } = &mut s.ops[0] {
            *authority = Authority::FrontProxy;
        }
        assert!(matches!(reason(s), Reason::OtherAuthority(_)));
        // Only a caBundle lists what it replaces.
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        if let Op::Set { replaces, .. } = &mut s.ops[0] {
            replaces.push(fp('c'));
        }
        assert!(matches!(reason(s), Reason::WantNotOfField(_)));
    }

    #[test]
    fn nodes_must_be_in_the_inventory_and_the_target() {
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        s.target = "cp-9".into();
        s.id = "kubernetes-ca/distribute-ca@cp-9".into();
        assert_eq!(reason(s), Reason::UnknownNode("cp-9".into()));
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        if let Op::Set { node, .. } = &mut s.ops[0] {
            *node = Some("cp-9".into());
        }
        assert_eq!(reason(s), Reason::UnknownNode("cp-9".into()));
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        if let Op::Set { node, .. } = &mut s.ops[0] {
            *node = Some("w-1".into());
        }
        assert!(matches!(reason(s), Reason::OtherNode { .. }));
        // A control-plane step on a worker.
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        s.target = "w-1".into();
        s.id = "kubernetes-ca/distribute-ca@w-1".into();
        s.ops.clear();
        assert!(matches!(reason(s), Reason::BadTarget(_)));
        // A cluster step on a node, a cluster op in a node step.
        let mut s = step("wait-kube-root-ca", "cluster", vec![]);
        s.target = "cp-1".into();
        s.id = "kubernetes-ca/wait-kube-root-ca@cp-1".into();
        assert!(matches!(reason(s), Reason::BadTarget(_)));
        let s = step(
            "distribute-ca",
            "cp-1",
            vec![set(None, "", Field::KubeRootCa, State::Members(vec![]))],
        );
        assert!(matches!(reason(s), Reason::OtherNode { .. }));
    }

    #[test]
    fn components_must_be_static_pods_the_node_runs_or_the_kubelet() {
        let restart = |c: &str| {
            step(
                "restart-kcm",
                "cp-1",
                vec![Op::Restart {
                    node: "cp-1".into(),
                    component: c.into(),
                }],
            )
        };
        for c in ["../../../../tmp/x", "sshd", "kube-scheduler"] {
            assert_eq!(
                reason(restart(c)),
                Reason::UnknownComponent(c.into()),
                "{c}"
            );
        }
        // A component the node runs, but not the one the template restarts.
        assert!(matches!(
            reason(restart("kube-apiserver")),
            Reason::NotTheTemplate(_)
        ));
        let kubelet = step(
            "restart-kubelet",
            "w-1",
            vec![Op::Restart {
                node: "w-1".into(),
                component: "kubelet".into(),
            }],
        );
        none(vec![kubelet]);
    }

    #[test]
    fn restarts_are_manual_exactly_where_trustform_cannot_run_commands() {
        let kubelet = |op: Op| step("restart-kubelet", "w-1", vec![op]);
        let manual = |instructions: Vec<String>| Op::ManualRestart {
            node: "w-1".into(),
            component: "kubelet".into(),
            instructions,
        };
        let auto = Op::Restart {
            node: "w-1".into(),
            component: "kubelet".into(),
        };
        let ours = crate::plan::manual::restart_instructions("w-1", "kubelet", None);
        let check = |s: Step, known: &Known| {
            validate(
                &plan(vec![s]),
                known,
                &crate::procedure::load_all().unwrap(),
            )
        };
        // w-1 runs commands: a manual restart there is refused.
        let r = check(kubelet(manual(ours.clone())), &known());
        assert!(
            matches!(&r[..], [r] if matches!(r.reason, Reason::Manual(_))),
            "{r:?}"
        );
        // w-1 is reached through a directory: only the manual restart, with trustform's
        // own instructions, is accepted.
        let mut k = known();
        k.nodes.get_mut("w-1").unwrap().manual = true;
        assert!(check(kubelet(manual(ours.clone())), &k).is_empty());
        let r = check(kubelet(auto), &k);
        assert!(
            matches!(&r[..], [r] if matches!(r.reason, Reason::Manual(_))),
            "{r:?}"
        );
        let mut edited = ours;
        edited[1] = "  rm -rf /etc/kubernetes".into();
        let r = check(kubelet(manual(edited)), &k);
        assert!(
            matches!(&r[..], [r] if r.reason == Reason::NotTheInstructions),
            "{r:?}"
        );
        // The other checks of a restart still hold: its component, its template.
        let mut k2 = k.clone();
        k2.nodes.get_mut("cp-1").unwrap().manual = true;
        let s = step(
            "restart-kcm",
            "cp-1",
            vec![Op::ManualRestart {
                node: "cp-1".into(),
                component: "sshd".into(),
                instructions: crate::plan::manual::restart_instructions("cp-1", "sshd", None),
            }],
        );
        let r = check(s, &k2);
        assert!(
            matches!(&r[..], [r] if r.reason == Reason::UnknownComponent("sshd".into())),
            "{r:?}"
        );
        let s = step(
            "restart-kcm",
            "cp-1",
            vec![Op::ManualRestart {
                node: "cp-1".into(),
                component: "kube-controller-manager".into(),
                instructions: crate::plan::manual::restart_instructions(
                    "cp-1",
                    "kube-controller-manager",
                    Some("/etc/kubernetes/manifests/kube-controller-manager.yaml"),
                ),
            }],
        );
        assert!(check(s, &k2).is_empty());
    }

    #[test]
    fn steps_must_be_their_templates() {
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        s.procedure = "ssh-keys".into();
        assert_eq!(reason(s), Reason::UnknownProcedure("ssh-keys".into()));
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        s.template = "write-anything".into();
        assert_eq!(reason(s), Reason::UnknownTemplate("write-anything".into()));
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        s.action = Action::SwitchSigner;
        assert!(matches!(reason(s), Reason::NotTheTemplate(_)));
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        s.stage = Stage::PostRotate;
        assert!(matches!(reason(s), Reason::NotTheTemplate(_)));
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        s.kind = ActionKind::Wait;
        assert!(matches!(reason(s), Reason::NotTheTemplate(_)));
        let mut s = bundle("/etc/kubernetes/pki/ca.crt");
        s.id = "kubernetes-ca/distribute-ca@elsewhere".into();
        assert!(matches!(reason(s), Reason::BadId(_)));
    }

    #[test]
    fn cluster_objects_must_be_held_by_the_cluster() {
        let s = step(
            "ca-bundles",
            "cluster",
            vec![set(
                None,
                "MutatingWebhookConfiguration/evil#/webhooks/0",
                Field::CaBundle,
                State::Members(vec![]),
            )],
        );
        assert!(matches!(reason(s), Reason::UnknownObject(_)));
        let s = step(
            "wait-kube-root-ca",
            "cluster",
            vec![set(
                None,
                "/etc/passwd",
                Field::KubeRootCa,
                State::Members(vec![]),
            )],
        );
        assert!(matches!(reason(s), Reason::PathNotOfField(_)));
        let s = step(
            "wait-kube-root-ca",
            "cluster",
            vec![set(None, "", Field::ClusterInfo, State::Members(vec![]))],
        );
        assert!(matches!(reason(s), Reason::FieldNotOfAction(_)));
    }

    #[test]
    fn every_refusal_is_listed_with_step_op_and_path() {
        let r = refusals(vec![
            bundle("/etc/kubernetes/pki/../../../../x.crt"),
            bundle("/root/.ssh/authorized_keys"),
        ]);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0].to_string(),
            "step kubernetes-ca/distribute-ca@cp-1, op 0 (/etc/kubernetes/pki/../../../../x.crt): not a normal absolute node path: it has a `..` component"
        );
        assert!(r[1].to_string().contains("(/root/.ssh/authorized_keys)"));
        // Located in the plan file's text.
        let text = "{\n  \"id\": \"kubernetes-ca/distribute-ca@cp-1\",\n  \"path\": \"/root/.ssh/authorized_keys\"\n}";
        let l = r[1].clone().located("plan.json", text);
        let span = l.span.unwrap();
        assert_eq!(
            &text[span.offset()..span.offset() + span.len()],
            "\"/root/.ssh/authorized_keys\""
        );
    }

    /// The lead's decision (issue "Safety first"): no keyed checksum. The checksum stays
    /// a plain SHA-256 anyone can recompute, so safety cannot rest on it: a resealed plan
    /// passes the checksum and must be stopped by this validation.
    #[test]
    fn the_checksum_is_unkeyed_so_a_resealed_plan_is_caught_here() {
        let mut p = plan(vec![bundle("/etc/kubernetes/pki/ca.crt")]).seal();
        let sealed = p.checksum.clone();
        // Anyone can recompute it without a key: SHA-256 of the JSON with it empty.
        let mut blank = p.clone();
        blank.checksum = String::new();
        use sha2::Digest;
        let body = serde_json::to_vec(&blank).unwrap();
        assert_eq!(
            sealed,
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(&body)))
        );
        // An edited and resealed plan passes the checksum …
        if let Op::Set { path, .. } = &mut p.steps[0].ops[0] {
            *path = "/root/.ssh/authorized_keys".into();
        }
        let p = p.seal();
        assert_eq!(p.checksum, p.compute_checksum());
        // … and the validator refuses it.
        let r = validate(&p, &known(), &crate::procedure::load_all().unwrap());
        assert_eq!(r.len(), 1);
    }
}
