//! `cluster-lab config check FILE` and `cluster-lab config default`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::{self, Settings, DEFAULT_TOML};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE and print the effective settings (every key, defaults filled in).
    ///
    /// On success the settings are printed to stdout as TOML (the secret is shown only as "<set>") and
    /// the exit status is 0. On error one line naming the file, line, column and key, and what is
    /// allowed, goes to stderr and the exit status is 2.
    #[command(after_help = "Example:\n  cluster-lab config check /boot/firmware/cluster-lab.toml")]
    Check {
        /// Path to cluster-lab.toml [default on a running node: /boot/firmware/cluster-lab.toml, else
        /// /boot/cluster-lab.toml].
        file: Option<PathBuf>,
    },
    /// Print a complete, commented default cluster-lab.toml to stdout.
    ///
    /// Every key with its default value and what it allows; a good start for your own file:
    /// `cluster-lab config default > cluster-lab.toml`.
    Default,
}

impl ConfigCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let text = match self {
            ConfigCommand::Check { file } => {
                let file = match file {
                    Some(file) => file,
                    None => config::find_on_boot_partition().with_context(|| {
                        format!(
                            "no FILE given and none of {} exists; give the path of cluster-lab.toml",
                            config::BOOT_PATHS.join(", ")
                        )
                    })?,
                };
                let settings = Settings::load(&file)?;
                format!(
                    "# Effective settings from {} (defaults filled in)\n{}",
                    file.display(),
                    settings.to_toml()
                )
            }
            ConfigCommand::Default => DEFAULT_TOML.to_owned(),
        };
        std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("writing to stdout")?;
        Ok(ExitCode::SUCCESS)
    }
}
