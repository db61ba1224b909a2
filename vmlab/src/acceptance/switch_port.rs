//! A switch that drops 802.1Q-tagged frames: one more machine is added to the running cluster on a switch port
//! that drops them (an nftables rule on the virtual switch). Its home LAN works, its VLAN reaches nobody. It must
//! stop with a console line naming the switch instead of becoming a second master; once the port carries tags
//! again, a power cycle runs first boot again and the machine joins as a node.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::lab::Lab;
use super::report::Check;
use crate::state::State;
use crate::{fault, http, serial};

const NAME: &str = "a machine added on a switch port that drops VLAN tags stops with the switch named instead of \
                    becoming a second master (console line, `cluster-lab status`, no VLAN address, not in Consul); with \
                    the port fixed, a power cycle makes it a node";
/// The added machine's hostname.
pub const HOSTNAME: &str = "behind-smart-switch";
/// What its console says.
const CONSOLE: &str = "the switch seems to drop VLAN-tagged frames";

pub fn machine_behind_a_tag_dropping_port(lab: &Lab) -> Check {
    Check::from_result(NAME, inner(lab))
}

fn inner(lab: &Lab) -> Result<Check> {
    let mut st = State::require(&lab.st.name)?;
    let start = Instant::now();
    let i = fault::add(&mut st, HOSTNAME, true)?;
    let m = st.machines[i].clone();
    let line = lab.poll(Duration::from_secs(600), || {
        let log = serial::strip_ansi(&std::fs::read_to_string(&m.files.serial).unwrap_or_default());
        Ok(log
            .lines()
            .find(|l| l.contains(CONSOLE))
            .map(|l| l.trim().to_string()))
    });
    let stopped_after = start.elapsed().as_secs_f64();
    let ssh = st.ssh_for(&m);
    let ip = m.lan_ip.to_string();
    let status = ssh.run_as_root(&ip, "cluster-lab status; true", Duration::from_secs(120));
    let vlan = ssh.run_as_root(
        &ip,
        "ip -4 -o addr show dev eth0.200 | awk '{print $4}'; cat /var/lib/cluster-lab/role 2>/dev/null; true",
        Duration::from_secs(60),
    );
    let members = http::consul_members(&lab.st.netns, &lab.master_ip());

    // The switch fixed, the machine rebooted: first boot runs again, stamps, and the machine is a node in Consul.
    let fixed = Instant::now();
    let state = "cat /var/lib/cluster-lab/role; test -e /var/lib/cluster-lab/firstboot.done && echo stamped; \
                 test -e /var/lib/cluster-lab/firstboot.stopped && echo still-stopped; true";
    let role = fault::set_tags_dropped(&mut st, i, false)
        .and_then(|()| fault::power_off(&st, &[i]))
        .and_then(|()| fault::power_on(&mut st, &[i]))
        .and_then(|_| {
            lab.poll(Duration::from_secs(600), || {
                let now = ssh
                    .run_as_root(&ip, state, Duration::from_secs(60))?
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                Ok(now.contains("stamped").then_some(now))
            })
        });
    let joined_after = fixed.elapsed().as_secs_f64();
    let joined = lab.poll(Duration::from_secs(120), || {
        let ms = http::consul_members(&lab.st.netns, &lab.master_ip())?;
        Ok(ms
            .iter()
            .find(|x| x.name == HOSTNAME && x.alive())
            .map(|x| x.addr.clone()))
    });
    // Off again: the rest of the test runs without it.
    let off = fault::power_off(&st, &[i]);

    let stopped_line = status.as_ref().ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("problem: first boot stopped:"))
            .map(str::to_string)
    });
    let in_consul = members
        .as_ref()
        .map(|ms| ms.iter().any(|x| x.name == HOSTNAME))
        .ok();
    let ok = line.is_ok()
        && stopped_line.as_deref().is_some_and(|l| l.contains(CONSOLE))
        && vlan.as_deref().is_ok_and(|v| v.trim().is_empty())
        && in_consul == Some(false)
        && joined.is_ok()
        && role.as_deref().is_ok_and(|r| r == "node stamped")
        && off.is_ok();
    Ok(Check::verdict(
        NAME,
        ok,
        format!(
            "{HOSTNAME} ({}, port drops tagged frames) added and powered on; console after {stopped_after:.1} s: {}\n\
             cluster-lab status: {}\neth0.200 address and role (none expected): {}\nin the master's Consul: {}\n\
             then the port carries tags again and the machine is power-cycled: alive in Consul {}; role and stamp \
             ({joined_after:.1} s after): {}",
            m.lan_ip,
            match &line {
                Ok(l) => l.chars().take(300).collect::<String>(),
                Err(e) => format!("no such line: {e:#}"),
            },
            match (&stopped_line, &status) {
                (Some(l), _) => l.chars().take(200).collect::<String>(),
                (None, Ok(s)) => s.trim().replace('\n', " / "),
                (None, Err(e)) => format!("{e:#}"),
            },
            match &vlan {
                Ok(v) if v.trim().is_empty() => "none".to_string(),
                Ok(v) => v.trim().replace('\n', " / "),
                Err(e) => format!("{e:#}"),
            },
            match (&in_consul, &members) {
                (Some(b), _) => b.to_string(),
                (None, Err(e)) => format!("{e:#}"),
                (None, Ok(_)) => unreachable!(),
            },
            match &joined {
                Ok(addr) => format!("at {addr}"),
                Err(e) => format!("no: {e:#}"),
            },
            match &role {
                Ok(r) => r.clone(),
                Err(e) => format!("{e:#}"),
            },
        ),
    ))
}
