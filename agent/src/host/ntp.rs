//! One NTP exchange in client mode (RFC 5905's on-wire protocol, what SNTP does): how far this machine's clock is
//! from a server's, and a step of the clock by that much.
//!
//! First boot sets a node's clock from the master's chronyd this way before it starts Consul or joins the Swarm:
//! one packet answers at once, where restarting chronyd and waiting for its samples took seconds (and the restart
//! waits behind whatever systemd is starting on a busy first boot). chronyd keeps the clock in step afterwards.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from NTP's epoch (1900-01-01) to Unix's (1970-01-01).
const EPOCH_OFFSET: f64 = 2_208_988_800.0;
/// An NTP packet without extension fields.
const LEN: usize = 48;
/// Leap indicator 0, version 4, mode 3 (client).
const CLIENT: u8 = 4 << 3 | 3;

/// What one exchange measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds to add to this machine's clock to reach the server's (positive: this clock is behind).
    pub offset: f64,
    /// The round trip, less the server's own processing time, in seconds.
    pub delay: f64,
    pub stratum: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum NtpError {
    #[error("the reply is {0} bytes, not an NTP packet of 48")]
    Short(usize),
    #[error("the reply is not a server's (mode {0})")]
    NotServer(u8),
    #[error("the reply does not answer this request (its origin timestamp differs)")]
    Unmatched,
    #[error(
        "the server is not synchronised (leap indicator 3, stratum {0}); it may still be starting"
    )]
    Unsynchronised(u8),
    #[error("no reply from {server} within {waited:?}")]
    NoReply {
        server: SocketAddr,
        waited: Duration,
    },
    #[error("{action} {server}: {source}")]
    Io {
        action: &'static str,
        server: SocketAddr,
        source: std::io::Error,
    },
    #[error("stepping the clock by {offset:.3} s: {source}")]
    Step { offset: f64, source: nix::Error },
}

/// Seconds since the Unix epoch as NTP's 64-bit timestamp (seconds since 1900, 32-bit fraction).
fn to_ntp(unix: f64) -> [u8; 8] {
    let t = unix + EPOCH_OFFSET;
    let secs = t.floor();
    let frac = ((t - secs) * 4_294_967_296.0) as u64;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&(secs as u64 as u32).to_be_bytes());
    out[4..].copy_from_slice(&(frac.min(u32::MAX as u64) as u32).to_be_bytes());
    out
}

/// NTP's 64-bit timestamp as seconds since the Unix epoch (era 0: until 2036).
fn from_ntp(b: &[u8]) -> f64 {
    let secs = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f64;
    let frac = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as f64 / 4_294_967_296.0;
    secs + frac - EPOCH_OFFSET
}

/// This machine's clock, in seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A client request sent at `t1` (its transmit timestamp, which the server's reply must echo as its origin).
pub fn request(t1: f64) -> [u8; LEN] {
    let mut p = [0u8; LEN];
    p[0] = CLIENT;
    p[40..48].copy_from_slice(&to_ntp(t1));
    p
}

/// Read the server's reply to the request sent at `t1`, received at `t4`.
pub fn parse_reply(reply: &[u8], t1: f64, t4: f64) -> Result<Sample, NtpError> {
    if reply.len() < LEN {
        return Err(NtpError::Short(reply.len()));
    }
    let (leap, mode, stratum) = (reply[0] >> 6, reply[0] & 7, reply[1]);
    if mode != 4 {
        return Err(NtpError::NotServer(mode));
    }
    if reply[24..32] != to_ntp(t1) {
        return Err(NtpError::Unmatched);
    }
    if leap == 3 || stratum == 0 || stratum >= 16 {
        return Err(NtpError::Unsynchronised(stratum));
    }
    let (t2, t3) = (from_ntp(&reply[32..40]), from_ntp(&reply[40..48]));
    Ok(Sample {
        offset: ((t2 - t1) + (t3 - t4)) / 2.0,
        delay: (t4 - t1) - (t3 - t2),
        stratum,
    })
}

/// One exchange with the NTP server at `server`:`port` (123 on the master), waiting up to `timeout` for the reply.
pub async fn query(server: Ipv4Addr, port: u16, timeout: Duration) -> Result<Sample, NtpError> {
    let server = SocketAddr::from((server, port));
    let io = |action| {
        move |source| NtpError::Io {
            action,
            server,
            source,
        }
    };
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .await
        .map_err(io("binding a socket to ask"))?;
    socket.connect(server).await.map_err(io("connecting to"))?;
    let t1 = now();
    socket
        .send(&request(t1))
        .await
        .map_err(io("sending a request to"))?;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // A stray datagram (an earlier request's late reply) is not the answer; keep listening until the deadline.
        let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Err(_) => {
                return Err(NtpError::NoReply {
                    server,
                    waited: timeout,
                })
            }
            Ok(r) => r.map_err(io("receiving from"))?,
        };
        match parse_reply(&buf[..n], t1, now()) {
            Err(NtpError::Unmatched) => continue,
            other => return other,
        }
    }
}

/// Step this machine's clock by `offset` seconds (needs CAP_SYS_TIME).
pub fn step(offset: f64) -> Result<(), NtpError> {
    use nix::time::{clock_gettime, clock_settime, ClockId};
    let err = |source| NtpError::Step { offset, source };
    let now = clock_gettime(ClockId::CLOCK_REALTIME).map_err(err)?;
    let nanos = now.tv_sec() as i128 * 1_000_000_000
        + now.tv_nsec() as i128
        + (offset * 1e9).round() as i128;
    let to = nix::sys::time::TimeSpec::new(
        nanos.div_euclid(1_000_000_000) as _,
        nanos.rem_euclid(1_000_000_000) as _,
    );
    clock_settime(ClockId::CLOCK_REALTIME, to).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's reply: received at `t2`, sent at `t3`, echoing `t1`.
    fn reply(first: u8, stratum: u8, t1: f64, t2: f64, t3: f64) -> [u8; LEN] {
        let mut p = [0u8; LEN];
        p[0] = first;
        p[1] = stratum;
        p[24..32].copy_from_slice(&to_ntp(t1));
        p[32..40].copy_from_slice(&to_ntp(t2));
        p[40..48].copy_from_slice(&to_ntp(t3));
        p
    }

    /// Leap indicator 0, version 4, mode 4 (server).
    const SERVER: u8 = 4 << 3 | 4;

    #[test]
    fn timestamps_round_trip_to_well_under_a_microsecond() {
        for t in [0.0, 1_765_065_600.123_456, 2_000_000_000.999_999] {
            assert!((from_ntp(&to_ntp(t)) - t).abs() < 1e-6, "{t}");
        }
        // 2026-12-07 00:00:00 UTC is 3,974,140,800 s after 1900.
        assert_eq!(
            u32::from_be_bytes(to_ntp(1_765_152_000.0)[..4].try_into().unwrap()),
            3_974_140_800
        );
    }

    #[test]
    fn request_is_a_version_4_client_packet_carrying_its_send_time() {
        let p = request(1_765_065_600.5);
        assert_eq!(p[0], 0x23);
        assert_eq!(&p[40..48], &to_ntp(1_765_065_600.5));
        assert!(p[1..40].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_clock_three_days_behind_measures_three_days_whatever_the_round_trip() {
        // This machine sends at its 1000.0 and hears back at 1000.2; the server, three days ahead, took 0.05 s.
        let days = 3.0 * 86_400.0;
        let (t1, t4) = (1000.0, 1000.2);
        let (t2, t3) = (days + 1000.075, days + 1000.125);
        let s = parse_reply(&reply(SERVER, 10, t1, t2, t3), t1, t4).unwrap();
        assert!((s.offset - days).abs() < 1e-6, "{s:?}");
        assert!((s.delay - 0.15).abs() < 1e-6, "{s:?}");
        assert_eq!(s.stratum, 10);
    }

    #[test]
    fn only_a_synchronised_servers_answer_to_this_request_counts() {
        let (t1, t4) = (1000.0, 1000.1);
        assert!(matches!(
            parse_reply(&[0u8; 12], t1, t4),
            Err(NtpError::Short(12))
        ));
        assert!(matches!(
            parse_reply(&reply(0x23, 10, t1, t1, t1), t1, t4),
            Err(NtpError::NotServer(3))
        ));
        assert!(matches!(
            parse_reply(&reply(SERVER, 10, 999.0, t1, t1), t1, t4),
            Err(NtpError::Unmatched)
        ));
        // chronyd before it has a reference: leap indicator 3 ("alarm"), stratum 0.
        assert!(matches!(
            parse_reply(&reply(3 << 6 | SERVER, 0, t1, t1, t1), t1, t4),
            Err(NtpError::Unsynchronised(0))
        ));
        assert!(matches!(
            parse_reply(&reply(SERVER, 16, t1, t1, t1), t1, t4),
            Err(NtpError::Unsynchronised(16))
        ));
    }

    #[tokio::test]
    async fn a_silent_server_is_no_reply_after_the_timeout() {
        // A bound socket that never answers, on loopback.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let err = query(Ipv4Addr::LOCALHOST, port, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, NtpError::NoReply { .. }), "{err}");
    }

    #[tokio::test]
    async fn query_reads_a_reply_from_a_server_on_loopback() {
        // A minimal server: echo the request's transmit time as origin, and answer five seconds ahead.
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (_, from) = server.recv_from(&mut buf).await.unwrap();
            let t1 = from_ntp(&buf[40..48]);
            let ahead = now() + 5.0;
            let out = reply(SERVER, 10, t1, ahead, ahead);
            server.send_to(&out, from).await.unwrap();
        });
        let s = query(Ipv4Addr::LOCALHOST, port, Duration::from_secs(5))
            .await
            .unwrap();
        assert!((s.offset - 5.0).abs() < 0.5, "{s:?}");
        assert!(s.delay >= 0.0 && s.delay < 0.5, "{s:?}");
    }
}
