//! Swarm overlay networks sized for the cluster VLAN.
//!
//! VXLAN adds 50 bytes. The VLAN has MTU 1496 (see `networkd::vlan_mtu`), so interfaces inside overlay networks must
//! be 1446 or the kernel fragments every full-size VXLAN packet. Docker's overlay driver reads the driver option
//! `com.docker.network.driver.mtu` as the MTU of the *underlay* and gives the overlay interfaces that minus 50
//! (libnetwork's `maxMTU`; measured in `root_ingress`: option 1446 gives 1396-byte interfaces). Without the option
//! it assumes 1500 and gives 1450. So overlay networks on the VLAN take the option 1496 ([`driver_mtu_option`]).
//!
//! The swarm's `ingress` network (the routing mesh) is created by `swarm init` without the option.
//! [`ensure_ingress_mtu`] replaces it, once, with one that has it. Three things make that replacement delicate
//! right after `swarm init` (seen with dockerd 20.10 in `root_ingress` and `root_firstboot`):
//!
//! - The engine lists the swarm's networks merged with its own local copies. The local copy of the default ingress
//!   is made by the node's agent once the leader's allocator has given the node an address on it; it is released
//!   only when the agent hears that the node lost that address. Removing the default while the agent is still
//!   setting it up leaves a local copy behind, listed beside the replacement: two networks named `ingress`.
//! - The allocator gives nodes an address on an ingress network only when the node object changes, not when the
//!   network is created. After a replacement the manager has no routing-mesh sandbox until its node object is
//!   updated, and a stale local copy of the old ingress stays until then too.
//! - The swarm store holds one ingress network at most (a second create is refused), so the duplicate is always
//!   the engine's stale local copy, never a second swarm network.
//!
//! Hence the order below: wait for leadership and for the default ingress to be allocated and set up on this node;
//! remove it and wait until the engine lists no `ingress` at all; create ours; touch this node's object so the
//! allocator attaches it (which also makes the agent release any stale copy); wait until ours is set up here; then
//! watch for a settle period and remove any other `ingress` by ID. Every wait is bounded. Once the default is
//! removed, a failure never leaves the swarm without an ingress network: creating ours is retried, and if it still
//! fails a default-MTU ingress is created again.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bollard::models::{Network, NetworkCreateRequest, NodeSpec};
use bollard::query_parameters::{InspectNetworkOptions, ListNetworksOptions};

use crate::docker::swarm::{Outcome, Swarm, SwarmError};

/// VXLAN encapsulation overhead (outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Docker's driver option carrying a network's MTU. For the overlay driver it is the underlay's MTU.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// The name of the swarm's routing-mesh network.
pub const INGRESS: &str = "ingress";
/// The sandbox through which a node serves the routing mesh; listed among the ingress network's containers once
/// the network is set up on this node.
const INGRESS_SANDBOX: &str = "ingress-sbox";

/// How long to wait for the manager to lead and for its default ingress network to be allocated and set up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for a removed ingress network to disappear from the engine's list.
const GONE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the new ingress network to be set up on this node.
const LIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often to ask again for this node's attachment to the new ingress network while it is not set up.
const ATTACH_AGAIN: Duration = Duration::from_secs(5);
/// The node label [`attach_node`] sets and removes again so that this node's object really changes.
const NUDGE_LABEL: &str = "cluster-lab.ingress-attach";
/// How long only our ingress network must be listed before the replacement counts as settled.
const SETTLE: Duration = Duration::from_secs(5);
/// Upper bound of the settle phase (another `ingress` removed restarts the settle period).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two attempts of the settle phase at removing another ingress network.
const ACT_AGAIN: Duration = Duration::from_secs(2);
/// Attempts at creating an ingress network once the old one is gone.
const CREATE_ATTEMPTS: u32 = 5;
const POLL: Duration = Duration::from_millis(250);
/// What [`summary`] says of an empty list.
const NONE_LISTED: &str = "no ingress network";

/// The MTU of interfaces inside overlay networks on an underlay of `underlay_mtu`.
pub fn overlay_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu - VXLAN_OVERHEAD
}

/// The value of [`MTU_OPTION`] that gives overlay interfaces [`overlay_mtu`]`(underlay_mtu)`: the underlay MTU
/// itself, because the overlay driver subtracts the VXLAN overhead.
pub fn driver_mtu_option(underlay_mtu: u32) -> u32 {
    underlay_mtu
}

/// [`driver_mtu_option`] for overlay networks on the cluster VLAN (1496 on standard Ethernet).
pub fn vlan_driver_mtu_option() -> u32 {
    driver_mtu_option(crate::host::networkd::vlan_mtu(
        crate::host::networkd::PARENT_MTU,
    ))
}

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    #[error("timed out after {waited:?} waiting for {what}; last seen: {last}")]
    Timeout {
        what: &'static str,
        waited: Duration,
        last: String,
    },
    #[error(
        "could not create the ingress network with {MTU_OPTION}={mtu} ({source}); the swarm got a new ingress \
         network with Docker's default MTU instead (overlay traffic is fragmented on the VLAN)"
    )]
    FellBack { mtu: u32, source: SwarmError },
    #[error(
        "the swarm has no ingress network: creating one with {MTU_OPTION}={mtu} failed ({first}) and so did \
         creating one with the default MTU ({source}); create it by hand: \
         `docker network create --driver overlay --ingress --opt {MTU_OPTION}={mtu} ingress`"
    )]
    NoIngress {
        mtu: u32,
        first: SwarmError,
        source: SwarmError,
    },
}

use super::swarm::docker_err as err;
use crate::wait::Waited;

/// Make the swarm's ingress network carry `MTU_OPTION = option` (managers only; pass [`driver_mtu_option`] of the
/// VLAN's MTU). No-op when the one ingress network already has it and is set up on this node. Replacing it fails
/// while services publish ports through it; the caller treats errors as warnings, not failures.
pub async fn ensure_ingress_mtu(swarm: &Swarm, option: u32) -> Result<Outcome, IngressError> {
    let want = option.to_string();
    let node_id = wait_leading(swarm).await?;

    let wanted = &want;
    let current = wait_for(
        "the swarm's ingress network to be allocated",
        READY_TIMEOUT,
        move || async move {
            let listed = ingress_networks(swarm).await?;
            let ready = listed.iter().any(|n| has_mtu(n, wanted) || is_allocated(n));
            Ok(if ready {
                Ok(listed)
            } else {
                Err(summary(&listed))
            })
        },
    )
    .await;
    let current = match current {
        Ok(listed) => listed,
        Err(IngressError::Timeout { last, .. }) if last == NONE_LISTED => {
            // Removed by an earlier run that stopped before creating ours (or by hand): create ours.
            tracing::warn!("the swarm has no ingress network; creating one");
            Vec::new()
        }
        Err(e) => return Err(e),
    };

    let ours = match current.iter().find(|n| has_mtu(n, &want)) {
        Some(ours) => {
            let id = id_of(ours);
            if current.len() == 1 && is_live(swarm, &id).await? {
                return Ok(Outcome::AlreadyDone);
            }
            tracing::info!(network = %id, mtu = option, "ingress network has the MTU; finishing its set-up");
            id
        }
        None => replace(swarm, &current, &node_id, option).await?,
    };

    attach_node(swarm, &node_id).await?;
    wait_live(
        swarm,
        &ours,
        &node_id,
        "the new ingress network to be set up on this node",
        LIVE_TIMEOUT,
    )
    .await?;
    settle(swarm, &ours, &node_id).await?;
    tracing::info!(network = %ours, mtu = option, "ingress network settled");
    Ok(Outcome::Done)
}

/// Remove the default ingress network(s) and create ours; returns its ID. Never leaves the swarm without one.
async fn replace(
    swarm: &Swarm,
    current: &[Network],
    node_id: &str,
    option: u32,
) -> Result<String, IngressError> {
    // The agent sets up the default on this node shortly after it is allocated; removing it before that leaves
    // a stale local copy behind. Setting it up can fail the same way as ours (see `wait_live`), so the attachment
    // is asked for again meanwhile. Not fatal if it never happens: the settle phase clears stale copies.
    for network in current {
        let id = &id_of(network);
        let live = wait_live(
            swarm,
            id,
            node_id,
            "the default ingress network to be set up on this node",
            READY_TIMEOUT,
        )
        .await;
        if let Err(e) = live {
            tracing::warn!(network = %id, error = %e, "replacing the ingress network before it was set up");
        }
    }
    let mut removed = 0;
    for network in current {
        let id = id_of(network);
        match swarm.docker().remove_network(&id).await {
            Ok(()) => {
                tracing::info!(network = %id, "default ingress network removed");
                removed += 1;
            }
            // Nothing changed yet (services publishing ports refuse it): the swarm keeps its ingress network.
            Err(e) if removed == 0 => {
                return Err(err("removing the default ingress network")(e).into())
            }
            // A stale local copy that cannot go yet; the settle phase deals with it.
            Err(e) => {
                tracing::warn!(network = %id, error = %e, "removing an old ingress network failed")
            }
        }
    }
    // From here on the swarm may have no ingress network: every error path creates one.
    let gone = wait_for(
        "the removed ingress network to disappear",
        GONE_TIMEOUT,
        move || async move {
            let listed = ingress_networks(swarm).await?;
            Ok(if listed.is_empty() {
                Ok(())
            } else {
                Err(summary(&listed))
            })
        },
    )
    .await;
    if let Err(e) = gone {
        tracing::warn!(error = %e, "creating the ingress network while the old one is still listed");
    }
    let first = match create(swarm, Some(option)).await {
        Ok(id) => {
            tracing::info!(network = %id, mtu = option, "ingress network created");
            return Ok(id);
        }
        Err(e) => e,
    };
    match create(swarm, None).await {
        Ok(id) => {
            tracing::warn!(network = %id, error = %first, "ingress network recreated with Docker's default MTU");
            Err(IngressError::FellBack {
                mtu: option,
                source: first,
            })
        }
        Err(source) => Err(IngressError::NoIngress {
            mtu: option,
            first,
            source,
        }),
    }
}

/// Create an ingress network (with `MTU_OPTION = option`, or Docker's default), retrying: right after a removal the
/// swarm can still refuse the name for a moment. An ingress network that shows up meanwhile with the wanted MTU
/// (a create that timed out on our side but went through) counts as created.
async fn create(swarm: &Swarm, option: Option<u32>) -> Result<String, SwarmError> {
    let want = option.map(|m| m.to_string());
    let mut last = None;
    for attempt in 1..=CREATE_ATTEMPTS {
        let request = NetworkCreateRequest {
            name: INGRESS.into(),
            driver: Some("overlay".into()),
            ingress: Some(true),
            options: want
                .as_ref()
                .map(|m| HashMap::from([(MTU_OPTION.to_string(), m.clone())])),
            ..Default::default()
        };
        match swarm.docker().create_network(request).await {
            Ok(created) => return Ok(created.id),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "creating the ingress network failed");
                last = Some(err("creating the ingress network")(e));
            }
        }
        tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        let listed = ingress_networks(swarm).await?;
        let matching = |n: &&Network| match &want {
            Some(m) => has_mtu(n, m),
            None => true,
        };
        if let Some(n) = listed.iter().find(matching) {
            return Ok(id_of(n));
        }
    }
    Err(last.expect("at least one attempt"))
}

/// Watch until only `ours` has been listed for [`SETTLE`]; any other `ingress` (a stale local copy) is removed
/// by ID, and this node's object touched again so the agent releases it.
async fn settle(swarm: &Swarm, ours: &str, node_id: &str) -> Result<(), IngressError> {
    let started = Instant::now();
    let mut quiet_since = Instant::now();
    let mut acted: Option<Instant> = None;
    loop {
        let listed = ingress_networks(swarm).await?;
        let others: Vec<String> = listed.iter().map(id_of).filter(|id| id != ours).collect();
        if others.is_empty() {
            if quiet_since.elapsed() >= SETTLE {
                return Ok(());
            }
        } else {
            quiet_since = Instant::now();
            if started.elapsed() >= SETTLE_TIMEOUT {
                return Err(IngressError::Timeout {
                    what: "the engine to list only the new ingress network",
                    waited: started.elapsed(),
                    last: summary(&listed),
                });
            }
            // Releasing a local copy takes the agent a moment: act again only after a pause.
            if acted.is_some_and(|t| t.elapsed() < ACT_AGAIN) {
                tokio::time::sleep(POLL).await;
                continue;
            }
            acted = Some(Instant::now());
            for id in &others {
                tracing::warn!(network = %id, ours, "another ingress network listed; removing it");
                if let Err(e) = swarm.docker().remove_network(id).await {
                    tracing::warn!(network = %id, error = %e, "removing the other ingress network failed");
                }
            }
            attach_node(swarm, node_id).await?;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Wait until this engine is an active manager that leads the swarm; returns its node ID.
async fn wait_leading(swarm: &Swarm) -> Result<String, IngressError> {
    wait_for(
        "this manager to lead the swarm",
        READY_TIMEOUT,
        move || async move {
            let state = swarm.local_state().await?;
            let active = state.is_active() && state.manager;
            let Some(id) = state.node_id.clone().filter(|_| active) else {
                return Ok(Err(format!("{state:?}")));
            };
            let node = match swarm.docker().inspect_node(&id).await {
                Ok(node) => node,
                // The manager API answers only once the manager is up.
                Err(e) => return Ok(Err(e.to_string())),
            };
            let leader = node.manager_status.as_ref().and_then(|m| m.leader) == Some(true);
            Ok(if leader {
                Ok(id)
            } else {
                Err(format!("{:?}", node.manager_status))
            })
        },
    )
    .await
}

/// Wait until ingress network `id` is set up on this node. This node's attachment is asked for again
/// every [`ATTACH_AGAIN`]: dockerd can fail to set up an ingress network ("failed to find a load balancer IP to use
/// for network", seen with dockerd 20.10 for the default ingress right after `swarm init` and for ours after the
/// replacement, in about one `root_ingress` round of eight: its ingress worker can run before the node's addresses
/// are stored) and does not retry by itself.
async fn wait_live(
    swarm: &Swarm,
    id: &str,
    node_id: &str,
    what: &'static str,
    timeout: Duration,
) -> Result<(), IngressError> {
    // When the attachment was last asked for (a Mutex only because the future must be Send; never held across await).
    let attached = std::sync::Mutex::new(Instant::now());
    wait_for(what, timeout, || async {
        if is_live(swarm, id).await? {
            return Ok(Ok(()));
        }
        let due = attached.lock().expect("not poisoned").elapsed() >= ATTACH_AGAIN;
        if due {
            tracing::info!(network = %id, "ingress network not set up on this node yet; attaching again");
            attach_node(swarm, node_id).await?;
            *attached.lock().expect("not poisoned") = Instant::now();
        }
        Ok(Err(summary(&ingress_networks(swarm).await?)))
    })
    .await
}

/// Make this node's object change, twice: set [`NUDGE_LABEL`], then remove it again. Each update makes the
/// allocator give the node an address on the current ingress network if it has none yet, and each one reaches the
/// node's agent, which sets the ingress network up again if the last try failed (and releases a stale one). An
/// update that changes nothing would not do: the agent passes a node update on only when more than the object's
/// version and status changed (swarmkit's `nodesEqual`), so a failed set-up would never be tried again.
async fn attach_node(swarm: &Swarm, node_id: &str) -> Result<(), SwarmError> {
    for set in [true, false] {
        swarm
            .update_node(node_id, "updating this swarm node", |spec| {
                nudged(spec, set);
                true
            })
            .await?;
    }
    Ok(())
}

/// `spec` with [`NUDGE_LABEL`] set (`set`) or removed; the node's other labels are left as they are.
fn nudged(spec: &mut NodeSpec, set: bool) {
    let labels = spec.labels.get_or_insert_with(HashMap::new);
    if set {
        labels.insert(NUDGE_LABEL.into(), "1".into());
    } else {
        labels.remove(NUDGE_LABEL);
    }
}

/// Poll `check` every [`POLL`] until it gives `Ok(value)`; `Err(text)` means not yet, with the state seen.
async fn wait_for<T, F, Fut>(
    what: &'static str,
    timeout: Duration,
    check: F,
) -> Result<T, IngressError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>, SwarmError>>,
{
    crate::wait::poll(timeout, POLL, check)
        .await
        .map_err(|w| match w {
            Waited::Failed(e) => IngressError::Swarm(e),
            Waited::TimedOut { waited, last } => IngressError::Timeout { what, waited, last },
        })
}

/// Networks the engine lists as the ingress network: the swarm's, and its own local copies.
async fn ingress_networks(swarm: &Swarm) -> Result<Vec<Network>, SwarmError> {
    // No name filter: dockerd 20.10 matches it differently for swarm networks and local copies.
    let networks = swarm
        .docker()
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(err("listing networks"))?;
    Ok(networks
        .into_iter()
        .filter(|n| n.ingress == Some(true) || n.name.as_deref() == Some(INGRESS))
        .collect())
}

/// Whether the network is set up on this node (its routing-mesh sandbox is attached).
async fn is_live(swarm: &Swarm, id: &str) -> Result<bool, SwarmError> {
    match swarm
        .docker()
        .inspect_network(id, None::<InspectNetworkOptions>)
        .await
    {
        Ok(n) => Ok(n
            .containers
            .is_some_and(|c| c.contains_key(INGRESS_SANDBOX))),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(err("inspecting the ingress network")(e)),
    }
}

fn has_mtu(n: &Network, want: &str) -> bool {
    n.options
        .as_ref()
        .and_then(|o| o.get(MTU_OPTION))
        .map(String::as_str)
        == Some(want)
}

/// The allocator has given the network its subnet.
fn is_allocated(n: &Network) -> bool {
    n.ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.subnet.is_some()))
}

fn id_of(n: &Network) -> String {
    n.id.clone().unwrap_or_default()
}

/// `id (mtu=…)` of each listed network, for logs and errors.
fn summary(listed: &[Network]) -> String {
    if listed.is_empty() {
        return NONE_LISTED.into();
    }
    listed
        .iter()
        .map(|n| {
            let mtu = n.options.as_ref().and_then(|o| o.get(MTU_OPTION));
            format!(
                "{} ({MTU_OPTION}={})",
                id_of(n),
                mtu.map_or("default", String::as_str)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::models::{Ipam, IpamConfig, Network, NodeSpec};

    use super::*;

    fn network(id: &str, mtu: Option<&str>, subnet: Option<&str>) -> Network {
        Network {
            id: Some(id.into()),
            name: Some(INGRESS.into()),
            ingress: Some(true),
            options: mtu.map(|m| HashMap::from([(MTU_OPTION.to_string(), m.to_string())])),
            ipam: Some(Ipam {
                config: Some(
                    subnet
                        .map(|s| IpamConfig {
                            subnet: Some(s.into()),
                            ..Default::default()
                        })
                        .into_iter()
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn tells_the_default_ingress_from_ours() {
        let default = network("d", None, Some("10.0.0.0/24"));
        let ours = network("o", Some("1496"), None);
        assert!(!has_mtu(&default, "1496"));
        assert!(has_mtu(&ours, "1496"));
        assert!(!has_mtu(&ours, "1446"));
        assert!(is_allocated(&default));
        assert!(!is_allocated(&ours));
        assert_eq!(
            summary(&[default, ours]),
            "d (com.docker.network.driver.mtu=default), o (com.docker.network.driver.mtu=1496)"
        );
        assert_eq!(summary(&[]), NONE_LISTED);
    }

    #[test]
    fn the_nudge_changes_the_node_and_then_undoes_its_change() {
        let mut spec = NodeSpec {
            labels: Some(HashMap::from([("rack".to_string(), "2".to_string())])),
            ..Default::default()
        };
        let before = spec.clone();
        nudged(&mut spec, true);
        assert_ne!(spec, before);
        assert_eq!(spec.labels.as_ref().unwrap()["rack"], "2");
        nudged(&mut spec, false);
        assert_eq!(spec, before);

        let mut bare = NodeSpec::default();
        nudged(&mut bare, true);
        assert_eq!(
            bare.labels
                .as_ref()
                .unwrap()
                .get(NUDGE_LABEL)
                .map(String::as_str),
            Some("1")
        );
    }

    #[test]
    fn overlay_fits_the_vlan() {
        let vlan = crate::host::networkd::vlan_mtu(crate::host::networkd::PARENT_MTU);
        assert_eq!(super::overlay_mtu(vlan), 1446);
        // The overlay driver takes the underlay's MTU and subtracts the VXLAN overhead itself.
        assert_eq!(super::driver_mtu_option(vlan), 1496);
        assert_eq!(
            super::driver_mtu_option(vlan) - super::VXLAN_OVERHEAD,
            super::overlay_mtu(vlan)
        );
    }
}
