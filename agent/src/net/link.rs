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
    #[error("reading the MAC address of {interface} through {path}: {source}")]
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
    #[error(
        "network.interface = \"auto\": {0}; plug in the Ethernet cable, or name the interface in cluster-lab.toml"
    )]
    NoWiredLink(String),
}

/// `network.interface = "auto"`: let first boot find the wired link.
pub const AUTO: &str = "auto";

/// What sysfs says about one link, for choosing the wired one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkFacts {
    pub name: String,
    /// A physical Ethernet device: ARP type 1, a `device` behind it, no Wi-Fi.
    pub wired: bool,
    /// `carrier` reads 1 (a cable to a live switch port).
    pub carrier: bool,
}

/// Every link under `sys_class_net` (`/sys/class/net`) with its facts, sorted by name.
pub fn links(sys_class_net: &std::path::Path) -> Vec<LinkFacts> {
    let read = |dir: &std::path::Path, f: &str| {
        std::fs::read_to_string(dir.join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let mut out: Vec<LinkFacts> = std::fs::read_dir(sys_class_net)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let dir = e.path();
                    let wired = read(&dir, "type") == "1"
                        && dir.join("device").exists()
                        && !dir.join("wireless").exists()
                        && !dir.join("phy80211").exists();
                    LinkFacts {
                        name: e.file_name().to_string_lossy().into_owned(),
                        wired,
                        carrier: read(&dir, "carrier") == "1",
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The wired Ethernet link `interface = "auto"` means: among the physical wired links, the one with carrier
/// (`eth0` first when several have it), or the only one there is even without carrier.
pub fn choose_wired(links: &[LinkFacts]) -> Result<String, LinkError> {
    let wired: Vec<&LinkFacts> = links.iter().filter(|l| l.wired).collect();
    let with_carrier: Vec<&&LinkFacts> = wired.iter().filter(|l| l.carrier).collect();
    if let Some(l) = with_carrier
        .iter()
        .find(|l| l.name == "eth0")
        .or(with_carrier.first())
    {
        return Ok(l.name.clone());
    }
    match wired.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => Err(LinkError::NoWiredLink(format!(
            "no wired Ethernet link (links: {})",
            names(links)
        ))),
        several => Err(LinkError::NoWiredLink(format!(
            "none of the wired links {} has carrier",
            several
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn names(links: &[LinkFacts]) -> String {
    if links.is_empty() {
        return "none".into();
    }
    links
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The MAC address of `interface`, in the calling thread's network namespace.
pub fn mac(interface: &str) -> Result<Mac, LinkError> {
    // Over netlink (getifaddrs), which answers for the network namespace the calling thread is in; /sys shows the
    // links of the namespace it was mounted in, which is not the same for a thread moved into another namespace.
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| LinkError::Mac {
        interface: interface.to_owned(),
        path: "netlink (getifaddrs)".into(),
        source: e.into(),
    })?;
    let mut found = false;
    for a in addrs.filter(|a| a.interface_name == interface) {
        found = true;
        if let Some(mac) = a.address.as_ref().and_then(|s| s.as_link_addr()?.addr()) {
            return Ok(Mac(mac));
        }
    }
    if found {
        Err(LinkError::BadMac {
            interface: interface.to_owned(),
            path: "netlink (getifaddrs)".into(),
            value: "no link-layer address".into(),
        })
    } else {
        Err(LinkError::NoSuchInterface(interface.to_owned()))
    }
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

    /// A sysfs-like tree: `(name, type, has device, wireless, carrier)`.
    fn sysfs(links: &[(&str, &str, bool, bool, Option<&str>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind, device, wireless, carrier) in links {
            let d = dir.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            if *device {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
            if *wireless {
                std::fs::create_dir_all(d.join("wireless")).unwrap();
            }
            if let Some(c) = carrier {
                std::fs::write(d.join("carrier"), format!("{c}\n")).unwrap();
            }
        }
        dir
    }

    #[test]
    fn auto_takes_the_wired_link_with_carrier() {
        // A Pi with a USB NIC plugged in, Wi-Fi, Docker's bridge and a veth: only the USB NIC has a cable.
        let tree = sysfs(&[
            ("lo", "772", false, false, Some("1")),
            ("eth0", "1", true, false, Some("0")),
            ("enxb827eb123456", "1", true, false, Some("1")),
            ("wlan0", "1", true, true, Some("1")),
            ("docker0", "1", false, false, Some("1")),
            ("veth1a2b", "1", false, false, Some("1")),
        ]);
        assert_eq!(
            choose_wired(&links(tree.path())).unwrap(),
            "enxb827eb123456"
        );
    }

    #[test]
    fn auto_prefers_eth0_and_takes_a_lone_nic_without_carrier() {
        let both = sysfs(&[
            ("enp1s0", "1", true, false, Some("1")),
            ("eth0", "1", true, false, Some("1")),
        ]);
        assert_eq!(choose_wired(&links(both.path())).unwrap(), "eth0");
        // A link that is still down has no readable carrier.
        let lone = sysfs(&[
            ("end0", "1", true, false, None),
            ("wlan0", "1", true, true, None),
        ]);
        assert_eq!(choose_wired(&links(lone.path())).unwrap(), "end0");
    }

    #[test]
    fn auto_without_a_choice_says_why() {
        let none = sysfs(&[("wlan0", "1", true, true, Some("1"))]);
        let err = choose_wired(&links(none.path())).unwrap_err().to_string();
        assert!(
            err.contains("no wired Ethernet link (links: wlan0)"),
            "{err}"
        );
        let two = sysfs(&[
            ("enp1s0", "1", true, false, Some("0")),
            ("enp2s0", "1", true, false, Some("0")),
        ]);
        let err = choose_wired(&links(two.path())).unwrap_err().to_string();
        assert!(
            err.contains("none of the wired links enp1s0, enp2s0 has carrier"),
            "{err}"
        );
        assert!(err.contains("plug in the Ethernet cable"), "{err}");
    }
}
