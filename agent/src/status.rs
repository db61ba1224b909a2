//! `cluster-lab status`: what this machine is in the cluster and what is wrong, read from the Consul and Docker
//! APIs (like the old lab's `health` command, but from the services themselves).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::consul::{ConsulClient, Member};
use crate::docker::swarm::{LocalState, NodeSummary, Swarm};
use crate::election::ClusterRole;
use crate::{docker::swarm, host::stamp};

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub hostname: String,
    pub role: Option<ClusterRole>,
    pub firstboot_done: bool,
    /// The wired link to the home LAN and its addresses (the home router's lease).
    pub lan_interface: String,
    pub lan_addresses: Vec<Ipv4Addr>,
    /// On the master: the command that lets a laptop on the home LAN drive the cluster's Docker over SSH.
    pub laptop_command: Option<String>,
    pub vlan_interface: String,
    pub vlan_addresses: Vec<Ipv4Addr>,
    /// The node's DHCP lease on the VLAN, as networkd keeps it (none on the master).
    pub lease: Option<Lease>,
    pub consul_leader: Option<String>,
    pub consul_members: Vec<Member>,
    pub swarm: Option<LocalState>,
    /// Only on managers.
    pub swarm_nodes: Vec<NodeSummary>,
    /// Everything that looks wrong, one sentence each; empty when healthy.
    pub problems: Vec<String>,
}

impl Status {
    /// Read everything; unreachable services become problems, not errors.
    pub async fn collect(
        root: &Path,
        lan_interface: &str,
        vlan_interface: &str,
        consul: &ConsulClient,
        docker_socket: &Path,
    ) -> Status {
        let mut problems = Vec::new();
        let role = stamp::read_role(root).unwrap_or(None);
        if let Some(reason) = stamp::read_stopped(root) {
            problems.push(format!("first boot stopped: {reason}"));
        }
        let lan_addresses = crate::net::link::addresses(lan_interface).unwrap_or_default();
        let laptop_command = (role == Some(ClusterRole::Master)).then(|| {
            let lan = lan_addresses
                .first()
                .map_or_else(|| "<lan-ip>".to_string(), |a| a.to_string());
            crate::docker::laptop_context_command(&crate::host::login_user::current(root), &lan)
        });
        let vlan_addresses = crate::net::link::addresses(vlan_interface).unwrap_or_default();
        if vlan_addresses.is_empty() {
            problems.push(format!("{vlan_interface} has no IPv4 address"));
        }
        let lease = nix::net::if_::if_nametoindex(vlan_interface)
            .ok()
            .and_then(|i| std::fs::read_to_string(format!("{NETWORKD_LEASES}/{i}")).ok())
            .and_then(|text| Lease::parse(&text));
        let (consul_leader, consul_members) = match (consul.leader().await, consul.members().await)
        {
            (Ok(leader), Ok(members)) => (leader, members),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(format!("consul agent not answering: {e}"));
                (None, Vec::new())
            }
        };
        if consul_leader.is_none() && !consul_members.is_empty() {
            problems.push("consul has no leader".into());
        }
        problems.extend(member_problems(&consul_members));
        let (swarm, swarm_nodes) = match Swarm::connect(docker_socket, Duration::from_secs(2)).await
        {
            Err(e) => {
                problems.push(format!("docker not answering: {e}"));
                (None, Vec::new())
            }
            Ok(docker) => match docker.local_state().await {
                Err(e) => {
                    problems.push(e.to_string());
                    (None, Vec::new())
                }
                Ok(state) => {
                    let nodes = if state.manager {
                        docker.nodes().await.unwrap_or_else(|e| {
                            problems.push(e.to_string());
                            Vec::new()
                        })
                    } else {
                        Vec::new()
                    };
                    (Some(state), nodes)
                }
            },
        };
        match &swarm {
            Some(s) if !s.is_active() => {
                problems.push(format!("swarm is {} on this machine", s.state))
            }
            _ => {}
        }
        for n in swarm_nodes.iter().filter(|n| n.state != "ready") {
            problems.push(format!("swarm node {} is {}", n.hostname, n.state));
        }
        Status {
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            role,
            firstboot_done: stamp::is_done(root),
            lan_interface: lan_interface.into(),
            lan_addresses,
            laptop_command,
            vlan_interface: vlan_interface.into(),
            vlan_addresses,
            lease,
            consul_leader,
            consul_members,
            swarm,
            swarm_nodes,
            problems,
        }
    }

    /// For people: one fact per line, problems last.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let role = self
            .role
            .map_or("undecided".to_string(), |r| format!("{r:?}").to_lowercase());
        let list = |addrs: &[Ipv4Addr]| {
            addrs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        out += &format!("hostname:      {}\nrole:          {role}\n", self.hostname);
        out += &format!(
            "first boot:    {}\n",
            if self.firstboot_done {
                "done"
            } else {
                "not finished"
            }
        );
        out += &format!(
            "lan:           {} {}\n",
            self.lan_interface,
            list(&self.lan_addresses)
        );
        out += &format!(
            "vlan:          {} {}\n",
            self.vlan_interface,
            list(&self.vlan_addresses)
        );
        out += &format!(
            "consul leader: {}\n",
            self.consul_leader.as_deref().unwrap_or("none")
        );
        for m in &self.consul_members {
            let kind = if m.is_server() { "server" } else { "client" };
            let state = if m.is_alive() {
                "alive"
            } else if m.has_left() {
                "left"
            } else {
                "not alive"
            };
            out += &format!("  consul {:<20} {:<15} {kind:<6} {state}\n", m.name, m.addr);
        }
        if let Some(s) = &self.swarm {
            let kind = if s.manager { "manager" } else { "worker" };
            out += &format!("swarm:         {} ({kind})\n", s.state);
        }
        for n in &self.swarm_nodes {
            out += &format!(
                "  swarm  {:<20} {:<15} {:<7} {}\n",
                n.hostname, n.addr, n.role, n.state
            );
        }
        if let Some(cmd) = &self.laptop_command {
            out += &format!("laptop:        {cmd}\n");
        }
        if self.problems.is_empty() {
            out += "healthy\n";
        } else {
            for p in &self.problems {
                out += &format!("problem: {p}\n");
            }
        }
        out
    }
}

/// Where systemd-networkd keeps DHCP leases, one file per interface index.
pub const NETWORKD_LEASES: &str = "/run/systemd/netif/leases";

/// A DHCP lease as networkd records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    pub lifetime_secs: u64,
}

impl Lease {
    /// Parse networkd's `KEY=value` lease file; `None` when the essential keys are missing.
    pub fn parse(text: &str) -> Option<Lease> {
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        Some(Lease {
            address: get("ADDRESS")?.parse().ok()?,
            server: get("SERVER_ADDRESS")?.parse().ok()?,
            lifetime_secs: get("LIFETIME").and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }
}

/// A member that is neither alive nor gone on purpose (`left`: removed with `cluster-lab node remove`, which
/// Consul keeps listing for 72 hours) is a problem.
fn member_problems(members: &[crate::consul::api::Member]) -> Vec<String> {
    members
        .iter()
        .filter(|m| !m.is_alive() && !m.has_left())
        .map(|m| format!("consul member {} ({}) is not alive", m.name, m.addr))
        .collect()
}

/// Defaults for the target.
pub fn docker_socket() -> &'static Path {
    Path::new(swarm::SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_networkd_lease() {
        let text = "# This is private data. Do not parse.\nADDRESS=192.168.200.101\nNETMASK=255.255.255.0\n\
                    SERVER_ADDRESS=192.168.200.1\nT1=1800\nT2=3150\nLIFETIME=3600\nCLIENTID=01525400123456\n";
        assert_eq!(
            Lease::parse(text),
            Some(Lease {
                address: "192.168.200.101".parse().unwrap(),
                server: "192.168.200.1".parse().unwrap(),
                lifetime_secs: 3600,
            })
        );
        assert_eq!(Lease::parse("ADDRESS=192.168.200.101\n"), None);
    }

    /// The status of a machine whose stamp says `role`, with loopback standing in for both links and neither
    /// Consul nor dockerd answering.
    async fn unreachable_services_as(role: ClusterRole) -> Status {
        let root = tempfile::tempdir().unwrap();
        crate::host::stamp::write_role(root.path(), role).unwrap();
        Status::collect(
            root.path(),
            "lo",
            "lo",
            &ConsulClient::new("127.0.0.1:9".parse().unwrap()),
            Path::new("/nonexistent/docker.sock"),
        )
        .await
    }

    #[test]
    fn a_member_that_left_is_history_not_a_problem() {
        let member = |name: &str, status: u8| crate::consul::api::Member {
            name: name.into(),
            addr: "192.168.200.126".into(),
            status,
            tags: Default::default(),
        };
        let members = [member("node7", 1), member("node1", 3), member("node2", 4)];
        assert_eq!(
            member_problems(&members),
            ["consul member node2 (192.168.200.126) is not alive"]
        );
    }

    #[tokio::test]
    async fn the_master_shows_its_home_lan_address_and_the_laptop_command() {
        // A master, as its stamp says, with nothing answering: the command is still there, built from the LAN
        // address (loopback stands in for the wired link here).
        let status = unreachable_services_as(ClusterRole::Master).await;
        let text = status.to_text();
        assert!(text.contains("lan:           lo 127.0.0.1\n"), "{text}");
        assert!(
            text.contains(&format!(
                "laptop:        {}\n",
                crate::docker::laptop_context_command("cluster", "127.0.0.1")
            )),
            "{text}"
        );
        assert!(!status.problems.is_empty(), "nothing answers: {text}");

        // A node prints no laptop command.
        let status = unreachable_services_as(ClusterRole::Node).await;
        assert_eq!(status.laptop_command, None);
        assert!(!status.to_text().contains("laptop:"));
    }

    #[tokio::test]
    async fn a_first_boot_that_stopped_says_why() {
        let root = tempfile::tempdir().unwrap();
        crate::host::stamp::mark_stopped(
            root.path(),
            "the switch seems to drop VLAN-tagged frames",
        )
        .unwrap();
        let status = Status::collect(
            root.path(),
            "lo",
            "lo",
            &ConsulClient::new("127.0.0.1:9".parse().unwrap()),
            Path::new("/nonexistent/docker.sock"),
        )
        .await;
        assert_eq!(status.role, None);
        assert_eq!(
            status.problems.first().map(String::as_str),
            Some("first boot stopped: the switch seems to drop VLAN-tagged frames")
        );
    }
}
