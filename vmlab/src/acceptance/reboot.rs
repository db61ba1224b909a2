//! Rebooting a node: it comes back with the same VLAN address, alive in Consul and Ready in Swarm,
//! without running first boot again.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use super::lab::Lab;
use super::report::Check;
use crate::http;

const NAME: &str = "reboot node 1 (its Consul keyring emptied first, as a power cut soon after Consul's first start \
                    leaves it): same VLAN address, alive in Consul, Ready in Swarm, firstboot not re-run";

/// Empties node 1's Consul gossip keyring before the reboot: what a power cut within ext4's flush interval of Consul's
/// first start leaves (Consul writes the file unsynced). Without the consul unit's guard, Consul never starts again.
const EMPTY_KEYRING: &str =
    ": > /var/lib/consul/serf/local.keyring && stat -c %s /var/lib/consul/serf/local.keyring";
/// What the guard said in this boot.
const KEYRING_GUARD: &str =
    "journalctl -b -u consul --no-pager -o cat | grep -m1 'removed the empty' || echo 'nothing removed'";

/// A machine's address on the cluster VLAN, as `ADDR/PREFIX` (empty without one).
pub(super) const VLAN_ADDR: &str = "ip -4 -o addr show dev eth0.200 | awk '{print $4}'";

/// What the reboot measured, for the timings table.
#[derive(Debug, Clone, Default)]
pub struct RebootTimes {
    /// From `systemctl reboot` to Ready in Swarm again.
    pub ready_after: Option<f64>,
}

pub fn reboot_node(lab: &Lab) -> (Check, RebootTimes) {
    let mut times = RebootTimes::default();
    let c = Check::from_result(NAME, inner(lab, &mut times));
    (c, times)
}

fn inner(lab: &Lab, times: &mut RebootTimes) -> Result<Check> {
    let Some(node) = lab.nodes().first().copied() else {
        bail!("needs a node besides the master");
    };
    let vlan = VLAN_ADDR;
    let before_addr = lab.sh(node, vlan)?.trim().to_string();
    if before_addr.is_empty() {
        bail!(
            "{} has no address on eth0.200 before the reboot",
            node.hostname
        );
    }
    let emptied = lab.sh(node, EMPTY_KEYRING)?.trim().to_string();
    let start = Instant::now();
    let (before_boot, boot) = reboot_and_wait(lab, node)?;
    let up_after = start.elapsed().as_secs_f64();
    let after_addr = lab.poll(Duration::from_secs(300), || {
        Ok(lab
            .sh(node, vlan)
            .ok()
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty()))
    });
    let alive = lab.poll(Duration::from_secs(300), || {
        let m = http::consul_members(&lab.st.netns, &lab.master_ip())?;
        Ok(m.iter()
            .any(|x| x.name == node.hostname && x.alive())
            .then_some(()))
    });
    let ready = lab.poll(Duration::from_secs(300), || {
        let out = lab.sh(
            lab.master(),
            "docker node ls --format '{{.Hostname}} {{.Status}}'",
        )?;
        Ok(out
            .lines()
            .any(|l| l.trim() == format!("{} Ready", node.hostname))
            .then_some(()))
    });
    if ready.is_ok() {
        times.ready_after = Some(start.elapsed().as_secs_f64());
    }
    let (not_rerun, fb) = firstboot_not_rerun(lab, node);
    let guard = lab.sh(node, KEYRING_GUARD).map(|s| s.trim().to_string());
    let same = after_addr.as_ref().is_ok_and(|a| *a == before_addr);
    let ok = same && alive.is_ok() && ready.is_ok() && not_rerun;
    Ok(Check::verdict(
        NAME,
        ok,
        format!(
            "{}: Consul keyring emptied ({emptied} bytes); rebooted (boot id {} → {}), SSH back after {up_after:.1} s\n\
             consul's start guard: {}\n\
             eth0.200 before {before_addr}, after {}\n\
             alive in Consul: {}\nReady in Swarm: {}{}\n\
             firstboot this boot (ExecMainStart, journal lines): {}",
            node.hostname,
            short(&before_boot),
            short(&boot),
            show(&guard),
            show(&after_addr),
            show(&alive.map(|_| "yes".to_string())),
            show(&ready.map(|_| "yes".to_string())),
            times
                .ready_after
                .map(|s| format!(" ({s:.1} s after the reboot command)"))
                .unwrap_or_default(),
            show(&fb),
        ),
    ))
}

/// `systemctl reboot` on `m`, then wait until SSH answers from a new boot. Returns the boot ids before and after.
fn reboot_and_wait(lab: &Lab, m: &crate::state::Machine) -> Result<(String, String)> {
    let boot_id = "cat /proc/sys/kernel/random/boot_id";
    let before = lab.sh(m, boot_id)?.trim().to_string();
    // The connection drops as the machine goes down: the exit status says nothing.
    let _ = lab.sh(m, "systemctl reboot");
    let after = lab.poll(Duration::from_secs(900), || {
        Ok(lab
            .sh(m, boot_id)
            .ok()
            .map(|b| b.trim().to_string())
            .filter(|b| !b.is_empty() && *b != before))
    })?;
    Ok((before, after))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(8)]
}

/// Evidence text of a result: the value, or `no: ` and the error.
pub(super) fn show(r: &Result<String>) -> String {
    match r {
        Ok(s) => s.clone(),
        Err(e) => format!("no: {e:#}"),
    }
}

/// Wait until `master` holds 192.168.200.1 on the VLAN with its dhcpd active (a master back from a reboot).
pub(super) fn master_role(lab: &Lab, master: &crate::state::Machine) -> Result<String> {
    lab.poll(Duration::from_secs(300), || {
        let out = lab.sh(
            master,
            &format!("{VLAN_ADDR}; systemctl is-active cluster-lab-dhcpd@eth0.200.service"),
        )?;
        Ok(out
            .lines()
            .map(str::trim)
            .eq(["192.168.200.1/24", "active"])
            .then(|| out.trim().replace('\n', ", ")))
    })
}

/// Whether first boot ran in `m`'s current boot (it must not after the first), and the evidence.
pub(super) fn firstboot_not_rerun(lab: &Lab, m: &crate::state::Machine) -> (bool, Result<String>) {
    let fb = lab.sh(
        m,
        "systemctl show cluster-lab-firstboot.service -p ExecMainStartTimestampMonotonic; \
         journalctl -b -q --no-pager -u cluster-lab-firstboot.service | wc -l",
    );
    let not_rerun = fb.as_ref().is_ok_and(|o| {
        o.contains("ExecMainStartTimestampMonotonic=0")
            && o.lines().last().map(str::trim) == Some("0")
    });
    (not_rerun, fb.map(|o| o.trim().replace('\n', ", ")))
}

const MASTER_NAME: &str = "reboot the master: it comes back as master (192.168.200.1, dhcpd active), every machine \
                           alive in Consul and Ready in Swarm again, a Consul KV key written before still there, \
                           firstboot not re-run";

/// Rebooting the master while the nodes run: it takes its role back without first boot, its dhcpd comes back
/// (however late the VLAN address), the nodes reconnect by themselves, and Consul's data survives.
pub fn reboot_master(lab: &Lab) -> Check {
    Check::from_result(MASTER_NAME, master_inner(lab))
}

fn master_inner(lab: &Lab) -> Result<Check> {
    let master = lab.master();
    let n = lab.st.machines.len();
    // A KV key written with the management token (ACLs deny anonymous writes), read back after the reboot.
    let kv = |method: &str| {
        format!(
            "curl -sS -f -X {method} -H \"X-Consul-Token: $(cluster-lab consul-token)\" \
             {} http://127.0.0.1:8500/v1/kv/cluster-lab/test/kept{}",
            if method == "PUT" {
                "--data survives"
            } else {
                ""
            },
            if method == "GET" { "?raw" } else { "" },
        )
    };
    lab.sh(master, &kv("PUT"))?;
    let start = Instant::now();
    let (before_boot, boot) = reboot_and_wait(lab, master)?;
    let up_after = start.elapsed().as_secs_f64();
    let role = master_role(lab, master);
    // The members as the master last listed them, `name addr status` (1 alive, 2 leaving, 3 left, 4 failed).
    let mut listed = String::new();
    let alive = lab.poll(Duration::from_secs(600), || {
        let m = http::consul_members(&lab.st.netns, &lab.master_ip())?;
        listed = m
            .iter()
            .map(|x| format!("{} {} {}", x.name, x.addr, x.status))
            .collect::<Vec<_>>()
            .join(", ");
        Ok((m.iter().filter(|x| x.alive()).count() == n).then_some(()))
    });
    // When not all came back: how each node sees the cluster, and what its Consul agent logged lately.
    let mut seen_by_nodes = String::new();
    if alive.is_err() {
        for node in lab.nodes() {
            let out = lab.sh(
                node,
                "consul members 2>&1; journalctl -b -q --no-pager -u consul.service | tail -n 15",
            );
            seen_by_nodes.push_str(&format!(
                "--- {}:\n{}\n",
                node.hostname,
                show(&out.map(|o| o.trim().to_string()))
            ));
        }
    }
    let ready = lab.poll(Duration::from_secs(600), || {
        let out = lab.sh(master, "docker node ls --format '{{.Status}}'")?;
        Ok((out.lines().filter(|l| l.trim() == "Ready").count() == n).then_some(()))
    });
    let back_after = (alive.is_ok() && ready.is_ok()).then(|| start.elapsed().as_secs_f64());
    let kept = lab.sh(master, &kv("GET")).map(|v| v.trim().to_string());
    let (not_rerun, fb) = firstboot_not_rerun(lab, master);
    let ok = role.is_ok()
        && alive.is_ok()
        && ready.is_ok()
        && kept.as_deref().is_ok_and(|v| v == "survives")
        && not_rerun;
    Ok(Check::verdict(
        MASTER_NAME,
        ok,
        format!(
            "{}: rebooted (boot id {} → {}), SSH back after {up_after:.1} s\n\
             VLAN address, dhcpd: {}\nall {n} alive in Consul: {} (last listed: {listed})\n\
             all {n} Ready in Swarm: {}{}\n\
             KV cluster-lab/test/kept: {}\nfirstboot this boot (ExecMainStart, journal lines): {}\n{seen_by_nodes}",
            master.hostname,
            short(&before_boot),
            short(&boot),
            show(&role),
            show(&alive.map(|_| "yes".to_string())),
            show(&ready.map(|_| "yes".to_string())),
            back_after
                .map(|s| format!(" ({s:.1} s after the reboot command)"))
                .unwrap_or_default(),
            show(&kept),
            show(&fb),
        ),
    ))
}
