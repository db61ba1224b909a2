//! The firewall between the home LAN and the cluster VLAN: an nftables table of cluster-lab's own.
//!
//! Anyone on the home LAN can send to a machine's LAN address, and with one static route also to its VLAN
//! addresses (Linux answers for every local address on every interface). The table drops what arrives from the
//! home LAN for the VLAN's addresses or the cluster's ports (Consul RPC and gossip, Swarm management, gossip and
//! VXLAN, election claims, DHCP), accepts from there only SSH, Consul's HTTP port (its ACLs decide the rest), mDNS,
//! ping and the machine's own DHCP clients, and on the VLAN takes the cluster's ports only from the cluster's
//! subnet. Forwarding into the VLAN is dropped unless it comes from the VLAN or the machine's containers.
//!
//! The rules only drop, in a table of their own, so Docker's (iptables-nft) keep working beside them. The file is
//! loaded by `nft -f` at once and by [`UNIT`] on every later boot, before the network and every service.

use std::path::PathBuf;

use crate::command::{self, CommandError};
use crate::config::NetworkSettings;
use crate::host::render::{fill, RenderError, RenderedFile};

/// The ruleset on the target.
pub const PATH: &str = "/etc/cluster-lab/firewall.nft";
/// The unit that loads [`PATH`] on every boot.
pub const UNIT: &str = "cluster-lab-firewall.service";
/// The nftables table the ruleset owns (`inet` family: IPv4 and IPv6).
pub const TABLE: &str = "cluster_lab";
/// nftables' command-line tool (Debian package `nftables`).
pub const NFT: &str = "nft";

const TEMPLATE: &str = include_str!("../../templates/firewall/cluster-lab.nft");

/// SSH, for the owner.
const SSH_PORT: u16 = 22;
/// mDNS: `<hostname>.local` answered by avahi.
const MDNS_PORT: u16 = 5353;
/// The machine's own DHCPv6 client (its home-LAN address).
const DHCPV6_CLIENT_PORT: u16 = 546;

/// TCP ports only the cluster may reach.
pub fn cluster_tcp_ports() -> Vec<u16> {
    use crate::consul::config::{SERF_LAN_PORT, SERF_WAN_PORT, SERVER_RPC_PORT};
    use crate::docker::swarm;
    vec![
        SERVER_RPC_PORT,
        SERF_LAN_PORT,
        SERF_WAN_PORT,
        swarm::MANAGER_PORT,
        swarm::GOSSIP_PORT,
    ]
}

/// UDP ports only the cluster may reach.
pub fn cluster_udp_ports() -> Vec<u16> {
    use crate::consul::config::{SERF_LAN_PORT, SERF_WAN_PORT};
    use crate::docker::swarm;
    let mut ports = vec![
        crate::dhcp::reply::SERVER_PORT,
        SERF_LAN_PORT,
        SERF_WAN_PORT,
        swarm::GOSSIP_PORT,
        swarm::VXLAN_PORT,
        crate::election::socket::PORT,
    ];
    ports.sort_unstable();
    ports
}

/// UDP ports the VLAN may reach from any source address: DHCP and the election's claims, which machines send
/// before they have a VLAN address (the claims are signed, the DHCP server answers only there).
pub fn before_address_udp_ports() -> Vec<u16> {
    vec![
        crate::dhcp::reply::SERVER_PORT,
        crate::dhcp::reply::CLIENT_PORT,
        crate::election::socket::PORT,
    ]
}

/// TCP ports the home LAN may reach.
pub fn home_tcp_ports() -> Vec<u16> {
    vec![SSH_PORT, crate::consul::config::HTTP_PORT]
}

/// UDP ports the home LAN may reach (the switch check's untagged claims are signed).
pub fn home_udp_ports() -> Vec<u16> {
    vec![
        crate::dhcp::reply::CLIENT_PORT,
        DHCPV6_CLIENT_PORT,
        MDNS_PORT,
        crate::election::switch_check::PORT,
    ]
}

fn list(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ruleset for this machine's network (the same on master and nodes).
pub fn render(net: &NetworkSettings) -> Result<RenderedFile, RenderError> {
    let vlan_if = net.vlan_interface();
    let subnet = net.subnet.to_string();
    let (cluster_tcp, cluster_udp) = (list(&cluster_tcp_ports()), list(&cluster_udp_ports()));
    let (home_tcp, home_udp) = (list(&home_tcp_ports()), list(&home_udp_ports()));
    let before_address_udp = list(&before_address_udp_ports());
    let contents = fill(
        "firewall/cluster-lab.nft",
        TEMPLATE,
        &[
            ("interface", net.interface.as_str()),
            ("vlan_interface", vlan_if.as_str()),
            ("subnet", subnet.as_str()),
            ("cluster_tcp", cluster_tcp.as_str()),
            ("cluster_udp", cluster_udp.as_str()),
            ("home_tcp", home_tcp.as_str()),
            ("home_udp", home_udp.as_str()),
            ("before_address_udp", before_address_udp.as_str()),
        ],
    )?;
    Ok(RenderedFile {
        path: PathBuf::from(PATH),
        contents,
        mode: 0o644,
        group: None,
    })
}

/// Load the ruleset at `path` into the kernel (replacing the table, in one transaction).
pub async fn load(path: &std::path::Path) -> Result<(), CommandError> {
    command::run(NFT, [std::ffi::OsStr::new("-f"), path.as_os_str()])
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_port_is_both_the_cluster_s_and_the_home_lan_s() {
        for p in home_tcp_ports() {
            assert!(!cluster_tcp_ports().contains(&p), "tcp {p}");
        }
        for p in home_udp_ports() {
            assert!(!cluster_udp_ports().contains(&p), "udp {p}");
        }
        assert!(cluster_tcp_ports().contains(&2377));
        assert!(cluster_udp_ports().contains(&4789));
        assert!(cluster_udp_ports().contains(&6247));
    }
}
