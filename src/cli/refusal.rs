//! Why `apply`, `rollback`, `status` and `force-unlock` stop: each with a code and the
//! command that gets the operator further.

use miette::Diagnostic;
use thiserror::Error;

/// Why an operation on the journal, the lock or the backups stopped.
#[derive(Debug, Error, Diagnostic)]
pub enum Refusal {
    /// A file of `.trustform/` could not be read or written.
    #[error("{what}: {source}")]
    #[diagnostic(
        code(trustform::io),
        help(
            "check that .trustform/ is writable and the disk has room; nothing was half-written (every write is atomic)"
        )
    )]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The saved plan was applied already.
    #[error("plan {plan} was already applied")]
    #[diagnostic(
        code(trustform::apply::already_applied),
        help("run `trustform plan` to see what is left to do")
    )]
    AlreadyApplied {
        /// The plan's id.
        plan: String,
    },
    /// Another apply is unfinished.
    #[error("apply {other} is unfinished; plan {plan} was made before or beside it")]
    #[diagnostic(
        code(trustform::apply::unfinished),
        help(
            "finish it with `trustform apply` (it resumes), or undo it with `trustform rollback {other}`; then plan again"
        )
    )]
    Unfinished {
        /// The unfinished apply.
        other: String,
        /// The plan passed.
        plan: String,
    },
    /// `--format json` without a plan file or `--auto-approve`.
    #[error("--format json cannot ask for approval")]
    #[diagnostic(
        code(trustform::apply::needs_approval),
        help("pass a reviewed plan file, or --auto-approve")
    )]
    NeedsApproval,
    /// The operator did not answer `yes`.
    #[error("apply cancelled: the answer was not 'yes'")]
    #[diagnostic(
        code(trustform::apply::cancelled),
        help("nothing was changed; review the plan and answer `yes` to apply it")
    )]
    Cancelled,
    /// The cluster's Lease is held by something that is not trustform.
    #[error("the Lease kube-system/trustform is held by {holder}")]
    #[diagnostic(
        code(trustform::apply::locked),
        help("wait for it, or delete the Lease kube-system/trustform if it is stale")
    )]
    LeaseHeld {
        /// Its holder identity.
        holder: String,
    },
    /// Another trustform operation holds the lock.
    #[error(
        "another operation holds the lock {path}: {operation} by {who} since {when} (host {host}, pid {pid})"
    )]
    #[diagnostic(
        code(trustform::apply::locked),
        help(
            "wait for it (`trustform status --wait`, or `--lock-timeout 5m`); if it is gone for good, `trustform force-unlock {id}`"
        )
    )]
    Locked {
        /// The lock file.
        path: String,
        /// Its id.
        id: String,
        /// `apply` or `rollback`.
        operation: String,
        /// Who runs it.
        who: String,
        /// Since when.
        when: String,
        /// On which host.
        host: String,
        /// Its pid.
        pid: u32,
    },
    /// A lock file trustform cannot read is in the way.
    #[error("the lock file {path} is in the way: {why}")]
    #[diagnostic(
        code(trustform::apply::unreadable_lock),
        help(
            "an interrupted write or a file someone put there; if no apply or rollback runs, remove it with `trustform force-unlock {id}`"
        )
    )]
    UnreadableLock {
        /// The lock file.
        path: String,
        /// The id to pass to force-unlock.
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// Every step completed, but the prober saw managed edges fail while they ran.
    #[error("apply {id} broke {count} managed trust edge(s): {edges}")]
    #[diagnostic(
        code(trustform::apply::probe::broken),
        help(
            "the steps completed, but these trust edges failed handshakes while they ran: the plan's order let a client and its server disagree; look at each edge's first error above"
        )
    )]
    Broke {
        /// The apply.
        id: String,
        /// How many edges.
        count: usize,
        /// Their names (a few).
        edges: String,
    },
    /// Steps failed.
    #[error("apply {id} failed: {steps}")]
    #[diagnostic(
        code(trustform::apply::failed),
        help("fix the cause and run `trustform apply` to resume, or `trustform rollback {id}`")
    )]
    Failed {
        /// The apply.
        id: String,
        /// The failed steps.
        steps: String,
    },
    /// No backup for the plan to roll back.
    #[error("no backup for plan {id} in {dir}")]
    #[diagnostic(
        code(trustform::rollback::unknown),
        help("`trustform status` names the latest apply; backups live in .trustform/backup/")
    )]
    UnknownBackup {
        /// The plan id given.
        id: String,
        /// Where its backup would be.
        dir: String,
    },
    /// `status --wait` ran out of time.
    #[error("apply {id} is still running after {after}")]
    #[diagnostic(
        code(trustform::status::timeout),
        help("the apply goes on; wait longer with `trustform status --wait --wait-timeout 30m`")
    )]
    StillRunning {
        /// The apply.
        id: String,
        /// How long was waited.
        after: String,
    },
    /// `force-unlock` named another lock.
    #[error("the lock is {lock}, not {given}")]
    #[diagnostic(
        code(trustform::force_unlock::mismatch),
        help("the lock's id is {lock}; pass it exactly")
    )]
    UnlockMismatch {
        /// The lock's id.
        lock: String,
        /// The id given.
        given: String,
    },
    /// `force-unlock` found a file that is not a lock.
    #[error("{path} is not a lock trustform can read: {why}")]
    #[diagnostic(
        code(trustform::force_unlock::mismatch),
        help("if no apply or rollback runs, remove it with `trustform force-unlock {id}`")
    )]
    UnlockUnreadable {
        /// The lock file.
        path: String,
        /// The id that removes it.
        id: String,
        /// What is wrong with it.
        why: String,
    },
    /// `force-unlock` found no lock.
    #[error("there is no lock in {path}")]
    #[diagnostic(
        code(trustform::force_unlock::none),
        help("nothing holds the lock: `trustform apply` or `rollback` can run")
    )]
    NoLock {
        /// The lock file.
        path: String,
    },
}

impl Refusal {
    /// `map_err` for an I/O error while doing `what`.
    pub fn io(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io {
            what: what.to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Refusal> {
        let s = || "x".to_string();
        vec![
            Refusal::Io {
                what: s(),
                source: std::io::Error::other("disk full"),
            },
            Refusal::AlreadyApplied { plan: s() },
            Refusal::Unfinished {
                other: s(),
                plan: s(),
            },
            Refusal::NeedsApproval,
            Refusal::Cancelled,
            Refusal::LeaseHeld { holder: s() },
            Refusal::Locked {
                path: s(),
                id: s(),
                operation: s(),
                who: s(),
                when: s(),
                host: s(),
                pid: 1,
            },
            Refusal::UnreadableLock {
                path: s(),
                id: s(),
                why: s(),
            },
            Refusal::Broke {
                id: s(),
                count: 1,
                edges: s(),
            },
            Refusal::Failed {
                id: s(),
                steps: s(),
            },
            Refusal::UnknownBackup { id: s(), dir: s() },
            Refusal::StillRunning {
                id: s(),
                after: s(),
            },
            Refusal::UnlockMismatch {
                lock: s(),
                given: s(),
            },
            Refusal::UnlockUnreadable {
                path: s(),
                id: s(),
                why: s(),
            },
            Refusal::NoLock { path: s() },
        ]
    }

    #[allow(dead_code)]
    fn every_variant_has_a_sample(r: &Refusal) {
        match r {
            Refusal::Io { .. }
            | Refusal::AlreadyApplied { .. }
            | Refusal::Unfinished { .. }
            | Refusal::NeedsApproval
            | Refusal::Cancelled
            | Refusal::LeaseHeld { .. }
            | Refusal::Locked { .. }
            | Refusal::UnreadableLock { .. }
            | Refusal::Broke { .. }
            | Refusal::Failed { .. }
            | Refusal::UnknownBackup { .. }
            | Refusal::StillRunning { .. }
            | Refusal::UnlockMismatch { .. }
            | Refusal::UnlockUnreadable { .. }
            | Refusal::NoLock { .. } => {}
        }
    }

    #[test]
    fn every_refusal_has_a_code_and_a_help_line() {
        let mut lines = vec![];
        for r in samples() {
            let code = r.code().map(|c| c.to_string());
            assert!(code.is_some(), "{r} has no code");
            let help = r.help().map(|h| h.to_string());
            assert!(help.is_some(), "{r} has no help line");
            lines.push(format!(
                "{}: {r} ({})",
                code.unwrap_or_default(),
                help.unwrap_or_default()
            ));
        }
        insta::assert_snapshot!(lines.join("\n"));
    }
}
