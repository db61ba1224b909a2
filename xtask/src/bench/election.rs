//! `cargo xtask bench election`: N candidates powered on at the same instant, each the real `cluster-lab elect` (the
//! election first boot runs: DHCP probe, claims on UDP 6247, `arping -D` for the master address) in its own network
//! namespace, all on one bridge standing in for the VLAN. Every trial gives each candidate a fresh random MAC, so the
//! winner changes; it must be exactly one master, the lowest MAC. Reported per N: how often that held, and the time
//! from power-on to the master's decision and to the last machine's.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use xshell::{cmd, Shell};

use super::netns::run;
use super::switch::{Switch, LINK};
use super::{dhcp::target_dir, machine, report};

pub const HEADING: &str = "## Election at scale (`cargo xtask bench election`)";
const PREFIX: &str = "clbench-el";
/// Seconds an elected master announces itself after deciding (first boot does until its DHCP service answers).
const ANNOUNCE: u64 = 3;

#[derive(Debug, Args)]
pub struct Election {
    /// Numbers of candidates, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "3,5,10")]
    candidates: Vec<usize>,
    /// Trials per number of candidates.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1000))]
    trials: u32,
    /// Print the table only; leave docs/benchmarks.md alone.
    #[arg(long)]
    no_record: bool,
}

/// One trial's outcome.
#[derive(Debug, Clone)]
pub struct Trial {
    pub masters: usize,
    pub lowest_mac_won: bool,
    /// Milliseconds from power-on to the master's decision (None without exactly one master).
    pub master_ms: Option<u64>,
    /// Milliseconds from power-on until the last candidate decided.
    pub last_ms: u64,
}

/// All trials of one N.
#[derive(Debug, Clone)]
pub struct Series {
    pub candidates: usize,
    pub trials: Vec<Trial>,
}

impl Election {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if cmd!(sh, "id -u").quiet().read()? != "0" {
            bail!("bench election needs root (network namespaces); run it with sudo");
        }
        if self.candidates.iter().any(|&n| !(2..=50).contains(&n)) {
            bail!("--candidates: each number must be 2 to 50");
        }
        eprintln!("==> building cluster-lab");
        cmd!(sh, "cargo build -q -p cluster-lab").run()?;
        let agent = target_dir(sh).join("debug/cluster-lab");
        let work = target_dir(sh).join("bench-election");
        std::fs::create_dir_all(&work)?;
        let config = work.join("cluster-lab.toml");
        let text = cluster_lab_config::edit::set_secret(
            &cluster_lab_config::DEFAULT_TOML.replace("name = \"cluster-lab\"", "name = \"bench\""),
            &cluster_lab_config::edit::random_secret(),
        )?;
        std::fs::write(&config, text)?;
        let m = machine::describe(sh, &work);
        let date = cmd!(sh, "date -u '+%Y-%m-%d %H:%M UTC'").quiet().read()?;
        let most = *self.candidates.iter().max().unwrap_or(&3);
        let names: Vec<String> = (0..most).map(ns_name).collect();
        let switch = Switch::create(sh, PREFIX, &names)?;
        let mut all = Vec::new();
        for &n in &self.candidates {
            let mut series = Series {
                candidates: n,
                trials: Vec::new(),
            };
            for t in 0..self.trials {
                let trial = trial(sh, &agent, &config, n)?;
                eprintln!(
                    "    {n} candidates, trial {}: {} master(s){}, master after {} ms, last after {} ms",
                    t + 1,
                    trial.masters,
                    if trial.lowest_mac_won { ", the lowest MAC" } else { "" },
                    trial.master_ms.map_or("-".into(), |v| v.to_string()),
                    trial.last_ms
                );
                series.trials.push(trial);
            }
            all.push(series);
        }
        switch.teardown(sh)?;
        let section = render(&date, &m, &all);
        report::publish(&section, !self.no_record)
    }
}

fn ns_name(i: usize) -> String {
    format!("{PREFIX}{i}")
}

/// Power on `n` candidates at one instant, each with a fresh random MAC.
fn trial(sh: &Shell, agent: &Path, config: &Path, n: usize) -> Result<Trial> {
    let mut macs = Vec::new();
    for i in 0..n {
        let ns = ns_name(i);
        let mac = random_mac();
        run(cmd!(sh, "ip -n {ns} link set {LINK} down"))?;
        run(cmd!(sh, "ip -n {ns} link set {LINK} address {mac}"))?;
        run(cmd!(sh, "ip -n {ns} link set {LINK} up"))?;
        macs.push(mac);
    }
    std::thread::sleep(Duration::from_millis(500));
    let start_at = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64 + 1500;
    let mut children = Vec::new();
    for i in 0..n {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns_name(i)])
            .arg(agent)
            .arg("elect")
            .arg("--config")
            .arg(config)
            .args(["--interface", LINK, "--announce", &ANNOUNCE.to_string()])
            .args(["--start-at", &start_at.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting cluster-lab elect")?;
        children.push(child);
    }
    let mut decisions = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(d) = parse_decision(&stdout) else {
            bail!(
                "candidate {i} ({}): no decision ({}): {}{}",
                macs[i],
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        decisions.push(d);
    }
    Ok(judge(&macs, &decisions))
}

fn random_mac() -> String {
    let b: [u8; 5] = rand_bytes();
    // Locally administered, unicast.
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    let f = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut b)
    });
    f.expect("reading /dev/urandom");
    b
}

/// `role=master decided_ms=5873` → (is master, ms).
pub fn parse_decision(stdout: &str) -> Option<(bool, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("role="))?;
    let mut role = None;
    let mut ms = None;
    for field in line.split_whitespace() {
        match field.split_once('=') {
            Some(("role", r)) => role = Some(r == "master"),
            Some(("decided_ms", v)) => ms = v.parse().ok(),
            _ => {}
        }
    }
    Some((role?, ms?))
}

/// Exactly one master, and was it the lowest MAC?
pub fn judge(macs: &[String], decisions: &[(bool, u64)]) -> Trial {
    let masters: Vec<usize> = (0..decisions.len()).filter(|&i| decisions[i].0).collect();
    let lowest = (0..macs.len()).min_by_key(|&i| macs[i].to_lowercase());
    Trial {
        masters: masters.len(),
        lowest_mac_won: masters.len() == 1 && Some(masters[0]) == lowest,
        master_ms: (masters.len() == 1).then(|| decisions[masters[0]].1),
        last_ms: decisions.iter().map(|d| d.1).max().unwrap_or(0),
    }
}

fn median(v: &mut [u64]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    })
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or("n/a".into(), |v| format!("{:.2} s", v as f64 / 1000.0))
}

pub fn render(date: &str, m: &machine::Machine, all: &[Series]) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "Measured {date} with `cargo xtask bench election` on {} cores ({}), {:.1} GiB, Linux {}; 1-minute load \
         average {} at the start.\n",
        m.cores, m.cpu, m.mem_gib, m.kernel, m.load
    );
    let _ = writeln!(
        s,
        "| Candidates | Trials | Exactly one master | The lowest MAC won | Master decided (median / max) | All decided (median / max) | vs 3 candidates (median, all decided) |"
    );
    let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
    let base = all
        .iter()
        .find(|x| x.candidates == 3)
        .and_then(|x| median(&mut x.trials.iter().map(|t| t.last_ms).collect::<Vec<_>>()));
    for series in all {
        let t = &series.trials;
        let one = t.iter().filter(|x| x.masters == 1).count();
        let lowest = t.iter().filter(|x| x.lowest_mac_won).count();
        let mut master: Vec<u64> = t.iter().filter_map(|x| x.master_ms).collect();
        let mut last: Vec<u64> = t.iter().map(|x| x.last_ms).collect();
        let last_median = median(&mut last);
        let ratio = match (base, last_median) {
            (Some(b), Some(l)) if b > 0 => format!("{:.2}×", l as f64 / b as f64),
            _ => "n/a".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {one}/{} | {lowest}/{} | {} / {} | {} / {} | {ratio} |",
            series.candidates,
            t.len(),
            t.len(),
            t.len(),
            secs(median(&mut master)),
            secs(master.iter().max().copied()),
            secs(last_median),
            secs(last.iter().max().copied()),
        );
    }
    let _ = writeln!(
        s,
        "\nEach candidate is the real `cluster-lab elect` (the election first boot runs, nothing else) in its own \
         network namespace, all bridged on one switch namespace (no packet leaves them); every trial gives each a \
         fresh random MAC and starts them all at one instant, 1.5 s ahead. Times count from that instant: the \
         protocol's own floor is a 3 s DHCP probe, a 3 s claim window and a 2-probe ARP check (about 8 s); a \
         candidate that hears a lower MAC backs off 4-8 s and probes again, and every candidate becomes a node the \
         moment it hears the master's claim. The elected master announces itself for {ANNOUNCE} s, then gives the \
         address up before the next trial."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_parse_and_trials_are_judged() {
        assert_eq!(
            parse_decision("role=master decided_ms=5873\n"),
            Some((true, 5873))
        );
        assert_eq!(
            parse_decision("role=node decided_ms=12\n"),
            Some((false, 12))
        );
        assert_eq!(parse_decision("error\n"), None);
        let macs = ["02:00:00:00:00:0b".to_string(), "02:00:00:00:00:0a".into()];
        let t = judge(&macs, &[(false, 9000), (true, 8100)]);
        assert!(t.lowest_mac_won && t.masters == 1);
        assert_eq!((t.master_ms, t.last_ms), (Some(8100), 9000));
        let t = judge(&macs, &[(true, 9000), (true, 8100)]);
        assert!(!t.lowest_mac_won && t.masters == 2 && t.master_ms.is_none());
    }

    #[test]
    fn the_table_counts_outcomes_and_compares_with_three() {
        let trial = |masters, ms| Trial {
            masters,
            lowest_mac_won: masters == 1,
            master_ms: (masters == 1).then_some(ms),
            last_ms: ms + 500,
        };
        let all = [
            Series {
                candidates: 3,
                trials: vec![trial(1, 8000), trial(1, 8000)],
            },
            Series {
                candidates: 10,
                trials: vec![trial(1, 16000), trial(2, 20000)],
            },
        ];
        let text = render("d", &machine::Machine::default(), &all);
        assert!(
            text.contains("| 3 | 2 | 2/2 | 2/2 | 8.00 s / 8.00 s | 8.50 s / 8.50 s | 1.00× |"),
            "{text}"
        );
        assert!(
            text.contains("| 10 | 2 | 1/2 | 1/2 | 16.00 s / 16.00 s | 18.50 s / 20.50 s | 2.18× |"),
            "{text}"
        );
    }
}
