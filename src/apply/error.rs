//! What goes wrong while applying, typed: a step's failure ([`StepError`]), and a trust
//! check's (a gate's line, a live handshake, a prober's attempt: [`TrustError`]). Each
//! error has a code and a help line; a step's failure is journaled as one line with its
//! help ([`line`]).

use crate::exec::ExecError;
use crate::exec::https::HttpsError;
use crate::exec::kube::KubeError;
use crate::pki::PkiError;
use crate::pki::tls::TlsError;
use crate::transport::TransportError;
use miette::Diagnostic;
use thiserror::Error;

/// One line for a journal, a report or a terminal: the error, then its help in
/// parentheses.
pub fn line(e: &dyn Diagnostic) -> String {
    match e.help() {
        Some(h) => format!("{e} ({h})"),
        None => e.to_string(),
    }
}

/// Why a step failed.
#[derive(Debug, Error, Diagnostic)]
pub enum StepError {
    /// The plan names a node the inventory no longer has.
    #[error("node {0} is not in trustform.yaml's inventory")]
    #[diagnostic(
        code(trustform::apply::unknown_node),
        help("trustform.yaml changed since the plan was made: run `trustform plan` again")
    )]
    UnknownNode(String),
    /// A file could not be read, written, backed up or linked.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Exec(#[from] ExecError),
    /// The node could not be asked about a path.
    #[error("{at}: {source}")]
    #[diagnostic(
        code(trustform::apply::transport),
        help("check that the node is reachable; `trustform apply` resumes where it stopped")
    )]
    Transport {
        /// `node:path`.
        at: String,
        /// What the transport said.
        source: TransportError,
    },
    /// A file the step changes is not there.
    #[error("{at}: no such {what}")]
    #[diagnostic(
        code(trustform::apply::missing),
        help(
            "the file was there when the plan was made: restore it (`trustform rollback` restores every file trustform changed), then `trustform plan` again"
        )
    )]
    Missing {
        /// `node:path`.
        at: String,
        /// What it should be (`manifest`, `kubeconfig`, `file`).
        what: &'static str,
    },
    /// A file is not text, or not what its path says it is.
    #[error("{at}: {reason}")]
    #[diagnostic(
        code(trustform::apply::content),
        help(
            "the file changed since the plan was made, or was never what trustform expects there: fix it by hand or restore it, then `trustform plan` again"
        )
    )]
    Content {
        /// `node:path`.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// A CA the step writes is in no node's CA file and in no `cas` entry.
    #[error(
        "{at}: CA {ca} is unknown: it is in no node's {ca_file} and in no `cas` entry of trustform.yaml"
    )]
    #[diagnostic(
        code(trustform::apply::unknown_ca),
        help("add the CA's certificate (and key, to issue from it) under `cas` in trustform.yaml")
    )]
    UnknownCa {
        /// `node:path` (or the object).
        at: String,
        /// The CA's short fingerprint.
        ca: String,
        /// The authority's CA file.
        ca_file: String,
    },
    /// The step must sign or place a CA key trustform does not have.
    #[error("{at}: the key of CA {ca} is not available")]
    #[diagnostic(
        code(trustform::apply::no_ca_key),
        help(
            "trustform.yaml's `cas` entry for this CA must name its key file (`key:`), readable by trustform"
        )
    )]
    NoCaKey {
        /// `node:path`.
        at: String,
        /// The CA's short fingerprint.
        ca: String,
    },
    /// A certificate or key could not be parsed or issued.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Pki(#[from] PkiError),
    /// The plan asks for a change this kind of file cannot hold.
    #[error("{at}: cannot bring {field} to {want}")]
    #[diagnostic(
        code(trustform::apply::unsupported),
        help(
            "the plan file was edited or made by another trustform version: run `trustform plan` again"
        )
    )]
    Unsupported {
        /// `node:path` or object.
        at: String,
        /// The field.
        field: String,
        /// The state asked for.
        want: String,
    },
    /// A kubelet restarted but its Node did not report Ready from the new process.
    #[error(
        "{node}: kubelet restarted ({seen}), but its Node was not Ready with a heartbeat from the new kubelet within {within}: last seen {last}"
    )]
    #[diagnostic(
        code(trustform::apply::node_not_ready),
        help(
            "read the kubelet's log on the node (`journalctl -u kubelet`): a kubelet that cannot reach or authenticate to the API server stays NotReady; `trustform apply` resumes with this step"
        )
    )]
    NodeNotReady {
        /// The node.
        node: String,
        /// What the restart saw.
        seen: String,
        /// How long it waited.
        within: String,
        /// The Node's last condition.
        last: String,
    },
    /// The etcd cluster was not whole around a member's restart.
    #[error(
        "{node}: the etcd cluster was not healthy {when} its member's restart, within {within}: {last}"
    )]
    #[diagnostic(
        code(trustform::apply::etcd_quorum),
        help(
            "etcd keeps quorum only while more than half of its members answer: no other member is restarted until every one is healthy; read the unhealthy member's log (`crictl logs` of its etcd container on its node), mend it, then `trustform apply` resumes with this step"
        )
    )]
    Quorum {
        /// The node whose member restarts.
        node: String,
        /// `before` or `after`.
        when: &'static str,
        /// How long it waited.
        within: String,
        /// The members that were not healthy at the last look.
        last: String,
    },
    /// Pods still held service-account tokens of another key when the kubelets should
    /// have refreshed them.
    #[error(
        "{count} pods still hold a service-account token not signed by key {key} after {within}: {pods}"
    )]
    #[diagnostic(
        code(trustform::apply::stale_tokens),
        help(
            "the kubelet refreshes a projected token at 80% of its lifetime (24 h after issue at the latest) from an API server, which now signs with the new key: check the kubelets on the nodes named (`journalctl -u kubelet`), or restart those pods (`kubectl delete pod -n NAMESPACE NAME`, their workload makes new ones with fresh tokens), then `trustform apply` resumes with this step; the old key stays accepted until the tokens are fresh"
        )
    )]
    StaleTokens {
        /// How many.
        count: usize,
        /// The key that signs now.
        key: String,
        /// How long it waited.
        within: String,
        /// `namespace/name on node (key …, refresh due …)`, the first few.
        pods: String,
    },
    /// A manual step waits for the operator.
    #[error("{node}: {component} must be restarted by hand")]
    #[diagnostic(
        code(trustform::apply::manual),
        help("restart it, then run `trustform apply --confirm {step}`")
    )]
    Manual {
        /// The node.
        node: String,
        /// The component.
        component: String,
        /// The step to confirm.
        step: String,
    },
    /// A gate found trust broken.
    #[error("{summary}; first: {first}")]
    #[diagnostic(
        code(trustform::apply::gate),
        help(
            "`trustform status` lists every failure; fix what they name, or `trustform rollback` to restore the files changed, then `trustform apply` again"
        )
    )]
    Gate {
        /// The gate's summary line.
        summary: String,
        /// Its first failure.
        first: String,
    },
    /// The Kubernetes API refused or timed out.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Kube(#[from] KubeError),
    /// A control plane publishes a ConfigMap from a file that holds other CAs.
    #[error(
        "{node}: {component} publishes {object} from --{flag}={file} holding [{have}], not [{want}]"
    )]
    #[diagnostic(
        code(trustform::apply::published),
        help(
            "the component has not read its new file yet: restart it (the step before this one does), then `trustform apply` again"
        )
    )]
    Published {
        /// The control plane.
        node: String,
        /// The publishing component.
        component: String,
        /// The ConfigMap.
        object: String,
        /// Its flag.
        flag: String,
        /// The file the flag names.
        file: String,
        /// What it holds (short fingerprints).
        have: String,
        /// What the step wants.
        want: String,
    },
    /// A testing aid failed the step on purpose (`TRUSTFORM_FAULT=fail:<step>`).
    #[error("TRUSTFORM_FAULT: injected failure")]
    #[diagnostic(
        code(trustform::apply::fault),
        help("unset TRUSTFORM_FAULT; `trustform apply` resumes with this step")
    )]
    Injected,
    /// The step's code panicked.
    #[error("the step panicked: {0}")]
    #[diagnostic(
        code(trustform::apply::panicked),
        help(
            "a bug in trustform: report it with .trustform/journal; `trustform apply` resumes with this step"
        )
    )]
    Panicked(String),
    /// The journal could not record the step.
    #[error("cannot write the journal: {0}")]
    #[diagnostic(
        code(trustform::apply::journal),
        help(
            "check that .trustform/journal is writable and the disk has room, then run `trustform apply` again to resume"
        )
    )]
    Journal(String),
}

/// Why a trust check failed: a client's or a server's credentials cannot be read as it
/// holds them, a bundle holds the wrong CAs, a leaf does not verify, or a live handshake
/// failed.
#[derive(Debug, Error, Diagnostic)]
pub enum TrustError {
    /// An edge names a node the inventory does not have.
    #[error("{0} is not in the inventory")]
    #[diagnostic(
        code(trustform::trust::unknown_node),
        help("add the node to trustform.yaml's inventory, or run `trustform plan` again")
    )]
    UnknownNode(String),
    /// A file a client or server needs is not there (or cannot be read).
    #[error("{at} cannot be read")]
    #[diagnostic(
        code(trustform::trust::unreadable),
        help(
            "the file is missing or unreadable on the node: restore it (`trustform rollback`) or fix its permissions"
        )
    )]
    Unreadable {
        /// The path (and the flag naming it).
        at: String,
    },
    /// A component's configuration lacks what the edge needs.
    #[error("{component} has no {what}")]
    #[diagnostic(
        code(trustform::trust::not_configured),
        help("the component's manifest or configuration must set it, as kubeadm's do")
    )]
    NotConfigured {
        /// The component (and node).
        component: String,
        /// What is missing (`--etcd-cafile`, `configuration`).
        what: String,
    },
    /// A process is not running, so it holds nothing.
    #[error("{component} on {node} is not running")]
    #[diagnostic(
        code(trustform::trust::not_running),
        help(
            "a component that does not run cannot handshake: see its log (`trustform sandbox logs`, or `crictl logs` on the node)"
        )
    )]
    NotRunning {
        /// The node.
        node: String,
        /// The component.
        component: String,
    },
    /// A process holds no such file or flag in memory.
    #[error("{holder} holds no {what}")]
    #[diagnostic(
        code(trustform::trust::not_held),
        help(
            "the process read its configuration without it at its last start: restart it after fixing the file"
        )
    )]
    NotHeld {
        /// The process.
        holder: String,
        /// What it lacks.
        what: String,
    },
    /// A kubeconfig cannot be used as a client.
    #[error("{at}: {reason}")]
    #[diagnostic(
        code(trustform::trust::kubeconfig),
        help(
            "a kubeconfig needs a current context whose cluster has a https:// server and certificate-authority(-data), and whose user has a client certificate and key"
        )
    )]
    Kubeconfig {
        /// The kubeconfig.
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// A CA a check needs is unknown.
    #[error("CA {0} is unknown")]
    #[diagnostic(
        code(trustform::trust::unknown_ca),
        help("add the CA under `cas` in trustform.yaml, or put it back in a node's CA file")
    )]
    UnknownCa(String),
    /// A bundle holds other CAs than the stage needs.
    #[error("holds [{have}], the stage needs [{want}]")]
    #[diagnostic(
        code(trustform::trust::bundle),
        help(
            "a step of this stage did not write it, or something rewrote it since: `trustform apply` again rewrites it"
        )
    )]
    Bundle {
        /// What it holds (short fingerprints).
        have: String,
        /// What it should hold.
        want: String,
    },
    /// A bundle lacks the issuing CA.
    #[error("holds [{have}], without the issuing CA {issuer}")]
    #[diagnostic(
        code(trustform::trust::no_issuer),
        help(
            "the bundle was rewritten since the stage began: `trustform apply` again rewrites it"
        )
    )]
    NoIssuer {
        /// What it holds.
        have: String,
        /// The issuing CA.
        issuer: String,
    },
    /// A bundle (or a kubeconfig's CA data) still holds a CA the stage retired.
    #[error("{what} still holds retired CA {ca}")]
    #[diagnostic(
        code(trustform::trust::retired),
        help(
            "the step that drops it has not run, or something wrote it back: `trustform apply` again"
        )
    )]
    Retired {
        /// The bundle (`its bundle`, `certificate-authority-data`).
        what: &'static str,
        /// The retired CA.
        ca: String,
    },
    /// A certificate does not verify against a bundle.
    #[error("{who}: {reason}")]
    #[diagnostic(
        code(trustform::trust::rejected),
        help(
            "the bundle does not hold the CA that issued the certificate, or the certificate expired or names another host"
        )
    )]
    Rejected {
        /// Who rejects what (`its CA data rejects the API server`).
        who: String,
        /// What the verifier said.
        reason: String,
    },
    /// A pod vanished or its trust is unknown.
    #[error("pod {pod}: {reason}")]
    #[diagnostic(
        code(trustform::trust::pod),
        help("pods come and go with rollouts; a pod whose CAs are unknown cannot be probed")
    )]
    Pod {
        /// `namespace/name`.
        pod: String,
        /// What is wrong.
        reason: String,
    },
    /// The sandbox publishes no listener for a process.
    #[error("no listener for {process} on {node} in endpoints.json")]
    #[diagnostic(
        code(trustform::trust::no_listener),
        help("restart `trustform sandbox up` for this sandbox")
    )]
    NoListener {
        /// The node.
        node: String,
        /// The process.
        process: String,
    },
    /// PEM could not become TLS material.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Tls(#[from] TlsError),
    /// The certificate could not be parsed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Pki(#[from] PkiError),
    /// The live exchange failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Https(#[from] HttpsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant: a variant added without a sample fails to compile below.
    fn steps() -> Vec<StepError> {
        let s = || "x".to_string();
        vec![
            StepError::UnknownNode(s()),
            StepError::Exec(ExecError::Io {
                node: s(),
                path: s(),
                source: std::io::Error::other("disk full"),
            }),
            StepError::Transport {
                at: s(),
                source: TransportError::Unsupported {
                    node: s(),
                    what: s(),
                    help: s(),
                },
            },
            StepError::Missing {
                at: s(),
                what: "file",
            },
            StepError::Content {
                at: s(),
                reason: s(),
            },
            StepError::UnknownCa {
                at: s(),
                ca: s(),
                ca_file: s(),
            },
            StepError::NoCaKey { at: s(), ca: s() },
            StepError::Pki(PkiError::BadKey {
                what: s(),
                reason: s(),
            }),
            StepError::Unsupported {
                at: s(),
                field: s(),
                want: s(),
            },
            StepError::NodeNotReady {
                node: s(),
                seen: s(),
                within: s(),
                last: s(),
            },
            StepError::Quorum {
                node: s(),
                when: "after",
                within: s(),
                last: s(),
            },
            StepError::Manual {
                node: s(),
                component: s(),
                step: "step-7".into(),
            },
            StepError::StaleTokens {
                count: 1,
                key: s(),
                within: s(),
                pods: s(),
            },
            StepError::Gate {
                summary: s(),
                first: s(),
            },
            StepError::Kube(KubeError::Api {
                what: s(),
                code: 403,
                reason: s(),
                message: s(),
            }),
            StepError::Published {
                node: s(),
                component: s(),
                object: s(),
                flag: s(),
                file: s(),
                have: s(),
                want: s(),
            },
            StepError::Injected,
            StepError::Panicked(s()),
            StepError::Journal(s()),
        ]
    }

    fn trusts() -> Vec<TrustError> {
        let s = || "x".to_string();
        vec![
            TrustError::UnknownNode(s()),
            TrustError::Unreadable { at: s() },
            TrustError::NotConfigured {
                component: s(),
                what: s(),
            },
            TrustError::NotRunning {
                node: s(),
                component: s(),
            },
            TrustError::NotHeld {
                holder: s(),
                what: s(),
            },
            TrustError::Kubeconfig {
                at: s(),
                reason: s(),
            },
            TrustError::UnknownCa(s()),
            TrustError::Bundle {
                have: s(),
                want: s(),
            },
            TrustError::NoIssuer {
                have: s(),
                issuer: s(),
            },
            TrustError::Retired {
                what: "its bundle",
                ca: s(),
            },
            TrustError::Rejected {
                who: s(),
                reason: s(),
            },
            TrustError::Pod {
                pod: s(),
                reason: s(),
            },
            TrustError::NoListener {
                node: s(),
                process: s(),
            },
            TrustError::Tls(TlsError::EmptyBundle),
            TrustError::Pki(PkiError::CorruptPem { what: s(), line: 1 }),
            TrustError::Https(HttpsError::Unauthorized),
        ]
    }

    /// What a live exchange and PEM → TLS can say, every variant.
    fn exchanges() -> Vec<TrustError> {
        let s = || "x".to_string();
        [
            HttpsError::Connect {
                address: s(),
                reason: s(),
            },
            HttpsError::Handshake(s()),
            HttpsError::NoAnswer(Some(s())),
            HttpsError::NotHttp,
            HttpsError::Unauthorized,
            HttpsError::TokenRejected,
            HttpsError::TimedOut(s()),
            HttpsError::Credentials(TlsError::EmptyBundle),
        ]
        .into_iter()
        .map(TrustError::from)
        .chain(
            [
                TlsError::BadCa(s()),
                TlsError::EmptyBundle,
                TlsError::BadCertificate(s()),
                TlsError::BadKey(s()),
                TlsError::ServerName(s()),
                TlsError::KeyMismatch(s()),
                TlsError::Config(s()),
            ]
            .into_iter()
            .map(TrustError::from),
        )
        .collect()
    }

    #[allow(dead_code)]
    fn every_variant_has_a_sample(s: &StepError, t: &TrustError) {
        match s {
            StepError::UnknownNode(_)
            | StepError::Exec(_)
            | StepError::Transport { .. }
            | StepError::Missing { .. }
            | StepError::Content { .. }
            | StepError::UnknownCa { .. }
            | StepError::NoCaKey { .. }
            | StepError::Pki(_)
            | StepError::Unsupported { .. }
            | StepError::NodeNotReady { .. }
            | StepError::Quorum { .. }
            | StepError::StaleTokens { .. }
            | StepError::Manual { .. }
            | StepError::Gate { .. }
            | StepError::Kube(_)
            | StepError::Published { .. }
            | StepError::Injected
            | StepError::Panicked(_)
            | StepError::Journal(_) => {}
        }
        match t {
            TrustError::UnknownNode(_)
            | TrustError::Unreadable { .. }
            | TrustError::NotConfigured { .. }
            | TrustError::NotRunning { .. }
            | TrustError::NotHeld { .. }
            | TrustError::Kubeconfig { .. }
            | TrustError::UnknownCa(_)
            | TrustError::Bundle { .. }
            | TrustError::NoIssuer { .. }
            | TrustError::Retired { .. }
            | TrustError::Rejected { .. }
            | TrustError::Pod { .. }
            | TrustError::NoListener { .. }
            | TrustError::Tls(_)
            | TrustError::Pki(_)
            | TrustError::Https(_) => {}
        }
    }

    /// Why `--probe` or `--confirm` is refused, every variant.
    fn refusals() -> Vec<Box<dyn Diagnostic>> {
        use crate::apply::manual::ConfirmError as C;
        use crate::apply::probe::ProbeError as P;
        let s = || "x".to_string();
        vec![
            Box::new(P::NotSandbox),
            Box::new(P::NoEndpoints {
                dir: s().into(),
                path: s().into(),
                source: std::io::Error::other("gone"),
            }),
            Box::new(P::Runtime(s())),
            Box::new(C::UnknownStep {
                id: s(),
                plan: s(),
                help: "confirm y".into(),
            }),
            Box::new(C::NotManual {
                id: s(),
                help: "confirm y".into(),
            }),
            Box::new(C::Done {
                id: s(),
                help: "confirm y".into(),
            }),
            Box::new(C::NotNext {
                id: s(),
                waits: s(),
                help: "confirm y".into(),
            }),
            Box::new(C::NothingPaused { id: s() }),
        ]
    }

    /// Every error of apply, as `code: message (help)`: each has a code and a help line.
    #[test]
    fn every_apply_error_has_a_code_and_a_help_line() {
        let mut lines = vec![];
        let all: Vec<Box<dyn Diagnostic>> = steps()
            .into_iter()
            .map(|e| Box::new(e) as Box<dyn Diagnostic>)
            .chain(refusals())
            .chain(
                trusts()
                    .into_iter()
                    .chain(exchanges())
                    .map(|e| Box::new(e) as Box<dyn Diagnostic>),
            )
            .collect();
        for e in &all {
            let code = e.code().map(|c| c.to_string());
            assert!(code.is_some(), "{e} has no code");
            assert!(e.help().is_some(), "{e} has no help line");
            lines.push(format!(
                "{}: {}",
                code.unwrap_or_default(),
                line(e.as_ref())
            ));
        }
        insta::assert_snapshot!(lines.join("\n"));
    }
}
