//! `cargo xtask bench dhcp`: DORA throughput and latency of `cluster-lab dhcpd`, kea-dhcp4 and dnsmasq, measured
//! with perfdhcp in the same run on the same namespace topology, all with leases kept on disk.
//!
//! For each server: start it fresh (empty lease file), wait until it answers, then search the rate. perfdhcp runs
//! at a fixed offered rate for a fixed period; the rate doubles from [`START_RATE`] while drops stay at or below
//! [`MAX_DROP`], then [`BISECT_STEPS`] bisection steps narrow the gap between the last good and the first bad rate.
//! The result is the best completed DORA/s among the rates that kept drops ≤ 1 %, with perfdhcp's mean
//! DISCOVER→OFFER and REQUEST→ACK delays at that rate.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use xshell::{cmd, Shell};

use super::netns::{self, Topology};
use super::perfdhcp::{self, Report};
use super::servers::{self, Daemon, Server, CLIENT_ADDR, SERVER_ADDR};
use super::{machine, report};

/// First offered rate, DORA/s.
pub const START_RATE: u32 = 100;
/// Highest offered rate; above it the bench reports "at least".
pub const MAX_RATE: u32 = 25_600;
/// Lowest rate tried when even [`START_RATE`] drops too much.
const MIN_RATE: u32 = 25;
pub const BISECT_STEPS: u32 = 2;
/// Highest share of unfinished exchanges at which a rate counts as sustained.
pub const MAX_DROP: f64 = 0.01;
/// A rate that misses [`MAX_DROP`] by less than this is tried a second time.
const RETRY_BELOW: f64 = 0.10;
/// Rate and period of `--quick`.
const QUICK_RATE: u32 = 200;
const QUICK_PERIOD: u64 = 2;
/// Pause between rate points so a server can drain what it still has queued.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct Dhcp {
    /// Servers to measure, comma-separated (default: all three).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cluster-lab,kea,dnsmasq"
    )]
    servers: Vec<Server>,
    /// Seconds perfdhcp sends at each rate point.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=30))]
    duration: u64,
    /// Smoke test: one short point at 200 DORA/s per server; prints the table, leaves docs/benchmarks.md alone.
    #[arg(long)]
    quick: bool,
}

/// One perfdhcp run at one offered rate.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub rate: u32,
    pub dora_per_sec: f64,
    pub drop: f64,
    pub do_ms: Option<f64>,
    pub ra_ms: Option<f64>,
}

impl Point {
    fn new(rate: u32, period: Duration, r: &Report) -> Point {
        Point {
            rate,
            dora_per_sec: r.dora_per_sec(period),
            drop: r.drop_ratio(),
            do_ms: r.discover_offer.avg_delay_ms,
            ra_ms: r.request_ack.avg_delay_ms,
        }
    }

    pub fn sustained(&self) -> bool {
        self.drop <= MAX_DROP
    }
}

/// What one server achieved: every point tried, or why it could not be measured.
#[derive(Debug)]
pub struct Outcome {
    pub server: Server,
    pub version: String,
    pub points: Vec<Point>,
    /// Size of the lease file when the server was stopped.
    pub lease_bytes: Option<u64>,
    /// The server's peak resident memory over the whole run (VmHWM), KiB.
    pub peak_rss_kib: Option<u64>,
    pub footprint: Option<Footprint>,
    pub error: Option<String>,
}

impl Outcome {
    /// The sustained point with the most completed exchanges per second.
    pub fn best(&self) -> Option<&Point> {
        self.points
            .iter()
            .filter(|p| p.sustained())
            .max_by(|a, b| a.dora_per_sec.total_cmp(&b.dora_per_sec))
    }

    /// The search stopped at [`MAX_RATE`] without failing: the server may do more.
    pub fn capped(&self) -> bool {
        self.best().is_some_and(|b| b.rate >= MAX_RATE)
    }
}

impl Dhcp {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let started = Instant::now();
        let date_fmt = "+%Y-%m-%d %H:%M UTC";
        let date = cmd!(sh, "date -u {date_fmt}")
            .quiet()
            .read()
            .unwrap_or_default();
        preflight(&self.servers)?;
        let mut servers = self.servers.clone();
        servers.sort();
        servers.dedup();

        // Load is sampled before our own build, so that it shows other work on the machine.
        let work = target_dir(sh).join("bench-dhcp");
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("removing {}", work.display()))?;
        }
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        let machine = machine::describe(sh, &work);

        let cluster_lab = if servers.contains(&Server::ClusterLab) {
            step("building cluster-lab (release)");
            cmd!(sh, "cargo build --release -p cluster-lab").run()?;
            Some(target_dir(sh).join("release/cluster-lab"))
        } else {
            None
        };

        step(&format!(
            "network: {} {SERVER_ADDR} <-veth-> {} {CLIENT_ADDR}",
            netns::SERVER_NS,
            netns::CLIENT_NS
        ));
        let topo = Topology::create(sh, SERVER_ADDR, CLIENT_ADDR)?;
        let period = Duration::from_secs(if self.quick {
            QUICK_PERIOD
        } else {
            self.duration
        });
        let mut outcomes = Vec::new();
        for &server in &servers {
            let version = server.version(sh, cluster_lab.as_deref());
            step(&format!("{} {version}", server.label()));
            let dir = work.join(server.label().replace(' ', "-"));
            let mut outcome = Outcome {
                server,
                version,
                points: Vec::new(),
                lease_bytes: None,
                peak_rss_kib: None,
                footprint: None,
                error: None,
            };
            match footprint(sh, server, &dir.join("100-leases"), cluster_lab.as_deref()) {
                Ok(f) => {
                    eprintln!(
                        "  100 leases: resident {} KiB (peak {} KiB), lease file {} bytes",
                        f.rss_kib, f.peak_rss_kib, f.lease_bytes
                    );
                    outcome.footprint = Some(f);
                }
                Err(e) => eprintln!("bench: {} with 100 leases: {e:#}", server.label()),
            }
            let result = measure(
                sh,
                server,
                &dir,
                cluster_lab.as_deref(),
                period,
                self.quick,
                &mut outcome.points,
            );
            match result {
                Ok((bytes, rss)) => {
                    outcome.lease_bytes = Some(bytes);
                    outcome.peak_rss_kib = rss;
                }
                Err(e) => {
                    eprintln!("bench: {}: {e:#}", server.label());
                    outcome.error = Some(format!("{e:#}"));
                }
            }
            outcomes.push(outcome);
        }
        let teardown = topo.teardown();

        let command = command_line(&self, &servers);
        let section = report::render(&report::Run {
            date: &date,
            machine: &machine,
            perfdhcp: &perfdhcp::version(sh),
            command: &command,
            period,
            quick: self.quick,
            outcomes: &outcomes,
        });
        println!("{section}");
        if self.quick {
            eprintln!("bench: --quick: docs/benchmarks.md left unchanged");
        } else {
            let doc = sh.current_dir().join("docs/benchmarks.md");
            report::write_section(&doc, &section)?;
            eprintln!("bench: wrote the DHCP section of {}", doc.display());
        }
        eprintln!("bench: done in {} s", started.elapsed().as_secs());
        teardown?;
        if outcomes.iter().any(|o| o.error.is_some()) {
            bail!("some servers could not be measured (see above)");
        }
        Ok(())
    }
}

/// Number of clients of the footprint phase: the cluster's default range.
pub const FOOTPRINT_LEASES: u32 = 100;

/// A server holding [`FOOTPRINT_LEASES`] leases, as a master does with 100 machines.
#[derive(Debug, Clone, Copy)]
pub struct Footprint {
    /// Resident memory once every client holds a lease and the server is idle.
    pub rss_kib: u64,
    pub peak_rss_kib: u64,
    pub lease_bytes: u64,
    /// DHCPACKs the clients got (each client asks at least once; at 50 DORA/s for 4 s, about twice).
    pub acks: u64,
}

/// A fresh server, [`FOOTPRINT_LEASES`] clients asking at 50 DORA/s for 4 s (about twice each), then 2 s idle: its
/// resident memory. Every client must have been answered at least once.
fn footprint(
    sh: &Shell,
    server: Server,
    dir: &Path,
    cluster_lab: Option<&Path>,
) -> Result<Footprint> {
    let mut daemon = server.start(dir, cluster_lab)?;
    perfdhcp::wait_until_serving(sh, Duration::from_secs(20), FOOTPRINT_LEASES, || {
        daemon.alive()
    })?;
    let report = perfdhcp::run_clients(sh, FOOTPRINT_LEASES, 50, Duration::from_secs(4))?;
    if report.request_ack.received < u64::from(FOOTPRINT_LEASES) {
        bail!(
            "only {} DHCPACKs for {FOOTPRINT_LEASES} clients",
            report.request_ack.received
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    daemon.alive()?;
    let rss_kib = daemon.rss_kib().context("reading the server's VmRSS")?;
    let peak_rss_kib = daemon.peak_rss_kib().unwrap_or(rss_kib);
    daemon.stop()?;
    let lease_bytes = std::fs::metadata(servers::lease_file(dir)).map_or(0, |m| m.len());
    Ok(Footprint {
        rss_kib,
        peak_rss_kib,
        lease_bytes,
        acks: report.request_ack.received,
    })
}

/// Start `server`, wait until it answers, run the rate points, stop it, and check that it kept its leases on disk
/// (returns the lease file's size). On failure the end of the server's log goes to stderr.
fn measure(
    sh: &Shell,
    server: Server,
    dir: &Path,
    cluster_lab: Option<&Path>,
    period: Duration,
    quick: bool,
    points: &mut Vec<Point>,
) -> Result<(u64, Option<u64>)> {
    let mut daemon = server.start(dir, cluster_lab)?;
    let result = drive(sh, &mut daemon, period, quick, points);
    if result.is_err() {
        eprintln!(
            "bench: end of {}:\n{}",
            daemon.log().display(),
            daemon.log_tail()
        );
    }
    result?;
    let peak_rss = daemon.peak_rss_kib();
    daemon.stop()?;
    let leases = servers::lease_file(dir);
    let bytes = std::fs::metadata(&leases).map_or(0, |m| m.len());
    if bytes == 0 {
        bail!(
            "{} acknowledged leases but kept none on disk: {} is empty or missing",
            server.label(),
            leases.display()
        );
    }
    Ok((bytes, peak_rss))
}

fn drive(
    sh: &Shell,
    daemon: &mut Daemon,
    period: Duration,
    quick: bool,
    points: &mut Vec<Point>,
) -> Result<()> {
    perfdhcp::wait_until_serving(sh, Duration::from_secs(20), perfdhcp::CLIENTS, || {
        daemon.alive()
    })
    .context("waiting for the first DHCPACK")?;
    std::thread::sleep(SETTLE);
    let mut probe = |rate: u32| -> Result<Point> {
        daemon.alive()?;
        let report = perfdhcp::run(sh, rate, period)?;
        let p = Point::new(rate, period, &report);
        eprintln!(
            "  {rate:>6}/s offered: {:>8.1} DORA/s, drops {:>5.1} %, DO {} RA {}",
            p.dora_per_sec,
            p.drop * 100.0,
            ms(p.do_ms),
            ms(p.ra_ms)
        );
        std::thread::sleep(SETTLE);
        Ok(p)
    };
    if quick {
        points.push(probe(QUICK_RATE)?);
    } else {
        search(&mut probe, points)?;
    }
    daemon.alive()
}

/// The rate search: double while sustained, halve below the start if even that fails, then bisect.
pub fn search(probe: &mut impl FnMut(u32) -> Result<Point>, points: &mut Vec<Point>) -> Result<()> {
    let mut good = None;
    let mut rate = START_RATE;
    let mut bad = loop {
        if !sustains(probe, points, rate)? {
            break Some(rate);
        }
        good = Some(rate);
        if rate >= MAX_RATE {
            return Ok(());
        }
        rate = (rate * 2).min(MAX_RATE);
    };
    if good.is_none() {
        let mut rate = START_RATE / 2;
        while rate >= MIN_RATE {
            if sustains(probe, points, rate)? {
                good = Some(rate);
                break;
            }
            bad = Some(rate);
            rate /= 2;
        }
    }
    let (Some(mut lo), Some(mut hi)) = (good, bad) else {
        return Ok(());
    };
    for _ in 0..BISECT_STEPS {
        let mid = round_rate((lo + hi) / 2);
        if mid <= lo || mid >= hi {
            break;
        }
        if sustains(probe, points, mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(())
}

/// Whether the server keeps drops ≤ [`MAX_DROP`] at `rate`. A narrow miss (below [`RETRY_BELOW`]) is run once
/// more, so that one burst of other work on the machine does not end the search early.
fn sustains(
    probe: &mut impl FnMut(u32) -> Result<Point>,
    points: &mut Vec<Point>,
    rate: u32,
) -> Result<bool> {
    let p = probe(rate)?;
    points.push(p);
    if p.sustained() || p.drop >= RETRY_BELOW {
        return Ok(p.sustained());
    }
    let again = probe(rate)?;
    points.push(again);
    Ok(again.sustained())
}

/// Round to two significant digits so the table shows readable rates (5600, not 5575).
fn round_rate(r: u32) -> u32 {
    let mut unit = 1;
    while r / unit >= 100 {
        unit *= 10;
    }
    (r + unit / 2) / unit * unit
}

fn ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.3} ms"))
}

fn step(what: &str) {
    eprintln!("==> bench dhcp: {what}");
}

/// The command as the user would type it again.
fn command_line(args: &Dhcp, servers: &[Server]) -> String {
    let mut c = String::from("cargo xtask bench dhcp");
    if servers != Server::ALL {
        let names: Vec<String> = servers
            .iter()
            .filter_map(|s| clap::ValueEnum::to_possible_value(s).map(|v| v.get_name().to_string()))
            .collect();
        c += &format!(" --servers {}", names.join(","));
    }
    if args.quick {
        c += " --quick";
    } else if args.duration != 5 {
        c += &format!(" --duration {}", args.duration);
    }
    c
}

fn preflight(servers: &[Server]) -> Result<()> {
    if !cluster_lab_image::host_tools::is_root() {
        bail!("the DHCP bench needs root (network namespaces, port 67); run `sudo -E cargo xtask bench dhcp`");
    }
    let mut missing = Vec::new();
    for (prog, pkg) in [
        ("perfdhcp", "kea-admin"),
        ("ip", "iproute2"),
        ("timeout", "coreutils"),
    ] {
        if !on_path(prog) {
            missing.push(format!("{prog} (Debian package {pkg})"));
        }
    }
    for s in servers {
        if let Some(prog) = s.program() {
            if !on_path(prog) {
                let pkg = if prog == "kea-dhcp4" {
                    "kea-dhcp4-server"
                } else {
                    "dnsmasq-base"
                };
                missing.push(format!("{prog} (Debian package {pkg})"));
            }
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing tools: {}; install them with apt-get (they are listed in ci/apt-packages.txt)",
            missing.join(", ")
        );
    }
    Ok(())
}

fn on_path(prog: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join(prog).is_file())
}

pub(super) fn target_dir(sh: &Shell) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                sh.current_dir().join(p)
            }
        })
        .unwrap_or_else(|| sh.current_dir().join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(limit: u32) -> impl FnMut(u32) -> Result<Point> {
        move |rate| {
            let done = rate.min(limit) as f64;
            Ok(Point {
                rate,
                dora_per_sec: done,
                drop: 1.0 - done / rate as f64,
                do_ms: Some(0.1),
                ra_ms: Some(0.1),
            })
        }
    }

    fn searched(limit: u32) -> Outcome {
        let mut points = Vec::new();
        search(&mut fake(limit), &mut points).unwrap();
        Outcome {
            server: Server::Kea,
            version: String::new(),
            points,
            lease_bytes: None,
            peak_rss_kib: None,
            footprint: None,
            error: None,
        }
    }

    fn best_of(limit: u32) -> (Vec<u32>, Option<u32>) {
        let o = searched(limit);
        (
            o.points.iter().map(|p| p.rate).collect(),
            o.best().map(|p| p.rate),
        )
    }

    #[test]
    fn doubles_then_bisects_towards_the_limit() {
        let (tried, best) = best_of(5000);
        // 6400 drops 22 %: clearly over, no second try; 5600 drops 11 %.
        assert_eq!(tried, [100, 200, 400, 800, 1600, 3200, 6400, 4800, 5600]);
        assert_eq!(best, Some(4800));
    }

    #[test]
    fn a_narrow_miss_is_tried_twice() {
        // With a limit of 5300, 5600 drops 5.4 %.
        let (tried, best) = best_of(5300);
        assert_eq!(
            tried,
            [100, 200, 400, 800, 1600, 3200, 6400, 4800, 5600, 5600]
        );
        assert_eq!(best, Some(4800));
    }

    #[test]
    fn goes_below_the_start_rate_when_it_already_drops() {
        let (tried, best) = best_of(60);
        // 62 misses by 3.2 %: tried twice.
        assert_eq!(tried, [100, 50, 75, 62, 62]);
        assert_eq!(best, Some(50));
    }

    #[test]
    fn a_server_that_never_answers_has_no_best_rate() {
        let (tried, best) = best_of(0);
        assert_eq!(tried, [100, 50, 25]);
        assert_eq!(best, None);
    }

    #[test]
    fn stops_at_the_maximum_rate() {
        let o = searched(u32::MAX);
        assert_eq!(o.points.last().unwrap().rate, MAX_RATE);
        assert!(o.capped());
    }

    #[test]
    fn rates_are_rounded_to_two_digits() {
        assert_eq!(round_rate(4800), 4800);
        assert_eq!(round_rate(5575), 5600);
        assert_eq!(round_rate(75), 75);
        assert_eq!(round_rate(150), 150);
    }
}
