//! `cluster-lab probe --interface IF [--timeout SECS] [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::config::{self, Settings};
use crate::dhcp::probe::{self, Report};

/// Broadcast DHCPDISCOVER (never REQUEST: no lease is taken) and list the servers that offer.
///
/// Exit status: 0 a cluster-lab master of this cluster answered, 1 none did, 2 error.
#[derive(Debug, Args)]
#[command(
    after_help = "Only DHCPDISCOVER is sent (never DHCPREQUEST), so no lease is taken.\n\
Exit status: 0 a cluster-lab master of this cluster answered, 1 none did, 2 error."
)]
pub struct ProbeArgs {
    /// Interface to send DHCPDISCOVER on.
    #[arg(long, short)]
    pub interface: String,
    /// Seconds to collect offers (the DISCOVER is repeated every second).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// cluster-lab.toml naming this node's cluster
    /// [default: /boot/firmware/cluster-lab.toml, else /boot/cluster-lab.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Cluster name to look for (overrides the configuration file).
    #[arg(long)]
    pub cluster: Option<String>,
}

impl ProbeArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let cluster = self.cluster_name()?;
        let timeout = Duration::from_secs(self.timeout);
        tracing::info!(interface = %self.interface, %cluster, timeout_secs = self.timeout,
            "probing for DHCP servers");
        let offers = probe::collect_offers(&self.interface, timeout)
            .with_context(|| format!("probing for DHCP servers on {}", self.interface))?;
        let report = Report::new(&self.interface, &cluster, timeout, &offers);
        if self.json {
            print!("{}", report.to_json());
        } else {
            print!("{}", report.to_text());
        }
        if report.servers.is_empty() {
            tracing::info!(interface = %self.interface, "no DHCP server answered");
        } else if !report.master_found {
            tracing::info!(interface = %self.interface, %cluster,
                "no cluster-lab master of this cluster answered");
        }
        Ok(ExitCode::from(report.exit_code()))
    }

    /// `--cluster`, else the name from `--config`, else from the first default configuration file found.
    fn cluster_name(&self) -> anyhow::Result<String> {
        if let Some(name) = &self.cluster {
            anyhow::ensure!(
                !name.is_empty(),
                "--cluster: the cluster name must not be empty"
            );
            return Ok(name.clone());
        }
        let path = match &self.config {
            Some(p) => p.clone(),
            None => config::find_on_boot_partition().with_context(|| {
                format!(
                    "no configuration found at {}; pass --config FILE or --cluster NAME",
                    config::BOOT_PATHS.join(" or ")
                )
            })?,
        };
        let settings = Settings::load(&path)?;
        Ok(settings.cluster.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_flag_overrides_the_config() {
        let args = ProbeArgs {
            interface: "eth0".into(),
            timeout: 1,
            json: false,
            config: Some("/nonexistent/cluster-lab.toml".into()),
            cluster: Some("lab".into()),
        };
        assert_eq!(args.cluster_name().unwrap(), "lab");
    }

    #[test]
    fn missing_explicit_config_is_an_error_naming_the_file() {
        let args = ProbeArgs {
            interface: "eth0".into(),
            timeout: 1,
            json: false,
            config: Some("/nonexistent/cluster-lab.toml".into()),
            cluster: None,
        };
        let err = format!("{:#}", args.cluster_name().unwrap_err());
        assert!(err.contains("/nonexistent/cluster-lab.toml"), "{err}");
    }
}
