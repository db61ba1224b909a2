//! `cargo xtask cluster status` and `cargo xtask cluster ssh`.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::state::{rel, State};
use super::{fault, http};

#[derive(Debug, Clone, Args)]
pub struct Status {
    /// Name of the cluster.
    #[arg(long, default_value = "lab")]
    pub name: String,
}

impl Status {
    pub fn run(self) -> Result<()> {
        let st = State::require(&self.name)?;
        let leases = st.router_files().leases();
        println!(
            "cluster {} ({}, image {}), switch netns {}",
            st.name,
            st.arch,
            rel(&st.image).display(),
            st.netns
        );
        println!(
            "{:<8} {:<13} {:<7} {:<18} {:<12} {:<6} console",
            "machine", "power (qemu)", "cable", "mac", "lan", "lease"
        );
        for m in &st.machines {
            let (power, cable) = fault::describe(m);
            let leased = leases
                .iter()
                .any(|(mac, ip, _)| *mac == m.mac && *ip == m.lan_ip);
            println!(
                "{:<8} {:<13} {:<7} {:<18} {:<12} {:<6} {}",
                m.hostname,
                power,
                cable,
                m.mac,
                m.lan_ip.to_string(),
                if leased { "yes" } else { "no" },
                fault::console_logs(m)
            );
        }
        let mut found = false;
        for m in &st.machines {
            if let Ok(members) = http::consul_members(&st.netns, &m.lan_ip.to_string()) {
                if members.iter().any(|x| x.server && x.name == m.hostname) {
                    found = true;
                    println!("consul (asked {} at {}:8500):", m.hostname, m.lan_ip);
                    for x in members {
                        println!(
                            "  {:<8} {:<16} {}{}",
                            x.name,
                            x.addr,
                            if x.alive() { "alive" } else { "not alive" },
                            if x.server { " (server)" } else { "" }
                        );
                    }
                    break;
                }
            }
        }
        if !found {
            println!("consul: no machine's Consul server answers on :8500 yet");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Args)]
pub struct SshArgs {
    /// Name of the cluster.
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// Machine: hostname (master, node1, …) or index (0, 1, …).
    pub machine: String,
    /// Command to run (default: an interactive shell).
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl SshArgs {
    pub fn run(self) -> Result<()> {
        let st = State::require(&self.name)?;
        let m = st.machine(&self.machine)?;
        let ssh = st.ssh_for(m);
        let ip = m.lan_ip.to_string();
        if self.command.is_empty() {
            let status = ssh.interactive(&ip).status().context("running ssh")?;
            std::process::exit(status.code().unwrap_or(1));
        }
        let out = super::host::output_within(
            &mut ssh.command(&ip, &self.command.join(" ")),
            Duration::from_secs(600),
        )?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!(
                "`{}` on {} exited with {}",
                self.command.join(" "),
                m.hostname,
                out.status
            );
        }
        Ok(())
    }
}
