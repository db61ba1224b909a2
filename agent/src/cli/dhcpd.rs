//! `cluster-lab dhcpd --config FILE [--interface IF]`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::Settings;
use crate::dhcp::daemon::{self, DaemonOptions};
use crate::dhcp::server::ServerConfig;

/// Serve DHCP on the cluster VLAN only. Leases are synced to disk before they are acknowledged; the server stops
/// on SIGTERM or SIGINT.
#[derive(Debug, Args)]
#[command(
    after_help = "Needs root (port 67, SO_BINDTODEVICE). Replies go out only on the chosen interface. \
A client keeps its address across restarts of the server and of the client (client identifier, else MAC; a \
re-flashed card by its hostname).\n\n\
An ACK is sent only after its lease is synced to the lease file, so leases survive a crash or kill -9. \
SIGTERM or SIGINT stops the server after everything received has been written and acknowledged. Lease \
times are wall-clock seconds; when the system clock is stepped (a board without a battery-backed clock setting \
its time), they move with it, so no lease ends early.\n\n\
On the master's own VLAN interface it also answers, on the home LAN (UDP 6248), the signed claims of \
machines that cannot reach the VLAN, so that they stop instead of becoming a second master.\n\n\
Logs go to stderr; CLUSTER_LAB_LOG=debug also shows offers and dropped packets."
)]
pub struct DhcpdArgs {
    /// Path to cluster-lab.toml.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Interface to serve on (default: the VLAN interface, <interface>.<vlan>). The server never answers on any
    /// other interface.
    #[arg(long, short)]
    pub interface: Option<String>,
    /// Lease file (default: dhcp.lease_file from the configuration).
    #[arg(long, value_name = "PATH")]
    pub lease_file: Option<PathBuf>,
    /// Server identifier to answer as (default: network.master from the configuration, which must be configured on
    /// the interface; with this option it need not be).
    #[arg(long, value_name = "ADDRESS")]
    pub server_address: Option<Ipv4Addr>,
    /// UDP port to listen on (tests and benchmarks only).
    #[arg(long, default_value_t = 67, hide = true)]
    pub port: u16,
}

impl DhcpdArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let settings = Settings::load(&self.config)?;
        let interface = self
            .interface
            .unwrap_or_else(|| settings.network.vlan_interface());
        let server_id = self.server_address.unwrap_or(settings.network.master);
        crate::net::link::index(&interface)?;
        daemon::check_server_address(
            &interface,
            server_id,
            settings.network.subnet.prefix(),
            self.server_address.is_some(),
        )?;
        let opts = DaemonOptions {
            interface,
            port: self.port,
            lease_file: self
                .lease_file
                .unwrap_or_else(|| settings.dhcp.lease_file.clone()),
            server: ServerConfig::from_settings(&settings, server_id),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting tokio runtime")?;
        rt.block_on(async {
            if opts.interface == settings.network.vlan_interface() {
                if let Some(answer) = answer_on_home_lan(&settings) {
                    tokio::spawn(answer);
                }
            }
            daemon::run(opts).await
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// The master's half of the switch check ([`crate::election::switch_check`]): a candidate whose claims reach the
/// home LAN but not the VLAN hears from the master there, and stops instead of becoming a second master. Needs the
/// cluster's secret (the claims are signed); without it, or without the home-LAN interface, there is nothing to do.
fn answer_on_home_lan(settings: &Settings) -> Option<impl std::future::Future<Output = ()>> {
    use crate::election::{claim::ClaimKey, socket::ClaimSocket, switch_check, Claim, Mac};
    let secret = settings.cluster.secret.as_ref()?;
    let lan = &settings.network.interface;
    let prepared = crate::net::link::mac(lan)
        .map_err(anyhow::Error::from)
        .and_then(|mac| {
            let socket = ClaimSocket::bind(
                lan,
                switch_check::PORT,
                ClaimKey::from_secret(secret.expose()),
            )?;
            Ok((mac, socket))
        });
    let (mac, socket) = match prepared {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "not answering claims on the home LAN (the switch check)");
            return None;
        }
    };
    let ours = Claim {
        cluster: settings.cluster.name.clone(),
        mac: Mac(mac.0),
        master: true,
    };
    Some(async move {
        if let Err(e) =
            switch_check::answer(&socket, &ours, std::time::Duration::from_millis(500)).await
        {
            tracing::warn!(error = %e, "stopped answering claims on the home LAN");
        }
    })
}
