//! The bench network: a server namespace and a client namespace joined by one veth pair.
//!
//! Every name starts with `clbench-`, so bench traffic never leaves these namespaces. Leftovers of an earlier
//! run (namespaces, links, processes still inside the namespaces) are removed before building, and again when
//! the topology is torn down or dropped; teardown collects its errors and keeps going. A bench stopped with
//! Ctrl-C leaves the namespaces behind; the next run removes them first.

use std::path::Path;

use anyhow::{bail, Result};
use xshell::{cmd, Cmd, Shell};

pub const SERVER_NS: &str = "clbench-srv";
pub const CLIENT_NS: &str = "clbench-cli";
/// The server's end of the veth pair (inside [`SERVER_NS`]).
pub const SERVER_IF: &str = "clbench-s";
/// perfdhcp's end of the veth pair (inside [`CLIENT_NS`]).
pub const CLIENT_IF: &str = "clbench-c";

/// The two namespaces and their link; torn down on drop.
pub struct Topology<'a> {
    sh: &'a Shell,
    torn_down: bool,
}

impl<'a> Topology<'a> {
    /// Build the topology from scratch: `server_addr` on [`SERVER_IF`], `client_addr` on [`CLIENT_IF`] (CIDR).
    pub fn create(sh: &'a Shell, server_addr: &str, client_addr: &str) -> Result<Topology<'a>> {
        let leftovers = clean(sh);
        if !leftovers.is_empty() {
            bail!(
                "removing the leftovers of an earlier bench run:\n  {}",
                leftovers.join("\n  ")
            );
        }
        let topo = Topology {
            sh,
            torn_down: false,
        };
        for ns in [SERVER_NS, CLIENT_NS] {
            run(cmd!(sh, "ip netns add {ns}"))?;
            run(cmd!(sh, "ip -n {ns} link set lo up"))?;
        }
        run(cmd!(
            sh,
            "ip link add {SERVER_IF} netns {SERVER_NS} type veth peer name {CLIENT_IF} netns {CLIENT_NS}"
        ))?;
        for (ns, dev, addr) in [
            (SERVER_NS, SERVER_IF, server_addr),
            (CLIENT_NS, CLIENT_IF, client_addr),
        ] {
            run(cmd!(sh, "ip -n {ns} addr add {addr} dev {dev}"))?;
            run(cmd!(sh, "ip -n {ns} link set {dev} up"))?;
        }
        Ok(topo)
    }

    /// Remove everything; report every step that failed.
    pub fn teardown(mut self) -> Result<()> {
        self.torn_down = true;
        let errors = clean(self.sh);
        if !errors.is_empty() {
            bail!("tearing down the bench network:\n  {}", errors.join("\n  "));
        }
        Ok(())
    }
}

impl Drop for Topology<'_> {
    fn drop(&mut self) {
        if !self.torn_down {
            for e in clean(self.sh) {
                eprintln!("bench: teardown: {e}");
            }
        }
    }
}

/// Kill processes left in our namespaces, delete the namespaces and any stray link; return what failed.
fn clean(sh: &Shell) -> Vec<String> {
    let mut errors = Vec::new();
    let existing = cmd!(sh, "ip netns list").read().unwrap_or_default();
    for ns in [SERVER_NS, CLIENT_NS] {
        if !existing
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns))
        {
            continue;
        }
        // Only processes inside our own namespaces: servers or perfdhcp of an earlier, interrupted bench.
        let pids = cmd!(sh, "ip netns pids {ns}").read().unwrap_or_default();
        for pid in pids.split_whitespace() {
            if let Err(e) = run(cmd!(sh, "kill -KILL {pid}")) {
                // Gone between listing and killing: nothing left to do.
                if Path::new("/proc").join(pid).exists() {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if let Err(e) = run(cmd!(sh, "ip netns del {ns}")) {
            errors.push(format!("{e:#}"));
        }
    }
    // A veth end left in the root namespace by a run that failed half-way.
    for dev in [SERVER_IF, CLIENT_IF] {
        if cmd!(sh, "ip link show dev {dev}")
            .quiet()
            .ignore_stderr()
            .read()
            .is_ok()
        {
            if let Err(e) = run(cmd!(sh, "ip link del dev {dev}")) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    errors
}

/// Run a command quietly; on failure the error names the command and carries its stderr.
pub fn run(cmd: Cmd<'_>) -> Result<String> {
    let shown = cmd.to_string();
    let out = cmd.quiet().ignore_status().output()?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
