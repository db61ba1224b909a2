//! Taking a machine out of the cluster for good (a dead board, a card replaced under a new hostname): on the
//! master, Consul forgets it (force-leave), the Swarm drops its node, and its DHCP lease is released so the
//! address goes back to the pool. Each part looks first and reports what it did; running it twice is harmless.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::Context;

use crate::consul::ConsulClient;
use crate::dhcp::leases::{LeaseLog, Record};
use crate::dhcp::server::{Server, ServerConfig};
use crate::docker::swarm::{NodeSummary, Swarm};
use crate::host::hostname::Hostname;

/// What a removal did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Consul had the node and was told to forget it.
    pub consul: bool,
    /// The Swarm node IDs removed.
    pub swarm_nodes: Vec<String>,
    /// Addresses whose lease was released.
    pub leases: Vec<Ipv4Addr>,
}

/// A machine that still answers: removing it would only make it come back.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} is still Ready in the swarm: power it off first (or pass --force to remove it anyway; it joins again \
     on its next start unless its card is wiped)"
)]
pub struct StillReady {
    pub name: String,
}

/// Swarm nodes a re-flashed card left behind: a worker Down under a hostname another node holds Ready at the same
/// address (the card joined afresh under its old name, and took its old lease by MAC; the old node can never come
/// back, since its key was on the old card). A second machine that claims the name has another address: a
/// Down namesake there is a machine that is off, not replaced, and stays.
pub fn superseded(nodes: &[NodeSummary]) -> Vec<&NodeSummary> {
    nodes
        .iter()
        .filter(|n| {
            n.role == "worker"
                && n.state == "down"
                && nodes.iter().any(|o| {
                    o.id != n.id
                        && o.hostname == n.hostname
                        && o.addr == n.addr
                        && o.state == "ready"
                })
        })
        .collect()
}

/// Remove the [`superseded`] nodes from the Swarm (on the manager). Returns `(hostname, id)` of each removed.
pub async fn tidy_swarm(swarm: &Swarm) -> anyhow::Result<Vec<(String, String)>> {
    let nodes = swarm.nodes().await.context("listing swarm nodes")?;
    let mut removed = Vec::new();
    for n in superseded(&nodes) {
        swarm
            .remove_node(&n.id)
            .await
            .with_context(|| format!("removing swarm node {} ({})", n.id, n.hostname))?;
        removed.push((n.hostname.clone(), n.id.clone()));
    }
    Ok(removed)
}

/// Remove `name` from Consul (through `consul`, the master's agent) and the Swarm (`swarm`, the manager).
/// Refuses a node that is Ready unless `force`.
pub async fn remove_from_services(
    name: &Hostname,
    consul: &ConsulClient,
    swarm: &Swarm,
    force: bool,
) -> anyhow::Result<Removed> {
    let mut removed = Removed::default();
    let nodes = swarm.nodes().await.context("listing swarm nodes")?;
    let ours: Vec<_> = nodes
        .iter()
        .filter(|n| n.hostname == name.as_str())
        .collect();
    if !force && ours.iter().any(|n| n.state == "ready") {
        return Err(StillReady {
            name: name.to_string(),
        }
        .into());
    }
    for n in ours {
        swarm
            .remove_node(&n.id)
            .await
            .with_context(|| format!("removing swarm node {}", n.id))?;
        removed.swarm_nodes.push(n.id.clone());
    }
    let members = consul.members().await.context("listing consul members")?;
    if members.iter().any(|m| m.name == name.as_str()) {
        consul
            .force_leave(name.as_str())
            .await
            .context("consul force-leave")?;
        removed.consul = true;
    }
    Ok(removed)
}

/// Release every lease held under hostname `name` in the lease log at `path` (dhcpd must not be running: it
/// owns the log while it runs). The log is replayed through the DHCP server's own restore, so "held" means
/// what it means to dhcpd. Returns the addresses released.
pub fn release_leases(
    path: &Path,
    server: ServerConfig,
    name: &Hostname,
    now: u64,
) -> std::io::Result<Vec<Ipv4Addr>> {
    let (mut log, loaded) = LeaseLog::open(path)?;
    let mut replay = Server::new(server);
    replay.restore(&loaded.records);
    let mut released = Vec::new();
    for (ip, lease) in replay.pool().leases() {
        // An expired or released lease holds nothing: no release to write for it.
        if lease.expires > now && lease.hostname.as_deref() == Some(name.as_str()) {
            log.append(&Record::Release {
                ip,
                client: lease.client.to_string(),
                at: now,
            });
            released.push(ip);
        }
    }
    log.commit()?;
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(ip: &str, client: &str, hostname: Option<&str>) -> Record {
        Record::Lease {
            ip: ip.parse().unwrap(),
            client: client.into(),
            hw: "02:00:00:00:00:01".into(),
            hostname: hostname.map(String::from),
            expires: 2_000_000_000,
        }
    }

    fn server() -> ServerConfig {
        let settings = crate::config::Settings::default();
        ServerConfig::from_settings(&settings, settings.network.master)
    }

    fn node(id: &str, hostname: &str, role: &str, state: &str) -> NodeSummary {
        NodeSummary {
            id: id.into(),
            hostname: hostname.into(),
            role: role.into(),
            state: state.into(),
            availability: "active".into(),
            addr: "192.168.200.126".into(),
            labels: Default::default(),
        }
    }

    #[test]
    fn only_a_down_twin_of_a_ready_worker_is_superseded() {
        let nodes = [
            node("m", "master", "manager", "ready"),
            node("old", "node2", "worker", "down"),
            node("new", "node2", "worker", "ready"),
            // Down with no Ready namesake: a machine that is off, not replaced.
            node("off", "node3", "worker", "down"),
            // Two Down namesakes, none Ready: nothing to tell which is current.
            node("a", "node4", "worker", "down"),
            node("b", "node4", "worker", "unknown"),
            // A manager is never removed this way.
            node("mold", "master", "manager", "down"),
            // Another machine that took the name (another address): the Down one is off, not replaced.
            NodeSummary {
                addr: "192.168.200.140".into(),
                ..node("twin", "node5", "worker", "ready")
            },
            node("node5", "node5", "worker", "down"),
        ];
        let ids: Vec<&str> = superseded(&nodes).iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["old"]);
    }

    #[test]
    fn releases_only_the_named_machines_current_leases_and_is_safe_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases.jsonl");
        {
            let (mut log, _) = LeaseLog::open(&path).unwrap();
            log.compact([
                lease("192.168.200.101", "hw:0a", Some("node1")),
                lease("192.168.200.102", "hw:0b", Some("node2")),
                // Expired long ago: nothing to release.
                // (dhcpd keeps one address per client key; a re-flashed card may come with another key.)
                Record::Lease {
                    ip: "192.168.200.104".parse().unwrap(),
                    client: "hw:0c".into(),
                    hw: "02:00:00:00:00:01".into(),
                    hostname: Some("node1".into()),
                    expires: 50,
                },
                // An old lease of node1's, already given back.
                lease("192.168.200.103", "hw:0d", Some("node1")),
                Record::Release {
                    ip: "192.168.200.103".parse().unwrap(),
                    client: "hw:0d".into(),
                    at: 5,
                },
            ])
            .unwrap();
        }
        let node1 = Hostname::parse("node1").unwrap();
        assert_eq!(
            release_leases(&path, server(), &node1, 100).unwrap(),
            ["192.168.200.101".parse::<Ipv4Addr>().unwrap()]
        );
        assert!(release_leases(&path, server(), &node1, 101)
            .unwrap()
            .is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.ends_with(
                "{\"kind\":\"release\",\"ip\":\"192.168.200.101\",\"client\":\"hw:0a\",\"at\":100}\n"
            ),
            "{text}"
        );
        assert!(text.contains("node2"));
    }
}
