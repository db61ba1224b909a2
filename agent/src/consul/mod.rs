//! Consul: the agent configuration cluster-lab renders (server on the master, client on nodes; the gossip key
//! comes from [`crate::secret`]), and a client for the agent's HTTP API (hyper).

pub mod api;
pub mod config;
pub mod http;

pub use api::{ConsulClient, Member};
pub use config::{AgentConfig, BindAddr, ConsulParams};
