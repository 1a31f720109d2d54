//! The built-in cluster: a faithful kubeadm layout per node, made of real certificates.
//!
//! `create` writes `DIR/nodes/<name>/` for each node (the node's `/`) and
//! `DIR/sandbox.json` describing the nodes. Nothing here is a stub: every certificate is
//! issued by rcgen and accepted by `openssl verify` against its CA.

pub mod apiserver;
pub mod controllers;
pub mod etcd;
pub mod kubelet_pki;
pub mod listeners;
mod manifests;
pub mod node;
pub mod objects;
pub mod runtime;
pub mod seed;
pub mod sshd;
pub mod tokens;
pub mod transport;

use crate::atomic::{self, KEY_MODE, PUBLIC_MODE};
use crate::layout;
use crate::pki::issue::{generate_key, issue_leaf, new_ca};
use crate::pki::kubeconfig::{Kubeconfig, User};
use crate::pki::{CaMaterial, KeyAlgorithm, LeafSpec, PkiError, SecretPem};
pub use kubelet_pki::KubeletServing;
use miette::Diagnostic;
use seed::SeedReport;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Errors of the sandbox.
#[derive(Debug, Error, Diagnostic)]
pub enum SandboxError {
    /// The target directory already holds a sandbox or other files.
    #[error("{0} is not empty")]
    #[diagnostic(
        code(trustform::sandbox::not_empty),
        help("pick a new directory, or remove this one first")
    )]
    NotEmpty(PathBuf),
    /// A file could not be written.
    #[error("cannot write {path}")]
    #[diagnostic(code(trustform::sandbox::io))]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Pki(#[from] PkiError),
    /// The size asked for is not a cluster.
    #[error("a sandbox needs at least one control plane")]
    #[diagnostic(code(trustform::sandbox::size), help("use --control-planes 1 or more"))]
    NoControlPlane,
    /// The API server's store refused the seeded objects.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Store(Box<apiserver::store::StoreError>),
}

/// The copy of admin.conf `create` puts on the first control plane, as `kubeadm init`
/// tells its user to.
pub const ADMIN_COPY: &str = "/root/.kube/config";

/// A node's role (the cluster model's: the sandbox builds what it names).
pub use crate::snapshot::Role;

/// What to build.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Number of control-plane nodes (`cp-1` …).
    pub control_planes: usize,
    /// Number of workers (`w-1` …).
    pub workers: usize,
    /// Key algorithm (kubeadm uses RSA-2048).
    pub algorithm: KeyAlgorithm,
    /// API objects to seed beyond the system ones (default: none).
    pub seed: seed::Seed,
    /// How the kubelets serve TLS (default: self-signed, as kubeadm leaves them).
    pub kubelet_serving: KubeletServing,
}

/// One node of a sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SandboxNode {
    /// Node name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The node's `/`.
    pub root: PathBuf,
    /// The node's address (a loopback address: nothing leaves the machine).
    pub ip: String,
}

/// `DIR/sandbox.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sandbox {
    /// Cluster name.
    pub name: String,
    /// Nodes, control planes first.
    pub nodes: Vec<SandboxNode>,
    /// How long a simulated process takes to restart (`0.2s-2s`, `500ms`, `0`): see
    /// [`node::RestartTime`]. Sandboxes made before it existed get the default.
    #[serde(default)]
    pub restart_time: node::RestartTime,
}

impl Sandbox {
    /// Read `DIR/sandbox.json`.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(dir.join("sandbox.json"))?;
        serde_json::from_str(&text).map_err(std::io::Error::other)
    }

    /// Write `DIR/sandbox.json`.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).expect("sandbox serialises");
        atomic::write(&dir.join("sandbox.json"), json.as_bytes(), PUBLIC_MODE)
    }
}

/// The shared CAs of a cluster (copied to every control plane, as kubeadm does).
struct Cas {
    kubernetes: CaMaterial,
    front_proxy: CaMaterial,
    etcd: CaMaterial,
    sa: SecretPem,
    sa_pub: String,
}

/// A sandbox's own block of loopback addresses, `127.A.B.0/22`-ish, chosen at random
/// when it is made, so that sandboxes side by side (tests, benches) can bind the same
/// well-known ports (health endpoints, sshd) on their nodes' addresses.
#[derive(Clone, Copy, Debug)]
struct Net {
    a: u8,
    b: u8,
}

impl Net {
    fn random() -> Self {
        let r = node::random_u64();
        Self {
            a: 1 + (r % 254) as u8,
            // Room for the control planes' /24 and three /24s of workers.
            b: ((r >> 8) % 63) as u8 * 4,
        }
    }

    fn ip_of(self, role: Role, index: usize) -> String {
        let Net { a, b } = self;
        match role {
            Role::ControlPlane => format!("127.{a}.{b}.{}", index + 1),
            Role::Worker => format!(
                "127.{a}.{}.{}",
                b as usize + 1 + index / 250,
                index % 250 + 1
            ),
        }
    }
}

/// Create a sandbox cluster in `dir` (which must be empty or absent), its API objects
/// seeded as `spec.seed` asks.
pub fn create(dir: &Path, spec: &Spec) -> Result<Sandbox, SandboxError> {
    create_seeded(dir, spec).map(|(sandbox, _)| sandbox)
}

/// [`create`], and report what was seeded.
pub fn create_seeded(dir: &Path, spec: &Spec) -> Result<(Sandbox, SeedReport), SandboxError> {
    if spec.control_planes == 0 {
        return Err(SandboxError::NoControlPlane);
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(SandboxError::NotEmpty(dir.to_path_buf()));
    }
    let dir = std::path::absolute(dir).map_err(|source| SandboxError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let alg = spec.algorithm;
    let sa_key = generate_key(alg)?;
    let cas = Cas {
        kubernetes: new_ca("kubernetes", alg, 3650)?,
        front_proxy: new_ca("front-proxy-ca", alg, 3650)?,
        etcd: new_ca("etcd-ca", alg, 3650)?,
        sa: SecretPem::new(sa_key.serialize_pem()),
        sa_pub: sa_key.public_key_pem(),
    };
    let net = Net::random();
    let mut nodes = Vec::new();
    for i in 0..spec.control_planes {
        nodes.push(SandboxNode {
            name: format!("cp-{}", i + 1),
            role: Role::ControlPlane,
            root: dir.join("nodes").join(format!("cp-{}", i + 1)),
            ip: net.ip_of(Role::ControlPlane, i),
        });
    }
    for i in 0..spec.workers {
        nodes.push(SandboxNode {
            name: format!("w-{}", i + 1),
            role: Role::Worker,
            root: dir.join("nodes").join(format!("w-{}", i + 1)),
            ip: net.ip_of(Role::Worker, i),
        });
    }
    let cps: Vec<&SandboxNode> = nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .collect();
    let etcd_servers = cps
        .iter()
        .map(|n| format!("https://{}:2379", n.ip))
        .collect::<Vec<_>>()
        .join(",");
    let initial_cluster = cps
        .iter()
        .map(|n| format!("{}=https://{}:2380", n.name, n.ip))
        .collect::<Vec<_>>()
        .join(",");
    let ctx = ClusterCtx {
        cas: &cas,
        alg,
        etcd_servers,
        initial_cluster,
        first_cp: cps[0].name.clone(),
        server: "https://127.0.0.1:6443".into(),
        kubelet_serving: spec.kubelet_serving,
        etcd_version: etcd::binary().map_or_else(|_| "3.5.16".into(), |(_, v)| v),
    };
    // RSA key generation dominates: spread the nodes over every core.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(), SandboxError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(node) = nodes.get(i) else { break };
                        out.push(write_node(node, &ctx));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("node writer panicked"))
            .collect()
    });
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    // Every component starts, reading its files.
    for node in &nodes {
        runtime::start_all(&node.root).map_err(|source| SandboxError::Io {
            path: node.root.join(runtime::RUN_DIR),
            source,
        })?;
    }
    let sandbox = Sandbox {
        name: "sandbox".into(),
        nodes,
        restart_time: node::RestartTime::default(),
    };
    let json = serde_json::to_string_pretty(&sandbox).expect("sandbox serialises");
    put(&dir.join("sandbox.json"), &json, PUBLIC_MODE)?;
    let report = seed::seed(&dir, &spec.seed)?;
    Ok((sandbox, report))
}

struct ClusterCtx<'a> {
    cas: &'a Cas,
    alg: KeyAlgorithm,
    etcd_servers: String,
    initial_cluster: String,
    first_cp: String,
    server: String,
    /// The etcd version the manifests are written for: the installed etcd's, which
    /// `sandbox up` runs (see [`etcd`]), else kubeadm 1.32's.
    etcd_version: String,
    kubelet_serving: KubeletServing,
}

fn put(path: &Path, text: &str, mode: u32) -> Result<(), SandboxError> {
    atomic::write(path, text.as_bytes(), mode).map_err(|source| SandboxError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Issue a leaf and write `<base>.crt` + `<base>.key`.
fn leaf_pair(
    dir: &Path,
    base: &str,
    spec: &LeafSpec,
    ca: &CaMaterial,
    alg: KeyAlgorithm,
) -> Result<(), SandboxError> {
    let key = generate_key(alg)?;
    let cert = issue_leaf(spec, &key, ca)?;
    put(&dir.join(format!("{base}.crt")), &cert, PUBLIC_MODE)?;
    put(
        &dir.join(format!("{base}.key")),
        &key.serialize_pem(),
        KEY_MODE,
    )
}

/// Issue a client certificate and return a kubeconfig embedding it.
fn kubeconfig(
    ctx: &ClusterCtx,
    cn: &str,
    orgs: &[&str],
    user_name: &str,
) -> Result<String, SandboxError> {
    let key = generate_key(ctx.alg)?;
    let cert = issue_leaf(&LeafSpec::client(cn, orgs), &key, &ctx.cas.kubernetes)?;
    let user = Kubeconfig::embedded_user(&cert, &SecretPem::new(key.serialize_pem()));
    Ok(Kubeconfig::single(
        "kubernetes",
        &ctx.server,
        &ctx.cas.kubernetes.cert_pem,
        user_name,
        user,
    )
    .to_yaml())
}

fn write_node(node: &SandboxNode, ctx: &ClusterCtx) -> Result<(), SandboxError> {
    let root = &node.root;
    let pki = root.join(layout::PKI);
    let kube = root.join(layout::KUBERNETES);
    let cas = ctx.cas;
    let alg = ctx.alg;
    put(&pki.join("ca.crt"), &cas.kubernetes.cert_pem, PUBLIC_MODE)?;

    // The kubelet: its client certificate and its serving certificate.
    kubelet_pki::write(
        root,
        &node.name,
        &node.ip,
        &cas.kubernetes,
        alg,
        ctx.kubelet_serving,
    )?;
    let kubelet_user = User {
        client_certificate: Some("/var/lib/kubelet/pki/kubelet-client-current.pem".into()),
        client_key: Some("/var/lib/kubelet/pki/kubelet-client-current.pem".into()),
        ..User::default()
    };
    let kubelet_conf = Kubeconfig::single(
        "kubernetes",
        &ctx.server,
        &cas.kubernetes.cert_pem,
        &format!("system:node:{}", node.name),
        kubelet_user,
    );
    put(
        &root.join(layout::KUBELET_CONF),
        &kubelet_conf.to_yaml(),
        KEY_MODE,
    )?;
    put(
        &root.join(layout::KUBELET_CONFIG),
        &manifests::kubelet_config(&node.ip, ctx.kubelet_serving == KubeletServing::Ca),
        PUBLIC_MODE,
    )?;
    std::fs::create_dir_all(root.join(layout::MANIFESTS)).map_err(|source| SandboxError::Io {
        path: root.join(layout::MANIFESTS),
        source,
    })?;
    if node.role == Role::Worker {
        return Ok(());
    }

    // Control plane: the shared CAs, as kubeadm copies them to every control plane.
    put(&pki.join("ca.key"), cas.kubernetes.key.expose(), KEY_MODE)?;
    put(
        &pki.join("front-proxy-ca.crt"),
        &cas.front_proxy.cert_pem,
        PUBLIC_MODE,
    )?;
    put(
        &pki.join("front-proxy-ca.key"),
        cas.front_proxy.key.expose(),
        KEY_MODE,
    )?;
    put(&pki.join("etcd/ca.crt"), &cas.etcd.cert_pem, PUBLIC_MODE)?;
    put(&pki.join("etcd/ca.key"), cas.etcd.key.expose(), KEY_MODE)?;
    put(&pki.join("sa.key"), cas.sa.expose(), KEY_MODE)?;
    put(&pki.join("sa.pub"), &cas.sa_pub, PUBLIC_MODE)?;

    // The leaves of "PKI certificates and requirements".
    let ip = node.ip.as_str();
    let dns = |n: &str| format!("DNS:{n}");
    let ipsan = |n: &str| format!("IP:{n}");
    let apiserver_sans = vec![
        dns("kubernetes"),
        dns("kubernetes.default"),
        dns("kubernetes.default.svc"),
        dns("kubernetes.default.svc.cluster.local"),
        dns(&node.name),
        dns("localhost"),
        ipsan("10.96.0.1"),
        ipsan(ip),
        ipsan("127.0.0.1"),
    ];
    leaf_pair(
        &pki,
        "apiserver",
        &LeafSpec::server("kube-apiserver", apiserver_sans),
        &cas.kubernetes,
        alg,
    )?;
    leaf_pair(
        &pki,
        "apiserver-kubelet-client",
        &LeafSpec::client("kube-apiserver-kubelet-client", &["kubeadm:cluster-admins"]),
        &cas.kubernetes,
        alg,
    )?;
    leaf_pair(
        &pki,
        "front-proxy-client",
        &LeafSpec::client("front-proxy-client", &[]),
        &cas.front_proxy,
        alg,
    )?;
    leaf_pair(
        &pki,
        "apiserver-etcd-client",
        &LeafSpec::client("kube-apiserver-etcd-client", &[]),
        &cas.etcd,
        alg,
    )?;
    let etcd_sans = vec![
        dns(&node.name),
        dns("localhost"),
        ipsan(ip),
        ipsan("127.0.0.1"),
        ipsan("::1"),
    ];
    leaf_pair(
        &pki,
        "etcd/server",
        &LeafSpec::server(&node.name, etcd_sans.clone()).with_eku("clientAuth"),
        &cas.etcd,
        alg,
    )?;
    leaf_pair(
        &pki,
        "etcd/peer",
        &LeafSpec::server(&node.name, etcd_sans).with_eku("clientAuth"),
        &cas.etcd,
        alg,
    )?;
    leaf_pair(
        &pki,
        "etcd/healthcheck-client",
        &LeafSpec::client("kube-etcd-healthcheck-client", &[]),
        &cas.etcd,
        alg,
    )?;

    // Kubeconfigs of the control plane.
    let admin = kubeconfig(
        ctx,
        "kubernetes-admin",
        &["kubeadm:cluster-admins"],
        "kubernetes-admin",
    )?;
    put(&kube.join("admin.conf"), &admin, KEY_MODE)?;
    if node.name == ctx.first_cp {
        // What `kubeadm init` tells its user to do next:
        // `cp -i /etc/kubernetes/admin.conf $HOME/.kube/config`.
        put(&root.join(layout::rel(ADMIN_COPY)), &admin, KEY_MODE)?;
        put(
            &kube.join("super-admin.conf"),
            &kubeconfig(
                ctx,
                "kubernetes-super-admin",
                &["system:masters"],
                "kubernetes-super-admin",
            )?,
            KEY_MODE,
        )?;
    }
    put(
        &kube.join("controller-manager.conf"),
        &kubeconfig(
            ctx,
            "system:kube-controller-manager",
            &[],
            "system:kube-controller-manager",
        )?,
        KEY_MODE,
    )?;
    put(
        &kube.join("scheduler.conf"),
        &kubeconfig(ctx, "system:kube-scheduler", &[], "system:kube-scheduler")?,
        KEY_MODE,
    )?;

    // Static pods.
    let m = root.join(layout::MANIFESTS);
    put(
        &m.join("kube-apiserver.yaml"),
        &manifests::apiserver(
            ip,
            &ctx.etcd_servers,
            ctx.kubelet_serving == KubeletServing::Ca,
        ),
        PUBLIC_MODE,
    )?;
    put(
        &m.join("kube-controller-manager.yaml"),
        &manifests::controller_manager(ip),
        PUBLIC_MODE,
    )?;
    put(
        &m.join("kube-scheduler.yaml"),
        &manifests::scheduler(ip),
        PUBLIC_MODE,
    )?;
    put(
        &m.join("etcd.yaml"),
        &manifests::etcd(&node.name, ip, &ctx.initial_cluster, &ctx.etcd_version),
        PUBLIC_MODE,
    )?;
    Ok(())
}
