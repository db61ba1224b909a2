//! systemd-networkd files that keep the cluster VLAN across reboots without the agent.
//!
//! Three files under `/etc/systemd/network/`: the parent interface (home LAN by DHCP, plus `VLAN=`), the VLAN
//! netdev, and the VLAN's addressing (static on the master, DHCP from the master on nodes).

use std::path::PathBuf;

use ipnetwork::Ipv4Network;

use crate::config::NetworkSettings;
use crate::election::ClusterRole;
use crate::host::render::{fill, RenderError, RenderedFile};

/// Where networkd looks for administrator-provided files.
pub const NETWORK_DIR: &str = "/etc/systemd/network";
/// Bytes an 802.1Q tag adds to a frame.
pub const VLAN_TAG_LEN: u32 = 4;
/// MTU of the parent interface assumed when rendering (standard Ethernet).
pub const PARENT_MTU: u32 = 1500;

const PARENT: &str = include_str!("../../templates/networkd/parent.network");
const NETDEV: &str = include_str!("../../templates/networkd/vlan.netdev");
const VLAN_MASTER: &str = include_str!("../../templates/networkd/vlan-master.network");
const VLAN_NODE: &str = include_str!("../../templates/networkd/vlan-node.network");

/// MTU for a VLAN on a parent with `parent_mtu`: the tag is taken out of the payload.
pub fn vlan_mtu(parent_mtu: u32) -> u32 {
    parent_mtu - VLAN_TAG_LEN
}

/// File names, shared with the overlay's pre-firstboot `10-cluster-lab-<interface>.network` (same name, so the
/// rendered file in /etc replaces it).
fn path(name: &str, ext: &str) -> PathBuf {
    PathBuf::from(format!("{NETWORK_DIR}/10-cluster-lab-{name}.{ext}"))
}

/// The three networkd files for `role`.
pub fn render(net: &NetworkSettings, role: ClusterRole) -> Result<Vec<RenderedFile>, RenderError> {
    let vlan_if = net.vlan_interface();
    let vlan = net.vlan.to_string();
    let mtu = vlan_mtu(PARENT_MTU).to_string();
    let master = Ipv4Network::new(net.master, net.subnet.prefix())
        .expect("prefix comes from a valid network")
        .to_string();
    let master_ip = net.master.to_string();
    let common = [
        ("interface", net.interface.as_str()),
        ("master_ip", master_ip.as_str()),
        ("vlan_interface", vlan_if.as_str()),
        ("vlan", vlan.as_str()),
        ("mtu", mtu.as_str()),
        ("address", master.as_str()),
    ];
    let (vlan_tpl, vlan_name) = match role {
        ClusterRole::Master => (VLAN_MASTER, "vlan-master.network"),
        ClusterRole::Node => (VLAN_NODE, "vlan-node.network"),
    };
    let file = |p: PathBuf, origin, tpl| -> Result<RenderedFile, RenderError> {
        Ok(RenderedFile {
            path: p,
            contents: fill(origin, tpl, &common)?,
            mode: 0o644,
            group: None,
        })
    };
    Ok(vec![
        file(path(&net.interface, "network"), "parent.network", PARENT)?,
        file(path(&vlan_if, "netdev"), "vlan.netdev", NETDEV)?,
        file(path(&vlan_if, "network"), vlan_name, vlan_tpl)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    #[test]
    fn mtu_leaves_room_for_the_tag() {
        assert_eq!(vlan_mtu(1500), 1496);
    }

    #[test]
    fn file_names_match_the_overlay() {
        let files = render(&Settings::default().network, ClusterRole::Node).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
        assert_eq!(
            names,
            [
                "/etc/systemd/network/10-cluster-lab-eth0.network",
                "/etc/systemd/network/10-cluster-lab-eth0.200.netdev",
                "/etc/systemd/network/10-cluster-lab-eth0.200.network",
            ]
            .map(PathBuf::from)
        );
    }
}
