//! The virtual cluster (`cargo xtask cluster`): the cluster-lab image booted as machines in QEMU (TCG) on a
//! virtual switch — where users try the product without hardware, and the proof that first boot forms a
//! cluster — and its acceptance test.
//!
//! - [`switch`]: the network namespace, bridge, taps and home-router DHCP server (the "home LAN").
//! - [`vm`]: one QEMU process, its serial log and QMP socket.
//! - [`disk`]: per-VM copies of the image, flashed with a hostname and the test key; boot files.
//! - [`up`], [`down`], [`status`]: the cluster's life cycle; [`watch`]: milestones while it boots.
//! - [`acceptance`]: `cluster test`, the assertions of the acceptance test and the timings.

pub mod acceptance;
pub mod benchmarks;
pub mod disk;
pub mod down;
pub mod fault;
pub mod host;
pub mod http;
pub mod imager;
pub mod serial;
pub mod ssh;
pub mod state;
pub mod status;
pub mod switch;
pub mod up;
pub mod vm;
pub mod watch;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub struct Cluster {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Boot N flashed copies of the image on a virtual switch: master first, then the nodes; wait until
    /// every machine is alive in Consul. The VMs keep running until `cluster down`.
    Up(up::Up),
    /// Power off the VMs and delete the virtual switch (safe to run any time).
    Down(down::Down),
    /// Machines: power, cable, QEMU process, home-LAN lease; and the Consul members the master sees.
    Status(status::Status),
    /// Pull a machine's plug, or the power strip's (`all`): `power node1 off|on|cycle`, `power all off`. Off is
    /// hard (QEMU stops at once, no shutdown); on boots the card again; `all` acts on every machine at one instant.
    Power(fault::Power),
    /// Pull a machine's network cable from the virtual switch, or plug it back in: `cable node1 unplug|plug`;
    /// make its switch port drop 802.1Q-tagged frames, or carry them again: `cable node1 drop-tags|pass-tags`.
    Cable(fault::Cable),
    /// One more machine into the running cluster: a card flashed with HOSTNAME, powered on (`add node3`;
    /// `--drop-tags` plugs it into a switch port that drops the cluster VLAN's tagged frames).
    Add(fault::Add),
    /// Re-flash a machine's card (power off, a fresh copy of the image as a new card, power on):
    /// `reflash node1`, or `reflash node1 --hostname node7` for a replacement card with a new name.
    Reflash(fault::Reflash),
    /// SSH into a machine with the cluster's test key (from the home LAN side): `cluster ssh node1 -- uptime`.
    Ssh(status::SshArgs),
    /// The acceptance test: boot a cluster, assert that first boot forms the cluster (PASS/FAIL with evidence),
    /// the simultaneous-power-on election, timings into docs/benchmarks.md; exit non-zero on any FAIL.
    Test(acceptance::Test),
}

impl Cluster {
    pub fn run(self) -> Result<()> {
        match self.action {
            Action::Up(a) => a.run(),
            Action::Down(a) => a.run(),
            Action::Status(a) => a.run(),
            Action::Ssh(a) => a.run(),
            Action::Power(a) => a.run(),
            Action::Cable(a) => a.run(),
            Action::Add(a) => a.run(),
            Action::Reflash(a) => a.run(),
            Action::Test(a) => a.run(),
        }
    }
}

/// The workspace root (the parent of vmlab/): images are found under build/, state kept under build/cluster/.
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("vmlab lives in the workspace root")
        .to_path_buf()
}
