//! Facts about certificates, read with x509-parser.

use super::PkiError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::prelude::*;

/// A SHA-256 fingerprint, written `sha256:<64 hex>`. CAs are known by it, never by name.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

impl Fingerprint {
    /// Fingerprint of some DER bytes.
    pub fn of(der: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(der))))
    }
    /// `sha256:9f3a1b2c3d4e…`, the form shown to people.
    pub fn short(&self) -> String {
        let hex = self.0.strip_prefix("sha256:").unwrap_or(&self.0);
        format!("sha256:{}…", &hex[..hex.len().min(12)])
    }
    /// Parse user input: `sha256:<hex>` or bare hex, colons allowed (openssl's form).
    pub fn parse(text: &str) -> Option<Self> {
        let hex: String = text
            .trim()
            .trim_start_matches("sha256:")
            .trim_start_matches("SHA256:")
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| Self(format!("sha256:{hex}")))
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a certificate says about itself. Public data only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CertFacts {
    /// SHA-256 of the DER certificate.
    pub fingerprint: Fingerprint,
    /// Subject distinguished name, RFC 4514 form.
    pub subject: String,
    /// Subject common name.
    pub common_name: String,
    /// Subject organizations (Kubernetes groups).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organizations: Vec<String>,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Basic constraints CA flag.
    pub is_ca: bool,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// Subject alternative names, `DNS:name` or `IP:addr`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    /// Key usages (`digitalSignature`, `keyEncipherment`, `keyCertSign`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_usage: Vec<String>,
    /// Extended key usages (`serverAuth`, `clientAuth`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ext_key_usage: Vec<String>,
    /// SHA-256 of the SubjectPublicKeyInfo: ties the certificate to its key file.
    pub public_key: Fingerprint,
}

/// A certificate with its DER and facts.
#[derive(Clone, Debug)]
pub struct ParsedCert {
    /// The DER bytes.
    pub der: Vec<u8>,
    /// Parsed facts.
    pub facts: CertFacts,
    /// 1-based line of its BEGIN marker in the source text.
    pub line: usize,
}

impl ParsedCert {
    /// Whether `issuer` signed this certificate (subject match and a valid signature).
    pub fn is_signed_by(&self, issuer: &ParsedCert) -> bool {
        if self.facts.issuer != issuer.facts.subject {
            return false;
        }
        let (Ok((_, child)), Ok((_, parent))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&issuer.der),
        ) else {
            return false;
        };
        child.verify_signature(Some(parent.public_key())).is_ok()
    }

    /// The certificate as one PEM block.
    pub fn to_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.der)
    }
}

/// Encode DER as a PEM block with 64-column lines.
pub fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One PEM block found in a text.
pub struct PemBlock {
    /// The label after BEGIN.
    pub label: String,
    /// Decoded bytes.
    pub der: Vec<u8>,
    /// 1-based line of the BEGIN marker.
    pub line: usize,
}

/// The SHA-256 of the SubjectPublicKeyInfo of each `PUBLIC KEY` block, in order: the
/// service-account keys of `sa.pub` (and a `cas` entry's `publicKey`).
pub fn public_key_fps(blocks: &[PemBlock]) -> Vec<Fingerprint> {
    blocks
        .iter()
        .filter(|b| b.label == "PUBLIC KEY")
        .map(|b| Fingerprint::of(&b.der))
        .collect()
}

/// Split a text into its PEM blocks; `what` names the source in errors.
pub fn pem_blocks(text: &str, what: &str) -> Result<Vec<PemBlock>, PkiError> {
    use base64::Engine;
    let mut blocks = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(label) = line
            .trim()
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut closed = false;
        for (_, l) in lines.by_ref() {
            if l.trim() == end {
                closed = true;
                break;
            }
            body.push_str(l.trim());
        }
        let corrupt = || PkiError::CorruptPem {
            what: what.to_string(),
            line: i + 1,
        };
        if !closed {
            return Err(corrupt());
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|_| corrupt())?;
        blocks.push(PemBlock {
            label: label.to_string(),
            der,
            line: i + 1,
        });
    }
    Ok(blocks)
}

/// Parse every `CERTIFICATE` block of a PEM text (a leaf, or a bundle).
pub fn parse_certs(text: &str, what: &str) -> Result<Vec<ParsedCert>, PkiError> {
    pem_blocks(text, what)?
        .into_iter()
        .filter(|b| b.label == "CERTIFICATE")
        .map(|b| {
            let facts = facts_of(&b.der).map_err(|reason| PkiError::BadCertificate {
                what: what.to_string(),
                line: b.line,
                reason,
            })?;
            Ok(ParsedCert {
                der: b.der,
                facts,
                line: b.line,
            })
        })
        .collect()
}

/// SHA-256 fingerprint of the public half of a PEM private key (any format aws-lc reads).
pub fn public_key_fingerprint(key: &super::SecretPem, what: &str) -> Result<Fingerprint, PkiError> {
    use rcgen::PublicKeyData;
    let pair = rcgen::KeyPair::from_pem(key.expose()).map_err(|e| PkiError::BadKey {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Fingerprint::of(&pair.subject_public_key_info()))
}

fn rfc3339(t: ASN1Time) -> String {
    t.to_datetime()
        .format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

fn facts_of(der: &[u8]) -> Result<CertFacts, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    let subject = cert.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let mut sans = Vec::new();
    let mut key_usage = Vec::new();
    let mut ext_key_usage = Vec::new();
    let mut is_ca = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                        GeneralName::IPAddress(ip) => sans.push(format!("IP:{}", ip_text(ip))),
                        other => sans.push(format!("{other}")),
                    }
                }
            }
            ParsedExtension::BasicConstraints(bc) => is_ca = bc.ca,
            ParsedExtension::KeyUsage(ku) => {
                let flags = [
                    (ku.digital_signature(), "digitalSignature"),
                    (ku.non_repudiation(), "contentCommitment"),
                    (ku.key_encipherment(), "keyEncipherment"),
                    (ku.data_encipherment(), "dataEncipherment"),
                    (ku.key_agreement(), "keyAgreement"),
                    (ku.key_cert_sign(), "keyCertSign"),
                    (ku.crl_sign(), "cRLSign"),
                ];
                key_usage.extend(
                    flags
                        .iter()
                        .filter(|(on, _)| *on)
                        .map(|(_, n)| n.to_string()),
                );
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                if eku.server_auth {
                    ext_key_usage.push("serverAuth".into());
                }
                if eku.client_auth {
                    ext_key_usage.push("clientAuth".into());
                }
            }
            _ => {}
        }
    }
    Ok(CertFacts {
        fingerprint: Fingerprint::of(der),
        subject: subject.to_string(),
        common_name,
        organizations,
        issuer: cert.issuer().to_string(),
        is_ca,
        not_before: rfc3339(cert.validity().not_before),
        not_after: rfc3339(cert.validity().not_after),
        sans,
        key_usage,
        ext_key_usage,
        public_key: Fingerprint::of(cert.public_key().raw),
    })
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).expect("len 4")).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("len 16")).to_string(),
        _ => hex::encode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parse_accepts_openssl_form() {
        let hex = "AB".repeat(32);
        let colons: Vec<String> = (0..32).map(|_| "AB".to_string()).collect();
        let a = Fingerprint::parse(&format!("sha256:{hex}")).unwrap();
        let b = Fingerprint::parse(&colons.join(":")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.short(), "sha256:abababababab…");
        assert!(Fingerprint::parse("sha256:abc").is_none());
    }

    #[test]
    fn corrupt_pem_names_the_line() {
        let text = "junk\n-----BEGIN CERTIFICATE-----\n!!!notbase64\n-----END CERTIFICATE-----\n";
        let err = parse_certs(text, "ca.crt").expect_err("corrupt");
        assert!(
            matches!(err, PkiError::CorruptPem { line: 2, .. }),
            "{err:?}"
        );
    }
}
