//! How trustform talks to the Kubernetes API: kube-rs clients built from the kubeconfig
//! that `trustform.yaml` names (or `KUBECONFIG`, as kubectl does), every call retried with
//! backoff on 429, 5xx, 409 and transport errors, every list paginated.
//!
//! Each use builds a fresh client from the kubeconfig as it is on disk *now*: an apply
//! rewrites the admin kubeconfig (documented step 7) and the next call must present the
//! new client certificate.

pub mod cluster;
pub mod csr;
pub mod lease;
pub mod node;
pub mod publish;
pub mod rollout;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{ListParams, ObjectList};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use miette::Diagnostic;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Page size of every list (the API server's own default chunk size for kubectl).
pub const PAGE: u32 = 500;

/// Errors of the Kubernetes API side.
#[derive(Debug, Error, Diagnostic)]
pub enum KubeError {
    /// The kubeconfig cannot be read or has no usable context.
    #[error("kubeconfig {path}: {reason}")]
    #[diagnostic(
        code(trustform::kube::kubeconfig),
        help(
            "set `inventory.kube.kubeconfig` (and `context`) in trustform.yaml, or KUBECONFIG, to a kubeconfig that reaches the cluster"
        )
    )]
    Kubeconfig {
        /// The kubeconfig (or `KUBECONFIG`).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The API server cannot be reached or refuses the client.
    #[error("cannot reach the API server at {server} ({via}): {reason}")]
    #[diagnostic(
        code(trustform::kube::unreachable),
        help(
            "is the API server up and does it trust the kubeconfig's client certificate? For the sandbox: `trustform sandbox up DIR`; `kubectl --kubeconfig … get --raw /healthz` tells the same"
        )
    )]
    Unreachable {
        /// Server URL.
        server: String,
        /// Kubeconfig and context.
        via: String,
        /// The last error.
        reason: String,
    },
    /// The API answered with an error that retrying does not fix.
    #[error("{what}: the API server answered {code} {reason}: {message}")]
    #[diagnostic(
        code(trustform::kube::api),
        help(
            "fix the cause the API server names, then run `trustform apply` again: it resumes at this step"
        )
    )]
    Api {
        /// What trustform was doing.
        what: String,
        /// HTTP status.
        code: u16,
        /// Kubernetes reason.
        reason: String,
        /// Message.
        message: String,
    },
    /// A wait ran out of time.
    #[error("{what}: not done after {waited}; still waiting for {laggards}")]
    #[diagnostic(
        code(trustform::kube::timeout),
        help(
            "look at the objects named (kubectl describe …); raise --wait-timeout if they are just slow; `trustform apply` resumes at this step"
        )
    )]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: String,
        /// Who is late (the first few, and how many).
        laggards: String,
    },
}

/// Where the API is: a kubeconfig and a context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// Kubeconfig files (several when `KUBECONFIG` lists several, merged as kubectl does).
    pub kubeconfigs: Vec<PathBuf>,
    /// Context (`None`: the current context).
    pub context: Option<String>,
}

impl Access {
    /// Resolve `inventory.kube`: a relative path is relative to `base` (trustform.yaml's
    /// folder), `~/` is the home folder; no path means `KUBECONFIG`, then `~/.kube/config`.
    pub fn resolve(kubeconfig: Option<&str>, context: Option<&str>, base: &Path) -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let expand = |p: &str| -> PathBuf {
            match (p.strip_prefix("~/"), &home) {
                (Some(rest), Some(h)) => h.join(rest),
                _ => base.join(p),
            }
        };
        let kubeconfigs = match kubeconfig {
            Some(p) => vec![expand(p)],
            None => match std::env::var("KUBECONFIG") {
                Ok(v) if !v.trim().is_empty() => {
                    std::env::split_paths(&v).map(|p| base.join(p)).collect()
                }
                _ => vec![expand("~/.kube/config")],
            },
        };
        Self {
            kubeconfigs,
            context: context.map(str::to_string),
        }
    }

    /// The access of trustform.yaml's `inventory.kube`, resolved; `None` when not set.
    pub fn of(loaded: &crate::config::Loaded) -> Option<Self> {
        let k = loaded.config.inventory.kube.as_ref()?;
        Some(Self::resolve(
            k.kubeconfig.as_deref(),
            k.context.as_deref(),
            &loaded.dir,
        ))
    }

    /// "admin.conf, context kubernetes-admin@kubernetes", for messages.
    pub fn describe(&self) -> String {
        let files: Vec<String> = self
            .kubeconfigs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        match &self.context {
            Some(c) => format!("{}, context {c}", files.join(":")),
            None => format!("{}, current context", files.join(":")),
        }
    }

    fn kubeconfig_error(&self, reason: impl ToString) -> KubeError {
        KubeError::Kubeconfig {
            path: self.describe(),
            reason: reason.to_string(),
        }
    }

    /// A client, from the kubeconfig as it is now.
    pub async fn client(&self) -> Result<Client, KubeError> {
        let mut merged: Option<Kubeconfig> = None;
        for path in &self.kubeconfigs {
            let k = Kubeconfig::read_from(path).map_err(|e| self.kubeconfig_error(e))?;
            merged = Some(match merged {
                None => k,
                Some(m) => m.merge(k).map_err(|e| self.kubeconfig_error(e))?,
            });
        }
        let kubeconfig = merged.ok_or_else(|| self.kubeconfig_error("no kubeconfig file"))?;
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| self.kubeconfig_error(e))?;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        config.write_timeout = Some(Duration::from_secs(30));
        Client::try_from(config).map_err(|e| self.kubeconfig_error(e))
    }

    /// The API server URL of the chosen context.
    pub fn server(&self) -> String {
        let read = || -> Option<String> {
            let k = Kubeconfig::read_from(self.kubeconfigs.first()?).ok()?;
            let ctx_name = self.context.clone().or(k.current_context.clone())?;
            let ctx = k.contexts.iter().find(|c| c.name == ctx_name)?;
            let cluster = ctx.context.as_ref()?.cluster.clone();
            k.clusters
                .iter()
                .find(|c| c.name == cluster)?
                .cluster
                .as_ref()?
                .server
                .clone()
        };
        read().unwrap_or_else(|| "(unknown server)".into())
    }

    /// Reach the API (`/version`): the error names the server and the cause.
    pub async fn connect(&self) -> Result<Client, KubeError> {
        let client = self.client().await?;
        let c = client.clone();
        retry_quick("GET /version", || {
            let c = c.clone();
            async move { c.apiserver_version().await }
        })
        .await
        .map_err(|e| KubeError::Unreachable {
            server: self.server(),
            via: self.describe(),
            reason: e.to_string(),
        })?;
        Ok(client)
    }
}

/// Run a future to completion from synchronous code: on the caller's runtime when
/// there is one (a `spawn_blocking` thread), else on a new current-thread runtime.
pub fn block<F: Future>(f: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(h) => h.block_on(f),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime starts")
            .block_on(f),
    }
}

/// Is this error worth another try? 429, 5xx, 409 Conflict (the caller re-reads), and
/// anything that never got an answer (connection refused or reset, timeouts).
pub fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            s.code == 429 || s.code >= 500 || (s.code == 409 && s.reason != "AlreadyExists")
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// How long retries go on before the error is final.
const RETRY_BUDGET: Duration = Duration::from_secs(30);

/// Call `f` until it succeeds, a non-retryable error comes, or [`RETRY_BUDGET`] is
/// spent; backoff doubles from 50 ms to 2 s. `what` names the call in the final error.
pub async fn retry<T, F, Fut>(what: &str, f: F) -> Result<T, KubeError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    retry_for(what, RETRY_BUDGET, f)
        .await
        .map_err(|e| api_error(what, &e))
}

/// [`retry`] with a short budget, for the first contact.
async fn retry_quick<T, F, Fut>(what: &str, f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    retry_for(what, Duration::from_secs(5), f).await
}

async fn retry_for<T, F, Fut>(_what: &str, budget: Duration, mut f: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) && start.elapsed() + delay < budget => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A kube error as ours.
pub fn api_error(what: &str, e: &kube::Error) -> KubeError {
    match e {
        kube::Error::Api(s) => KubeError::Api {
            what: what.to_string(),
            code: s.code,
            reason: s.reason.clone(),
            message: s.message.clone(),
        },
        other => KubeError::Api {
            what: what.to_string(),
            code: 0,
            reason: "no answer".into(),
            message: other.to_string(),
        },
    }
}

/// Is this a 404?
pub fn is_not_found(e: &KubeError) -> bool {
    matches!(e, KubeError::Api { code: 404, .. })
}

/// Every object of a list, page by page ([`PAGE`] per page), each page retried.
pub async fn list_all<K>(api: &Api<K>, params: &ListParams, what: &str) -> Result<Vec<K>, KubeError>
where
    K: Clone + DeserializeOwned + Debug,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = params.clone().limit(PAGE);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page: ObjectList<K> = retry(what, || api.list(&lp)).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(out),
        }
    }
}

/// `Api::all` for a namespaced kind (every namespace).
pub fn all<K>(client: &Client) -> Api<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    Api::all(client.clone())
}

/// The laggard list of a timeout: the first five, and how many in all.
pub fn laggards(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    if names.len() > shown.len() {
        format!(
            "{} and {} more",
            shown.join(", "),
            names.len() - shown.len()
        )
    } else {
        shown.join(", ")
    }
}
