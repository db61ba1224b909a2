//! `cargo xtask cluster down`: power off every VM, stop the home router, delete the taps, the bridge
//! and the namespace, and remove the VM disks. Logs, the state's artifacts and the test key stay.
//! Collects errors and keeps going; safe to run when nothing (or only part of a cluster) is up.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use super::host;
use super::state::{self, State};
use super::switch::Switch;
use super::vm;

#[derive(Debug, Clone, Args)]
pub struct Down {
    /// Name of the cluster.
    #[arg(long, default_value = "lab")]
    pub name: String,
}

impl Down {
    pub fn run(self) -> Result<()> {
        state::validate_name(&self.name)?;
        let errors = teardown(&self.name);
        if !errors.is_empty() {
            bail!(
                "tearing down cluster {} left errors:\n  {}",
                self.name,
                errors.join("\n  ")
            );
        }
        eprintln!("cluster: {} is down", self.name);
        Ok(())
    }
}

/// Tear down cluster `name` as far as it exists; returns the errors met on the way.
pub fn teardown(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let st = match State::load(name) {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("{e:#}"));
            None
        }
    };
    let sw = Switch::for_cluster(name);
    if let Some(st) = &st {
        for m in &st.machines {
            if let Err(e) = vm::power_off(&m.files) {
                errors.push(format!("powering off {}: {e:#}", m.hostname));
            }
        }
        if let Some(pid) = st.router_pid {
            if let Err(e) = host::stop(pid, Duration::from_secs(3)) {
                errors.push(format!("stopping dnsmasq ({pid}): {e:#}"));
            }
        }
    }
    errors.extend(sw.destroy());
    if let Some(st) = &st {
        for m in &st.machines {
            for f in [&m.disk, &m.files.qmp, &m.files.pid] {
                match std::fs::remove_file(f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => errors.push(format!("removing {}: {e}", f.display())),
                }
            }
        }
        if let Err(e) = std::fs::remove_file(State::path(name)) {
            errors.push(format!("removing {}: {e}", State::path(name).display()));
        }
    }
    errors
}
