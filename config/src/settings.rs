//! Validated settings: what the rest of the agent works with. Every field here is already checked.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::Ipv4Network;

use crate::types::{Hostname, Secret, SshKey};

/// The effective, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub cluster: ClusterSettings,
    pub node: NodeSettings,
    pub network: NetworkSettings,
    pub dhcp: DhcpSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Cluster name; a master marks its DHCP offers with it.
    pub name: String,
    /// Shared secret written by the image builder (gossip key, join-token handoff).
    pub secret: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Auto,
    Master,
    Node,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSettings {
    pub hostname: Option<Hostname>,
    pub role: Role,
    pub ssh_authorized_keys: Vec<SshKey>,
    pub password_hash: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSettings {
    /// Physical interface carrying the home LAN untagged and the cluster VLAN tagged.
    pub interface: String,
    /// 802.1Q VLAN id, 1..=4094.
    pub vlan: u16,
    pub subnet: Ipv4Network,
    /// The master's address on the VLAN (inside `subnet`, outside the DHCP range).
    pub master: Ipv4Addr,
}

impl NetworkSettings {
    /// Name of the VLAN link: `<interface>.<vlan>` (`eth0.200`) when that fits Linux's 15-byte limit, else
    /// `vlan<id>` (`vlan200`): a predictable or USB NIC name such as `enxb827eb123456` leaves no room for the
    /// suffix. The one place the name is made.
    pub fn vlan_interface(&self) -> String {
        let dotted = format!("{}.{}", self.interface, self.vlan);
        if dotted.len() <= crate::types::IFNAME_MAX {
            dotted
        } else {
            format!("vlan{}", self.vlan)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSettings {
    /// First address handed out (inclusive).
    pub range_start: Ipv4Addr,
    /// Last address handed out (inclusive).
    pub range_end: Ipv4Addr,
    pub lease_time: Duration,
    /// Option 3; none unless configured.
    pub router: Option<Ipv4Addr>,
    /// Option 6; none unless configured.
    pub dns: Vec<Ipv4Addr>,
    /// Where leases are kept on disk.
    pub lease_file: PathBuf,
    /// How long a DECLINEd address stays out of the pool.
    pub decline_quarantine: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster: ClusterSettings {
                name: "cluster-lab".into(),
                secret: None,
            },
            node: NodeSettings {
                hostname: None,
                role: Role::Auto,
                ssh_authorized_keys: Vec::new(),
                password_hash: None,
            },
            network: NetworkSettings {
                interface: "eth0".into(),
                vlan: 200,
                subnet: Ipv4Network::new(Ipv4Addr::new(192, 168, 200, 0), 24)
                    .expect("valid default subnet"),
                master: Ipv4Addr::new(192, 168, 200, 1),
            },
            dhcp: DhcpSettings {
                range_start: Ipv4Addr::new(192, 168, 200, 101),
                range_end: Ipv4Addr::new(192, 168, 200, 200),
                lease_time: Duration::from_secs(3600),
                router: None,
                dns: Vec::new(),
                lease_file: PathBuf::from("/var/lib/cluster-lab/dhcp-leases"),
                decline_quarantine: Duration::from_secs(600),
            },
        }
    }
}
