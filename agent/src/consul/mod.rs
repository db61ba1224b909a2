//! Consul: the agent configuration cluster-lab renders (server on the master, client on nodes), the gossip key
//! derived from the cluster secret, and a small client for the agent's HTTP API.

pub mod api;
pub mod config;
pub mod http;
pub mod keys;

pub use api::{ConsulClient, Member};
pub use config::{AgentConfig, BindAddr, ConsulParams};
