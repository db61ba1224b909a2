//! Facts about a network link this machine has: its MAC address, its index, its IPv4 addresses. The one place
//! they are read (sysfs, netlink via getifaddrs), and the one MAC address type.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A MAC address; ordered bytewise, which is the election's tie-break (lowest wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

#[derive(Debug, thiserror::Error)]
#[error("MAC address {0:?}: expected six hex bytes separated by ':'")]
pub struct MacError(String);

impl FromStr for Mac {
    type Err = MacError;
    fn from_str(s: &str) -> Result<Mac, MacError> {
        let mut out = [0u8; 6];
        let mut parts = s.trim().split(':');
        for b in &mut out {
            let part = parts.next().ok_or_else(|| MacError(s.into()))?;
            if part.len() != 2 {
                return Err(MacError(s.into()));
            }
            *b = u8::from_str_radix(part, 16).map_err(|_| MacError(s.into()))?;
        }
        if parts.next().is_some() {
            return Err(MacError(s.into()));
        }
        Ok(Mac(out))
    }
}

/// A link fact that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("reading the MAC address of {interface} from {path}: {source}")]
    Mac {
        interface: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{interface}: {path} does not hold a MAC address: {value:?}")]
    BadMac {
        interface: String,
        path: String,
        value: String,
    },
    #[error(
        "interface {0} does not exist: bring the cluster VLAN up first (cluster-lab creates <interface>.<vlan>) or pass --interface"
    )]
    NoSuchInterface(String),
    #[error("listing interface addresses: {0}")]
    Addresses(nix::Error),
}

/// The MAC address of `interface`, from sysfs.
pub fn mac(interface: &str) -> Result<Mac, LinkError> {
    let path = format!("/sys/class/net/{interface}/address");
    let text = std::fs::read_to_string(&path).map_err(|source| LinkError::Mac {
        interface: interface.to_owned(),
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| LinkError::BadMac {
        interface: interface.to_owned(),
        path,
        value: text.trim().to_owned(),
    })
}

/// The index of `interface`, or an error saying it does not exist.
pub fn index(interface: &str) -> Result<u32, LinkError> {
    nix::net::if_::if_nametoindex(interface)
        .map_err(|_| LinkError::NoSuchInterface(interface.to_owned()))
}

/// The IPv4 addresses configured on `interface`.
pub fn addresses(interface: &str) -> Result<Vec<Ipv4Addr>, LinkError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(LinkError::Addresses)?;
    Ok(addrs
        .filter(|a| a.interface_name == interface)
        .filter_map(|a| a.address?.as_sockaddr_in().map(|s| s.ip()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_parsed_strictly_and_shown_in_lower_case() {
        let mac: Mac = "02:00:00:00:00:0A".parse().unwrap();
        assert_eq!(mac, Mac([2, 0, 0, 0, 0, 10]));
        assert_eq!(mac.to_string(), "02:00:00:00:00:0a");
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "02:00:00:00:00:zz",
            "2:00:00:00:00:01",
            "",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn loopback_has_an_index_and_127_0_0_1() {
        assert!(index("lo").unwrap() > 0);
        assert!(addresses("lo").unwrap().contains(&Ipv4Addr::LOCALHOST));
        let err = index("cl-no-such-if").unwrap_err().to_string();
        assert!(err.contains("cl-no-such-if does not exist"), "{err}");
        assert!(mac("cl-no-such-if").is_err());
    }
}
