//! Driving perfdhcp (Debian `kea-admin`) from the client namespace and reading its final report.
//!
//! perfdhcp runs the basic DORA scenario at a fixed rate (`-r`) for a fixed period (`-p`), then waits a little
//! (`-W`) for late answers without starting new exchanges. It always talks as a relay agent: it binds port 67 on
//! the client interface's address, puts that address in `giaddr` and broadcasts; servers answer the relay.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::netns::{CLIENT_IF, CLIENT_NS};

/// Number of simulated clients (perfdhcp `-R`); must fit in every server's pool.
pub const CLIENTS: u32 = 1000;

/// How long perfdhcp waits after the period for answers still in flight (`-W`, microseconds).
const EXIT_WAIT_US: u32 = 200_000;

/// One exchange half as perfdhcp reports it (DISCOVER-OFFER or REQUEST-ACK).
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Exchange {
    pub sent: u64,
    pub received: u64,
    /// Mean delay between request and answer; `None` when nothing was answered.
    pub avg_delay_ms: Option<f64>,
}

/// perfdhcp's final report, the parts the bench uses.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Report {
    pub discover_offer: Exchange,
    pub request_ack: Exchange,
}

impl Report {
    /// Parse the text perfdhcp prints at the end of a run.
    pub fn parse(text: &str) -> Result<Report> {
        let mut report = Report::default();
        let mut section: Option<&mut Exchange> = None;
        let (mut seen_do, mut seen_ra) = (false, false);
        for line in text.lines() {
            let line = line.trim();
            if let Some(name) = line
                .strip_prefix("***Statistics for: ")
                .and_then(|l| l.strip_suffix("***"))
            {
                section = match name {
                    "DISCOVER-OFFER" => {
                        seen_do = true;
                        Some(&mut report.discover_offer)
                    }
                    "REQUEST-ACK" => {
                        seen_ra = true;
                        Some(&mut report.request_ack)
                    }
                    _ => None,
                };
                continue;
            }
            if line.starts_with("***") {
                section = None;
                continue;
            }
            let (Some(ex), Some((key, value))) = (section.as_deref_mut(), line.split_once(':'))
            else {
                continue;
            };
            let value = value.trim();
            match key {
                "sent packets" => ex.sent = value.parse().context("reading 'sent packets'")?,
                "received packets" => {
                    ex.received = value.parse().context("reading 'received packets'")?
                }
                // "avg delay: 0.265 ms", or "avg delay: n/a" when nothing came back.
                "avg delay" => {
                    if let Some(ms) = value.strip_suffix(" ms").and_then(|v| v.parse().ok()) {
                        ex.avg_delay_ms = Some(ms);
                    }
                }
                _ => {}
            }
        }
        if !seen_do || !seen_ra {
            bail!("no DISCOVER-OFFER and REQUEST-ACK statistics in perfdhcp's output");
        }
        Ok(report)
    }

    /// Share of started exchanges (DISCOVERs sent) that did not end with an ACK.
    pub fn drop_ratio(&self) -> f64 {
        if self.discover_offer.sent == 0 {
            return 1.0;
        }
        let acked = self.request_ack.received.min(self.discover_offer.sent);
        1.0 - acked as f64 / self.discover_offer.sent as f64
    }

    /// Completed DORA exchanges per second of the sending period.
    pub fn dora_per_sec(&self, period: Duration) -> f64 {
        self.request_ack.received as f64 / period.as_secs_f64()
    }
}

/// Run perfdhcp at `rate` DORA/s for `period` from the client namespace, with [`CLIENTS`] simulated clients.
pub fn run(sh: &Shell, rate: u32, period: Duration) -> Result<Report> {
    run_clients(sh, CLIENTS, rate, period)
}

/// Run perfdhcp at `rate` DORA/s for `period` with `clients` simulated clients, taken in turn from the first.
pub fn run_clients(sh: &Shell, clients: u32, rate: u32, period: Duration) -> Result<Report> {
    let (rate_s, period_s) = (rate.to_string(), period.as_secs().max(1).to_string());
    let limit = (period.as_secs() + 30).to_string();
    let (clients, wait) = (clients.to_string(), EXIT_WAIT_US.to_string());
    let cmd = cmd!(
        sh,
        "timeout -k 5 {limit} ip netns exec {CLIENT_NS} perfdhcp -4 -l {CLIENT_IF} -R {clients} -r {rate_s} -p {period_s} -W {wait}"
    );
    let shown = cmd.to_string();
    let out = cmd
        .ignore_status()
        .output()
        .with_context(|| format!("running {shown}"))?;
    // 0: every exchange completed; 3: some did not (that is a measurement, not an error).
    match out.status.code() {
        Some(0 | 3) => {}
        _ => bail!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
    Report::parse(&String::from_utf8_lossy(&out.stdout))
        .with_context(|| format!("reading the report of {shown}"))
}

/// Wait until the server completes at least one DORA exchange (clients taken from the first of `clients`), or
/// `deadline` passes.
pub fn wait_until_serving(
    sh: &Shell,
    deadline: Duration,
    clients: u32,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let start = std::time::Instant::now();
    loop {
        alive()?;
        let report = run_clients(sh, clients, 10, Duration::from_secs(1))?;
        if report.request_ack.received > 0 {
            return Ok(());
        }
        if start.elapsed() > deadline {
            bail!("no DHCPACK from the server within {} s", deadline.as_secs());
        }
    }
}

/// perfdhcp's version, e.g. "2.2.0".
pub fn version(sh: &Shell) -> String {
    cmd!(sh, "perfdhcp -v")
        .ignore_status()
        .read()
        .map(|v| v.trim().trim_start_matches("VERSION:").trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_clean_run() {
        let r = Report::parse(include_str!("testdata/perfdhcp-ok.txt")).unwrap();
        assert_eq!(r.discover_offer.sent, 1999);
        assert_eq!(r.request_ack.received, 1999);
        assert!(r.discover_offer.avg_delay_ms.unwrap() > 0.0);
        assert!(r.request_ack.avg_delay_ms.unwrap() > 0.0);
        assert_eq!(r.drop_ratio(), 0.0);
        assert!((r.dora_per_sec(Duration::from_secs(2)) - 999.5).abs() < 0.01);
    }

    #[test]
    fn parses_an_overloaded_run() {
        let r = Report::parse(include_str!("testdata/perfdhcp-overload.txt")).unwrap();
        assert!(r.request_ack.received < r.discover_offer.sent);
        assert!(r.drop_ratio() > 0.01, "{r:?}");
    }

    #[test]
    fn no_answer_is_all_dropped_without_latency() {
        let r = Report::parse(include_str!("testdata/perfdhcp-no-server.txt")).unwrap();
        assert_eq!(r.discover_offer.received, 0);
        assert_eq!(r.discover_offer.avg_delay_ms, None);
        assert_eq!(r.request_ack.avg_delay_ms, None);
        assert_eq!(r.drop_ratio(), 1.0);
    }

    #[test]
    fn output_without_statistics_is_an_error() {
        assert!(
            Report::parse("ERROR: running perfdhcp: There is no address for interface").is_err()
        );
    }
}
