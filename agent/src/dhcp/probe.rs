//! The DHCP probe: broadcast DHCPDISCOVER on an interface, collect the OFFERs, and tell whether one of the
//! servers that answered is a cluster-lab master of this cluster.
//!
//! The probe only ever sends DISCOVER, never REQUEST, so it never takes a lease. Offers are asked to be
//! broadcast (BROADCAST flag) because the interface may have no address yet.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, HType, Message, MessageType, Opcode,
    OptionCode,
};
use serde::Serialize;

use super::marker::{self, MarkerKey, Sender};

pub use super::reply::{CLIENT_PORT, SERVER_PORT};
/// RFC 2131 magic cookie at offset 236, before the options.
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// How often the DISCOVER is repeated while waiting (a server may start late or drop one).
pub const RESEND_INTERVAL: Duration = Duration::from_secs(1);

/// Errors of the probe. Network I/O errors name the interface.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Link(#[from] crate::net::link::LinkError),
    #[error("{interface}: {step}: {source}")]
    Socket {
        interface: String,
        step: &'static str,
        source: io::Error,
    },
    #[error("encoding DHCPDISCOVER: {0}")]
    Encode(#[from] dhcproto::error::EncodeError),
}

/// One OFFER as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// Option 54, or the packet's source address when a server leaves it out.
    pub server_id: Ipv4Addr,
    /// `yiaddr`: the address the server would lease.
    pub offered: Ipv4Addr,
    /// What the offer says about its sender.
    pub sender: Sender,
    /// Whether a marker naming this cluster carried a valid tag; `None` when not checked (no key, or another
    /// cluster's name, or a foreign server).
    pub verified: Option<bool>,
}

/// Build the DHCPDISCOVER the probe broadcasts.
pub fn discover(xid: u32, mac: [u8; 6]) -> Message {
    let mut msg = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    msg.set_opcode(Opcode::BootRequest)
        .set_htype(HType::Eth)
        .set_flags(Flags::default().set_broadcast());
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Discover));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::ServerIdentifier,
        OptionCode::AddressLeaseTime,
        OptionCode::ClassIdentifier,
        OptionCode::VendorExtensions,
    ]));
    msg
}

/// Read a datagram as an OFFER answering our DISCOVER `xid` for `mac`. Anything else — malformed,
/// another transaction, another message type — is `None`.
/// With `check` (the cluster's name and marker key), a marker naming that cluster is also verified.
pub fn parse_offer(
    packet: &[u8],
    source: Ipv4Addr,
    xid: u32,
    mac: [u8; 6],
    check: Option<&(String, MarkerKey)>,
) -> Option<Offer> {
    // dhcproto does not check the magic cookie; a BOOTP reply without it carries no DHCP options.
    if packet.get(236..240) != Some(&MAGIC_COOKIE[..]) {
        return None;
    }
    let msg = Message::decode(&mut Decoder::new(packet)).ok()?;
    if msg.opcode() != Opcode::BootReply || msg.xid() != xid {
        return None;
    }
    if msg.chaddr().get(..6) != Some(&mac[..]) {
        return None;
    }
    if msg.opts().msg_type() != Some(MessageType::Offer) {
        return None;
    }
    let offered = msg.yiaddr();
    if offered.is_unspecified() {
        return None;
    }
    let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(id)) => *id,
        _ => source,
    };
    let sender = marker::read(msg.opts());
    let verified = match (&sender, check) {
        (Sender::ClusterLab { cluster }, Some((name, key))) if cluster == name => {
            Some(marker::verify(&msg, name, key))
        }
        _ => None,
    };
    Some(Offer {
        server_id,
        offered,
        sender,
        verified,
    })
}

/// What kind of server answered, judged against this node's cluster name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A cluster-lab master of this cluster.
    ThisCluster,
    /// A cluster-lab master of another cluster.
    OtherCluster,
    /// Any other DHCP server (home router, dnsmasq, kea, ...).
    Foreign,
    /// Carries this cluster's name but not a tag made with its secret: a server copying the marker, not the master.
    Impostor,
}

/// One server that answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub server_id: Ipv4Addr,
    pub offered: Ipv4Addr,
    pub kind: Kind,
    /// The cluster a cluster-lab master announced; `null` for foreign servers.
    pub cluster: Option<String>,
}

/// The result of one probe: every server that answered, at most once each, ordered by server id.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub interface: String,
    /// The cluster this node belongs to.
    pub cluster: String,
    pub timeout_secs: f64,
    /// True when a master of `cluster` answered.
    pub master_found: bool,
    pub servers: Vec<Server>,
}

impl Report {
    /// Judge `offers` against `cluster`. The first offer of each server id wins.
    pub fn new(interface: &str, cluster: &str, timeout: Duration, offers: &[Offer]) -> Report {
        let mut by_server: BTreeMap<Ipv4Addr, Server> = BTreeMap::new();
        for offer in offers {
            by_server.entry(offer.server_id).or_insert_with(|| {
                let (kind, announced) = match &offer.sender {
                    Sender::Foreign => (Kind::Foreign, None),
                    Sender::ClusterLab { cluster: c } if c == cluster => match offer.verified {
                        Some(false) => (Kind::Impostor, Some(c.clone())),
                        _ => (Kind::ThisCluster, Some(c.clone())),
                    },
                    Sender::ClusterLab { cluster: c } => (Kind::OtherCluster, Some(c.clone())),
                };
                Server {
                    server_id: offer.server_id,
                    offered: offer.offered,
                    kind,
                    cluster: announced,
                }
            });
        }
        let servers: Vec<Server> = by_server.into_values().collect();
        Report {
            interface: interface.to_owned(),
            cluster: cluster.to_owned(),
            timeout_secs: timeout.as_secs_f64(),
            master_found: servers.iter().any(|s| s.kind == Kind::ThisCluster),
            servers,
        }
    }
}

/// Read an interface's MAC address (see [`crate::net::link::mac`]).
pub fn interface_mac(interface: &str) -> Result<[u8; 6], ProbeError> {
    Ok(crate::net::link::mac(interface)?.0)
}

/// Open the client socket: 0.0.0.0:68 bound to `interface`, broadcast allowed, shared with any DHCP client
/// already running there.
fn client_socket(interface: &str) -> Result<UdpSocket, ProbeError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |step: &'static str| {
        move |source| ProbeError::Socket {
            interface: interface.to_owned(),
            step,
            source,
        }
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(err("creating UDP socket"))?;
    socket
        .set_reuse_address(true)
        .map_err(err("setting SO_REUSEADDR"))?;
    socket
        .set_broadcast(true)
        .map_err(err("setting SO_BROADCAST"))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(err("binding to the interface (SO_BINDTODEVICE)"))?;
    let local = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT);
    socket
        .bind(&local.into())
        .map_err(err("binding 0.0.0.0:68"))?;
    Ok(socket.into())
}

/// Broadcast DISCOVER on `interface` (again every [`RESEND_INTERVAL`]) and collect matching OFFERs until
/// `timeout` has passed.
/// With `check` (this cluster's name and marker key), markers naming this cluster are verified.
pub fn collect_offers(
    interface: &str,
    timeout: Duration,
    check: Option<&(String, MarkerKey)>,
) -> Result<Vec<Offer>, ProbeError> {
    let mac = interface_mac(interface)?;
    let xid: u32 = rand::random();
    let mut packet = Vec::with_capacity(300);
    discover(xid, mac).encode(&mut Encoder::new(&mut packet))?;

    let socket = client_socket(interface)?;
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
    let io_err = |step: &'static str| {
        move |source| ProbeError::Socket {
            interface: interface.to_owned(),
            step,
            source,
        }
    };

    let start = Instant::now();
    let deadline = start + timeout;
    let mut next_send = start;
    let mut offers = Vec::new();
    let mut buf = vec![0u8; 1500];
    tracing::debug!(
        interface,
        xid = format_args!("{xid:#010x}"),
        "probing for DHCP servers"
    );
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if now >= next_send {
            socket
                .send_to(&packet, to)
                .map_err(io_err("sending DHCPDISCOVER"))?;
            next_send = now + RESEND_INTERVAL;
        }
        let wait = next_send
            .min(deadline)
            .saturating_duration_since(Instant::now());
        if wait.is_zero() {
            continue;
        }
        socket
            .set_read_timeout(Some(wait))
            .map_err(io_err("setting the receive timeout"))?;
        match socket.recv_from(&mut buf) {
            Ok((len, from)) => {
                let source = match from {
                    std::net::SocketAddr::V4(a) => *a.ip(),
                    std::net::SocketAddr::V6(_) => continue,
                };
                match parse_offer(&buf[..len], source, xid, mac, check) {
                    Some(offer) => {
                        tracing::debug!(server = %offer.server_id, offered = %offer.offered,
                            sender = ?offer.sender, "offer");
                        offers.push(offer);
                    }
                    None => tracing::trace!(%source, len, "ignored datagram"),
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("receiving offers")(e)),
        }
    }
    Ok(offers)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const XID: u32 = 0x1234_5678;

    fn offer_packet(
        xid: u32,
        server: Ipv4Addr,
        yiaddr: Ipv4Addr,
        cluster: Option<&str>,
    ) -> Vec<u8> {
        let mut msg = discover(xid, MAC);
        msg.set_opcode(Opcode::BootReply).set_yiaddr(yiaddr);
        let opts = msg.opts_mut();
        opts.remove(OptionCode::ParameterRequestList);
        opts.insert(DhcpOption::MessageType(MessageType::Offer));
        opts.insert(DhcpOption::ServerIdentifier(server));
        if let Some(c) = cluster {
            for o in marker::options(c) {
                opts.insert(o);
            }
        }
        let mut out = Vec::new();
        msg.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    pub(crate) fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 200, last)
    }

    pub(crate) fn offer(server: u8, offered: u8, sender: Sender) -> Offer {
        Offer {
            server_id: ip(server),
            offered: ip(offered),
            sender,
            verified: None,
        }
    }

    pub(crate) fn ours(name: &str) -> Sender {
        Sender::ClusterLab {
            cluster: name.into(),
        }
    }

    #[test]
    fn discover_is_a_broadcast_discover_for_our_mac() {
        let msg = discover(XID, MAC);
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Discover));
        assert!(msg.flags().broadcast());
        assert_eq!(msg.chaddr(), &MAC[..]);
        assert_eq!(msg.xid(), XID);
        assert_eq!(msg.opcode(), Opcode::BootRequest);
        assert!(msg.opts().get(OptionCode::RequestedIpAddress).is_none());
    }

    #[test]
    fn offers_are_parsed_with_their_marker() {
        let p = offer_packet(XID, ip(1), ip(101), Some("lab"));
        assert_eq!(
            parse_offer(&p, ip(9), XID, MAC, None),
            Some(offer(1, 101, ours("lab")))
        );
        let p = offer_packet(XID, ip(2), ip(50), None);
        assert_eq!(
            parse_offer(&p, ip(9), XID, MAC, None),
            Some(offer(2, 50, Sender::Foreign))
        );
    }

    #[test]
    fn other_transactions_and_message_types_are_ignored() {
        let p = offer_packet(XID + 1, ip(1), ip(101), None);
        assert_eq!(parse_offer(&p, ip(1), XID, MAC, None), None);
        let p = offer_packet(XID, ip(1), ip(101), None);
        assert_eq!(parse_offer(&p, ip(1), XID, [2, 0, 0, 0, 0, 2], None), None);
        // our own DISCOVER, seen by another probe on the segment
        let mut d = Vec::new();
        discover(XID, MAC)
            .encode(&mut Encoder::new(&mut d))
            .unwrap();
        assert_eq!(parse_offer(&d, ip(1), XID, MAC, None), None);
        // an ACK is not an offer
        let mut msg = Message::decode(&mut Decoder::new(&p)).unwrap();
        msg.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        let mut ack = Vec::new();
        msg.encode(&mut Encoder::new(&mut ack)).unwrap();
        assert_eq!(parse_offer(&ack, ip(1), XID, MAC, None), None);
    }

    #[test]
    fn malformed_packets_are_ignored() {
        let p = offer_packet(XID, ip(1), ip(101), Some("lab"));
        for len in [0, 1, 20, 235, 239, 240] {
            assert_eq!(
                parse_offer(&p[..len], ip(1), XID, MAC, None),
                None,
                "len {len}"
            );
        }
        let mut bad_cookie = p.clone();
        bad_cookie[236] ^= 0xff;
        assert_eq!(parse_offer(&bad_cookie, ip(1), XID, MAC, None), None);
        assert_eq!(parse_offer(&[0xff; 600], ip(1), XID, MAC, None), None);
    }

    #[test]
    fn missing_server_id_falls_back_to_the_source_address() {
        let p = offer_packet(XID, ip(1), ip(101), None);
        let mut msg = Message::decode(&mut Decoder::new(&p)).unwrap();
        msg.opts_mut().remove(OptionCode::ServerIdentifier);
        let mut out = Vec::new();
        msg.encode(&mut Encoder::new(&mut out)).unwrap();
        let got = parse_offer(&out, ip(7), XID, MAC, None).unwrap();
        assert_eq!(got.server_id, ip(7));
    }

    #[test]
    fn master_of_this_cluster_is_found() {
        let offers = [
            offer(2, 50, Sender::Foreign),
            offer(1, 101, ours("lab")),
            offer(1, 102, ours("lab")),
        ];
        let r = Report::new("eth0.200", "lab", Duration::from_secs(3), &offers);
        assert!(r.master_found);
        assert!(r.master_found);
        assert_eq!(r.servers.len(), 2, "deduplicated by server id");
        assert_eq!(r.servers[0].server_id, ip(1));
        assert_eq!(r.servers[0].offered, ip(101), "first offer wins");
        assert_eq!(r.servers[0].kind, Kind::ThisCluster);
        assert_eq!(r.servers[1].kind, Kind::Foreign);
    }

    #[test]
    fn master_of_another_cluster_or_foreign_only_is_not_found() {
        let offers = [offer(1, 101, ours("other")), offer(2, 50, Sender::Foreign)];
        let r = Report::new("eth0.200", "lab", Duration::from_secs(3), &offers);
        assert!(!r.master_found);
        assert_eq!(r.servers[0].kind, Kind::OtherCluster);
        let r = Report::new("eth0.200", "lab", Duration::from_secs(3), &[]);
        assert!(!r.master_found);
        assert!(r.servers.is_empty());
    }
}
