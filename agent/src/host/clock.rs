//! The cluster's clock: chrony (Debian's package) on every machine. The master serves time to the cluster VLAN,
//! from the internet when its home LAN has it and from its own clock when not; nodes take their time from the
//! master and step to it. First boot sets a node's clock from the master before it starts Consul or joins the
//! Swarm, whose certificates are only valid within hours of the master's time.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use ipnetwork::Ipv4Network;

use crate::command::{self, CommandError};
use crate::host::render::{fill, RenderError, RenderedFile};

/// chrony's drop-in directory (Debian's chrony.conf reads `confdir /etc/chrony/conf.d`).
pub const PATH: &str = "/etc/chrony/conf.d/cluster-lab.conf";
/// The unit that runs chronyd.
pub const UNIT: &str = "chrony.service";
/// NTP: served by the master on the VLAN.
pub const NTP_PORT: u16 = 123;
/// chrony's control tool.
pub const CHRONYC: &str = "chronyc";

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

/// Wait until chronyd has set the clock from its sources: `chronyc waitsync`, polling every `interval` up to
/// `timeout`, until the correction still to apply is under 0.1 s.
pub async fn wait_synced(timeout: Duration, interval: Duration) -> Result<(), CommandError> {
    let interval_s = interval.as_secs().max(1);
    let tries = (timeout.as_secs() / interval_s).max(1).to_string();
    let interval_s = interval_s.to_string();
    command::run(CHRONYC, ["waitsync", &tries, "0.1", "0", &interval_s])
        .await
        .map(drop)
}

/// How far this machine's clock is from its time source, and which source (`chronyc -c tracking`).
pub async fn tracking() -> anyhow::Result<Tracking> {
    let out = command::run(CHRONYC, ["-c", "tracking"]).await?;
    Tracking::parse(&out).ok_or_else(|| {
        anyhow::anyhow!(
            "chronyc -c tracking printed what it never does: {:?}",
            out.trim()
        )
    })
}

/// The fields of `chronyc -c tracking` first boot reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracking {
    /// The source's address (`192.168.200.1`), or chrony's name for none (`0.0.0.0`, `127.127.1.1` for local).
    pub source: String,
    /// Seconds the system clock is off the source's time (positive: fast).
    pub offset_s: f64,
}

impl Tracking {
    /// `Ref ID,name,stratum,ref time,system time,last offset,…` (chronyc's CSV form).
    pub fn parse(csv: &str) -> Option<Tracking> {
        let f: Vec<&str> = csv.trim().split(',').collect();
        Some(Tracking {
            source: f.get(1)?.to_string(),
            offset_s: f.get(4)?.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chronyc_tracking_csv() {
        let t = Tracking::parse(
            "C0A8C801,192.168.200.1,11,1765065600.123456789,-0.000012345,-0.000010000,0.000020000,\
             -12.345,-0.010,0.100,0.000100000,0.000200000,64.0,Normal\n",
        )
        .unwrap();
        assert_eq!(t.source, "192.168.200.1");
        assert!((t.offset_s + 0.000012345).abs() < 1e-12);
        assert_eq!(Tracking::parse("garbage"), None);
    }
}
