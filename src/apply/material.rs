//! The CA certificates and keys an apply writes, by fingerprint (and the
//! service-account keys, by their public key's): gathered from
//! trustform.yaml's `cas` (generated CAs and their git-ignored keys), from the nodes'
//! CA files and keys, and from this plan's backups (so a resumed apply still has the old
//! CA after the nodes dropped it). Keys stay in [`SecretPem`].

use crate::pki::cert::pem_blocks;
use crate::pki::{CaMaterial, Fingerprint, ParsedCert, SecretPem, parse_certs};
use std::collections::BTreeMap;

/// One CA.
#[derive(Clone, Debug)]
pub struct Ca {
    /// The certificate.
    pub cert: ParsedCert,
    /// Its key, if known.
    pub key: Option<SecretPem>,
}

/// A service-account key: a public key, and its private half when known.
#[derive(Clone, Debug)]
pub struct PublicKey {
    /// PEM `PUBLIC KEY`.
    pub pem: String,
    /// The private key, if known.
    pub key: Option<SecretPem>,
}

/// CAs by fingerprint, and bare public keys (service-account keys) by theirs.
#[derive(Clone, Debug, Default)]
pub struct Material {
    cas: BTreeMap<Fingerprint, Ca>,
    /// Keys seen whose CA is not (yet) known, by public-key fingerprint.
    orphan_keys: BTreeMap<Fingerprint, SecretPem>,
    /// Public keys, by the SHA-256 of their SubjectPublicKeyInfo.
    keys: BTreeMap<Fingerprint, PublicKey>,
}

impl Material {
    /// Add every public key (PEM `PUBLIC KEY`) of a text: sa.pub's service-account keys.
    pub fn add_public_keys(&mut self, text: &str, what: &str) {
        let Ok(blocks) = pem_blocks(text, what) else {
            return;
        };
        for b in blocks.into_iter().filter(|b| b.label == "PUBLIC KEY") {
            let fp = Fingerprint::of(&b.der);
            let key = self.orphan_keys.get(&fp).cloned();
            let entry = self.keys.entry(fp).or_insert(PublicKey {
                pem: crate::pki::cert::pem_block("PUBLIC KEY", &b.der),
                key: None,
            });
            if entry.key.is_none() {
                entry.key = key;
            }
        }
    }

    /// Add every CA certificate in a PEM text; other blocks are ignored.
    pub fn add_certs(&mut self, text: &str, what: &str) {
        let Ok(certs) = parse_certs(text, what) else {
            return;
        };
        for c in certs.into_iter().filter(|c| c.facts.is_ca) {
            let fp = c.facts.fingerprint.clone();
            let key = self.orphan_keys.remove(&c.facts.public_key);
            let entry = self.cas.entry(fp).or_insert(Ca { cert: c, key: None });
            if entry.key.is_none() {
                entry.key = key;
            }
        }
    }

    /// Add a private key; it attaches to the CA with the same public key.
    pub fn add_key(&mut self, key: SecretPem, what: &str) {
        let Ok(pk) = crate::pki::public_key_fingerprint(&key, what) else {
            return;
        };
        match self
            .cas
            .values_mut()
            .find(|c| c.cert.facts.public_key == pk)
        {
            Some(ca) => {
                if ca.key.is_none() {
                    ca.key = Some(key);
                }
            }
            None => {
                // A key of its own (a service-account key): its public half is known.
                if let Ok(pair) = rcgen::KeyPair::from_pem(key.expose()) {
                    let entry = self.keys.entry(pk.clone()).or_insert(PublicKey {
                        pem: pair.public_key_pem(),
                        key: None,
                    });
                    if entry.key.is_none() {
                        entry.key = Some(key.clone());
                    }
                }
                self.orphan_keys.insert(pk, key);
            }
        }
    }

    /// Whether a trust anchor is known: a CA certificate, or a public key.
    pub fn knows(&self, fp: &Fingerprint) -> bool {
        self.cas.contains_key(fp) || self.keys.contains_key(fp)
    }

    /// The public key of a trust anchor: a CA's, or a public key itself.
    pub fn public_key_of<'m>(&'m self, fp: &'m Fingerprint) -> Option<&'m Fingerprint> {
        match self.cas.get(fp) {
            Some(ca) => Some(&ca.cert.facts.public_key),
            None => self.keys.contains_key(fp).then_some(fp),
        }
    }

    /// The private key of a trust anchor, when known.
    pub fn private_key(&self, fp: &Fingerprint) -> Option<&SecretPem> {
        match self.cas.get(fp) {
            Some(ca) => ca.key.as_ref(),
            None => self.keys.get(fp)?.key.as_ref(),
        }
    }

    /// A CA.
    pub fn get(&self, fp: &Fingerprint) -> Option<&Ca> {
        self.cas.get(fp)
    }

    /// The PEM bundle of these CAs (or public keys), in order; the first unknown one is
    /// the error.
    pub fn bundle(&self, fps: &[Fingerprint]) -> Result<String, Fingerprint> {
        fps.iter()
            .map(|fp| match (self.cas.get(fp), self.keys.get(fp)) {
                (Some(c), _) => Ok(c.cert.to_pem()),
                (None, Some(k)) => Ok(k.pem.clone()),
                (None, None) => Err(fp.clone()),
            })
            .collect()
    }

    /// Certificate and key of a CA, for signing.
    pub fn signer(&self, fp: &Fingerprint) -> Option<CaMaterial> {
        let ca = self.cas.get(fp)?;
        Some(CaMaterial {
            cert_pem: ca.cert.to_pem(),
            key: ca.key.clone()?,
        })
    }

    /// Every CA certificate as PEM, by fingerprint (public data).
    pub fn pems(&self) -> BTreeMap<Fingerprint, String> {
        self.cas
            .iter()
            .map(|(fp, ca)| (fp.clone(), ca.cert.to_pem()))
            .collect()
    }

    /// Which known CA signed this certificate.
    pub fn issuer_of(&self, leaf: &ParsedCert) -> Option<&Fingerprint> {
        self.cas
            .iter()
            .find(|(_, ca)| leaf.is_signed_by(&ca.cert))
            .map(|(fp, _)| fp)
    }
}

/// The private key block of a PEM text (a combined cert+key file, or a key file).
pub fn key_block(text: &str, what: &str) -> Option<SecretPem> {
    pem_blocks(text, what)
        .ok()?
        .into_iter()
        .find(|b| b.label.ends_with("PRIVATE KEY"))
        .map(|b| SecretPem::new(crate::pki::cert::pem_block(&b.label, &b.der)))
}
