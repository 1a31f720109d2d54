//! Identifiers and randomness the API server hands out: object UIDs, `generateName`
//! suffixes, fault dice, and the server's time stamps. No cryptographic strength is
//! needed or claimed: [`crate::unique::digest`].

fn digest() -> [u8; 32] {
    crate::unique::digest(b"")
}

/// A fresh random-looking 64-bit number.
pub fn random_u64() -> u64 {
    let d = digest();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// A uniform number in `[0, 1)`.
pub fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A version-4-shaped UUID, as `metadata.uid` holds.
pub fn uid() -> String {
    let mut b = digest();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(&b[..16]);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Five characters for `metadata.generateName`, from the alphabet Kubernetes uses.
pub fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Now, as the API server writes times: RFC 3339, UTC, whole seconds.
pub fn timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let u = uid();
        assert_eq!(u.len(), 36);
        assert_ne!(u, uid());
        assert_eq!(name_suffix().len(), 5);
        assert!((0.0..1.0).contains(&random_unit()));
        let t = timestamp();
        assert!(t.ends_with('Z') && t.len() == 20, "{t}");
    }
}
