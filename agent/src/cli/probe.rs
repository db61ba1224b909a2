//! `cluster-lab probe --interface IF [--timeout SECS] [--json]`.

use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Interface to send DHCPDISCOVER on.
    #[arg(long, short)]
    pub interface: String,
    /// Seconds to collect offers.
    #[arg(long, default_value_t = 3)]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

impl ProbeArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        anyhow::bail!("probe: not implemented yet")
    }
}
