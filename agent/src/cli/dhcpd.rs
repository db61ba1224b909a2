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
SIGTERM or SIGINT stops the server after everything received has been written and acknowledged.\n\n\
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
        rt.block_on(daemon::run(opts))?;
        Ok(ExitCode::SUCCESS)
    }
}
