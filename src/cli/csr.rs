//! `trustform csr plan|apply`: decide on the cluster's pending certificate signing
//! requests under trustform.yaml's `csr.policies` ([`crate::csr`]), and write the
//! decisions (approve, or deny naming the broken rules) to their `approval` subresource.

use super::Exit;
use crate::config;
use crate::csr::{self, Decision, Verdict};
use crate::exec::kube::{self, Access};
use std::path::Path;

/// `csr`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show what trustform would decide on each pending request, and why.
    Plan(Args),
    /// Decide: approve or deny each pending request a policy covers, the reasons in its
    /// condition's message.
    Apply(Args),
}

/// Output of `csr`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Text, or one JSON document.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::apply::OutFormat,
}

/// What `csr plan` prints as JSON.
#[derive(Debug, serde::Serialize)]
struct Report {
    decisions: Vec<Decision>,
    /// Requests already approved, denied or failed.
    decided: usize,
    approve: usize,
    deny: usize,
    unmanaged: usize,
}

/// Run.
pub fn run(c: Command, path: &Path) -> miette::Result<Exit> {
    let (apply, args) = match c {
        Command::Plan(a) => (false, a),
        Command::Apply(a) => (true, a),
    };
    let loaded = config::load(path)?;
    let access = Access::of(&loaded).ok_or_else(|| {
        miette::miette!(
            code = "trustform::csr::no_api",
            help = "set `inventory.kube` in trustform.yaml (a kubeconfig and context): certificate signing requests live in the API",
            "{} names no Kubernetes API",
            path.display()
        )
    })?;
    let policies = loaded.config.csr.policies.clone();
    let report = kube::block(async {
        let client = access.connect().await?;
        let (requests, nodes) =
            tokio::try_join!(kube::csr::requests(&client), kube::csr::nodes(&client))?;
        let parsed: Vec<Result<csr::Asked, String>> =
            requests.iter().map(|r| csr::parse(&r.der)).collect();
        let keys: Vec<(crate::pki::Fingerprint, String)> = parsed
            .iter()
            .flatten()
            .map(|a| (a.public_key.clone(), a.subject.clone()))
            .collect();
        let mut decisions = vec![];
        let mut decided = 0;
        for (r, a) in requests.iter().zip(&parsed) {
            if r.decided.is_some() {
                decided += 1;
                continue;
            }
            let d = match a {
                Ok(a) => csr::decide(r, a, &policies, &nodes, &keys),
                Err(e) => Decision {
                    name: r.name.clone(),
                    signer: r.signer.clone(),
                    requester: r.username.clone(),
                    subject: String::new(),
                    verdict: if policies.iter().any(|p| p.signer == r.signer) {
                        Verdict::Deny
                    } else {
                        Verdict::Unmanaged
                    },
                    checks: vec![csr::Check {
                        rule: "signature",
                        ok: false,
                        why: format!("spec.request: {e}"),
                    }],
                },
            };
            decisions.push(d);
        }
        if apply {
            for d in &decisions {
                if d.verdict != Verdict::Unmanaged {
                    kube::csr::decide(
                        &client,
                        &d.name,
                        d.verdict == Verdict::Approve,
                        &d.message(),
                    )
                    .await?;
                }
            }
        }
        let count = |v| decisions.iter().filter(|d| d.verdict == v).count();
        Ok::<_, kube::KubeError>(Report {
            approve: count(Verdict::Approve),
            deny: count(Verdict::Deny),
            unmanaged: count(Verdict::Unmanaged),
            decisions,
            decided,
        })
    })?;
    match args.format {
        super::apply::OutFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        ),
        super::apply::OutFormat::Text => {
            for d in &report.decisions {
                let verdict = match d.verdict {
                    Verdict::Approve if apply => "approved",
                    Verdict::Approve => "approve",
                    Verdict::Deny if apply => "denied",
                    Verdict::Deny => "deny",
                    Verdict::Unmanaged => "left alone",
                };
                println!(
                    "csr {} (signer {}, requested by {}{}): {verdict}",
                    d.name,
                    d.signer,
                    d.requester,
                    if d.subject.is_empty() {
                        String::new()
                    } else {
                        format!(", subject {}", d.subject)
                    }
                );
                for c in &d.checks {
                    println!("  {} {}: {}", if c.ok { "✓" } else { "✗" }, c.rule, c.why);
                }
            }
            println!(
                "{}: {} to approve, {} to deny, {} left to their own approver; {} already decided.",
                if apply { "Applied" } else { "Plan" },
                report.approve,
                report.deny,
                report.unmanaged,
                report.decided
            );
        }
    }
    Ok(Exit::Ok)
}
