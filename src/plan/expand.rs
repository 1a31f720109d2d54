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
use crate::snapshot::{NodeSnapshot, Snapshot};
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
    /// When it plans: a leaf that ends within its renewal window from now is renewed
    /// ([`super::renew`]).
    pub now: time::OffsetDateTime,
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
    /// Leaves to renew → their renewed state.
    renew: BTreeMap<Consumer, State>,
}

impl World {
    /// No consumer yet, nothing written; each component's (and kubelet's) input files.
    fn of(snap: &Snapshot) -> Self {
        let mut world = World {
            state: BTreeMap::new(),
            dirty: BTreeMap::new(),
            inputs: HashMap::new(),
            renew: BTreeMap::new(),
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
        world
    }

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
pub(super) fn covers(
    t: &StepTemplate,
    c: &Consumer,
    want: &State,
    kubelet_ca: Option<&str>,
) -> bool {
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
        Action::WaitTokens => c.field == Field::Tokens,
        Action::ReissueTokenSecrets => c.field == Field::TokenSecrets,
        Action::RestartStaticPod | Action::RestartKubelet | Action::VerifyTrust => false,
    }
}

fn lines(state: &State, d: &Desired, new_leaf: bool, auth: Authority) -> Vec<String> {
    let anchor = auth.anchor();
    match state {
        State::Members(v) => v
            .iter()
            .map(|fp| format!("{anchor} {}", d.label(fp)))
            .collect(),
        State::KeyOf(fp) if auth.keys_only() => vec![format!("key {}", d.label(fp))],
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
        State::Renewed { issuer, after } => vec![
            format!("renewed certificate issued by CA {}", d.label(issuer)),
            format!("ends after {after} (known after apply)"),
        ],
        State::UnknownIssuer => vec!["certificate from an unknown issuer".into()],
        State::Path(p) => vec![p.clone()],
        State::Absent => vec!["(absent)".into()],
    }
}

/// Build the plan: every consumer of each rotating authority starts where it is, then
/// each authority's procedure is expanded template by template (each template once per
/// target, with the operations that bring its consumers to the stage's target), the
/// procedures chained one after the other; the plan is refused when a consumer never
/// reaches its final state or rehearse finds a break.
pub fn build(input: &Input) -> Result<Plan, PlanError> {
    let snap = input.snapshot;
    let d = input.desired;
    let rotating: Vec<(Authority, &Target, &Target)> = d
        .authorities
        .iter()
        .filter(|(_, (c, w))| c != w)
        .map(|(a, (c, w))| (*a, c, w))
        .collect();
    let mut world = World::of(snap);
    let mut finals: Vec<(Consumer, State)> = Vec::new();
    for (auth, current, want) in &rotating {
        for (c, s) in consumers(snap, *auth, current, &lineage(current, want)) {
            finals.push((c.clone(), c.desired(want)));
            world.state.insert(c, s);
        }
    }
    let mut x = Expansion::default();
    for (auth, current, want) in &rotating {
        let Some(proc_) = input.procedures.iter().find(|p| p.authority == Some(*auth)) else {
            let have: Vec<String> = input
                .procedures
                .iter()
                .filter_map(|p| p.authority.map(|a| a.to_string()))
                .collect();
            return Err(PlanError::NoProcedure(auth.to_string(), have.join(", ")));
        };
        if *auth == Authority::Etcd && !snap.nodes.iter().any(|n| n.components.contains_key("etcd"))
        {
            // External etcd: no member is a static pod of a node trustform reaches.
            let servers = snap
                .nodes
                .iter()
                .find_map(|n| {
                    n.components
                        .get("kube-apiserver")?
                        .flags
                        .get("etcd-servers")
                })
                .cloned()
                .unwrap_or_else(|| "(no --etcd-servers)".into());
            return Err(PlanError::ExternalEtcd(servers));
        }
        x.authorities.push(AuthorityChange {
            authority: auth.to_string(),
            from: labels(d, current),
            to: labels(d, want),
        });
        let targets = if input.no_stages {
            every_stage(want)
        } else {
            stage_targets(current, want).into_iter().collect()
        };
        let rotation = Rotation {
            moves: BTreeMap::from([(
                *auth,
                Move {
                    current,
                    want,
                    targets,
                },
            )]),
        };
        x.procedure(input, &mut world, proc_, &rotation);
    }
    // Renewal: the leaves of the authorities that do not rotate and end inside their
    // window, re-issued from their own CA, after every rotation.
    let renewal = super::renew::survey(snap, d, input.procedures, input.now);
    if !renewal.renew.is_empty() {
        let proc_ = renewal
            .procedure
            .expect("a survey renews only what a procedure covers");
        let mut moves = BTreeMap::new();
        for (c, state, want) in renewal.renew {
            let (current, _) = &d.authorities[&c.authority];
            moves.entry(c.authority).or_insert_with(|| Move {
                current,
                want: current,
                targets: every_stage(current),
            });
            finals.push((c.clone(), want.clone()));
            world.state.insert(c.clone(), state);
            world.renew.insert(c, want);
        }
        x.procedure(input, &mut world, proc_, &Rotation { moves });
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
        authorities: x.authorities,
        summary: Summary::of(&x.steps),
        steps: x.steps,
        skipped: if rotating.is_empty() {
            vec![]
        } else {
            x.skipped
        },
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

/// A target as the plan shows it: CA labels, not fingerprints.
fn labels(d: &Desired, t: &Target) -> TargetLabels {
    TargetLabels {
        issuer: d.label(&t.issuer),
        trust: t.trust.iter().map(|f| d.label(f)).collect(),
    }
}

/// `t` as the target of every stage.
fn every_stage(t: &Target) -> HashMap<Stage, Target> {
    [Stage::PreRotate, Stage::Rotate, Stage::PostRotate]
        .into_iter()
        .map(|s| (s, t.clone()))
        .collect()
}

/// What one procedure moves: one authority's rotation, from `current` to `want` through
/// a target per stage; or the renewal of the leaves of several, each staying where it is.
struct Rotation<'a> {
    moves: BTreeMap<Authority, Move<'a>>,
}

/// One authority, from `current` to `want`.
struct Move<'a> {
    current: &'a Target,
    want: &'a Target,
    targets: HashMap<Stage, Target>,
}

/// The plan as it is expanded.
#[derive(Default)]
struct Expansion {
    steps: Vec<Step>,
    skipped: Vec<Skipped>,
    authorities: Vec<AuthorityChange>,
    /// The steps the previous procedure ends with: the next one starts after them.
    exit: Vec<usize>,
}

impl Expansion {
    /// Expand one procedure, template by template, after the previous one's exit.
    fn procedure(&mut self, input: &Input, world: &mut World, proc_: &Procedure, r: &Rotation) {
        let snap = input.snapshot;
        // template id → frontier (step indices a dependent must wait for)
        let mut frontier: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut named_later: BTreeSet<&str> = BTreeSet::new();
        let mut any_step_in_proc = false;
        for t in &proc_.steps {
            named_later.extend(t.after.iter().map(String::as_str));
            let deps: Vec<usize> = if t.after.is_empty() {
                self.exit.clone()
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
            let target_names: Vec<Option<&str>> = match t.for_each {
                ForEach::ControlPlaneNode => snap
                    .nodes
                    .iter()
                    .filter(|n| n.role == Role::ControlPlane)
                    .map(|n| Some(n.name.as_str()))
                    .collect(),
                ForEach::Node => snap.nodes.iter().map(|n| Some(n.name.as_str())).collect(),
                ForEach::Cluster => vec![None],
            };
            let mut made: Vec<usize> = Vec::new();
            for target in target_names {
                let (ops, changes) = match t.action {
                    Action::RestartStaticPod | Action::RestartKubelet => {
                        restart(input, world, t, target.expect("node action"))
                    }
                    Action::VerifyTrust if any_step_in_proc => verify(input.desired, t, r),
                    Action::VerifyTrust => (vec![], vec![]),
                    _ => set(input, world, t, target, r),
                };
                if changes.is_empty() {
                    continue;
                }
                let idx = self.steps.len();
                let depends_on: Vec<usize> = match (t.rolling, made.last()) {
                    (true, Some(prev)) => vec![*prev],
                    _ => deps.clone(),
                };
                let target_name = target.unwrap_or("cluster").to_string();
                self.steps.push(Step {
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
                    depends_on: depends_on
                        .iter()
                        .map(|i| self.steps[*i].id.clone())
                        .collect(),
                });
                made.push(idx);
            }
            if made.is_empty() {
                if let Some(doc) = &t.doc {
                    self.skipped.push(Skipped {
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
        self.exit = next_exit;
    }
}

/// A restart of a component on `node` that has files written since it last read them
/// (by hand on a node trustform.yaml marks manual).
fn restart(
    input: &Input,
    world: &mut World,
    t: &StepTemplate,
    node: &str,
) -> (Vec<Op>, Vec<StepChange>) {
    let comp = t.component.clone().unwrap_or_else(|| "kubelet".into());
    let Some(files) = world.dirty.remove(&(node.to_string(), comp.clone())) else {
        return (vec![], vec![]);
    };
    let op = if input.manual.contains(node) {
        let manifest = input
            .snapshot
            .node(node)
            .and_then(|n| n.components.get(&comp))
            .map(|c| c.manifest.as_str());
        Op::ManualRestart {
            node: node.to_string(),
            component: comp.clone(),
            instructions: super::manual::restart_instructions(node, &comp, manifest),
        }
    } else {
        Op::Restart {
            node: node.to_string(),
            component: comp.clone(),
        }
    };
    let change = StepChange {
        what: format!("{node}: {comp}"),
        before: vec!["running with the files it read at its last start".into()],
        after: files.iter().map(|f| format!("re-reads {f}")).collect(),
    };
    (vec![op], vec![change])
}

/// The gate of the template's stage: every trust edge of each authority moved verifies
/// against its trust set.
fn verify(d: &Desired, t: &StepTemplate, r: &Rotation) -> (Vec<Op>, Vec<StepChange>) {
    let (mut ops, mut changes) = (vec![], vec![]);
    for (auth, m) in &r.moves {
        let stage_target = &m.targets[&t.stage];
        ops.push(Op::Verify {
            authority: *auth,
            issuer: stage_target.issuer.clone(),
            trust: stage_target.trust.clone(),
            retired: lineage(m.current, m.want)
                .into_iter()
                .filter(|fp| !stage_target.trust.contains(fp))
                .collect(),
        });
        changes.push(StepChange {
            what: if r.moves.len() == 1 {
                "every trust edge".into()
            } else {
                format!("every {auth} trust edge")
            },
            before: vec![],
            after: vec![format!(
                "verifies against {} (gate: stop on any failure)",
                labels(d, stage_target).trust.join(", ")
            )],
        });
    }
    (ops, changes)
}

/// The writes of a template on `target` (a node, or the cluster's objects): each
/// consumer it covers that is not yet at the stage's target is brought there.
fn set(
    input: &Input,
    world: &mut World,
    t: &StepTemplate,
    target: Option<&str>,
    r: &Rotation,
) -> (Vec<Op>, Vec<StepChange>) {
    let kubelet_ca = target
        .and_then(|n| input.snapshot.node(n))
        .and_then(NodeSnapshot::kubelet_client_ca);
    let todo: Vec<(Consumer, State)> = world
        .state
        .iter()
        .filter(|(c, _)| r.moves.contains_key(&c.authority) && c.node.as_deref() == target)
        .filter_map(|(c, s)| {
            let stage_target = &r.moves[&c.authority].targets[&t.stage];
            let want = match (t.action, world.renew.get(c)) {
                (_, Some(renewed)) => renewed.clone(),
                (Action::SetKcmRootCaNewOnly, _) => new_only_root(world, c, stage_target),
                _ => c.desired(stage_target),
            };
            (want != *s && covers(t, c, &want, kubelet_ca)).then(|| (c.clone(), want))
        })
        .collect();
    let (mut ops, mut changes) = (vec![], vec![]);
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
                let m = &r.moves[&c.authority];
                lineage(m.current, m.want)
            } else {
                vec![]
            },
        });
        let mut after = lines(&want, input.desired, new_leaf, c.authority);
        if c.field == Field::Tokens {
            after.extend(token_lines(input.snapshot, &want, input.desired));
        }
        if c.field == Field::TokenSecrets {
            after.extend(secret_lines(input.snapshot, &want));
        }
        changes.push(StepChange {
            what: c.describe(),
            before: lines(&before, input.desired, false, c.authority),
            after,
        });
        if let Some(n) = &c.node {
            world.touch(n, &c.path);
        }
    }
    (ops, changes)
}

/// The pods a token wait awaits: each whose token another key signed, with when its
/// kubelet refreshes it (the first 10 in refresh order, then a count).
fn token_lines(snap: &Snapshot, want: &State, d: &Desired) -> Vec<String> {
    let State::Members(keys) = want else {
        return vec![];
    };
    let mut stale: Vec<&crate::snapshot::TokenFact> = snap
        .tokens
        .iter()
        .filter(|t| t.key.as_ref().is_none_or(|k| !keys.contains(k)))
        .collect();
    stale.sort_by(|a, b| (&a.refresh, &a.pod).cmp(&(&b.refresh, &b.pod)));
    let Some(last) = stale.last() else {
        return vec![];
    };
    let mut out = vec![format!(
        "{} of {} tokens are signed by another key; the kubelets refresh the last at {} (the wait gives up --wait-timeout later)",
        stale.len(),
        snap.tokens.len(),
        last.refresh
    )];
    out.extend(first_ten(stale.iter().map(|t| {
        format!(
            "  {} on {}: key {}, refresh due at {}",
            t.pod,
            t.node,
            t.key.as_ref().map_or("unknown".into(), |k| d.label(k)),
            t.refresh
        )
    })));
    out
}

/// The first ten of a plan's listed items, then how many more.
fn first_ten(items: impl ExactSizeIterator<Item = String>) -> Vec<String> {
    let n = items.len();
    let mut out: Vec<String> = items.take(10).collect();
    if n > 10 {
        out.push(format!("  and {} more", n - 10));
    }
    out
}

/// The legacy token secrets a re-issue empties: each whose token another key signed
/// (the first 10, then a count).
fn secret_lines(snap: &Snapshot, want: &State) -> Vec<String> {
    let (State::Members(keys), Some(k)) = (want, &snap.kube) else {
        return vec![];
    };
    let all: usize = k.legacy_tokens.iter().map(|p| p.holders.len()).sum();
    let stale: Vec<&String> = k
        .legacy_tokens
        .iter()
        .filter(|p| p.cas.first().is_none_or(|fp| !keys.contains(fp)))
        .flat_map(|p| &p.holders)
        .collect();
    if stale.is_empty() {
        return vec![];
    }
    let mut out = vec![format!(
        "{} of {all} legacy token secrets hold a token another key signed: emptied, and signed again by the controller manager",
        stale.len()
    )];
    out.extend(first_ten(stale.iter().map(|s| format!("  secret {s}"))));
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::tests::*;

    fn plan_of(snap: &Snapshot, d: &Desired) -> Result<Plan, PlanError> {
        let procedures = crate::procedure::load_all().unwrap();
        build(&Input {
            snapshot: snap,
            desired: d,
            procedures: &procedures,
            cluster: "t",
            config_hash: "sha256:c",
            no_stages: false,
            manual: &BTreeSet::new(),
            now: time::OffsetDateTime::now_utc(),
        })
    }

    fn rotated(cps: usize, workers: usize) -> Plan {
        plan_of(&cluster(cps, workers), &kubernetes_to_new()).expect("a plan")
    }

    /// The targets of the steps of `template`, in plan order.
    fn targets(p: &Plan, template: &str) -> Vec<String> {
        p.steps
            .iter()
            .filter(|s| s.template == template)
            .map(|s| s.target.clone())
            .collect()
    }

    fn get<'a>(p: &'a Plan, id: &str) -> &'a Step {
        p.steps
            .iter()
            .find(|s| s.id == format!("kubernetes-ca/{id}"))
            .unwrap_or_else(|| panic!("no step {id}"))
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|i| format!("kubernetes-ca/{i}")).collect()
    }

    #[test]
    fn a_control_plane_template_has_one_step_per_control_plane() {
        let p = rotated(3, 2);
        assert_eq!(targets(&p, "distribute-ca"), ["cp-1", "cp-2", "cp-3"]);
        assert_eq!(targets(&p, "apiserver-certs"), ["cp-1", "cp-2", "cp-3"]);
        assert_eq!(
            get(&p, "distribute-ca@cp-2").id,
            "kubernetes-ca/distribute-ca@cp-2"
        );
    }

    #[test]
    fn a_node_template_has_one_step_per_node_control_planes_first() {
        let p = rotated(3, 2);
        let all = ["cp-1", "cp-2", "cp-3", "w-1", "w-2"];
        assert_eq!(targets(&p, "kubelet-trust"), all);
        assert_eq!(targets(&p, "restart-kubelet"), all);
        assert_eq!(targets(&p, "kubelet-drop-old"), all);
    }

    #[test]
    fn a_node_template_leaves_out_nodes_with_nothing_to_do() {
        // user-kubeconfigs runs on every node, but only control planes hold admin.conf.
        let p = rotated(3, 2);
        assert_eq!(targets(&p, "user-kubeconfigs"), ["cp-1", "cp-2", "cp-3"]);
    }

    #[test]
    fn a_cluster_template_has_one_step() {
        let p = rotated(3, 2);
        assert_eq!(targets(&p, "cluster-info"), ["cluster"]);
        assert_eq!(targets(&p, "verify-post-rotate"), ["cluster"]);
    }

    #[test]
    fn a_full_cluster_ca_rotation_has_24_steps_per_control_plane_4_per_node_and_9_for_the_cluster()
    {
        // Counted from plans/kubernetes-ca.yaml for a kubeadm cluster without API access:
        // per control plane, every control-plane template and the node templates that
        // touch kubeconfigs only control planes hold (user-kubeconfigs,
        // control-plane-kubeconfigs-drop-old); per node, the kubelet's write and restart
        // in rotate and post-rotate; for the cluster, every cluster template but 8.1
        // (no extension server) and 8.4 (pods are taken to follow the files).
        for (cps, workers) in [(1, 0), (1, 1), (3, 2)] {
            let p = rotated(cps, workers);
            assert_eq!(
                p.steps.len(),
                24 * cps + 4 * (cps + workers) + 9,
                "{cps}+{workers}"
            );
        }
    }

    #[test]
    fn steps_carry_their_documented_numbers_and_additions_carry_none() {
        let documented = [
            ("distribute-ca", "1"),
            ("kcm-root-ca", "2"),
            ("wait-kube-root-ca", "3"),
            ("restart-in-cluster-pods", "4"),
            ("apiserver-client-ca", "5"),
            ("scheduler-client-ca", "6"),
            ("user-kubeconfigs", "7"),
            ("kubelet-trust", "8.2"),
            ("apiserver-certs", "8.3"),
            ("cluster-info", "9"),
            ("verify-control-plane", "10.1"),
            ("verify-extensions", "10.2"),
            ("kube-root-ca-new-only", "11.1"),
            ("control-plane-drop-old", "11.2"),
            ("kubelet-drop-old", "11.3"),
        ];
        let p = rotated(1, 1);
        for s in &p.steps {
            let want = documented
                .iter()
                .find(|(t, _)| *t == s.template)
                .map(|(_, d)| d.to_string());
            assert_eq!(s.doc_step, want, "{}", s.id);
        }
        for (t, _) in documented {
            assert!(!targets(&p, t).is_empty(), "{t} has a step");
        }
    }

    #[test]
    fn documented_steps_with_nothing_to_do_are_skipped_with_a_reason() {
        let p = rotated(1, 1);
        let skipped: Vec<(&str, &str)> = p
            .skipped
            .iter()
            .map(|s| (s.id.as_str(), s.doc_step.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [
                ("kubernetes-ca/extension-servers", "8.1"),
                ("kubernetes-ca/restart-workloads", "8.4")
            ]
        );
        assert_eq!(
            p.skipped[0].reason,
            "extension servers already trust this stage's CAs"
        );
    }

    #[test]
    fn a_rolling_restart_goes_one_node_at_a_time_in_node_order() {
        let p = rotated(3, 2);
        let order = ["cp-1", "cp-2", "cp-3", "w-1", "w-2"];
        for w in order.windows(2) {
            assert_eq!(
                get(&p, &format!("restart-kubelet@{}", w[1])).depends_on,
                ids(&[&format!("restart-kubelet@{}", w[0])])
            );
        }
        // The first waits for every node's kubelet trust.
        let first = &get(&p, "restart-kubelet@cp-1").depends_on;
        let every: Vec<String> = order.iter().map(|n| format!("kubelet-trust@{n}")).collect();
        assert_eq!(
            *first,
            ids(&every.iter().map(String::as_str).collect::<Vec<_>>())
        );
    }

    #[test]
    fn api_server_restarts_roll_over_the_control_planes() {
        let p = rotated(3, 0);
        assert_eq!(
            get(&p, "apiserver-client-ca@cp-3").depends_on,
            ids(&["apiserver-client-ca@cp-2"])
        );
        assert_eq!(
            get(&p, "restart-apiserver@cp-2").depends_on,
            ids(&["restart-apiserver@cp-1"])
        );
    }

    #[test]
    fn a_step_after_a_rolling_step_waits_for_its_last_node_only() {
        let p = rotated(3, 2);
        assert_eq!(
            get(&p, "wait-kube-root-ca@cluster").depends_on,
            ids(&["restart-kcm@cp-3"])
        );
        for cp in ["cp-1", "cp-2", "cp-3"] {
            assert_eq!(
                get(&p, &format!("scheduler-client-ca@{cp}")).depends_on,
                ids(&["apiserver-client-ca@cp-3"])
            );
        }
    }

    #[test]
    fn a_per_node_step_waits_for_every_node_of_the_step_before() {
        let p = rotated(3, 0);
        assert_eq!(
            get(&p, "kcm-root-ca@cp-2").depends_on,
            ids(&[
                "kcm-single-cert-flags@cp-1",
                "kcm-single-cert-flags@cp-2",
                "kcm-single-cert-flags@cp-3"
            ])
        );
    }

    #[test]
    fn a_skipped_step_hands_its_dependencies_to_the_next() {
        // 8.1 has nothing to do: 8.2 waits for what 8.1 would have waited for (step 7).
        let p = rotated(2, 1);
        assert_eq!(
            get(&p, "kubelet-trust@w-1").depends_on,
            ids(&["user-kubeconfigs@cp-1", "user-kubeconfigs@cp-2"])
        );
    }

    #[test]
    fn the_first_steps_wait_for_nothing() {
        let p = rotated(3, 2);
        let roots: Vec<&str> = p
            .steps
            .iter()
            .filter(|s| s.depends_on.is_empty())
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(
            roots,
            ids(&[
                "distribute-ca@cp-1",
                "distribute-ca@cp-2",
                "distribute-ca@cp-3"
            ])
        );
    }

    #[test]
    fn every_documented_step_runs_after_every_lower_numbered_one() {
        let p = rotated(2, 1);
        let index: HashMap<&str, usize> = p
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect();
        let mut ancestors: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); p.steps.len()];
        for (i, s) in p.steps.iter().enumerate() {
            for d in &s.depends_on {
                let j = index[d.as_str()];
                assert!(j < i, "{} depends on the later {d}", s.id);
                let above = ancestors[j].clone();
                ancestors[i].insert(j);
                ancestors[i].extend(above);
            }
        }
        let number = |d: &str| -> Vec<u32> { d.split('.').map(|x| x.parse().unwrap()).collect() };
        for (a, sa) in p.steps.iter().enumerate() {
            for (b, sb) in p.steps.iter().enumerate() {
                if let (Some(da), Some(db)) = (&sa.doc_step, &sb.doc_step)
                    && number(da) < number(db)
                {
                    assert!(
                        ancestors[b].contains(&a),
                        "{} can run before {}",
                        sb.id,
                        sa.id
                    );
                }
            }
        }
    }

    #[test]
    fn a_restart_rereads_the_files_written_since_the_last_one() {
        let p = rotated(1, 0);
        let r = get(&p, "restart-scheduler@cp-1");
        assert_eq!(
            r.ops,
            [Op::Restart {
                node: "cp-1".into(),
                component: "kube-scheduler".into()
            }]
        );
        assert_eq!(
            r.changes[0].after,
            ["re-reads /etc/kubernetes/scheduler.conf"]
        );
    }

    #[test]
    fn restarts_on_a_manual_node_are_manual_steps() {
        let procedures = crate::procedure::load_all().unwrap();
        let manual: BTreeSet<String> = ["w-1".to_string()].into();
        let (snap, d) = (cluster(1, 2), kubernetes_to_new());
        let p = build(&Input {
            snapshot: &snap,
            desired: &d,
            procedures: &procedures,
            cluster: "t",
            config_hash: "sha256:c",
            no_stages: false,
            manual: &manual,
            now: time::OffsetDateTime::now_utc(),
        })
        .unwrap();
        let manual_steps: Vec<&str> = p
            .steps
            .iter()
            .filter(|s| s.ops.iter().any(|o| matches!(o, Op::ManualRestart { .. })))
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(
            manual_steps,
            ids(&["restart-kubelet@w-1", "restart-kubelet-drop-old@w-1"])
        );
        assert_eq!(p.summary.manual, 2);
        assert!(matches!(
            get(&p, "restart-kubelet@w-2").ops[..],
            [Op::Restart { .. }]
        ));
    }

    #[test]
    fn the_ca_bundle_trusts_both_cas_then_only_the_new_one() {
        let p = rotated(1, 1);
        let want = |id: &str| {
            get(&p, id)
                .ops
                .iter()
                .find_map(|o| match o {
                    Op::Set { path, want, .. } if path == CA => Some(want.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{id} does not write {CA}"))
        };
        assert_eq!(
            want("distribute-ca@cp-1"),
            State::Members(vec![k_old(), k_new()])
        );
        assert_eq!(
            want("control-plane-drop-old@cp-1"),
            State::Members(vec![k_new()])
        );
    }

    #[test]
    fn each_gate_verifies_its_stage_target_and_names_the_retired_ca() {
        let p = rotated(1, 1);
        let gate = |id: &str| match &get(&p, id).ops[..] {
            [
                Op::Verify {
                    issuer,
                    trust,
                    retired,
                    ..
                },
            ] => (issuer.clone(), trust.clone(), retired.clone()),
            other => panic!("{id}: {other:?}"),
        };
        assert_eq!(
            gate("verify-pre-rotate@cluster"),
            (k_old(), vec![k_old(), k_new()], vec![])
        );
        assert_eq!(
            gate("verify-control-plane@cluster"),
            (k_new(), vec![k_old(), k_new()], vec![])
        );
        assert_eq!(
            gate("verify-post-rotate@cluster"),
            (k_new(), vec![k_new()], vec![k_old()])
        );
    }

    #[test]
    fn stage_targets_trust_both_then_switch_the_issuer_then_drop_the_old_ca() {
        let [(s1, pre), (s2, rot), (s3, post)] =
            stage_targets(&target(&k_old(), &[k_old()]), &target(&k_new(), &[k_new()]));
        assert_eq!(
            (s1, s2, s3),
            (Stage::PreRotate, Stage::Rotate, Stage::PostRotate)
        );
        assert_eq!(pre, target(&k_old(), &[k_old(), k_new()]));
        assert_eq!(rot, target(&k_new(), &[k_old(), k_new()]));
        assert_eq!(post, target(&k_new(), &[k_new()]));
    }

    #[test]
    fn the_summary_counts_the_plans_steps() {
        let p = rotated(1, 1);
        let kind = |k| p.steps.iter().filter(|s| s.kind == k).count();
        assert_eq!(p.summary.steps, p.steps.len());
        assert_eq!(p.summary.writes, kind(crate::procedure::ActionKind::Write));
        assert_eq!(
            p.summary.restarts,
            kind(crate::procedure::ActionKind::Restart)
        );
        assert_eq!(p.summary.waits, kind(crate::procedure::ActionKind::Wait));
        assert_eq!(
            p.summary.writes + p.summary.restarts + p.summary.waits,
            p.steps.len()
        );
        assert_eq!(
            p.summary.stages,
            [Stage::PreRotate, Stage::Rotate, Stage::PostRotate]
        );
    }

    #[test]
    fn a_plan_is_sealed_and_carries_its_rehearsal() {
        let p = rotated(1, 1);
        assert_eq!(p.checksum, p.compute_checksum());
        let r = p.continuity.as_ref().expect("rehearsed");
        assert_eq!((r.edges, r.steps), (10, p.steps.len()));
        assert!(r.breaks.is_empty());
    }

    #[test]
    fn nothing_desired_means_no_steps_and_nothing_skipped() {
        let d = desired(&[(
            Authority::Kubernetes,
            target(&k_old(), &[k_old()]),
            target(&k_old(), &[k_old()]),
        )]);
        let p = plan_of(&cluster(1, 1), &d).unwrap();
        assert!(p.steps.is_empty() && p.skipped.is_empty() && p.authorities.is_empty());
        assert_eq!(p.continuity, None);
    }

    #[test]
    fn an_authority_without_a_procedure_is_refused() {
        let procedures: Vec<Procedure> = crate::procedure::load_all()
            .unwrap()
            .into_iter()
            .filter(|p| p.authority != Some(Authority::Kubernetes))
            .collect();
        let (snap, d) = (cluster(1, 0), kubernetes_to_new());
        let r = build(&Input {
            snapshot: &snap,
            desired: &d,
            procedures: &procedures,
            cluster: "t",
            config_hash: "sha256:c",
            no_stages: false,
            manual: &BTreeSet::new(),
            now: time::OffsetDateTime::now_utc(),
        });
        let Err(PlanError::NoProcedure(auth, have)) = r else {
            panic!("planned without a procedure");
        };
        assert_eq!(
            (auth.as_str(), have.as_str()),
            ("kubernetes", "front-proxy, etcd, service-account")
        );
    }

    #[test]
    fn an_etcd_rotation_without_stacked_members_is_refused_as_external() {
        let mut snap = cluster(1, 0);
        snap.nodes[0].components.remove("etcd");
        snap.nodes[0]
            .components
            .get_mut("kube-apiserver")
            .unwrap()
            .flags
            .insert("etcd-servers".into(), "https://10.0.0.5:2379".into());
        let mut d = kubernetes_to_new();
        let k = d.authorities.remove(&Authority::Kubernetes).unwrap();
        d.authorities.insert(Authority::Etcd, k);
        let r = plan_of(&snap, &d);
        let Err(PlanError::ExternalEtcd(servers)) = r else {
            panic!("planned an external etcd: {r:?}");
        };
        assert_eq!(servers, "https://10.0.0.5:2379");
    }

    #[test]
    fn a_leaf_no_documented_step_reissues_makes_the_plan_impossible() {
        let mut snap = cluster(1, 0);
        snap.nodes[0].files.insert(
            "/etc/kubernetes/pki/custom.crt".into(),
            leaf("custom", Some(&k_old())),
        );
        let Err(PlanError::Impossible(what)) = plan_of(&snap, &kubernetes_to_new()) else {
            panic!("planned a rotation that leaves a leaf of the old CA");
        };
        assert_eq!(what, ["cp-1:/etc/kubernetes/pki/custom.crt (certificate)"]);
    }

    #[test]
    fn going_straight_to_the_end_in_every_stage_is_refused_by_rehearse() {
        let procedures = crate::procedure::load_all().unwrap();
        let (snap, d) = (cluster(1, 1), kubernetes_to_new());
        let r = build(&Input {
            snapshot: &snap,
            desired: &d,
            procedures: &procedures,
            cluster: "t",
            config_hash: "sha256:c",
            no_stages: true,
            manual: &BTreeSet::new(),
            now: time::OffsetDateTime::now_utc(),
        });
        let Err(PlanError::Break { at, edge, .. }) = r else {
            panic!("--no-stages passes rehearse");
        };
        // Writes alone break nothing (processes hold what they read at start); the first
        // restart does: the controller manager comes back trusting only the new CA, while
        // its API server still serves a certificate of the old one.
        assert_eq!(at, "step restart-kcm on cp-1");
        assert_eq!(
            edge,
            "kube-controller-manager on cp-1 → kube-apiserver on cp-1"
        );
    }

    #[test]
    fn a_front_proxy_rotation_uses_its_own_procedure() {
        let d = desired(&[(
            Authority::FrontProxy,
            target(&f_old(), &[f_old()]),
            target(&f_new(), &[f_new()]),
        )]);
        let p = plan_of(&cluster(2, 1), &d).unwrap();
        assert!(p.steps.iter().all(|s| s.procedure == "front-proxy-ca"));
        let client: Vec<&str> = p
            .steps
            .iter()
            .filter(|s| s.doc_step.as_deref() == Some("8.3"))
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(
            client,
            [
                "front-proxy-ca/front-proxy-client@cp-1",
                "front-proxy-ca/front-proxy-client@cp-2"
            ]
        );
    }

    /// `cluster(2, 1)` with API access and two owned pods per node, each holding a token
    /// the old service-account key signed.
    fn with_tokens() -> Snapshot {
        let mut snap = cluster(2, 1);
        let pods: Vec<String> = ["cp-1", "cp-2", "w-1"]
            .iter()
            .map(|n| format!("kube-system/kube-proxy-{n}"))
            .collect();
        snap.kube = Some(crate::snapshot::KubeSnapshot {
            server: "https://127.0.0.1:6443".into(),
            namespaces: 1,
            kube_root_ca: vec![],
            kube_root_ca_missing: vec![],
            token_secrets: vec![],
            legacy_tokens: vec![crate::snapshot::Published {
                cas: vec![s_old()],
                holders: vec!["kube-system/default-token-abcde".into()],
            }],
            cluster_info: None,
            extension_auth: None,
            ca_bundles: vec![],
            workloads: 1,
            pods: vec![crate::snapshot::PodGroup {
                trust: Some(vec![k_old()]),
                pods: pods.clone(),
                workloads: vec!["kube-system/DaemonSet/kube-proxy".into()],
                bare: vec![],
            }],
        });
        snap.tokens = pods
            .iter()
            .zip(["cp-1", "cp-2", "w-1"])
            .map(|(pod, node)| crate::snapshot::TokenFact {
                node: node.into(),
                pod: pod.clone(),
                path: crate::layout::pod_token("uid", "kube-api-access"),
                key: Some(s_old()),
                issued: "2026-12-08T00:00:00Z".into(),
                expires: "2027-12-08T00:00:00Z".into(),
                refresh: format!("2026-12-08T00:4{}:00Z", &node[node.len() - 1..]),
            })
            .collect();
        snap
    }

    fn service_account_to_new() -> Desired {
        desired(&[(
            Authority::ServiceAccount,
            target(&s_old(), &[s_old()]),
            target(&s_new(), &[s_new()]),
        )])
    }

    #[test]
    fn a_service_account_key_rotation_drops_the_old_key_only_after_fresh_tokens() {
        let p = plan_of(&with_tokens(), &service_account_to_new()).unwrap();
        let templates: Vec<String> = p
            .steps
            .iter()
            .map(|s| format!("{}@{}", s.template, s.target))
            .collect();
        assert_eq!(
            templates,
            [
                "distribute-key@cp-1",
                "distribute-key@cp-2",
                "restart-apiserver@cp-1",
                "restart-apiserver@cp-2",
                "verify-pre-rotate@cluster",
                "switch-signer@cp-1",
                "switch-signer@cp-2",
                "restart-apiserver-signer@cp-1",
                "restart-apiserver-signer@cp-2",
                "restart-controller-manager@cp-1",
                "restart-controller-manager@cp-2",
                "reissue-token-secrets@cluster",
                "wait-tokens@cluster",
                "verify@cluster",
                "drop-old@cp-1",
                "drop-old@cp-2",
                "restart-apiserver-drop-old@cp-1",
                "restart-apiserver-drop-old@cp-2",
                "verify-post-rotate@cluster",
            ]
        );
        assert!(p.steps.iter().all(|s| s.doc_step.is_none()));
        let step = |id: &str| {
            p.steps
                .iter()
                .find(|s| s.id == format!("service-account-key/{id}"))
                .unwrap()
        };
        // sa.pub: both keys, then the new one alone; sa.key: the new key.
        let want = |id: &str| match &step(id).ops[0] {
            Op::Set { path, want, .. } => (path.clone(), want.clone()),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            want("distribute-key@cp-1"),
            (SA_PUB.into(), State::Members(vec![s_old(), s_new()]))
        );
        assert_eq!(
            want("switch-signer@cp-2"),
            (SA_KEY.into(), State::KeyOf(s_new()))
        );
        assert_eq!(
            want("drop-old@cp-2"),
            (SA_PUB.into(), State::Members(vec![s_new()]))
        );
        // The legacy token secret is re-issued, and named.
        assert_eq!(
            want("reissue-token-secrets@cluster"),
            (String::new(), State::Members(vec![s_new()]))
        );
        assert_eq!(
            step("reissue-token-secrets@cluster").changes[0].after[1..],
            [
                "1 of 1 legacy token secrets hold a token another key signed: emptied, and signed again by the controller manager",
                "  secret kube-system/default-token-abcde"
            ]
        );
        // The wait names every pod whose token the old key signed, the last refresh first
        // in the summary line.
        let wait = step("wait-tokens@cluster");
        assert_eq!(wait.kind, crate::procedure::ActionKind::Wait);
        assert_eq!(
            want("wait-tokens@cluster"),
            (String::new(), State::Members(vec![s_new()]))
        );
        let after = &wait.changes[0].after;
        assert!(
            after[1].starts_with("3 of 3 tokens are signed by another key; the kubelets refresh the last at 2026-12-08T00:42:00Z"),
            "{after:?}"
        );
        assert!(
            after[2].starts_with("  kube-system/kube-proxy-cp-1 on cp-1: key ca-6"),
            "{after:?}"
        );
        // The controller manager restarts for sa.key; no kubelet restarts.
        assert!(
            step("restart-controller-manager@cp-1").changes[0].after
                == ["re-reads /etc/kubernetes/pki/sa.key"]
        );
        assert!(p.steps.iter().all(|s| s.template != "restart-kubelet"));
        // The pods' edges were judged throughout.
        let r = p.continuity.as_ref().unwrap();
        assert!(r.breaks.is_empty(), "{r:?}");
    }

    #[test]
    fn dropping_the_old_service_account_key_before_the_tokens_are_fresh_breaks_every_pod() {
        let snap = with_tokens();
        let mut p = plan_of(&snap, &service_account_to_new()).unwrap();
        // Without the wait, the old key goes while every pod presents a token it signed.
        p.steps.retain(|s| s.template != "wait-tokens");
        for s in &mut p.steps {
            s.depends_on
                .retain(|d| d != "service-account-key/wait-tokens@cluster");
        }
        let r = super::super::rehearse::rehearse(&snap, &p, &|f| format!("key {}", f.short()));
        let mut broken: Vec<(&str, &str)> = r
            .breaks
            .iter()
            .map(|b| (b.edge.as_str(), b.at.as_str()))
            .collect();
        broken.sort();
        let mut want = vec![];
        for pod in ["cp-1", "cp-2", "w-1"] {
            for api in ["cp-1", "cp-2"] {
                want.push((
                    format!("pod kube-system/kube-proxy-{pod} → kube-apiserver on {api}"),
                    format!("step restart-apiserver-drop-old on {api}"),
                ));
            }
        }
        want.sort();
        let want: Vec<(&str, &str)> = want.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(broken, want);
        assert!(
            r.breaks[0].why.contains(&format!(
                "presents a service-account token signed by key {}, but kube-apiserver on cp-1 accepts only key {} (--service-account-key-file /etc/kubernetes/pki/sa.pub",
                s_old().short(),
                s_new().short()
            )),
            "{}",
            r.breaks[0].why
        );
    }

    #[test]
    fn observed_digests_every_file_and_each_nodes_components_and_kubelet() {
        let snap = cluster(1, 1);
        let o = observed(&snap);
        let files: usize = snap.nodes.iter().map(|n| n.files.len()).sum();
        assert_eq!(o.len(), files + 2 * snap.nodes.len());
        assert!(o.contains_key("w-1:/etc/kubernetes/kubelet.conf"));
        assert!(o.contains_key("cp-1:components") && o.contains_key("w-1:kubelet"));
        let mut changed = snap.clone();
        changed.nodes[1]
            .files
            .insert(CA.into(), bundle(&[k_old(), k_new()]));
        let o2 = observed(&changed);
        let differ: Vec<&String> = o.keys().filter(|k| o[*k] != o2[*k]).collect();
        assert_eq!(differ, ["w-1:/etc/kubernetes/pki/ca.crt"]);
    }
}
