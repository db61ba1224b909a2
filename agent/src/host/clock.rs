//! The cluster's clock: chrony (Debian's package) on every machine. The master serves time to the cluster VLAN,
//! from the internet when its home LAN has it and from its own clock when not; nodes take their time from the
//! master and step to it. First boot sets a node's clock from the master before it starts Consul or joins the
//! Swarm, whose certificates are only valid within hours of the master's time.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnetwork::Ipv4Network;

use crate::host::render::{fill, RenderError, RenderedFile};

/// chrony's drop-in directory (Debian's chrony.conf reads `confdir /etc/chrony/conf.d`).
pub const PATH: &str = "/etc/chrony/conf.d/cluster-lab.conf";
/// The unit that runs chronyd.
pub const UNIT: &str = "chrony.service";
/// NTP: served by the master on the VLAN.
pub const NTP_PORT: u16 = 123;

const MASTER: &str = include_str!("../../templates/chrony/master.conf");
const NODE: &str = include_str!("../../templates/chrony/node.conf");

fn file(contents: String) -> RenderedFile {
    RenderedFile {
        path: PathBuf::from(PATH),
        contents,
        mode: 0o644,
        group: None,
    }
}

/// The master: serve the cluster's subnet.
pub fn render_master(subnet: Ipv4Network) -> Result<RenderedFile, RenderError> {
    let subnet = subnet.to_string();
    Ok(file(fill(
        "chrony/master.conf",
        MASTER,
        &[("subnet", subnet.as_str())],
    )?))
}

/// A node: the master is its time source.
pub fn render_node(master: Ipv4Addr) -> Result<RenderedFile, RenderError> {
    let master = master.to_string();
    Ok(file(fill(
        "chrony/node.conf",
        NODE,
        &[("master", master.as_str())],
    )?))
}

/// How far off a node's clock may be from the master's before first boot steps it rather than leave it to chronyd
/// (which slews small offsets): well inside the Swarm's certificate margins and the acceptance test's 1 s.
pub const STEP_THRESHOLD: f64 = 0.05;
