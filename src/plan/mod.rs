//! Expand procedures over the diff and the inventory into a DAG of steps.
//!
//! The planner simulates the cluster as it goes: a *world* maps every consumer to the
//! state it will hold after the steps planned so far, and every component to the inputs
//! changed since its last restart. A write step exists where the world differs from the
//! stage's target; a restart step exists where its component read a changed file; a step
//! with nothing to do is left out (and reported for documented steps). Planning does no
//! I/O.

pub mod edges;
mod expand;
pub mod manual;
mod model;
pub mod rehearse;
pub mod renew;
pub mod validate;

pub use expand::{Input, build, observed, stage_targets};
pub use model::*;

use miette::Diagnostic;
use thiserror::Error;

/// Errors of planning.
#[derive(Debug, Error, Diagnostic)]
pub enum PlanError {
    /// An authority must change but no procedure rotates it.
    #[error("authority {0} must change, but trustform has no procedure for it yet")]
    #[diagnostic(
        code(trustform::plan::no_procedure),
        help(
            "procedures exist for: {1}; keep this authority's issuer and trust as they are in the cluster"
        )
    )]
    NoProcedure(String, String),
    /// The etcd CA must change, but etcd is external (no member on a control plane).
    #[error(
        "authority etcd must change, but etcd is external (--etcd-servers={0}): no etcd member is a static pod of a node in the inventory"
    )]
    #[diagnostic(
        code(trustform::plan::external_etcd),
        help(
            "plans/etcd-ca.yaml rotates stacked etcd (kubeadm's layout: etc/kubernetes/manifests/etcd.yaml on every control plane); rotate an external etcd's CA with its own tooling, then keep authority etcd's issuer and trust as they are in the cluster"
        )
    )]
    ExternalEtcd(String),
    /// The desired state cannot be reached by the documented steps.
    #[error("the desired state cannot be reached: no documented step changes {}", .0.join("; "))]
    #[diagnostic(
        code(trustform::plan::impossible),
        help(
            "these files hold trust that trustform does not manage; move them under a kubeadm path, or rotate them by hand"
        )
    )]
    Impossible(Vec<String>),
    /// A step would break a trust edge (rehearse).
    #[error("{at} would break a trust edge: {edge}: {why}{}", if *.more > 0 { format!(" (and {} more breaks)", .more) } else { String::new() })]
    #[diagnostic(code(trustform::plan::trust_break), help("{help}"))]
    Break {
        /// The first breaking step.
        at: String,
        /// The edge.
        edge: String,
        /// Why it breaks.
        why: String,
        /// How many other breaks follow.
        more: usize,
        /// What to do.
        help: String,
    },
    /// The steps' dependencies form a cycle (a hand-edited plan).
    #[error("the plan's dependencies form a cycle through step {0}")]
    #[diagnostic(
        code(trustform::plan::cycle),
        help("regenerate the plan with `trustform plan -out`; never edit a plan by hand")
    )]
    Cycle(String),
}
