//! Expansion: procedures × stage targets × inventory → steps with dependencies.

use super::{
    AuthorityChange, Op, Plan, PlanError, Skipped, Step, StepChange, Summary, TargetLabels,
};
use crate::config::Authority;
use crate::diff::{
    Consumer, Desired, Field, KCM_ROOT_CA_FLAG, SIGNER_COPY, State, Target, consumers, lineage,
};
use crate::procedure::{Action, ForEach, Procedure, Stage, StepTemplate};
use crate::snapshot::Role;
use crate::snapshot::Snapshot;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What `build` needs.
pub struct Input<'a> {
    /// The cluster as observed.
    pub snapshot: &'a Snapshot,
    /// The desired state, resolved.
    pub desired: &'a Desired,
    /// Procedures (embedded `plans/`).
    pub procedures: &'a [Procedure],
    /// Cluster name.
    pub cluster: &'a str,
    /// Hash of trustform.yaml.
    pub config_hash: &'a str,
    /// Go straight to the desired state in every stage, without the safe intermediate
    /// ones (rehearse then shows why that breaks trust).
    pub no_stages: bool,
    /// Nodes trustform cannot run commands on (`Loaded::manual_nodes`): their restarts
    /// are manual steps ([`super::manual`]).
    pub manual: &'a BTreeSet<String>,
}

/// The three stage targets between `current` and `want`: pre-rotate adds the desired
/// trust, rotate switches the issuer, post-rotate drops what is no longer trusted.
pub fn stage_targets(current: &Target, want: &Target) -> [(Stage, Target); 3] {
    let mut union = current.trust.clone();
    for fp in &want.trust {
        if !union.contains(fp) {
            union.push(fp.clone());
        }
    }
    [
        (
            Stage::PreRotate,
            Target {
                issuer: current.issuer.clone(),
                trust: union.clone(),
            },
        ),
        (
            Stage::Rotate,
            Target {
                issuer: want.issuer.clone(),
                trust: union,
            },
        ),
        (Stage::PostRotate, want.clone()),
    ]
}

/// The planner's model of the cluster while it plans.
struct World {
    /// Consumer → state after the steps planned so far.
    state: BTreeMap<Consumer, State>,
    /// (node, component) → files it must re-read.
    dirty: BTreeMap<(String, String), BTreeSet<String>>,
    /// (node, component) → files it reads (the manifest included).
    inputs: HashMap<(String, String), BTreeSet<String>>,
}

impl World {
    fn touch(&mut self, node: &str, path: &str) {
        for ((n, comp), files) in &self.inputs {
            if n == node && files.contains(path) {
                self.dirty
                    .entry((n.clone(), comp.clone()))
                    .or_default()
                    .insert(path.to_string());
            }
        }
    }
}

/// Does `action` (of a template) move this consumer, when it must go to `want`?
fn covers(t: &StepTemplate, c: &Consumer, want: &State, kubelet_ca: Option<&str>) -> bool {
    let in_files = |path: &str| {
        t.files
            .iter()
            .any(|f| path == format!("/etc/kubernetes/{f}"))
    };
    match t.action {
        Action::WriteCaFiles => {
            (c.field == Field::Bundle && c.path == c.authority.ca_file())
                || (c.field == Field::SignerCopy && *want != State::Absent)
        }
        Action::SwitchSigner => {
            c.field == Field::SigningKey || (c.field == Field::SignerCopy && *want != State::Absent)
        }
        Action::SetKcmSigningFlags => matches!(c.field, Field::Flag(..)),
        Action::SetKcmRootCaNewOnly => {
            matches!(&c.field, Field::Flag(_, f) if f == KCM_ROOT_CA_FLAG)
        }
        Action::RemoveSignerCopy => c.field == Field::SignerCopy && *want == State::Absent,
        Action::WriteKubeconfigs => {
            matches!(c.field, Field::KubeconfigCa | Field::KubeconfigClient)
                && (in_files(&c.path) || (t.copies && crate::layout::is_copy(&c.path)))
        }
        Action::WriteKubeletTrust => {
            (c.field == Field::Bundle && kubelet_ca == Some(c.path.as_str()))
                || (matches!(c.field, Field::KubeconfigCa | Field::KubeconfigClient)
                    && c.path == "/etc/kubernetes/kubelet.conf")
                || (c.field == Field::Leaf && c.path.starts_with("/var/lib/kubelet/pki/"))
        }
        Action::ReissueLeaves => c.field == Field::Leaf && in_files(&c.path),
        Action::WaitKubeRootCa => c.field == Field::KubeRootCa,
        Action::RestartWorkloads => c.field == Field::PodTrust,
        Action::UpdateClusterInfo => c.field == Field::ClusterInfo,
        Action::RestartExtensionServers => c.field == Field::ExtensionAuth,
        Action::UpdateCaBundles => c.field == Field::CaBundle,
        Action::RestartStaticPod | Action::RestartKubelet | Action::VerifyTrust => false,
    }
}

fn lines(state: &State, d: &Desired, new_leaf: bool) -> Vec<String> {
    match state {
        State::Members(v) => v.iter().map(|fp| format!("CA {}", d.label(fp))).collect(),
        State::KeyOf(fp) => vec![format!("key of CA {}", d.label(fp))],
        State::UnknownKey(pk) => vec![format!(
            "a key matching no known CA (public key {})",
            pk.short()
        )],
        State::IssuedBy(fp) if new_leaf => vec![
            format!("new certificate issued by CA {}", d.label(fp)),
            "fingerprint (known after apply)".into(),
        ],
        State::IssuedBy(fp) => vec![format!("certificate issued by CA {}", d.label(fp))],
        State::UnknownIssuer => vec!["certificate from an unknown issuer".into()],
        State::Path(p) => vec![p.clone()],
        State::Absent => vec!["(absent)".into()],
    }
}

/// Build the plan.
pub fn build(input: &Input) -> Result<Plan, PlanError> {
    let snap = input.snapshot;
    let d = input.desired;
    let rotating: Vec<(Authority, &Target, &Target)> = d
        .authorities
        .iter()
        .filter(|(_, (c, w))| c != w)
        .map(|(a, (c, w))| (*a, c, w))
        .collect();

    let mut world = World {
        state: BTreeMap::new(),
        dirty: BTreeMap::new(),
        inputs: HashMap::new(),
    };
    for n in &snap.nodes {
        for (name, comp) in &n.components {
            let mut files: BTreeSet<String> = comp.inputs.iter().cloned().collect();
            files.insert(comp.manifest.clone());
            if name == "kube-controller-manager" {
                files.insert(SIGNER_COPY.to_string());
            }
            world.inputs.insert((n.name.clone(), name.clone()), files);
        }
        if let Some(k) = &n.kubelet {
            world.inputs.insert(
                (n.name.clone(), "kubelet".into()),
                k.inputs.iter().cloned().collect(),
            );
        }
    }
    let mut finals: Vec<(Consumer, State)> = Vec::new();
    for (auth, current, want) in &rotating {
        for (c, s) in consumers(snap, *auth, current, &lineage(current, want)) {
            finals.push((c.clone(), c.desired(want)));
            world.state.insert(c, s);
        }
    }

    let mut steps: Vec<Step> = Vec::new();
    let mut skipped = Vec::new();
    let mut authorities = Vec::new();
    let mut exit: Vec<usize> = Vec::new(); // frontier of the previous procedure
    for (auth, current, want_target) in &rotating {
        let want = want_target;
        let Some(proc_) = input.procedures.iter().find(|p| p.authority == *auth) else {
            let have: Vec<String> = input
                .procedures
                .iter()
                .map(|p| p.authority.to_string())
                .collect();
            return Err(PlanError::NoProcedure(auth.to_string(), have.join(", ")));
        };
        let labels = |t: &Target| TargetLabels {
            issuer: d.label(&t.issuer),
            trust: t.trust.iter().map(|f| d.label(f)).collect(),
        };
        authorities.push(AuthorityChange {
            authority: auth.to_string(),
            from: labels(current),
            to: labels(want),
        });
        let targets: HashMap<Stage, Target> = if input.no_stages {
            [Stage::PreRotate, Stage::Rotate, Stage::PostRotate]
                .into_iter()
                .map(|s| (s, (*want).clone()))
                .collect()
        } else {
            stage_targets(current, want).into_iter().collect()
        };
        // template id → frontier (step indices a dependent must wait for)
        let mut frontier: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut named_later: BTreeSet<&str> = BTreeSet::new();
        let mut any_step_in_proc = false;
        for t in &proc_.steps {
            named_later.extend(t.after.iter().map(String::as_str));
            let deps: Vec<usize> = if t.after.is_empty() {
                exit.clone()
            } else {
                let mut v: Vec<usize> = t
                    .after
                    .iter()
                    .flat_map(|a| frontier[a.as_str()].clone())
                    .collect();
                v.sort();
                v.dedup();
                v
            };
            let stage_target = &targets[&t.stage];
            let nodes: Vec<&crate::snapshot::NodeSnapshot> = match t.for_each {
                ForEach::ControlPlaneNode => snap
                    .nodes
                    .iter()
                    .filter(|n| n.role == Role::ControlPlane)
                    .collect(),
                ForEach::Node => snap.nodes.iter().collect(),
                ForEach::Cluster => vec![],
            };
            let target_names: Vec<Option<&str>> = match t.for_each {
                ForEach::Cluster => vec![None],
                _ => nodes.iter().map(|n| Some(n.name.as_str())).collect(),
            };
            let mut made: Vec<usize> = Vec::new();
            for target in target_names {
                let kubelet_ca = target
                    .and_then(|n| snap.node(n))
                    .and_then(|n| n.kubelet.as_ref())
                    .and_then(|k| k.client_ca_file.as_deref());
                let mut changes = Vec::new();
                let mut ops = Vec::new();
                match t.action {
                    Action::RestartStaticPod | Action::RestartKubelet => {
                        let comp = t.component.clone().unwrap_or_else(|| "kubelet".into());
                        let node = target.expect("node action");
                        if let Some(files) = world.dirty.remove(&(node.to_string(), comp.clone())) {
                            ops.push(if input.manual.contains(node) {
                                let manifest = snap
                                    .node(node)
                                    .and_then(|n| n.components.get(&comp))
                                    .map(|c| c.manifest.as_str());
                                Op::ManualRestart {
                                    node: node.to_string(),
                                    component: comp.clone(),
                                    instructions: super::manual::restart_instructions(
                                        node, &comp, manifest,
                                    ),
                                }
                            } else {
                                Op::Restart {
                                    node: node.to_string(),
                                    component: comp.clone(),
                                }
                            });
                            changes.push(StepChange {
                                what: format!("{node}: {comp}"),
                                before: vec![
                                    "running with the files it read at its last start".into(),
                                ],
                                after: files.iter().map(|f| format!("re-reads {f}")).collect(),
                            });
                        }
                    }
                    Action::VerifyTrust => {
                        if any_step_in_proc {
                            ops.push(Op::Verify {
                                authority: *auth,
                                issuer: stage_target.issuer.clone(),
                                trust: stage_target.trust.clone(),
                                retired: lineage(current, want)
                                    .into_iter()
                                    .filter(|fp| !stage_target.trust.contains(fp))
                                    .collect(),
                            });
                            changes.push(StepChange {
                                what: "every trust edge".into(),
                                before: vec![],
                                after: vec![format!(
                                    "verifies against {} (gate: stop on any failure)",
                                    labels(stage_target).trust.join(", ")
                                )],
                            });
                        }
                    }
                    _ => {
                        let todo: Vec<(Consumer, State)> = world
                            .state
                            .iter()
                            .filter(|(c, _)| c.authority == *auth && c.node.as_deref() == target)
                            .filter_map(|(c, s)| {
                                let want = match t.action {
                                    Action::SetKcmRootCaNewOnly => {
                                        new_only_root(&world, c, stage_target)
                                    }
                                    _ => c.desired(stage_target),
                                };
                                (want != *s && covers(t, c, &want, kubelet_ca))
                                    .then(|| (c.clone(), want))
                            })
                            .collect();
                        for (c, want) in todo {
                            let before = world
                                .state
                                .insert(c.clone(), want.clone())
                                .expect("known consumer");
                            let new_leaf = matches!(c.field, Field::Leaf | Field::KubeconfigClient);
                            ops.push(Op::Set {
                                node: c.node.clone(),
                                authority: c.authority,
                                path: c.path.clone(),
                                field: c.field.clone(),
                                want: want.clone(),
                                replaces: if c.field == Field::CaBundle {
                                    lineage(current, want_target)
                                } else {
                                    vec![]
                                },
                            });
                            changes.push(StepChange {
                                what: c.describe(),
                                before: lines(&before, d, false),
                                after: lines(&want, d, new_leaf),
                            });
                            if let Some(n) = &c.node {
                                world.touch(n, &c.path);
                            }
                        }
                    }
                }
                if changes.is_empty() {
                    continue;
                }
                let idx = steps.len();
                let depends_on: Vec<usize> = match (t.rolling, made.last()) {
                    (true, Some(prev)) => vec![*prev],
                    _ => deps.clone(),
                };
                let target_name = target.unwrap_or("cluster").to_string();
                steps.push(Step {
                    id: format!("{}/{}@{}", proc_.procedure, t.id, target_name),
                    procedure: proc_.procedure.clone(),
                    template: t.id.clone(),
                    doc_step: t.doc.clone(),
                    title: t.title.clone(),
                    stage: t.stage,
                    target: target_name,
                    action: t.action,
                    kind: t.action.kind(),
                    changes,
                    why: t.why.clone(),
                    disruption: t.disruption.clone(),
                    ops,
                    depends_on: depends_on.iter().map(|i| steps[*i].id.clone()).collect(),
                });
                made.push(idx);
            }
            if made.is_empty() {
                if let Some(doc) = &t.doc {
                    skipped.push(Skipped {
                        id: format!("{}/{}", proc_.procedure, t.id),
                        doc_step: doc.clone(),
                        reason: skip_reason(t),
                    });
                }
                frontier.insert(&t.id, deps);
            } else {
                any_step_in_proc = true;
                let f = if t.rolling {
                    vec![*made.last().expect("non-empty")]
                } else {
                    made
                };
                frontier.insert(&t.id, f);
            }
        }
        // The procedure's exit: frontiers of templates no later template waits for.
        let mut next_exit: Vec<usize> = proc_
            .steps
            .iter()
            .filter(|t| !named_later.contains(t.id.as_str()))
            .flat_map(|t| frontier[t.id.as_str()].clone())
            .collect();
        next_exit.sort();
        next_exit.dedup();
        exit = next_exit;
    }

    let unreachable: Vec<String> = finals
        .iter()
        .filter(|(c, want)| world.state.get(c) != Some(want))
        .map(|(c, _)| c.describe())
        .collect();
    if !unreachable.is_empty() {
        return Err(PlanError::Impossible(unreachable));
    }
    let mut plan = Plan {
        format_version: super::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        cluster: input.cluster.to_string(),
        checksum: String::new(),
        snapshot_fingerprint: snap.fingerprint.clone(),
        config_hash: input.config_hash.to_string(),
        observed: observed(snap),
        authorities,
        summary: Summary::of(&steps),
        steps,
        skipped: if rotating.is_empty() { vec![] } else { skipped },
        continuity: None,
    };
    plan.graph()?;
    if !plan.is_empty() {
        let r = super::rehearse::rehearse(snap, &plan, &|fp| d.label(fp));
        r.verdict(if input.no_stages {
            "with --no-stages the issuer and the trust set switch in one go: processes that restart early stop trusting the CA that still signs the leaves others serve, and new leaves meet verifiers that do not trust their CA yet; plan without --no-stages (trustform inserts the safe stages: trust both, switch the issuer, drop the old CA)"
        } else {
            "trustform.yaml asks for a state its procedures cannot reach without a break; `trustform rehearse` lists every breaking edge"
        })?;
        plan.continuity = Some(r);
    }
    Ok(plan.seal())
}

/// Digest of each observed file (and each node's components and kubelet), so a stale
/// plan names what changed.
pub fn observed(snap: &Snapshot) -> BTreeMap<String, String> {
    fn digest<T: serde::Serialize>(v: &T) -> String {
        use sha2::{Digest, Sha256};
        let body = serde_json::to_vec(v).expect("snapshot parts serialise");
        hex::encode(&Sha256::digest(&body)[..8])
    }
    let mut out = BTreeMap::new();
    for n in &snap.nodes {
        for (path, fact) in &n.files {
            out.insert(format!("{}:{path}", n.name), digest(fact));
        }
        out.insert(format!("{}:components", n.name), digest(&n.components));
        out.insert(format!("{}:kubelet", n.name), digest(&n.kubelet));
    }
    out
}
fn skip_reason(t: &StepTemplate) -> String {
    match t.action {
        Action::RestartStaticPod | Action::RestartKubelet => "no file it reads changes".into(),
        Action::VerifyTrust => "nothing changed before it".into(),
        Action::RestartWorkloads => "every pod already holds the trust this stage needs".into(),
        Action::RestartExtensionServers => {
            "extension servers already trust this stage's CAs".into()
        }
        Action::UpdateCaBundles => "no caBundle holds a rotating CA".into(),
        _ => "already in the state this stage needs".into(),
    }
}

/// Where --root-ca-file must point for documented step 11.1: at the single-cert copy
/// while ca.crt still holds the old CA and the copy holds exactly the final trust.
fn new_only_root(world: &World, c: &Consumer, t: &Target) -> State {
    let at = |path: &str, field: Field| Consumer {
        path: path.to_string(),
        field,
        ..c.clone()
    };
    let final_trust = State::Members(t.trust.clone());
    let bundle = world.state.get(&at(c.authority.ca_file(), Field::Bundle));
    let copy = world.state.get(&at(SIGNER_COPY, Field::SignerCopy));
    if t.trust.len() == 1 && bundle != Some(&final_trust) && copy == Some(&final_trust) {
        State::Path(SIGNER_COPY.to_string())
    } else {
        c.desired(t)
    }
}
