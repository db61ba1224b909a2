//! Hostile input: every malformed packet is an error, never a panic.

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::Encodable;

use super::*;
use crate::dhcp::server::{Server, ServerConfig};

fn discover() -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(1)
        .set_chaddr(&[2, 0, 0, 0, 0, 1]);
    m.opts_mut()
        .insert(DhcpOption::MessageType(MessageType::Discover));
    m.opts_mut()
        .insert(DhcpOption::ClientIdentifier(vec![1, 2, 0, 0, 0, 0, 1]));
    m.opts_mut().insert(DhcpOption::Hostname("Node-1".into()));
    m.to_vec().unwrap()
}

/// xorshift64*: a fixed seed keeps the fuzz loop deterministic.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn valid_discover_parses() {
    let req = parse(&discover()).unwrap();
    assert_eq!(req.kind, MessageType::Discover);
    assert_eq!(req.client.key, ClientKey::Id(vec![1, 2, 0, 0, 0, 0, 1]));
    assert_eq!(req.client.hw, vec![2, 0, 0, 0, 0, 1]);
    assert_eq!(req.client.hostname.as_deref(), Some("node-1"));
}

#[test]
fn structural_errors_are_named() {
    let good = discover();
    assert_eq!(parse(&good[..100]).unwrap_err(), Malformed::Short(100));
    let mut b = good.clone();
    b[0] = 2;
    assert_eq!(parse(&b).unwrap_err(), Malformed::NotRequest(2));
    let mut b = good.clone();
    b[2] = 17;
    assert_eq!(parse(&b).unwrap_err(), Malformed::HardwareLength(17));
    let mut b = good.clone();
    b[236] = 0;
    assert_eq!(parse(&b).unwrap_err(), Malformed::Cookie);
    // Options: message type only, with a length running past the end.
    let mut b = good[..HEADER_LEN].to_vec();
    b.extend([53, 200, 1]);
    assert_eq!(parse(&b).unwrap_err(), Malformed::TruncatedOption(53));
    let mut b = good[..HEADER_LEN].to_vec();
    b.extend([53, 2, 1, 1, 255]);
    assert_eq!(
        parse(&b).unwrap_err(),
        Malformed::OptionLength { code: 53, len: 2 }
    );
    let mut b = good[..HEADER_LEN].to_vec();
    b.extend([12, 1, b'x', 255]);
    assert_eq!(parse(&b).unwrap_err(), Malformed::NoMessageType);
    // Options the decoder asserts on, split in two (RFC 3396 concatenation) to hide the length.
    let mut b = good[..HEADER_LEN].to_vec();
    b.extend([53, 1, 1, 81, 1, 0, 81, 1, 0, 255]);
    assert_eq!(
        parse(&b).unwrap_err(),
        Malformed::OptionLength { code: 81, len: 2 }
    );
    // A server's message on the server port.
    let mut b = good[..HEADER_LEN].to_vec();
    b.extend([53, 1, 2, 255]);
    assert_eq!(
        parse(&b).unwrap_err(),
        Malformed::NotClientMessage(MessageType::Offer)
    );
    // No client identifier and an all-zero hardware address.
    let mut b = good[..HEADER_LEN].to_vec();
    b[28..44].fill(0);
    b.extend([53, 1, 1, 255]);
    assert_eq!(parse(&b).unwrap_err(), Malformed::NoClient);
}

#[test]
fn missing_end_option_is_tolerated() {
    let good = discover();
    let mut b = good[..HEADER_LEN].to_vec();
    b.extend([53, 1, 1]);
    assert_eq!(parse(&b).unwrap().kind, MessageType::Discover);
}

#[test]
fn hostile_packets_never_panic() {
    let mut server = Server::new(ServerConfig::from_settings(
        &crate::config::Settings::default(),
        std::net::Ipv4Addr::new(192, 168, 200, 1),
    ));
    let seeds: Vec<Vec<u8>> = {
        let mut v = vec![discover()];
        let mut req = Message::default();
        req.set_opcode(Opcode::BootRequest)
            .set_chaddr(&[2, 0, 0, 0, 0, 2]);
        req.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        req.opts_mut()
            .insert(DhcpOption::RequestedIpAddress([192, 168, 200, 150].into()));
        req.opts_mut()
            .insert(DhcpOption::ServerIdentifier([192, 168, 200, 1].into()));
        v.push(req.to_vec().unwrap());
        v
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut handled = 0;
    // CLUSTER_LAB_FUZZ_ITERATIONS runs a longer fuzz by hand.
    let iterations: u32 = std::env::var("CLUSTER_LAB_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    for i in 0..iterations {
        let buf: Vec<u8> = match i % 4 {
            // Pure noise of any length.
            0 => (0..rng.below(700)).map(|_| rng.next() as u8).collect(),
            // A valid header, a message type, then random options: plausible codes and lengths, random bodies.
            1 => {
                let mut b = seeds[0][..HEADER_LEN].to_vec();
                b.extend([53, 1, 1 + rng.below(8) as u8]);
                for _ in 0..rng.below(12) {
                    let len = if rng.below(4) == 0 {
                        rng.below(256)
                    } else {
                        rng.below(8)
                    };
                    b.push(rng.next() as u8);
                    b.push(len as u8);
                    b.extend((0..len).map(|_| rng.next() as u8));
                }
                if rng.below(2) == 0 {
                    b.push(255);
                }
                b
            }
            // Valid packets with a few bytes flipped.
            2 => {
                let mut b = seeds[rng.below(seeds.len())].clone();
                for _ in 0..1 + rng.below(8) {
                    let at = rng.below(b.len());
                    b[at] = rng.next() as u8;
                }
                b
            }
            // Valid packets cut short or extended with noise.
            _ => {
                let mut b = seeds[rng.below(seeds.len())].clone();
                b.truncate(rng.below(b.len() + 1));
                b.extend((0..rng.below(64)).map(|_| rng.next() as u8));
                b
            }
        };
        if let Ok(req) = parse(&buf) {
            let out = server.handle(&req, 1_700_000_000 + u64::from(i));
            if let Some(reply) = out.reply {
                reply.msg.to_vec().expect("replies encode");
            }
            handled += 1;
        }
    }
    assert!(
        handled > 100,
        "mutated valid packets still reach the server ({handled})"
    );
}
