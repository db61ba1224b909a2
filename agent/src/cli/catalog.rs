//! `cluster-lab catalog-sync [--once]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::catalog::Sync;
use crate::config::Settings;
use crate::consul::ConsulClient;
use crate::docker::swarm::Swarm;

/// Keep Consul's catalog in step with the Swarm tasks running on this machine: each running task is a service
/// (its Swarm service's name, `_` and `.` made `-`) with a health check on this machine's node, and leaves when its
/// container stops. Run on every machine by cluster-lab-catalog.service.
#[derive(Debug, Args)]
#[command(
    after_help = "The Consul UI at :8500 then shows which containers run on which machine, and \
<service>.service.consul resolves to the machines running its tasks.\n\
Only services whose ID begins with swarm-task- are touched."
)]
pub struct CatalogSyncArgs {
    /// Sync once and exit (0 when the catalog is in step, 2 on an error) instead of every 2 seconds for ever.
    #[arg(long)]
    pub once: bool,
    /// cluster-lab.toml holding the cluster secret (Consul's token is derived from it)
    /// [default: /etc/cluster-lab/cluster-lab.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// dockerd's socket.
    #[arg(long, default_value = crate::docker::swarm::SOCKET)]
    pub docker_socket: PathBuf,
}

impl CatalogSyncArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::firstboot::ETC_CONFIG));
        let settings = Settings::load(&path)?;
        let consul = ConsulClient::local_for(settings.cluster.secret.as_ref());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(async move {
            let swarm = Swarm::connect(&self.docker_socket, Duration::from_secs(120))
                .await
                .context("connecting to dockerd")?;
            let mut sync = Sync::new(swarm.docker().clone(), consul);
            if self.once {
                let changes = sync.pass().await?;
                for id in &changes.registered {
                    println!("registered {id}");
                }
                for id in &changes.deregistered {
                    println!("deregistered {id}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            tracing::info!("keeping consul's catalog in step with this machine's swarm tasks");
            sync.run().await;
            Ok(ExitCode::SUCCESS)
        })
    }
}
