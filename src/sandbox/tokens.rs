//! Service-account tokens as kube-apiserver makes and checks them: a JWT signed with the
//! key of `--service-account-signing-key-file` (RS256 for an RSA key, ES256 for P-256),
//! its `kid` the unpadded base64url SHA-256 of the DER public key, and accepted when one
//! public key of `--service-account-key-file` (every PEM block of the file: private
//! keys count by their public half) verifies it and it has not expired. The sandbox's
//! kubelets hold one per pod ([`super::controllers::tokens`]); its API server endpoints
//! check the ones clients present.

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rcgen::PublicKeyData;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The issuer kubeadm configures (`--service-account-issuer`).
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// kube-apiserver's answer to a request whose bearer token it does not accept.
pub const UNAUTHORIZED: &[u8] = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 128\r\nConnection: close\r\n\r\n{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Unauthorized\",\"reason\":\"Unauthorized\",\"code\":401}";

/// The token of a request header line `Authorization: Bearer <token>`.
pub fn bearer(line: &str) -> Option<String> {
    let (name, value) = line.split_once(':')?;
    if !name.trim().eq_ignore_ascii_case("authorization") {
        return None;
    }
    value
        .trim()
        .strip_prefix("Bearer ")
        .map(|t| t.trim().to_string())
}

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

fn provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// The `kid` of a public key (its SubjectPublicKeyInfo DER).
pub fn kid(spki_der: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(spki_der))
}

/// A token for `claims`, signed with the first key of `key_pem`.
pub fn sign(key_pem: &str, claims: &Claims) -> Result<String, String> {
    provider();
    let pair = rcgen::KeyPair::from_pem(key_pem).map_err(|e| format!("signing key: {e}"))?;
    let (alg, key) = if pair.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256 {
        (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()),
        )
    } else {
        (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(key_pem.as_bytes()),
        )
    };
    let key = key.map_err(|e| format!("signing key: {e}"))?;
    let mut header = Header::new(alg);
    header.kid = Some(kid(&pair.subject_public_key_info()));
    jsonwebtoken::encode(&header, claims, &key).map_err(|e| e.to_string())
}

/// Every public key of a `--service-account-key-file` (public or private PEM blocks),
/// as (kid, SPKI PEM).
pub fn public_keys(pem: &str) -> Vec<(String, String)> {
    let blocks =
        crate::pki::cert::pem_blocks(pem, "--service-account-key-file").unwrap_or_default();
    blocks
        .iter()
        .filter_map(|b| match b.label.as_str() {
            "PUBLIC KEY" => Some(b.der.clone()),
            label => rcgen::KeyPair::from_pem(&crate::pki::cert::pem_block(label, &b.der))
                .ok()
                .map(|k| k.subject_public_key_info()),
        })
        .map(|der| (kid(&der), crate::pki::cert::pem_block("PUBLIC KEY", &der)))
        .collect()
}

/// The claims of `token` when a key of `keys_pem` verifies it and it holds at `now`
/// (Unix seconds); else why not, as the API server would log it.
pub fn verify(token: &str, keys_pem: &str, now: i64) -> Result<Claims, String> {
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
            Algorithm::ES256 => DecodingKey::from_ec_pem(spki.as_bytes()),
            _ => DecodingKey::from_rsa_pem(spki.as_bytes()),
        };
        let Ok(key) = key else { continue };
        let mut v = Validation::new(header.alg);
        v.set_audience(&[ISSUER]);
        v.set_issuer(&[ISSUER]);
        v.validate_exp = false;
        if let Ok(data) = jsonwebtoken::decode::<Claims>(token, &key, &v) {
            let c = data.claims;
            if c.exp <= now {
                return Err(format!("token has expired ({} s ago)", now - c.exp));
            }
            return Ok(c);
        }
    }
    Err(format!(
        "invalid bearer token: no key of --service-account-key-file verifies it (kid {})",
        header.kid.as_deref().unwrap_or("none")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            iss: ISSUER.into(),
            sub: "system:serviceaccount:kube-system:coredns".into(),
            aud: vec![ISSUER.into()],
            iat: 1_000,
            nbf: 1_000,
            exp,
            kubernetes: Bound {
                namespace: "kube-system".into(),
                pod: Ref {
                    name: "coredns-1".into(),
                    uid: "u1".into(),
                },
                serviceaccount: Ref {
                    name: "coredns".into(),
                    uid: "u2".into(),
                },
            },
        }
    }

    #[test]
    fn the_401_answer_is_whole_and_a_bearer_header_is_read() {
        let text = std::str::from_utf8(UNAUTHORIZED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap()["code"],
            401
        );
        assert_eq!(
            bearer("authorization: Bearer a.b.c\r\n"),
            Some("a.b.c".into())
        );
        assert_eq!(bearer("Host: x"), None);
    }

    #[test]
    fn a_token_verifies_with_its_key_only_until_it_expires() {
        use crate::pki::KeyAlgorithm;
        use crate::pki::issue::generate_key;
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Rsa2048] {
            let key = generate_key(alg).unwrap();
            let other = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
            let token = sign(&key.serialize_pem(), &claims(5_000)).unwrap();
            let header = jsonwebtoken::decode_header(&token).unwrap();
            assert_eq!(header.kid, Some(kid(&key.subject_public_key_info())));
            // Its public key, alone or beside another, or its private key, verifies it.
            let both = format!("{}{}", other.public_key_pem(), key.public_key_pem());
            for file in [key.public_key_pem(), both, key.serialize_pem()] {
                assert_eq!(verify(&token, &file, 2_000), Ok(claims(5_000)));
            }
            let e = verify(&token, &other.public_key_pem(), 2_000).unwrap_err();
            assert!(e.contains("no key of --service-account-key-file"), "{e}");
            let e = verify(&token, &key.public_key_pem(), 6_000).unwrap_err();
            assert!(e.contains("expired"), "{e}");
        }
    }
}
