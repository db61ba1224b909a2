//! The service manager first boot drives, behind a small trait: systemd on the target; in the root-tier tests, a
//! stand-in that runs the same daemons (Consul, dockerd) inside network namespaces, where there is no systemd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::host::systemd;

/// What first boot asks of the service manager.
pub trait Services: Send + Sync + std::fmt::Debug {
    /// Enable `unit` for every boot and start it now, restarting it when `restart` (its configuration changed).
    /// Must not wait for the unit to finish starting.
    fn enable_and_start(&self, unit: &str, restart: bool) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Send `unit` its reload signal (dockerd re-reads its labels).
    fn reload(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Restart those of `units` that are running.
    fn try_restart(&self, units: &[&str]) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Make networkd apply changed files.
    fn networkd_reload(&self) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Disable `unit` for later boots.
    fn disable(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>>;
    /// Stop `unit` now (nothing when it is not running) and wait until it has stopped.
    fn stop(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// systemd, through systemctl and networkctl.
#[derive(Debug, Clone, Copy)]
pub struct Systemd;

impl Services for Systemd {
    fn enable_and_start(&self, unit: &str, restart: bool) -> BoxFuture<'_, anyhow::Result<()>> {
        let unit = unit.to_string();
        Box::pin(async move {
            systemd::enable(&unit).await?;
            if restart {
                systemd::restart_no_block(&unit).await?;
            } else {
                systemd::start_no_block(&unit).await?;
            }
            Ok(())
        })
    }

    fn reload(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let unit = unit.to_string();
        Box::pin(async move { Ok(systemd::reload(&unit).await?) })
    }

    fn try_restart(&self, units: &[&str]) -> BoxFuture<'_, anyhow::Result<()>> {
        let units: Vec<String> = units.iter().map(|u| u.to_string()).collect();
        Box::pin(async move {
            let refs: Vec<&str> = units.iter().map(String::as_str).collect();
            Ok(systemd::try_restart(&refs).await?)
        })
    }

    fn networkd_reload(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async { Ok(systemd::networkd_reload().await?) })
    }

    fn disable(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let unit = unit.to_string();
        Box::pin(async move { Ok(systemd::disable(&unit).await?) })
    }

    fn stop(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        let unit = unit.to_string();
        Box::pin(async move { Ok(systemd::stop(&unit).await?) })
    }
}

/// Where first boot finds the services it configures.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The local Consul agent's HTTP API.
    pub consul: SocketAddr,
    /// The local Docker engine's socket.
    pub docker_socket: PathBuf,
    /// Consul's data directory (written into its configuration).
    pub consul_data_dir: String,
    /// `docker save` archives loaded into dockerd once it answers ([`crate::docker::images::DIR`] on the target).
    pub images_dir: PathBuf,
    pub services: Arc<dyn Services>,
    pub clock: Clock,
}

/// Whose clock first boot sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// This machine's, with chrony: the master serves the VLAN, a node steps to the master before it joins.
    Chrony,
    /// Machines that share one clock (the root tier's network namespaces share the host's): nothing to set.
    Shared,
}

impl Environment {
    /// The target: systemd, Consul on 127.0.0.1:8500, Docker on /run/docker.sock.
    pub fn target() -> Environment {
        Environment {
            consul: crate::consul::api::LOCAL.parse().expect("valid address"),
            docker_socket: PathBuf::from(crate::docker::swarm::SOCKET),
            consul_data_dir: crate::consul::config::DATA_DIR.into(),
            images_dir: PathBuf::from(crate::docker::images::DIR),
            services: Arc::new(Systemd),
            clock: Clock::Chrony,
        }
    }
}
