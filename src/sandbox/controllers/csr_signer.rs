//! The controller manager's CSR signer: every approved `CertificateSigningRequest` for a
//! `kubernetes.io/*` signer it serves, not yet issued, gets its certificate, signed with
//! the `--cluster-signing-cert-file` and `--cluster-signing-key-file` the leading
//! controller manager (the first control plane's that runs) read at its start, for
//! `--cluster-signing-duration` (default a year), or `spec.expirationSeconds` when
//! shorter. A request whose signature does not verify, or whose usages its signer does
//! not allow, gets a `Failed` condition instead. Denied and pending requests are left
//! alone, except a kubelet's own client certificate request, which the csrapproving
//! controller approves ([`auto_approve`]).

use super::{KCM, KcmLeader, Options, Passes, by, next_look, warn};
use crate::sandbox::apiserver::store::Store;
use crate::sandbox::objects;
use base64::Engine;
use serde_json::{Value, json};
use std::path::PathBuf;

/// The controller's name (its log lines, [`super::Controllers::passes`]).
pub const NAME: &str = "csr-signer";
/// `--cluster-signing-duration`'s default.
const DEFAULT_DURATION: i64 = 365 * 86_400;

/// The usages each signer the controller manager serves allows.
fn allowed(signer: &str) -> Option<&'static [&'static str]> {
    Some(match signer {
        "kubernetes.io/kube-apiserver-client" | "kubernetes.io/kube-apiserver-client-kubelet" => {
            &["digital signature", "key encipherment", "client auth"]
        }
        "kubernetes.io/kubelet-serving" => {
            &["digital signature", "key encipherment", "server auth"]
        }
        "kubernetes.io/legacy-unknown" => &[
            "digital signature",
            "key encipherment",
            "client auth",
            "server auth",
        ],
        _ => return None,
    })
}

/// What the leader signs with: its CA certificate and key (PEM), and the duration.
struct Signing {
    cert: String,
    key: String,
    duration: i64,
}

/// Run until aborted.
pub(super) async fn run(dir: PathBuf, store: Store, options: Options, passes: Passes) {
    let mut leader = KcmLeader::new(&dir, options.poll).await;
    let mut rx = store.subscribe();
    let mut tick = tokio::time::interval(options.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = true;
    loop {
        let Some(batch) = next_look(&mut tick, &mut rx).await else {
            return;
        };
        let restarted = leader.poll();
        let changed = batch.lagged
            || batch
                .events
                .iter()
                .any(|e| e.resource == "certificatesigningrequests");
        if changed || restarted || pending {
            let signing = leader.held().and_then(|held| {
                let flags = held.flags(KCM);
                let file = |flag: &str| String::from_utf8(held.file(flags.get(flag)?)?).ok();
                Some(Signing {
                    cert: file("cluster-signing-cert-file")?,
                    key: file("cluster-signing-key-file")?,
                    duration: flags
                        .get("cluster-signing-duration")
                        .and_then(|d| humantime::parse_duration(d).ok())
                        .map_or(DEFAULT_DURATION, |d| d.as_secs() as i64),
                })
            });
            pending = match signing {
                None => true,
                Some(s) => {
                    let st = store.clone();
                    tokio::task::spawn_blocking(move || sign_all(&st, &s))
                        .await
                        .unwrap_or(true)
                }
            };
        }
        passes.done(NAME);
    }
}

fn has_condition(csr: &Value, kind: &str) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == kind))
}

/// The controller manager's csrapproving controller, for what a kubelet asks by itself:
/// a pending `kube-apiserver-client-kubelet` request from `system:node:<n>` for
/// `CN=system:node:<n>, O=system:nodes`, client usages only, no subjectAltName, is
/// approved ("selfnodeclient"); every other request is left to its approvers.
fn auto_approve(store: &Store) {
    let pending = store
        .list_page("certificatesigningrequests", None, None, None, &|c| {
            c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet"
                && c["status"]["conditions"]
                    .as_array()
                    .is_none_or(|v| v.is_empty())
        })
        .items;
    for csr in pending {
        if !self_node_client(&csr) {
            continue;
        }
        let name = objects::name(&csr).to_string();
        let r = store.mutate_with(
            "certificatesigningrequests",
            None,
            &name,
            &by(KCM, Some("approval")),
            |c| {
                c["status"]["conditions"] = json!([{
                    "type": "Approved",
                    "status": "True",
                    "reason": "AutoApproved",
                    "message": "Auto approving self kubelet client certificate after SubjectAccessReview.",
                    "lastUpdateTime": objects::now(),
                }]);
                Ok(())
            },
        );
        if let Err(e) = r {
            warn(NAME, format!("{name}: {e}"));
        }
    }
}

/// Whether a request is a kubelet's own client certificate, asked by that node.
fn self_node_client(csr: &Value) -> bool {
    let usages: Vec<&str> = csr["spec"]["usages"]
        .as_array()
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !usages.contains(&"client auth")
        || usages
            .iter()
            .any(|u| !["digital signature", "key encipherment", "client auth"].contains(u))
    {
        return false;
    }
    let Some(der) = request_der(csr) else {
        return false;
    };
    use x509_parser::prelude::FromDer;
    let Ok((_, req)) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
    else {
        return false;
    };
    let subject = &req.certification_request_info.subject;
    let cns: Vec<&str> = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let orgs: Vec<&str> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .collect();
    let no_sans = req.requested_extensions().is_none_or(|mut e| {
        !e.any(|x| {
            matches!(
                x,
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(_)
            )
        })
    });
    matches!(cns.as_slice(), [cn] if cn.starts_with("system:node:")
        && csr["spec"]["username"].as_str() == Some(*cn))
        && orgs == ["system:nodes"]
        && no_sans
        && req.verify_signature().is_ok()
}

/// The PKCS#10 request of a CertificateSigningRequest (DER).
fn request_der(csr: &Value) -> Option<Vec<u8>> {
    let pem = base64::engine::general_purpose::STANDARD
        .decode(csr["spec"]["request"].as_str()?)
        .ok()?;
    let pem = String::from_utf8(pem).ok()?;
    crate::pki::cert::pem_blocks(&pem, "spec.request")
        .ok()?
        .into_iter()
        .find(|b| b.label == "CERTIFICATE REQUEST")
        .map(|b| b.der)
}

/// Issue every approved, unissued request; true when the signing key was unusable.
fn sign_all(store: &Store, s: &Signing) -> bool {
    auto_approve(store);
    let todo = store
        .list_page("certificatesigningrequests", None, None, None, &|c| {
            has_condition(c, "Approved")
                && !has_condition(c, "Failed")
                && c["status"]["certificate"]
                    .as_str()
                    .is_none_or(str::is_empty)
                && c["spec"]["signerName"]
                    .as_str()
                    .is_some_and(|n| allowed(n).is_some())
        })
        .items;
    if todo.is_empty() {
        return false;
    }
    let Ok(key) = rcgen::KeyPair::from_pem(&s.key) else {
        warn(NAME, "the cluster signing key cannot be read");
        return true;
    };
    let Ok(issuer) = rcgen::Issuer::from_ca_cert_pem(&s.cert, &key) else {
        warn(NAME, "the cluster signing certificate cannot be read");
        return true;
    };
    for csr in todo {
        let name = objects::name(&csr).to_string();
        let status = match issue(&csr, &issuer, s.duration) {
            Ok(pem) => json!({ "certificate": objects::b64(pem.as_bytes()) }),
            Err(why) => json!({ "conditions": [{
                "type": "Failed",
                "status": "True",
                "reason": "SignerValidationFailure",
                "message": why,
                "lastUpdateTime": objects::now(),
            }]}),
        };
        let r = store.mutate_with(
            "certificatesigningrequests",
            None,
            &name,
            &by(KCM, Some("status")),
            |c| {
                if let Some(cert) = status.get("certificate") {
                    c["status"]["certificate"] = cert.clone();
                } else if let Some(conds) = c["status"]["conditions"].as_array_mut() {
                    conds.extend(status["conditions"].as_array().cloned().unwrap_or_default());
                }
                Ok(())
            },
        );
        if let Err(e) = r {
            warn(NAME, format!("{name}: {e}"));
        }
    }
    false
}

/// The certificate for one approved request (PEM), or why it cannot be signed.
fn issue(
    csr: &Value,
    issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>,
    duration: i64,
) -> Result<String, String> {
    let signer = csr["spec"]["signerName"].as_str().unwrap_or_default();
    let ok = allowed(signer).unwrap_or_default();
    let usages: Vec<&str> = csr["spec"]["usages"]
        .as_array()
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(bad) = usages.iter().find(|u| !ok.contains(u)) {
        return Err(format!("signer {signer} does not allow the usage {bad:?}"));
    }
    let der = request_der(csr).ok_or("spec.request holds no PEM CERTIFICATE REQUEST")?;
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| format!("the request cannot be parsed: {e}"))?;
    parsed
        .verify_signature()
        .map_err(|_| "the request's signature does not verify with its public key".to_string())?;
    let mut params = rcgen::CertificateSigningRequestParams::from_der(&der.clone().into())
        .map_err(|e| format!("the request cannot be read: {e}"))?;
    // The API server refuses less than ten minutes; a duration is at most a century.
    let duration = duration.clamp(600, 100 * 365 * 86_400);
    let seconds = csr["spec"]["expirationSeconds"]
        .as_i64()
        .map_or(duration, |e| e.clamp(600, duration));
    let now = time::OffsetDateTime::now_utc();
    params.params.not_before = now - time::Duration::minutes(5);
    params.params.not_after = now + time::Duration::seconds(seconds);
    params.params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.params.key_usages = usages
        .iter()
        .filter_map(|u| match *u {
            "digital signature" => Some(rcgen::KeyUsagePurpose::DigitalSignature),
            "key encipherment" => Some(rcgen::KeyUsagePurpose::KeyEncipherment),
            _ => None,
        })
        .collect();
    params.params.extended_key_usages = usages
        .iter()
        .filter_map(|u| match *u {
            "server auth" => Some(rcgen::ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => Some(rcgen::ExtendedKeyUsagePurpose::ClientAuth),
            _ => None,
        })
        .collect();
    params.params.use_authority_key_identifier_extension = true;
    params
        .signed_by(issuer)
        .map(|c| c.pem())
        .map_err(|e| format!("signing failed: {e}"))
}
