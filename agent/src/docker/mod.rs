//! Docker on this machine: the Swarm (init, join, the join token in Consul), the Swarm's ingress network,
//! `/etc/docker/daemon.json`, and the container images the card carries.

pub mod daemon_json;
pub mod images;
pub mod ingress;
pub mod join_token;
pub mod swarm;
