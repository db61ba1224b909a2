//! A switch for benches that put many machines on one VLAN: a namespace holding a bridge, and one namespace per
//! machine linked to it by a veth pair whose machine end is [`LINK`].
//!
//! Every namespace's name starts with the bench's prefix, and so does the switch's (`{prefix}sw`): leftovers of an
//! earlier run (of any size) are found by that prefix and removed, with whatever still runs inside them, before the
//! switch is built, and again when it is torn down or dropped. No packet leaves these namespaces.

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use super::netns::run;

/// Each machine's link to the switch.
pub const LINK: &str = "vlan";

/// The switch and its machines' namespaces; removed on drop.
pub struct Switch {
    prefix: &'static str,
    torn_down: bool,
}

impl Switch {
    /// Build the switch and one namespace per name in `machines` (each must start with `prefix`), every link up
    /// and without an address.
    pub fn create(sh: &Shell, prefix: &'static str, machines: &[String]) -> Result<Switch> {
        if let Some(m) = machines.iter().find(|m| !m.starts_with(prefix)) {
            bail!("namespace {m} does not start with the bench's prefix {prefix}");
        }
        for e in clean(sh, prefix) {
            eprintln!("bench: removing an earlier run's namespaces: {e}");
        }
        let switch = Switch {
            prefix,
            torn_down: false,
        };
        let sw = switch.namespace();
        run(cmd!(sh, "ip netns add {sw}"))?;
        run(cmd!(
            sh,
            "ip -n {sw} link add br0 type bridge forward_delay 0 stp_state 0"
        ))?;
        run(cmd!(sh, "ip -n {sw} link set br0 up"))?;
        for (i, ns) in machines.iter().enumerate() {
            let port = format!("p{i}");
            run(cmd!(sh, "ip netns add {ns}"))?;
            run(cmd!(sh, "ip -n {ns} link set lo up"))?;
            run(cmd!(
                sh,
                "ip -n {sw} link add {port} type veth peer name {LINK} netns {ns}"
            ))?;
            run(cmd!(sh, "ip -n {sw} link set {port} master br0 up"))?;
            run(cmd!(sh, "ip -n {ns} link set {LINK} up"))?;
        }
        Ok(switch)
    }

    fn namespace(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// Remove everything; report every step that failed.
    pub fn teardown(mut self, sh: &Shell) -> Result<()> {
        self.torn_down = true;
        let errors = clean(sh, self.prefix);
        if !errors.is_empty() {
            bail!("tearing down the bench network:\n  {}", errors.join("\n  "));
        }
        Ok(())
    }
}

/// A bench that stopped on an error still removes its namespaces and whatever runs in them.
impl Drop for Switch {
    fn drop(&mut self) {
        if !self.torn_down {
            for e in clean(&Shell::new().expect("a shell"), self.prefix) {
                eprintln!("bench: teardown: {e}");
            }
        }
    }
}

/// Delete every namespace whose name starts with `prefix`, killing what still runs inside; return what failed.
fn clean(sh: &Shell, prefix: &str) -> Vec<String> {
    let existing = cmd!(sh, "ip netns list").quiet().read().unwrap_or_default();
    let mut errors = Vec::new();
    for ns in existing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|ns| ns.starts_with(prefix))
    {
        let pids = cmd!(sh, "ip netns pids {ns}")
            .quiet()
            .read()
            .unwrap_or_default();
        for pid in pids.split_whitespace() {
            let _ = cmd!(sh, "kill -KILL {pid}").quiet().ignore_status().run();
        }
        if let Err(e) = run(cmd!(sh, "ip netns del {ns}")) {
            errors.push(format!("{e:#}"));
        }
    }
    errors
}
