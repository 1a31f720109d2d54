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
    /// Decide continuously, as requests come: `csr apply` every `--interval`, until
    /// interrupted (the kubelet-serving approver a `serverTLSBootstrap` cluster needs).
    Watch(WatchArgs),
}

/// `csr watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// How often to look.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Text, or one JSON line per decision.
    #[arg(long, value_enum, default_value = "text")]
    pub format: super::apply::OutFormat,
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

/// One look at every request: decide on the pending ones (and, with `apply`, write the
/// decisions).
async fn pass(
    access: &Access,
    policies: &[config::CsrPolicy],
    apply: bool,
) -> Result<Report, kube::KubeError> {
    let client = access.connect().await?;
    let (requests, nodes) =
        tokio::try_join!(kube::csr::requests(&client), kube::csr::nodes(&client))?;
    let parsed: Vec<Result<csr::Asked, String>> =
        requests.iter().map(|r| csr::parse(&r.der)).collect();
    // The keys others hold: only requests that prove them (a request signed by another's
    // key must not get that key's owner denied), and not the ones already turned down.
    let keys: Vec<(crate::pki::Fingerprint, String)> = requests
        .iter()
        .zip(&parsed)
        .filter(|(r, _)| !matches!(r.decided.as_deref(), Some("Denied" | "Failed")))
        .filter_map(|(_, a)| a.as_ref().ok())
        .filter(|a| a.signature_ok)
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
            Ok(a) => csr::decide(r, a, policies, &nodes, &keys),
            Err(e) => csr::unreadable(r, e, policies),
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
    Ok(Report {
        approve: count(Verdict::Approve),
        deny: count(Verdict::Deny),
        unmanaged: count(Verdict::Unmanaged),
        decisions,
        decided,
    })
}

fn access_of(loaded: &config::Loaded, path: &Path) -> miette::Result<Access> {
    Access::of(loaded).ok_or_else(|| {
        miette::miette!(
            code = "trustform::csr::no_api",
            help = "set `inventory.kube` in trustform.yaml (a kubeconfig and context): certificate signing requests live in the API",
            "{} names no Kubernetes API",
            path.display()
        )
    })
}

/// Text from a request, safe for a terminal: control characters escaped.
fn shown(t: &str) -> String {
    t.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The lines of one decision.
fn lines(d: &Decision, applied: bool) -> Vec<String> {
    let verdict = match d.verdict {
        Verdict::Approve if applied => "approved",
        Verdict::Approve => "approve",
        Verdict::Deny if applied => "denied",
        Verdict::Deny => "deny",
        Verdict::Unmanaged => "left alone",
    };
    let mut out = vec![shown(&format!(
        "csr {} (signer {}, requested by {}{}): {verdict}",
        d.name,
        d.signer,
        d.requester,
        if d.subject.is_empty() {
            String::new()
        } else {
            format!(", subject {}", d.subject)
        }
    ))];
    for c in &d.checks {
        out.push(shown(&format!(
            "  {} {}: {}",
            if c.ok { "✓" } else { "✗" },
            c.rule,
            c.why
        )));
    }
    out
}

/// `csr watch`: decide every `interval` until interrupted; each decision is said once.
fn watch(a: WatchArgs, path: &Path) -> miette::Result<Exit> {
    let mut said: std::collections::BTreeSet<String> = Default::default();
    let mut good: Option<(Access, Vec<config::CsrPolicy>)> = None;
    loop {
        // Re-read trustform.yaml each time: a policy edit takes effect at the next look; a
        // broken edit keeps the last good policies (and says why) instead of stopping the
        // approver.
        match config::load(path) {
            Ok(l) => {
                good = Some((access_of(&l, path)?, l.config.csr.policies.clone()));
            }
            Err(e) if good.is_some() => crate::verbosity::warn(format_args!(
                "csr watch: {}: {e}; deciding under the policies read before",
                path.display()
            )),
            Err(e) => return Err(e.into()),
        }
        let (access, policies) = good.as_ref().expect("loaded above");
        match kube::block(pass(access, policies, true)) {
            Ok(r) => {
                for d in r.decisions {
                    if !said.insert(format!("{}:{:?}", d.name, d.verdict)) {
                        continue;
                    }
                    match a.format {
                        super::apply::OutFormat::Json => println!(
                            "{}",
                            serde_json::to_string(&d).expect("decision serialises")
                        ),
                        super::apply::OutFormat::Text => {
                            for l in lines(&d, true) {
                                println!("{l}");
                            }
                        }
                    }
                }
            }
            // The API server restarting, say: try again at the next look.
            Err(e) => crate::verbosity::warn(format_args!("csr watch: {e}")),
        }
        std::thread::sleep(a.interval);
    }
}

/// Run.
pub fn run(c: Command, path: &Path) -> miette::Result<Exit> {
    let (apply, args) = match c {
        Command::Plan(a) => (false, a),
        Command::Apply(a) => (true, a),
        Command::Watch(a) => return watch(a, path),
    };
    let loaded = config::load(path)?;
    let access = access_of(&loaded, path)?;
    let report = kube::block(pass(&access, &loaded.config.csr.policies, apply))?;
    match args.format {
        super::apply::OutFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        ),
        super::apply::OutFormat::Text => {
            for d in &report.decisions {
                for l in lines(d, apply) {
                    println!("{l}");
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
