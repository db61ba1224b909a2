//! cluster-lab: the first-boot agent that turns a handful of small machines into a Docker Swarm + Consul cluster.
//!
//! The binary (`src/main.rs`) is a thin clap front end; every subcommand lives in `cli/` and calls into the
//! modules below, which are named after the things they manage.

pub mod catalog;
pub mod cli;
pub mod command;
/// `cluster-lab.toml` (the `cluster-lab-config` crate).
pub use cluster_lab_config as config;
pub mod consul;
pub mod dhcp;
pub mod docker;
pub mod election;
pub mod firstboot;
pub mod host;
pub mod logging;
pub mod membership;
pub mod net;
pub mod plan;
pub mod secret;
pub mod stack;
pub mod status;
pub mod wait;
