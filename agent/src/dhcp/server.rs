//! The DHCP server's state machine (RFC 2131 section 4.3) on decoded requests: no socket, no clock, no disk, so
//! every step is unit-tested. The daemon feeds it packets and the time, persists the records it returns, and
//! sends replies marked `durable` only after those records are synced.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use dhcproto::v4::{Message, MessageType};
use ipnetwork::Ipv4Network;
use tracing::{debug, info, warn};

use super::leases::Record;
use super::packet::Request;
use super::pool::{hex, parse_hex, Client, ClientKey, Pool};
use super::reply::{self, Answer, ReplyOptions};
use crate::config::Settings;

/// How long an OFFER reserves its address.
pub const OFFER_HOLD_SECS: u64 = 30;
/// At most one "pool exhausted" warning per this many seconds.
const EXHAUSTED_WARN_EVERY: u64 = 60;

/// What the server needs to know, taken from the validated settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub server_id: Ipv4Addr,
    pub subnet: Ipv4Network,
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_time: Duration,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub decline_quarantine: Duration,
    pub cluster_name: String,
    /// Signs the marker of every reply; `None` without a cluster secret (tests, benchmarks).
    pub marker_key: Option<super::marker::MarkerKey>,
}

impl ServerConfig {
    /// From settings, answering as `server_id` (normally the master address).
    pub fn from_settings(s: &Settings, server_id: Ipv4Addr) -> ServerConfig {
        ServerConfig {
            server_id,
            subnet: s.network.subnet,
            range_start: s.dhcp.range_start,
            range_end: s.dhcp.range_end,
            lease_time: s.dhcp.lease_time,
            router: s.dhcp.router,
            dns: s.dhcp.dns.clone(),
            decline_quarantine: s.dhcp.decline_quarantine,
            cluster_name: s.cluster.name.clone(),
            marker_key: s
                .cluster
                .secret
                .as_ref()
                .map(|k| super::marker::MarkerKey::from_secret(k.expose())),
        }
    }
}

/// A reply ready to send.
#[derive(Debug, Clone)]
pub struct Reply {
    pub msg: Message,
    pub to: SocketAddrV4,
    /// Must not leave before the records of this round are synced (an ACK).
    pub durable: bool,
}

/// What handling one request produced.
#[derive(Debug, Default)]
pub struct Outcome {
    pub reply: Option<Reply>,
    pub record: Option<Record>,
}

/// The server: configuration plus the pool.
#[derive(Debug)]
pub struct Server {
    cfg: ServerConfig,
    opts: ReplyOptions,
    lease_secs: u32,
    pool: Pool,
    last_exhausted_warn: Option<u64>,
    exhausted_suppressed: u64,
}

impl Server {
    pub fn new(cfg: ServerConfig) -> Server {
        let subnet = cfg.subnet;
        let exclude = [cfg.server_id, subnet.network(), subnet.broadcast()];
        let pool = Pool::new(cfg.range_start, cfg.range_end, &exclude);
        let opts = ReplyOptions {
            server_id: cfg.server_id,
            subnet_mask: subnet.mask(),
            router: cfg.router,
            dns: cfg.dns.clone(),
            // The server is the master, which serves the cluster's clock.
            ntp: vec![cfg.server_id],
            marker: super::marker::options(&cfg.cluster_name),
            signer: cfg
                .marker_key
                .clone()
                .map(|k| (k, cfg.cluster_name.clone())),
        };
        let lease_secs = cfg.lease_time.as_secs().clamp(1, u64::from(u32::MAX - 1)) as u32;
        Server {
            cfg,
            opts,
            lease_secs,
            pool,
            last_exhausted_warn: None,
            exhausted_suppressed: 0,
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The system clock was stepped by `delta` seconds (see [`ClockWatch`]): lease times move with it.
    pub fn clock_stepped(&mut self, delta: i64) {
        self.pool.shift(delta);
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Replay records read from the lease log; returns how many were skipped (outside the range, unreadable).
    pub fn restore(&mut self, records: &[Record]) -> usize {
        let mut skipped = 0;
        for r in records {
            let ok = match r {
                Record::Format { .. } => true,
                Record::Lease {
                    ip,
                    client,
                    hw,
                    hostname,
                    expires,
                } => match (client.parse::<ClientKey>(), parse_hex(hw)) {
                    (Ok(key), Some(hw)) if self.pool.contains(*ip) => {
                        let c = Client {
                            key,
                            hw,
                            hostname: hostname.clone(),
                        };
                        self.pool.bind(&c, *ip, *expires);
                        true
                    }
                    _ => false,
                },
                Record::Release { ip, client, at } => match client.parse::<ClientKey>() {
                    Ok(key) => {
                        self.pool.release(&key, *ip, *at);
                        true
                    }
                    Err(_) => false,
                },
                Record::Decline { ip, until } => {
                    self.pool.quarantine(*ip, *until);
                    true
                }
            };
            skipped += usize::from(!ok);
        }
        skipped
    }

    /// The live state as records, for compacting the log.
    pub fn snapshot(&self, now: u64) -> Vec<Record> {
        let mut out: Vec<(Ipv4Addr, Record)> = self
            .pool
            .leases()
            .map(|(ip, l)| {
                let c = Client {
                    key: l.client.clone(),
                    hw: l.hw.clone(),
                    hostname: l.hostname.clone(),
                };
                (ip, lease_record(&c, ip, l.expires))
            })
            .chain(
                self.pool
                    .quarantined(now)
                    .map(|(ip, until)| (ip, Record::Decline { ip, until })),
            )
            .collect();
        out.sort_by_key(|(ip, _)| *ip);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// Handle one request at `now` (Unix seconds).
    pub fn handle(&mut self, req: &Request, now: u64) -> Outcome {
        let giaddr = req.msg.giaddr();
        if !giaddr.is_unspecified() && !self.cfg.subnet.contains(giaddr) {
            debug!(client = %req.client.key, relay = %giaddr, "relayed from another subnet, ignored");
            return Outcome::default();
        }
        match req.kind {
            MessageType::Discover => self.discover(req, now),
            MessageType::Request => self.request(req, now),
            MessageType::Decline => self.decline(req, now),
            MessageType::Release => self.release(req, now),
            MessageType::Inform => self.inform(req),
            _ => Outcome::default(),
        }
    }

    fn discover(&mut self, req: &Request, now: u64) -> Outcome {
        let c = &req.client;
        let Some(ip) = self.pool.choose(c, req.requested, now) else {
            self.warn_exhausted(req, now);
            return Outcome::default();
        };
        self.pool.offer(c, ip, now.saturating_add(OFFER_HOLD_SECS));
        // Debug, not info: a DISCOVER flood must not flood the journal; the ACK is the line that matters.
        debug!(client = %c.key, hw = %hex(&c.hw), hostname = c.hostname.as_deref().unwrap_or(""), address = %ip, "offer");
        self.reply(
            req,
            Answer::Offer {
                address: ip,
                lease_secs: self.lease_secs,
            },
            None,
        )
    }

    fn request(&mut self, req: &Request, now: u64) -> Outcome {
        let c = &req.client;
        let ciaddr = req.msg.ciaddr();
        let ip = match req.server_id {
            Some(sid) if sid != self.cfg.server_id => {
                // SELECTING another server's offer: ours is free again.
                self.pool.cancel_offer(&c.key);
                debug!(client = %c.key, server = %sid, "request for another server, ignored");
                return Outcome::default();
            }
            // SELECTING our offer.
            Some(_) => req
                .requested
                .or(Some(ciaddr).filter(|a| !a.is_unspecified())),
            // INIT-REBOOT, then RENEWING/REBINDING.
            None => req
                .requested
                .or(Some(ciaddr).filter(|a| !a.is_unspecified())),
        };
        let Some(ip) = ip else {
            debug!(client = %c.key, "request without an address, ignored");
            return Outcome::default();
        };
        if !self.cfg.subnet.contains(ip) {
            return self.nak(req, ip, "address not on this network");
        }
        if !self.pool.contains(ip) {
            return self.nak(req, ip, "address not in the pool");
        }
        if !self.pool.available_for(ip, &c.key, now) {
            return self.nak(req, ip, "address taken");
        }
        let expires = now.saturating_add(u64::from(self.lease_secs));
        self.pool.bind(c, ip, expires);
        info!(client = %c.key, hw = %hex(&c.hw), hostname = c.hostname.as_deref().unwrap_or(""), address = %ip, expires, "ack");
        let record = lease_record(c, ip, expires);
        self.reply(
            req,
            Answer::Ack {
                address: ip,
                lease_secs: self.lease_secs,
            },
            Some(record),
        )
    }

    fn nak(&mut self, req: &Request, ip: Ipv4Addr, reason: &'static str) -> Outcome {
        info!(client = %req.client.key, address = %ip, reason, "nak");
        self.reply(req, Answer::Nak { reason }, None)
    }

    fn decline(&mut self, req: &Request, now: u64) -> Outcome {
        let c = &req.client;
        if req.server_id.is_some_and(|s| s != self.cfg.server_id) {
            return Outcome::default();
        }
        let Some(ip) = req.requested else {
            debug!(client = %c.key, "decline without an address, ignored");
            return Outcome::default();
        };
        // The client identifier alone is easy to copy off the wire: the hardware address must be the lease's too.
        let ours = self
            .pool
            .lease_at(ip)
            .is_some_and(|l| l.client == c.key && l.hw == c.hw);
        if !ours {
            debug!(client = %c.key, address = %ip, "decline of an address the client does not hold, ignored");
            return Outcome::default();
        }
        let until = now.saturating_add(self.cfg.decline_quarantine.as_secs());
        self.pool.quarantine(ip, until);
        warn!(client = %c.key, address = %ip, until, "decline: address in use by another host, quarantined");
        Outcome {
            reply: None,
            record: Some(Record::Decline { ip, until }),
        }
    }

    fn release(&mut self, req: &Request, now: u64) -> Outcome {
        let c = &req.client;
        if req.server_id.is_some_and(|s| s != self.cfg.server_id) {
            return Outcome::default();
        }
        let ip = req.msg.ciaddr();
        // As for DECLINE: a RELEASE naming the lease's client but sent with another hardware address is forged.
        let same_hw = self.pool.lease_at(ip).is_some_and(|l| l.hw == c.hw);
        if !same_hw || !self.pool.release(&c.key, ip, now) {
            debug!(client = %c.key, address = %ip, "release of an address the client does not hold, ignored");
            return Outcome::default();
        }
        info!(client = %c.key, address = %ip, "release");
        Outcome {
            reply: None,
            record: Some(Record::Release {
                ip,
                client: c.key.to_string(),
                at: now,
            }),
        }
    }

    fn inform(&mut self, req: &Request) -> Outcome {
        info!(client = %req.client.key, address = %req.msg.ciaddr(), "inform");
        self.reply(req, Answer::InformAck, None)
    }

    fn reply(&self, req: &Request, answer: Answer, record: Option<Record>) -> Outcome {
        let msg = reply::build(req, answer, &self.opts);
        let to = reply::destination(req, answer);
        let durable = record.is_some();
        Outcome {
            reply: Some(Reply { msg, to, durable }),
            record,
        }
    }

    fn warn_exhausted(&mut self, req: &Request, now: u64) {
        let due = self
            .last_exhausted_warn
            .is_none_or(|t| now >= t.saturating_add(EXHAUSTED_WARN_EVERY));
        if due {
            warn!(
                client = %req.client.key,
                range = %format_args!("{}-{}", self.cfg.range_start, self.cfg.range_end),
                capacity = self.pool.capacity(),
                suppressed = self.exhausted_suppressed,
                "address pool exhausted: no offer (next warning in {EXHAUSTED_WARN_EVERY}s at the earliest)"
            );
            self.last_exhausted_warn = Some(now);
            self.exhausted_suppressed = 0;
        } else {
            self.exhausted_suppressed += 1;
            debug!(client = %req.client.key, "address pool exhausted: no offer");
        }
    }
}

fn lease_record(c: &Client, ip: Ipv4Addr, expires: u64) -> Record {
    Record::Lease {
        ip,
        client: c.key.to_string(),
        hw: hex(&c.hw),
        hostname: c.hostname.clone(),
        expires,
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;

/// Tells a step of the system clock from time passing: the wall clock against the monotonic one, which steps do not
/// move. A Pi has no battery-backed clock, so the master's clock is stepped when chrony first reaches a time source
/// (days or months at once); lease times are kept in wall-clock seconds (the lease file must outlive reboots), and
/// without this a step forward would end every lease at once and a step back would lengthen them all.
#[derive(Debug, Clone, Copy)]
pub struct ClockWatch {
    wall: u64,
    mono: std::time::Instant,
}

impl ClockWatch {
    /// Differences up to this many seconds are noise, not a step.
    pub const TOLERANCE: u64 = 5;

    pub fn new(wall: u64, mono: std::time::Instant) -> ClockWatch {
        ClockWatch { wall, mono }
    }

    /// The step since the last call, in seconds, if the wall clock moved more than [`Self::TOLERANCE`] away from
    /// the time that passed.
    pub fn observe(&mut self, wall: u64, mono: std::time::Instant) -> Option<i64> {
        let passed = mono.saturating_duration_since(self.mono).as_secs();
        let expected = self.wall.saturating_add(passed);
        let step = wall as i64 - expected as i64;
        // Keep the sub-second part of the monotonic reading: only whole seconds were counted as passed.
        self.mono += std::time::Duration::from_secs(passed);
        self.wall = wall;
        (step.unsigned_abs() > Self::TOLERANCE).then_some(step)
    }
}
