//! `trustform rotate AUTHORITY`: generate the new CA now, then move the authority to its
//! next stage (pre-rotate → rotate → post-rotate), or `--to-end` straight to the end.

use super::Exit;
use super::init::{config_dir, write_config, write_config_text};
use crate::config::{self, Authority, CaSpec, spanned};
use crate::pki::{KeyAlgorithm, issue::new_ca};
use crate::procedure::Stage;
use std::path::Path;

/// `rotate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The authority: kubernetes, front-proxy, etcd or service-account.
    pub authority: String,
    /// Go to this stage (default: the next one).
    #[arg(long, value_enum, conflicts_with = "to_end")]
    pub stage: Option<StageArg>,
    /// Go straight to the final state; the planner inserts the safe stages itself.
    #[arg(long)]
    pub to_end: bool,
    /// Key algorithm of a generated CA (default: `issuance.keyAlgorithm` in trustform.yaml,
    /// else rsa-2048).
    #[arg(long, value_enum)]
    pub algorithm: Option<super::sandbox::Alg>,
}

/// Stages on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum StageArg {
    /// Trust old and new; old still signs.
    PreRotate,
    /// New signs; both trusted.
    Rotate,
    /// Only new.
    PostRotate,
}

/// Run.
pub fn run(a: Args, path: &Path) -> miette::Result<Exit> {
    // An authority can rotate when a procedure rotates it.
    let rotatable: Vec<Authority> = crate::procedure::load_all()?
        .iter()
        .filter_map(|p| p.authority)
        .collect();
    let auth = Authority::parse(&a.authority)
        .filter(|a| rotatable.contains(a))
        .ok_or_else(|| {
            let names: Vec<&str> = rotatable.iter().map(|a| a.name()).collect();
            miette::miette!(
                code = "trustform::rotate::authority",
                help = format!("use one of: {}", names.join(", ")),
                "no procedure rotates authority {:?}",
                a.authority
            )
        })?;
    let loaded = config::load(path)?;
    let mut c = loaded.config.clone();
    let Some(spec) = c.authorities.get(&auth).cloned() else {
        return Err(miette::miette!(
            code = "trustform::rotate::not_configured",
            help = "run `trustform init` to describe the cluster first",
            "{} has no authority {auth}",
            path.display()
        ));
    };
    let issuer = spec.issuer.value.clone();
    let trust: Vec<String> = spec.trust.iter().map(|t| t.value.clone()).collect();
    let settled = trust == [issuer.clone()];
    // The `cas` entry rotate adds (a new CA), if any.
    let mut added: Option<String> = None;
    // (old, new): the CA being retired and the one replacing it.
    let (old, new) = if settled {
        let date = time::OffsetDateTime::now_utc().date();
        let dir = config_dir(path);
        let base = format!("{}-{}", auth.name(), date);
        let mut name = base.clone();
        let mut n = 2;
        // A name no CA has: not in `cas`, and no certificate or key file of that name
        // (`init --force` forgets names whose files still hold the cluster's CA).
        while c.cas.contains_key(&name)
            || ["crt", "pub"].iter().any(|ext| {
                dir.join(format!("cas/{name}.{ext}"))
                    .symlink_metadata()
                    .is_ok()
            })
            || dir
                .join(format!(".trustform/keys/{name}.key"))
                .symlink_metadata()
                .is_ok()
        {
            name = format!("{base}-{n}");
            n += 1;
        }
        let alg: KeyAlgorithm = a
            .algorithm
            .map(Into::into)
            .unwrap_or(c.issuance.key_algorithm);
        let cn = match auth {
            Authority::Kubernetes => format!("kubernetes-{date}"),
            Authority::FrontProxy => format!("front-proxy-ca-{date}"),
            Authority::Etcd => format!("etcd-ca-{date}"),
            Authority::ServiceAccount => String::new(),
        };
        // A CA: its certificate; a service-account key: its public key (both public,
        // committable), beside the private key (0600, git-ignored).
        let (public_pem, key, public_rel) = if auth.keys_only() {
            let pair = crate::pki::issue::generate_key(alg)?;
            (
                pair.public_key_pem(),
                crate::pki::SecretPem::new(pair.serialize_pem()),
                format!("cas/{name}.pub"),
            )
        } else {
            let ca = new_ca(&cn, alg, 3650)?;
            (ca.cert_pem, ca.key, format!("cas/{name}.crt"))
        };
        let key_rel = format!(".trustform/keys/{name}.key");
        let in_the_way = |rel: &str, e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                miette::miette!(
                    code = "trustform::rotate::in_the_way",
                    help = "trustform never overwrites a CA file: move it aside if it is not a CA the cluster uses, then run `trustform rotate` again",
                    "{rel} appeared while the new CA was written; nothing was replaced"
                )
            } else {
                miette::miette!(code = "trustform::io", "cannot write {rel}: {e}")
            }
        };
        crate::atomic::write_new(
            &dir.join(&key_rel),
            key.expose().as_bytes(),
            crate::atomic::KEY_MODE,
        )
        .map_err(|e| in_the_way(&key_rel, e))?;
        if let Err(e) = crate::atomic::write_new(
            &dir.join(&public_rel),
            public_pem.as_bytes(),
            crate::atomic::PUBLIC_MODE,
        ) {
            // The key is ours, written a moment ago and named nowhere: take it back.
            let _ = std::fs::remove_file(dir.join(&key_rel));
            return Err(in_the_way(&public_rel, e));
        }
        let fp = if auth.keys_only() {
            crate::pki::public_key_fingerprint(&key, &key_rel)?
        } else {
            crate::pki::parse_certs(&public_pem, &public_rel)?
                .remove(0)
                .facts
                .fingerprint
        };
        crate::verbosity::note(format_args!(
            "Generated {} {name} ({}): {public_rel} (commit it); key {key_rel} (0600, git-ignored).",
            if auth.keys_only() {
                "service-account key"
            } else {
                "CA"
            },
            fp.short()
        ));
        let spanned_public = Some(spanned(public_rel));
        let (cert, public_key) = if auth.keys_only() {
            (None, spanned_public)
        } else {
            (spanned_public, None)
        };
        c.cas.insert(
            name.clone(),
            CaSpec {
                fingerprint: None,
                cert,
                key: Some(key_rel),
                algorithm: a.algorithm.map(Into::into),
                public_key,
            },
        );
        added = Some(name.clone());
        (issuer.clone(), name)
    } else if let [x, y] = trust.as_slice()
        && x != y
    {
        let other = if *x == issuer { y.clone() } else { x.clone() };
        // Which one is new? The one with a generated key file (rotate made it).
        if c.cas.get(&issuer).is_some_and(|s| s.key.is_some()) {
            (other, issuer.clone())
        } else {
            (issuer.clone(), other)
        }
    } else {
        return Err(miette::miette!(
            code = "trustform::rotate::shape",
            help = "edit `authorities.{auth}` by hand: trustform rotate handles one old and one new CA",
            "authority {auth} trusts {} CAs; cannot tell which one is new",
            trust.len()
        ));
    };
    let current_stage = if issuer == old {
        Stage::PreRotate
    } else {
        Stage::Rotate
    };
    let to = if a.to_end {
        Stage::PostRotate
    } else if let Some(s) = a.stage {
        match s {
            StageArg::PreRotate => Stage::PreRotate,
            StageArg::Rotate => Stage::Rotate,
            StageArg::PostRotate => Stage::PostRotate,
        }
    } else if settled {
        Stage::PreRotate
    } else if current_stage == Stage::PreRotate {
        Stage::Rotate
    } else {
        Stage::PostRotate
    };
    let (new_issuer, new_trust) = match to {
        Stage::PreRotate => (old.clone(), vec![old.clone(), new.clone()]),
        Stage::Rotate => (new.clone(), vec![old.clone(), new.clone()]),
        Stage::PostRotate => (new.clone(), vec![new.clone()]),
    };
    let entry = c.authorities.get_mut(&auth).expect("checked above");
    entry.issuer = spanned(new_issuer.clone());
    entry.trust = new_trust.iter().cloned().map(spanned).collect();
    // Only the values that change, in the text as it is: comments and layout stay.
    let new_ca = added.as_deref().and_then(|n| Some((n, c.cas.get(n)?)));
    match crate::config_edit::rotate(&loaded.text, &loaded.config, &c, auth, new_ca) {
        Some(text) => write_config_text(path, &text)?,
        None => {
            crate::verbosity::note(format_args!(
                "Note: {} is rewritten in trustform's layout: its authorities or `cas` are written in a form rotate does not edit in place (anchors, flow mappings); `trustform fmt` shows that layout.",
                path.display()
            ));
            write_config(path, &c)?;
        }
    }
    crate::verbosity::note(format_args!(
        "{}: authority {auth} → {} (issuer {new_issuer}, trust [{}]). Review with `trustform plan`.",
        path.display(),
        to.name(),
        new_trust.join(", ")
    ));
    Ok(Exit::Ok)
}
