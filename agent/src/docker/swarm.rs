//! Docker Swarm through the Docker Engine API (bollard over the local unix socket; never TCP).
//!
//! Every action inspects the swarm state first: `swarm init` and `swarm join` are not idempotent, and after a power
//! cut the agent must finish the job without creating a second swarm or joining twice.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use crate::wait::Waited;
use bollard::models::{NodeSpec, SwarmInitRequest, SwarmJoinRequest};
use bollard::query_parameters::{ListNodesOptions, UpdateNodeOptions};
use bollard::Docker;
use serde::Serialize;

/// The Docker socket on the target.
pub const SOCKET: &str = "/run/docker.sock";
/// Swarm's cluster-management port.
pub const MANAGER_PORT: u16 = 2377;
/// Swarm's node gossip port (TCP and UDP), Docker's default.
pub const GOSSIP_PORT: u16 = 7946;
/// Swarm's overlay data path (VXLAN over UDP), Docker's default.
pub const VXLAN_PORT: u16 = 4789;

#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error("{action}: {source}")]
    Docker {
        action: &'static str,
        source: bollard::errors::Error,
    },
    #[error("docker socket {socket} not answering after {waited:?}: {last}")]
    NotReady {
        socket: String,
        waited: Duration,
        last: String,
    },
    #[error("swarm on this machine is {state}: {detail}")]
    BadState { state: String, detail: String },
    #[error(
        "joined the swarm but the engine is still {state} after {waited:?}: it has not reached the manager; \
         check that the master's port {MANAGER_PORT} answers on the VLAN"
    )]
    NotActive { state: String, waited: Duration },
}

/// How long a joining engine may stay `pending` before first boot calls the join failed (and retries).
pub const JOIN_ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Wraps a Docker API error with the action that failed.
pub(crate) fn docker_err(
    action: &'static str,
) -> impl FnOnce(bollard::errors::Error) -> SwarmError {
    move |source| SwarmError::Docker { action, source }
}

/// This engine's part in a swarm, as `GET /info` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalState {
    /// `inactive`, `pending`, `active`, `error` or `locked`.
    pub state: String,
    pub node_id: Option<String>,
    pub node_addr: Option<String>,
    /// True on managers.
    pub manager: bool,
    /// The swarm's cluster ID, when the engine is in one.
    pub cluster_id: Option<String>,
}

impl LocalState {
    pub fn is_active(&self) -> bool {
        self.state == "active"
    }
}

/// What an idempotent step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    AlreadyDone,
}

/// One swarm node, as a manager lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeSummary {
    pub id: String,
    pub hostname: String,
    pub role: String,
    /// `ready`, `down`, `disconnected` or `unknown`.
    pub state: String,
    pub availability: String,
    pub addr: String,
    pub labels: HashMap<String, String>,
}

/// What `init` or `join` does, decided from the engine's swarm state before anything is changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The engine is already where the step would put it.
    AlreadyDone,
    /// Run the step (for a join: also a join still `pending`, which is waited for).
    Act,
    /// The state is left over from a step cut short (a power cut in the middle of `swarm init` or `join` leaves
    /// dockerd restoring a half-written swarm: `error`): leave it, then run the step afresh.
    LeaveThenAct,
    /// A state that only a person should undo.
    Refuse(&'static str),
}

impl Step {
    /// `made`: the cluster ID of the swarm an earlier `init` on this engine made and returned, as the caller
    /// recorded it. An active swarm that no completed init made is not trusted: a power cut inside `swarm init` can
    /// leave the engine `active` as manager of a swarm whose CA cannot sign ("no valid signer found"), which no node
    /// could ever join. No worker can be in such a swarm (the join token is published only after init returned), so
    /// it is left and made afresh.
    fn for_init(state: &LocalState, made: Option<&str>) -> Step {
        match state.state.as_str() {
            "active" if state.manager && made.is_some() && state.cluster_id.as_deref() == made => {
                Step::AlreadyDone
            }
            "active" if state.manager => Step::LeaveThenAct,
            "active" => Step::Refuse(
                "this engine is a worker of another swarm, not its manager; \
                 `docker swarm leave --force` resets it",
            ),
            "inactive" | "" => Step::Act,
            "locked" => Step::Refuse(
                "the swarm is locked (autolock); unlock it with `docker swarm unlock`, \
                 or `docker swarm leave --force` resets it",
            ),
            // `error`, `pending`: a manager that never finished initialising; no worker can be in its swarm yet
            // (the join token is published only after init).
            _ => Step::LeaveThenAct,
        }
    }

    fn for_join(state: &LocalState) -> Step {
        match state.state.as_str() {
            "active" => Step::AlreadyDone,
            "inactive" | "" | "pending" => Step::Act,
            "locked" => Step::Refuse(
                "the swarm is locked (autolock); `docker swarm leave --force` resets it",
            ),
            _ => Step::LeaveThenAct,
        }
    }
}

fn text<T: Serialize>(v: &Option<T>) -> String {
    v.as_ref()
        .and_then(|v| serde_json::to_value(v).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A connection to one Docker engine.
#[derive(Debug, Clone)]
pub struct Swarm {
    docker: Docker,
}

impl Swarm {
    /// Connect to the engine at `socket`, waiting up to `timeout` for it to answer (dockerd starts in parallel with
    /// the agent at boot), and agree on an API version both sides speak.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Swarm, SwarmError> {
        let path = socket.to_string_lossy().into_owned();
        crate::wait::poll(timeout, Duration::from_millis(500), || {
            let path = path.clone();
            async move {
                let attempt = async {
                    let docker =
                        Docker::connect_with_unix(&path, 30, bollard::API_DEFAULT_VERSION)?;
                    let docker = docker.negotiate_version().await?;
                    docker.ping().await?;
                    Ok::<_, bollard::errors::Error>(docker)
                };
                Ok::<_, std::convert::Infallible>(attempt.await.map_err(|e| e.to_string()))
            }
        })
        .await
        .map(|docker| Swarm { docker })
        .map_err(|w| match w {
            Waited::TimedOut { waited, last } => SwarmError::NotReady {
                socket: path.clone(),
                waited,
                last,
            },
            Waited::Failed(never) => match never {},
        })
    }

    /// The engine connection, for operations beyond the swarm itself (networks).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub async fn local_state(&self) -> Result<LocalState, SwarmError> {
        let info = self
            .docker
            .info()
            .await
            .map_err(docker_err("reading docker info"))?;
        let swarm = info.swarm.unwrap_or_default();
        Ok(LocalState {
            state: text(&swarm.local_node_state),
            node_id: swarm.node_id.filter(|s| !s.is_empty()),
            node_addr: swarm.node_addr.filter(|s| !s.is_empty()),
            manager: swarm.control_available == Some(true),
            cluster_id: swarm.cluster.and_then(|c| c.id).filter(|s| !s.is_empty()),
        })
    }

    /// Create a swarm with this engine as manager, advertising, listening and carrying overlay traffic on `addr`
    /// (the VLAN address). `made` is the cluster ID an earlier call returned on this engine, if the caller recorded
    /// one: when the engine still manages that swarm this is a no-op. Any other swarm state left by an init cut short
    /// (`error`, `pending`, or an active swarm no completed init made) is left first and the swarm made afresh.
    /// Returns what was done and the swarm's cluster ID, which the caller records before it hands out a join token.
    pub async fn init(
        &self,
        addr: Ipv4Addr,
        made: Option<&str>,
    ) -> Result<(Outcome, String), SwarmError> {
        let state = self.local_state().await?;
        match Step::for_init(&state, made) {
            Step::AlreadyDone => {
                return Ok((Outcome::AlreadyDone, state.cluster_id.unwrap_or_default()))
            }
            Step::Act => {}
            Step::LeaveThenAct => self.leave_broken(&state).await?,
            Step::Refuse(detail) => {
                return Err(SwarmError::BadState {
                    state: state.state,
                    detail: detail.into(),
                })
            }
        }
        let request = SwarmInitRequest {
            listen_addr: Some(format!("{addr}:{MANAGER_PORT}")),
            advertise_addr: Some(format!("{addr}:{MANAGER_PORT}")),
            data_path_addr: Some(addr.to_string()),
            ..Default::default()
        };
        self.docker
            .init_swarm(request)
            .await
            .map_err(docker_err("initialising swarm"))?;
        let state = self.local_state().await?;
        match state.cluster_id {
            Some(id) if state.is_active() && state.manager => Ok((Outcome::Done, id)),
            _ => Err(SwarmError::BadState {
                state: state.state,
                detail: "swarm init returned but the engine does not manage an active swarm".into(),
            }),
        }
    }

    /// Leave a swarm this engine cannot use (`leave --force`), so the next init or join starts afresh.
    async fn leave_broken(&self, state: &LocalState) -> Result<(), SwarmError> {
        tracing::warn!(
            state = %state.state,
            node_id = ?state.node_id,
            "the engine's swarm state is left over from a step cut short; leaving it to start afresh"
        );
        self.docker
            .leave_swarm(Some(
                bollard::query_parameters::LeaveSwarmOptionsBuilder::default()
                    .force(true)
                    .build(),
            ))
            .await
            .map_err(docker_err("leaving the broken swarm state"))
    }

    /// The token a worker needs to join (managers only).
    pub async fn worker_token(&self) -> Result<String, SwarmError> {
        let swarm = self
            .docker
            .inspect_swarm()
            .await
            .map_err(docker_err("inspecting swarm"))?;
        swarm
            .join_tokens
            .and_then(|t| t.worker)
            .ok_or_else(|| SwarmError::BadState {
                state: "active".into(),
                detail: "the manager reported no worker join token".into(),
            })
    }

    /// Join the swarm managed at `manager` as a worker, using `addr` (the VLAN address) for swarm and overlay
    /// traffic. No-op when this engine is already part of a swarm.
    pub async fn join(
        &self,
        addr: Ipv4Addr,
        manager: Ipv4Addr,
        token: &str,
    ) -> Result<Outcome, SwarmError> {
        let state = self.local_state().await?;
        match Step::for_join(&state) {
            Step::AlreadyDone => return Ok(Outcome::AlreadyDone),
            // An earlier join that timed out keeps going in the background: joined means active.
            Step::Act if state.state == "pending" => {
                self.wait_active_or_leave(JOIN_ACTIVE_TIMEOUT).await?;
                return Ok(Outcome::AlreadyDone);
            }
            Step::Act => {}
            Step::LeaveThenAct => self.leave_broken(&state).await?,
            Step::Refuse(detail) => {
                return Err(SwarmError::BadState {
                    state: state.state,
                    detail: detail.into(),
                })
            }
        }
        let request = SwarmJoinRequest {
            listen_addr: Some(format!("{addr}:{MANAGER_PORT}")),
            advertise_addr: Some(format!("{addr}:{MANAGER_PORT}")),
            data_path_addr: Some(addr.to_string()),
            remote_addrs: Some(vec![format!("{manager}:{MANAGER_PORT}")]),
            join_token: Some(token.to_string()),
        };
        if let Err(e) = self.docker.join_swarm(request).await {
            // A join that timed out may still be under way ("pending"); anything else is a failed join.
            if self.local_state().await?.state != "pending" {
                return Err(docker_err("joining swarm")(e));
            }
            tracing::warn!(error = %e, "swarm join returned an error but the engine is joining; waiting");
        }
        self.wait_active_or_leave(JOIN_ACTIVE_TIMEOUT).await?;
        Ok(Outcome::Done)
    }

    /// [`Self::wait_active`]; a join still pending after `timeout` is abandoned (`leave --force`), so the retry
    /// joins afresh instead of waiting on a stale manager or token for ever.
    async fn wait_active_or_leave(&self, timeout: Duration) -> Result<LocalState, SwarmError> {
        match self.wait_active(timeout).await {
            Err(e @ SwarmError::NotActive { .. }) => {
                tracing::warn!(error = %e, "abandoning the pending join; the next attempt joins afresh");
                if let Err(leave) = self
                    .docker
                    .leave_swarm(Some(
                        bollard::query_parameters::LeaveSwarmOptionsBuilder::default()
                            .force(true)
                            .build(),
                    ))
                    .await
                {
                    tracing::warn!(error = %leave, "leaving the pending swarm failed");
                }
                Err(e)
            }
            other => other,
        }
    }

    /// Wait until this engine's swarm state is `active` (a member the manager accepted), up to `timeout`.
    pub async fn wait_active(&self, timeout: Duration) -> Result<LocalState, SwarmError> {
        crate::wait::poll(timeout, Duration::from_secs(1), || async {
            let state = self.local_state().await?;
            Ok(if state.is_active() {
                Ok(state)
            } else {
                Err(state.state)
            })
        })
        .await
        .map_err(|w| match w {
            Waited::Failed(e) => e,
            Waited::TimedOut { waited, last } => SwarmError::NotActive {
                state: last,
                waited,
            },
        })
    }

    /// Remove node `id` from the swarm (managers only), even while the engine still lists it.
    pub async fn remove_node(&self, id: &str) -> Result<(), SwarmError> {
        self.docker
            .delete_node(
                id,
                Some(
                    bollard::query_parameters::DeleteNodeOptionsBuilder::default()
                        .force(true)
                        .build(),
                ),
            )
            .await
            .map_err(docker_err("removing a swarm node"))
    }

    /// Every node of the swarm (managers only).
    pub async fn nodes(&self) -> Result<Vec<NodeSummary>, SwarmError> {
        let nodes = self
            .docker
            .list_nodes(None::<ListNodesOptions>)
            .await
            .map_err(docker_err("listing swarm nodes"))?;
        let mut out: Vec<NodeSummary> = nodes
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let status = n.status.unwrap_or_default();
                NodeSummary {
                    id: n.id.unwrap_or_default(),
                    hostname: n.description.and_then(|d| d.hostname).unwrap_or_default(),
                    role: text(&spec.role),
                    state: text(&status.state),
                    availability: text(&spec.availability),
                    addr: status.addr.unwrap_or_default(),
                    labels: spec.labels.unwrap_or_default(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        Ok(out)
    }

    /// Set `labels` on node `id` (managers only), keeping its other labels. No-op when they are already set.
    pub async fn label_node(
        &self,
        id: &str,
        labels: &[(&str, &str)],
    ) -> Result<Outcome, SwarmError> {
        self.update_node(id, "labelling swarm node", |spec| {
            let current = spec.labels.get_or_insert_with(HashMap::new);
            let mut changed = false;
            for (k, v) in labels {
                changed |= current.insert(k.to_string(), v.to_string()).as_deref() != Some(*v);
            }
            changed
        })
        .await
    }

    /// Apply `change` to node `id`'s spec and store it (managers only); `change` says whether it changed anything
    /// (nothing is stored otherwise). The swarm refuses an update made from an outdated version of the node ("update
    /// out of sequence"; the allocator and the dispatcher update node objects too, e.g. right after a change to its
    /// spec), so the node is read again and the change made again, a few times.
    pub async fn update_node(
        &self,
        id: &str,
        what: &'static str,
        change: impl Fn(&mut NodeSpec) -> bool,
    ) -> Result<Outcome, SwarmError> {
        const ATTEMPTS: u32 = 5;
        let mut attempt = 1;
        loop {
            let node = self
                .docker
                .inspect_node(id)
                .await
                .map_err(docker_err("inspecting swarm node"))?;
            let mut spec: NodeSpec = node.spec.unwrap_or_default();
            if !change(&mut spec) {
                return Ok(Outcome::AlreadyDone);
            }
            let version = node.version.and_then(|v| v.index).unwrap_or_default() as i64;
            match self
                .docker
                .update_node(id, spec, UpdateNodeOptions { version })
                .await
            {
                Ok(()) => return Ok(Outcome::Done),
                Err(e) if attempt < ATTEMPTS && is_out_of_sequence(&e) => {
                    tracing::debug!(
                        node = id,
                        attempt,
                        "node changed meanwhile; updating it again"
                    );
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
                Err(e) => return Err(docker_err(what)(e)),
            }
        }
    }
}

/// The swarm refused an update made from an outdated version of the object.
fn is_out_of_sequence(e: &bollard::errors::Error) -> bool {
    e.to_string().contains("update out of sequence")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(state: &str, manager: bool) -> LocalState {
        LocalState {
            state: state.into(),
            node_id: None,
            node_addr: None,
            manager,
            cluster_id: manager.then(|| "abc".into()),
        }
    }

    #[test]
    fn init_acts_only_on_a_fresh_engine_and_starts_over_after_an_init_cut_short() {
        for made in [None, Some("abc")] {
            assert_eq!(Step::for_init(&state("", false), made), Step::Act);
            assert_eq!(Step::for_init(&state("inactive", false), made), Step::Act);
            assert_eq!(
                Step::for_init(&state("error", false), made),
                Step::LeaveThenAct
            );
            assert_eq!(
                Step::for_init(&state("pending", false), made),
                Step::LeaveThenAct
            );
            assert!(matches!(
                Step::for_init(&state("active", false), made),
                Step::Refuse(_)
            ));
            assert!(matches!(
                Step::for_init(&state("locked", true), made),
                Step::Refuse(_)
            ));
        }
        // Only the swarm a completed init made is kept; an active one nobody recorded, or another one, is made afresh.
        assert_eq!(
            Step::for_init(&state("active", true), Some("abc")),
            Step::AlreadyDone
        );
        assert_eq!(
            Step::for_init(&state("active", true), None),
            Step::LeaveThenAct
        );
        assert_eq!(
            Step::for_init(&state("active", true), Some("other")),
            Step::LeaveThenAct
        );
    }

    #[test]
    fn join_waits_for_a_pending_join_and_starts_over_after_a_broken_one() {
        assert_eq!(Step::for_join(&state("inactive", false)), Step::Act);
        assert_eq!(Step::for_join(&state("pending", false)), Step::Act);
        assert_eq!(Step::for_join(&state("active", false)), Step::AlreadyDone);
        assert_eq!(Step::for_join(&state("error", false)), Step::LeaveThenAct);
        assert!(matches!(
            Step::for_join(&state("locked", false)),
            Step::Refuse(_)
        ));
    }
}
