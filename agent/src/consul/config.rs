//! The Consul agent configuration cluster-lab writes to `/etc/consul.d/cluster-lab.json`.
//!
//! Only keys Consul 1.8.7 (Debian bullseye's package, the version in the image) understands: `ui` rather than the
//! later `ui_config`, `retry_join`/`retry_interval`, `performance.raft_multiplier`, `acl.tokens.master` rather than
//! the later `initial_management`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Serialize;

use crate::host::render::RenderedFile;

/// Where Debian's consul.service reads its configuration (`-config-dir=/etc/consul.d`).
pub const CONFIG_PATH: &str = "/etc/consul.d/cluster-lab.json";
/// Debian's data directory, owned by the `consul` user.
pub const DATA_DIR: &str = "/var/lib/consul";
/// Consul's HTTP API and UI (its default port, not set in the configuration).
pub const HTTP_PORT: u16 = 8500;
/// Server RPC (TCP), Consul's default.
pub const SERVER_RPC_PORT: u16 = 8300;
/// LAN gossip (TCP and UDP), Consul's default.
pub const SERF_LAN_PORT: u16 = 8301;
/// WAN gossip (TCP and UDP), Consul's default.
pub const SERF_WAN_PORT: u16 = 8302;

/// Address Consul binds to on the cluster VLAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    /// A fixed address (the master's).
    Addr(Ipv4Addr),
    /// Whatever IPv4 address the interface holds when Consul starts (a node's DHCP lease); rendered as a
    /// go-sockaddr template that Consul evaluates itself. Not `GetInterfaceIP`: that one drops addresses
    /// go-sockaddr deems not forwardable (documentation and other special ranges a user may pick).
    Interface(String),
}

impl BindAddr {
    fn render(&self) -> String {
        match self {
            BindAddr::Addr(a) => a.to_string(),
            BindAddr::Interface(name) => {
                // The name is a regular expression to go-sockaddr; the only metacharacter in VLAN names is '.'.
                let re = name.replace('.', "[.]");
                format!(
                    "{{{{ GetAllInterfaces | include \"name\" \"^{re}$\" | include \"type\" \"IPv4\" \
                     | limit 1 | attr \"address\" }}}}"
                )
            }
        }
    }
}

/// What the configuration is made from.
#[derive(Debug, Clone)]
pub struct ConsulParams {
    /// Consul datacenter: the cluster name, reduced to the characters Consul allows.
    pub datacenter: String,
    pub node_name: String,
    /// Stable per hostname (see [`crate::secret::consul_node_id`]).
    pub node_id: String,
    pub data_dir: String,
    pub bind: BindAddr,
    /// The master's VLAN address, which clients join.
    pub master: Ipv4Addr,
    /// Base64 gossip key (see [`crate::secret::gossip_key`]).
    pub gossip_key: String,
    /// The ACL management token (see [`crate::secret::consul_management_token`]).
    pub management_token: String,
}

/// Consul agent configuration (JSON form).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgentConfig {
    pub datacenter: String,
    pub node_name: String,
    pub node_id: String,
    pub data_dir: String,
    pub server: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_expect: Option<u32>,
    pub ui: bool,
    pub client_addr: String,
    pub bind_addr: String,
    pub advertise_addr: String,
    pub encrypt: String,
    /// The datacenter whose servers hold the ACLs: this one (Consul wants it set to enable ACLs).
    pub primary_datacenter: String,
    pub acl: Acl,
    /// No `consul exec` and no script checks: nobody runs commands on a machine through Consul.
    pub disable_remote_exec: bool,
    pub enable_script_checks: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub retry_join: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performance: Option<Performance>,
    pub leave_on_terminate: bool,
    pub disable_update_check: bool,
    pub dns_config: DnsConfig,
}

/// Consul's DNS interface (`.consul` names, asked through systemd-resolved).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DnsConfig {
    /// An answer too long for UDP says so (the TC bit), and the resolver asks again over TCP for all of it. Without
    /// it Consul silently drops the instances that do not fit: a service on many machines (Prometheus finding
    /// node-exporter on every one) would see only some of them.
    pub enable_truncate: bool,
}

/// Consul's ACLs: deny what no token allows. Anonymous requests (the home LAN opening the UI) get only the
/// read-only policy first boot gives the anonymous token (see [`super::acl`]).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Acl {
    pub enabled: bool,
    pub default_policy: &'static str,
    /// While the master cannot be asked, keep using what is cached.
    pub down_policy: &'static str,
    pub tokens: AclTokens,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AclTokens {
    /// The master only: the management token the ACL system is bootstrapped with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// What the agent itself presents (registering its node, anti-entropy): the management token.
    pub agent: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Performance {
    pub raft_multiplier: u32,
}

/// Consul datacenter names allow `a-z 0-9 _ -`.
pub fn datacenter_name(cluster: &str) -> String {
    let dc: String = cluster
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if dc.is_empty() {
        "dc1".into()
    } else {
        dc
    }
}

impl AgentConfig {
    /// What master and node share: identity, data directory, gossip and RPC on the VLAN address, the gossip key.
    /// [`AgentConfig::server`] and [`AgentConfig::client`] set the role on top.
    fn common(p: &ConsulParams) -> AgentConfig {
        let bind = p.bind.render();
        AgentConfig {
            datacenter: p.datacenter.clone(),
            node_name: p.node_name.clone(),
            node_id: p.node_id.clone(),
            data_dir: p.data_dir.clone(),
            server: false,
            bootstrap_expect: None,
            ui: false,
            client_addr: "127.0.0.1".into(),
            bind_addr: bind.clone(),
            advertise_addr: bind,
            encrypt: p.gossip_key.clone(),
            primary_datacenter: p.datacenter.clone(),
            acl: Acl {
                enabled: true,
                default_policy: "deny",
                down_policy: "extend-cache",
                tokens: AclTokens {
                    master: None,
                    agent: p.management_token.clone(),
                },
            },
            disable_remote_exec: true,
            enable_script_checks: false,
            retry_join: Vec::new(),
            retry_interval: None,
            performance: None,
            leave_on_terminate: false,
            disable_update_check: true,
            dns_config: DnsConfig {
                enable_truncate: true,
            },
        }
    }

    /// The master: the only server, bootstraps alone, serves the UI and HTTP API on every interface (the UI is
    /// opened from the home LAN on :8500); gossip and RPC on the VLAN address.
    pub fn server(p: &ConsulParams) -> AgentConfig {
        let common = Self::common(p);
        AgentConfig {
            acl: Acl {
                tokens: AclTokens {
                    master: Some(p.management_token.clone()),
                    ..common.acl.tokens.clone()
                },
                ..common.acl.clone()
            },
            server: true,
            bootstrap_expect: Some(1),
            ui: true,
            client_addr: "0.0.0.0".into(),
            performance: Some(Performance { raft_multiplier: 1 }),
            ..common
        }
    }

    /// A node: a client agent joining the master, retrying every few seconds until the master is up. Its HTTP API
    /// stays on loopback.
    pub fn client(p: &ConsulParams) -> AgentConfig {
        AgentConfig {
            retry_join: vec![p.master.to_string()],
            retry_interval: Some("5s".into()),
            ..Self::common(p)
        }
    }

    /// `/etc/consul.d/cluster-lab.json`, readable by the `consul` group only (it holds the gossip key).
    pub fn render(&self) -> RenderedFile {
        self.render_at(CONFIG_PATH, Some("consul"))
    }

    /// The same file at another path and group (tests run Consul from a temporary directory).
    pub fn render_at(&self, path: &str, group: Option<&'static str>) -> RenderedFile {
        let json = serde_json::to_string_pretty(self).expect("consul config serialises");
        RenderedFile {
            path: PathBuf::from(path),
            contents: json + "\n",
            mode: 0o640,
            group,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datacenter_is_sanitised() {
        assert_eq!(datacenter_name("My Lab.1"), "my-lab-1");
        assert_eq!(datacenter_name(""), "dc1");
    }

    #[test]
    fn interface_bind_is_a_sockaddr_template() {
        let b = BindAddr::Interface("eth0.200".into());
        assert_eq!(
            b.render(),
            "{{ GetAllInterfaces | include \"name\" \"^eth0[.]200$\" | include \"type\" \"IPv4\" \
             | limit 1 | attr \"address\" }}"
        );
    }
}
