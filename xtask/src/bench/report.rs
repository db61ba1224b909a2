//! The DHCP bench's markdown: printed to stdout and written as the "DHCP server" section of
//! docs/benchmarks.md (other sections of that file belong to other commands and are kept as they are).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use super::dhcp::{Outcome, Point, BISECT_STEPS, FOOTPRINT_LEASES, MAX_DROP, START_RATE};
use super::machine::Machine;
use super::netns::{CLIENT_NS, SERVER_NS};
use super::perfdhcp::CLIENTS;
use super::servers::{Server, CLIENT_ADDR, POOL_FIRST, POOL_LAST, SUBNET};

/// The section's heading; everything from it to the next `## ` heading is ours.
pub const HEADING: &str = "## DHCP server (`cargo xtask bench dhcp`)";

pub struct Run<'a> {
    /// When the bench ran, e.g. "2026-11-22 01:40 UTC".
    pub date: &'a str,
    pub machine: &'a Machine,
    pub perfdhcp: &'a str,
    pub command: &'a str,
    pub period: Duration,
    pub quick: bool,
    pub outcomes: &'a [Outcome],
}

pub fn render(run: &Run<'_>) -> String {
    let m = run.machine;
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "Measured {} with `{}` on {} cores ({}), {:.1} GiB, Linux {}; 1-minute load average {} at the start \
         (other work on the machine lowers and scatters the numbers). perfdhcp {}.\n",
        run.date, run.command, m.cores, m.cpu, m.mem_gib, m.kernel, m.load, run.perfdhcp
    );
    if run.quick {
        let _ = writeln!(
            s,
            "**Smoke test (`--quick`)**: one {} s point at 200 offered DORA/s per server; not a throughput measurement.\n",
            run.period.as_secs()
        );
    }
    let kea = run
        .outcomes
        .iter()
        .find(|o| o.server == Server::Kea)
        .and_then(|o| o.best().map(|b| b.dora_per_sec));
    let _ = writeln!(
        s,
        "| Server | Version | DORA/s at ≤ {} % drops | Drops | Mean DISCOVER→OFFER | Mean REQUEST→ACK | vs Kea |",
        MAX_DROP * 100.0
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|");
    for o in run.outcomes {
        let _ = writeln!(s, "{}", row(o, kea));
    }
    let _ = writeln!(
        s,
        "\nRates tried (offered DORA/s → completed DORA/s, drops):\n"
    );
    for o in run.outcomes {
        let tried: Vec<String> = o
            .points
            .iter()
            .map(|p| {
                format!(
                    "{} → {:.0} ({:.1} %)",
                    p.rate,
                    p.dora_per_sec,
                    p.drop * 100.0
                )
            })
            .collect();
        let tried = if tried.is_empty() {
            "none".to_string()
        } else {
            tried.join(", ")
        };
        let _ = writeln!(s, "- {}: {tried}", o.server.label());
    }
    let _ = writeln!(
        s,
        "\nHow: each server runs alone in network namespace `{SERVER_NS}`, linked by a veth pair to `{CLIENT_NS}` \
         where perfdhcp runs; no packet leaves these namespaces. perfdhcp acts as a relay agent on the same link \
         (giaddr {}, port 67) and broadcasts DISCOVERs for {CLIENTS} simulated clients, taken in turn from the \
         first one at every rate, so beyond the first {CLIENTS} exchanges every client already holds a lease. Pool {POOL_FIRST}–{POOL_LAST} \
         in subnet {SUBNET} (a /20 around the default 192.168.200.0/24, so that every client fits), lease time \
         1 h, each server with its own defaults otherwise and an empty lease file on {}. Each rate runs {} s; the \
         offered rate doubles from {START_RATE}/s while at most {} % of exchanges go unfinished, then \
         {BISECT_STEPS} bisection steps; a rate missed by a little (under 10 % drops) is run a second time. \
         DORA/s = ACKs received ÷ sending time at the best such rate; drops = 1 − ACKs ÷ DISCOVERs, where an \
         answer later than 1 s counts as dropped; latencies are perfdhcp's mean delays at that rate.\n",
        CLIENT_ADDR.split('/').next().unwrap_or(CLIENT_ADDR),
        m.lease_fs,
        run.period.as_secs(),
        MAX_DROP * 100.0
    );
    let _ = writeln!(
        s,
        "Leases on disk, and each server's peak resident memory over the whole run (VmHWM of its process):\n"
    );
    for o in run.outcomes {
        let size = o.lease_bytes.map_or(String::new(), |b| {
            format!(" Lease file after the run: {}.", bytes(b))
        });
        let rss = o.peak_rss_kib.map_or(String::new(), |k| {
            format!(" Peak RSS: {:.1} MiB.", k as f64 / 1024.0)
        });
        let _ = writeln!(
            s,
            "- {}: {}.{size}{rss}",
            o.server.label(),
            o.server.storage()
        );
    }
    let _ = writeln!(
        s,
        "\nWith {FOOTPRINT_LEASES} leases, what a master with the default range full holds (a fresh server, {FOOTPRINT_LEASES} \
         clients asking at 50 DORA/s for 4 s, then 2 s idle; resident memory is VmRSS then, peak is VmHWM):\n"
    );
    let _ = writeln!(
        s,
        "| Server | DHCPACKs | Resident | Peak | Lease file | Resident vs Kea |\n|---|---:|---:|---:|---:|---:|"
    );
    let kea_rss = run
        .outcomes
        .iter()
        .find(|o| o.server == Server::Kea)
        .and_then(|o| o.footprint)
        .map(|f| f.rss_kib);
    for o in run.outcomes {
        match o.footprint {
            Some(f) => {
                let vs = kea_rss.map_or("n/a".into(), |k| {
                    format!("{:.2}×", f.rss_kib as f64 / k.max(1) as f64)
                });
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.1} MiB | {:.1} MiB | {} | {vs} |",
                    o.server.label(),
                    f.acks,
                    f.rss_kib as f64 / 1024.0,
                    f.peak_rss_kib as f64 / 1024.0,
                    bytes(f.lease_bytes)
                );
            }
            None => {
                let _ = writeln!(s, "| {} | not measured | | | | |", o.server.label());
            }
        }
    }
    s
}

fn row(o: &Outcome, kea: Option<f64>) -> String {
    let name = o.server.label();
    if let Some(e) = &o.error {
        let first = e.lines().next().unwrap_or(e);
        let first: String = first.chars().take(200).collect();
        return format!(
            "| {name} | {} | failed: {} | | | | |",
            o.version,
            first.replace('|', "\\|")
        );
    }
    let Some(b) = o.best() else {
        return format!(
            "| {name} | {} | < {} (no rate kept drops ≤ {} %) | | | | |",
            o.version,
            o.points.iter().map(|p| p.rate).min().unwrap_or(0),
            MAX_DROP * 100.0
        );
    };
    let rate = if o.capped() {
        format!("≥ {:.0} (bench maximum)", b.dora_per_sec)
    } else {
        format!("{:.0}", b.dora_per_sec)
    };
    let vs = kea.map_or("n/a".into(), |k| format!("{:.2}×", b.dora_per_sec / k));
    format!(
        "| {name} | {} | {rate} | {:.2} % | {} | {} | {vs} |",
        o.version,
        b.drop * 100.0,
        ms(b),
        ms_ra(b)
    )
}

fn bytes(b: u64) -> String {
    if b < 1_000_000 {
        format!("{} kB", b.div_ceil(1000))
    } else {
        format!("{:.1} MB", b as f64 / 1e6)
    }
}

fn ms(p: &Point) -> String {
    p.do_ms.map_or("n/a".into(), |v| format!("{v:.3} ms"))
}

fn ms_ra(p: &Point) -> String {
    p.ra_ms.map_or("n/a".into(), |v| format!("{v:.3} ms"))
}

/// Replace our section of `doc` with `section` (re-reading the file right before writing), or append it.
/// Print a bench's `section`, and write it into docs/benchmarks.md unless `record` is off (`--no-record`).
pub fn publish(section: &str, record: bool) -> Result<()> {
    println!("{section}");
    if record {
        write_section(Path::new("docs/benchmarks.md"), section)?;
        eprintln!("==> written to docs/benchmarks.md");
    }
    Ok(())
}

pub use vmlab::benchmarks::write_section;

#[cfg(test)]
mod tests {
    use super::*;

    fn point(rate: u32, done: f64) -> Point {
        Point {
            rate,
            dora_per_sec: done,
            drop: 1.0 - done / rate as f64,
            do_ms: Some(0.25),
            ra_ms: Some(0.5),
        }
    }

    #[test]
    fn table_has_ratio_to_kea_and_failures() {
        let outcomes = [
            Outcome {
                server: Server::ClusterLab,
                version: "0.1.0".into(),
                points: vec![point(100, 100.0), point(200, 200.0), point(400, 300.0)],
                lease_bytes: Some(2_500_000),
                peak_rss_kib: Some(3_584),
                footprint: Some(super::super::dhcp::Footprint {
                    rss_kib: 5_120,
                    peak_rss_kib: 6_144,
                    lease_bytes: 12_000,
                    acks: 200,
                }),
                error: None,
            },
            Outcome {
                server: Server::Kea,
                version: "2.2.0".into(),
                points: vec![point(100, 100.0), point(200, 100.0)],
                lease_bytes: None,
                peak_rss_kib: None,
                footprint: Some(super::super::dhcp::Footprint {
                    rss_kib: 20_480,
                    peak_rss_kib: 20_480,
                    lease_bytes: 30_000,
                    acks: 199,
                }),
                error: None,
            },
            Outcome {
                server: Server::Dnsmasq,
                version: "2.90".into(),
                points: vec![],
                lease_bytes: None,
                peak_rss_kib: None,
                footprint: None,
                error: Some("dnsmasq exited (exit status: 2)\nlog".into()),
            },
        ];
        let text = render(&Run {
            date: "2026-11-22 01:40 UTC",
            machine: &Machine::default(),
            perfdhcp: "2.2.0",
            command: "cargo xtask bench dhcp",
            period: Duration::from_secs(5),
            quick: false,
            outcomes: &outcomes,
        });
        assert!(
            text.contains("| cluster-lab dhcpd | 200 | 5.0 MiB | 6.0 MiB | 12 kB | 0.25× |"),
            "{text}"
        );
        assert!(
            text.contains("| dnsmasq | not measured | | | | |"),
            "{text}"
        );
        assert!(text.starts_with(HEADING), "{text}");
        assert!(
            text.contains(
                "| cluster-lab dhcpd | 0.1.0 | 200 | 0.00 % | 0.250 ms | 0.500 ms | 2.00× |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| kea-dhcp4 | 2.2.0 | 100 | 0.00 % | 0.250 ms | 0.500 ms | 1.00× |"),
            "{text}"
        );
        assert!(
            text.contains("| dnsmasq | 2.90 | failed: dnsmasq exited (exit status: 2) |"),
            "{text}"
        );
        assert!(
            text.contains(
                "- cluster-lab dhcpd: 100 → 100 (0.0 %), 200 → 200 (0.0 %), 400 → 300 (25.0 %)"
            ),
            "{text}"
        );
    }
}
