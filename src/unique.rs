//! Unique, random-looking bytes for identifiers (certificate serials, lock ids, object
//! UIDs): SHA-256 over a process-wide counter, the clock, the process id and a seed. No
//! cryptographic strength is needed or claimed.

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// 32 bytes that differ on every call, in this process and across processes.
pub fn digest(seed: &[u8]) -> [u8; 32] {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = Sha256::new();
    h.update(seed);
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes(),
    );
    h.update(std::process::id().to_le_bytes());
    h.finalize().into()
}
