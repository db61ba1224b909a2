//! Swarm overlay networks sized for the cluster VLAN.
//!
//! VXLAN adds 50 bytes. Docker's overlay default MTU (1450) assumes a 1500-byte underlay; the VLAN has 1496 (see
//! `networkd::vlan_mtu`), so overlay packets would be fragmented. The swarm's `ingress` network (the routing mesh)
//! is created by `swarm init` with the default; this replaces it, once, with one of the right MTU.
//!
//! First boot does not call [`ensure_ingress_mtu`] yet: right after `swarm init` the swarm can create its default
//! ingress network again beside the replacement (two networks named `ingress`), seen in `root_firstboot`.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptions;

use crate::swarm::{Outcome, Swarm, SwarmError};

/// VXLAN encapsulation overhead (outer Ethernet 14 + IP 20 + UDP 8 + VXLAN 8).
pub const VXLAN_OVERHEAD: u32 = 50;
/// Docker's driver option carrying an overlay network's MTU.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// The overlay MTU for an underlay of `underlay_mtu`.
pub fn overlay_mtu(underlay_mtu: u32) -> u32 {
    underlay_mtu - VXLAN_OVERHEAD
}

fn err(action: &'static str) -> impl FnOnce(bollard::errors::Error) -> SwarmError {
    move |source| SwarmError::Docker { action, source }
}

/// Make the swarm's ingress network use `mtu` (managers only). No-op when it already does. Replacing it fails while
/// services publish ports through it; the caller treats that as a warning, not a failure.
pub async fn ensure_ingress_mtu(swarm: &Swarm, mtu: u32) -> Result<Outcome, SwarmError> {
    let docker = swarm.docker();
    let want = mtu.to_string();
    // `swarm init` creates the default ingress network asynchronously: give it a moment to appear, so it is
    // replaced rather than raced.
    let mut ingress = ingress_networks(swarm).await?;
    for _ in 0..40 {
        if !ingress.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        ingress = ingress_networks(swarm).await?;
    }
    if ingress
        .iter()
        .any(|n| n.options.as_ref().and_then(|o| o.get(MTU_OPTION)) == Some(&want))
    {
        return Ok(Outcome::AlreadyDone);
    }
    for network in &ingress {
        let id = network.id.as_deref().unwrap_or("ingress");
        docker
            .remove_network(id)
            .await
            .map_err(err("removing the default ingress network"))?;
    }
    // The old network disappears asynchronously; a new one created before it is gone conflicts with it.
    for _ in 0..40 {
        if ingress_networks(swarm).await?.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let options = HashMap::from([(MTU_OPTION.to_string(), want)]);
    let request = NetworkCreateRequest {
        name: "ingress".into(),
        driver: Some("overlay".into()),
        ingress: Some(true),
        options: Some(options),
        ..Default::default()
    };
    docker
        .create_network(request)
        .await
        .map_err(err("creating the ingress network"))?;
    // The swarm commits the network through Raft; wait until the engine lists it, so that a check right after
    // this (a second run) sees it.
    for _ in 0..40 {
        let listed = ingress_networks(swarm).await?;
        if listed
            .iter()
            .any(|n| n.options.as_ref().and_then(|o| o.get(MTU_OPTION)) == Some(&mtu.to_string()))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(Outcome::Done)
}

/// Networks named `ingress` that are the swarm's ingress (normally one).
async fn ingress_networks(swarm: &Swarm) -> Result<Vec<bollard::models::Network>, SwarmError> {
    let filters = HashMap::from([("name".to_string(), vec!["ingress".to_string()])]);
    let networks = swarm
        .docker()
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(err("listing networks"))?;
    Ok(networks
        .into_iter()
        .filter(|n| n.ingress == Some(true) && n.name.as_deref() == Some("ingress"))
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn overlay_fits_the_vlan() {
        let vlan = crate::networkd::vlan_mtu(crate::networkd::PARENT_MTU);
        assert_eq!(super::overlay_mtu(vlan), 1446);
    }
}
