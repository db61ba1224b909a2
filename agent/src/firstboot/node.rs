//! First boot of a node: an address from the master over DHCP, a Consul client joined to the master, the sealed
//! join token read through Consul, the Swarm joined as a worker, and engine labels (arch, hostname).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;

use super::{wait_for_address, Firstboot};
use crate::consul::api::{CatalogNode, Service};
use crate::consul::config::{AgentConfig, BindAddr};
use crate::docker::swarm::Swarm;
use crate::wait;
use crate::{docker::daemon_json, docker::join_token, host::systemd};

/// Another machine is alive in the cluster under this machine's hostname: two cards were given one name.
#[derive(Debug, thiserror::Error)]
#[error(
    "hostname {name} is taken: another machine ({other}) is alive in the cluster under that name, this one is \
     {ours}; give this card its own [node] hostname in cluster-lab.toml on the boot partition and reboot"
)]
pub struct HostnameTaken {
    pub name: String,
    pub other: String,
    pub ours: Ipv4Addr,
}

/// Whether `name` is free for the machine at `ours`, given what the catalog holds under it. A node of that name
/// that is not alive, or holds this machine's own address (the DHCP lease follows the MAC), is this machine's
/// earlier self (a re-flashed card): it takes its place.
pub fn check_hostname_free(
    name: &str,
    ours: Ipv4Addr,
    found: Option<&CatalogNode>,
) -> Result<(), HostnameTaken> {
    match found {
        Some(n) if n.alive && n.address != ours.to_string() => Err(HostnameTaken {
            name: name.to_owned(),
            other: n.address.clone(),
            ours,
        }),
        _ => Ok(()),
    }
}

/// Returns the node's VLAN address.
pub async fn run(fb: &Firstboot) -> anyhow::Result<Ipv4Addr> {
    let net = &fb.settings.network;
    let vlan_if = net.vlan_interface();
    let subnet = net.subnet;
    let address = wait_for_address(&vlan_if, Duration::from_secs(300), |a| {
        subnet.contains(a) && a != net.master
    })
    .await
    .context("waiting for a lease from the master")?;
    tracing::info!(interface = %vlan_if, %address, "lease from the master");
    fb.set_clock_from(net.master).await?;

    // Before this machine joins under its name: is another one alive under it? Asked of the master's API (it
    // serves the home LAN and the VLAN); an API that does not answer yet cannot tell, and the join goes on.
    let master_api = fb.consul_client(std::net::SocketAddr::from((net.master, 8500)));
    match master_api.catalog_node(fb.hostname.as_str()).await {
        Ok(found) => check_hostname_free(fb.hostname.as_str(), address, found.as_ref())?,
        Err(e) => {
            tracing::warn!(error = %e, "could not ask the master whether this hostname is taken")
        }
    }

    let params = fb.consul_params(BindAddr::Interface(vlan_if.clone()), net.master);
    tracing::info!(master = %net.master, "starting the consul client");
    fb.start_consul(&AgentConfig::client(&params).render())
        .await?;
    let consul = fb.consul_client(fb.env.consul);
    wait::until(
        "consul client joining the master",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || {
            let consul = consul.clone();
            async move {
                let members = consul.members().await?;
                Ok(members
                    .iter()
                    .any(|m| m.is_server() && m.is_alive())
                    .then_some(()))
            }
        },
    )
    .await?;
    tracing::info!(master = %net.master, "consul client joined");

    let sealed = wait::until(
        "the master publishing the swarm join token",
        Duration::from_secs(600),
        Duration::from_secs(1),
        || {
            let consul = consul.clone();
            async move { Ok(consul.kv_get(join_token::KV_KEY).await?) }
        },
    )
    .await?;
    let join_token = join_token::open(fb.secret.expose(), &sealed)?;

    let docker = Swarm::connect(&fb.env.docker_socket, Duration::from_secs(300))
        .await
        .context("connecting to dockerd")?;
    fb.load_images(&docker).await;
    tracing::info!(manager = %net.master, "joining the swarm");
    let outcome = docker.join(address, net.master, &join_token).await?;
    tracing::info!(?outcome, manager = %net.master, "swarm worker");

    let current = daemon_json::read(&fb.root);
    let labels = daemon_json::render(
        &current,
        &[
            ("arch", daemon_json::arch()),
            ("hostname", fb.hostname.as_str()),
        ],
    )?;
    if fb.install(&labels)? {
        fb.env
            .services
            .reload(systemd::DOCKER_UNIT)
            .await
            .context("reloading dockerd for its labels")?;
    }

    consul
        .register_service(&Service {
            id: "docker".into(),
            name: "docker".into(),
            address: Some(address.to_string()),
            port: None,
            tags: vec!["cluster-lab".into(), "worker".into()],
            ..Default::default()
        })
        .await
        .context("registering service docker in consul")?;
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: &str, alive: bool) -> CatalogNode {
        CatalogNode {
            name: "node1".into(),
            address: address.into(),
            alive,
        }
    }

    #[test]
    fn a_name_alive_at_another_address_is_taken() {
        let ours: Ipv4Addr = "192.168.200.102".parse().unwrap();
        let err =
            check_hostname_free("node1", ours, Some(&node("192.168.200.101", true))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("hostname node1 is taken") && text.contains("192.168.200.101"),
            "{text}"
        );
        // Nobody under that name, the machine's own earlier self (its address), or a dead machine: free.
        assert!(check_hostname_free("node1", ours, None).is_ok());
        assert!(check_hostname_free("node1", ours, Some(&node("192.168.200.102", true))).is_ok());
        assert!(check_hostname_free("node1", ours, Some(&node("192.168.200.101", false))).is_ok());
    }
}
