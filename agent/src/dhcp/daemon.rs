//! The running DHCP server: socket, lease log and state machine in one loop.
//!
//! Each turn of the loop drains every queued datagram (up to [`BATCH`]), handles them, sends the OFFERs, NAKs and
//! INFORM answers at once, and hands the turn's lease records and ACKs to the lease [`Writer`] thread, which
//! sends the ACKs only after one `fdatasync` covering all records queued meanwhile (group commit). The loop never
//! waits for the disk, and a burst of clients costs one sync, not one per client.

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use dhcproto::Encodable;
use nix::fcntl::{Flock, FlockArg};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, error, info, warn};

use super::leases::LeaseLog;
use super::packet;
use super::server::{ClockWatch, Server, ServerConfig};
use super::socket::ServerSocket;
use super::writer::{Batch, Writer};

/// Most datagrams handled per loop turn (and per disk sync).
pub const BATCH: usize = 512;
/// Compact when the log holds this many lines more than twice the live state.
const COMPACT_SLACK: usize = 10_000;

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub interface: String,
    pub port: u16,
    pub lease_file: PathBuf,
    pub server: ServerConfig,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serve until SIGTERM or SIGINT.
pub async fn run(opts: DaemonOptions) -> anyhow::Result<()> {
    let _lock = lock(&opts)?;
    let (mut log, loaded) = LeaseLog::open(&opts.lease_file)
        .with_context(|| format!("opening lease file {}", opts.lease_file.display()))?;
    if loaded.torn_tail {
        warn!(lease_file = %opts.lease_file.display(), "last lease record was cut short (crash while writing), ignored");
    }
    if !loaded.bad_lines.is_empty() {
        warn!(lease_file = %opts.lease_file.display(), lines = ?loaded.bad_lines, "unreadable lease records skipped");
    }
    let mut server = Server::new(opts.server.clone());
    let skipped = server.restore(&loaded.records);
    if skipped > 0 {
        warn!(
            skipped,
            "lease records outside the range or unreadable, dropped"
        );
    }
    log.compact(server.snapshot(now()))
        .with_context(|| format!("compacting lease file {}", opts.lease_file.display()))?;
    let mut lines = log.lines();
    let mut next_compaction = 2 * lines + COMPACT_SLACK;

    let mut sock = ServerSocket::bind(&opts.interface, opts.port)?;
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let cfg = server.config();
    info!(
        interface = %opts.interface,
        server = %cfg.server_id,
        range = %format_args!("{}-{}", cfg.range_start, cfg.range_end),
        lease_time = cfg.lease_time.as_secs(),
        lease_file = %opts.lease_file.display(),
        leases = server.pool().leases().count(),
        active = server.pool().active(now()),
        "dhcpd ready"
    );

    let writer = Writer::start(log, sock.try_clone_std().context("duplicating socket")?)
        .context("starting lease writer thread")?;
    let mut buf = vec![0u8; 1500];
    let mut out = Vec::with_capacity(1500);
    let mut clock = ClockWatch::new(now(), std::time::Instant::now());
    loop {
        tokio::select! {
            biased;
            _ = term.recv() => { info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { info!("SIGINT: stopping"); break; }
            r = sock.readable() => r.context("waiting for packets")?,
        }
        let now = now();
        let mut batch = Batch::default();
        if let Some(step) = clock.observe(now, std::time::Instant::now()) {
            warn!(
                step_s = step,
                "the system clock was stepped: lease times move with it, what is left of each lease stays"
            );
            server.clock_stepped(step);
            // The lease file gets the moved times now, not at the next compaction.
            lines = next_compaction;
        }
        for _ in 0..BATCH {
            let rx = match sock.try_recv(&mut buf) {
                Ok(Some(rx)) => rx,
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "receiving");
                    break;
                }
            };
            if rx.ifindex != 0 && rx.ifindex != sock.ifindex() {
                debug!(
                    ifindex = rx.ifindex,
                    "packet from another interface, dropped"
                );
                continue;
            }
            if rx.truncated || rx.len > buf.len() {
                debug!(from = ?rx.from, len = rx.len, "oversized packet, dropped");
                continue;
            }
            let req = match packet::parse(&buf[..rx.len]) {
                Ok(req) => req,
                Err(e) => {
                    debug!(from = ?rx.from, len = rx.len, reason = %e, "malformed packet, dropped");
                    continue;
                }
            };
            let outcome = server.handle(&req, now);
            lines += usize::from(outcome.record.is_some());
            batch.records.extend(outcome.record);
            let Some(reply) = outcome.reply else { continue };
            out.clear();
            if let Err(e) = reply.msg.encode(&mut dhcproto::Encoder::new(&mut out)) {
                error!(error = %e, "encoding reply");
                continue;
            }
            if reply.durable {
                // Sent by the writer once the lease is on disk.
                batch.acks.push((out.clone(), reply.to));
            } else if let Err(e) = sock.send_to(&out, reply.to).await {
                warn!(to = %reply.to, error = %e, "sending reply");
            }
        }
        if lines >= next_compaction {
            let snapshot = server.snapshot(now);
            lines = snapshot.len() + 1;
            next_compaction = 2 * lines + COMPACT_SLACK;
            batch.compact = Some(snapshot);
        }
        writer.submit(batch);
    }
    // Everything handled so far is written and acknowledged before exit.
    let _ = writer.finish();
    info!("dhcpd stopped");
    Ok(())
}

/// One server per lease file: an exclusive lock on `<lease file>.lock`.
fn lock(opts: &DaemonOptions) -> anyhow::Result<Flock<File>> {
    let mut name = opts
        .lease_file
        .file_name()
        .unwrap_or_default()
        .to_os_string();
    name.push(".lock");
    let path = opts.lease_file.with_file_name(name);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating lease file directory {}", dir.display()))?;
    }
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(l),
        Err((_, e)) => bail!(
            "lease file {} is in use by another cluster-lab dhcpd ({}: {e}); stop it first",
            opts.lease_file.display(),
            path.display()
        ),
    }
}

/// Check that `server_id` is configured on `interface`; explain what to do when it is not.
pub fn check_server_address(
    interface: &str,
    server_id: Ipv4Addr,
    prefix: u8,
    explicit: bool,
) -> anyhow::Result<()> {
    let have = crate::net::link::addresses(interface)?;
    if have.contains(&server_id) {
        return Ok(());
    }
    let list = if have.is_empty() {
        "no IPv4 address".to_string()
    } else {
        have.iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if explicit {
        warn!(interface, server = %server_id, has = %list, "server address is not on the interface; clients will renew to it");
        return Ok(());
    }
    bail!(
        "interface {interface} does not have the master address {server_id} (it has {list}): \
         add it (ip addr add {server_id}/{prefix} dev {interface}), or pass --server-address"
    )
}
