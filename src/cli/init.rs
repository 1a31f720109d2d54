//! `trustform init`: write trustform.yaml from the live cluster (desired = current).

use super::Exit;
use crate::config::{
    self, Access, Authority, AuthoritySpec, CaSpec, Config, Inventory, Layout, LocalAccess,
    Metadata, NodeSpec, spanned,
};
use crate::diff::current_target;
use crate::observe::{self, Listed, NodeTarget};
use crate::pki::kubeconfig::Kubeconfig;
use crate::sandbox::Sandbox;
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
    let dir = config_dir(path);
    crate::atomic::write(
        path,
        config::render(c).as_bytes(),
        crate::atomic::PUBLIC_MODE,
    )
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
    let (targets, default_name): (Vec<NodeTarget>, String) = match (&a.sandbox, a.roots.is_empty())
    {
        (Some(sb), _) => {
            let s = Sandbox::load(sb)
                .into_diagnostic()
                .wrap_err_with(|| format!("{} is not a sandbox (no sandbox.json); create one with `trustform sandbox create`", sb.display()))?;
            (
                s.nodes
                    .iter()
                    .map(|n| NodeTarget::local(&n.name, &n.root))
                    .collect(),
                s.name,
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
    let kubeconfig = a.kubeconfig.clone().or_else(|| {
        let sb = a.sandbox.as_ref()?;
        sb.join("apiserver/endpoint.json")
            .is_file()
            .then(|| sb.join("nodes/cp-1/etc/kubernetes/admin.conf"))
    });
    let kube = kubeconfig.map(|k| config::KubeAccess {
        kubeconfig: Some(relative_to(
            &std::path::absolute(&k).unwrap_or(k.clone()),
            &dir,
        )),
        context: a.context.clone(),
    });
    let access = kube
        .as_ref()
        .map(|k| crate::exec::kube::Access::resolve(k, &dir));
    // SSH access of nodes found over SSH, by name.
    let target_ssh: BTreeMap<String, config::SshAccess> = BTreeMap::new();
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
    };
    write_config(path, &c)?;
    let api = snap
        .kube
        .as_ref()
        .map(|k| format!(" and the API at {} ({} namespaces)", k.server, k.namespaces))
        .unwrap_or_default();
    eprintln!(
        "Wrote {} from {} nodes{api} ({} authorities, desired = current). Commit it; then `trustform rotate kubernetes`.",
        path.display(),
        snap.nodes.len(),
        c.authorities.len()
    );
    Ok(Exit::Ok)
}
