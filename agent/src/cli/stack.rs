//! `cluster-lab stack list | deploy NAME | rm NAME`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::config::Settings;
use crate::docker::registry;
use crate::docker::swarm::Swarm;
use crate::stack::{self, Progress};

/// Whole cluster scenarios, deployed with one command.
///
/// A stack is a directory with `stack.yml` (a compose file for `docker stack deploy`) and `images/` (the `docker
/// save` archives it needs). cluster-lab's own are in /usr/lib/cluster-lab/stacks; add yours in
/// /etc/cluster-lab/stacks/NAME/ (one of the same name replaces the built-in one). In stack.yml, ${REGISTRY} is the
/// cluster registry on the master: `image: ${REGISTRY}/me/app:1` is the archive's `me/app:1`, pushed there by
/// `deploy` and pulled from there by every machine.
#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// List the stacks on this machine: name, where it comes from, whether it is deployed, what it is.
    List,
    /// Check a stack, push its images into the cluster registry, deploy it, and wait until every task runs
    /// (on the master).
    Deploy(DeployArgs),
    /// Remove a deployed stack (on the master).
    Rm(RmArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Nothing is deployed when the stack is unknown, Docker refuses its compose file, or an image \
named under ${REGISTRY} is in none of its archives.\nExit status: 0 every task running, 2 error."
)]
pub struct DeployArgs {
    /// The stack's name (`cluster-lab stack list`).
    pub name: String,
    /// Seconds to wait until every task runs.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The stack's name.
    pub name: String,
}

struct Printed;

impl Progress for Printed {
    fn step(&self, what: &str) {
        println!("{what}");
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The cluster registry's `host:port` from this machine's settings (the defaults before first boot kept them).
fn registry_address() -> anyhow::Result<String> {
    let path = std::path::Path::new(crate::firstboot::ETC_CONFIG);
    let settings = if path.exists() {
        Settings::load(path)?
    } else {
        Settings::default()
    };
    Ok(registry::address(settings.network.master))
}

impl StackCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let stacks = stack::installed();
        match self {
            StackCommand::List => {
                // On a node, or with dockerd down, whether a stack runs is not known here: say so, not "no".
                let deployed = runtime()?.block_on(stack::deployed());
                if let Err(e) = &deployed {
                    println!("(whether a stack is deployed is unknown here: {e})");
                }
                if stacks.is_empty() {
                    println!(
                        "no stacks: add one in {}/NAME/{}",
                        stack::USER_DIR,
                        stack::COMPOSE_FILE
                    );
                }
                for s in stacks.values() {
                    let state = match &deployed {
                        Ok(d) if d.contains(&s.name) => "deployed",
                        Ok(_) => "not deployed",
                        Err(_) => "?",
                    };
                    println!(
                        "{:<16} {:<9} {:<12} {}",
                        s.name,
                        s.origin.to_string(),
                        state,
                        s.description()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            StackCommand::Deploy(args) => {
                let found = stack::find(&stacks, &args.name)?;
                let registry = registry_address()?;
                runtime()?.block_on(async {
                    let swarm = Swarm::connect(
                        std::path::Path::new(crate::docker::swarm::SOCKET),
                        Duration::from_secs(30),
                    )
                    .await
                    .context("connecting to dockerd")?;
                    let services = stack::deploy(
                        &swarm,
                        &found,
                        &registry,
                        Duration::from_secs(args.timeout),
                        &Printed,
                    )
                    .await?;
                    println!(
                        "stack {} deployed: {}",
                        found.name,
                        services
                            .iter()
                            .map(|(s, r)| format!("{s} {r}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    Ok(ExitCode::SUCCESS)
                })
            }
            StackCommand::Rm(args) => {
                let found = stack::find(&stacks, &args.name)?;
                if runtime()?.block_on(stack::remove(&found))? {
                    println!("stack {} removed", found.name);
                } else {
                    println!("stack {} is not deployed; nothing to remove", found.name);
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}
