//! Is the switch carrying the VLAN? A switch that drops 802.1Q-tagged frames (a "smart" switch without VLAN 200 on
//! a port, some powerline adapters) cuts the cluster's VLAN while the home LAN still works. A candidate behind it
//! hears no master and no claims on the VLAN and would become a second master.
//!
//! So every candidate sends each claim twice: on the VLAN and, untagged, on the home LAN (UDP port [`PORT`], the
//! same signed format, the same key). A running master's `cluster-lab dhcpd` answers every claim it hears on the
//! home LAN with its own master claim there ([`answer`]). Before a candidate takes the master role it looks at
//! what it heard: a machine of its own cluster heard untagged but never on the VLAN means tagged frames do not get
//! through between them, and it stops with [`TagsDropped`] instead of becoming master.
//!
//! [`Sightings`] is the bookkeeping, without sockets or clocks.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::election::socket::ClaimSocket;
use crate::election::{Claim, Mac};

/// UDP port of the untagged copies of claims on the home LAN.
pub const PORT: u16 = 6248;

/// Which machines of this cluster were heard where.
#[derive(Debug, Clone)]
pub struct Sightings {
    cluster: String,
    /// This machine: its own broadcasts come back to it and do not count.
    own: Mac,
    /// MAC → (heard on the VLAN, heard untagged, heard untagged as master).
    peers: BTreeMap<Mac, (bool, bool, bool)>,
}

impl Sightings {
    pub fn new(cluster: &str, own: Mac) -> Sightings {
        Sightings {
            cluster: cluster.to_owned(),
            own,
            peers: BTreeMap::new(),
        }
    }

    /// A claim heard on the VLAN.
    pub fn tagged(&mut self, claim: &Claim) {
        if self.counts(claim) {
            self.peers.entry(claim.mac).or_default().0 = true;
        }
    }

    /// A claim heard untagged on the home LAN.
    pub fn untagged(&mut self, claim: &Claim) {
        if self.counts(claim) {
            let seen = self.peers.entry(claim.mac).or_default();
            seen.1 = true;
            seen.2 |= claim.master;
        }
    }

    fn counts(&self, claim: &Claim) -> bool {
        claim.cluster == self.cluster && claim.mac != self.own
    }

    /// The machines heard untagged and never on the VLAN (masters first), if any.
    pub fn untagged_only(&self) -> Vec<(Mac, bool)> {
        let mut only: Vec<(Mac, bool)> = self
            .peers
            .iter()
            .filter(|(_, (tagged, untagged, _))| *untagged && !*tagged)
            .map(|(mac, (_, _, master))| (*mac, *master))
            .collect();
        only.sort_by_key(|(mac, master)| (!master, *mac));
        only
    }
}

/// The machine heard its cluster on the home LAN but not on the VLAN: tagged frames are dropped on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the switch seems to drop VLAN-tagged frames: {heard} of cluster {cluster:?} answered untagged on {lan} but \
     nothing of the cluster gets through on {vlan} (VLAN {vlan_id}); becoming a second master would split the \
     cluster, so this machine stops here. Check the switch (or powerline adapter) between this machine and \
     {first}: a managed switch must carry VLAN {vlan_id} tagged on both ports. To confirm, on this machine and on \
     the master run `ip link add link {lan} name test.{vlan_id} type vlan id {vlan_id}`, give each an address in \
     one unused subnet (`ip addr add 10.99.0.1/24 dev test.{vlan_id}`, .2 on the other, `ip link set \
     test.{vlan_id} up`) and ping: no answer means the tags are dropped. Then reboot this machine"
)]
pub struct TagsDropped {
    pub cluster: String,
    pub lan: String,
    pub vlan: String,
    pub vlan_id: u16,
    /// What was heard, for the message: "the master (MAC …)" or "machines …".
    pub heard: String,
    /// The first machine heard, for the message.
    pub first: String,
}

impl TagsDropped {
    /// The verdict on what was heard, `None` when nothing speaks against the VLAN.
    pub fn judge(
        sightings: &Sightings,
        lan: &str,
        vlan: &str,
        vlan_id: u16,
    ) -> Option<TagsDropped> {
        let only = sightings.untagged_only();
        let (first_mac, first_master) = *only.first()?;
        let macs = only
            .iter()
            .map(|(m, _)| m.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let heard = if first_master {
            format!("its master ({first_mac})")
        } else if only.len() == 1 {
            format!("machine {macs}")
        } else {
            format!("machines {macs}")
        };
        Some(TagsDropped {
            cluster: sightings.cluster.clone(),
            lan: lan.to_owned(),
            vlan: vlan.to_owned(),
            vlan_id,
            heard,
            first: if first_master {
                format!("the master ({first_mac})")
            } else {
                first_mac.to_string()
            },
        })
    }
}

/// The master's side: answer every claim of another machine heard on the home LAN with `ours` (a master claim), at
/// most once per `every`. Runs until the socket fails.
pub async fn answer(socket: &ClaimSocket, ours: &Claim, every: Duration) -> anyhow::Result<()> {
    let mut last: Option<Instant> = None;
    loop {
        let claim = socket.receive().await?;
        if claim.mac == ours.mac || claim.master || claim.cluster != ours.cluster {
            continue;
        }
        if last.is_some_and(|t| t.elapsed() < every) {
            continue;
        }
        tracing::info!(
            from = %claim.mac,
            "a candidate of this cluster claims on the home LAN: answering that this machine is the master"
        );
        socket.announce(ours).await?;
        last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(last: u8, master: bool) -> Claim {
        Claim {
            cluster: "lab".into(),
            mac: Mac([2, 0, 0, 0, 0, last]),
            master,
        }
    }

    #[test]
    fn a_working_switch_carries_both() {
        let mut s = Sightings::new("lab", Mac([2, 0, 0, 0, 0, 0x0a]));
        s.untagged(&claim(1, false));
        s.tagged(&claim(1, false));
        s.tagged(&claim(2, false));
        assert!(TagsDropped::judge(&s, "eth0", "eth0.200", 200).is_none());
    }

    #[test]
    fn a_master_heard_only_untagged_means_tags_are_dropped() {
        let mut s = Sightings::new("lab", Mac([2, 0, 0, 0, 0, 0x0a]));
        s.untagged(&claim(3, false));
        s.untagged(&claim(9, true));
        let v = TagsDropped::judge(&s, "eth0", "eth0.200", 200).unwrap();
        assert_eq!(v.first, "the master (02:00:00:00:00:09)");
        let text = v.to_string();
        assert!(text.contains("drop VLAN-tagged frames"), "{text}");
        assert!(text.contains("untagged on eth0"), "{text}");
        assert!(text.contains("on eth0.200 (VLAN 200)"), "{text}");
        assert!(
            text.contains("ip link add link eth0 name test.200 type vlan id 200"),
            "{text}"
        );
    }

    #[test]
    fn other_clusters_and_our_own_echo_do_not_count() {
        let mut s = Sightings::new("lab", Mac([2, 0, 0, 0, 0, 0x0a]));
        s.untagged(&claim(0x0a, false));
        s.untagged(&Claim {
            cluster: "other".into(),
            ..claim(4, true)
        });
        assert!(s.untagged_only().is_empty());
    }

    #[test]
    fn candidates_heard_only_untagged_are_named() {
        let mut s = Sightings::new("lab", Mac([2, 0, 0, 0, 0, 0x0a]));
        s.untagged(&claim(5, false));
        s.untagged(&claim(6, false));
        let v = TagsDropped::judge(&s, "eth0", "eth0.200", 200).unwrap();
        assert_eq!(v.heard, "machines 02:00:00:00:00:05, 02:00:00:00:00:06");
    }
}
