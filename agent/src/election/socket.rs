//! The claim channel of the master election: UDP broadcasts on the VLAN interface.
//!
//! Port [`PORT`], sent to 255.255.255.255 from a socket bound to the interface (SO_BINDTODEVICE), so it works
//! before the interface has an address and never leaves the VLAN. Every claim is signed with the cluster's
//! [`ClaimKey`]; what arrives unsigned, signed with another key, or as a replay is dropped here, so the election
//! only ever sees claims of machines holding this cluster's secret.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::election::claim::{ClaimKey, Freshness};
use crate::election::Claim;

/// UDP port of cluster-lab election claims.
pub const PORT: u16 = 6247;

#[derive(Debug, thiserror::Error)]
#[error("{interface}: {step}: {source}")]
pub struct ClaimSocketError {
    pub interface: String,
    pub step: &'static str,
    pub source: io::Error,
}

/// A socket that sends and receives claims on one interface.
#[derive(Debug)]
pub struct ClaimSocket {
    socket: UdpSocket,
    interface: String,
    port: u16,
    key: ClaimKey,
    /// The counter of the last claim sent: starts at the clock's milliseconds, so claims after a restart count on
    /// from where the last run's did.
    sent: AtomicU64,
    fresh: Mutex<Freshness>,
}

impl ClaimSocket {
    /// Bind to `port` (normally [`PORT`]) on `interface`; claims are signed and checked with `key`.
    pub fn bind(
        interface: &str,
        port: u16,
        key: ClaimKey,
    ) -> Result<ClaimSocket, ClaimSocketError> {
        let err = |step| {
            let interface = interface.to_string();
            move |source| ClaimSocketError {
                interface,
                step,
                source,
            }
        };
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(err("creating UDP socket"))?;
        s.set_reuse_address(true)
            .map_err(err("setting SO_REUSEADDR"))?;
        s.set_broadcast(true).map_err(err("setting SO_BROADCAST"))?;
        s.bind_device(Some(interface.as_bytes()))
            .map_err(err("binding to the interface (SO_BINDTODEVICE)"))?;
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
            .map_err(err("binding the claim port"))?;
        s.set_nonblocking(true)
            .map_err(err("setting non-blocking"))?;
        let socket = UdpSocket::from_std(s.into()).map_err(err("registering with tokio"))?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Ok(ClaimSocket {
            socket,
            interface: interface.into(),
            port,
            key,
            sent: AtomicU64::new(now_ms),
            fresh: Mutex::new(Freshness::default()),
        })
    }

    /// Broadcast `claim` on the interface.
    pub async fn announce(&self, claim: &Claim) -> Result<(), ClaimSocketError> {
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.port);
        let counter = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        self.socket
            .send_to(&claim.encode(&self.key, counter), to)
            .await
            .map_err(|source| ClaimSocketError {
                interface: self.interface.clone(),
                step: "sending claim",
                source,
            })?;
        Ok(())
    }

    /// The interface the socket is bound to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Every authentic, fresh claim already received and not yet read, without waiting.
    pub fn drain(&self) -> Vec<Claim> {
        let mut buf = [0u8; 512];
        let mut claims = Vec::new();
        while let Ok((n, from)) = self.socket.try_recv_from(&mut buf) {
            if let Some(c) = self.accept(&buf[..n], from) {
                claims.push(c);
            }
        }
        claims
    }

    /// The claim in a datagram, if it is authentic and fresh.
    fn accept(&self, data: &[u8], from: std::net::SocketAddr) -> Option<Claim> {
        match Claim::decode(data, &self.key) {
            Some((c, counter)) => {
                let fresh = self
                    .fresh
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .accept(c.mac, counter);
                if fresh {
                    return Some(c);
                }
                tracing::debug!(%from, mac = %c.mac, counter, "ignoring a replayed claim");
            }
            None => tracing::debug!(
                %from,
                len = data.len(),
                "ignoring datagram that is not a claim of this cluster (unsigned or another key)"
            ),
        }
        None
    }

    /// The next authentic, fresh claim received; anything else is skipped with a debug log.
    pub async fn receive(&self) -> Result<Claim, ClaimSocketError> {
        let mut buf = [0u8; 512];
        loop {
            let (n, from) =
                self.socket
                    .recv_from(&mut buf)
                    .await
                    .map_err(|source| ClaimSocketError {
                        interface: self.interface.clone(),
                        step: "receiving claims",
                        source,
                    })?;
            if let Some(c) = self.accept(&buf[..n], from) {
                return Ok(c);
            }
        }
    }
}
