//! Outgoing DHCP replies (RFC 2131 table 3): which fields and options each carries and where it goes.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, DhcpOptions, Message, MessageType, Opcode, OptionCode};

use super::packet::Request;

/// Port DHCP servers listen on.
pub const SERVER_PORT: u16 = 67;
/// Port DHCP clients listen on.
pub const CLIENT_PORT: u16 = 68;

/// The configuration every reply carries.
#[derive(Debug, Clone)]
pub struct ReplyOptions {
    pub server_id: Ipv4Addr,
    pub subnet_mask: Ipv4Addr,
    /// Option 3, only when configured.
    pub router: Option<Ipv4Addr>,
    /// Option 6, only when configured.
    pub dns: Vec<Ipv4Addr>,
    /// Option 42: the cluster's time source (the master runs chrony for the VLAN).
    pub ntp: Vec<Ipv4Addr>,
    /// The cluster-lab master marker (vendor class + vendor-specific cluster name).
    pub marker: Vec<DhcpOption>,
    /// With the cluster's marker key, each reply's marker also carries its tag (see [`super::marker::sign`]).
    pub signer: Option<(super::marker::MarkerKey, String)>,
}

/// What to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Offer {
        address: Ipv4Addr,
        lease_secs: u32,
    },
    Ack {
        address: Ipv4Addr,
        lease_secs: u32,
    },
    /// DHCPACK to a DHCPINFORM: configuration, no address, no lease.
    InformAck,
    Nak {
        reason: &'static str,
    },
}

/// Build the reply to `req`.
pub fn build(req: &Request, answer: Answer, cfg: &ReplyOptions) -> Message {
    let m = &req.msg;
    let mut reply = Message::default();
    reply
        .set_opcode(Opcode::BootReply)
        .set_htype(m.htype())
        .set_xid(m.xid())
        .set_flags(m.flags())
        .set_giaddr(m.giaddr())
        .set_chaddr(m.chaddr());
    let mut opts = DhcpOptions::new();
    let (kind, ciaddr, yiaddr) = match answer {
        Answer::Offer { address, .. } => (MessageType::Offer, Ipv4Addr::UNSPECIFIED, address),
        Answer::Ack { address, .. } => (MessageType::Ack, m.ciaddr(), address),
        Answer::InformAck => (MessageType::Ack, m.ciaddr(), Ipv4Addr::UNSPECIFIED),
        Answer::Nak { .. } => (
            MessageType::Nak,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
        ),
    };
    reply.set_ciaddr(ciaddr).set_yiaddr(yiaddr);
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(cfg.server_id));
    match answer {
        Answer::Offer { lease_secs, .. } | Answer::Ack { lease_secs, .. } => {
            opts.insert(DhcpOption::AddressLeaseTime(lease_secs));
            opts.insert(DhcpOption::Renewal(lease_secs / 2));
            opts.insert(DhcpOption::Rebinding(
                (u64::from(lease_secs) * 7 / 8) as u32,
            ));
            config_options(&mut opts, cfg);
        }
        Answer::InformAck => config_options(&mut opts, cfg),
        Answer::Nak { reason } => {
            opts.insert(DhcpOption::Message(reason.to_string()));
        }
    }
    if let Some(id) = &req.client_id {
        opts.insert(DhcpOption::ClientIdentifier(id.clone()));
    }
    if let Some(relay @ DhcpOption::RelayAgentInformation(_)) =
        m.opts().get(OptionCode::RelayAgentInformation)
    {
        opts.insert(relay.clone());
    }
    for o in &cfg.marker {
        opts.insert(o.clone());
    }
    reply.set_opts(opts);
    if let Some((key, cluster)) = &cfg.signer {
        super::marker::sign(&mut reply, cluster, key);
    }
    reply
}

fn config_options(opts: &mut DhcpOptions, cfg: &ReplyOptions) {
    opts.insert(DhcpOption::SubnetMask(cfg.subnet_mask));
    if let Some(r) = cfg.router {
        opts.insert(DhcpOption::Router(vec![r]));
    }
    if !cfg.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(cfg.dns.clone()));
    }
    if !cfg.ntp.is_empty() {
        opts.insert(DhcpOption::NtpServers(cfg.ntp.clone()));
    }
}

/// Where the reply to `req` goes (RFC 2131 4.1).
///
/// A client without an address is answered by broadcast: unicasting to an unconfigured client needs an ARP entry
/// this server does not inject, and every client listens for broadcasts. Renewals and INFORMs (ciaddr set) are
/// unicast to ciaddr; relayed requests go back to the relay.
pub fn destination(req: &Request, answer: Answer) -> SocketAddrV4 {
    let m = &req.msg;
    let giaddr = m.giaddr();
    if !giaddr.is_unspecified() {
        return SocketAddrV4::new(giaddr, SERVER_PORT);
    }
    let ciaddr = m.ciaddr();
    let unicast =
        !ciaddr.is_unspecified() && !matches!(answer, Answer::Nak { .. } | Answer::Offer { .. });
    if unicast {
        SocketAddrV4::new(ciaddr, CLIENT_PORT)
    } else {
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    }
}
