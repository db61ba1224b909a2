//! A card re-flashed with its old hostname takes its old place: the same VLAN address, the same Consul node, one
//! Swarm node of that name (the one its card left behind removed by the master), and a healthy `cluster-lab status`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::lab::Lab;
use super::reboot::show;
use super::report::Check;
use crate::state::Machine;
use crate::{fault, http};

const NAME: &str = "re-flash node 1 with its hostname: first boot runs again and it takes its old place (the same \
                    VLAN address, alive in Consul under its name, one Ready Swarm node of that name and no Down twin, \
                    `cluster-lab status` on the master healthy)";

/// Whether a machine back from a new card has taken its place: alive in the master's Consul under its name, and
/// exactly one Swarm node of that name, Ready (the card it replaced left one behind, which the master's tidy timer,
/// running every minute, removes).
pub struct Place {
    pub alive: Result<()>,
    pub one: Result<()>,
    /// The Swarm nodes of that name, as `docker node ls` lists them.
    pub listed: String,
}

impl Place {
    pub fn wait(lab: &Lab, node: &Machine) -> Place {
        let alive = lab.poll(Duration::from_secs(300), || {
            let m = http::consul_members(&lab.st.netns, &lab.master_ip())?;
            Ok(m.iter()
                .any(|x| x.name == node.hostname && x.alive())
                .then_some(()))
        });
        let mut listed = String::new();
        let one = lab.poll(Duration::from_secs(240), || {
            let out = lab.sh(
                lab.master(),
                "docker node ls --format '{{.Hostname}} {{.Status}}'",
            )?;
            let ours: Vec<&str> = out
                .lines()
                .map(str::trim)
                .filter(|l| l.split_whitespace().next() == Some(node.hostname.as_str()))
                .collect();
            listed = ours.join(", ");
            Ok((ours == [format!("{} Ready", node.hostname).as_str()]).then_some(()))
        });
        Place { alive, one, listed }
    }
}

pub fn reflash_node(lab: &Lab) -> Check {
    Check::from_result(NAME, inner(lab))
}

fn inner(lab: &Lab) -> Result<Check> {
    let Some(node) = lab.nodes().first().copied() else {
        bail!("needs a node besides the master");
    };
    let vlan = super::reboot::VLAN_ADDR;
    let before = lab.sh(node, vlan)?.trim().to_string();
    let mut st = lab.st.clone();
    let start = Instant::now();
    fault::reflash(&mut st, node.index, &node.hostname)?;
    // The new card's first boot is done when its stamp exists.
    let done = lab.poll(Duration::from_secs(900), || {
        Ok(lab
            .sh(
                node,
                "test -e /var/lib/cluster-lab/firstboot.done && echo done",
            )
            .ok()
            .map(|o| o.trim().to_string())
            .filter(|o| o == "done"))
    });
    let joined_after = start.elapsed().as_secs_f64();
    let after = lab.sh(node, vlan).map(|a| a.trim().to_string());
    let Place { alive, one, listed } = Place::wait(lab, node);
    let status = lab.sh(
        lab.master(),
        "cluster-lab status >/dev/null && echo healthy",
    );
    let same = after.as_ref().is_ok_and(|a| *a == before);
    let ok = done.is_ok()
        && same
        && alive.is_ok()
        && one.is_ok()
        && status.as_deref().is_ok_and(|s| s.trim() == "healthy");
    Ok(Check::verdict(
        NAME,
        ok,
        format!(
            "{}: re-flashed and powered on; first boot done: {} ({joined_after:.1} s after the power cut)\n\
             eth0.200 before {before}, after {}\nalive in Consul: {}\n\
             swarm nodes named {}: {listed} ({})\ncluster-lab status on the master: {}",
            node.hostname,
            show(&done),
            show(&after),
            show(&alive.map(|_| "yes".to_string())),
            node.hostname,
            if one.is_ok() {
                "one, Ready"
            } else {
                "not one Ready node"
            },
            show(&status.map(|s| s.trim().to_string())),
        ),
    ))
}
