//! Whole-cluster power loss: the power strip is switched off (every QEMU stops at once, no shutdown) and on again,
//! every machine at the same instant, or the nodes first and the master a minute later (a master on its own
//! socket, or slower to boot). The cluster must come back as it was, by itself.

use std::time::{Duration, Instant};

use anyhow::Result;

use super::lab::Lab;
use super::reboot::{firstboot_not_rerun, master_role, show, VLAN_ADDR};
use super::report::Check;
use super::usecase::MESH_PORT;
use crate::{fault, http};

/// How the power comes back after the power strip was switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerBack {
    /// Every machine at one instant.
    AllAtOnce,
    /// The nodes first, the master this long after them.
    MasterLater(Duration),
}

impl PowerBack {
    fn name(self) -> String {
        let how = match self {
            PowerBack::AllAtOnce => "all off, all on at one instant".to_string(),
            PowerBack::MasterLater(d) => {
                format!(
                    "all off, the nodes on first and the master {} s later",
                    d.as_secs()
                )
            }
        };
        format!(
            "whole-cluster power loss ({how}): the same master, every machine its old VLAN address, all alive in \
             Consul and Ready in Swarm, a Consul KV key written before still there, the routing-mesh service \
             answering, first boot not re-run anywhere"
        )
    }

    /// The Consul KV key each variant writes before the cut (its own, so one run's key cannot stand in for another's).
    fn key(self) -> &'static str {
        match self {
            PowerBack::AllAtOnce => "power-loss",
            PowerBack::MasterLater(_) => "power-loss-master-later",
        }
    }
}

/// What the check measured, for the timings table.
#[derive(Debug, Clone, Copy, Default)]
pub struct PowerLossTimes {
    /// From the power-on to every machine alive in Consul and Ready in Swarm.
    pub recovered_after: Option<f64>,
}

pub fn power_loss(lab: &Lab, back: PowerBack) -> (Check, PowerLossTimes) {
    let mut times = PowerLossTimes::default();
    let c = Check::from_result(&back.name(), inner(lab, back, &mut times));
    (c, times)
}

fn kv(method: &str, key: &str) -> String {
    format!(
        "curl -sS -f -X {method} -H \"X-Consul-Token: $(cluster-lab consul-token)\" {} \
         http://127.0.0.1:8500/v1/kv/cluster-lab/test/{key}{}",
        if method == "PUT" { "--data kept" } else { "" },
        if method == "GET" { "?raw" } else { "" },
    )
}

fn inner(lab: &Lab, back: PowerBack, times: &mut PowerLossTimes) -> Result<Check> {
    let n = lab.st.machines.len();
    let mut before = Vec::new();
    for m in &lab.st.machines {
        before.push(lab.sh(m, VLAN_ADDR)?.trim().to_string());
    }
    lab.sh(lab.master(), &kv("PUT", back.key()))?;
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    let mut boots = Vec::new();
    for m in &lab.st.machines {
        boots.push(lab.sh(m, boot_id)?.trim().to_string());
    }

    let all: Vec<usize> = (0..n).collect();
    fault::power_off(&lab.st, &all)?;
    std::thread::sleep(Duration::from_secs(3));
    let mut st = lab.st.clone();
    match back {
        PowerBack::AllAtOnce => {
            fault::power_on(&mut st, &all)?;
        }
        PowerBack::MasterLater(after) => {
            let nodes: Vec<usize> = all.iter().copied().filter(|&i| i != lab.master).collect();
            fault::power_on(&mut st, &nodes)?;
            std::thread::sleep(after);
            fault::power_on(&mut st, &[lab.master])?;
        }
    }
    // Recovery counts from the last power-on.
    let start = Instant::now();

    let mut ev = String::new();
    let mut ok = true;
    // Every machine back from a new boot, with its old VLAN address.
    for (i, m) in lab.st.machines.iter().enumerate() {
        let addr = lab.poll(Duration::from_secs(900), || {
            let boot = lab.sh(m, boot_id).ok().map(|b| b.trim().to_string());
            if boot.as_deref().is_none_or(|b| b == boots[i]) {
                return Ok(None);
            }
            Ok(lab
                .sh(m, VLAN_ADDR)
                .ok()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty()))
        });
        let same = addr.as_ref().is_ok_and(|a| *a == before[i]);
        ok &= same;
        ev.push_str(&format!(
            "{}: eth0.200 before {}, after {}\n",
            m.hostname,
            before[i],
            show(&addr)
        ));
    }
    let master = lab.master();
    let role = master_role(lab, master);
    ok &= role.is_ok();
    let alive = lab.poll(Duration::from_secs(600), || {
        let m = http::consul_members(&lab.st.netns, &lab.master_ip())?;
        Ok((m.iter().filter(|x| x.alive()).count() == n).then_some(()))
    });
    let ready = lab.poll(Duration::from_secs(600), || {
        let out = lab.sh(master, "docker node ls --format '{{.Status}}'")?;
        Ok((out.lines().filter(|l| l.trim() == "Ready").count() == n).then_some(()))
    });
    ok &= alive.is_ok() && ready.is_ok();
    if ok {
        times.recovered_after = Some(start.elapsed().as_secs_f64());
    }
    let kept = lab
        .sh(master, &kv("GET", back.key()))
        .map(|v| v.trim().to_string());
    ok &= kept.as_deref().is_ok_and(|v| v == "kept");
    let url = format!("http://{}:{MESH_PORT}/", master.lan_ip);
    let mesh = lab.poll(Duration::from_secs(300), || {
        Ok(lab
            .get(&url)
            .ok()
            .filter(|r| r.body.contains("cluster-lab-mesh-ok")))
    });
    ok &= mesh.is_ok();
    let mut firstboot = Vec::new();
    for m in &lab.st.machines {
        let (not_rerun, _) = firstboot_not_rerun(lab, m);
        ok &= not_rerun;
        firstboot.push(format!(
            "{} {}",
            m.hostname,
            if not_rerun { "not re-run" } else { "RE-RUN" }
        ));
    }
    ev.push_str(&format!(
        "master {}: VLAN address, dhcpd: {}\nall {n} alive in Consul: {}\nall {n} Ready in Swarm: {}{}\n\
         KV cluster-lab/test/{}: {}\nGET {url}: {}\nfirst boot: {}",
        master.hostname,
        show(&role),
        show(&alive.map(|_| "yes".to_string())),
        show(&ready.map(|_| "yes".to_string())),
        times
            .recovered_after
            .map(|s| format!(" ({s:.1} s after the last power-on)"))
            .unwrap_or_default(),
        back.key(),
        show(&kept),
        show(&mesh.map(|r| format!("HTTP {} {}", r.status, r.body.trim()))),
        firstboot.join(", "),
    ));
    Ok(Check::verdict(&back.name(), ok, ev))
}
