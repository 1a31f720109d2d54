//! Issuance with rcgen: CAs and leaves, RSA-2048 (kubeadm's choice) or ECDSA P-256.

use super::{CertFacts, PkiError, SecretPem};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// Key algorithm of a generated key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    /// RSA 2048 with SHA-256, what kubeadm generates.
    #[default]
    #[serde(rename = "rsa-2048")]
    Rsa2048,
    /// ECDSA P-256 with SHA-256.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
}

/// Generate a key pair.
pub fn generate_key(alg: KeyAlgorithm) -> Result<KeyPair, PkiError> {
    let res = match alg {
        KeyAlgorithm::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        }
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
    };
    res.map_err(|e| PkiError::Issue {
        what: "key pair".into(),
        reason: e.to_string(),
    })
}

/// A CA certificate with its key.
#[derive(Clone, Debug)]
pub struct CaMaterial {
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA key, PEM.
    pub key: SecretPem,
}

/// What a leaf certificate must carry. Mirrors [`CertFacts`] so a leaf can be re-issued
/// from what was observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject CN.
    pub common_name: String,
    /// Subject O (Kubernetes groups).
    pub organizations: Vec<String>,
    /// `DNS:name` or `IP:addr`.
    pub sans: Vec<String>,
    /// Key usages, in [`CertFacts`] naming.
    pub key_usage: Vec<String>,
    /// Extended key usages, in [`CertFacts`] naming.
    pub ext_key_usage: Vec<String>,
    /// Lifetime in days.
    pub days: i64,
}

/// The shortest lifetime of a renewed leaf, in days: kubeadm's
/// `certificateValidityPeriod` (one year).
pub const RENEWED_DAYS: i64 = 365;

impl LeafSpec {
    /// The spec that re-issues an observed leaf with the same identity and lifetime.
    pub fn from_facts(facts: &CertFacts) -> Self {
        let parse = crate::clock::parse;
        let days = match (parse(&facts.not_before), parse(&facts.not_after)) {
            (Some(a), Some(b)) => (b - a).whole_days().max(1),
            _ => 365,
        };
        Self {
            common_name: facts.common_name.clone(),
            organizations: facts.organizations.clone(),
            sans: facts.sans.clone(),
            key_usage: facts.key_usage.clone(),
            ext_key_usage: facts.ext_key_usage.clone(),
            days,
        }
    }

    /// A client certificate (clientAuth).
    pub fn client(cn: &str, orgs: &[&str]) -> Self {
        Self {
            common_name: cn.into(),
            organizations: orgs.iter().map(|s| s.to_string()).collect(),
            sans: vec![],
            key_usage: vec!["digitalSignature".into(), "keyEncipherment".into()],
            ext_key_usage: vec!["clientAuth".into()],
            days: 365,
        }
    }

    /// A serving certificate (serverAuth) with SANs.
    pub fn server(cn: &str, sans: Vec<String>) -> Self {
        Self {
            common_name: cn.into(),
            organizations: vec![],
            sans,
            key_usage: vec!["digitalSignature".into(), "keyEncipherment".into()],
            ext_key_usage: vec!["serverAuth".into()],
            days: 365,
        }
    }

    /// Add an extended usage (e.g. etcd certificates are both server and client).
    pub fn with_eku(mut self, eku: &str) -> Self {
        if !self.ext_key_usage.iter().any(|e| e == eku) {
            self.ext_key_usage.push(eku.into());
        }
        self
    }
}

fn serial(seed: &[u8]) -> SerialNumber {
    let mut bytes = crate::unique::digest(seed)[..16].to_vec();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn issue_err(what: &str) -> impl Fn(rcgen::Error) -> PkiError + '_ {
    move |e| PkiError::Issue {
        what: what.to_string(),
        reason: e.to_string(),
    }
}

/// Generate a self-signed CA, valid for `days` from now (kubeadm: 10 years).
pub fn new_ca(common_name: &str, alg: KeyAlgorithm, days: i64) -> Result<CaMaterial, PkiError> {
    let key = generate_key(alg)?;
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(issue_err(common_name))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(days);
    params.serial_number = Some(serial(common_name.as_bytes()));
    let cert = params.self_signed(&key).map_err(issue_err(common_name))?;
    Ok(CaMaterial {
        cert_pem: cert.pem(),
        key: SecretPem::new(key.serialize_pem()),
    })
}

/// Issue a leaf for `key` from `ca`. Returns the certificate PEM.
pub fn issue_leaf(spec: &LeafSpec, key: &KeyPair, ca: &CaMaterial) -> Result<String, PkiError> {
    let what = spec.common_name.as_str();
    let ca_key = KeyPair::from_pem(ca.key.expose()).map_err(|e| PkiError::BadKey {
        what: "CA key".into(),
        reason: e.to_string(),
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca_key).map_err(issue_err(what))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(issue_err(what))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    for o in &spec.organizations {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params
        .distinguished_name
        .push(DnType::CommonName, &spec.common_name);
    for san in &spec.sans {
        let san = if let Some(ip) = san.strip_prefix("IP:") {
            SanType::IpAddress(ip.parse().map_err(|_| PkiError::Issue {
                what: what.into(),
                reason: format!("bad IP SAN {ip}"),
            })?)
        } else {
            let dns = san.strip_prefix("DNS:").unwrap_or(san);
            SanType::DnsName(dns.try_into().map_err(issue_err(what))?)
        };
        params.subject_alt_names.push(san);
    }
    params.key_usages = spec
        .key_usage
        .iter()
        .filter_map(|u| match u.as_str() {
            "digitalSignature" => Some(KeyUsagePurpose::DigitalSignature),
            "contentCommitment" => Some(KeyUsagePurpose::ContentCommitment),
            "keyEncipherment" => Some(KeyUsagePurpose::KeyEncipherment),
            "dataEncipherment" => Some(KeyUsagePurpose::DataEncipherment),
            "keyAgreement" => Some(KeyUsagePurpose::KeyAgreement),
            "keyCertSign" => Some(KeyUsagePurpose::KeyCertSign),
            "cRLSign" => Some(KeyUsagePurpose::CrlSign),
            _ => None,
        })
        .collect();
    params.extended_key_usages = spec
        .ext_key_usage
        .iter()
        .filter_map(|u| match u.as_str() {
            "serverAuth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
            "clientAuth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
            _ => None,
        })
        .collect();
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(spec.days);
    params.serial_number = Some(serial(spec.common_name.as_bytes()));
    let cert = params.signed_by(key, &issuer).map_err(issue_err(what))?;
    Ok(cert.pem())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::parse_certs;

    #[test]
    fn leaf_round_trips_through_facts() {
        let ca = new_ca("test-ca", KeyAlgorithm::EcdsaP256, 10).unwrap();
        let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let spec = LeafSpec {
            common_name: "system:node:w-1".into(),
            organizations: vec!["system:nodes".into()],
            sans: vec!["DNS:w-1".into(), "IP:127.0.2.1".into()],
            key_usage: vec!["digitalSignature".into()],
            ext_key_usage: vec!["serverAuth".into(), "clientAuth".into()],
            days: 30,
        };
        let pem = issue_leaf(&spec, &key, &ca).unwrap();
        let leaf = &parse_certs(&pem, "leaf").unwrap()[0];
        let root = &parse_certs(&ca.cert_pem, "ca").unwrap()[0];
        assert!(leaf.is_signed_by(root));
        assert!(root.facts.is_ca && !leaf.facts.is_ca);
        let back = LeafSpec::from_facts(&leaf.facts);
        assert_eq!(back, spec);
    }

    #[test]
    fn secret_pem_never_prints() {
        let ca = new_ca("c", KeyAlgorithm::EcdsaP256, 1).unwrap();
        assert!(ca.key.expose().contains("PRIVATE KEY"));
        assert!(!format!("{:?} {}", ca, ca.key).contains("PRIVATE KEY"));
    }
}
