//! The server's UDP socket: port 67 bound to one interface, so it can never answer on another (the home LAN).
//!
//! Belt and braces: the socket is bound with SO_BINDTODEVICE, and every datagram's arrival interface is checked
//! again from its IP_PKTINFO control message.

use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;

use anyhow::Context;
use nix::sys::socket::{self as nixsock, sockopt, ControlMessageOwned, MsgFlags, SockaddrIn};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use super::reply::SERVER_PORT;

/// A datagram as received.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: Option<SocketAddrV4>,
    /// Arrival interface from IP_PKTINFO (0 if the kernel gave none).
    pub ifindex: u32,
    /// The datagram was longer than the buffer.
    pub truncated: bool,
}

/// The bound server socket.
#[derive(Debug)]
pub struct ServerSocket {
    sock: UdpSocket,
    interface: String,
    ifindex: u32,
    cmsg: Vec<u8>,
    /// A blocking-API handle on the same socket, for the lease writer thread.
    std: std::net::UdpSocket,
}

impl ServerSocket {
    /// Bind 0.0.0.0:`port` on `interface` only. Must be called inside a tokio runtime.
    pub fn bind(interface: &str, port: u16) -> anyhow::Result<ServerSocket> {
        let ifindex = crate::net::link::index(interface)?;
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .context("creating UDP socket")?;
        s.set_reuse_address(true).context("setting SO_REUSEADDR")?;
        s.set_broadcast(true).context("setting SO_BROADCAST")?;
        s.bind_device(Some(interface.as_bytes())).with_context(|| {
            format!(
                "binding socket to device {interface} (SO_BINDTODEVICE needs root or CAP_NET_RAW)"
            )
        })?;
        // Room for bursts while the lease log syncs; the kernel caps it at net.core.rmem_max.
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(1 << 20);
        nixsock::setsockopt(&s, sockopt::Ipv4PacketInfo, &true).context("setting IP_PKTINFO")?;
        s.set_nonblocking(true).context("setting O_NONBLOCK")?;
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        s.bind(&addr.into()).with_context(|| {
            format!("binding UDP {addr} on {interface} (port {SERVER_PORT} needs root or CAP_NET_BIND_SERVICE; is another DHCP server running?)")
        })?;
        let std = s.try_clone().context("duplicating socket")?.into();
        let sock = UdpSocket::from_std(s.into()).context("registering socket with tokio")?;
        Ok(ServerSocket {
            sock,
            interface: interface.to_string(),
            ifindex,
            cmsg: nix::cmsg_space!(nix::libc::in_pktinfo),
            std,
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Another handle on this socket (same port, same device binding) for sending from a plain thread.
    pub fn try_clone_std(&self) -> io::Result<std::net::UdpSocket> {
        self.std.try_clone()
    }

    /// Wait until a datagram can be read.
    pub async fn readable(&self) -> io::Result<()> {
        self.sock.readable().await
    }

    /// Read one datagram without waiting; `Ok(None)` when none is queued.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let fd = self.sock.as_raw_fd();
        let cmsg = &mut self.cmsg;
        let r = self.sock.try_io(Interest::READABLE, || {
            let mut iov = [IoSliceMut::new(buf)];
            let m = nixsock::recvmsg::<SockaddrIn>(fd, &mut iov, Some(cmsg), MsgFlags::MSG_TRUNC)
                .map_err(io::Error::from)?;
            let mut ifindex = 0;
            if let Ok(cmsgs) = m.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                        ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0);
                    }
                }
            }
            Ok(Received {
                len: m.bytes,
                from: m.address.map(|a| SocketAddrV4::new(a.ip(), a.port())),
                ifindex,
                truncated: m.flags.contains(MsgFlags::MSG_TRUNC),
            })
        });
        match r {
            Ok(r) => Ok(Some(r)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Send one datagram.
    pub async fn send_to(&self, buf: &[u8], to: SocketAddrV4) -> io::Result<usize> {
        match self.sock.try_send_to(buf, SocketAddr::V4(to)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.sock.send_to(buf, SocketAddr::V4(to)).await
            }
            r => r,
        }
    }
}
