//! The Consul catalog sync: every Swarm task running on this machine is a service in Consul's catalog, on this
//! machine's node, with a health check; when the task stops, its entry goes. So the Consul UI at :8500 shows which
//! containers run where, and `<service>.service.consul` resolves to the machines running its tasks.
//!
//! Each machine's `cluster-lab-catalog.service` runs [`Sync`]: every [`INTERVAL`] it lists the running containers
//! that Swarm started (they carry `com.docker.swarm.task.id`), lists the services this machine's Consul agent holds
//! under [`ID_PREFIX`], and [`plan`]s the difference: register what runs and is missing, deregister what is
//! registered and no longer runs. Only entries under [`ID_PREFIX`] are touched; cluster-lab's own services
//! (`docker`, `registry`, …) are left alone.
//!
//! An entry is the task: Consul name the Swarm service's name with `_` and `.` made `-` (a stack's `demo_web` is
//! `demo-web`, a DNS label), ID `swarm-task-<task id>`, the machine's address (Consul's default: the node's VLAN
//! address), the task's overlay addresses and its container in the metadata. It has two TTL checks the sync
//! updates: `…:running` passes while the container runs, and if the sync itself stops it turns critical after
//! [`TTL`] and Consul drops the entry [`DEREGISTER_AFTER`] later; `…:health` is Docker's own health check (critical
//! when Docker says unhealthy), which never removes the entry, so an unhealthy task stays listed, as critical.
//! A failure on one task (Consul refusing its registration) is reported and the pass goes on with the others.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;

use crate::consul::api::ConsulError;
use crate::consul::{ConsulClient, Service, ServiceCheck};

/// The unit that runs the sync on every machine.
pub const UNIT: &str = "cluster-lab-catalog.service";
/// Consul service IDs the sync owns.
pub const ID_PREFIX: &str = "swarm-task-";
/// Tag on every entry the sync registers.
pub const TAG: &str = "swarm-task";
/// How often the sync looks.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// The entries' TTL check turns critical when not passed for this long.
pub const TTL: Duration = Duration::from_secs(30);
/// Consul removes an entry whose check stayed critical this long (Consul's minimum is one minute).
pub const DEREGISTER_AFTER: Duration = Duration::from_secs(60);
/// A running task's check is passed again after this long.
pub const PASS_EVERY: Duration = Duration::from_secs(10);

const LABEL_TASK: &str = "com.docker.swarm.task.id";
const LABEL_SERVICE: &str = "com.docker.swarm.service.name";
const LABEL_TASK_NAME: &str = "com.docker.swarm.task.name";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("listing the running swarm tasks in dockerd: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("{what}: {source}")]
    Consul { what: String, source: ConsulError },
}

/// Docker's view of a task's container health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Running, and no health check says otherwise.
    Running,
    /// Docker's health check reports it unhealthy.
    Unhealthy,
}

/// A Swarm task running on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    /// The Swarm service's name (`demo_web`).
    pub service: String,
    /// `demo_web.1.<task id>`.
    pub name: String,
    pub container: String,
    pub image: String,
    /// Addresses on the task's networks, by network name (the routing mesh's `ingress` left out).
    pub addresses: BTreeMap<String, String>,
    pub health: Health,
}

impl Task {
    pub fn service_id(&self) -> String {
        format!("{ID_PREFIX}{}", self.id)
    }

    /// The check that passes while its container runs (and removes the entry once the sync is gone).
    pub fn running_check_id(&self) -> String {
        format!("{}:running", self.service_id())
    }

    /// The check that carries Docker's health of its container.
    pub fn health_check_id(&self) -> String {
        format!("{}:health", self.service_id())
    }

    /// Its entry in Consul's catalog.
    pub fn entry(&self) -> Service {
        let mut meta = BTreeMap::from([
            ("swarm-service".to_string(), self.service.clone()),
            ("swarm-task".to_string(), self.name.clone()),
            (
                "container".to_string(),
                self.container.chars().take(12).collect(),
            ),
            ("image".to_string(), self.image.clone()),
        ]);
        for (net, addr) in &self.addresses {
            // Consul's metadata keys: letters, digits, `-` and `_`, at most 128 characters.
            meta.insert(format!("addr-{}", consul_name(net)), addr.clone());
        }
        Service {
            id: self.service_id(),
            name: consul_name(&self.service),
            address: None,
            port: None,
            tags: vec![TAG.into()],
            meta,
            checks: vec![
                ServiceCheck {
                    check_id: self.running_check_id(),
                    name: format!("task {} running", self.name),
                    ttl: format!("{}s", TTL.as_secs()),
                    status: "passing".into(),
                    deregister_critical_service_after: Some(format!(
                        "{}s",
                        DEREGISTER_AFTER.as_secs()
                    )),
                },
                ServiceCheck {
                    check_id: self.health_check_id(),
                    name: format!("task {} healthy (Docker's health check)", self.name),
                    ttl: format!("{}s", TTL.as_secs()),
                    status: self.status().into(),
                    deregister_critical_service_after: None,
                },
            ],
        }
    }

    /// Its health check's status for Consul.
    pub fn status(&self) -> &'static str {
        match self.health {
            Health::Running => "passing",
            Health::Unhealthy => "critical",
        }
    }
}

/// A Swarm name as a Consul service name that is one DNS label: lowercase, `_` and `.` made `-`, anything else
/// outside `[a-z0-9-]` dropped.
pub fn consul_name(swarm: &str) -> String {
    swarm
        .chars()
        .filter_map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => Some(c),
            'A'..='Z' => Some(c.to_ascii_lowercase()),
            '_' | '.' => Some('-'),
            _ => None,
        })
        .collect()
}

/// What the sync does in one pass.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tasks to register (new, or their entry changed).
    pub register: Vec<Task>,
    /// Service IDs to deregister (their task no longer runs here).
    pub deregister: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.register.is_empty() && self.deregister.is_empty()
    }
}

/// Compare the running tasks with the entries the agent holds (`registered`: service ID → its entry as last
/// registered by this sync, or `None` when only the ID is known, e.g. after the sync restarted).
pub fn plan(running: &[Task], registered: &HashMap<String, Option<Service>>) -> Plan {
    let mut plan = Plan::default();
    for task in running {
        match registered.get(&task.service_id()) {
            Some(Some(entry)) if *entry == task.entry() => {}
            // Known by ID only: its check is passed below; a restarted sync does not re-register every task.
            Some(None) => {}
            _ => plan.register.push(task.clone()),
        }
    }
    let mut gone: Vec<String> = registered
        .keys()
        .filter(|id| id.starts_with(ID_PREFIX))
        .filter(|id| !running.iter().any(|t| &t.service_id() == *id))
        .cloned()
        .collect();
    gone.sort();
    plan.deregister = gone;
    plan
}

/// The running containers Swarm started on this machine, as tasks.
pub async fn running_tasks(docker: &Docker) -> Result<Vec<Task>, CatalogError> {
    let options = ListContainersOptions {
        filters: Some(HashMap::from([
            ("label".to_string(), vec![LABEL_TASK.to_string()]),
            ("status".to_string(), vec!["running".to_string()]),
        ])),
        ..Default::default()
    };
    let containers = docker.list_containers(Some(options)).await?;
    let mut tasks: Vec<Task> = containers.into_iter().filter_map(task_of).collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(tasks)
}

fn task_of(c: bollard::models::ContainerSummary) -> Option<Task> {
    let labels = c.labels.unwrap_or_default();
    let id = labels.get(LABEL_TASK)?.clone();
    let service = labels.get(LABEL_SERVICE)?.clone();
    let addresses = c
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter(|(net, _)| net != "ingress")
        .filter_map(|(net, e)| Some((net, e.ip_address.filter(|a| !a.is_empty())?)))
        .collect();
    let unhealthy = c
        .status
        .as_deref()
        .is_some_and(|s| s.contains("(unhealthy)"));
    Some(Task {
        name: labels.get(LABEL_TASK_NAME).cloned().unwrap_or_default(),
        id,
        service,
        container: c.id.unwrap_or_default(),
        image: c.image.unwrap_or_default(),
        addresses,
        health: if unhealthy {
            Health::Unhealthy
        } else {
            Health::Running
        },
    })
}

/// The sync's memory between passes: what it registered, and when it last passed each check.
#[derive(Debug)]
pub struct Sync {
    docker: Docker,
    consul: ConsulClient,
    registered: HashMap<String, Option<Service>>,
    passed: HashMap<String, Instant>,
}

/// What one pass changed, and what it could not do (one line per task, the pass went on).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub registered: Vec<String>,
    pub deregistered: Vec<String>,
    pub failed: Vec<String>,
}

impl Sync {
    pub fn new(docker: Docker, consul: ConsulClient) -> Sync {
        Sync {
            docker,
            consul,
            registered: HashMap::new(),
            passed: HashMap::new(),
        }
    }

    fn consul_error(what: impl Into<String>) -> impl FnOnce(ConsulError) -> CatalogError {
        let what = what.into();
        move |source| CatalogError::Consul { what, source }
    }

    /// One pass: list, plan, act, pass the checks that are due.
    pub async fn pass(&mut self) -> Result<Changes, CatalogError> {
        let running = running_tasks(&self.docker).await?;
        let held = self.consul.services().await.map_err(Self::consul_error(
            "listing this machine's services in consul",
        ))?;
        // What the agent holds is the truth; what this sync registered before only tells whether it changed.
        let mut registered: HashMap<String, Option<Service>> = held
            .into_iter()
            .filter(|id| id.starts_with(ID_PREFIX))
            .map(|id| {
                let last = self.registered.get(&id).cloned().flatten();
                (id, last)
            })
            .collect();
        let plan = plan(&running, &registered);
        let mut changes = Changes::default();
        for id in &plan.deregister {
            match self.consul.deregister_service(id).await {
                Ok(()) => {
                    registered.remove(id);
                    self.passed.remove(id);
                    changes.deregistered.push(id.clone());
                }
                Err(e) => changes
                    .failed
                    .push(format!("deregistering {id} in consul: {e}")),
            }
        }
        let now = Instant::now();
        for task in &plan.register {
            let entry = task.entry();
            match self.consul.register_service(&entry).await {
                Ok(()) => {
                    self.passed.insert(task.service_id(), now);
                    registered.insert(task.service_id(), Some(entry));
                    changes.registered.push(task.service_id());
                }
                Err(e) => changes
                    .failed
                    .push(format!("registering task {} in consul: {e}", task.name)),
            }
        }
        for task in &running {
            if !registered.contains_key(&task.service_id()) {
                continue;
            }
            let due = self
                .passed
                .get(&task.service_id())
                .is_none_or(|t| now.duration_since(*t) >= PASS_EVERY);
            if !due {
                continue;
            }
            let updated = async {
                self.consul
                    .update_check(&task.running_check_id(), "passing", "container running")
                    .await?;
                self.consul
                    .update_check(
                        &task.health_check_id(),
                        task.status(),
                        &format!("docker: {}", task.status()),
                    )
                    .await
            };
            match updated.await {
                Ok(()) => {
                    self.passed.insert(task.service_id(), now);
                }
                Err(e) => {
                    // Consul may have dropped the entry meanwhile: registered afresh on the next pass.
                    registered.insert(task.service_id(), None);
                    self.passed.remove(&task.service_id());
                    changes.failed.push(format!(
                        "updating the checks of task {} in consul: {e}",
                        task.name
                    ));
                }
            }
        }
        self.registered = registered;
        Ok(changes)
    }

    /// Pass every [`INTERVAL`] for ever; a failed pass is logged and the next one tries again.
    pub async fn run(mut self) {
        let mut failing = false;
        let mut last_failed: Vec<String> = Vec::new();
        loop {
            match self.pass().await {
                Ok(mut changes) => {
                    if failing {
                        tracing::info!("catalog sync working again");
                        failing = false;
                    }
                    for id in &changes.registered {
                        tracing::info!(%id, "task registered in consul");
                    }
                    for id in &changes.deregistered {
                        tracing::info!(%id, "task deregistered from consul");
                    }
                    if changes.failed != last_failed {
                        for f in &changes.failed {
                            tracing::warn!(error = %f, "catalog sync");
                        }
                        last_failed = std::mem::take(&mut changes.failed);
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "catalog sync failed; trying again");
                    }
                    failing = true;
                }
            }
            tokio::time::sleep(INTERVAL).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str, service: &str) -> Task {
        Task {
            id: id.into(),
            service: service.into(),
            name: format!("{service}.1.{id}"),
            container: "0123456789abcdef0123".into(),
            image: "192.168.200.1:5000/cluster-lab/busybox:latest".into(),
            addresses: BTreeMap::from([("demo_net".into(), "10.0.1.5".into())]),
            health: Health::Running,
        }
    }

    #[test]
    fn swarm_names_become_one_dns_label() {
        assert_eq!(consul_name("demo_web"), "demo-web");
        assert_eq!(consul_name("My.App"), "my-app");
        assert_eq!(consul_name("web+1"), "web1");
    }

    #[test]
    fn an_entry_names_the_service_task_container_and_addresses() {
        let e = task("t1", "demo_web").entry();
        assert_eq!(e.id, "swarm-task-t1");
        assert_eq!(e.name, "demo-web");
        assert_eq!(e.tags, vec!["swarm-task"]);
        assert_eq!(e.meta["swarm-service"], "demo_web");
        assert_eq!(e.meta["container"], "0123456789ab");
        assert_eq!(e.meta["addr-demo-net"], "10.0.1.5");
        let ids: Vec<&str> = e.checks.iter().map(|c| c.check_id.as_str()).collect();
        assert_eq!(ids, ["swarm-task-t1:running", "swarm-task-t1:health"]);
        let json = serde_json::to_value(task("t1", "web").entry()).unwrap();
        assert_eq!(json["Checks"][0]["TTL"], "30s");
        assert_eq!(json["Checks"][0]["DeregisterCriticalServiceAfter"], "60s");
        let mut sick = task("t2", "web");
        sick.health = Health::Unhealthy;
        let statuses: Vec<String> = sick
            .entry()
            .checks
            .iter()
            .map(|c| c.status.clone())
            .collect();
        assert_eq!(statuses, ["passing", "critical"]);
        // Docker's health never removes the entry.
        assert!(
            json["Checks"][1]
                .get("DeregisterCriticalServiceAfter")
                .is_none(),
            "{json}"
        );
        assert_eq!(json["Meta"]["swarm-task"], "web.1.t1");
        assert!(json.get("Address").is_none(), "{json}");
    }

    #[test]
    fn new_tasks_register_and_gone_ones_deregister_and_others_are_left_alone() {
        let (a, b) = (task("a", "web"), task("b", "web"));
        let registered = HashMap::from([
            (a.service_id(), Some(a.entry())),
            ("swarm-task-old".to_string(), None),
            // Not the sync's: never touched.
            ("registry".to_string(), None),
        ]);
        let p = plan(&[a.clone(), b.clone()], &registered);
        assert_eq!(p.register, vec![b]);
        assert_eq!(p.deregister, vec!["swarm-task-old".to_string()]);
        // Nothing runs: every entry of the sync goes, nothing else.
        let p = plan(&[], &registered);
        assert!(p.register.is_empty());
        assert_eq!(
            p.deregister,
            vec!["swarm-task-a".to_string(), "swarm-task-old".to_string()]
        );
    }

    #[test]
    fn a_changed_entry_is_registered_again_and_one_known_by_id_is_not() {
        let a = task("a", "web");
        let mut unhealthy = a.clone();
        unhealthy.health = Health::Unhealthy;
        let registered = HashMap::from([(a.service_id(), Some(a.entry()))]);
        assert_eq!(
            plan(&[unhealthy.clone()], &registered).register,
            vec![unhealthy]
        );
        let by_id = HashMap::from([(a.service_id(), None)]);
        assert!(plan(&[a], &by_id).is_empty());
    }

    #[test]
    fn containers_without_swarm_labels_are_not_tasks() {
        let plain = bollard::models::ContainerSummary {
            id: Some("c".into()),
            ..Default::default()
        };
        assert!(task_of(plain).is_none());
        let labels = HashMap::from([
            (LABEL_TASK.to_string(), "t9".to_string()),
            (LABEL_SERVICE.to_string(), "demo_web".to_string()),
            (LABEL_TASK_NAME.to_string(), "demo_web.2.t9".to_string()),
        ]);
        let summary = bollard::models::ContainerSummary {
            id: Some("c9".into()),
            labels: Some(labels),
            status: Some("Up 3 minutes (unhealthy)".into()),
            network_settings: Some(bollard::models::ContainerSummaryNetworkSettings {
                networks: Some(HashMap::from([
                    (
                        "ingress".to_string(),
                        bollard::models::EndpointSettings {
                            ip_address: Some("10.0.0.7".into()),
                            ..Default::default()
                        },
                    ),
                    (
                        "demo_default".to_string(),
                        bollard::models::EndpointSettings {
                            ip_address: Some("10.0.2.3".into()),
                            ..Default::default()
                        },
                    ),
                ])),
            }),
            ..Default::default()
        };
        let t = task_of(summary).unwrap();
        assert_eq!(t.id, "t9");
        assert_eq!(t.health, Health::Unhealthy);
        assert_eq!(
            t.addresses,
            BTreeMap::from([("demo_default".to_string(), "10.0.2.3".to_string())])
        );
    }
}
