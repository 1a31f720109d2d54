//! The CA certificates and keys an apply writes, by fingerprint: gathered from
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

/// CAs by fingerprint.
#[derive(Clone, Debug, Default)]
pub struct Material {
    cas: BTreeMap<Fingerprint, Ca>,
    /// Keys seen whose CA is not (yet) known, by public-key fingerprint.
    orphan_keys: BTreeMap<Fingerprint, SecretPem>,
}

impl Material {
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
                self.orphan_keys.insert(pk, key);
            }
        }
    }

    /// A CA.
    pub fn get(&self, fp: &Fingerprint) -> Option<&Ca> {
        self.cas.get(fp)
    }

    /// The PEM bundle of these CAs, in order; the first unknown one is the error.
    pub fn bundle(&self, fps: &[Fingerprint]) -> Result<String, Fingerprint> {
        fps.iter()
            .map(|fp| self.cas.get(fp).map(|c| c.cert.to_pem()).ok_or(fp.clone()))
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
