//! One step's operations, carried out through `exec`. Each operation first reads what
//! is there and does nothing when it already holds the wanted state: that is the
//! precondition check that makes a resumed step safe to run again.

use super::error::StepError;
use super::gate;
use super::material::{Material, key_block};
use super::quorum::{self, When};
use crate::config::{Authority, Issuance};
use crate::diff::{Field, State};
use crate::exec::kube::{self, publish, rollout};
use crate::exec::{self, Files, Node};
use crate::pki::issue::{generate_key, issue_leaf};
use crate::pki::kubeconfig::{Kubeconfig, SecretB64, b64, unb64};
use crate::pki::{Fingerprint, LeafSpec, ParsedCert, SecretPem, parse_certs};
use crate::plan::{Op, Step};
use std::collections::BTreeMap;

/// What a step needs.
pub struct Ctx<'a> {
    /// File access with backups.
    pub files: &'a Files,
    /// Nodes by name.
    pub nodes: &'a BTreeMap<String, Node>,
    /// CA certificates and keys.
    pub material: &'a Material,
    /// Key algorithm and key reuse.
    pub issuance: &'a Issuance,
    /// Testing aid: exit after the first operation of this step.
    pub die_during: Option<&'a str>,
    /// The Kubernetes API, when `inventory.kube` is set.
    pub kube: Option<&'a kube::Access>,
    /// How long an API wait (published CAs, budgets, rollouts) may take.
    pub wait_timeout: std::time::Duration,
    /// How long a restarted component may take to be seen back.
    pub restart: exec::restart::Wait,
    /// When the logs a gate reads begin (the last gate passed, or the run began).
    pub logs_since: &'a std::sync::Mutex<std::time::Instant>,
    /// For a manual step the operator confirmed: `by who at time` (from the journal).
    pub confirmed: Option<&'a str>,
}

/// What a step did.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// One line per operation that changed something.
    pub did: Vec<String>,
    /// What is left to the operator.
    pub warnings: Vec<String>,
    /// A gate's report.
    pub gate: Option<gate::Report>,
}

/// Why a step failed.
#[derive(Debug)]
pub struct Failure {
    /// The error.
    pub error: StepError,
    /// A failed gate's report.
    pub gate: Option<gate::Report>,
}

impl<E: Into<StepError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            gate: None,
        }
    }
}

/// Run a step.
pub fn run(ctx: &Ctx, step: &Step) -> Result<Outcome, Failure> {
    let mut out = Outcome::default();
    for (i, op) in step.ops.iter().enumerate() {
        match op {
            Op::Set {
                node: Some(n),
                authority,
                path,
                field,
                want,
                ..
            } => {
                let node = ctx.node(n)?;
                if let Some(line) = set(ctx, node, *authority, path, field, want)? {
                    out.did.push(line);
                }
            }
            Op::Set {
                node: None,
                field: Field::Tokens,
                want,
                ..
            } => out.did.push(tokens(ctx, want)?),
            Op::Set {
                node: None,
                path,
                field,
                want,
                replaces,
                ..
            } => match ctx.kube {
                Some(access) => api(ctx, access, path, field, want, replaces, &mut out)?,
                None => cluster(ctx, field, want, &mut out)?,
            },
            Op::Restart { node, component } => {
                let node = ctx.node(node)?;
                let since = k8s_openapi::jiff::Timestamp::now();
                let etcd = component == "etcd";
                if etcd {
                    quorum::healthy(ctx.nodes, node, When::Before, ctx.restart)?;
                }
                let mut seen = if component == "kubelet" {
                    exec::restart::kubelet(node, ctx.restart)
                } else {
                    exec::restart::static_pod(ctx.files, node, component, ctx.restart)
                }?;
                // The next member goes down only when every member is healthy again.
                if etcd
                    && let Some(whole) = quorum::healthy(ctx.nodes, node, When::After, ctx.restart)?
                {
                    seen.what = format!("{}; {whole}", seen.what);
                }
                // For the cluster, a kubelet is back when its Node is Ready again with a
                // heartbeat from the new process.
                if component == "kubelet"
                    && let Some(access) = ctx.kube
                {
                    let t = std::time::Instant::now();
                    let ready = kube::block(kube::node::ready_after(
                        access,
                        &node.name,
                        since,
                        ctx.restart.timeout,
                    ))
                    .map_err(|last| StepError::NodeNotReady {
                        node: node.name.clone(),
                        seen: seen.what.clone(),
                        within: humantime::format_duration(ctx.restart.timeout).to_string(),
                        last,
                    })?;
                    seen.waited += t.elapsed();
                    seen.what = format!("{}; {ready}", seen.what);
                }
                out.did.push(format!(
                    "{}: {component} restarted; waited {:.1} s: {}",
                    node.name,
                    seen.waited.as_secs_f64(),
                    seen.what
                ));
            }
            Op::ManualRestart {
                node, component, ..
            } => match ctx.confirmed {
                // The next gate checks what the operator left.
                Some(by) => out.did.push(format!(
                    "{node}: {component} restarted by hand (confirmed {by})"
                )),
                None => {
                    return Err(Failure::from(StepError::Manual {
                        node: node.clone(),
                        component: component.clone(),
                        step: step.id.clone(),
                    }));
                }
            },
            Op::Verify {
                authority,
                issuer,
                trust,
                retired,
            } => {
                let since = *ctx.logs_since.lock().unwrap_or_else(|e| e.into_inner());
                // Every file of every node is read by the gate: each node's trees in one
                // go; the logs are read meanwhile.
                let views = crate::exec::read_views(ctx.nodes);
                let (mut report, logs) = std::thread::scope(|s| {
                    let logs = s.spawn(|| super::logscan::scan(&views, since.elapsed()));
                    let report =
                        gate::run(&views, ctx.material, *authority, issuer, trust, retired);
                    (report, logs.join().unwrap_or_default())
                });
                report.logs = logs.logs;
                report.checks += logs.logs;
                report.failures.extend(
                    logs.hits
                        .iter()
                        .map(|h| format!("a TLS error in a log since the stage began: {h}")),
                );
                let ok = report.failures.is_empty();
                let unverified = match report.unverified {
                    0 => String::new(),
                    n => format!(" ({n} unverified)"),
                };
                let not_live = match report.not_live.len() {
                    0 => String::new(),
                    n => format!(
                        " ({n} node{} not checked live: {})",
                        if n == 1 { "" } else { "s" },
                        report.not_live.join(", ")
                    ),
                };
                let summary = format!(
                    "gate {authority}: {} checks, {} handshakes{unverified}{not_live}, {} logs read, {} failures",
                    report.checks,
                    report.handshakes,
                    report.logs,
                    report.failures.len()
                );
                for u in &logs.unread {
                    out.warnings.push(format!("logs not read: {u}"));
                }
                if !ok {
                    let first = report.failures.first().cloned().unwrap_or_default();
                    return Err(Failure {
                        error: StepError::Gate { summary, first },
                        gate: Some(report),
                    });
                }
                *ctx.logs_since.lock().unwrap_or_else(|e| e.into_inner()) =
                    std::time::Instant::now();
                out.gate = Some(report);
                out.did.push(summary);
            }
        }
        if i == 0 && ctx.die_during == Some(step.id.as_str()) {
            eprintln!("TRUSTFORM_FAULT: exiting during {}", step.id);
            std::process::exit(99);
        }
    }
    Ok(out)
}

impl Ctx<'_> {
    fn node(&self, name: &str) -> Result<&Node, StepError> {
        self.nodes
            .get(name)
            .ok_or_else(|| StepError::UnknownNode(name.to_string()))
    }
}

fn read_text(ctx: &Ctx, node: &Node, path: &str) -> Result<Option<String>, StepError> {
    ctx.files
        .read(node, path)?
        .map(|b| {
            String::from_utf8(b).map_err(|_| StepError::Content {
                at: format!("{}:{path}", node.name),
                reason: "not UTF-8 text".into(),
            })
        })
        .transpose()
}

fn fps(text: &str, what: &str) -> Vec<Fingerprint> {
    parse_certs(text, what)
        .map(|v| v.into_iter().map(|c| c.facts.fingerprint).collect())
        .unwrap_or_default()
}

fn short_list(v: &[Fingerprint]) -> String {
    v.iter().map(|f| f.short()).collect::<Vec<_>>().join(", ")
}

/// Bring one file consumer to `want`. `Some(line)` when something changed.
fn set(
    ctx: &Ctx,
    node: &Node,
    authority: Authority,
    path: &str,
    field: &Field,
    want: &State,
) -> Result<Option<String>, StepError> {
    let at = format!("{}:{path}", node.name);
    let current = read_text(ctx, node, path)?;
    let write = |bytes: &[u8], secret: bool| {
        let mode = if secret {
            crate::atomic::KEY_MODE
        } else {
            crate::atomic::PUBLIC_MODE
        };
        ctx.files.write(node, path, bytes, mode, secret)
    };
    let unknown = |fp: Fingerprint| StepError::UnknownCa {
        at: at.clone(),
        ca: fp.short(),
        ca_file: authority.ca_file().to_string(),
    };
    let content = |reason: String| StepError::Content {
        at: at.clone(),
        reason,
    };
    let missing = |what: &'static str| StepError::Missing {
        at: at.clone(),
        what,
    };
    let transport = |source: crate::transport::TransportError| StepError::Transport {
        at: at.clone(),
        source,
    };
    match (field, want) {
        (Field::Bundle | Field::SignerCopy, State::Members(want)) => {
            let have = current.as_deref().map(|t| {
                if authority.keys_only() {
                    crate::pki::cert::pem_blocks(t, &at)
                        .map(|b| crate::pki::cert::public_key_fps(&b))
                        .unwrap_or_default()
                } else {
                    fps(t, &at)
                }
            });
            if have.as_ref() == Some(want) {
                return Ok(None);
            }
            let bundle = ctx.material.bundle(want).map_err(unknown)?;
            write(bundle.as_bytes(), false)?;
            Ok(Some(format!("{at}: holds [{}]", short_list(want))))
        }
        (Field::SignerCopy, State::Absent) => {
            if current.is_none() {
                return Ok(None);
            }
            ctx.files.remove(node, path)?;
            Ok(Some(format!("{at}: deleted")))
        }
        (Field::SigningKey, State::KeyOf(fp)) => {
            let pk = ctx
                .material
                .public_key_of(fp)
                .ok_or_else(|| unknown(fp.clone()))?;
            let have = current
                .as_deref()
                .and_then(|t| key_block(t, &at))
                .and_then(|k| crate::pki::public_key_fingerprint(&k, &at).ok());
            if have.as_ref() == Some(pk) {
                return Ok(None);
            }
            let key = ctx
                .material
                .private_key(fp)
                .ok_or_else(|| StepError::NoCaKey {
                    at: at.clone(),
                    ca: fp.short(),
                })?;
            write(key.expose().as_bytes(), true)?;
            Ok(Some(format!(
                "{at}: key of {} {} (0600)",
                authority.anchor(),
                fp.short()
            )))
        }
        (Field::Flag(_, flag), State::Path(value)) => {
            let text = current.ok_or_else(|| missing("manifest"))?;
            let m = crate::manifest::parse(&text).map_err(|e| content(e.to_string()))?;
            if m.flags.get(flag) == Some(value) {
                return Ok(None);
            }
            let next = crate::manifest::set_flag(&text, flag, value)
                .ok_or_else(|| content(format!("has no --{flag}= line")))?;
            write(next.as_bytes(), false)?;
            Ok(Some(format!("{at}: --{flag}={value}")))
        }
        (Field::KubeconfigCa, State::Members(want)) => {
            let mut kc = kubeconfig(current.as_deref(), &at)?;
            let cluster = current_cluster(&mut kc, &at)?;
            let have = cluster
                .certificate_authority_data
                .as_deref()
                .and_then(unb64)
                .map(|t| fps(&t, &at));
            if have.as_ref() == Some(want) {
                return Ok(None);
            }
            let bundle = ctx.material.bundle(want).map_err(unknown)?;
            cluster.certificate_authority_data = Some(b64(&bundle));
            write(kc.to_yaml().as_bytes(), true)?;
            Ok(Some(format!(
                "{at}: certificate-authority-data [{}]",
                short_list(want)
            )))
        }
        (Field::KubeconfigClient, State::IssuedBy(fp) | State::Renewed { issuer: fp, .. }) => {
            let mut kc = kubeconfig(current.as_deref(), &at)?;
            let user = current_user(&mut kc, &at)?;
            let cert_pem = user
                .client_certificate_data
                .as_deref()
                .and_then(unb64)
                .ok_or_else(|| content("its user has no client-certificate-data".into()))?;
            let leaf = first_leaf(&cert_pem, &at)?;
            if want.holds_leaf(ctx.material.issuer_of(&leaf), &leaf.facts.not_after) {
                return Ok(None);
            }
            let old_key = user.client_key_data.as_ref().and_then(SecretB64::decode);
            let (cert, key) = reissue(ctx, &leaf, old_key, want, &at)?;
            user.client_certificate_data = Some(b64(&cert));
            user.client_key_data = Some(SecretB64::encode(&key));
            write(kc.to_yaml().as_bytes(), true)?;
            Ok(Some(format!(
                "{at}: client certificate {} from CA {}",
                leaf.facts.common_name,
                fp.short()
            )))
        }
        (Field::Leaf, State::IssuedBy(fp) | State::Renewed { issuer: fp, .. }) => {
            let text = current.ok_or_else(|| missing("file"))?;
            let leaf = first_leaf(&text, &at)?;
            if want.holds_leaf(ctx.material.issuer_of(&leaf), &leaf.facts.not_after) {
                return Ok(None);
            }
            let combined = key_block(&text, &at);
            let link = node.transport.read_link(path).map_err(transport)?;
            if let (Some(_), Some(stem)) = (&link, rotated_by_kubelet(path)) {
                // As the kubelet rotates it: a new dated file (0600), then the symlink
                // swapped to it. The link never becomes a regular file.
                let (cert, key) = reissue(ctx, &leaf, combined, want, &at)?;
                let stamp = time::OffsetDateTime::now_utc()
                    .format(time::macros::format_description!(
                        "[year]-[month]-[day]-[hour]-[minute]-[second]"
                    ))
                    .unwrap_or_default();
                let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                let mut dated = format!("{dir}/{stem}-{stamp}.pem");
                let mut n = 1;
                while node.transport.stat(&dated).map_err(transport)?.is_some() {
                    n += 1;
                    dated = format!("{dir}/{stem}-{stamp}-{n}.pem");
                }
                ctx.files.write(
                    node,
                    &dated,
                    format!("{cert}{}", key.expose()).as_bytes(),
                    crate::atomic::KEY_MODE,
                    true,
                )?;
                ctx.files.swap_link(node, path, &dated)?;
                return Ok(Some(format!(
                    "{at}: {} re-issued by CA {} into {dated} (the link now points there)",
                    leaf.facts.common_name,
                    fp.short()
                )));
            }
            if combined.is_some() {
                let (cert, key) = reissue(ctx, &leaf, combined, want, &at)?;
                write(format!("{cert}{}", key.expose()).as_bytes(), true)?;
            } else {
                let key_path = path
                    .strip_suffix(".crt")
                    .map(|p| format!("{p}.key"))
                    .ok_or_else(|| content("cannot tell where its key is (not a .crt)".into()))?;
                let old = read_text(ctx, node, &key_path)?.and_then(|t| key_block(&t, &key_path));
                let (cert, key) = reissue(ctx, &leaf, old, want, &at)?;
                ctx.files.write(
                    node,
                    &key_path,
                    key.expose().as_bytes(),
                    crate::atomic::KEY_MODE,
                    true,
                )?;
                write(cert.as_bytes(), false)?;
            }
            Ok(Some(format!(
                "{at}: {} {} by CA {}",
                leaf.facts.common_name,
                if matches!(want, State::Renewed { .. }) {
                    format!("(to end {}) renewed", leaf.facts.not_after)
                } else {
                    "re-issued".to_string()
                },
                fp.short()
            )))
        }
        (f, w) => Err(StepError::Unsupported {
            at,
            field: format!("{f:?}"),
            want: format!("{w:?}"),
        }),
    }
}

/// `kubelet-client` for `/var/lib/kubelet/pki/kubelet-client-current.pem`: the files the
/// kubelet's certificate manager keeps as a symlink to a dated file.
fn rotated_by_kubelet(path: &str) -> Option<&str> {
    path.strip_prefix("/var/lib/kubelet/pki/")?
        .strip_suffix("-current.pem")
        .filter(|s| !s.contains('/'))
}

fn kubeconfig(text: Option<&str>, at: &str) -> Result<Kubeconfig, StepError> {
    let text = text.ok_or_else(|| StepError::Missing {
        at: at.to_string(),
        what: "kubeconfig",
    })?;
    serde_saphyr::from_str(text).map_err(|e| {
        let why = crate::redact::message(&e.without_snippet().to_string(), text);
        StepError::Content {
            at: at.to_string(),
            reason: format!("not a kubeconfig: {why}"),
        }
    })
}

fn current_cluster<'k>(
    kc: &'k mut Kubeconfig,
    at: &str,
) -> Result<&'k mut crate::pki::kubeconfig::Cluster, StepError> {
    let name = kc.current().0.map(|c| c.name.clone());
    kc.clusters
        .iter_mut()
        .find(|c| Some(&c.name) == name.as_ref())
        .map(|c| &mut c.cluster)
        .ok_or_else(|| StepError::Content {
            at: at.to_string(),
            reason: "no cluster in the current context".into(),
        })
}

fn current_user<'k>(
    kc: &'k mut Kubeconfig,
    at: &str,
) -> Result<&'k mut crate::pki::kubeconfig::User, StepError> {
    let name = kc.current().1.map(|u| u.name.clone());
    kc.users
        .iter_mut()
        .find(|u| Some(&u.name) == name.as_ref())
        .map(|u| &mut u.user)
        .ok_or_else(|| StepError::Content {
            at: at.to_string(),
            reason: "no user in the current context".into(),
        })
}

fn first_leaf(text: &str, at: &str) -> Result<ParsedCert, StepError> {
    parse_certs(text, at)?
        .into_iter()
        .find(|c| !c.facts.is_ca)
        .ok_or_else(|| StepError::Content {
            at: at.to_string(),
            reason: "holds no leaf certificate".into(),
        })
}

/// Re-issue `leaf` from CA `fp`: same CN, O, SANs, usages and lifetime; a new key unless
/// `issuance.keepKeys`. Returns (certificate PEM, key).
/// `leaf` re-issued to `want` (a leaf state): same subject, SANs and usages, a new key
/// unless `issuance.keepKeys`; its lifetime, or for a renewal at least kubeadm's one year
/// (`certificateValidityPeriod`), so a short-lived leaf leaves its window.
fn reissue(
    ctx: &Ctx,
    leaf: &ParsedCert,
    old_key: Option<SecretPem>,
    want: &State,
    at: &str,
) -> Result<(String, SecretPem), StepError> {
    let fp = want.issuer().ok_or_else(|| StepError::Unsupported {
        at: at.to_string(),
        field: "leaf".into(),
        want: format!("{want:?}"),
    })?;
    let signer = ctx.material.signer(fp).ok_or_else(|| StepError::NoCaKey {
        at: at.to_string(),
        ca: fp.short(),
    })?;
    let pair = match old_key.filter(|_| ctx.issuance.keep_keys) {
        Some(k) => {
            rcgen::KeyPair::from_pem(k.expose()).map_err(|e| crate::pki::PkiError::BadKey {
                what: at.to_string(),
                reason: e.to_string(),
            })?
        }
        None => generate_key(ctx.issuance.key_algorithm)?,
    };
    let mut spec = LeafSpec::from_facts(&leaf.facts);
    if matches!(want, State::Renewed { .. }) {
        spec.days = spec.days.max(crate::pki::issue::RENEWED_DAYS);
    }
    let cert = issue_leaf(&spec, &pair, &signer)?;
    Ok((cert, SecretPem::new(pair.serialize_pem())))
}

/// Wait until every pod's projected service-account token, on every node, is signed by
/// the one key of `want`: the kubelets refresh them from the API servers, which sign
/// with the new key now. Each stale token is awaited until its kubelet's refresh is due
/// ([`crate::pki::token::refresh_at`]) and `--wait-timeout` more (a kubelet refreshes
/// a token when it next syncs the pod's volumes, about every minute).
fn tokens(ctx: &Ctx, want: &State) -> Result<String, StepError> {
    let key = match want {
        State::Members(v) if v.len() == 1 => &v[0],
        _ => {
            return Err(StepError::Unsupported {
                at: "the pods' tokens".into(),
                field: "Tokens".into(),
                want: format!("{want:?}"),
            });
        }
    };
    let nodes: Vec<(&str, &dyn crate::transport::Transport)> = ctx
        .nodes
        .values()
        .map(|n| (n.name.as_str(), n.transport.as_ref()))
        .collect();
    let started = std::time::Instant::now();
    let mut deadline: Option<std::time::Instant> = None;
    let mut stale_at_start: Option<usize> = None;
    loop {
        let all = crate::observe::tokens::read_nodes(&nodes).map_err(|e| StepError::Content {
            at: format!("the nodes' {}", crate::observe::tokens::PODS),
            reason: e.to_string(),
        })?;
        let stale: Vec<&crate::snapshot::TokenFact> =
            all.iter().filter(|t| t.key.as_ref() != Some(key)).collect();
        let first = *stale_at_start.get_or_insert(stale.len());
        if stale.is_empty() {
            return Ok(format!(
                "{} pods' service-account tokens are signed by key {}: {first} refreshed by their kubelets in {:.0} s",
                all.len(),
                key.short(),
                started.elapsed().as_secs_f64()
            ));
        }
        // The latest refresh due among the stale tokens, seen at the first look: new
        // tokens are due no later (the API servers sign with the new key).
        let due = *deadline.get_or_insert_with(|| {
            let now = time::OffsetDateTime::now_utc();
            let latest = stale
                .iter()
                .filter_map(|t| crate::clock::parse(&t.refresh))
                .max()
                .unwrap_or(now);
            let wait = (latest - now).max(time::Duration::ZERO);
            std::time::Instant::now()
                + std::time::Duration::try_from(wait).unwrap_or_default()
                + ctx.wait_timeout
        });
        if std::time::Instant::now() >= due {
            let pods: Vec<String> = stale
                .iter()
                .map(|t| {
                    format!(
                        "{} on {} (key {}, refresh due {})",
                        t.pod,
                        t.node,
                        t.key.as_ref().map_or("unknown".into(), Fingerprint::short),
                        t.refresh
                    )
                })
                .collect();
            return Err(StepError::StaleTokens {
                count: stale.len(),
                key: key.short(),
                within: humantime::format_duration(std::time::Duration::from_secs(
                    started.elapsed().as_secs(),
                ))
                .to_string(),
                pods: kube::laggards(&pods),
            });
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// Cluster objects. Until trustform talks to the API server, the sandbox's are checked
/// through the processes that publish them, and a real cluster's are left to the
/// operator with the exact command.
/// Bring an API object (or what pods trust) to `want`, through the Kubernetes API.
fn api(
    ctx: &Ctx,
    access: &kube::Access,
    path: &str,
    field: &Field,
    want: &State,
    replaces: &[Fingerprint],
    out: &mut Outcome,
) -> Result<(), StepError> {
    let State::Members(want) = want else {
        return Err(StepError::Unsupported {
            at: path.to_string(),
            field: format!("{field:?}"),
            want: format!("{want:?}"),
        });
    };
    // The certificates an object will hold (cluster-info, caBundles).
    let pems: Vec<(Fingerprint, String)> = if matches!(field, Field::ClusterInfo | Field::CaBundle)
    {
        want.iter()
            .map(|fp| {
                ctx.material
                    .get(fp)
                    .map(|c| (fp.clone(), c.cert.to_pem()))
                    .ok_or_else(|| StepError::UnknownCa {
                        at: path.to_string(),
                        ca: fp.short(),
                        ca_file: "CA file".into(),
                    })
            })
            .collect::<Result<_, StepError>>()?
    } else {
        vec![]
    };
    let timeout = ctx.wait_timeout;
    let result = kube::block(async {
        let client = access.connect().await?;
        let mut did = Vec::new();
        let mut warnings = Vec::new();
        match field {
            Field::KubeRootCa => did.push(publish::wait_root_ca(&client, want, timeout).await?),
            Field::TokenSecrets => match want.as_slice() {
                [key] => did.push(publish::reissue_token_secrets(&client, key, timeout).await?),
                _ => {
                    return Err(kube::KubeError::Api {
                        what: "legacy token secrets".into(),
                        code: 0,
                        reason: "one key signs".into(),
                        message: format!("{} keys wanted", want.len()),
                    });
                }
            },
            Field::ExtensionAuth => {
                did.push(publish::wait_extension_auth(&client, want, timeout).await?);
                warnings.push(
                    "aggregated API servers read extension-apiserver-authentication at start: restart them (documented step 8.1)".to_string(),
                );
            }
            Field::ClusterInfo => {
                let pem: String = pems.iter().map(|(_, p)| p.as_str()).collect();
                did.push(
                    publish::update_cluster_info(&client, &pem)
                        .await?
                        .unwrap_or_else(|| "kube-public/cluster-info already holds it".into()),
                );
            }
            Field::PodTrust => {
                let r = rollout::restart_stale(&client, want, timeout).await?;
                did.push(if r.restarted.is_empty() {
                    "no workload has a pod with stale trust".to_string()
                } else {
                    format!(
                        "rolled {} workloads (kubectl.kubernetes.io/restartedAt): {}",
                        r.restarted.len(),
                        kube::laggards(&r.restarted)
                    )
                });
                if !r.bare.is_empty() {
                    warnings.push(format!(
                        "{} pods without an owner hold stale trust and need a manual restart: {}",
                        r.bare.len(),
                        r.bare.join(", ")
                    ));
                }
            }
            Field::CaBundle => {
                let (object, pointer) = path.split_once('#').unwrap_or((path, ""));
                let lines =
                    publish::update_ca_bundles(&client, replaces, &pems, Some((object, pointer)))
                        .await?;
                if lines.is_empty() {
                    did.push(format!("{object} {pointer}: already holds it"));
                }
                did.extend(lines);
            }
            other => {
                return Err(kube::KubeError::Api {
                    what: format!("{other:?}"),
                    code: 0,
                    reason: "not an API object".into(),
                    message: "this field lives on nodes".into(),
                });
            }
        }
        Ok::<_, kube::KubeError>((did, warnings))
    });
    let (did, warnings) = result?;
    out.did.extend(did);
    out.warnings.extend(warnings);
    Ok(())
}

/// Without API access: check what the sandbox's processes publish, or leave a warning.
fn cluster(ctx: &Ctx, field: &Field, want: &State, out: &mut Outcome) -> Result<(), StepError> {
    let State::Members(want) = want else {
        return Err(StepError::Unsupported {
            at: "the cluster".into(),
            field: format!("{field:?}"),
            want: format!("{want:?}"),
        });
    };
    let cps: Vec<&Node> = ctx
        .nodes
        .values()
        .filter(|n| n.is_file("/etc/kubernetes/manifests/kube-apiserver.yaml"))
        .collect();
    // Which process publishes it, from which flag.
    let publisher = match field {
        Field::KubeRootCa => Some((
            "kube-controller-manager",
            "root-ca-file",
            "kube-root-ca.crt",
        )),
        Field::ExtensionAuth => Some((
            "kube-apiserver",
            "requestheader-client-ca-file",
            "extension-apiserver-authentication",
        )),
        _ => None,
    };
    // What the publisher holds on every control plane, where the nodes can tell
    // (simulated ones can): what it publishes is checked from that; else nothing can be
    // checked without the API.
    let held: Option<Vec<(&Node, crate::held::Held)>> = publisher
        .filter(|_| !cps.is_empty())
        .and_then(|(component, ..)| {
            cps.iter()
                .map(|n| Some((*n, exec::held(n, component)?)))
                .collect()
        });
    match (publisher, held) {
        (Some((component, flag, object)), Some(held)) => {
            for (n, held) in &held {
                let file = held.flags(component).get(flag).cloned().unwrap_or_default();
                let have = held
                    .file(&file)
                    .and_then(|b| String::from_utf8(b).ok())
                    .map(|t| fps(&t, &file))
                    .unwrap_or_default();
                if &have != want {
                    return Err(StepError::Published {
                        node: n.name.clone(),
                        component: component.to_string(),
                        object: object.to_string(),
                        flag: flag.to_string(),
                        file,
                        have: short_list(&have),
                        want: short_list(want),
                    });
                }
            }
            out.did.push(format!(
                "{object}: every {component} publishes [{}]",
                short_list(want)
            ));
        }
        (Some((_, _, object)), None) => out.warnings.push(format!(
            "{object} not checked: no API access (set `inventory.kube` in trustform.yaml); check with `kubectl get configmap -A --field-selector metadata.name={object} -o yaml`"
        )),
        (None, _) => {
            let (what, how) = match field {
                Field::PodTrust => (
                    "pods holding stale trust",
                    "`kubectl rollout restart` the workloads whose pods started before this step",
                ),
                Field::TokenSecrets => (
                    "legacy token secrets signed by another key",
                    "empty `data.token` of each (`kubectl patch secret -n NAMESPACE NAME -p '{\"data\":{\"token\":\"\"}}'`): the controller manager signs a new one with the key it signs with now",
                ),
                Field::ClusterInfo => (
                    "kube-public/cluster-info",
                    "set its kubeconfig's certificate-authority-data to the new CA (one certificate)",
                ),
                _ => ("this object", "update it by hand"),
            };
            out.warnings.push(format!(
                "{what}: no API access (set `inventory.kube` in trustform.yaml): {how}"
            ));
        }
    }
    Ok(())
}
