//! Service-account tokens as kube-apiserver makes them: a JWT signed with the key of
//! `--service-account-signing-key-file` (RS256 for an RSA key, ES256 for P-256), its
//! `kid` the unpadded base64url SHA-256 of the DER public key; checked as
//! [`crate::pki::token::verify`] says (every PEM block of `--service-account-key-file`:
//! private keys count by their public half). The sandbox's kubelets hold one per pod
//! ([`super::controllers::tokens`]); its API server endpoints check the ones clients
//! present.

pub use crate::pki::token::{Bound, Claims, ISSUER, Ref, kid, unix_now, verify};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::PublicKeyData;

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

/// A signing key, parsed once: kube-apiserver's `--service-account-signing-key-file`, or
/// the controller manager's `--service-account-private-key-file`.
pub struct Signer {
    header: Header,
    key: EncodingKey,
}

impl Signer {
    /// The first key of `key_pem` (RS256 for an RSA key, ES256 for P-256).
    pub fn new(key_pem: &str) -> Result<Self, String> {
        crate::pki::token::provider();
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
        Ok(Self { header, key })
    }

    /// A token for `claims` (a pod's [`Claims`], or a legacy token's).
    pub fn sign<C: serde::Serialize>(&self, claims: &C) -> Result<String, String> {
        jsonwebtoken::encode(&self.header, claims, &self.key).map_err(|e| e.to_string())
    }
}

/// A token for `claims`, signed with the first key of `key_pem`.
pub fn sign<C: serde::Serialize>(key_pem: &str, claims: &C) -> Result<String, String> {
    Signer::new(key_pem)?.sign(claims)
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
                warnafter: None,
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
