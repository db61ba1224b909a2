//! `cluster-lab config check FILE` and `cluster-lab config default`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE and print the effective settings (defaults filled in).
    Check {
        /// Path to cluster-lab.toml.
        file: PathBuf,
    },
    /// Print a complete, commented default cluster-lab.toml.
    Default,
}

impl ConfigCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        anyhow::bail!("config: not implemented yet")
    }
}
