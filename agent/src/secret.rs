//! Keys derived from the cluster secret that the image builder writes into every card's `cluster-lab.toml`:
//! Consul's gossip key and the key that seals the Swarm join token.
//!
//! HKDF-SHA256 (RFC 5869, the `hkdf` crate) with the salt [`SALT`] and one purpose label per key as its `info`, so
//! keys for different purposes are independent and every machine holding the secret derives the same ones without
//! talking to anyone.

use base64::Engine;
use hkdf::Hkdf;
use sha2::Sha256;

/// HKDF's salt: fixed, so every machine derives the same keys from the same secret.
pub const SALT: &[u8] = b"cluster-lab";
/// Label for Consul's gossip encryption key.
pub const GOSSIP_LABEL: &str = "cluster-lab consul gossip";

/// Label of Consul node IDs (followed by a NUL and the hostname).
pub const NODE_ID_LABEL: &str = "cluster-lab consul node id";
/// Label of the key that authenticates the master's DHCP marker.
pub const MARKER_LABEL: &str = "cluster-lab dhcp master marker";
/// Label of the key that authenticates election claims.
pub const CLAIM_LABEL: &str = "cluster-lab election claims";
/// Label of Consul's management token (`acl.tokens.master` on the master, the agent token everywhere).
pub const MANAGEMENT_TOKEN_LABEL: &str = "cluster-lab consul management token";

/// 32 bytes derived from `secret` for `label`.
pub fn derive(label: &str, secret: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(Some(SALT), secret.as_bytes())
        .expand(label.as_bytes(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

/// A key derived from the secret for one purpose and used for HMAC-SHA256 (election claims, the DHCP marker). Its
/// `Debug` never shows the bytes.
#[derive(Clone)]
pub struct HmacKey([u8; 32]);

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(<derived>)")
    }
}

impl HmacKey {
    /// The key for `label` derived from `secret`.
    pub fn derive(label: &str, secret: &str) -> HmacKey {
        HmacKey(derive(label, secret))
    }

    /// A fresh HMAC-SHA256 under this key.
    pub fn hmac(&self) -> hmac::Hmac<Sha256> {
        use hmac::Mac as _;
        hmac::Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

/// Consul's `encrypt` value: a 32-byte key (AES-256 for Serf gossip), standard base64.
pub fn gossip_key(secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(derive(GOSSIP_LABEL, secret))
}

/// This machine's Consul node ID: a UUID derived from the secret and the hostname, so a card re-flashed with the
/// same hostname takes its old place in the catalog instead of being refused as a second node of that name.
pub fn consul_node_id(secret: &str, hostname: &str) -> String {
    uuid(&derive(&format!("{NODE_ID_LABEL}\0{hostname}"), secret))
}

/// Consul's management token: a UUID every card derives from the secret, so the master can make it the ACL
/// system's initial management token and the nodes can present it, without sending it anywhere. Whoever holds the
/// secret holds the cluster; this token gives no more than that. Never printed but by `cluster-lab consul-token`.
pub fn consul_management_token(secret: &str) -> String {
    uuid(&derive(MANAGEMENT_TOKEN_LABEL, secret))
}

/// The first 16 bytes of `key` in UUID form (8-4-4-4-12 hex digits), the form Consul wants for IDs and tokens.
fn uuid(key: &[u8; 32]) -> String {
    let h: String = key[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_key_is_stable_32_bytes() {
        let key = gossip_key("s3cret-s3cret-s3cret");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!(raw.len(), 32);
        // Fixed value, cross-checked with an independent HKDF-SHA256 (Python's hmac module, RFC 5869 extract and
        // expand): cards flashed from one image must agree across agent versions.
        assert_eq!(key, "k8mlWByuGlNCJ2joH6CRGLnZY/f2mVHYbLa/9vneeTA=");
        assert_ne!(key, gossip_key("other-other-other-other"));
        assert_ne!(
            derive("another purpose", "s3cret-s3cret-s3cret"),
            derive(GOSSIP_LABEL, "s3cret-s3cret-s3cret")
        );
    }

    #[test]
    fn node_ids_are_uuids_stable_per_hostname() {
        let id = consul_node_id("s3cret-s3cret-s3cret", "node1");
        assert_eq!(id.len(), 36);
        assert_eq!(
            id.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(id, consul_node_id("s3cret-s3cret-s3cret", "node1"));
        assert_ne!(id, consul_node_id("s3cret-s3cret-s3cret", "node2"));
        assert_ne!(id, consul_node_id("other-other-other-other", "node1"));
    }

    #[test]
    fn rfc5869_test_case_1() {
        // RFC 5869 A.1, through the same crate and hash: guards the construction, not only our inputs.
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00u8..=0x0c).collect();
        let info: Vec<u8> = (0xf0u8..=0xf9).collect();
        let mut okm = [0u8; 42];
        Hkdf::<Sha256>::new(Some(&salt), &ikm)
            .expand(&info, &mut okm)
            .unwrap();
        let hex: String = okm.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn the_management_token_is_a_uuid_of_its_own() {
        let secret = "s3cret-s3cret-s3cret";
        let token = consul_management_token(secret);
        assert_eq!(
            token.split('-').map(str::len).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert_eq!(token, consul_management_token(secret));
        assert_ne!(token, consul_management_token("other-other-other-other"));
        assert_ne!(token, consul_node_id(secret, ""));
    }
}
