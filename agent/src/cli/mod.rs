//! Command-line front end: one file per subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod catalog;
pub mod config;
pub mod consul_token;
pub mod dhcpd;
pub mod elect;
pub mod firstboot;
pub mod node;
pub mod probe;
pub mod stack;
pub mod status;

/// cluster-lab turns Raspberry Pi-class machines into a Docker Swarm + Consul cluster on first boot.
#[derive(Debug, Parser)]
#[command(name = "cluster-lab", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v debug, -vv trace). CLUSTER_LAB_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Keep Consul's catalog in step with the Swarm tasks running on this machine (cluster-lab-catalog.service).
    CatalogSync(catalog::CatalogSyncArgs),
    /// Check or print the cluster-lab.toml configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Print Consul's management token (for the UI's login and the consul CLI; run as root).
    ConsulToken(consul_token::ConsulTokenArgs),
    /// Serve DHCP to the cluster's nodes on the VLAN interface only (runs on the master).
    Dhcpd(dhcpd::DhcpdArgs),
    /// Run the master election alone and print the role (benchmarks, diagnosis; changes nothing).
    #[command(hide = true)]
    Elect(elect::ElectArgs),
    /// Set up this machine as master or node of the cluster (run once by cluster-lab-firstboot.service).
    Firstboot(firstboot::FirstbootArgs),
    /// Machines of the cluster: `node remove NAME` takes one out for good (run on the master).
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// Look for DHCP servers on an interface and tell whether one is this cluster's master.
    Probe(probe::ProbeArgs),
    /// Whole cluster scenarios in one command: `stack list`, `stack deploy NAME`, `stack rm NAME`.
    #[command(subcommand)]
    Stack(stack::StackCommand),
    /// Show role, VLAN address, Consul members and Swarm nodes, and what is wrong.
    Status(status::StatusArgs),
}

impl Command {
    /// Run the subcommand. The exit code is the subcommand's own; errors map to 2 in `main`.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::CatalogSync(args) => args.run(),
            Command::Config(cmd) => cmd.run(),
            Command::ConsulToken(args) => args.run(),
            Command::Dhcpd(args) => args.run(),
            Command::Elect(args) => args.run(),
            Command::Firstboot(args) => args.run(),
            Command::Node(cmd) => cmd.run(),
            Command::Probe(args) => args.run(),
            Command::Stack(cmd) => cmd.run(),
            Command::Status(args) => args.run(),
        }
    }
}
