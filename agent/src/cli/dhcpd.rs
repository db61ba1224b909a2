//! `cluster-lab dhcpd --config FILE [--interface IF]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct DhcpdArgs {
    /// Path to cluster-lab.toml.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Interface to serve on (default: the VLAN interface, <interface>.<vlan>).
    #[arg(long, short)]
    pub interface: Option<String>,
}

impl DhcpdArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        anyhow::bail!("dhcpd: not implemented yet")
    }
}
