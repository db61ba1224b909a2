//! `cargo xtask bench <what>`: benchmarks that print numbers and record them in docs/benchmarks.md.
//! They are measurements, not tests: nothing here passes or fails on a speed.

use anyhow::Result;
use clap::{Args, Subcommand};
use xshell::Shell;

mod dhcp;
mod election;
mod flash;
mod machine;
mod netns;
mod perfdhcp;
mod report;
mod scale;
mod servers;
mod switch;

#[derive(Debug, Args)]
pub struct Bench {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// DORA exchanges per second (at ≤ 1 % drops) and mean latency of `cluster-lab dhcpd`, kea-dhcp4 and
    /// dnsmasq, measured with perfdhcp in network namespaces (needs root). Takes a few minutes; writes the
    /// "DHCP server" section of docs/benchmarks.md.
    Dhcp(dhcp::Dhcp),
    /// The same image written to a file and to a throttled "SD card" (a loop device at a card's speed) by
    /// `dd`, bmaptool and cluster-lab's flash, each write and its read-back check timed (needs root,
    /// bmap-tools, qemu-storage-daemon). Takes a few minutes; writes the "Flashing" section of
    /// docs/benchmarks.md.
    Flash(flash::Flash),
    /// N candidates powered on at one instant (the real `cluster-lab elect` in network namespaces on one bridge),
    /// 30 trials for each of 3, 5 and 10: exactly one master every time, and the time to the decision (needs
    /// root). Takes about 20 minutes; writes the "Election at scale" section of docs/benchmarks.md.
    Election(election::Election),
    /// A master and up to 100 machines in network namespaces running the real services (cluster-lab dhcpd,
    /// Consul server and clients, dockerd manager and workers): time until all hold leases, are alive in Consul
    /// and Ready in Swarm, and the master's memory and CPU per service, beside dnsmasq serving the same leases
    /// (needs root). Takes about 10 minutes for 100; writes the "A hundred machines" section of docs/benchmarks.md.
    Scale(scale::Scale),
    /// Whole virtual clusters (3 and 5 machines by default) powered on at one instant: time until every machine
    /// is alive in Consul and Ready in Swarm next to the slowest machine's floor, and where each first boot spent
    /// its time (needs root, KVM-less QEMU; about 10 minutes per cluster). Writes the "Everyone powered on at
    /// once" section of docs/benchmarks.md.
    PowerOn(vmlab::acceptance::at_once::PowerOn),
}

impl Bench {
    pub fn run(self, sh: &Shell) -> Result<()> {
        match self.what {
            What::Dhcp(d) => d.run(sh),
            What::Flash(f) => f.run(sh),
            What::Election(e) => e.run(sh),
            What::Scale(s) => s.run(sh),
            What::PowerOn(p) => p.run(),
        }
    }
}
