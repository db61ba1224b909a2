//! The assertions about the formed cluster: home LAN, Consul, VLAN leases, Swarm, the firstboot unit,
//! and Docker's API not on TCP. Each gathers its evidence and returns PASS or FAIL.

use std::net::Ipv4Addr;

use anyhow::Context;

use super::lab::Lab;
use super::report::Check;
use crate::{host, http};

/// Every VM took its untagged home-LAN address from the home router (dnsmasq's lease file).
pub fn home_lan_leases(lab: &Lab) -> Check {
    const NAME: &str =
        "every machine leased its home-LAN address from the home router (untagged eth0)";
    let leases = lab.st.router_files().leases();
    let mut ok = true;
    let mut ev = String::new();
    for m in &lab.st.machines {
        let has = leases
            .iter()
            .any(|(mac, ip, _)| *mac == m.mac && *ip == m.lan_ip);
        ok &= has;
        ev.push_str(&format!(
            "{} {} {}: {}\n",
            m.hostname,
            m.mac,
            m.lan_ip,
            if has { "leased" } else { "NO LEASE" }
        ));
    }
    Check::verdict(NAME, ok, ev)
}

/// The master answers on the home LAN: ping and SSH.
pub fn master_reachable(lab: &Lab) -> Check {
    const NAME: &str = "master reachable from the home LAN (ping, SSH)";
    let ip = lab.master_ip();
    let ping = host::output(&mut host::in_netns(
        &lab.st.netns,
        "ping",
        &["-c", "3", "-W", "2", &ip],
    ));
    let ping_ok = ping.as_ref().is_ok_and(|o| o.status.success());
    let ping_line = ping
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| l.contains("packets transmitted"))
                .unwrap_or("no ping summary")
                .to_string()
        })
        .unwrap_or_else(|e| format!("{e:#}"));
    let ssh = lab.sh(lab.master(), "hostname; uptime");
    let ev = format!(
        "ping {ip}: {ping_line}\nssh {}@{ip}: {}",
        lab.ssh.user,
        match &ssh {
            Ok(o) => o.trim().replace('\n', " | "),
            Err(e) => format!("{e:#}"),
        }
    );
    Check::verdict(NAME, ping_ok && ssh.is_ok(), ev)
}

/// Every machine lets its login user in with the key flashed onto its card (that key alone): `cluster` with the key
/// in cluster-lab.toml, or on a card flashed the Imager way the user its user-data names.
pub fn flashed_key(lab: &Lab) -> Check {
    const NAME: &str = "SSH with the key flashed onto the card, on every machine (as cluster, with cluster-lab.toml; \
                        as the user-data's user, with Raspberry Pi Imager's files)";
    let mut ok = true;
    let mut ev = String::new();
    for m in &lab.st.machines {
        let ssh = lab.st.ssh_for(m);
        let r = ssh.run(
            &m.lan_ip.to_string(),
            "hostname",
            std::time::Duration::from_secs(30),
        );
        ok &= r.is_ok();
        ev.push_str(&format!(
            "{} as {}: {}\n",
            m.hostname,
            ssh.user,
            match r {
                Ok(h) => format!("logged in, hostname {}", h.trim()),
                Err(e) => format!("{e:#}"),
            }
        ));
    }
    Check::verdict(NAME, ok, ev)
}

/// Every machine runs with the hostname it was flashed with.
pub fn hostnames(lab: &Lab) -> Check {
    const NAME: &str =
        "every machine has the hostname flashed onto its card (cluster-lab.toml, or Imager's user-data)";
    let mut ok = true;
    let mut ev = String::new();
    for m in &lab.st.machines {
        let r = lab.sh(m, "hostname; cat /etc/hostname");
        ok &= r
            .as_ref()
            .is_ok_and(|o| o.lines().all(|l| l.trim() == m.hostname) && o.lines().count() == 2);
        ev.push_str(&format!(
            "{} ({}): {}\n",
            m.hostname,
            m.lan_ip,
            match r {
                Ok(o) => o.trim().replace('\n', " / "),
                Err(e) => format!("{e:#}"),
            }
        ));
    }
    Check::verdict(NAME, ok, ev)
}

/// A card flashed the Raspberry Pi Imager way came up as its user-data says: the image's `cluster` renamed to the
/// user-data's user (sudo without password, in group docker), the timezone set, the files left on the card.
pub fn imager_card(lab: &Lab) -> Option<Check> {
    const NAME: &str =
        "the card flashed the Raspberry Pi Imager way: user-data's user (cluster renamed, sudo, \
                        docker), timezone";
    let cards: Vec<_> = lab.st.machines.iter().filter(|m| m.imager).collect();
    if cards.is_empty() {
        return None;
    }
    let mut ok = true;
    let mut ev = String::new();
    for m in cards {
        let user = crate::imager::USER;
        let r = lab.sh(
            m,
            &format!(
                "id -nG {user}; getent passwd cluster >/dev/null && echo cluster-present || echo cluster-gone; \
                 cat /etc/timezone; readlink /etc/localtime; test -s /boot/firmware/user-data && echo user-data-kept"
            ),
        );
        let good = r.as_ref().is_ok_and(|o| {
            let lines: Vec<&str> = o.lines().map(str::trim).collect();
            lines.len() == 5
                && lines[0].split_whitespace().any(|g| g == "sudo")
                && lines[0].split_whitespace().any(|g| g == "docker")
                && lines[1] == "cluster-gone"
                && lines[2] == crate::imager::TIMEZONE
                && lines[3] == format!("/usr/share/zoneinfo/{}", crate::imager::TIMEZONE)
                && lines[4] == "user-data-kept"
        });
        ok &= good;
        ev.push_str(&format!(
            "{} ({user}): {}\n",
            m.hostname,
            match r {
                Ok(o) => o.trim().replace('\n', " | "),
                Err(e) => format!("{e:#}"),
            }
        ));
    }
    Some(Check::verdict(NAME, ok, ev))
}

/// `http://<master-lan-ip>:8500/ui/` is Consul's web UI.
pub fn consul_ui(lab: &Lab) -> Check {
    let url = format!("http://{}:8500/ui/", lab.master_ip());
    let name = format!("Consul UI served at {url}");
    Check::from_result(
        &name,
        (|| {
            let r = lab.get(&url)?;
            let title = r
                .body
                .split("<title>")
                .nth(1)
                .and_then(|t| t.split("</title>").next())
                .unwrap_or("(no <title>)")
                .trim()
                .to_string();
            let ok = r.status == 200 && r.body.contains("consul");
            Ok(Check::verdict(
                &name,
                ok,
                format!(
                    "HTTP {} from {} ({} bytes), title {title:?}",
                    r.status,
                    r.url,
                    r.body.len()
                ),
            ))
        })(),
    )
}

/// The master's VLAN address, every node's VLAN address from its DHCP lease in .101+, as Consul
/// advertises them and as the machines hold them on `eth0.200`.
pub fn vlan_leases(lab: &Lab) -> Check {
    const NAME: &str =
        "master on 192.168.200.1, nodes hold 192.168.200.101+ leases from the master (eth0.200)";
    let mut ok = true;
    let mut ev = String::new();
    for m in &lab.st.machines {
        let is_master = m.index == lab.master;
        let held = lab
            .sh(m, "ip -4 -o addr show dev eth0.200")
            .map(|o| vlan_addresses(&o));
        let dyn_lease = lab.sh(
            m,
            "networkctl status eth0.200 --no-pager 2>/dev/null | grep -iE 'DHCP4|Address' | head -n 3",
        );
        let good = match &held {
            Ok(addrs) if is_master => addrs.contains(&Ipv4Addr::new(192, 168, 200, 1)),
            Ok(addrs) => addrs.iter().any(|a| in_node_range(*a)),
            Err(_) => false,
        };
        ok &= good;
        ev.push_str(&format!(
            "{} ({}): eth0.200 {}{}\n",
            m.hostname,
            if is_master { "master" } else { "node" },
            match &held {
                Ok(a) => format!("{a:?}"),
                Err(e) => format!("unknown: {e:#}"),
            },
            match &dyn_lease {
                Ok(s) if !s.trim().is_empty() => format!(" | {}", s.trim().replace('\n', " | ")),
                _ => String::new(),
            }
        ));
    }
    if let Ok(members) = http::consul_members(&lab.st.netns, &lab.master_ip()) {
        ev.push_str("consul advertises: ");
        ev.push_str(
            &members
                .iter()
                .map(|m| format!("{}={}", m.name, m.addr))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    Check::verdict(NAME, ok, ev)
}

pub(super) fn vlan_addresses(ip_o_addr: &str) -> Vec<Ipv4Addr> {
    ip_o_addr
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            f.find(|w| *w == "inet")?;
            f.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

fn in_node_range(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[..3] == [192, 168, 200] && (101..=200).contains(&o[3])
}

/// `consul members` on the master lists every machine alive.
pub fn consul_members(lab: &Lab) -> Check {
    let n = lab.st.machines.len();
    let name = format!("`consul members` on the master shows {n} alive");
    Check::from_result(
        &name,
        (|| {
            let out = lab.sh(lab.master(), "consul members")?;
            let alive = names_with(out.lines().skip(1), 2, "alive");
            Ok(Check::verdict(&name, lists_every_machine(lab, &alive), out))
        })(),
    )
}

/// The first column of the `lines` whose column `column` (0-based, whitespace-separated) is `status`.
fn names_with<'a>(
    lines: impl Iterator<Item = &'a str>,
    column: usize,
    status: &str,
) -> Vec<&'a str> {
    lines
        .filter(|l| l.split_whitespace().nth(column) == Some(status))
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// `names` holds every machine of the cluster and nothing else.
fn lists_every_machine(lab: &Lab, names: &[&str]) -> bool {
    names.len() == lab.st.machines.len()
        && lab
            .st
            .machines
            .iter()
            .all(|m| names.contains(&m.hostname.as_str()))
}

/// `docker node ls` on the master lists every machine Ready (and the master as Leader).
pub fn swarm_nodes(lab: &Lab) -> Check {
    let n = lab.st.machines.len();
    let name = format!("`docker node ls` on the master shows {n} Ready");
    Check::from_result(
        &name,
        (|| {
            let out = lab.sh(lab.master(), "docker node ls")?;
            let fmt = lab.sh(
                lab.master(),
                "docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'",
            )?;
            let ready = names_with(fmt.lines(), 1, "Ready");
            Ok(Check::verdict(&name, lists_every_machine(lab, &ready), out))
        })(),
    )
}

/// Both first-boot units are disabled and the stamp written on every machine.
pub fn firstboot_disabled(lab: &Lab) -> Check {
    on_every_machine(
        lab,
        "cluster-lab-firstboot.service and cluster-lab-early.service disabled (and stamped done) on every machine",
        "systemctl is-enabled cluster-lab-firstboot.service cluster-lab-early.service; \
         test -e /var/lib/cluster-lab/firstboot.done && echo stamp-present || echo stamp-missing",
        &["disabled", "disabled", "stamp-present"],
    )
}

/// After first boot the card's boot partition no longer carries the cluster secret; the machine keeps it in
/// /etc/cluster-lab/cluster-lab.toml, readable by root only.
pub fn secret_off_the_card(lab: &Lab) -> Check {
    on_every_machine(
        lab,
        "the secret is off every card's boot partition and kept in /etc/cluster-lab (0600 root)",
        "grep -c '^[[:space:]]*secret[[:space:]]*=' /boot/firmware/cluster-lab.toml; \
         grep -c '^[[:space:]]*secret[[:space:]]*=' /etc/cluster-lab/cluster-lab.toml; \
         stat -c '%a %U' /etc/cluster-lab/cluster-lab.toml; true",
        &["0", "1", "600 root"],
    )
}

/// Every node's clock comes from the master: first boot set it from the master's NTP server, and chrony tracks
/// 192.168.200.1 within a second of it. A Raspberry Pi 3B VM has no real-time clock — it boots months behind — so
/// there first boot's `clock set` line must also show the clock stepped by more than a day: the case this exists
/// for, not one that happened to be right already.
pub fn clock_from_master(lab: &Lab) -> Check {
    const NAME: &str = "every node's clock is set from the master (chrony tracks 192.168.200.1, within 1 s; a Pi 3B \
         without a real-time clock was stepped by more than a day)";
    let master = cluster_lab_config::Settings::default()
        .network
        .master
        .to_string();
    let mut ok = true;
    let mut ev = String::new();
    for (i, m) in lab.st.machines.iter().enumerate() {
        if i == lab.master {
            continue;
        }
        let r = lab.sh(
            m,
            "chronyc -c tracking; journalctl -b -u cluster-lab-firstboot --no-pager -o cat | grep -m1 'clock set' || true",
        );
        let out = match r {
            Ok(o) => o,
            Err(e) => {
                ok = false;
                ev.push_str(&format!(
                    "{}: {e:#}
",
                    m.hostname
                ));
                continue;
            }
        };
        let mut lines = out.lines();
        let tracking: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        let source = tracking.get(1).copied().unwrap_or("?");
        let offset: Option<f64> = tracking.get(4).and_then(|f| f.parse().ok());
        let step_line = lines.next().unwrap_or("").trim();
        let field = |name: &str| {
            step_line
                .split_whitespace()
                .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        };
        let stepped_s: Option<f64> = (field("stepped") == Some("true"))
            .then(|| field("offset_s")?.parse::<f64>().ok())
            .flatten()
            .map(f64::abs);
        let within = source == master && offset.is_some_and(|o| o.abs() < 1.0);
        let stepped = !m.raspi3b || stepped_s.is_some_and(|s| s > 86_400.0);
        ok &= within && stepped;
        ev.push_str(&format!(
            "{}{}: source {source}, offset {} s{}\n",
            m.hostname,
            if m.raspi3b { " (Pi 3B)" } else { "" },
            offset.map_or("?".into(), |o| format!("{o:+.6}")),
            if step_line.is_empty() {
                String::new()
            } else {
                format!("; first boot: {step_line}")
            }
        ));
    }
    Check::verdict(NAME, ok, ev)
}

/// Run `cmd` as root on every machine: PASS when each prints exactly the `expected` lines. The evidence is each
/// machine's output on one line.
fn on_every_machine(lab: &Lab, name: &str, cmd: &str, expected: &[&str]) -> Check {
    let mut ok = true;
    let mut ev = String::new();
    for m in &lab.st.machines {
        let r = lab.sh(m, cmd);
        ok &= r
            .as_ref()
            .is_ok_and(|o| o.lines().map(str::trim).eq(expected.iter().copied()));
        ev.push_str(&format!(
            "{}: {}\n",
            m.hostname,
            match r {
                Ok(o) => o.trim().replace('\n', ", "),
                Err(e) => format!("{e:#}"),
            }
        ));
    }
    Check::verdict(name, ok, ev)
}

/// Nothing listens for the Docker API on TCP (2375/2376) on any machine's home-LAN address.
pub fn docker_not_on_tcp(lab: &Lab) -> Check {
    const NAME: &str = "Docker API not exposed on TCP (2375, 2376) on the home LAN";
    let mut ok = true;
    let mut ev = String::new();
    for m in &lab.st.machines {
        for port in [2375, 2376] {
            let url = format!("http://{}:{port}/version", m.lan_ip);
            let r = http::get(&lab.st.netns, &url, std::time::Duration::from_secs(3));
            let open = r.is_ok();
            ok &= !open;
            ev.push_str(&format!(
                "{}:{port} {}\n",
                m.hostname,
                match r {
                    Ok(r) => format!("ANSWERS HTTP {}", r.status),
                    Err(e) => format!("closed ({})", first_line(&format!("{e:#}"))),
                }
            ));
        }
    }
    Check::verdict(NAME, ok, ev)
}

/// The home router is the only DHCP server answering untagged on the home LAN (the old lab's master
/// answered there): dnsmasq's log shows offers only from itself, and no machine runs a DHCP server
/// bound to eth0. Checked from the machines: nothing listens on UDP 67 except on the VLAN interface.
pub fn no_dhcp_on_home_lan(lab: &Lab) -> Check {
    const NAME: &str = "no cluster DHCP server on the home LAN (UDP 67 bound only to the VLAN)";
    Check::from_result(
        NAME,
        (|| {
            let out = lab
                .sh(lab.master(), "ss -H -u -l -n -p 'sport = :67'")
                .context("listing UDP 67 listeners on the master")?;
            let bad: Vec<&str> = out
                .lines()
                .filter(|l| !l.contains("%eth0.200:67") && !l.trim().is_empty())
                .collect();
            Ok(Check::verdict(
                NAME,
                bad.is_empty() && !out.trim().is_empty(),
                if out.trim().is_empty() {
                    "no DHCP server listening on the master at all".to_string()
                } else {
                    out
                },
            ))
        })(),
    )
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Which machines hold the master address on the VLAN (the election's outcome).
pub fn masters(lab: &Lab) -> (Vec<String>, String) {
    let mut masters = Vec::new();
    let mut ev = String::new();
    for m in &lab.st.machines {
        match lab.sh(m, "ip -4 -o addr show dev eth0.200") {
            Ok(o) => {
                let a = vlan_addresses(&o);
                if a.contains(&Ipv4Addr::new(192, 168, 200, 1)) {
                    masters.push(m.hostname.clone());
                }
                ev.push_str(&format!("{}: eth0.200 {a:?}\n", m.hostname));
            }
            Err(e) => ev.push_str(&format!("{}: {e:#}\n", m.hostname)),
        }
    }
    (masters, ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vlan_addresses() {
        let o = "5: eth0.200    inet 192.168.200.101/24 metric 1024 brd 192.168.200.255 scope global dynamic eth0.200\\       valid_lft 3585sec preferred_lft 3585sec\n";
        assert_eq!(vlan_addresses(o), vec![Ipv4Addr::new(192, 168, 200, 101)]);
        assert!(in_node_range(Ipv4Addr::new(192, 168, 200, 101)));
        assert!(!in_node_range(Ipv4Addr::new(192, 168, 200, 1)));
        assert!(!in_node_range(Ipv4Addr::new(192, 168, 201, 150)));
    }
}
