//! `trustform init`: write trustform.yaml from the live cluster (desired = current).

use super::Exit;
use crate::config::{
    self, Access, Authority, AuthoritySpec, CaSpec, Config, Inventory, Layout, LocalAccess,
    Metadata, NodeSpec, spanned,
};
use crate::diff::current_target;
use crate::observe::{self, Listed, NodeTarget};
use crate::pki::kubeconfig::Kubeconfig;
use crate::snapshot::FileFact;
use miette::{Context, IntoDiagnostic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read the nodes of a sandbox made by `trustform sandbox create`.
    #[arg(long, conflicts_with = "roots")]
    pub sandbox: Option<PathBuf>,
    /// Node roots: `NAME=PATH` or `PATH`, repeatable.
    #[arg(long = "root", value_name = "[NAME=]PATH")]
    pub roots: Vec<String>,
    /// Nodes over SSH: `[USER@]HOST[:PORT]`, repeatable. Each node's name and role are
    /// read from its files. With --sandbox (and no value): every node of a sandbox whose
    /// `sandbox up --ssh` runs, over its real sshd.
    #[arg(long = "ssh", value_name = "[USER@]HOST[:PORT]", num_args = 0..=1, default_missing_value = "")]
    pub ssh: Vec<String>,
    /// Private key for --ssh nodes (default: ssh's, and the agent).
    #[arg(long, value_name = "FILE")]
    pub ssh_identity: Option<PathBuf>,
    /// known_hosts file for --ssh nodes (default: ~/.ssh/known_hosts). Host keys are
    /// always checked strictly.
    #[arg(long, value_name = "FILE")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// Cluster name (default: the sandbox's, or the config directory's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite an existing trustform.yaml.
    #[arg(long)]
    pub force: bool,
    /// Kubeconfig that reaches the cluster's API (written to `inventory.kube`). With
    /// --sandbox, the sandbox's admin.conf when its API server has been started.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Context of that kubeconfig (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
}

/// Make `.trustform/` git-ignored beside the config (keys, journals, backups live there).
pub(super) fn ensure_gitignore(dir: &Path) -> miette::Result<()> {
    let path = dir.join(".gitignore");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    if text
        .lines()
        .any(|l| l.trim() == ".trustform/" || l.trim() == ".trustform")
    {
        return Ok(());
    }
    let mut new = text.clone();
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str("# trustform: private keys, journals and backups never go to git\n.trustform/\n");
    crate::atomic::write(&path, new.as_bytes(), crate::atomic::PUBLIC_MODE)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))
}

/// Write the config (canonical form) and its schema beside it.
pub(super) fn write_config(path: &Path, c: &Config) -> miette::Result<()> {
    write_config_text(path, &config::render(c))
}

/// Write trustform.yaml as `text` (with its schema and .gitignore beside it).
pub(super) fn write_config_text(path: &Path, text: &str) -> miette::Result<()> {
    let dir = config_dir(path);
    crate::atomic::write(path, text.as_bytes(), crate::atomic::PUBLIC_MODE)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", path.display()))?;
    let schema = dir.join(config::SCHEMA_FILE);
    crate::atomic::write(
        &schema,
        config::schema().as_bytes(),
        crate::atomic::PUBLIC_MODE,
    )
    .into_diagnostic()
    .wrap_err_with(|| format!("cannot write {}", schema.display()))?;
    ensure_gitignore(&dir)
}

/// The directory of the config file (`.` for a bare file name).
pub(super) fn config_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn relative_to(root: &Path, base: &Path) -> String {
    let abs_base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    match root.strip_prefix(&abs_base) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => root.display().to_string(),
    }
}

/// The copies of admin.conf on a control-plane node (`/root/.kube/config`,
/// `/home/*/.kube/config`) that read as kubeconfigs with CA data.
fn copies_on(t: &dyn crate::transport::Transport) -> Vec<Listed> {
    if !matches!(
        t.stat(&format!("/{}", crate::layout::APISERVER_MANIFEST)),
        Ok(Some(s)) if s.kind == crate::transport::FileType::File
    ) {
        return vec![];
    }
    observe::user_kubeconfigs(t)
        .into_iter()
        .filter(|p| {
            t.read(p, crate::input::Kind::NodeFile)
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| serde_saphyr::from_str::<Kubeconfig>(&t).ok())
                .is_some_and(|kc| {
                    kc.current()
                        .0
                        .is_some_and(|c| c.cluster.certificate_authority_data.is_some())
                })
        })
        .map(|path| Listed { path, origin: None })
        .collect()
}

/// `[USER@]HOST[:PORT]` with the --ssh-* options.
fn parse_ssh(spec: &str, a: &Args) -> miette::Result<config::SshAccess> {
    let bad = || {
        miette::miette!(
            code = "trustform::init::ssh_spec",
            help = "write it as HOST, USER@HOST, HOST:PORT or USER@HOST:PORT",
            "--ssh {spec:?} is not [USER@]HOST[:PORT]"
        )
    };
    let (user, rest) = match spec.split_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
        Some(_) => return Err(bad()),
        None => (None, spec),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !rest.starts_with('[') => (h, Some(p.parse::<u16>().map_err(|_| bad())?)),
        _ => (rest, None),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok(config::SshAccess {
        host: host.to_string(),
        port,
        user,
        identity_file: a.ssh_identity.as_ref().map(|p| p.display().to_string()),
        known_hosts_file: a.ssh_known_hosts.as_ref().map(|p| p.display().to_string()),
        ..Default::default()
    })
}

/// Paths in an SSH access relative to the config's directory, as trustform.yaml keeps
/// them.
fn relative_access(mut a: config::SshAccess, dir: &Path) -> config::SshAccess {
    let rel = |p: &String| relative_to(&std::path::absolute(p).unwrap_or(PathBuf::from(p)), dir);
    a.identity_file = a.identity_file.as_ref().map(rel);
    a.known_hosts_file = a.known_hosts_file.as_ref().map(rel);
    a
}

/// Connect to a node over SSH and learn its name: the kubelet's client certificate says
/// `system:node:<name>`; without one, the node's host name.
fn over_ssh(access: &config::SshAccess, dir: &Path) -> miette::Result<(String, NodeTarget)> {
    use crate::transport::Transport;
    let ssh = crate::transport::Ssh::new(&access.host, access.options(|p| dir.join(p)));
    let text = |abs: &str| -> miette::Result<Option<String>> {
        Ok(ssh
            .read(abs, crate::input::Kind::NodeFile)?
            .and_then(|b| String::from_utf8(b).ok()))
    };
    let mut name = None;
    if let Some(t) = text("/etc/kubernetes/kubelet.conf")?
        && let Ok(kc) = serde_saphyr::from_str::<Kubeconfig>(&t)
        && let (_, Some(user)) = kc.current()
    {
        let pem = match (
            &user.user.client_certificate_data,
            &user.user.client_certificate,
        ) {
            (Some(d), _) => crate::pki::kubeconfig::unb64(d),
            (None, Some(p)) => text(p)?,
            _ => None,
        };
        name = pem
            .and_then(|p| crate::pki::parse_certs(&p, "kubelet client").ok())
            .and_then(|c| c.into_iter().next())
            .and_then(|c| {
                c.facts
                    .common_name
                    .strip_prefix("system:node:")
                    .map(str::to_string)
            });
    }
    let name = match name {
        Some(n) => n,
        None => {
            let out = ssh.run(&["hostname"], std::time::Duration::from_secs(30))?;
            let h = out.text().trim().to_string();
            if !out.success() || h.is_empty() {
                return Err(miette::miette!(
                    code = "trustform::init::no_name",
                    "{}: cannot tell the node's name (no kubelet client certificate, no hostname)",
                    ssh.describe()
                ));
            }
            h
        }
    };
    let target = NodeTarget {
        name: name.clone(),
        transport: crate::transport::traced(&name, std::sync::Arc::new(ssh)),
        root: None,
        kubeconfigs: vec![],
    };
    Ok((name, target))
}

/// Run.
pub fn run(a: Args, path: &Path) -> miette::Result<Exit> {
    if path.exists() && !a.force {
        return Err(miette::miette!(
            code = "trustform::init::exists",
            help = "edit it, or pass --force to overwrite it with the cluster as it is",
            "{} already exists",
            path.display()
        ));
    }
    let dir = config_dir(path);
    let by_ssh = !a.ssh.is_empty();
    let mut target_ssh: BTreeMap<String, config::SshAccess> = BTreeMap::new();
    let (targets, default_name): (Vec<NodeTarget>, String) = match (&a.sandbox, a.roots.is_empty())
    {
        (Some(sb), _) if by_ssh => {
            let (name, _) = super::sandbox::inventory(sb)?;
            let mut targets = vec![];
            for access in super::sandbox::ssh_access(sb)? {
                let (name, t) = over_ssh(&access, &dir)?;
                target_ssh.insert(name.clone(), relative_access(access, &dir));
                targets.push(t);
            }
            (targets, name)
        }
        (None, true) if by_ssh => {
            let mut targets = vec![];
            for spec in &a.ssh {
                let access = parse_ssh(spec, &a)?;
                let (name, t) = over_ssh(&access, &dir)?;
                if target_ssh.contains_key(&name) {
                    return Err(miette::miette!(
                        code = "trustform::init::same_node",
                        help = "give each node once",
                        "{spec} is node {name} again"
                    ));
                }
                target_ssh.insert(name.clone(), relative_access(access, &dir));
                targets.push(t);
            }
            (
                targets,
                std::path::absolute(&dir)
                    .ok()
                    .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
                    .unwrap_or_else(|| "cluster".into()),
            )
        }
        (Some(sb), _) => {
            let (name, nodes) = super::sandbox::inventory(sb)?;
            (
                nodes
                    .iter()
                    .map(|(n, root)| NodeTarget::local(n, root))
                    .collect(),
                name,
            )
        }
        (None, false) => (
            super::snapshot::parse_roots(&a.roots),
            std::path::absolute(&dir)
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_string()))
                .unwrap_or_else(|| "cluster".into()),
        ),
        (None, true) => {
            return Err(miette::miette!(
                code = "trustform::init::no_nodes",
                help = "pass --sandbox DIR, or --root NAME=PATH for each node (--root / on a node itself)",
                "init needs to know where the nodes are"
            ));
        }
    };
    let kubeconfig = a
        .kubeconfig
        .clone()
        .or_else(|| super::sandbox::admin_kubeconfig(a.sandbox.as_ref()?));
    let kube = kubeconfig.map(|k| config::KubeAccess {
        kubeconfig: Some(relative_to(
            &std::path::absolute(&k).unwrap_or(k.clone()),
            &dir,
        )),
        context: a.context.clone(),
    });
    let access = kube.as_ref().map(|k| {
        crate::exec::kube::Access::resolve(k.kubeconfig.as_deref(), k.context.as_deref(), &dir)
    });
    let targets: Vec<NodeTarget> = targets
        .into_iter()
        .map(|mut t| {
            t.kubeconfigs = copies_on(t.transport.as_ref());
            t
        })
        .collect();
    let snap = observe::observe_with(&targets, access.as_ref())?;
    let cluster_cas = current_target(&snap, Authority::Kubernetes)
        .map(|t| t.trust)
        .unwrap_or_default();
    let mut cas = BTreeMap::new();
    let mut authorities = BTreeMap::new();
    for auth in Authority::ALL {
        let Some(t) = current_target(&snap, auth) else {
            continue;
        };
        let mut names = Vec::new();
        for (i, fp) in t.trust.iter().enumerate() {
            let name = if *fp == t.issuer {
                auth.name().to_string()
            } else {
                format!("{}-{}", auth.name(), i + 1)
            };
            cas.insert(
                name.clone(),
                CaSpec {
                    fingerprint: Some(spanned(fp.0.clone())),
                    ..CaSpec::default()
                },
            );
            names.push(name);
        }
        authorities.insert(
            auth,
            AuthoritySpec {
                issuer: spanned(auth.name()),
                trust: names.into_iter().map(spanned).collect(),
                renew_before: None,
                leaves: Default::default(),
            },
        );
    }
    let nodes = snap
        .nodes
        .iter()
        .map(|n| {
            let target = targets
                .iter()
                .find(|t| t.name == n.name)
                .expect("observed target");
            // Copies that hold this cluster's trust (a kubeconfig for another cluster
            // is not ours to rotate).
            let kubeconfigs = target
                .kubeconfigs
                .iter()
                .filter(|k| {
                    matches!(n.files.get(&k.path), Some(FileFact::Kubeconfig(f))
                        if f.ca.iter().any(|fp| cluster_cas.contains(fp)))
                })
                .map(|k| spanned(k.path.clone()))
                .collect();
            NodeSpec {
                name: n.name.clone(),
                role: n.role,
                access: match &target.root {
                    Some(root) => {
                        let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
                        Access {
                            local: Some(LocalAccess {
                                root: relative_to(&root, &dir),
                            }),
                            ssh: None,
                        }
                    }
                    None => Access {
                        local: None,
                        ssh: target_ssh.get(&target.name).cloned(),
                    },
                },
                kubeconfigs,
            }
        })
        .collect();
    let c = Config {
        api_version: config::API_VERSION.into(),
        kind: "Cluster".into(),
        metadata: Metadata {
            name: a.name.unwrap_or(default_name),
        },
        inventory: Inventory {
            kube,
            layout: Layout::Kubeadm,
            nodes,
        },
        authorities,
        cas,
        issuance: Default::default(),
        csr: Default::default(),
    };
    write_config(path, &c)?;
    let api = snap
        .kube
        .as_ref()
        .map(|k| format!(" and the API at {} ({} namespaces)", k.server, k.namespaces))
        .unwrap_or_default();
    crate::verbosity::note(format_args!(
        "Wrote {} from {} nodes{api} ({} authorities, desired = current). Commit it; then `trustform rotate kubernetes`.",
        path.display(),
        snap.nodes.len(),
        c.authorities.len()
    ));
    Ok(Exit::Ok)
}
