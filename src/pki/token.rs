//! Service-account tokens as kube-apiserver makes and checks them: a JWT whose `kid` is
//! the unpadded base64url SHA-256 of the signing key's SubjectPublicKeyInfo, accepted
//! when one public key of `--service-account-key-file` verifies it and it has not
//! expired.
//!
//! trustform reads a token only to learn which key signed it and when it was issued and
//! expires ([`facts`]); the token itself is never printed, logged or stored.

use super::Fingerprint;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The issuer kubeadm configures (`--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// What a pod's token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `--service-account-issuer`.
    pub iss: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub sub: String,
    /// The audiences (the issuer, for the API server).
    pub aud: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires (Unix seconds).
    pub exp: i64,
    /// The pod and service account it is bound to.
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: Bound,
}

/// What a token is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bound {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub pod: Ref,
    /// Its service account.
    pub serviceaccount: Ref,
    /// When the lifetime the kubelet asked for ends, for a token the API server extended
    /// to a year (`--service-account-extend-token-expiration`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// A name and uid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ref {
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
}

/// Now, in Unix seconds (what `iat` and `exp` count).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// The `kid` of a public key (its SubjectPublicKeyInfo DER).
pub fn kid(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
}

/// The public key a `kid` names, as trustform names keys (`sha256:` of the
/// SubjectPublicKeyInfo); `None` when it is not such a digest.
pub fn key_of_kid(kid: &str) -> Option<Fingerprint> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(kid.trim_end_matches('='))
        .ok()?;
    (raw.len() == 32).then(|| Fingerprint(format!("sha256:{}", hex::encode(raw))))
}

/// Every public key of a `--service-account-key-file` (public or private PEM blocks),
/// as (kid, SPKI PEM).
pub fn public_keys(pem: &str) -> Vec<(String, String)> {
    let blocks = super::cert::pem_blocks(pem, "--service-account-key-file").unwrap_or_default();
    blocks
        .iter()
        .filter_map(|b| match b.label.as_str() {
            "PUBLIC KEY" => Some(b.der.clone()),
            label if label.ends_with("PRIVATE KEY") => {
                use rcgen::PublicKeyData;
                rcgen::KeyPair::from_pem(&super::cert::pem_block(label, &b.der))
                    .ok()
                    .map(|k| k.subject_public_key_info())
            }
            _ => None,
        })
        .map(|der| (kid(&der), super::cert::pem_block("PUBLIC KEY", &der)))
        .collect()
}

/// The claims of `token` when a key of `keys_pem` verifies it and it holds at `now`
/// (Unix seconds), for kubeadm's issuer and audience ([`ISSUER`]); else why not, as the
/// API server would log it.
pub fn verify(token: &str, keys_pem: &str, now: i64) -> Result<Claims, String> {
    check(token, keys_pem, now, true).and_then(|v| {
        serde_json::from_value(v).map_err(|e| format!("not a service-account token: {e}"))
    })
}

/// Whether a key of `keys_pem` verifies `token` and it has not expired at `now`, whatever
/// its issuer and audiences (a cluster's `--service-account-issuer`, a projected token
/// for Vault or a mesh): what a key rotation must keep true.
pub fn verify_signature(token: &str, keys_pem: &str, now: i64) -> Result<(), String> {
    check(token, keys_pem, now, false).map(drop)
}

fn check(
    token: &str,
    keys_pem: &str,
    now: i64,
    kubeadm: bool,
) -> Result<serde_json::Value, String> {
    provider();
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
    let keys = public_keys(keys_pem);
    // Keys whose kid matches first, as kube-apiserver narrows them.
    let mut ordered: Vec<&(String, String)> = keys
        .iter()
        .filter(|(k, _)| Some(k) == header.kid.as_ref())
        .collect();
    ordered.extend(keys.iter().filter(|(k, _)| Some(k) != header.kid.as_ref()));
    for (_, spki) in ordered {
        let key = match header.alg {
            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(spki.as_bytes()),
            _ => DecodingKey::from_rsa_pem(spki.as_bytes()),
        };
        let Ok(key) = key else { continue };
        let mut v = Validation::new(header.alg);
        if kubeadm {
            v.set_audience(&[ISSUER]);
            v.set_issuer(&[ISSUER]);
        } else {
            v.validate_aud = false;
        }
        v.validate_exp = false;
        v.required_spec_claims.clear();
        if let Ok(data) = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v) {
            let c = data.claims;
            if let Some(exp) = c["exp"].as_i64()
                && exp <= now
            {
                return Err(format!(
                    "token has expired ({} s ago)",
                    now.saturating_sub(exp)
                ));
            }
            return Ok(c);
        }
    }
    Err(format!(
        "invalid bearer token: no key of --service-account-key-file verifies it (kid {})",
        header.kid.as_deref().unwrap_or("none")
    ))
}

/// The key that signed a token (its header's `kid`), read without checking anything: a
/// legacy token secret's token has no expiry and names no pod.
pub fn key_of(token: &str) -> Option<Fingerprint> {
    jsonwebtoken::decode_header(token.trim())
        .ok()?
        .kid
        .as_deref()
        .and_then(key_of_kid)
}

/// What trustform keeps of a token: never the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The key that signed it (from its `kid`), when the kid is a key digest.
    pub key: Option<Fingerprint>,
    /// `namespace/name` of the pod it is bound to, when it is bound to one.
    pub pod: Option<String>,
    /// Issued at (Unix seconds).
    pub issued: i64,
    /// Expires (Unix seconds).
    pub expires: i64,
    /// `kubernetes.io.warnafter` (Unix seconds): an API server with
    /// `--service-account-extend-token-expiration` (the default) makes the kubelet's
    /// one-hour tokens valid for a year, and says here when the hour ends. The kubelet
    /// refreshes by the hour it asked for.
    pub warn_after: Option<i64>,
}

impl Facts {
    /// The end of the lifetime the kubelet asked for: `warnafter` for an extended
    /// token, else its expiry.
    pub fn lifetime_end(&self) -> i64 {
        self.warn_after.unwrap_or(self.expires)
    }
}

/// The facts of a token, read without checking its signature (the gate and the API
/// servers check it): `None` when it is not a JWT.
pub fn facts(token: &str) -> Option<Facts> {
    let header = jsonwebtoken::decode_header(token.trim()).ok()?;
    let payload = token.trim().split('.').nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let k = &v["kubernetes.io"];
    let pod = match (k["namespace"].as_str(), k["pod"]["name"].as_str()) {
        (Some(ns), Some(name)) => Some(format!("{ns}/{name}")),
        _ => None,
    };
    Some(Facts {
        key: header.kid.as_deref().and_then(key_of_kid),
        pod,
        issued: v["iat"].as_i64()?,
        expires: v["exp"].as_i64()?,
        warn_after: k["warnafter"].as_i64(),
    })
}

/// When the kubelet refreshes a token issued at `iat` that expires at `exp`: at 80% of
/// its lifetime, and at the latest 24 hours after it was issued.
pub fn refresh_at(iat: i64, exp: i64) -> i64 {
    let ttl = exp.saturating_sub(iat).max(0);
    iat.saturating_add((ttl.saturating_mul(4) / 5).min(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    fn token(claims: &serde_json::Value) -> (String, Fingerprint) {
        provider();
        let key = crate::pki::issue::generate_key(crate::pki::KeyAlgorithm::EcdsaP256).unwrap();
        let spki = key.subject_public_key_info();
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(kid(&spki));
        let enc = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        (
            jsonwebtoken::encode(&header, claims, &enc).unwrap(),
            Fingerprint::of(&spki),
        )
    }

    #[test]
    fn a_tokens_kid_names_its_key_as_trustform_fingerprints_it() {
        let (t, fp) = token(&serde_json::json!({
            "iat": 1_000, "exp": 1_000 + 31_536_000,
            "kubernetes.io": { "namespace": "kube-system", "pod": { "name": "coredns-1", "uid": "u" },
                               "warnafter": 4_607 },
        }));
        let f = facts(&t).unwrap();
        assert_eq!(f.key, Some(fp));
        assert_eq!(f.pod.as_deref(), Some("kube-system/coredns-1"));
        assert_eq!(
            (f.issued, f.expires, f.warn_after),
            (1_000, 31_537_000, Some(4_607))
        );
        // An extended token is refreshed by the hour the kubelet asked for.
        assert_eq!(refresh_at(f.issued, f.lifetime_end()), 1_000 + 2_885);
        assert!(facts("not.a.token").is_none());
        assert_eq!(key_of_kid("short"), None);
    }

    #[test]
    fn the_kubelet_refreshes_at_80_percent_and_within_a_day() {
        assert_eq!(refresh_at(0, 3_600), 2_880);
        assert_eq!(refresh_at(0, 7 * 86_400), 86_400);
        assert_eq!(refresh_at(100, 50), 100);
    }
}
