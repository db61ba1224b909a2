//! Running the master election on the network: the state machine of [`crate::election`] fed by a real DHCP probe,
//! `arping -D`, and the claim socket.

use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::election::socket::ClaimSocket;
use crate::election::switch_check::{Sightings, TagsDropped};
use crate::election::{Claim, ClusterRole, Election, Input, Mac, Output, Timing};
use crate::net::arp::{self, ArpProbe};

/// Everything the election needs to know about this machine and its VLAN.
#[derive(Debug, Clone)]
pub struct ElectionSetup {
    pub interface: String,
    pub cluster: String,
    pub mac: Mac,
    pub master: Ipv4Addr,
    pub timing: Timing,
    /// ARP probes sent before claiming the master address.
    pub arp_count: u32,
    /// Give up after this long (a foreign host holding the master address would otherwise keep us waiting forever).
    pub give_up_after: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("election on {interface}: {source}")]
    Network {
        interface: String,
        source: anyhow::Error,
    },
    #[error(
        "election on {interface}: no decision after {waited:?} ({rounds} back-offs): the master address {master} \
         answers ARP but no cluster-lab master of cluster {cluster:?} answers DHCP; free that address or set \
         role = \"node\" / \"master\" in cluster-lab.toml"
    )]
    Stuck {
        interface: String,
        master: Ipv4Addr,
        cluster: String,
        waited: Duration,
        rounds: u32,
    },
    #[error(transparent)]
    TagsDropped(TagsDropped),
}

/// The untagged side of the election (see [`crate::election::switch_check`]): the claim socket on the home LAN
/// and the VLAN's id, for the message.
#[derive(Debug, Clone, Copy)]
pub struct HomeLan<'a> {
    pub socket: &'a ClaimSocket,
    pub vlan_id: u16,
}

/// Decide this machine's role. `probe` runs one DHCP probe on the VLAN and says whether a master of this cluster
/// answered. With `home_lan`, every claim is sent untagged there too, and the machine does not become master if it
/// heard its cluster only there ([`ElectionError::TagsDropped`]).
pub async fn elect<P, F>(
    setup: &ElectionSetup,
    socket: &ClaimSocket,
    home_lan: Option<HomeLan<'_>>,
    mut probe: P,
) -> Result<ClusterRole, ElectionError>
where
    P: FnMut() -> F,
    F: Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    let net_err = |source: anyhow::Error| ElectionError::Network {
        interface: setup.interface.clone(),
        source,
    };
    let now = || started.elapsed().as_millis() as u64;
    let mut election = Election::new(setup.mac, &setup.cluster, setup.timing);
    let mut sightings = Sightings::new(&setup.cluster, setup.mac);
    let mut pending = election.handle(now(), Input::Start);
    loop {
        // Carry out what the state machine asked for; results come back as new inputs.
        while let Some(out) = (!pending.is_empty()).then(|| pending.remove(0)) {
            let input = match out {
                Output::Decided(role) => {
                    if let (ClusterRole::Master, Some(lan)) = (role, home_lan) {
                        for claim in lan.socket.drain() {
                            sightings.untagged(&claim);
                        }
                        if let Some(dropped) = TagsDropped::judge(
                            &sightings,
                            lan.socket.interface(),
                            &setup.interface,
                            lan.vlan_id,
                        ) {
                            return Err(ElectionError::TagsDropped(dropped));
                        }
                    }
                    tracing::info!(
                        ?role,
                        rounds = election.rounds,
                        waited_ms = now(),
                        "election decided"
                    );
                    return Ok(role);
                }
                Output::Announce(claim) => {
                    socket
                        .announce(&claim)
                        .await
                        .map_err(|e| net_err(e.into()))?;
                    if let Some(lan) = home_lan {
                        // Best effort: the home LAN copy only serves the switch check.
                        if let Err(e) = lan.socket.announce(&claim).await {
                            tracing::debug!(error = %e, "untagged claim not sent");
                        }
                    }
                    tracing::debug!(mac = %claim.mac, master = claim.master, "claim sent");
                    None
                }
                Output::Probe => {
                    tracing::info!(interface = %setup.interface, "probing for a cluster-lab master");
                    // A master's claim heard meanwhile decides at once: the probe is dropped.
                    let Some(found) = with_claims(
                        socket,
                        &mut election,
                        &mut sightings,
                        &mut pending,
                        now,
                        probe(),
                    )
                    .await
                    else {
                        continue;
                    };
                    Some(Input::ProbeResult {
                        master_found: found.map_err(net_err)?,
                    })
                }
                Output::ArpProbe => {
                    tracing::info!(address = %setup.master, "checking that nobody holds the master address");
                    let probe = arp::probe(&setup.interface, setup.master, setup.arp_count);
                    let Some(result) = with_claims(
                        socket,
                        &mut election,
                        &mut sightings,
                        &mut pending,
                        now,
                        probe,
                    )
                    .await
                    else {
                        continue;
                    };
                    let taken = result.map_err(|e| net_err(e.into()))? == ArpProbe::Taken;
                    Some(Input::ArpResult { taken })
                }
            };
            if let Some(input) = input {
                let more = election.handle(now(), input);
                pending.extend(more);
            }
        }
        if started.elapsed() > setup.give_up_after {
            return Err(ElectionError::Stuck {
                interface: setup.interface.clone(),
                master: setup.master,
                cluster: setup.cluster.clone(),
                waited: started.elapsed(),
                rounds: election.rounds,
            });
        }
        // Wait for the next timer or a claim.
        let deadline = election.deadline().unwrap_or(now() + 1000);
        let sleep = Duration::from_millis(deadline.saturating_sub(now()));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => pending.extend(election.handle(now(), Input::Tick)),
            claim = socket.receive() => {
                let claim = claim.map_err(|e| net_err(e.into()))?;
                sightings.tagged(&claim);
                pending.extend(election.handle(now(), Input::Claim(claim)));
            }
        }
    }
}

/// Await `work` while still listening to claims. A master's claim heard meanwhile ends the election at once: `work`
/// is dropped unfinished and `None` returned (the decision is in `pending`). Without this a node would hear the
/// master only when its 3 s DHCP probe ended.
async fn with_claims<T>(
    socket: &ClaimSocket,
    election: &mut Election,
    sightings: &mut Sightings,
    pending: &mut Vec<Output>,
    now: impl Fn() -> u64,
    work: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return Some(result),
            claim = socket.receive() => {
                if let Ok(claim) = claim {
                    sightings.tagged(&claim);
                    pending.extend(election.handle(now(), Input::Claim(claim)));
                    if matches!(election.state(), crate::election::State::Decided(_)) {
                        return None;
                    }
                }
            }
        }
    }
}

/// What an elected master broadcasts until its DHCP service answers: every candidate that hears it becomes a node.
pub async fn announce_master(socket: &ClaimSocket, claim: &Claim, every: Duration) {
    loop {
        if let Err(e) = socket.announce(claim).await {
            tracing::warn!(error = %e, "announcing master claim");
        }
        tokio::time::sleep(every).await;
    }
}
