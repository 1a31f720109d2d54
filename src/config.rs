//! `trustform.yaml`: the inventory and the desired trust state.
//!
//! Types are serde + schemars (the JSON Schema in `schemas/cluster.schema.json` is
//! generated from them); `load` reports every problem as a miette diagnostic that points
//! into the file.

use crate::pki::{Fingerprint, KeyAlgorithm, parse_certs};
use crate::redact::Redacted;
use crate::snapshot::Role;
use miette::{Diagnostic, NamedSource, SourceSpan};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The `apiVersion` this build reads.
pub const API_VERSION: &str = "trustform.dev/v1alpha1";
/// The schema file name `init` writes beside the config.
pub const SCHEMA_FILE: &str = "trustform.schema.json";

/// An authority: the role a CA plays in the cluster.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Authority {
    /// The cluster CA (`pki/ca.crt`): API server, kubelets, users, pods.
    Kubernetes,
    /// The front-proxy CA (`pki/front-proxy-ca.crt`): aggregated API servers.
    FrontProxy,
    /// The etcd CA (`pki/etcd/ca.crt`).
    Etcd,
    /// The service-account signing key: not a CA but a key pair. `sa.pub` holds the
    /// public keys the API servers accept tokens from (`--service-account-key-file`),
    /// `sa.key` the key that signs them (`--service-account-signing-key-file`, and the
    /// controller manager's `--service-account-private-key-file`). Its "CAs" are public
    /// keys, named by the SHA-256 of their SubjectPublicKeyInfo (a token's `kid` is the
    /// same digest, base64url).
    ServiceAccount,
}

impl Authority {
    /// Every authority, in rotation order.
    pub const ALL: [Authority; 4] = [
        Authority::Kubernetes,
        Authority::FrontProxy,
        Authority::Etcd,
        Authority::ServiceAccount,
    ];
    /// The kebab-case name.
    pub fn name(self) -> &'static str {
        match self {
            Authority::Kubernetes => "kubernetes",
            Authority::FrontProxy => "front-proxy",
            Authority::Etcd => "etcd",
            Authority::ServiceAccount => "service-account",
        }
    }
    /// Whether its trust anchors are bare public keys (the service-account key), not CA
    /// certificates: nothing is issued from them but tokens.
    pub fn keys_only(self) -> bool {
        self == Authority::ServiceAccount
    }
    /// What one of its trust anchors is called: `CA`, or `key`.
    pub fn anchor(self) -> &'static str {
        if self.keys_only() { "key" } else { "CA" }
    }
    /// The CA bundle file on a control plane (for the service-account key: the public
    /// keys the API servers accept).
    pub fn ca_file(self) -> &'static str {
        match self {
            Authority::Kubernetes => "/etc/kubernetes/pki/ca.crt",
            Authority::FrontProxy => "/etc/kubernetes/pki/front-proxy-ca.crt",
            Authority::Etcd => "/etc/kubernetes/pki/etcd/ca.crt",
            Authority::ServiceAccount => "/etc/kubernetes/pki/sa.pub",
        }
    }
    /// The CA key file on a control plane.
    pub fn key_file(self) -> &'static str {
        match self {
            Authority::Kubernetes => "/etc/kubernetes/pki/ca.key",
            Authority::FrontProxy => "/etc/kubernetes/pki/front-proxy-ca.key",
            Authority::Etcd => "/etc/kubernetes/pki/etcd/ca.key",
            Authority::ServiceAccount => "/etc/kubernetes/pki/sa.key",
        }
    }
    /// Parse a name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The whole file.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(
    title = "trustform cluster",
    description = "Inventory and desired trust state of one cluster (trustform.yaml)"
)]
pub struct Config {
    /// Always `trustform.dev/v1alpha1`.
    pub api_version: String,
    /// Always `Cluster`.
    pub kind: String,
    /// Names.
    pub metadata: Metadata,
    /// Where the cluster is and how to reach its nodes.
    pub inventory: Inventory,
    /// Desired issuer and trust set per authority; names refer to `cas`.
    pub authorities: BTreeMap<Authority, AuthoritySpec>,
    /// The CAs, by a name of your choice.
    pub cas: BTreeMap<String, CaSpec>,
    /// How `apply` issues keys and certificates.
    #[serde(default)]
    pub issuance: Issuance,
    /// How `trustform csr` decides on certificate signing requests.
    #[serde(default, skip_serializing_if = "CsrConfig::is_empty")]
    pub csr: CsrConfig,
}

/// How `trustform csr` decides on certificate signing requests: a policy per signer. A
/// request for a signer no policy names is left to its own approver (and listed so).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsrConfig {
    /// The policies, one per signer.
    #[serde(default)]
    pub policies: Vec<CsrPolicy>,
}

impl CsrConfig {
    /// No policy.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// Who may ask a signer for what. A request is approved only when it meets every field;
/// otherwise it is denied, naming each rule it broke.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CsrPolicy {
    /// `spec.signerName` it covers (`kubernetes.io/kubelet-serving`).
    pub signer: String,
    /// Users that may request (`spec.username`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups that may request (any of `spec.groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// A node's own certificate: the subject is `CN=system:node:<node>, O=system:nodes`,
    /// the requester is that node (`system:node:<node>`), and the DNS names and IPs are
    /// only the Node's hostname and its status addresses.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub node: bool,
    /// Allowed common names (`*` matches any run of characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub common_names: Vec<String>,
    /// Allowed organizations (every one the subject names must be here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    /// Allowed DNS names (`*` matches any run of characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_names: Vec<String>,
    /// Allowed IP addresses, or CIDR ranges (`10.0.0.0/8`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Allowed usages (`digital signature`, `key encipherment`, `server auth`, …).
    pub usages: Vec<String>,
    /// The longest lifetime it may ask for (`spec.expirationSeconds`), e.g. `90d`; a
    /// request that names none asks for the signer's default and is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<String>,
}

/// How new keys and certificates are made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Issuance {
    /// Algorithm of generated CA keys and of new leaf keys (default rsa-2048, as kubeadm).
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,
    /// Re-issue leaves for their existing keys instead of generating new ones.
    #[serde(default)]
    pub keep_keys: bool,
}

/// Names.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Cluster name.
    pub name: String,
}

/// Where the cluster is.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// API access (optional): kubeconfig and context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<KubeAccess>,
    /// File layout of the nodes.
    #[serde(default)]
    pub layout: Layout,
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
}

/// Kubernetes API access.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeAccess {
    /// Kubeconfig path (`KUBECONFIG` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Context name (current context when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Node file layouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// kubeadm: /etc/kubernetes/pki, static pod manifests, /var/lib/kubelet.
    #[default]
    Kubeadm,
}

/// One node.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// How trustform reaches its files.
    pub access: Access,
    /// Copies of the cluster's kubeconfigs on this node, outside `/etc/kubernetes`
    /// (absolute node paths, e.g. `/root/.kube/config`): rotated with admin.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub kubeconfigs: Vec<Spanned<String>>,
}

/// How to reach a node's files.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Access {
    /// The node's `/` is a local directory (the sandbox, or `/` itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalAccess>,
    /// Over SSH (not yet supported by this build).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshAccess>,
}

/// Local access.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalAccess {
    /// The node's root directory, relative to this file or absolute.
    pub root: String,
}

/// SSH access, through the system OpenSSH client (so `~/.ssh/config`, the agent,
/// ProxyJump and certificates work as for `ssh`). Host keys are checked strictly.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshAccess {
    /// Host name or address (or a `Host` alias of `~/.ssh/config`).
    pub host: String,
    /// Port (default: ssh's, usually 22).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Login (default: ssh's). A login other than root runs commands through `sudo -n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Private key file, relative to this file or absolute (default: ssh's, and the agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// Run commands through `sudo -n` (default: when `user` is set and is not root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo: Option<bool>,
    /// A known_hosts file to check host keys against instead of `~/.ssh/known_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts_file: Option<String>,
    /// An ssh config file instead of `~/.ssh/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<String>,
}

impl SshAccess {
    /// The transport's options, with paths resolved by `path` (relative to trustform.yaml).
    pub fn options(&self, path: impl Fn(&str) -> PathBuf) -> crate::transport::SshOptions {
        crate::transport::SshOptions {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            identity_file: self.identity_file.as_deref().map(&path),
            sudo: self.sudo,
            known_hosts_file: self.known_hosts_file.as_deref().map(&path),
            config_file: self.config_file.as_deref().map(&path),
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Desired state of one authority.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthoritySpec {
    /// The CA that signs new leaves (a name from `cas`; must be in `trust`).
    #[schemars(with = "String")]
    pub issuer: Spanned<String>,
    /// The CAs every verifier accepts (names from `cas`).
    #[schemars(with = "Vec<String>")]
    pub trust: Vec<Spanned<String>>,
    /// Renew a leaf of this authority (a certificate file, a kubeconfig's client
    /// certificate) that ends within this long: `plan` re-issues it from its own CA
    /// (`30d`, `720h`; default 30 days).
    #[serde(
        default,
        rename = "renewBefore",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub renew_before: Option<Spanned<String>>,
    /// Per-leaf windows that override `renewBefore`, by path (relative to
    /// /etc/kubernetes as in `plans/`, e.g. `pki/apiserver.crt`, `admin.conf`; or
    /// absolute).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub leaves: BTreeMap<String, LeafPolicy>,
}

/// The renewal of one leaf.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LeafPolicy {
    /// Renew it when it ends within this long.
    #[serde(rename = "renewBefore")]
    #[schemars(with = "String")]
    pub renew_before: Spanned<String>,
}

/// The renewal window when trustform.yaml names none (what `kubeadm certs
/// check-expiration` warns about: 30 days).
pub const DEFAULT_RENEW_BEFORE: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// When the leaves of one authority are renewed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Renewal {
    /// The authority's window.
    pub before: std::time::Duration,
    /// Absolute path → its own window.
    pub leaves: BTreeMap<String, std::time::Duration>,
}

impl Renewal {
    /// The window of the leaf at `path` (absolute).
    pub fn window(&self, path: &str) -> std::time::Duration {
        self.leaves.get(path).copied().unwrap_or(self.before)
    }
}

impl AuthoritySpec {
    /// Its renewal windows (checked by [`load`]).
    pub fn renewal(&self) -> Renewal {
        let parse = |s: &Spanned<String>| {
            humantime::parse_duration(s.value.trim()).unwrap_or(DEFAULT_RENEW_BEFORE)
        };
        Renewal {
            before: self
                .renew_before
                .as_ref()
                .map_or(DEFAULT_RENEW_BEFORE, parse),
            leaves: self
                .leaves
                .iter()
                .map(|(p, l)| (leaf_path(p), parse(&l.renew_before)))
                .collect(),
        }
    }
}

/// A leaf path of trustform.yaml, absolute: relative ones are under /etc/kubernetes.
pub fn leaf_path(p: &str) -> String {
    if p.starts_with('/') {
        p.to_string()
    } else {
        format!("/etc/kubernetes/{}", p.trim_start_matches("./"))
    }
}

/// A CA: an existing one (by fingerprint) or a generated one (by its files).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaSpec {
    /// SHA-256 fingerprint of a CA found in the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub fingerprint: Option<Spanned<String>>,
    /// Certificate file (public, committable), relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub cert: Option<Spanned<String>>,
    /// A service-account key's public half (PEM `PUBLIC KEY`, public, committable),
    /// relative to this file; its fingerprint is the SHA-256 of the SubjectPublicKeyInfo.
    #[serde(default, rename = "publicKey", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub public_key: Option<Spanned<String>>,
    /// Private key file (0600, outside git), relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Key algorithm for CAs trustform generates (default rsa-2048, like kubeadm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<KeyAlgorithm>,
}

/// Errors in `trustform.yaml`. Each points at the file and, where it can, the place.
#[derive(Debug, Error, Diagnostic)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}")]
    #[diagnostic(
        code(trustform::config::io),
        help("run `trustform init` to write one, or pass --config")
    )]
    Io {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a regular file, too large, or unreadable.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Input {
        /// Why.
        #[from]
        source: crate::input::InputError,
    },
    /// YAML syntax or shape error.
    #[error("{path}: {reason}")]
    #[diagnostic(
        code(trustform::config::syntax),
        help(
            "see schemas/cluster.schema.json; editors validate through the `# yaml-language-server` line"
        )
    )]
    Syntax {
        /// The file.
        path: String,
        /// What the parser said.
        reason: String,
        /// The text.
        #[source_code]
        src: NamedSource<String>,
        /// Where.
        #[label("here")]
        span: SourceSpan,
    },
    /// A semantic error at a place in the file.
    #[error("{path}: {reason}")]
    #[diagnostic(code(trustform::config::invalid))]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
        /// The text.
        #[source_code]
        src: NamedSource<String>,
        /// Where.
        #[label("{label}")]
        span: SourceSpan,
        /// Label text.
        label: String,
        /// How to fix it.
        #[help]
        help: String,
    },
}

/// A loaded config with its source, for error spans and the plan's config hash.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file.
    pub path: PathBuf,
    /// Its directory (relative paths resolve from here).
    pub dir: PathBuf,
    /// Its text.
    pub text: String,
    /// The parsed config.
    pub config: Config,
    /// `sha256:` of the file bytes.
    pub hash: String,
    /// Each node's transport, made once per process so that every read and write of a
    /// command shares one connection per node.
    transports:
        std::sync::Arc<std::sync::OnceLock<Vec<std::sync::Arc<dyn crate::transport::Transport>>>>,
}

fn span_of(loc: serde_saphyr::Location, text: &str) -> SourceSpan {
    let s = loc.span();
    match (s.byte_offset(), s.byte_len()) {
        (Some(o), Some(l)) if l > 0 => (o as usize, l as usize).into(),
        (Some(o), _) => (o as usize, 1).into(),
        _ => crate::redact::line_span(text, loc.line() as usize),
    }
}

/// A trust anchor a `cas` entry names by its file: a CA certificate (`cert`), or a
/// service-account public key (`publicKey`, whose fingerprint is its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// The certificate's fingerprint, or the public key's.
    pub fingerprint: Fingerprint,
    /// SHA-256 of its SubjectPublicKeyInfo.
    pub public_key: Fingerprint,
}

impl Loaded {
    /// The anchor of every `cas` entry that names a file, read and checked: one PEM CA
    /// certificate (`cert`) or public key (`publicKey`), matching the entry's
    /// `fingerprint` when it has one.
    pub fn ca_files(&self) -> Result<BTreeMap<String, Anchor>, ConfigError> {
        let mut out = BTreeMap::new();
        for (name, spec) in &self.config.cas {
            let (file, is_key) = match (&spec.cert, &spec.public_key) {
                (Some(c), _) => (c, false),
                (None, Some(k)) => (k, true),
                (None, None) => continue,
            };
            let path = self.resolve_path(&file.value);
            let text = crate::input::read_text(&path, crate::input::Kind::Config).map_err(|e| {
                self.invalid(
                    file.referenced,
                    format!("CA {name}: cannot read {}: {e}", path.display()),
                    "missing file",
                    format!(
                        "restore {} or run `trustform rotate` again to generate it",
                        file.value
                    ),
                )
            })?;
            let anchor = if is_key {
                let first = crate::pki::cert::pem_blocks(&text, &file.value)
                    .ok()
                    .and_then(|b| crate::pki::cert::public_key_fps(&b).into_iter().next());
                let Some(fp) = first else {
                    return Err(self.invalid(
                        file.referenced,
                        format!("key {name}: {} holds no PEM public key", file.value),
                        "not a public key",
                        "point `publicKey` at a PEM `PUBLIC KEY` file (`openssl pkey -pubout`)"
                            .into(),
                    ));
                };
                Anchor {
                    fingerprint: fp.clone(),
                    public_key: fp,
                }
            } else {
                let parsed = parse_certs(&text, &file.value).map_err(|e| {
                    self.invalid(file.referenced, format!("CA {name}: {e}"), "corrupt certificate", "the file must hold one PEM CA certificate; regenerate it with `trustform rotate`".into())
                })?;
                let Some(first) = parsed.into_iter().next().filter(|p| p.facts.is_ca) else {
                    return Err(self.invalid(
                        file.referenced,
                        format!("CA {name}: {} holds no CA certificate", file.value),
                        "not a CA",
                        "point `cert` at a CA certificate (basicConstraints CA:TRUE)".into(),
                    ));
                };
                Anchor {
                    fingerprint: first.facts.fingerprint,
                    public_key: first.facts.public_key,
                }
            };
            if let Some(fp) = &spec.fingerprint
                && Fingerprint::parse(&fp.value).as_ref() != Some(&anchor.fingerprint)
            {
                return Err(self.invalid(
                    fp.referenced,
                    format!("CA {name}: the fingerprint does not match {}", file.value),
                    "mismatch",
                    format!("the file's fingerprint is {}", anchor.fingerprint),
                ));
            }
            out.insert(name.clone(), anchor);
        }
        Ok(out)
    }
}

/// A place in trustform.yaml, for errors raised outside `config`.
#[derive(Clone, Debug)]
pub struct Origin {
    /// The file and its text.
    pub src: miette::NamedSource<String>,
    /// Where.
    pub span: SourceSpan,
}

impl Loaded {
    /// An error pointing at `loc`.
    pub fn invalid(
        &self,
        loc: serde_saphyr::Location,
        reason: String,
        label: &str,
        help: String,
    ) -> ConfigError {
        let shown = self.shown();
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            reason: shown.message(&reason),
            src: shown.source(self.path.display().to_string()),
            span: shown.span(span_of(loc, &self.text)),
            label: label.to_string(),
            help,
        }
    }

    /// The text as errors show it: no key material (someone may paste a key here).
    fn shown(&self) -> Redacted {
        Redacted::new(&self.text)
    }

    /// The place of `loc` in this file, for errors raised outside `config`.
    pub fn origin(&self, loc: serde_saphyr::Location) -> Origin {
        let shown = self.shown();
        Origin {
            src: shown.source(self.path.display().to_string()),
            span: shown.span(span_of(loc, &self.text)),
        }
    }

    /// Resolve a path written in the config.
    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let p = expand_home(p);
        if p.is_absolute() { p } else { self.dir.join(p) }
    }

    /// How each node is reached, in inventory order (made at the first call, shared by
    /// every later one).
    pub fn transports(
        &self,
    ) -> Result<Vec<std::sync::Arc<dyn crate::transport::Transport>>, ConfigError> {
        if let Some(t) = self.transports.get() {
            return Ok(t.clone());
        }
        let made: Vec<std::sync::Arc<dyn crate::transport::Transport>> = self
            .config
            .inventory
            .nodes
            .iter()
            .map(|n| match (&n.access.local, &n.access.ssh) {
                (Some(l), _) => Ok(crate::transport::local(&n.name, &self.resolve_path(&l.root))),
                (None, Some(h)) => Ok(crate::transport::traced(
                    &n.name,
                    std::sync::Arc::new(crate::transport::Ssh::new(
                        &n.name,
                        h.options(|p| self.resolve_path(p)),
                    )),
                )),
                (None, None) => Err(self.invalid_at_text(
                    &format!("name: {}", n.name),
                    format!("node {} has no access", n.name),
                    "no `access`",
                    "give the node `access: { ssh: { host: <address> } }`, or `access: { local: { root: <dir> } }` for a directory that is its /".into(),
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(self.transports.get_or_init(|| made).clone())
    }

    /// The nodes whose transport cannot run commands (a `local` root other than `/`):
    /// the plan makes their restarts manual steps. Decided from the access alone.
    pub fn manual_nodes(&self) -> Result<std::collections::BTreeSet<String>, ConfigError> {
        Ok(self
            .config
            .inventory
            .nodes
            .iter()
            .zip(self.transports()?)
            .filter(|(_, t)| !t.can_run())
            .map(|(n, _)| n.name.clone())
            .collect())
    }

    /// An error pointing at the first occurrence of `needle` in the text.
    pub fn invalid_at_text(
        &self,
        needle: &str,
        reason: String,
        label: &str,
        help: String,
    ) -> ConfigError {
        let span: SourceSpan = match self.text.find(needle) {
            Some(o) => (o, needle.len()).into(),
            None => (0, 0).into(),
        };
        let shown = self.shown();
        ConfigError::Invalid {
            path: self.path.display().to_string(),
            reason: shown.message(&reason),
            src: shown.source(self.path.display().to_string()),
            span: shown.span(span),
            label: label.to_string(),
            help,
        }
    }
}

fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map_or_else(|| PathBuf::from(p), |h| PathBuf::from(h).join(rest)),
        None => PathBuf::from(p),
    }
}

/// Read and check `trustform.yaml`: syntax, names, issuer ∈ trust, CA sources.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = crate::input::read_text(path, crate::input::Kind::Config).map_err(|e| match e {
        crate::input::InputError::Missing { .. } => ConfigError::Io {
            path: path.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        },
        source => ConfigError::Input { source },
    })?;
    let config: Config = serde_saphyr::from_str(&text).map_err(|e| {
        let shown = Redacted::new(&text);
        let span = e.location().map_or((0, 0).into(), |l| span_of(l, &text));
        let reason = e.without_snippet().to_string();
        ConfigError::Syntax {
            path: path.display().to_string(),
            reason: shown.message(reason.lines().next().unwrap_or("invalid YAML")),
            src: shown.source(path.display().to_string()),
            span: shown.span(span),
        }
    })?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let loaded = Loaded {
        transports: Default::default(),
        path: path.to_path_buf(),
        dir,
        hash: format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes()))),
        text,
        config,
    };
    check(&loaded)?;
    Ok(loaded)
}

fn check(l: &Loaded) -> Result<(), ConfigError> {
    let c = &l.config;
    if c.api_version != API_VERSION {
        return Err(l.invalid_at_text(
            "apiVersion",
            format!("apiVersion {:?} is not {API_VERSION}", c.api_version),
            "unknown apiVersion",
            format!("set `apiVersion: {API_VERSION}`"),
        ));
    }
    if c.inventory.nodes.is_empty() {
        return Err(l.invalid_at_text(
            "nodes",
            "the inventory has no nodes".into(),
            "empty",
            "list the nodes, or run `trustform init`".into(),
        ));
    }
    check_nodes_unique(l)?;
    for n in &c.inventory.nodes {
        check_kubeconfigs(l, n)?;
    }
    let known = || c.cas.keys().cloned().collect::<Vec<_>>().join(", ");
    for (auth, spec) in &c.authorities {
        for name in std::iter::once(&spec.issuer).chain(spec.trust.iter()) {
            if !c.cas.contains_key(&name.value) {
                return Err(l.invalid(
                    name.referenced,
                    format!("authority {auth} names CA {:?}, which is not in `cas`", name.value),
                    "unknown CA",
                    format!("use one of: {}; or add it under `cas` (`trustform rotate {auth}` generates one)", known()),
                ));
            }
        }
        if spec.trust.is_empty() {
            return Err(l.invalid(
                spec.issuer.referenced,
                format!("authority {auth} has an empty trust set"),
                "nothing would verify leaves of this issuer",
                format!("add `trust: [{}]`", spec.issuer.value),
            ));
        }
        for (i, t) in spec.trust.iter().enumerate() {
            if spec.trust[..i].iter().any(|o| o.value == t.value) {
                return Err(l.invalid(
                    t.referenced,
                    format!(
                        "authority {auth}: CA {} is listed twice in its trust set",
                        t.value
                    ),
                    "listed twice",
                    format!("list each CA once: remove this `{}`", t.value),
                ));
            }
        }
        for window in spec
            .renew_before
            .iter()
            .chain(spec.leaves.values().map(|l| &l.renew_before))
        {
            if let Err(e) = humantime::parse_duration(window.value.trim()) {
                return Err(l.invalid(
                    window.referenced,
                    format!(
                        "authority {auth}: renewBefore {:?} is not a duration: {e}",
                        window.value
                    ),
                    "not a duration",
                    "write it as `30d`, `720h` or `4w`".into(),
                ));
            }
        }
        if !spec.trust.iter().any(|t| t.value == spec.issuer.value) {
            return Err(l.invalid(
                spec.issuer.referenced,
                format!("authority {auth}: issuer {} is not in its trust set", spec.issuer.value),
                "issuer not trusted",
                format!(
                    "every leaf it signs would be rejected; add {} to `trust`, or pick an issuer from [{}]",
                    spec.issuer.value,
                    spec.trust.iter().map(|t| t.value.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    for (name, ca) in &c.cas {
        match (&ca.fingerprint, ca.cert.as_ref().or(ca.public_key.as_ref())) {
            (None, None) => {
                return Err(l.invalid_at_text(
                    &format!("{name}:"),
                    format!("CA {name} has neither `fingerprint` nor `cert`"),
                    "no source",
                    "give the fingerprint of a CA (or service-account key) in the cluster, or the path of its certificate (`publicKey`: of its public key)"
                        .into(),
                ));
            }
            (Some(fp), _) if Fingerprint::parse(&fp.value).is_none() => {
                return Err(l.invalid(
                    fp.referenced,
                    format!("CA {name}: {:?} is not a SHA-256 fingerprint", fp.value),
                    "not sha256:<64 hex>",
                    "copy it from `trustform snapshot` or `openssl x509 -noout -fingerprint -sha256`".into(),
                ));
            }
            _ => {}
        }
    }
    for p in &c.csr.policies {
        let bad = |what: &str, why: String, help: &str| {
            l.invalid_at_text(what, why, "here", help.to_string())
        };
        if let Some(d) = &p.max_duration
            && humantime::parse_duration(d.trim()).is_err()
        {
            return Err(bad(
                d,
                format!(
                    "csr policy for {}: maxDuration {d:?} is not a duration",
                    p.signer
                ),
                "write it as `30d`, `12h` or `90m`",
            ));
        }
        for ip in &p.ips {
            let (addr, bits) = ip.split_once('/').unwrap_or((ip, "0"));
            let max = match addr.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => 32,
                Ok(std::net::IpAddr::V6(_)) => 128,
                Err(_) => -1,
            };
            if bits.parse::<i32>().is_ok_and(|b| b > max) || max < 0 || bits.parse::<u8>().is_err()
            {
                return Err(bad(
                    ip,
                    format!(
                        "csr policy for {}: {ip:?} is not an IP address or CIDR range",
                        p.signer
                    ),
                    "write an address (`192.0.2.24`) or a range (`10.0.0.0/8`)",
                ));
            }
        }
        if c.csr
            .policies
            .iter()
            .filter(|q| q.signer == p.signer)
            .count()
            > 1
        {
            return Err(bad(
                &p.signer,
                format!("two csr policies name signer {}", p.signer),
                "keep one policy per signer",
            ));
        }
    }
    Ok(())
}

/// Where each node's name and root are written, read in a second pass so that the
/// public types stay plain strings.
#[derive(Deserialize)]
struct Places {
    #[serde(default)]
    inventory: PlacesInventory,
}

#[derive(Deserialize, Default)]
struct PlacesInventory {
    #[serde(default)]
    nodes: Vec<PlacesNode>,
}

#[derive(Deserialize)]
struct PlacesNode {
    name: Spanned<String>,
    #[serde(default)]
    access: PlacesAccess,
}

#[derive(Deserialize, Default)]
struct PlacesAccess {
    #[serde(default)]
    local: Option<PlacesLocal>,
}

#[derive(Deserialize)]
struct PlacesLocal {
    root: Spanned<String>,
}

/// Every node once: no two nodes with one name, and no two with one root (two names for
/// one node would rotate it twice, or drop one silently).
fn check_nodes_unique(l: &Loaded) -> Result<(), ConfigError> {
    let Ok(places) = serde_saphyr::from_str::<Places>(&l.text) else {
        return Ok(()); // the typed parse succeeded; a shape this pass cannot read has no duplicates to find
    };
    let nodes = &places.inventory.nodes;
    for (i, n) in nodes.iter().enumerate() {
        if let Some(first) = nodes[..i].iter().find(|o| o.name.value == n.name.value) {
            return Err(l.invalid(
                n.name.referenced,
                format!(
                    "node {} is listed twice (first at line {})",
                    n.name.value,
                    first.name.referenced.line()
                ),
                "second node with this name",
                "give every node its own name (the Kubernetes node name), or remove the duplicate"
                    .into(),
            ));
        }
    }
    let roots: Vec<(&PlacesNode, &Spanned<String>, PathBuf)> = nodes
        .iter()
        .filter_map(|n| n.access.local.as_ref().map(|a| (n, &a.root)))
        .map(|(n, r)| {
            let p = l.resolve_path(&r.value);
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            (n, r, p)
        })
        .collect();
    for (i, (n, root, path)) in roots.iter().enumerate() {
        if let Some((first, ..)) = roots[..i].iter().find(|(_, _, p)| p == path) {
            return Err(l.invalid(
                root.referenced,
                format!(
                    "nodes {} and {} have the same root {}",
                    first.name.value,
                    n.name.value,
                    path.display()
                ),
                "same root as another node",
                "each node needs its own root (the directory that is that node's /)".into(),
            ));
        }
    }
    Ok(())
}

/// A node's `kubeconfigs`: absolute, normal node paths outside `/etc/kubernetes`, each
/// listed once.
fn check_kubeconfigs(l: &Loaded, n: &NodeSpec) -> Result<(), ConfigError> {
    for (i, k) in n.kubeconfigs.iter().enumerate() {
        let p = k.value.as_str();
        let normal = p.starts_with('/')
            && p.len() > 1
            && p[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !p.starts_with('/') {
            return Err(l.invalid(
                k.referenced,
                format!("node {}: kubeconfig path {p:?} is not absolute", n.name),
                "not an absolute node path",
                "write the path as the node sees it, from its `/` (`~` is not expanded): /root/.kube/config or /home/<user>/.kube/config".into(),
            ));
        }
        if !normal {
            return Err(l.invalid(
                k.referenced,
                format!(
                    "node {}: kubeconfig path {p:?} is not a plain file path",
                    n.name
                ),
                "empty, `.` or `..` component",
                "write the file's path without `.`, `..` or doubled slashes".into(),
            ));
        }
        if p == "/etc/kubernetes" || p.starts_with("/etc/kubernetes/") {
            return Err(l.invalid(
                k.referenced,
                format!("node {}: {p} is under /etc/kubernetes", n.name),
                "trustform reads /etc/kubernetes already",
                "remove it from `kubeconfigs`: list only copies outside /etc/kubernetes (kubeadm's kubeconfigs there are rotated by the documented steps)".into(),
            ));
        }
        if n.kubeconfigs[..i].iter().any(|o| o.value == k.value) {
            return Err(l.invalid(
                k.referenced,
                format!("node {}: {p} is listed twice", n.name),
                "listed twice",
                "remove one of them".into(),
            ));
        }
    }
    Ok(())
}

/// How `init` and `rotate` write the file: one canonical, commented layout.
pub fn render(c: &Config) -> String {
    let mut s = format!("# yaml-language-server: $schema=./{SCHEMA_FILE}\n");
    s.push_str("# Desired trust state of this cluster. `trustform plan` shows what it takes to get there.\n");
    s.push_str(&format!(
        "apiVersion: {}\nkind: {}\nmetadata:\n  name: {}\n",
        c.api_version,
        c.kind,
        q(&c.metadata.name)
    ));
    s.push_str("inventory:\n");
    if let Some(k) = &c.inventory.kube {
        s.push_str("  kube:");
        let mut parts = vec![];
        if let Some(p) = &k.kubeconfig {
            parts.push(format!("kubeconfig: {}", q(p)));
        }
        if let Some(p) = &k.context {
            parts.push(format!("context: {}", q(p)));
        }
        s.push_str(&format!(" {{ {} }}\n", parts.join(", ")));
    }
    s.push_str("  layout: kubeadm\n  nodes:\n");
    for n in &c.inventory.nodes {
        let access = match (&n.access.local, &n.access.ssh) {
            (Some(l), _) => format!("{{ local: {{ root: {} }} }}", q(&l.root)),
            (None, Some(h)) => {
                let mut parts = vec![format!("host: {}", q(&h.host))];
                if let Some(p) = h.port {
                    parts.push(format!("port: {p}"));
                }
                if let Some(u) = &h.user {
                    parts.push(format!("user: {}", q(u)));
                }
                if let Some(i) = &h.identity_file {
                    parts.push(format!("identityFile: {}", q(i)));
                }
                if let Some(s) = h.sudo {
                    parts.push(format!("sudo: {s}"));
                }
                if let Some(k) = &h.known_hosts_file {
                    parts.push(format!("knownHostsFile: {}", q(k)));
                }
                if let Some(c) = &h.config_file {
                    parts.push(format!("configFile: {}", q(c)));
                }
                format!("{{ ssh: {{ {} }} }}", parts.join(", "))
            }
            (None, None) => "{}".into(),
        };
        let role = match n.role {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        };
        let kubeconfigs = if n.kubeconfigs.is_empty() {
            String::new()
        } else {
            let v: Vec<String> = n.kubeconfigs.iter().map(|k| q(&k.value)).collect();
            format!(", kubeconfigs: [{}]", v.join(", "))
        };
        s.push_str(&format!(
            "    - {{ name: {}, role: {role}, access: {access}{kubeconfigs} }}\n",
            q(&n.name)
        ));
    }
    s.push_str("authorities:\n");
    for (a, spec) in &c.authorities {
        let trust: Vec<String> = spec.trust.iter().map(|t| q(&t.value)).collect();
        s.push_str(&format!(
            "  {a}:\n    issuer: {}\n    trust: [{}]\n",
            q(&spec.issuer.value),
            trust.join(", ")
        ));
        if let Some(w) = &spec.renew_before {
            s.push_str(&format!("    renewBefore: {}\n", q(&w.value)));
        }
        if !spec.leaves.is_empty() {
            s.push_str("    leaves:\n");
            for (path, l) in &spec.leaves {
                s.push_str(&format!(
                    "      {}: {{ renewBefore: {} }}\n",
                    q(path),
                    q(&l.renew_before.value)
                ));
            }
        }
    }
    s.push_str("cas:\n");
    for (name, ca) in &c.cas {
        s.push_str(&format!(
            "  {}: {{ {} }}\n",
            q(name),
            ca_fields(ca).join(", ")
        ));
    }
    if !c.csr.is_empty() {
        s.push_str("csr:\n  policies:\n");
        for p in &c.csr.policies {
            let list = |v: &[String]| {
                let v: Vec<String> = v.iter().map(|x| q(x)).collect();
                format!("[{}]", v.join(", "))
            };
            s.push_str(&format!("    - signer: {}\n", q(&p.signer)));
            for (k, v) in [
                ("users", &p.users),
                ("groups", &p.groups),
                ("commonNames", &p.common_names),
                ("organizations", &p.organizations),
                ("dnsNames", &p.dns_names),
                ("ips", &p.ips),
            ] {
                if !v.is_empty() {
                    s.push_str(&format!("      {k}: {}\n", list(v)));
                }
            }
            if p.node {
                s.push_str("      node: true\n");
            }
            s.push_str(&format!("      usages: {}\n", list(&p.usages)));
            if let Some(d) = &p.max_duration {
                s.push_str(&format!("      maxDuration: {}\n", q(d)));
            }
        }
    }
    if c.issuance != Issuance::default() {
        s.push_str(&format!(
            "issuance:\n  keyAlgorithm: {}\n  keepKeys: {}\n",
            serde_json::to_value(c.issuance.key_algorithm)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            c.issuance.keep_keys
        ));
    }
    s
}

/// A `cas` entry's fields as trustform writes them (`cert: cas/x.crt`, …).
pub(crate) fn ca_fields(ca: &CaSpec) -> Vec<String> {
    let mut parts = vec![];
    if let Some(f) = &ca.fingerprint {
        parts.push(format!("fingerprint: \"{}\"", f.value));
    }
    if let Some(p) = &ca.cert {
        parts.push(format!("cert: {}", q(&p.value)));
    }
    if let Some(p) = &ca.public_key {
        parts.push(format!("publicKey: {}", q(&p.value)));
    }
    if let Some(p) = &ca.key {
        parts.push(format!("key: {}", q(p)));
    }
    if let Some(a) = &ca.algorithm {
        parts.push(format!(
            "algorithm: {}",
            serde_json::to_value(a)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        ));
    }
    parts
}

/// Quote a scalar when YAML would misread it.
pub(crate) fn q(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./~".contains(c))
        && !s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.' || c == '~')
        && !matches!(s, "true" | "false" | "null" | "yes" | "no" | "on" | "off");
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("string serialises")
    }
}

/// A plain spanned value (for configs built in code).
pub fn spanned(s: impl Into<String>) -> Spanned<String> {
    Spanned::new(
        s.into(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// The JSON Schema of `trustform.yaml`.
pub fn schema() -> String {
    let schema = schemars::schema_for!(Config);
    serde_json::to_string_pretty(&schema).expect("schema serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha256:011c84fd78b924a1208ab9d2a6ff0f9648bc39507c885b8576295c0beb7f510e";

    fn text(authorities: &str, cas: &str, nodes: &str) -> String {
        format!(
            "apiVersion: trustform.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: t\ninventory:\n  layout: kubeadm\n  nodes:\n{nodes}authorities:\n{authorities}cas:\n{cas}"
        )
    }

    const NODE: &str =
        "    - { name: cp-1, role: control-plane, access: { local: { root: nodes/cp-1 } } }\n";

    fn good() -> String {
        text(
            "  kubernetes:\n    issuer: old\n    trust: [old]\n",
            &format!("  old: {{ fingerprint: \"{FP}\" }}\n"),
            NODE,
        )
    }

    /// Load `text` from a file; on error, its message and the text it points at.
    fn load_text(text: &str) -> Result<Loaded, (String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trustform.yaml");
        std::fs::write(&path, text).unwrap();
        load(&path).map_err(|e| {
            let span = match &e {
                ConfigError::Invalid { span, .. } | ConfigError::Syntax { span, .. } => *span,
                other => panic!("not an error with a place: {other:?}"),
            };
            let at = text[span.offset()..span.offset() + span.len()].to_string();
            (e.to_string(), at)
        })
    }

    #[test]
    fn a_minimal_config_loads_and_hashes_its_bytes() {
        let l = load_text(&good()).unwrap();
        assert_eq!(l.config.metadata.name, "t");
        assert_eq!(l.config.inventory.nodes.len(), 1);
        let again = load_text(&good()).unwrap();
        assert_eq!(l.hash, again.hash);
        assert!(l.hash.starts_with("sha256:") && l.hash.len() == 7 + 64);
        let other = load_text(&good().replace("name: t\n", "name: u\n")).unwrap();
        assert_ne!(l.hash, other.hash);
    }

    #[test]
    fn each_mistake_is_refused_where_it_is() {
        let node2 = format!("{NODE}{NODE}");
        for (t, why, at) in [
            (
                good().replace("trustform.dev/v1alpha1", "trustform.dev/v9"),
                "apiVersion \"trustform.dev/v9\" is not trustform.dev/v1alpha1",
                "apiVersion",
            ),
            (
                text(
                    "  kubernetes:\n    issuer: old\n    trust: [old, nope]\n",
                    &format!("  old: {{ fingerprint: \"{FP}\" }}\n"),
                    NODE,
                ),
                "names CA \"nope\", which is not in `cas`",
                "nope",
            ),
            (
                text(
                    "  kubernetes:\n    issuer: old\n    trust: [old, old]\n",
                    &format!("  old: {{ fingerprint: \"{FP}\" }}\n"),
                    NODE,
                ),
                "CA old is listed twice in its trust set",
                "old",
            ),
            (
                text(
                    "  kubernetes:\n    issuer: new\n    trust: [old]\n",
                    &format!(
                        "  old: {{ fingerprint: \"{FP}\" }}\n  new: {{ fingerprint: \"{FP}\" }}\n"
                    ),
                    NODE,
                ),
                "issuer new is not in its trust set",
                "new",
            ),
            (
                text(
                    "  kubernetes:\n    issuer: old\n    trust: [old]\n",
                    "  old: { fingerprint: \"sha256:abc\" }\n",
                    NODE,
                ),
                "\"sha256:abc\" is not a SHA-256 fingerprint",
                "sha256:abc",
            ),
            (
                text(
                    "  kubernetes:\n    issuer: old\n    trust: [old]\n",
                    &format!("  old: {{ fingerprint: \"{FP}\" }}\n"),
                    &node2,
                ),
                "node cp-1 is listed twice (first at line 8)",
                "cp-1",
            ),
            (
                good().replace("layout: kubeadm", "layout: kubeadm\n  colour: red"),
                "unknown field `colour`",
                "colour",
            ),
        ] {
            let (message, place) = match load_text(&t) {
                Ok(_) => panic!("accepted:\n{t}"),
                Err(e) => e,
            };
            assert!(message.contains(why), "{message} (wanted {why:?})");
            assert!(
                place.contains(at),
                "{message}: points at {place:?}, not {at:?}"
            );
        }
    }

    #[test]
    fn the_rendered_config_loads_back_to_the_same_config() {
        let l = load_text(&good()).unwrap();
        let again = load_text(&render(&l.config)).unwrap();
        assert_eq!(render(&again.config), render(&l.config));
        assert_eq!(again.config.authorities.len(), l.config.authorities.len());
    }
}
