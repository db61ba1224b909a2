//! Power cuts in the middle of a first boot: a freshly flashed node loses its power at each of the points where a
//! half-done step could strand it, then finishes on the next boot and takes its place; the cluster keeps exactly one
//! master. The points are found on the serial console, where first boot logs each step as it begins.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::lab::Lab;
use super::report::Check;
use crate::state::State;
use crate::{fault, vm};

const NAME: &str = "power cut during a node's first boot (after the role is written, while Consul starts, during the \
                    Swarm join, before the stamp): each next boot runs first boot again with the role remembered, and \
                    it finishes: the same VLAN address, alive in Consul, one Ready Swarm node of that name, stamped, \
                    and still exactly one master";

/// Where the power is cut: the console line first boot prints as the step begins (or just after the one before).
pub const NODE_POINTS: [(&str, &str); 4] = [
    (
        "after the role is written",
        "the master's DHCP server answers",
    ),
    ("while Consul starts", "starting the consul client"),
    ("during the Swarm join", "joining the swarm"),
    ("after the join, before the stamp", "swarm worker"),
];
/// What a first boot that resumes says on the console: it did not elect again.
pub const RESUMED: &str = "role decided on an earlier boot";
/// How long a machine stays off after a cut.
const OFF_FOR: Duration = Duration::from_secs(2);

pub fn node_first_boot_cut_short(lab: &Lab) -> Check {
    Check::from_result(NAME, inner(lab))
}

/// Wait until machine `i`'s console of this boot shows a line containing `needle` (polled every 100 ms, so the cut
/// lands within a fraction of a second of the line), and return it.
pub fn wait_for_console(st: &State, i: usize, needle: &str, limit: Duration) -> Result<String> {
    let files = &st.machines[i].files;
    let watch = vm::SerialWatch::default();
    let start = Instant::now();
    loop {
        if let Some(line) = watch.find(files, needle) {
            return Ok(line);
        }
        if start.elapsed() > limit {
            bail!(
                "no console line with {needle:?} within {} s; last lines of {}:\n{}",
                limit.as_secs(),
                fault::console_logs(&st.machines[i]),
                vm::serial_tail(files, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cut machine `i`'s power, leave it off for a moment, power it on again.
pub fn cut_and_restore(st: &mut State, i: usize) -> Result<()> {
    fault::power_off(st, &[i])?;
    std::thread::sleep(OFF_FOR);
    fault::power_on(st, &[i])?;
    Ok(())
}

fn inner(lab: &Lab) -> Result<Check> {
    let Some(node) = lab.nodes().last().copied() else {
        bail!("needs a node besides the master");
    };
    let i = node.index;
    let vlan = super::reboot::VLAN_ADDR;
    let before = lab.sh(node, vlan)?.trim().to_string();
    let mut st = lab.st.clone();
    let mut evidence = String::new();
    let start = Instant::now();
    fault::reflash(&mut st, i, &node.hostname)?;
    evidence.push_str(&format!("{}: re-flashed and powered on\n", node.hostname));
    let mut resumed_every_time = true;
    for (n, (point, needle)) in NODE_POINTS.iter().enumerate() {
        if n > 0 {
            // The boot after a cut: first boot must pick up where it was, with the role it remembered.
            let resumed = wait_for_console(&st, i, RESUMED, Duration::from_secs(600));
            resumed_every_time &= resumed.is_ok();
            evidence.push_str(&format!(
                "  boot {}: first boot resumed with the remembered role: {}\n",
                n + 1,
                if resumed.is_ok() { "yes" } else { "NO" }
            ));
        }
        let line = wait_for_console(&st, i, needle, Duration::from_secs(600))?;
        let t = start.elapsed().as_secs_f64();
        cut_and_restore(&mut st, i)?;
        evidence.push_str(&format!(
            "  cut {point} at {t:.1} s, on the line: {}\n",
            line.trim()
        ));
    }
    let resumed = wait_for_console(&st, i, RESUMED, Duration::from_secs(600));
    resumed_every_time &= resumed.is_ok();
    evidence.push_str(&format!(
        "  boot {}: first boot resumed with the remembered role: {}\n",
        NODE_POINTS.len() + 1,
        if resumed.is_ok() { "yes" } else { "NO" }
    ));
    let done = lab.poll(Duration::from_secs(900), || {
        Ok(lab
            .sh(
                node,
                "test -e /var/lib/cluster-lab/firstboot.done && ! test -e /var/lib/cluster-lab/firstboot.stopped \
                 && systemctl is-enabled cluster-lab-firstboot.service || true",
            )
            .ok()
            .map(|o| o.trim().to_string())
            .filter(|o| o == "disabled"))
    });
    let finished_after = start.elapsed().as_secs_f64();
    let after = lab.sh(node, vlan).map(|a| a.trim().to_string());
    let super::reflash::Place { alive, one, listed } = super::reflash::Place::wait(lab, node);
    let (masters, _) = super::checks::masters(lab);
    let same = after.as_ref().is_ok_and(|a| *a == before);
    let ok = resumed_every_time
        && done.is_ok()
        && same
        && alive.is_ok()
        && one.is_ok()
        && masters.len() == 1;
    evidence.push_str(&format!(
        "first boot finished (stamped, unit disabled, not stopped): {} ({finished_after:.1} s after the re-flash)\n\
         eth0.200 before {before}, after {}\nalive in Consul: {}\nswarm nodes named {}: {listed}\n\
         machines holding 192.168.200.1: {masters:?}",
        super::reboot::show(&done),
        super::reboot::show(&after),
        super::reboot::show(&alive.map(|_| "yes".to_string())),
        node.hostname,
    ));
    Ok(Check::verdict(NAME, ok, evidence))
}

/// Where the elected master's power is cut: as it begins `swarm init`.
pub const MASTER_POINT: &str = "initialising the swarm";

/// Judge the master's cut during `swarm init`: it was made, the machine cut is the one master, and its next boot
/// resumed first boot with the remembered role and looked for another master first. Returns the verdict and the
/// evidence.
pub fn master_cut_evidence(
    lab: &Lab,
    made: Option<crate::watch::CutMade>,
    masters: &[String],
) -> (bool, String) {
    let Some(made) = made else {
        return (
            false,
            format!("power cut: no machine printed {MASTER_POINT:?} (no cut made)"),
        );
    };
    let mut evidence = format!(
        "power cut: {} {:.1} s after power-on, on the console line: {}\n",
        made.hostname, made.after, made.line
    );
    let Some(m) = lab.st.machines.iter().find(|m| m.hostname == made.hostname) else {
        return (false, evidence);
    };
    // The console of the boot after the cut.
    let text = vm::serial_text(&m.files);
    let said = |what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .map(|l| l.trim().to_string())
    };
    let resumed = said(RESUMED);
    let probed = said("probed for another master");
    let swarm = said("swarm manager");
    for (what, line) in [
        ("resumed with the remembered role", &resumed),
        ("looked for another master", &probed),
        ("swarm manager", &swarm),
    ] {
        evidence.push_str(&format!(
            "  {}, next boot: {what}: {}\n",
            made.hostname,
            line.as_deref().unwrap_or("NOT on the console")
        ));
    }
    if let Some(left) = said("left over from a step cut short") {
        evidence.push_str(&format!("  {}: {left}\n", made.hostname));
    }
    let ok = resumed.is_some()
        && probed.is_some()
        && swarm.is_some()
        && masters == [made.hostname.clone()];
    (ok, evidence)
}
