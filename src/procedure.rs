//! The documented rotation procedures (`plans/*.yaml`), embedded in the binary.
//!
//! Ordering is data: each step template names the steps it comes `after`; action kinds
//! are Rust code (see `plan`). `load_all` validates every file: unique ids, `after`
//! naming earlier steps only (so the file order is a topological order and the template
//! graph is acyclic), documented numbers unique and in documented order.

use crate::config::Authority;
use miette::{Diagnostic, NamedSource, SourceSpan};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The embedded procedure files, `(file name, text)`.
pub const EMBEDDED: [(&str, &str); 5] = [
    (
        "plans/kubernetes-ca.yaml",
        include_str!("../plans/kubernetes-ca.yaml"),
    ),
    (
        "plans/front-proxy-ca.yaml",
        include_str!("../plans/front-proxy-ca.yaml"),
    ),
    ("plans/etcd-ca.yaml", include_str!("../plans/etcd-ca.yaml")),
    (
        "plans/service-account-key.yaml",
        include_str!("../plans/service-account-key.yaml"),
    ),
    ("plans/renew.yaml", include_str!("../plans/renew.yaml")),
];

/// One procedure file.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "trustform procedure",
    description = "A documented rotation procedure: ordered step templates (plans/*.yaml)"
)]
pub struct Procedure {
    /// Procedure name, e.g. `kubernetes-ca`.
    pub procedure: String,
    /// The authority it rotates; none for the renewal (`plans/renew.yaml`), which
    /// re-issues the leaves of any authority from that authority's own CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<Authority>,
    /// The document it encodes.
    pub source: String,
    /// Step templates, in documented order.
    pub steps: Vec<StepTemplate>,
}

/// Omni's three stages.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Add the new CA as accepted.
    PreRotate,
    /// Swap the issuing CA; re-issue leaves.
    Rotate,
    /// Remove the old CA.
    PostRotate,
}

impl Stage {
    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::PreRotate => "pre-rotate",
            Stage::Rotate => "rotate",
            Stage::PostRotate => "post-rotate",
        }
    }
}

/// What a step template expands over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ForEach {
    /// Every control-plane node.
    ControlPlaneNode,
    /// Every node: control planes first, then workers.
    Node,
    /// Once, for the cluster's API objects.
    Cluster,
}

/// Action kinds. What each does is Rust code; see the book's "Actions" chapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Write the CA bundle (and the issuer's single-cert copy while the bundle holds more).
    WriteCaFiles,
    /// Put the new issuer's key in place (and its single-cert copy).
    SwitchSigner,
    /// Point controller-manager flags that reject bundles at the single-cert copy, or back.
    SetKcmSigningFlags,
    /// Point controller-manager --root-ca-file at the single-cert copy (now only the new
    /// CA) so it publishes kube-root-ca.crt without the old CA (documented step 11.1).
    SetKcmRootCaNewOnly,
    /// Delete the single-cert copy once nothing points at it.
    RemoveSignerCopy,
    /// Set CA data (and re-issue embedded client certificates) of the listed kubeconfigs.
    WriteKubeconfigs,
    /// The kubelet's client CA file, kubelet.conf CA data and its certificates.
    WriteKubeletTrust,
    /// Re-issue the listed leaf certificates from the issuer.
    ReissueLeaves,
    /// Restart a static pod so the component re-reads its files.
    RestartStaticPod,
    /// Restart the kubelet.
    RestartKubelet,
    /// Wait until kube-root-ca.crt in every namespace holds the trust set.
    WaitKubeRootCa,
    /// Rollout-restart the workloads whose pods hold stale trust.
    RestartWorkloads,
    /// Update cluster-info in kube-public (one certificate: kubeadm#1399).
    UpdateClusterInfo,
    /// Restart aggregated API servers / webhooks so they trust the new CA.
    RestartExtensionServers,
    /// Set the rotating part of every caBundle (webhooks, APIServices, CRD conversion
    /// webhooks) that holds a CA of the authority; other CAs in a bundle stay.
    UpdateCaBundles,
    /// Wait until every pod's service-account token is signed by the key that signs now:
    /// the kubelets refresh them at 80% of their lifetime, 24 hours after issue at the
    /// latest; the plan names each pod and when its kubelet refreshes it.
    WaitTokens,
    /// Re-issue the token of every legacy service-account token secret another key
    /// signed: empty it, and wait until the controller manager signs a new one.
    ReissueTokenSecrets,
    /// Verify every trust edge (a gate between stages).
    VerifyTrust,
}

/// How an action counts in the plan summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Changes files or objects.
    Write,
    /// Restarts a process.
    Restart,
    /// Waits for, or verifies, a condition.
    Wait,
}

impl Action {
    /// Its kind.
    pub fn kind(self) -> ActionKind {
        match self {
            Action::RestartStaticPod
            | Action::RestartKubelet
            | Action::RestartWorkloads
            | Action::RestartExtensionServers => ActionKind::Restart,
            Action::WaitKubeRootCa | Action::WaitTokens | Action::VerifyTrust => ActionKind::Wait,
            _ => ActionKind::Write,
        }
    }
    /// The kebab-case name.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// One step template.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepTemplate {
    /// Unique id within the procedure.
    pub id: String,
    /// The documented step number (`"8.3"`), absent for a step trustform adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// One line for the plan.
    pub title: String,
    /// The stage whose target this step moves its consumers to.
    pub stage: Stage,
    /// What it expands over.
    pub for_each: ForEach,
    /// The action.
    pub action: Action,
    /// Steps (ids, earlier in the file) that must be done first, on every target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// One target at a time, control planes before workers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolling: bool,
    /// Static pod component, for `restart-static-pod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    /// Files (relative to /etc/kubernetes), for `write-kubeconfigs` and `reissue-leaves`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Also the kubeconfig copies trustform.yaml lists under a node's `kubeconfigs`
    /// (`write-kubeconfigs` only): they are rotated with admin.conf.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copies: bool,
    /// Why trustform adds or shapes this step (cited issue, research).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    /// An inherent disruption this step causes, shown as a banner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<String>,
}

/// Errors in a procedure file.
#[derive(Debug, Error, Diagnostic)]
#[error("{file}: {reason}")]
#[diagnostic(
    code(trustform::procedure::invalid),
    help("procedures are validated by schemas/procedure.schema.json and `cargo test`")
)]
pub struct ProcedureError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub reason: String,
    /// Its text.
    #[source_code]
    pub src: NamedSource<String>,
    /// Where.
    #[label("here")]
    pub span: SourceSpan,
}

/// Compare documented numbers: `"8.3" < "10.1"`.
pub fn doc_key(doc: &str) -> Vec<u32> {
    doc.split('.')
        .map(|p| p.parse().unwrap_or(u32::MAX))
        .collect()
}

/// Parse and validate one procedure file.
pub fn parse(file: &str, text: &str) -> Result<Procedure, ProcedureError> {
    let err = |reason: String, needle: &str| {
        let shown = crate::redact::Redacted::new(text);
        ProcedureError {
            file: file.to_string(),
            span: shown.span(
                text.find(needle)
                    .map_or((0, 0).into(), |o| (o, needle.len()).into()),
            ),
            src: shown.source(file),
            reason: shown.message(&reason),
        }
    };
    let p: Procedure =
        serde_saphyr::from_str(text).map_err(|e| err(e.without_snippet().to_string(), ""))?;
    let mut seen: Vec<&str> = Vec::new();
    let mut last_doc: Option<&str> = None;
    for s in &p.steps {
        let at = format!("id: {}", s.id);
        if seen.contains(&s.id.as_str()) {
            return Err(err(format!("step id {} is used twice", s.id), &at));
        }
        for a in &s.after {
            if !seen.contains(&a.as_str()) {
                return Err(err(
                    format!(
                        "step {} comes after {a}, which is not an earlier step (the file order must be the execution order)",
                        s.id
                    ),
                    &at,
                ));
            }
        }
        if let Some(d) = &s.doc {
            if let Some(prev) = last_doc
                && doc_key(d) <= doc_key(prev)
            {
                return Err(err(
                    format!(
                        "documented step {d} ({}) comes after step {prev}: documented steps keep their documented order",
                        s.id
                    ),
                    &at,
                ));
            }
            last_doc = Some(d);
        }
        if s.doc.is_none() && s.why.is_none() {
            return Err(err(
                format!(
                    "step {} is not a documented step: say `why` trustform adds it",
                    s.id
                ),
                &at,
            ));
        }
        let needs_component = s.action == Action::RestartStaticPod;
        if needs_component != s.component.is_some() {
            return Err(err(
                format!(
                    "step {}: `component` goes with restart-static-pod, and only there",
                    s.id
                ),
                &at,
            ));
        }
        let needs_files = matches!(s.action, Action::WriteKubeconfigs | Action::ReissueLeaves);
        if needs_files == s.files.is_empty() {
            return Err(err(
                format!(
                    "step {}: `files` goes with write-kubeconfigs and reissue-leaves, and only there",
                    s.id
                ),
                &at,
            ));
        }
        if s.copies && s.action != Action::WriteKubeconfigs {
            return Err(err(
                format!(
                    "step {}: `copies` goes with write-kubeconfigs, and only there",
                    s.id
                ),
                &at,
            ));
        }
        let cluster_action = matches!(
            s.action,
            Action::WaitKubeRootCa
                | Action::WaitTokens
                | Action::ReissueTokenSecrets
                | Action::RestartWorkloads
                | Action::UpdateClusterInfo
                | Action::RestartExtensionServers
                | Action::UpdateCaBundles
                | Action::VerifyTrust
        );
        if cluster_action != (s.for_each == ForEach::Cluster) {
            return Err(err(
                format!(
                    "step {}: {} runs {}",
                    s.id,
                    s.action.name(),
                    if cluster_action {
                        "for_each: cluster"
                    } else {
                        "on nodes"
                    }
                ),
                &at,
            ));
        }
        seen.push(&s.id);
    }
    Ok(p)
}

/// Every embedded procedure.
pub fn load_all() -> Result<Vec<Procedure>, ProcedureError> {
    EMBEDDED.iter().map(|(f, t)| parse(f, t)).collect()
}

/// The JSON Schema of procedure files.
pub fn schema() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Procedure)).expect("schema serialises")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A procedure of two steps; `extra` is added to the second.
    fn two_steps(second: &str) -> String {
        format!(
            "procedure: p\nauthority: kubernetes\nsource: test\nsteps:\n  - id: distribute\n    doc: \"1\"\n    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: write-ca-files\n  - id: second\n{second}"
        )
    }

    fn refused(text: &str) -> (String, String) {
        let e = parse("p.yaml", text).expect_err("refused");
        let at = &text[e.span.offset()..e.span.offset() + e.span.len()];
        (e.reason, at.to_string())
    }

    #[test]
    fn documented_numbers_compare_as_numbers() {
        assert!(doc_key("8.3") < doc_key("10.1"));
        assert!(doc_key("8.1") < doc_key("8.3"));
        assert!(doc_key("11") > doc_key("8.4"));
        assert!(doc_key("3") < doc_key("3.1"));
    }

    #[test]
    fn a_well_formed_procedure_parses_in_file_order() {
        let p = parse(
            "p.yaml",
            &two_steps("    doc: \"3\"\n    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: restart-static-pod\n    component: kube-apiserver\n    rolling: true\n    after: [distribute]\n"),
        )
        .unwrap();
        let ids: Vec<&str> = p.steps.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["distribute", "second"]);
        assert_eq!(p.steps[1].after, ["distribute"]);
        assert!(p.steps[1].rolling);
    }

    #[test]
    fn each_rule_refuses_its_step_and_points_at_it() {
        let restart = "    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: restart-static-pod\n    component: kube-apiserver\n";
        for (second, why) in [
            (format!("    doc: \"1\"\n{restart}"), "keep their documented order"),
            (format!("    doc: \"0.5\"\n{restart}"), "keep their documented order"),
            (restart.to_string(), "say `why` trustform adds it"),
            (
                format!("    doc: \"2\"\n{restart}    after: [later]\n"),
                "which is not an earlier step",
            ),
            (
                "    doc: \"2\"\n    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: restart-static-pod\n".into(),
                "`component` goes with restart-static-pod",
            ),
            (
                "    doc: \"2\"\n    title: t\n    stage: pre-rotate\n    for_each: node\n    action: restart-kubelet\n    component: kubelet\n".into(),
                "`component` goes with restart-static-pod",
            ),
            (
                "    doc: \"2\"\n    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: write-kubeconfigs\n".into(),
                "`files` goes with write-kubeconfigs",
            ),
            (
                "    doc: \"2\"\n    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: write-ca-files\n    copies: true\n".into(),
                "`copies` goes with write-kubeconfigs",
            ),
            (
                "    doc: \"2\"\n    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: verify-trust\n".into(),
                "runs for_each: cluster",
            ),
            (
                "    doc: \"2\"\n    title: t\n    stage: pre-rotate\n    for_each: cluster\n    action: write-ca-files\n".into(),
                "runs on nodes",
            ),
        ] {
            let (reason, at) = refused(&two_steps(&second));
            assert!(reason.contains(why), "{second}: {reason}");
            assert_eq!(at, "id: second", "{second}: points at {at:?}");
        }
        // The same id twice.
        let text = two_steps("    doc: \"2\"\n    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: write-ca-files\n")
            .replace("id: second", "id: distribute");
        assert!(refused(&text).0.contains("is used twice"));
        // A field no procedure has.
        let text = two_steps(
            "    doc: \"2\"\n    title: t\n    stage: pre-rotate\n    for_each: control-plane-node\n    action: write-ca-files\n    color: red\n",
        );
        assert!(refused(&text).0.contains("color"));
    }

    #[test]
    fn every_embedded_procedure_keeps_its_documented_order() {
        let all = load_all().unwrap();
        assert!(all.len() >= 2);
        for p in &all {
            let docs: Vec<Vec<u32>> = p
                .steps
                .iter()
                .filter_map(|s| s.doc.as_deref())
                .map(doc_key)
                .collect();
            // A CA rotation encodes the seeds' documented steps; the renewal (no
            // authority) encodes `kubeadm certs renew`, and the service-account key's
            // rotation the API server's flags: the seeds number neither.
            assert!(
                match p.authority {
                    Some(a) if !a.keys_only() => docs.len() >= 3,
                    _ => docs.is_empty(),
                },
                "{}: {} documented steps",
                p.procedure,
                docs.len()
            );
            assert!(
                docs.windows(2).all(|w| w[0] < w[1]),
                "{}: {docs:?}",
                p.procedure
            );
            // Every stage is there, in order.
            let stages: Vec<Stage> = p.steps.iter().map(|s| s.stage).collect();
            assert!(
                stages.windows(2).all(|w| w[0] <= w[1]),
                "{}: stages out of order",
                p.procedure
            );
        }
    }
}
