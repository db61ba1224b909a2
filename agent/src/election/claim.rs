//! The claim a candidate announces on the VLAN, and its wire format.
//!
//! A UDP broadcast payload: magic `CLAIM2` (6 bytes), flags (1 byte, bit 0 = master), MAC (6 bytes), counter
//! (8 bytes, big-endian), cluster name length (1 byte) and name, then a 16-byte tag: HMAC-SHA256 of everything
//! before it under the [`ClaimKey`] derived from the cluster secret, truncated. A datagram whose tag does not verify
//! was not sent by a machine holding this cluster's secret (a forger on the VLAN, or another cluster that happens to
//! share the name) and is not a claim. The counter grows with every claim a sender makes; [`Freshness`] drops a
//! claim whose counter is not newer than the last one accepted from that MAC (a replay).

use std::collections::HashMap;

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Magic that starts every claim.
pub const MAGIC: &[u8; 6] = b"CLAIM2";
const FLAG_MASTER: u8 = 1;
/// Length of the truncated HMAC-SHA256 tag.
pub const TAG_LEN: usize = 16;

pub use crate::net::link::Mac;

/// "I want to be (or am) the master of `cluster`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub cluster: String,
    pub mac: Mac,
    /// Sent by an elected master.
    pub master: bool,
}

/// The key that signs and verifies claims: HKDF of the cluster secret ([`crate::secret::CLAIM_LABEL`]).
#[derive(Debug, Clone)]
pub struct ClaimKey(crate::secret::HmacKey);

impl ClaimKey {
    pub fn from_secret(secret: &str) -> ClaimKey {
        ClaimKey(crate::secret::HmacKey::derive(
            crate::secret::CLAIM_LABEL,
            secret,
        ))
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.0.hmac()
    }
}

impl Claim {
    /// The datagram for this claim, the `counter`-th its sender makes, signed with `key`.
    pub fn encode(&self, key: &ClaimKey, counter: u64) -> Vec<u8> {
        let name = &self.cluster.as_bytes()[..self.cluster.len().min(255)];
        let mut out = Vec::with_capacity(22 + name.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(if self.master { FLAG_MASTER } else { 0 });
        out.extend_from_slice(&self.mac.0);
        out.extend_from_slice(&counter.to_be_bytes());
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        let mut mac = key.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes()[..TAG_LEN]);
        out
    }

    /// The claim and its counter, when `data` is a well-formed claim whose tag verifies under `key`; `None` for
    /// anything else.
    pub fn decode(data: &[u8], key: &ClaimKey) -> Option<(Claim, u64)> {
        let (body, tag) = data.split_at_checked(data.len().checked_sub(TAG_LEN)?)?;
        let rest = body.strip_prefix(MAGIC)?;
        let (&flags, rest) = rest.split_first()?;
        let mac: [u8; 6] = rest.get(..6)?.try_into().ok()?;
        let counter = u64::from_be_bytes(rest.get(6..14)?.try_into().ok()?);
        let (&len, name) = rest.get(14..)?.split_first()?;
        if name.len() != len as usize {
            return None;
        }
        let mut check = key.mac();
        check.update(body);
        check.verify_truncated_left(tag).ok()?;
        Some((
            Claim {
                cluster: String::from_utf8(name.to_vec()).ok()?,
                mac: Mac(mac),
                master: flags & FLAG_MASTER != 0,
            },
            counter,
        ))
    }
}

/// The newest counter accepted from each sender: a claim is fresh only if its counter is higher.
#[derive(Debug, Default)]
pub struct Freshness {
    last: HashMap<Mac, u64>,
}

impl Freshness {
    /// Whether a claim from `mac` with `counter` is new (and remember it if so).
    pub fn accept(&mut self, mac: Mac, counter: u64) -> bool {
        match self.last.get(&mac) {
            Some(&seen) if counter <= seen => false,
            _ => {
                self.last.insert(mac, counter);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim() -> Claim {
        Claim {
            cluster: "lab".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            master: true,
        }
    }

    #[test]
    fn mac_parses_and_orders() {
        let a: Mac = "02:00:00:00:00:0a".parse().unwrap();
        let b: Mac = "02:00:00:00:01:00".parse().unwrap();
        assert!(a < b);
        assert_eq!(a.to_string(), "02:00:00:00:00:0a");
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "zz:00:00:00:00:00",
            "2:0:0:0:0:0",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn claim_round_trips_and_rejects_junk() {
        let key = ClaimKey::from_secret("0123456789abcdef0123456789abcdef");
        let wire = claim().encode(&key, 7);
        assert_eq!(Claim::decode(&wire, &key), Some((claim(), 7)));
        for n in 0..wire.len() {
            assert_eq!(Claim::decode(&wire[..n], &key), None, "truncated at {n}");
        }
        let mut long = wire.clone();
        long.push(b'x');
        assert_eq!(Claim::decode(&long, &key), None);
        assert_eq!(Claim::decode(b"GET / HTTP/1.0", &key), None);
    }

    #[test]
    fn a_claim_signed_with_another_secret_or_altered_is_not_a_claim() {
        let key = ClaimKey::from_secret("0123456789abcdef0123456789abcdef");
        let other = ClaimKey::from_secret("fedcba9876543210fedcba9876543210");
        let wire = claim().encode(&other, 1);
        assert_eq!(Claim::decode(&wire, &key), None, "another cluster's key");
        // Flip each bit of the genuine datagram: the master flag, the MAC, the counter, the name, the tag.
        let genuine = claim().encode(&key, 1);
        for i in 0..genuine.len() {
            let mut forged = genuine.clone();
            forged[i] ^= 0x01;
            assert_eq!(Claim::decode(&forged, &key), None, "byte {i} altered");
        }
        // The unsigned format of older agents is not accepted either.
        let mut old = b"CLAIM1".to_vec();
        old.extend_from_slice(&[1, 2, 0, 0, 0, 0, 1, 3]);
        old.extend_from_slice(b"lab");
        assert_eq!(Claim::decode(&old, &key), None);
    }

    #[test]
    fn a_replayed_or_older_claim_is_not_fresh() {
        let mut f = Freshness::default();
        let a = claim().mac;
        let b: Mac = "02:00:00:00:00:02".parse().unwrap();
        assert!(f.accept(a, 10));
        assert!(!f.accept(a, 10), "the same datagram again");
        assert!(!f.accept(a, 9), "an older one");
        assert!(f.accept(a, 11));
        assert!(f.accept(b, 1), "counters are per sender");
    }
}
