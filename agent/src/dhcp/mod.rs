//! The cluster's own DHCP service (run by the master on the VLAN) and the probe a booting node uses to find it.

pub mod marker;
pub mod probe;
