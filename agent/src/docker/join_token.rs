//! The Swarm worker join token, published by the master in Consul's KV store so that only machines holding the
//! cluster secret can use it: the KV store is readable by anyone who reaches the master's HTTP API on the home LAN.
//!
//! Sealed with ChaCha20-Poly1305 under a key derived from the cluster secret; stored as base64 of nonce ‖ ciphertext.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

use crate::secret::derive;

/// Consul KV key of the sealed worker token.
pub const KV_KEY: &str = "cluster-lab/swarm/worker-token";
const LABEL: &str = "cluster-lab swarm join token";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("sealed join token is not valid base64 or too short")]
    Malformed,
    #[error("cannot open the join token: this machine's cluster secret differs from the master's (flash both from the same image)")]
    WrongSecret,
}

fn cipher(secret: &str) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(Key::from_slice(&derive(LABEL, secret)))
}

/// Seal `token` for storage.
pub fn seal(secret: &str, token: &str) -> String {
    let nonce: [u8; 12] = rand::random();
    let sealed = cipher(secret)
        .encrypt(Nonce::from_slice(&nonce), token.as_bytes())
        .expect("encryption of a short token cannot fail");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    base64::engine::general_purpose::STANDARD.encode(out)
}

/// Open a sealed token.
pub fn open(secret: &str, sealed: &[u8]) -> Result<String, TokenError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(sealed.trim_ascii())
        .map_err(|_| TokenError::Malformed)?;
    if raw.len() < 12 + 16 {
        return Err(TokenError::Malformed);
    }
    let (nonce, body) = raw.split_at(12);
    let plain = cipher(secret)
        .decrypt(Nonce::from_slice(nonce), body)
        .map_err(|_| TokenError::WrongSecret)?;
    String::from_utf8(plain).map_err(|_| TokenError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_opens_the_token() {
        let sealed = seal("secret-a", "SWMTKN-1-abc");
        assert!(!sealed.contains("SWMTKN"));
        assert_eq!(open("secret-a", sealed.as_bytes()).unwrap(), "SWMTKN-1-abc");
        assert_eq!(
            open("secret-b", sealed.as_bytes()),
            Err(TokenError::WrongSecret)
        );
        assert_eq!(open("secret-a", b"!!"), Err(TokenError::Malformed));
        assert_eq!(open("secret-a", b"AAAA"), Err(TokenError::Malformed));
        assert_ne!(
            seal("secret-a", "t"),
            seal("secret-a", "t"),
            "fresh nonce every time"
        );
    }
}
