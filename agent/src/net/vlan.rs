//! The cluster VLAN interface (`eth0.200`), created over netlink and brought up.
//!
//! On first boot the agent creates the VLAN itself (networkd only adopts it once the role is known and its files
//! are written); after that, networkd recreates it on every boot from `10-cluster-lab-<vlan>.netdev`.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkUnspec, LinkVlan};

/// What the kernel holds under the VLAN's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// The right VLAN on the right parent; `up` tells whether it is administratively up.
    Ours { index: u32, up: bool },
    /// Something else has the name.
    Other { description: String },
}

#[derive(Debug, thiserror::Error)]
pub enum VlanError {
    #[error("netlink: {0}")]
    Connect(std::io::Error),
    #[error("{interface}: interface not found (is `interface` in cluster-lab.toml right?)")]
    NoParent { interface: String },
    #[error("{name} exists but is {description}, not VLAN {id} on {parent}; delete it (`ip link del {name}`) and retry")]
    Conflict {
        name: String,
        description: String,
        id: u16,
        parent: String,
    },
    #[error(
        "creating {name} (VLAN {id} on {parent}): the kernel has no 802.1Q support (module 8021q)"
    )]
    NoKernelSupport {
        name: String,
        id: u16,
        parent: String,
    },
    #[error("{action} {name}: {source}")]
    Netlink {
        action: &'static str,
        name: String,
        source: rtnetlink::Error,
    },
}

/// Classify the link message found under the VLAN's name.
pub fn classify(msg: &LinkMessage, parent_index: u32, id: u16) -> Existing {
    let mut kind = None;
    let mut vlan_id = None;
    let mut link = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Link(i) => link = Some(*i),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vlan(v)) => {
                            vlan_id = v.iter().find_map(|x| match x {
                                InfoVlan::Id(id) => Some(*id),
                                _ => None,
                            })
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if kind == Some(InfoKind::Vlan) && vlan_id == Some(id) && link == Some(parent_index) {
        Existing::Ours {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
        }
    } else {
        let description = match (kind, vlan_id) {
            (Some(InfoKind::Vlan), Some(v)) => {
                format!("VLAN {v} on link index {}", link.unwrap_or(0))
            }
            (Some(k), _) => format!("a {k:?} link"),
            (None, _) => "a physical link".to_string(),
        };
        Existing::Other { description }
    }
}

async fn find(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, VlanError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(msg) => Ok(msg),
        // The kernel answers ENODEV for an unknown name.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -ENODEV => Ok(None),
        Err(source) => Err(VlanError::Netlink {
            action: "looking up",
            name: name.into(),
            source,
        }),
    }
}

const ENODEV: i32 = 19;
const EOPNOTSUPP: i32 = 95;

/// Make sure VLAN `id` exists on `parent` as `name` with `mtu`, and that both are up. Safe to run again.
/// Returns whether anything was created.
pub async fn ensure(parent: &str, name: &str, id: u16, mtu: u32) -> Result<bool, VlanError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(VlanError::Connect)?;
    // The connection future does the I/O; without spawning it every request hangs.
    let conn = tokio::spawn(connection);
    let result = ensure_with(&handle, parent, name, id, mtu).await;
    conn.abort();
    result
}

async fn ensure_with(
    handle: &Handle,
    parent: &str,
    name: &str,
    id: u16,
    mtu: u32,
) -> Result<bool, VlanError> {
    let parent_msg = find(handle, parent)
        .await?
        .ok_or_else(|| VlanError::NoParent {
            interface: parent.into(),
        })?;
    let parent_index = parent_msg.header.index;
    if !parent_msg.header.flags.contains(LinkFlags::Up) {
        set_up(handle, parent, parent_index).await?;
    }
    let created = match find(handle, name).await? {
        Some(msg) => match classify(&msg, parent_index, id) {
            Existing::Ours { up: true, .. } => false,
            Existing::Ours { index, up: false } => {
                set_up(handle, name, index).await?;
                false
            }
            Existing::Other { description } => {
                return Err(VlanError::Conflict {
                    name: name.into(),
                    description,
                    id,
                    parent: parent.into(),
                })
            }
        },
        None => {
            let msg = LinkVlan::new(name, parent_index, id).mtu(mtu).up().build();
            handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(|source| match &source {
                    rtnetlink::Error::NetlinkError(e) if e.raw_code() == -EOPNOTSUPP => {
                        VlanError::NoKernelSupport {
                            name: name.into(),
                            id,
                            parent: parent.into(),
                        }
                    }
                    _ => VlanError::Netlink {
                        action: "creating",
                        name: name.into(),
                        source,
                    },
                })?;
            true
        }
    };
    Ok(created)
}

const EEXIST: i32 = 17;

/// Put `address/prefix` on interface `name` now (networkd's file makes it permanent). Returns whether it was added;
/// an address already there is fine. The master uses it right after its own ARP probe for the address, instead of
/// waiting for networkd's duplicate address detection to probe again (seconds).
pub async fn add_address(name: &str, address: Ipv4Addr, prefix: u8) -> Result<bool, VlanError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(VlanError::Connect)?;
    let conn = tokio::spawn(connection);
    let result = async {
        let link = find(&handle, name)
            .await?
            .ok_or_else(|| VlanError::NoParent {
                interface: name.into(),
            })?;
        match handle
            .address()
            .add(link.header.index, IpAddr::V4(address), prefix)
            .execute()
            .await
        {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -EEXIST => Ok(false),
            Err(source) => Err(VlanError::Netlink {
                action: "adding an address to",
                name: name.into(),
                source,
            }),
        }
    }
    .await;
    conn.abort();
    result
}

async fn set_up(handle: &Handle, name: &str, index: u32) -> Result<(), VlanError> {
    let msg = LinkUnspec::new_with_index(index).up().build();
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|source| VlanError::Netlink {
            action: "bringing up",
            name: name.into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_its_own_vlan_from_the_builders_message() {
        let mut msg = LinkVlan::new("eth0.200", 2, 200).mtu(1496).up().build();
        msg.header.index = 7;
        assert_eq!(
            classify(&msg, 2, 200),
            Existing::Ours { index: 7, up: true }
        );
        assert!(matches!(classify(&msg, 3, 200), Existing::Other { .. }));
        let Existing::Other { description } = classify(&msg, 2, 300) else {
            panic!("wrong id accepted");
        };
        assert_eq!(description, "VLAN 200 on link index 2");
    }

    #[test]
    fn a_plain_link_with_the_name_is_a_conflict() {
        let msg = LinkUnspec::new_with_name("eth0.200").build();
        assert!(matches!(classify(&msg, 2, 200), Existing::Other { .. }));
    }
}
