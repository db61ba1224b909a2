//! `cluster-lab node remove NAME [--force]`: on the master, take a machine out of the cluster for good.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::config::Settings;
use crate::consul::ConsulClient;
use crate::dhcp::server::ServerConfig;
use crate::docker::swarm::Swarm;
use crate::election::ClusterRole;
use crate::host::hostname::Hostname;
use crate::host::{stamp, systemd};
use crate::membership;

/// Machines of the cluster (run on the master).
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Take a machine out of the cluster for good: a dead board, or a card replaced under a new hostname.
    ///
    /// Consul forgets it (force-leave), the Swarm removes its node, and its DHCP lease is released (dhcpd is
    /// stopped for the moment it takes). A machine still Ready in the Swarm is refused unless --force.
    Remove(RemoveArgs),
    /// Remove the Swarm nodes re-flashed cards left behind: a worker Down under a hostname that another node holds
    /// Ready at the same address. Run every minute by cluster-lab-node-tidy.timer; does nothing on a machine that is not the master.
    Tidy,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The machine's hostname, as `docker node ls` and the Consul UI show it.
    pub name: String,
    /// Remove it even though it is still Ready in the Swarm.
    #[arg(long)]
    pub force: bool,
    /// cluster-lab.toml [default: /etc/cluster-lab/cluster-lab.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl NodeCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            NodeCommand::Remove(args) => args.run(),
            NodeCommand::Tidy => tidy(),
        }
    }
}

fn tidy() -> anyhow::Result<ExitCode> {
    if stamp::read_role(Path::new("/"))? != Some(ClusterRole::Master) {
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let removed = runtime.block_on(async {
        let swarm = Swarm::connect(crate::status::docker_socket(), Duration::from_secs(10)).await?;
        membership::tidy_swarm(&swarm).await
    })?;
    for (hostname, id) in removed {
        println!("{hostname}: removed swarm node {id}, left behind when its card was re-flashed");
    }
    Ok(ExitCode::SUCCESS)
}

impl RemoveArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let name = Hostname::parse(&self.name).map_err(anyhow::Error::msg)?;
        if stamp::read_role(Path::new("/"))? != Some(ClusterRole::Master) {
            bail!("this machine is not the cluster's master: run `cluster-lab node remove` there");
        }
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::firstboot::ETC_CONFIG));
        let settings = Settings::load(&path)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let removed = runtime.block_on(async {
            let swarm =
                Swarm::connect(crate::status::docker_socket(), Duration::from_secs(10)).await?;
            let mut removed = membership::remove_from_services(
                &name,
                &ConsulClient::local_for(settings.cluster.secret.as_ref()),
                &swarm,
                self.force,
            )
            .await?;
            let unit = systemd::dhcpd_unit(&settings.network.vlan_interface());
            systemd::stop(&unit).await.context("stopping dhcpd")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let released = membership::release_leases(
                &settings.dhcp.lease_file,
                ServerConfig::from_settings(&settings, settings.network.master),
                &name,
                now,
            )
            .with_context(|| format!("releasing leases in {}", settings.dhcp.lease_file.display()));
            // dhcpd comes back whatever happened to the lease log.
            systemd::start(&unit)
                .await
                .context("starting dhcpd again")?;
            removed.leases = released?;
            anyhow::Ok(removed)
        })?;
        println!(
            "{name}: consul {}, swarm {}, leases released: {}",
            if removed.consul {
                "forgot it"
            } else {
                "did not know it"
            },
            if removed.swarm_nodes.is_empty() {
                "had no such node".to_string()
            } else {
                format!("removed {}", removed.swarm_nodes.join(", "))
            },
            if removed.leases.is_empty() {
                "none".to_string()
            } else {
                removed
                    .leases
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        Ok(ExitCode::SUCCESS)
    }
}
