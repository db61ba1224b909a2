//! `cluster-lab elect --config FILE --interface IF`: the master election alone, for benchmarks and diagnosis.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;

use crate::config::Settings;
use crate::election::runner::{announce_master, ElectionSetup};
use crate::election::{Claim, ClusterRole, Mac, Timing};
use crate::firstboot::elect_on_vlan;

/// Run the master election exactly as first boot does (DHCP probe, claims on UDP 6247, ARP probe of the master
/// address) on INTERFACE, print the role this machine takes and how long the decision took, and change nothing:
/// no role is remembered. An elected master holds the master address and announces itself (as first boot does
/// until its DHCP service answers) for --announce seconds, then gives the address up.
///
/// Output: one line, `role=master decided_ms=5873` (milliseconds from --start-at, or from the start).
#[derive(Debug, Args)]
pub struct ElectArgs {
    /// cluster-lab.toml with the cluster's name and secret (and the master address).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Interface on the cluster's VLAN (default: the VLAN interface the configuration names).
    #[arg(long, short)]
    pub interface: Option<String>,
    /// Seconds an elected master keeps the address and announces itself before it lets go.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub announce: u64,
    /// Power-on instant, milliseconds since the Unix epoch: wait until then, and count the decision time from it
    /// (so that several machines start at the same instant).
    #[arg(long)]
    pub start_at: Option<u64>,
}

impl ElectArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let settings = Settings::load(&self.config)?;
        let secret = settings.cluster.secret.clone().with_context(|| {
            format!(
                "{}: [cluster] secret is not set; the election's claims are keyed by it",
                self.config.display()
            )
        })?;
        let interface = self
            .interface
            .clone()
            .unwrap_or_else(|| settings.network.vlan_interface());
        let mac = crate::net::link::mac(&interface)
            .with_context(|| format!("reading the MAC address of {interface}"))?
            .0;
        let setup = ElectionSetup {
            interface: interface.clone(),
            cluster: settings.cluster.name.clone(),
            mac: Mac(mac),
            master: settings.network.master,
            timing: Timing::default(),
            arp_count: 2,
            give_up_after: Duration::from_secs(600),
        };
        let start = match self.start_at {
            Some(ms) => {
                let at = UNIX_EPOCH + Duration::from_millis(ms);
                if let Ok(wait) = at.duration_since(SystemTime::now()) {
                    std::thread::sleep(wait);
                }
                at
            }
            None => SystemTime::now(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        runtime.block_on(async {
            let (role, socket) = elect_on_vlan(&setup, None, secret.expose()).await?;
            let decided = SystemTime::now()
                .duration_since(start)
                .unwrap_or_default()
                .as_millis();
            let name = match role {
                ClusterRole::Master => "master",
                ClusterRole::Node => "node",
            };
            println!("role={name} decided_ms={decided}");
            if role == ClusterRole::Master {
                hold_master(&setup, &socket, self.announce).await?;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Take the master address, announce for `secs`, let the address go.
async fn hold_master(
    setup: &ElectionSetup,
    socket: &crate::election::socket::ClaimSocket,
    secs: u64,
) -> anyhow::Result<()> {
    let address = format!("{}/32", setup.master);
    crate::command::run("ip", ["addr", "add", &address, "dev", &setup.interface]).await?;
    let claim = Claim {
        cluster: setup.cluster.clone(),
        mac: setup.mac,
        master: true,
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(secs),
        announce_master(socket, &claim, Duration::from_millis(500)),
    )
    .await;
    crate::command::run("ip", ["addr", "del", &address, "dev", &setup.interface]).await?;
    Ok(())
}
