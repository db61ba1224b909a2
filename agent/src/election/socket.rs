//! The claim channel of the master election: UDP broadcasts on the VLAN interface.
//!
//! Port [`PORT`], sent to 255.255.255.255 from a socket bound to the interface (SO_BINDTODEVICE), so it works
//! before the interface has an address and never leaves the VLAN.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

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
}

impl ClaimSocket {
    /// Bind to `port` (normally [`PORT`]) on `interface`.
    pub fn bind(interface: &str, port: u16) -> Result<ClaimSocket, ClaimSocketError> {
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
        Ok(ClaimSocket {
            socket,
            interface: interface.into(),
            port,
        })
    }

    /// Broadcast `claim` on the interface.
    pub async fn announce(&self, claim: &Claim) -> Result<(), ClaimSocketError> {
        let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, self.port);
        self.socket
            .send_to(&claim.encode(), to)
            .await
            .map_err(|source| ClaimSocketError {
                interface: self.interface.clone(),
                step: "sending claim",
                source,
            })?;
        Ok(())
    }

    /// The next well-formed claim received; junk datagrams are skipped with a debug log.
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
            match Claim::decode(&buf[..n]) {
                Some(c) => return Ok(c),
                None => tracing::debug!(%from, len = n, "ignoring datagram that is not a claim"),
            }
        }
    }
}
