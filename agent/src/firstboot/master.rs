//! First boot of the master: DHCP service on the VLAN, Consul server, Swarm manager, the sealed join token in
//! Consul's KV store, and the services registered in Consul.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;

use super::{wait_for_address, Firstboot};
use crate::consul::acl;
use crate::consul::api::Service;
use crate::consul::config::{AgentConfig, BindAddr};
use crate::consul::ConsulClient;
use crate::docker::registry;
use crate::docker::swarm::{self, Swarm};
use crate::election::socket::ClaimSocket;
use crate::election::{Claim, ClusterRole};
use crate::host::stamp;
use crate::wait;
use crate::{docker::join_token, host::systemd};

/// Returns the master's VLAN address.
pub async fn run(fb: &Firstboot, claim_socket: Option<ClaimSocket>) -> anyhow::Result<Ipv4Addr> {
    let net = &fb.settings.network;
    let vlan_if = net.vlan_interface();
    let master = net.master;

    // Keep telling late candidates that the master is decided until DHCP answers for us.
    let announcer = claim_socket.map(|socket| {
        let claim = Claim {
            cluster: fb.settings.cluster.name.clone(),
            mac: crate::election::Mac(
                crate::net::link::mac(&net.interface)
                    .map(|m| m.0)
                    .unwrap_or_default(),
            ),
            master: true,
        };
        tokio::spawn(async move {
            super::announce_master(&socket, &claim, Duration::from_millis(500)).await
        })
    });

    let dhcpd = systemd::dhcpd_unit(&vlan_if);
    if announcer.is_none() {
        // Not elected on this run: the role was remembered from an earlier, unfinished run or set in the
        // configuration. Another master may have been elected meanwhile; look before taking its address.
        ensure_no_other_master(fb, &dhcpd).await?;
    }

    // The election has just ARP-probed the master address: put it on the VLAN now rather than wait for networkd's
    // duplicate address detection to probe it again (5–7 s); networkd's file keeps it on later boots.
    let added = crate::net::vlan::add_address(&vlan_if, master, net.subnet.prefix())
        .await
        .with_context(|| format!("adding {master} to {vlan_if}"))?;
    tracing::debug!(added, "master address");
    wait_for_address(&vlan_if, Duration::from_secs(120), |a| a == master).await?;
    tracing::info!(interface = %vlan_if, address = %master, "master address up");

    // DHCP first: every node waits for its lease. Then the clock and Consul's start, at once.
    fb.env.services.enable_and_start(&dhcpd, false).await?;
    let (clock, consul) = tokio::join!(fb.serve_clock(), start_consul_server(fb));
    clock?;
    consul?;
    start_registry(fb).await?;

    // Consul's leader election is the longest wait of the master's first boot: the Swarm is set up meanwhile (the
    // Swarm does not need Consul; only the join token's publication does).
    let (consul, swarm) = tokio::join!(consul_leading(fb), swarm_manager(fb, master));
    let consul = consul?;
    if let Some(task) = announcer {
        // dhcpd has had the time the Consul leader election took to come up; stop announcing.
        task.abort();
    }
    let (docker, preloaded) = swarm?;
    publish_token(fb, &consul, &docker).await?;

    for service in services(master) {
        consul
            .register_service(&service)
            .await
            .with_context(|| format!("registering service {} in consul", service.id))?;
    }
    tracing::info!(role = ?ClusterRole::Master, "consul services registered");
    push_preloaded(&docker, master, &preloaded).await;
    Ok(master)
}

/// Another machine already holds the master's place on the VLAN.
#[derive(Debug, thiserror::Error)]
#[error(
    "another master of cluster \"{cluster}\" answers on {interface} ({evidence}); this machine {why}, and two \
     masters would split the cluster, so it stops instead. To make this card a node, re-flash it; to keep it as the \
     master, power the other master off and reboot this one"
)]
pub struct OtherMaster {
    pub cluster: String,
    pub interface: String,
    /// What answered: the DHCP server with the cluster's secret, the master address in ARP, or both.
    pub evidence: String,
    /// Why this machine meant to be the master.
    pub why: &'static str,
}

/// Look for another master before taking the master address without an election on this run: a DHCP probe that
/// counts only a server holding this cluster's secret, and an ARP probe of the address, at once. This machine's
/// own DHCP server (started by an earlier run that a power cut ended) is stopped first, so it does not answer its
/// own probe; when another master answers, it is also disabled, so no later boot serves the VLAN beside it.
async fn ensure_no_other_master(fb: &Firstboot, dhcpd: &str) -> anyhow::Result<()> {
    let net = &fb.settings.network;
    let vlan_if = net.vlan_interface();
    fb.env
        .services
        .stop(dhcpd)
        .await
        .with_context(|| format!("stopping {dhcpd} before probing for another master"))?;
    let evidence = probe_other_master(
        &vlan_if,
        &fb.settings.cluster.name,
        fb.secret.expose(),
        net.master,
    )
    .await?;
    tracing::info!(found = evidence.len(), "probed for another master");
    if evidence.is_empty() {
        return Ok(());
    }
    fb.env
        .services
        .disable(dhcpd)
        .await
        .with_context(|| format!("disabling {dhcpd}"))?;
    Err(OtherMaster {
        cluster: fb.settings.cluster.name.clone(),
        interface: vlan_if,
        evidence: evidence.join("; "),
        why: match fb.settings.node.role {
            crate::config::Role::Master => {
                "is configured as the master (role = \"master\" in cluster-lab.toml)"
            }
            _ => "was elected master on an earlier boot whose first boot did not finish",
        },
    }
    .into())
}

/// What answers for another master of `cluster` on `vlan_if`, probed at once: a DHCP server holding the cluster's
/// secret (3 s), and `master` in ARP (two probes). Empty when nothing does.
pub async fn probe_other_master(
    vlan_if: &str,
    cluster: &str,
    secret: &str,
    master: Ipv4Addr,
) -> anyhow::Result<Vec<String>> {
    let probe = super::MasterProbe::new(vlan_if, cluster, secret);
    let (dhcp, arp) = tokio::join!(
        probe.answers(Duration::from_secs(3)),
        crate::net::arp::probe(vlan_if, master, 2)
    );
    let mut evidence = Vec::new();
    if dhcp.context("probing for another master's DHCP server")? {
        evidence.push("its DHCP server, marked with the cluster's secret".to_string());
    }
    if arp.context("probing the master address")? == crate::net::arp::ArpProbe::Taken {
        evidence.push(format!("{master} is taken (ARP)"));
    }
    Ok(evidence)
}

/// The Swarm manager: dockerd connected, the card's images loaded, `swarm init` on the master address, and the
/// routing mesh made to fit the VLAN. Returns the engine and the loaded images' tags.
async fn swarm_manager(fb: &Firstboot, master: Ipv4Addr) -> anyhow::Result<(Swarm, Vec<String>)> {
    let docker = Swarm::connect(&fb.env.docker_socket, Duration::from_secs(300))
        .await
        .context("connecting to dockerd")?;
    let preloaded = fb.load_images(&docker).await;
    tracing::info!(advertise = %master, "initialising the swarm");
    let made = stamp::read_swarm_made(&fb.root);
    let (outcome, cluster_id) = docker.init(master, made.as_deref()).await?;
    // Recorded before the join token is published: a swarm without this record never had a worker.
    stamp::write_swarm_made(&fb.root, &cluster_id)
        .context("recording the swarm this machine initialised")?;
    tracing::info!(?outcome, advertise = %master, cluster_id, "swarm manager");
    // The routing mesh must fit the VLAN: overlay interfaces 1446, the overlay driver's MTU option 1496 (it
    // subtracts VXLAN's 50 bytes itself). Before the join token is published, so no worker joins meanwhile.
    let option = crate::docker::ingress::vlan_driver_mtu_option();
    match crate::docker::ingress::ensure_ingress_mtu(&docker, option).await {
        Ok(outcome) => tracing::info!(?outcome, option, "ingress network"),
        Err(e) => {
            tracing::warn!(error = %e, option, "ingress network: the VLAN's MTU not (fully) applied")
        }
    }
    Ok((docker, preloaded))
}

/// Write the server configuration and (re)start Consul without waiting for it.
async fn start_consul_server(fb: &Firstboot) -> anyhow::Result<()> {
    let master = fb.settings.network.master;
    let params = fb.consul_params(BindAddr::Addr(master), master);
    fb.start_consul(&AgentConfig::server(&params).render())
        .await
}

/// Write the registry's configuration (listening on the VLAN address only) and (re)start it without waiting.
async fn start_registry(fb: &Firstboot) -> anyhow::Result<()> {
    let changed = fb.install(&registry::render_config(fb.settings.network.master))?;
    fb.env
        .services
        .enable_and_start(registry::UNIT, changed)
        .await
        .with_context(|| format!("starting {}", registry::UNIT))
}

/// Push the card's images into the cluster registry, so nodes pull them by its name. The registry may still be
/// starting: pushes are retried for [`PUSH_TIMEOUT`] in all. A failure is a warning; the cluster forms without them.
async fn push_preloaded(docker: &Swarm, master: Ipv4Addr, tags: &[String]) {
    let at = registry::address(master);
    let deadline = tokio::time::Instant::now() + PUSH_TIMEOUT;
    for image in tags {
        let pushed = wait::until(
            "pushing a preloaded image into the cluster registry",
            deadline.saturating_duration_since(tokio::time::Instant::now()),
            Duration::from_secs(3),
            || {
                let at = at.clone();
                async move { Ok(Some(registry::push(docker.docker(), &at, image).await?)) }
            },
        )
        .await;
        match pushed {
            Ok(name) => tracing::info!(%image, %name, "pushed into the cluster registry"),
            Err(e) => tracing::warn!(%image, error = %e, "not pushed into the cluster registry"),
        }
    }
}

/// How long pushing the preloaded images may take in all (the registry starts within seconds).
const PUSH_TIMEOUT: Duration = Duration::from_secs(90);

/// Wait until the local Consul server leads.
async fn consul_leading(fb: &Firstboot) -> anyhow::Result<ConsulClient> {
    let client = fb.consul_client(fb.env.consul);
    let leader = wait::until(
        "consul server electing itself leader",
        Duration::from_secs(180),
        Duration::from_secs(1),
        || {
            let client = client.clone();
            async move { Ok(client.leader().await?) }
        },
    )
    .await?;
    tracing::info!(%leader, "consul server leading");
    // The ACL system bootstraps with the management token a moment after the server leads: until then this fails
    // ("ACL not found") and is asked again.
    let outcome = wait::until(
        "consul's ACLs (anonymous token read-only)",
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            let client = client.clone();
            async move { Ok(Some(acl::ensure_anonymous_read(&client).await?)) }
        },
    )
    .await?;
    tracing::info!(?outcome, policy = acl::ANONYMOUS_POLICY, "consul acls");
    Ok(client)
}

/// Store the worker join token, sealed with the cluster secret, unless the stored one already opens to it.
async fn publish_token(
    fb: &Firstboot,
    consul: &ConsulClient,
    docker: &Swarm,
) -> anyhow::Result<()> {
    let worker = docker.worker_token().await?;
    if let Some(stored) = consul.kv_get(join_token::KV_KEY).await? {
        if join_token::open(fb.secret.expose(), &stored)
            .ok()
            .as_deref()
            == Some(worker.as_str())
        {
            return Ok(());
        }
    }
    consul
        .kv_put(
            join_token::KV_KEY,
            join_token::seal(fb.secret.expose(), &worker).as_bytes(),
        )
        .await
        .context("publishing the swarm join token")?;
    tracing::info!(
        key = join_token::KV_KEY,
        "swarm join token published (sealed)"
    );
    Ok(())
}

/// Services the master registers in Consul.
fn services(master: Ipv4Addr) -> Vec<Service> {
    let service = |id: &str, port: u16, tags: &[&str]| Service {
        id: id.into(),
        name: id.into(),
        address: Some(master.to_string()),
        port: Some(port),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    };
    vec![
        service("swarm-manager", swarm::MANAGER_PORT, &["cluster-lab"]),
        service("docker", 0, &["cluster-lab", "manager"]),
        service("cluster-lab-dhcpd", 67, &["cluster-lab"]),
        service("registry", registry::PORT, &["cluster-lab"]),
    ]
}
