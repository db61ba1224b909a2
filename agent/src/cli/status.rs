//! `cluster-lab status [--json]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::Settings;
use crate::consul::ConsulClient;
use crate::status::{docker_socket, Status};

/// Show this machine's role, VLAN address, Consul members and leader, Swarm nodes, and what is wrong.
///
/// Exit status: 0 healthy, 1 problems found, 2 error.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// cluster-lab.toml to take the VLAN interface from [default: /etc/cluster-lab/cluster-lab.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl StatusArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::firstboot::ETC_CONFIG));
        let settings = if path.exists() {
            Settings::load(&path)?
        } else {
            Settings::default()
        };
        let vlan_if = settings.network.vlan_interface();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let status = runtime.block_on(Status::collect(
            Path::new("/"),
            &settings.network.interface,
            &vlan_if,
            &ConsulClient::local_for(settings.cluster.secret.as_ref()),
            docker_socket(),
        ));
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&status).context("encoding status")?
            );
        } else {
            print!("{}", status.to_text());
        }
        Ok(if status.problems.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        })
    }
}
