//! The state machine driven with encoded client messages; replies are decoded again with dhcproto.

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use super::*;
use crate::dhcp::marker;
use crate::dhcp::packet;

const NOW: u64 = 1_700_000_000;
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);

pub(crate) fn config() -> ServerConfig {
    ServerConfig::from_settings(&Settings::default(), SERVER)
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 200, last)
}

/// A client message as it goes on the wire.
pub(crate) fn client_msg(kind: MessageType, mac: u8, opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(0x1234_0000 | u32::from(mac))
        .set_chaddr(&[2, 0, 0, 0, 0, mac]);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

/// Encode, run through the packet checks and the server, decode the reply.
fn exchange(
    s: &mut Server,
    m: &Message,
    now: u64,
) -> (Option<(Message, SocketAddrV4, bool)>, Option<Record>) {
    let bytes = m.to_vec().unwrap();
    let req = packet::parse(&bytes).expect("valid request");
    let out = s.handle(&req, now);
    let reply = out.reply.map(|r| {
        let wire = r.msg.to_vec().unwrap();
        let back = Message::decode(&mut Decoder::new(&wire)).unwrap();
        (back, r.to, r.durable)
    });
    (reply, out.record)
}

fn kind(m: &Message) -> MessageType {
    m.opts().msg_type().unwrap()
}

fn dora(s: &mut Server, mac: u8, now: u64) -> Ipv4Addr {
    let (offer, _) = exchange(s, &client_msg(MessageType::Discover, mac, vec![]), now);
    let offered = offer.unwrap().0.yiaddr();
    let req = client_msg(
        MessageType::Request,
        mac,
        vec![
            DhcpOption::ServerIdentifier(SERVER),
            DhcpOption::RequestedIpAddress(offered),
        ],
    );
    let (ack, record) = exchange(s, &req, now);
    let (ack, _, durable) = ack.unwrap();
    assert_eq!(kind(&ack), MessageType::Ack);
    assert!(durable && record.is_some(), "an ACK waits for its record");
    offered
}

#[test]
fn discover_gets_an_offer_with_the_configured_options() {
    let mut s = Server::new(config());
    let cid = vec![1, 2, 0, 0, 0, 0, 7];
    let (reply, record) = exchange(
        &mut s,
        &client_msg(
            MessageType::Discover,
            7,
            vec![DhcpOption::ClientIdentifier(cid.clone())],
        ),
        NOW,
    );
    assert!(record.is_none(), "an offer is not persisted");
    let (offer, to, durable) = reply.unwrap();
    assert!(!durable);
    assert_eq!(to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert_eq!(offer.opcode(), Opcode::BootReply);
    assert_eq!(offer.xid(), 0x1234_0007);
    assert_eq!(offer.chaddr(), &[2, 0, 0, 0, 0, 7]);
    assert_eq!(kind(&offer), MessageType::Offer);
    assert!(s.pool().contains(offer.yiaddr()));
    let o = offer.opts();
    assert_eq!(
        o.get(OptionCode::ServerIdentifier),
        Some(&DhcpOption::ServerIdentifier(SERVER))
    );
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(3600))
    );
    assert_eq!(o.get(OptionCode::Renewal), Some(&DhcpOption::Renewal(1800)));
    assert_eq!(
        o.get(OptionCode::Rebinding),
        Some(&DhcpOption::Rebinding(3150))
    );
    assert_eq!(
        o.get(OptionCode::ClientIdentifier),
        Some(&DhcpOption::ClientIdentifier(cid))
    );
    assert!(
        o.get(OptionCode::Router).is_none(),
        "no router unless configured"
    );
    assert!(
        o.get(OptionCode::DomainNameServer).is_none(),
        "no DNS unless configured"
    );
    assert_eq!(
        marker::read(o),
        marker::Sender::ClusterLab {
            cluster: "cluster-lab".into()
        }
    );
}

#[test]
fn router_and_dns_when_configured() {
    let mut cfg = config();
    cfg.router = Some(ip(1));
    cfg.dns = vec![ip(1), ip(2)];
    let mut s = Server::new(cfg);
    let (reply, _) = exchange(&mut s, &client_msg(MessageType::Discover, 1, vec![]), NOW);
    let o = reply.unwrap().0.opts().clone();
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![ip(1)]))
    );
    assert_eq!(
        o.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![ip(1), ip(2)]))
    );
}

#[test]
fn request_for_another_server_is_ignored_and_frees_the_offer() {
    let mut s = Server::new(config());
    let (offer, _) = exchange(&mut s, &client_msg(MessageType::Discover, 1, vec![]), NOW);
    let offered = offer.unwrap().0.yiaddr();
    let req = client_msg(
        MessageType::Request,
        1,
        vec![
            DhcpOption::ServerIdentifier(ip(254)),
            DhcpOption::RequestedIpAddress(offered),
        ],
    );
    let (reply, record) = exchange(&mut s, &req, NOW);
    assert!(reply.is_none() && record.is_none());
    assert!(s
        .pool()
        .available_for(offered, &ClientKey::Hw(vec![9]), NOW));
}

#[test]
fn request_for_a_taken_address_is_naked() {
    let mut s = Server::new(config());
    let a = dora(&mut s, 1, NOW);
    let req = client_msg(
        MessageType::Request,
        2,
        vec![DhcpOption::RequestedIpAddress(a)],
    );
    let (reply, record) = exchange(&mut s, &req, NOW);
    let (nak, to, durable) = reply.unwrap();
    assert_eq!(kind(&nak), MessageType::Nak);
    assert_eq!(nak.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert!(!durable && record.is_none());
    assert!(nak.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(matches!(
        marker::read(nak.opts()),
        marker::Sender::ClusterLab { .. }
    ));
}

#[test]
fn request_from_another_network_is_naked() {
    let mut s = Server::new(config());
    let req = client_msg(
        MessageType::Request,
        2,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 0, 5))],
    );
    let (reply, _) = exchange(&mut s, &req, NOW);
    assert_eq!(kind(&reply.unwrap().0), MessageType::Nak);
}

#[test]
fn init_reboot_of_a_known_client_gets_its_address_back() {
    let mut s = Server::new(config());
    let a = dora(&mut s, 3, NOW);
    let req = client_msg(
        MessageType::Request,
        3,
        vec![DhcpOption::RequestedIpAddress(a)],
    );
    let (reply, record) = exchange(&mut s, &req, NOW + 100);
    let (ack, to, _) = reply.unwrap();
    assert_eq!(kind(&ack), MessageType::Ack);
    assert_eq!(ack.yiaddr(), a);
    assert_eq!(to, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    assert!(matches!(record, Some(Record::Lease { expires, .. }) if expires == NOW + 100 + 3600));
}

#[test]
fn renewal_is_unicast_to_ciaddr() {
    let mut s = Server::new(config());
    let a = dora(&mut s, 4, NOW);
    let mut req = client_msg(MessageType::Request, 4, vec![]);
    req.set_ciaddr(a);
    let (reply, record) = exchange(&mut s, &req, NOW + 1800);
    let (ack, to, durable) = reply.unwrap();
    assert_eq!(
        (kind(&ack), ack.yiaddr(), ack.ciaddr()),
        (MessageType::Ack, a, a)
    );
    assert_eq!(to, SocketAddrV4::new(a, 68));
    assert!(durable && record.is_some());
}

#[test]
fn broadcast_flag_and_relay_destinations() {
    let mut s = Server::new(config());
    let mut m = client_msg(MessageType::Discover, 5, vec![]);
    m.set_flags(Flags::default().set_broadcast());
    let (reply, _) = exchange(&mut s, &m, NOW);
    let (offer, to, _) = reply.unwrap();
    assert!(offer.flags().broadcast());
    assert_eq!(to.ip(), &Ipv4Addr::BROADCAST);
    m.set_giaddr(ip(2));
    let (reply, _) = exchange(&mut s, &m, NOW);
    assert_eq!(reply.unwrap().1, SocketAddrV4::new(ip(2), 67));
    m.set_giaddr(Ipv4Addr::new(10, 9, 9, 9));
    assert!(
        exchange(&mut s, &m, NOW).0.is_none(),
        "relay from another subnet"
    );
}

#[test]
fn inform_gets_configuration_without_a_lease() {
    let mut s = Server::new(config());
    let mut m = client_msg(MessageType::Inform, 6, vec![]);
    m.set_ciaddr(ip(50));
    let (reply, record) = exchange(&mut s, &m, NOW);
    let (ack, to, _) = reply.unwrap();
    assert!(record.is_none());
    assert_eq!(kind(&ack), MessageType::Ack);
    assert_eq!(ack.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(to, SocketAddrV4::new(ip(50), 68));
    for code in [
        OptionCode::AddressLeaseTime,
        OptionCode::Renewal,
        OptionCode::Rebinding,
    ] {
        assert!(ack.opts().get(code).is_none(), "{code:?} in an INFORM ACK");
    }
    assert!(ack.opts().get(OptionCode::SubnetMask).is_some());
}

#[test]
fn release_and_decline() {
    let mut s = Server::new(config());
    let a = dora(&mut s, 7, NOW);
    let mut rel = client_msg(
        MessageType::Release,
        7,
        vec![DhcpOption::ServerIdentifier(SERVER)],
    );
    rel.set_ciaddr(a);
    let (reply, record) = exchange(&mut s, &rel, NOW + 5);
    assert!(reply.is_none());
    assert!(matches!(record, Some(Record::Release { at, .. }) if at == NOW + 5));
    assert_eq!(s.pool().active(NOW + 5), 0);
    // Comes back: same address.
    assert_eq!(dora(&mut s, 7, NOW + 10), a);
    // Someone else cannot decline it.
    let dec = |mac| {
        client_msg(
            MessageType::Decline,
            mac,
            vec![DhcpOption::RequestedIpAddress(a)],
        )
    };
    assert!(exchange(&mut s, &dec(8), NOW + 20).1.is_none());
    let (reply, record) = exchange(&mut s, &dec(7), NOW + 20);
    assert!(reply.is_none());
    assert_eq!(
        record,
        Some(Record::Decline {
            ip: a,
            until: NOW + 20 + 600
        })
    );
    let b = dora(&mut s, 7, NOW + 30);
    assert_ne!(
        a, b,
        "a declined address is not offered again during quarantine"
    );
}

/// A forger on the VLAN copies the victim's client identifier but not its hardware address (or sends the
/// packet from its own): neither RELEASE nor DECLINE takes the victim's lease.
#[test]
fn release_and_decline_from_another_hardware_address_are_ignored() {
    let mut s = Server::new(config());
    let cid = vec![1, 2, 0, 0, 0, 0, 7];
    let victim = |kind, mac| {
        client_msg(
            kind,
            mac,
            vec![
                DhcpOption::ClientIdentifier(cid.clone()),
                DhcpOption::ServerIdentifier(SERVER),
            ],
        )
    };
    let (offer, _) = exchange(&mut s, &victim(MessageType::Discover, 7), NOW);
    let a = offer.unwrap().0.yiaddr();
    let mut req = victim(MessageType::Request, 7);
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
    assert_eq!(
        kind(&exchange(&mut s, &req, NOW).0.unwrap().0),
        MessageType::Ack
    );

    let mut rel = victim(MessageType::Release, 9);
    rel.set_ciaddr(a);
    assert_eq!(exchange(&mut s, &rel, NOW + 1), (None, None));
    let mut dec = victim(MessageType::Decline, 9);
    dec.opts_mut().insert(DhcpOption::RequestedIpAddress(a));
    assert_eq!(exchange(&mut s, &dec, NOW + 1), (None, None));
    assert_eq!(s.pool().active(NOW + 2), 1, "the victim keeps its lease");

    // The victim itself still can.
    let mut rel = victim(MessageType::Release, 7);
    rel.set_ciaddr(a);
    assert!(exchange(&mut s, &rel, NOW + 3).1.is_some());
}

#[test]
fn exhausted_pool_makes_no_offer() {
    let mut cfg = config();
    cfg.range_start = ip(101);
    cfg.range_end = ip(102);
    let mut s = Server::new(cfg);
    dora(&mut s, 1, NOW);
    dora(&mut s, 2, NOW);
    for _ in 0..100 {
        let (reply, _) = exchange(&mut s, &client_msg(MessageType::Discover, 3, vec![]), NOW);
        assert!(reply.is_none());
    }
}

#[test]
fn restart_restores_every_client_address() {
    let mut s = Server::new(config());
    let mut records = Vec::new();
    let mut addrs = Vec::new();
    for mac in 1..=20 {
        let a = dora(&mut s, mac, NOW);
        addrs.push(a);
    }
    records.extend(s.snapshot(NOW));
    let mut again = Server::new(config());
    assert_eq!(again.restore(&records), 0);
    for (mac, a) in (1..=20).zip(addrs) {
        let (offer, _) = exchange(
            &mut again,
            &client_msg(MessageType::Discover, mac, vec![]),
            NOW + 10,
        );
        assert_eq!(offer.unwrap().0.yiaddr(), a, "client {mac} after restart");
    }
    // Expired leases too, long after.
    let (offer, _) = exchange(
        &mut again,
        &client_msg(MessageType::Discover, 5, vec![]),
        NOW + 86_400 * 30,
    );
    assert_eq!(
        offer.unwrap().0.yiaddr(),
        s.pool()
            .lease_of(&ClientKey::Hw(vec![2, 0, 0, 0, 0, 5]))
            .unwrap()
            .0
    );
}

#[test]
fn leases_survive_a_crash_through_the_log_file() {
    use crate::dhcp::leases::LeaseLog;
    use std::io::Write as _;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let mut addrs = Vec::new();
    {
        let (mut log, _) = LeaseLog::open(&path).unwrap();
        let mut s = Server::new(config());
        for mac in 1..=10 {
            let (offer, _) = exchange(&mut s, &client_msg(MessageType::Discover, mac, vec![]), NOW);
            let a = offer.unwrap().0.yiaddr();
            let req = client_msg(
                MessageType::Request,
                mac,
                vec![
                    DhcpOption::ServerIdentifier(SERVER),
                    DhcpOption::RequestedIpAddress(a),
                ],
            );
            let (_, record) = exchange(&mut s, &req, NOW);
            log.append(&record.unwrap());
            addrs.push(a);
        }
        log.commit().unwrap();
        // Killed here, in the middle of writing the next record.
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(br#"{"kind":"lease","ip":"192.168"#)
        .unwrap();
    let (mut log, loaded) = LeaseLog::open(&path).unwrap();
    assert!(loaded.torn_tail);
    let mut s = Server::new(config());
    assert_eq!(s.restore(&loaded.records), 0);
    log.compact(s.snapshot(NOW + 60)).unwrap();
    for (mac, a) in (1..=10).zip(addrs) {
        // INIT-REBOOT after the restart: the same address, acknowledged.
        let req = client_msg(
            MessageType::Request,
            mac,
            vec![DhcpOption::RequestedIpAddress(a)],
        );
        let (reply, _) = exchange(&mut s, &req, NOW + 60);
        let ack = reply.unwrap().0;
        assert_eq!(
            (kind(&ack), ack.yiaddr()),
            (MessageType::Ack, a),
            "client {mac}"
        );
    }
}

#[test]
fn a_clock_step_forward_keeps_every_lease_and_its_address() {
    let mut s = Server::new(config());
    let first = dora(&mut s, 1, NOW);
    let lease_secs = s.config().lease_time.as_secs();
    // The master's clock jumps ten days ahead (chrony reached a time source): without the shift every lease has ended,
    // and a newcomer would be offered an address still in use.
    let later = NOW + 10 * 86_400;
    s.clock_stepped(10 * 86_400);
    assert_eq!(s.pool().active(later), 1);
    let (_, l) = s
        .pool()
        .lease_of(&s.pool().leases().next().unwrap().1.client.clone())
        .unwrap();
    assert_eq!(l.expires, later + lease_secs);
    let newcomer = dora(&mut s, 2, later + 1);
    assert_ne!(
        newcomer, first,
        "the stepped clock gave away a held address"
    );
    // A step back shortens nothing and lengthens nothing either.
    s.clock_stepped(-(10 * 86_400));
    assert_eq!(s.pool().active(NOW + lease_secs - 1), 2);
    assert_eq!(s.pool().active(NOW + lease_secs + 2), 0);
}

#[test]
fn clock_watch_tells_a_step_from_time_passing() {
    let t0 = std::time::Instant::now();
    let mut w = ClockWatch::new(NOW, t0);
    // An hour passes: no step.
    assert_eq!(w.observe(NOW + 3600, t0 + Duration::from_secs(3600)), None);
    // A second of jitter: no step.
    assert_eq!(
        w.observe(NOW + 3602, t0 + Duration::from_millis(3_600_500)),
        None
    );
    // Ten seconds pass, and the wall clock jumps a week ahead meanwhile.
    assert_eq!(
        w.observe(NOW + 3612 + 7 * 86_400, t0 + Duration::from_secs(3610)),
        Some(7 * 86_400)
    );
    // And back by a day.
    assert_eq!(
        w.observe(NOW + 3620 + 6 * 86_400, t0 + Duration::from_secs(3618)),
        Some(-86_400)
    );
}
