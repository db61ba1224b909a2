//! The claim a candidate announces on the VLAN, and its wire format.
//!
//! A UDP broadcast payload: magic `CLAIM1` (6 bytes), flags (1 byte, bit 0 = master), MAC (6 bytes), cluster name
//! length (1 byte) and name. Anything else is not a claim and is ignored.

/// Magic that starts every claim.
pub const MAGIC: &[u8; 6] = b"CLAIM1";
const FLAG_MASTER: u8 = 1;

pub use crate::net::link::Mac;

/// "I want to be (or am) the master of `cluster`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub cluster: String,
    pub mac: Mac,
    /// Sent by an elected master.
    pub master: bool,
}

impl Claim {
    pub fn encode(&self) -> Vec<u8> {
        let name = &self.cluster.as_bytes()[..self.cluster.len().min(255)];
        let mut out = Vec::with_capacity(14 + name.len());
        out.extend_from_slice(MAGIC);
        out.push(if self.master { FLAG_MASTER } else { 0 });
        out.extend_from_slice(&self.mac.0);
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out
    }

    /// Decode a datagram; `None` for anything that is not a well-formed claim.
    pub fn decode(data: &[u8]) -> Option<Claim> {
        let rest = data.strip_prefix(MAGIC)?;
        let (&flags, rest) = rest.split_first()?;
        let mac: [u8; 6] = rest.get(..6)?.try_into().ok()?;
        let (&len, name) = rest[6..].split_first()?;
        if name.len() != len as usize {
            return None;
        }
        Some(Claim {
            cluster: String::from_utf8(name.to_vec()).ok()?,
            mac: Mac(mac),
            master: flags & FLAG_MASTER != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let c = Claim {
            cluster: "lab".into(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            master: true,
        };
        let wire = c.encode();
        assert_eq!(Claim::decode(&wire), Some(c));
        for n in 0..wire.len() {
            assert_eq!(Claim::decode(&wire[..n]), None, "truncated at {n}");
        }
        let mut long = wire.clone();
        long.push(b'x');
        assert_eq!(Claim::decode(&long), None);
        assert_eq!(Claim::decode(b"GET / HTTP/1.0"), None);
    }
}
