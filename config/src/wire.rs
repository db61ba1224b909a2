//! Step 1: the file as written. Every field is optional, unknown keys are errors, and every value keeps its
//! position in the file so later checks can point at it.

use serde::Deserialize;
use toml::Spanned;

use super::types::{
    AbsPath, Addr, AddrRange, ClusterName, Hostname, HumanDuration, InterfaceName, PasswordHash,
    SchemaVersion, Secret, SshKey, Subnet, VlanId,
};
use super::Role;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireFile {
    /// Checked while parsing (only 1 is accepted); nothing else depends on it yet.
    #[allow(dead_code)]
    pub version: Option<Spanned<SchemaVersion>>,
    pub cluster: Option<WireCluster>,
    pub node: Option<WireNode>,
    pub network: Option<WireNetwork>,
    pub dhcp: Option<WireDhcp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCluster {
    pub name: Option<Spanned<ClusterName>>,
    pub secret: Option<Spanned<Secret>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireNode {
    pub hostname: Option<Spanned<Hostname>>,
    pub role: Option<Spanned<Role>>,
    pub ssh_authorized_keys: Option<Spanned<Vec<SshKey>>>,
    pub password_hash: Option<Spanned<PasswordHash>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireNetwork {
    pub interface: Option<Spanned<InterfaceName>>,
    pub vlan: Option<Spanned<VlanId>>,
    pub subnet: Option<Spanned<Subnet>>,
    pub master: Option<Spanned<Addr>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireDhcp {
    pub range: Option<Spanned<AddrRange>>,
    pub lease_time: Option<Spanned<HumanDuration>>,
    pub router: Option<Spanned<Addr>>,
    pub dns: Option<Spanned<Vec<Spanned<Addr>>>>,
    pub lease_file: Option<Spanned<AbsPath>>,
    pub decline_quarantine: Option<Spanned<HumanDuration>>,
}
