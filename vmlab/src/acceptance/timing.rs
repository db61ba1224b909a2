//! Formation timings next to their floor, measured in the same VM: power-on → login prompt (serial
//! console), how long dockerd and Consul take to start on their own (their units' systemd timestamps),
//! how long the agent ran; then power-on → Consul UI (master) or → Ready in Swarm (nodes). Printed, and
//! written to the "Cluster formation" section of docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::lab::Lab;
use crate::up::Formation;
use crate::vm;

/// One machine's numbers, in seconds.
#[derive(Debug, Clone, Default)]
pub struct MachineTimes {
    pub hostname: String,
    pub master: bool,
    /// Power-on → login prompt on the serial console (the harness's clock).
    pub login: Option<f64>,
    /// docker.service: start job → active.
    pub dockerd: Option<f64>,
    /// Consul's own start: its process started → `agent: Synced node info` in its journal (it has a leader and
    /// its node is registered: the master's UI can serve, a client has joined).
    pub consul: Option<f64>,
    /// Power-on → dockerd active.
    pub dockerd_active: Option<f64>,
    /// Power-on → `cluster-lab firstboot` started.
    pub agent_start: Option<f64>,
    /// cluster-lab-firstboot.service: ExecMainStart → exit.
    pub agent: Option<f64>,
    /// `cluster-lab firstboot`'s peak resident memory (VmHWM, as it logs at the end), KiB.
    pub agent_peak_kib: Option<u64>,
    /// Power-on → Consul UI serving (master) or → Ready in Swarm (node).
    pub formed: Option<f64>,
    pub error: Option<String>,
}

impl MachineTimes {
    /// What a plain boot costs this machine: dockerd up (or the login prompt, whichever is later), then
    /// Consul's own start time on top.
    pub fn floor(&self) -> Option<f64> {
        let base = match (self.login, self.dockerd_active) {
            (Some(l), Some(d)) => l.max(d),
            (Some(l), None) => l,
            _ => return None,
        };
        Some(base + self.consul.unwrap_or(0.0))
    }

    pub fn over_floor(&self) -> Option<f64> {
        Some(self.formed? / self.floor()? - 1.0)
    }
}

/// Consul's journal line that marks it started: the node is registered with a leader.
const CONSUL_READY_LINE: &str = "Synced node info";
/// The agent's last journal line of first boot, before its peak resident memory in KiB.
const PEAK_LINE: &str = "first boot done: peak resident memory";
/// `sed -E` program turning a short-monotonic journal line (`[   79.577484] host consul[…]: …`) into µs.
const SED_MONO_US: &str = r"s/^\[ *([0-9]+)\.([0-9]{6})\].*/\1\2/";

/// `unit property value` lines for the units whose timestamps we need, plus `consul.service
/// SyncedMonotonic <µs>` from the journal (short-monotonic prints seconds with six decimals).
fn probe_script(arch: cluster_lab_image::arch::Arch) -> String {
    format!(
        "for u in serial-getty@{}.service docker.service consul.service cluster-lab-firstboot.service; do \
           for p in InactiveExitTimestampMonotonic ActiveEnterTimestampMonotonic ExecMainStartTimestampMonotonic ExecMainExitTimestampMonotonic; do \
             echo \"$u $p $(systemctl show -p $p --value $u)\"; done; done; \
         echo \"consul.service SyncedMonotonic $(journalctl -b -q -u consul.service -o short-monotonic --no-pager \
           | grep -m1 '{CONSUL_READY_LINE}' | sed -E '{SED_MONO_US}')\"; \
         echo \"cluster-lab-firstboot.service PeakKiB $(journalctl -b -q -u cluster-lab-firstboot.service -o cat --no-pager \
           | sed -nE 's/.*{PEAK_LINE} ([0-9]+) KiB.*/\\1/p' | tail -n 1)\"",
        vm::serial_console(arch)
    )
}

/// Microseconds since boot of `unit`'s `prop`, if set (systemd prints 0 for "never").
fn mono(out: &str, unit_prefix: &str, prop: &str) -> Option<f64> {
    out.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (u, p, v) = (f.next()?, f.next()?, f.next()?);
        (u.starts_with(unit_prefix) && p == prop)
            .then(|| v.parse::<u64>().ok())
            .flatten()
            .filter(|v| *v > 0)
            .map(|v| v as f64 / 1e6)
    })
}

fn span(out: &str, unit: &str, from: &str, to: &str) -> Option<f64> {
    Some(mono(out, unit, to)? - mono(out, unit, from)?)
}

/// Gather every machine's numbers (over SSH) and the formation milestones.
pub fn measure(
    lab: &Lab,
    formation: Option<&Formation>,
    arch: cluster_lab_image::arch::Arch,
) -> Vec<MachineTimes> {
    lab.st
        .machines
        .iter()
        .map(|m| {
            let ms = formation
                .and_then(|f| f.milestones.get(m.index))
                .cloned()
                .unwrap_or_default();
            let master = m.index == lab.master;
            let mut t = MachineTimes {
                hostname: m.hostname.clone(),
                master,
                login: ms.login_prompt,
                formed: if master { ms.consul_ui } else { ms.swarm_ready },
                ..Default::default()
            };
            match lab.sh(m, &probe_script(arch)) {
                Ok(out) => {
                    t.dockerd = span(
                        &out,
                        "docker.",
                        "InactiveExitTimestampMonotonic",
                        "ActiveEnterTimestampMonotonic",
                    );
                    t.consul = span(
                        &out,
                        "consul.",
                        "ExecMainStartTimestampMonotonic",
                        "SyncedMonotonic",
                    );
                    t.agent_peak_kib = out.lines().find_map(|l| {
                        l.strip_prefix("cluster-lab-firstboot.service PeakKiB ")?
                            .trim()
                            .parse()
                            .ok()
                    });
                    t.agent = span(
                        &out,
                        "cluster-lab-firstboot.",
                        "ExecMainStartTimestampMonotonic",
                        "ExecMainExitTimestampMonotonic",
                    );
                    // The serial getty's activation (kernel clock) against the harness's login prompt
                    // (power-on clock) gives the offset between the two clocks.
                    let getty = mono(&out, "serial-getty@", "ActiveEnterTimestampMonotonic");
                    let offset = t.login.zip(getty).map(|(login, getty)| login - getty);
                    let on_power_clock =
                        |unit: &str, prop: &str| Some(mono(&out, unit, prop)? + offset?);
                    t.dockerd_active = on_power_clock("docker.", "ActiveEnterTimestampMonotonic");
                    t.agent_start =
                        on_power_clock("cluster-lab-firstboot.", "ExecMainStartTimestampMonotonic");
                }
                Err(e) => t.error = Some(format!("{e:#}")),
            }
            t
        })
        .collect()
}

fn s(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} s")).unwrap_or_else(|| "—".into())
}

/// The table (Markdown), also printed.
pub fn table(times: &[MachineTimes]) -> String {
    let mut t = String::from(
        "| Machine | Role | Power-on → login prompt | dockerd start | Consul start | Floor | Power-on → formed | Agent ran | Agent peak RSS | Over floor |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in times {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} |",
            m.hostname,
            if m.master { "master" } else { "node" },
            s(m.login),
            s(m.dockerd),
            s(m.consul),
            s(m.floor()),
            s(m.formed),
            if m.master {
                "Consul UI"
            } else {
                "Ready in Swarm"
            },
            s(m.agent),
            m.agent_peak_kib
                .map_or("—".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
            m.over_floor()
                .map(|o| format!("{:+.0} %", o * 100.0))
                .unwrap_or_else(|| "—".into()),
        );
    }
    t
}

/// Everything that goes into the benchmarks section.
pub struct Section<'a> {
    pub command: String,
    pub times: &'a [MachineTimes],
    pub whole_cluster: Option<f64>,
    pub reboot_ready: Option<f64>,
    pub power_loss_recovered: Option<f64>,
    /// The same, the master powered on 60 s after the nodes (counted from the master's power-on).
    pub power_loss_master_later: Option<f64>,
    pub election_master: Option<f64>,
    pub image: String,
    pub vm: String,
}

impl Section<'_> {
    pub fn render(&self) -> String {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let mut out = format!(
            "## Cluster formation (`cargo xtask cluster test`)\n\n\
             Measured {} with `{}`; image `{}`; each VM {} under QEMU TCG on the 2-core host \
             (1-minute load average {} at the end; other work on the machine slows TCG guests).\n\n",
            utc_now(),
            self.command,
            self.image,
            self.vm,
            load.split_whitespace().next().unwrap_or("?"),
        );
        out.push_str(&table(self.times));
        let _ = write!(
            out,
            "\n- Whole cluster (first power-on → every machine alive in Consul and Ready in Swarm): {}\n\
             - Rebooted node back Ready in Swarm (from `systemctl reboot`): {}\n\
             - Whole-cluster power loss (every machine off, then on at one instant) → all alive in Consul and Ready \
             in Swarm again: {}\n\
             - The same with the nodes powered on first and the master 60 s later (from the master's power-on): {}\n\
             - Simultaneous power-on of 3 VMs → one master serving the Consul UI: {}\n\n\
             How: each VM boots the image's own kernel and initrd directly (`-kernel`/`-initrd`), paused until a QMP \
             `cont` = power-on. Login prompt = first `login:` on the serial console. dockerd start = its unit's \
             `InactiveExitTimestampMonotonic` → `ActiveEnterTimestampMonotonic` in the same boot; Consul start = its \
             process started (`ExecMainStartTimestampMonotonic`) → `agent: Synced node info` in its journal (a leader \
             exists and the node is registered). Floor = the \
             later of login prompt and dockerd active, plus Consul's own start time: what a plain boot that starts \
             both costs. Formed = Consul UI serving on the home LAN (master) or `docker node ls` on the master \
             showing the node Ready (nodes), polled every 2 s. Target: the agent adds at most 20 % over the floor. \
             The old lab needed about 2 minutes for the master and 2 more for nodes on a Raspberry Pi.\n",
            s(self.whole_cluster),
            s(self.reboot_ready),
            s(self.power_loss_recovered),
            s(self.power_loss_master_later),
            s(self.election_master),
        );
        out
    }
}

pub fn utc_now() -> String {
    crate::host::run(&mut crate::host::command(
        "date",
        &["-u", "+%Y-%m-%d %H:%M UTC"],
    ))
    .map(|s| s.trim().to_string())
    .unwrap_or_default()
}

/// Replace (or append) the "Cluster formation" section of docs/benchmarks.md.
pub fn record(doc: &Path, section: &str) -> Result<()> {
    crate::benchmarks::write_section_at(doc, "## Cluster formation", section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_timestamps_become_spans() {
        let out = "docker.service InactiveExitTimestampMonotonic 20000000\n\
                   docker.service ActiveEnterTimestampMonotonic 32500000\n\
                   consul.service InactiveExitTimestampMonotonic 0\n";
        assert_eq!(
            span(
                out,
                "docker.",
                "InactiveExitTimestampMonotonic",
                "ActiveEnterTimestampMonotonic"
            ),
            Some(12.5)
        );
        assert_eq!(mono(out, "consul.", "InactiveExitTimestampMonotonic"), None);
    }

    #[test]
    fn consul_journal_line_becomes_microseconds() {
        let out = std::process::Command::new("sed")
            .args(["-E", SED_MONO_US])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write as _;
                c.stdin.take().unwrap().write_all(
                    b"[   79.577484] master consul[612]: 2026-11-22T03:57:10.100Z [INFO]  agent: Synced node info\n",
                )?;
                c.wait_with_output()
            })
            .unwrap();
        let line = format!(
            "consul.service SyncedMonotonic {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        assert_eq!(mono(&line, "consul.", "SyncedMonotonic"), Some(79.577484));
        assert!(probe_script(cluster_lab_image::arch::Arch::Amd64).contains(CONSUL_READY_LINE));
    }

    #[test]
    fn floor_and_overhead() {
        let t = MachineTimes {
            login: Some(60.0),
            dockerd_active: Some(70.0),
            consul: Some(5.0),
            formed: Some(90.0),
            ..Default::default()
        };
        assert_eq!(t.floor(), Some(75.0));
        assert!((t.over_floor().unwrap() - 0.2).abs() < 1e-9);
    }
}
