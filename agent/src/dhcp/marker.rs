//! How a cluster-lab master marks its DHCP replies, so a booting node can tell it from any other DHCP server.
//!
//! Replies carry option 60 (vendor class identifier) = `cluster-lab` and option 43 (vendor-specific
//! information) holding sub-option 1 = the cluster name and, from a master that knows the cluster secret,
//! sub-option 2 = a 16-byte tag: HMAC-SHA256, under a key derived from the secret, of the reply's transaction id,
//! client hardware address, server identifier, offered address, message type and the cluster name. Any DHCP server
//! can copy the name; only a machine holding the secret can make the tag, and a tag is good for one reply to one
//! client only.

use dhcproto::v4::{DhcpOption, DhcpOptions, Message, OptionCode};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Vendor class identifier a cluster-lab master puts in every reply.
pub const VENDOR_CLASS: &[u8] = b"cluster-lab";
/// Sub-option of option 43 carrying the cluster name.
pub const SUBOPT_CLUSTER_NAME: u8 = 1;
/// Sub-option of option 43 carrying the tag.
pub const SUBOPT_TAG: u8 = 2;
const TAG_LEN: usize = 16;

/// The key that signs and checks markers: HKDF of the cluster secret ([`crate::secret::MARKER_LABEL`]).
#[derive(Debug, Clone)]
pub struct MarkerKey(crate::secret::HmacKey);

impl MarkerKey {
    pub fn from_secret(secret: &str) -> MarkerKey {
        MarkerKey(crate::secret::HmacKey::derive(
            crate::secret::MARKER_LABEL,
            secret,
        ))
    }

    /// The tag of `msg` (a reply) from the master of `cluster`.
    fn mac(&self, msg: &Message, cluster: &str) -> Hmac<Sha256> {
        let mut mac = self.0.hmac();
        mac.update(&msg.xid().to_be_bytes());
        mac.update(&[msg.chaddr().len() as u8]);
        mac.update(msg.chaddr());
        let server_id = match msg.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(id)) => id.octets(),
            _ => [0; 4],
        };
        mac.update(&server_id);
        mac.update(&msg.yiaddr().octets());
        mac.update(&[msg.opts().msg_type().map_or(0, u8::from)]);
        mac.update(cluster.as_bytes());
        mac
    }
}

/// Mark `reply` as coming from the master of `cluster`, tag included: call it last, once every field the tag
/// covers is set.
pub fn sign(reply: &mut Message, cluster: &str, key: &MarkerKey) {
    let tag = key.mac(reply, cluster).finalize().into_bytes();
    let name = &cluster.as_bytes()[..cluster.len().min(255)];
    let mut vendor = Vec::with_capacity(name.len() + TAG_LEN + 4);
    vendor.extend_from_slice(&[SUBOPT_CLUSTER_NAME, name.len() as u8]);
    vendor.extend_from_slice(name);
    vendor.extend_from_slice(&[SUBOPT_TAG, TAG_LEN as u8]);
    vendor.extend_from_slice(&tag[..TAG_LEN]);
    reply
        .opts_mut()
        .insert(DhcpOption::ClassIdentifier(VENDOR_CLASS.to_vec()));
    reply
        .opts_mut()
        .insert(DhcpOption::VendorExtensions(vendor));
}

/// Whether `msg` carries a marker for `cluster` whose tag verifies under `key`.
pub fn verify(msg: &Message, cluster: &str, key: &MarkerKey) -> bool {
    let Some(DhcpOption::VendorExtensions(v)) = msg.opts().get(OptionCode::VendorExtensions) else {
        return false;
    };
    let Some(tag) = sub_option(v, SUBOPT_TAG) else {
        return false;
    };
    key.mac(msg, cluster).verify_truncated_left(tag).is_ok()
}

/// Options to add to a reply from the master of `cluster_name`.
pub fn options(cluster_name: &str) -> Vec<DhcpOption> {
    let mut vendor = Vec::with_capacity(cluster_name.len() + 2);
    vendor.push(SUBOPT_CLUSTER_NAME);
    vendor.push(cluster_name.len().min(255) as u8);
    vendor.extend_from_slice(&cluster_name.as_bytes()[..cluster_name.len().min(255)]);
    vec![
        DhcpOption::ClassIdentifier(VENDOR_CLASS.to_vec()),
        DhcpOption::VendorExtensions(vendor),
    ]
}

/// What a reply says about its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// Not a cluster-lab master (dnsmasq, kea, a home router, ...).
    Foreign,
    /// A cluster-lab master of the named cluster.
    ClusterLab { cluster: String },
}

/// Read the marker from a reply's options.
pub fn read(opts: &DhcpOptions) -> Sender {
    let is_ours = matches!(opts.get(OptionCode::ClassIdentifier),
        Some(DhcpOption::ClassIdentifier(v)) if v.as_slice() == VENDOR_CLASS);
    if !is_ours {
        return Sender::Foreign;
    }
    let cluster = match opts.get(OptionCode::VendorExtensions) {
        Some(DhcpOption::VendorExtensions(v)) => sub_option(v, SUBOPT_CLUSTER_NAME)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    };
    Sender::ClusterLab { cluster }
}

/// Find sub-option `code` in an option-43 TLV blob; malformed blobs yield `None`.
fn sub_option(mut data: &[u8], code: u8) -> Option<&[u8]> {
    while let [c, rest @ ..] = data {
        match *c {
            0 => data = rest,
            255 => return None,
            _ => {
                let (&len, rest) = rest.split_first()?;
                let value = rest.get(..len as usize)?;
                if *c == code {
                    return Some(value);
                }
                data = &rest[len as usize..];
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_round_trips() {
        let mut opts = DhcpOptions::new();
        for o in options("lab-1") {
            opts.insert(o);
        }
        assert_eq!(
            read(&opts),
            Sender::ClusterLab {
                cluster: "lab-1".into()
            }
        );
    }

    #[test]
    fn other_vendor_class_is_foreign() {
        let mut opts = DhcpOptions::new();
        opts.insert(DhcpOption::ClassIdentifier(b"MSFT 5.0".to_vec()));
        assert_eq!(read(&opts), Sender::Foreign);
        assert_eq!(read(&DhcpOptions::new()), Sender::Foreign);
    }

    #[test]
    fn truncated_vendor_blob_is_tolerated() {
        assert_eq!(sub_option(&[1, 10, b'a'], 1), None);
        assert_eq!(
            sub_option(&[2, 1, b'x', 1, 2, b'o', b'k'], 1),
            Some(&b"ok"[..])
        );
    }

    fn reply(xid: u32, chaddr: u8) -> Message {
        use dhcproto::v4::{MessageType, Opcode};
        let mut m = Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_xid(xid)
            .set_chaddr(&[2, 0, 0, 0, 0, chaddr])
            .set_yiaddr(std::net::Ipv4Addr::new(192, 168, 200, 101));
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Offer));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(std::net::Ipv4Addr::new(
                192, 168, 200, 1,
            )));
        m
    }

    #[test]
    fn a_signed_marker_verifies_only_for_its_reply_cluster_and_key() {
        let key = MarkerKey::from_secret("0123456789abcdef0123456789abcdef");
        let other = MarkerKey::from_secret("fedcba9876543210fedcba9876543210");
        let mut m = reply(7, 1);
        sign(&mut m, "lab", &key);
        assert_eq!(
            read(m.opts()),
            Sender::ClusterLab {
                cluster: "lab".into()
            }
        );
        assert!(verify(&m, "lab", &key));
        assert!(!verify(&m, "lab", &other), "another cluster's key");
        assert!(!verify(&m, "lab2", &key), "another cluster name");
        // The same tag on another reply: another transaction, another client, another address.
        for mut copy in [reply(8, 1), reply(7, 2)] {
            copy.opts_mut()
                .insert(m.opts().get(OptionCode::VendorExtensions).unwrap().clone());
            assert!(!verify(&copy, "lab", &key));
        }
        let mut moved = m.clone();
        moved.set_yiaddr(std::net::Ipv4Addr::new(192, 168, 200, 102));
        assert!(!verify(&moved, "lab", &key));
        // The name alone, as any server can copy it, does not verify.
        let mut copied = reply(7, 1);
        for o in options("lab") {
            copied.opts_mut().insert(o);
        }
        assert_eq!(
            read(copied.opts()),
            Sender::ClusterLab {
                cluster: "lab".into()
            }
        );
        assert!(!verify(&copied, "lab", &key));
    }
}
