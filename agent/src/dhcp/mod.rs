//! The cluster's own DHCP service (run by the master on the VLAN) and the probe a booting node uses to find it.

pub mod daemon;
pub mod leases;
pub mod marker;
pub mod packet;
pub mod pool;
pub mod probe;
pub mod reply;
pub mod server;
pub mod socket;
pub mod writer;
