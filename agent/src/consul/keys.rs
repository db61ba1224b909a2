//! Keys derived from the cluster secret that the image builder writes into every card's `cluster-lab.toml`.
//!
//! Each key is SHA-256 over a purpose label, a NUL byte and the secret, so keys for different purposes are
//! independent and every node holding the secret derives the same ones without talking to anyone.

use base64::Engine;
use sha2::{Digest, Sha256};

/// Label for Consul's gossip encryption key.
pub const GOSSIP_LABEL: &str = "cluster-lab consul gossip";

/// 32 bytes derived from `secret` for `label`.
pub fn derive(label: &str, secret: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    h.update([0u8]);
    h.update(secret.as_bytes());
    h.finalize().into()
}

/// Consul's `encrypt` value: a 32-byte key (AES-256 for Serf gossip), standard base64.
pub fn gossip_key(secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(derive(GOSSIP_LABEL, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_key_is_stable_32_bytes() {
        let key = gossip_key("s3cret");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!(raw.len(), 32);
        // Fixed value, cross-checked with `printf 'cluster-lab consul gossip\0s3cret' | sha256sum`: nodes
        // flashed from one image must agree forever, across agent versions.
        assert_eq!(key, gossip_key("s3cret"));
        assert_eq!(key, "huQmg2HK4PGAP8KaDohS/SDloLiiVt2VFj+qmp8+1cE=");
        assert_ne!(key, gossip_key("other"));
        assert_ne!(
            derive("another purpose", "s3cret"),
            derive(GOSSIP_LABEL, "s3cret")
        );
    }
}
