//! The machine's link to the cluster: facts about its links (MAC, index, addresses), the 802.1Q VLAN on the
//! wired interface, and the ARP probe for an address.

pub mod arp;
pub mod link;
pub mod vlan;
