//! Consul: the agent configuration cluster-lab renders (server on the master, client on nodes; the gossip key and
//! the ACL management token come from [`crate::secret`]), the ACLs first boot leaves (default deny, anonymous
//! read-only), and a client for the agent's HTTP API (hyper).

pub mod acl;
pub mod api;
pub mod config;
pub mod data_dir;
pub mod http;

pub use api::{ConsulClient, Member, Service, ServiceCheck};
pub use config::{AgentConfig, BindAddr, ConsulParams};
