//! How a cluster-lab master marks its DHCP replies, so a booting node can tell it from any other DHCP server.
//!
//! Replies carry option 60 (vendor class identifier) = `cluster-lab` and option 43 (vendor-specific
//! information) holding sub-option 1 = the cluster name.

use dhcproto::v4::{DhcpOption, DhcpOptions, OptionCode};

/// Vendor class identifier a cluster-lab master puts in every reply.
pub const VENDOR_CLASS: &[u8] = b"cluster-lab";
/// Sub-option of option 43 carrying the cluster name.
pub const SUBOPT_CLUSTER_NAME: u8 = 1;

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
}
