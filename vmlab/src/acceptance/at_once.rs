//! `cargo xtask bench power-on`: a whole cluster powered on at the same instant, as a rack on one power strip.
//!
//! For each size asked for, a fresh virtual cluster of that many flashed copies of the image (no machine told its
//! role) is powered on at one instant; the bench waits until every machine is alive in Consul and Ready in Swarm,
//! then reads each machine's floor (what a plain boot that starts dockerd and Consul costs it, measured in the
//! same VM, as the formation table does) and where its first boot spent its time: before the election, the
//! election itself (its rounds and its wait), then the steps up to joining. Reported: the whole cluster's time
//! next to the slowest machine's floor, as a ratio (target: at most 1.2), and the per-machine breakdown.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use cluster_lab_image::arch::Arch;

use super::lab::Lab;
use super::timing::{self, MachineTimes};
use crate::state::State;
use crate::up::{Formation, Machines, Up};

pub const HEADING: &str = "## Everyone powered on at once (`cargo xtask bench power-on`)";
/// The bench's clusters are named `<this><size>`.
const NAME: &str = "bench-on";

#[derive(Debug, Args)]
pub struct PowerOn {
    /// Cluster sizes, comma-separated; each is a fresh cluster powered on at one instant.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    pub nodes: Vec<usize>,
    /// Architecture of the image.
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,
    /// The image to boot (default: build/image/cluster-lab-<arch>.img from `cargo xtask image`).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Memory per VM in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Print the tables only; leave docs/benchmarks.md alone.
    #[arg(long)]
    pub no_record: bool,
}

/// Where one machine's first boot spent its time, in seconds since the agent started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Steps {
    /// The election's own wait (its `waited_ms`) and rounds.
    pub election: Option<f64>,
    pub rounds: Option<u32>,
    /// Agent start → the role decided.
    pub decided: Option<f64>,
    /// Agent start → the VLAN address (the master's own, a node's lease).
    pub address: Option<f64>,
    /// Agent start → Consul joined (a node) or leading (the master).
    pub consul: Option<f64>,
    /// Agent start → in the Swarm (worker joined, or manager).
    pub swarm: Option<f64>,
}

/// One cluster's outcome.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub size: usize,
    /// What `cluster up` measured, when the cluster formed.
    pub formation: Option<Formation>,
    pub times: Vec<MachineTimes>,
    pub steps: Vec<Steps>,
    pub error: Option<String>,
}

impl Run {
    pub fn master(&self) -> Option<&str> {
        self.formation.as_ref()?.master.as_deref()
    }

    /// First power-on → every machine alive in Consul and Ready in Swarm.
    pub fn whole(&self) -> Option<f64> {
        self.formation.as_ref()?.whole_cluster
    }

    /// The slowest machine's floor.
    pub fn floor(&self) -> Option<f64> {
        self.times
            .iter()
            .filter_map(MachineTimes::floor)
            .reduce(f64::max)
    }

    pub fn ratio(&self) -> Option<f64> {
        Some(self.whole()? / self.floor()?)
    }
}

impl PowerOn {
    pub fn run(self) -> Result<()> {
        if let Some(n) = self.nodes.iter().find(|n| !(2..=9).contains(*n)) {
            bail!("--nodes: {n} machines; each size must be 2 to 9");
        }
        let mut runs = Vec::new();
        for &size in &self.nodes {
            eprintln!("==> {size} machines powered on at one instant");
            let run = self.one(size);
            if let Some(e) = &run.error {
                eprintln!("    {size} machines: {e}");
            }
            runs.push(run);
        }
        let section = render(&self, &runs);
        println!("{section}");
        if !self.no_record {
            let doc = crate::project_root().join("docs/benchmarks.md");
            crate::benchmarks::write_section(&doc, &section)?;
            eprintln!("==> written to docs/benchmarks.md");
        }
        if runs.iter().any(|r| r.whole().is_none()) {
            bail!("not every cluster formed (see the table)");
        }
        Ok(())
    }

    fn one(&self, size: usize) -> Run {
        let name = format!("{NAME}{size}");
        let up = Up {
            machines: Machines {
                nodes: size,
                arch: self.arch,
                image: self.image.clone(),
                memory: self.memory,
                cpus: 1,
                timeout: 1200,
                raspi3b: Vec::new(),
            },
            name: name.clone(),
            simultaneous: true,
            disk_size: 4 << 30,
            ssh_user: "cluster".into(),
            wait_swarm: true,
            imager: Vec::new(),
            cut: None,
        };
        let formed = up.start();
        let mut run = Run {
            size,
            ..Default::default()
        };
        match State::load(&name) {
            Ok(Some(st)) => {
                run.formation = formed.as_ref().ok().cloned();
                let master = run
                    .master()
                    .and_then(|m| st.machines.iter().position(|x| x.hostname == m));
                let lab = Lab::new(st, master);
                run.times = timing::measure(&lab, run.formation.as_ref(), self.arch);
                run.steps = lab
                    .st
                    .machines
                    .iter()
                    .map(|m| {
                        lab.sh(m, STEPS_SCRIPT)
                            .map(|out| parse_steps(&out))
                            .unwrap_or_default()
                    })
                    .collect();
            }
            Ok(None) => {}
            Err(e) => run.error = Some(format!("{e:#}")),
        }
        if let Err(e) = formed {
            run.error = Some(format!("{e:#}"));
        }
        for e in crate::down::teardown(&name) {
            eprintln!("bench: tearing down {name}: {e}");
        }
        run
    }
}

/// First boot's start (monotonic µs) and its journal lines that end each step, with monotonic timestamps.
const STEPS_SCRIPT: &str = "echo \"start $(systemctl show -p ExecMainStartTimestampMonotonic --value \
     cluster-lab-firstboot.service)\"; journalctl -b -q -u cluster-lab-firstboot.service -o short-monotonic \
     --no-pager | grep -E 'election decided|master address up|lease from the master|consul server leading|consul \
     client joined|swarm manager|swarm worker'";

/// `[   79.577484] host cluster-lab[…]: … message …` → seconds since boot.
fn mono_secs(line: &str) -> Option<f64> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    inner.trim().parse().ok()
}

/// A `key=value` field of a log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

pub fn parse_steps(out: &str) -> Steps {
    let start = out
        .lines()
        .find_map(|l| l.strip_prefix("start "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|v| *v > 0)
        .map(|us| us as f64 / 1e6);
    let mut s = Steps::default();
    let Some(start) = start else {
        return s;
    };
    let at = |needles: &[&str]| {
        out.lines()
            .find(|l| needles.iter().any(|n| l.contains(n)))
            .and_then(mono_secs)
            .map(|t| t - start)
    };
    s.decided = at(&["election decided"]);
    s.address = at(&["master address up", "lease from the master"]);
    s.consul = at(&["consul server leading", "consul client joined"]);
    s.swarm = at(&["swarm manager", "swarm worker"]);
    if let Some(line) = out.lines().find(|l| l.contains("election decided")) {
        s.election = field(line, "waited_ms")
            .and_then(|v| v.parse::<f64>().ok())
            .map(|ms| ms / 1000.0);
        s.rounds = field(line, "rounds").and_then(|v| v.parse().ok());
    }
    s
}

fn secs(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.1} s"))
}

pub fn render(args: &PowerOn, runs: &[Run]) -> String {
    let mut s = String::new();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "Measured {} with `cargo xtask bench power-on --nodes {}` ({}, each VM {} MiB, 1 vCPU under QEMU TCG on the \
         2-core host; 1-minute load average {} at the end).\n",
        timing::utc_now(),
        args.nodes
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        args.arch,
        args.memory,
        load.split_whitespace().next().unwrap_or("?"),
    );
    let _ = writeln!(
        s,
        "| Machines | Master | Power-on → every machine alive in Consul and Ready in Swarm | Slowest machine's floor | Ratio |\n|---:|---|---:|---:|---:|"
    );
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            r.size,
            r.master().unwrap_or("none"),
            r.whole().map_or_else(
                || format!("not formed: {}", r.error.as_deref().unwrap_or("?")),
                |w| format!("{w:.1} s")
            ),
            secs(r.floor()),
            r.ratio().map_or("n/a".into(), |x| format!("{x:.2}×")),
        );
    }
    for r in runs {
        let _ = writeln!(s, "\n{} machines, each machine:\n", r.size);
        s.push_str(&timing::table(&r.times));
        let _ = writeln!(
            s,
            "\n| Machine | Power-on → agent start | Election (rounds) | Agent start → role | → VLAN address | → Consul | → Swarm |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for (t, st) in r.times.iter().zip(&r.steps) {
            let _ = writeln!(
                s,
                "| {} | {} | {}{} | {} | {} | {} | {} |",
                t.hostname,
                secs(t.agent_start),
                secs(st.election),
                st.rounds.map_or(String::new(), |n| format!(" ({n})")),
                secs(st.decided),
                secs(st.address),
                secs(st.consul),
                secs(st.swarm),
            );
        }
    }
    let _ = writeln!(
        s,
        "\nEvery machine is a fresh copy of the image with only its hostname (vm1, vm2, …), none told its role; all \
         are powered on by one QMP `cont` each at the same instant. Floor and the per-machine table are measured as \
         in the formation table above. The election's own time is what it logs when it decides (its wait since it \
         started, and its rounds: a round is a DHCP probe, a claim window and an ARP check; a candidate that hears \
         a lower MAC backs off and starts another); the step times count from the agent's start."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_the_journal() {
        let out = "start 20000000\n\
            [   28.500000] vm1 cluster-lab[412]:  INFO election decided role=Master rounds=1 waited_ms=8123\n\
            [   30.000000] vm1 cluster-lab[412]:  INFO master address up interface=ens3.200 address=192.168.200.1\n\
            [   41.250000] vm1 cluster-lab[412]:  INFO consul server leading leader=192.168.200.1:8300\n\
            [   45.000000] vm1 cluster-lab[412]:  INFO swarm manager outcome=Done advertise=192.168.200.1\n";
        let s = parse_steps(out);
        assert_eq!(s.election, Some(8.123));
        assert_eq!(s.rounds, Some(1));
        assert_eq!(s.decided, Some(8.5));
        assert_eq!(s.address, Some(10.0));
        assert_eq!(s.consul, Some(21.25));
        assert_eq!(s.swarm, Some(25.0));
        assert_eq!(parse_steps("start 0\n"), Steps::default());
    }

    #[test]
    fn the_ratio_is_the_whole_cluster_over_the_slowest_floor() {
        let m = |login, consul| MachineTimes {
            login: Some(login),
            consul: Some(consul),
            ..Default::default()
        };
        let r = Run {
            size: 2,
            formation: Some(Formation {
                simultaneous: true,
                hostnames: vec!["vm1".into(), "vm2".into()],
                master: Some("vm1".into()),
                milestones: Vec::new(),
                whole_cluster: Some(120.0),
                cut: None,
            }),
            times: vec![m(50.0, 5.0), m(95.0, 5.0)],
            ..Default::default()
        };
        assert_eq!(r.floor(), Some(100.0));
        assert_eq!(r.ratio(), Some(1.2));
    }
}
