//! Root tier: the Consul catalog sync against a real dockerd in swarm mode and a real Consul 1.8 server with
//! cluster-lab's ACLs, in one network namespace. Tasks of a real Swarm service appear in the catalog with a passing
//! check when the sync passes, follow the service when it is scaled down and removed, and services the sync does not
//! own (`registry`) are never touched. A sync started afresh (the unit restarted) re-registers nothing.

mod support;

use std::time::Duration;

use cluster_lab::catalog::{Changes, Sync};
use cluster_lab::consul::config::{datacenter_name, AgentConfig, BindAddr, ConsulParams};
use cluster_lab::consul::{ConsulClient, Service};
use cluster_lab::secret::gossip_key;
use cluster_lab_image::container;
use support::dockerd::{require_docker, Dockerd};
use support::{require_tool, run, wait_for, Daemon, Lab, Netns};

const SECRET: &str = "root-test-catalog-secret";
const SERVICE: &str = "demo_web";

fn consul() -> ConsulClient {
    ConsulClient::local().with_token(cluster_lab::secret::consul_management_token(SECRET))
}

/// `(service id, status)` of every instance of Consul service `name`, sorted, read back over HTTP with curl.
fn instances(ns: &Netns, name: &str) -> Vec<(String, String)> {
    let token = cluster_lab::secret::consul_management_token(SECRET);
    let out = run(&mut ns.nsenter(
        "curl",
        [
            "-sS".to_string(),
            "-H".into(),
            format!("X-Consul-Token: {token}"),
            format!("http://127.0.0.1:8500/v1/health/checks/{name}"),
        ],
    ));
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    // Two checks per instance (running, Docker's health): an instance is passing when both are.
    let mut by_id: std::collections::BTreeMap<String, String> = Default::default();
    for c in &checks {
        let id = c["ServiceID"].as_str().unwrap_or("").to_string();
        let status = c["Status"].as_str().unwrap_or("").to_string();
        let entry = by_id.entry(id).or_insert_with(|| "passing".into());
        if status != "passing" {
            *entry = status;
        }
    }
    assert!(
        checks.len() == 2 * by_id.len(),
        "two checks per instance: {out}"
    );
    by_id.into_iter().collect()
}

/// IDs of the running tasks of [`SERVICE`], sorted.
fn running_tasks(engine: &Dockerd) -> Vec<String> {
    let out = engine.docker(&[
        "service",
        "ps",
        SERVICE,
        "--filter",
        "desired-state=running",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.CurrentState}}",
    ]);
    let mut ids: Vec<String> = out
        .lines()
        .filter(|l| l.contains(" Running "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

fn wait_running(engine: &Dockerd, n: usize) -> Vec<String> {
    wait_for(
        Duration::from_secs(120),
        &format!("{n} running tasks of {SERVICE}"),
        || -> Result<_, String> {
            // `service ps` fails once the service is removed: no tasks then.
            let ids = if n == 0 {
                Vec::new()
            } else {
                running_tasks(engine)
            };
            // Tasks on their way out still have a container for a moment: wait until dockerd lists only `n`.
            let containers =
                engine.docker(&["ps", "-q", "--filter", "label=com.docker.swarm.task.id"]);
            if ids.len() == n && containers.lines().count() == n {
                Ok(ids)
            } else {
                Err(format!("tasks {ids:?}, containers {containers:?}"))
            }
        },
        || engine.report(),
    )
}

/// One pass of `sync` inside the engine's namespace (where Consul's 127.0.0.1:8500 is); the sync comes back.
fn pass(engine: &Dockerd, mut sync: Sync) -> (Sync, Changes) {
    engine.ns.block_on(async move {
        let changes = sync.pass().await.expect("catalog sync pass");
        (sync, changes)
    })
}

fn ids(tasks: &[String]) -> Vec<String> {
    let mut v: Vec<String> = tasks.iter().map(|t| format!("swarm-task-{t}")).collect();
    v.sort();
    v
}

#[test]
fn swarm_tasks_enter_and_leave_consul_as_the_service_is_scaled_and_removed() {
    let mut lab = Lab::new("catalog");
    require_docker();
    require_tool(
        "consul",
        "run ci/install-consul.sh (Consul 1.8.7 from Debian bullseye)",
    );
    require_tool("curl", "apt-get install curl");
    let ns = lab.netns("m");
    let peer = lab.netns("peer");
    lab.veth(&ns, "clcat0", &peer, "clcat1");
    ns.add_addr("clcat0", "192.0.2.1/24");
    let dir = lab.dir().to_path_buf();

    let params = ConsulParams {
        datacenter: datacenter_name("root-catalog"),
        node_name: "master".into(),
        node_id: cluster_lab::secret::consul_node_id(SECRET, "master"),
        data_dir: dir.join("consul").to_string_lossy().into_owned(),
        bind: BindAddr::Addr("192.0.2.1".parse().unwrap()),
        master: "192.0.2.1".parse().unwrap(),
        gossip_key: gossip_key(SECRET),
        management_token: cluster_lab::secret::consul_management_token(SECRET),
    };
    let file = dir.join("consul.json");
    AgentConfig::server(&params)
        .render_at(file.to_str().unwrap(), None)
        .install(std::path::Path::new("/"))
        .unwrap();
    let server = Daemon::spawn(
        "consul server",
        ns.nsenter("consul", ["agent", "-config-file", file.to_str().unwrap()]),
        &dir.join("consul.log"),
    );
    wait_for(
        Duration::from_secs(90),
        "consul leading, with ACLs",
        || -> Result<_, String> {
            server.assert_running();
            ns.block_on(async { consul().services().await })
                .map_err(|e| e.to_string())
        },
        || server.report(),
    );
    // A service the sync does not own.
    let registry = Service {
        id: "registry".into(),
        name: "registry".into(),
        port: Some(5000),
        ..Default::default()
    };
    ns.block_on(async move { consul().register_service(&registry).await })
        .unwrap();

    let engine = Dockerd::start(&ns, &dir, "engine");
    let swarm = engine.connect();
    engine.docker(&["swarm", "init", "--advertise-addr", "192.0.2.1"]);
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static (ci/apt-packages.txt)");
    let image = container::busybox_image(&busybox).unwrap();
    let archive = dir.join("busybox.tar");
    std::fs::write(&archive, &image.archive).unwrap();
    engine.docker(&["load", "-i", archive.to_str().unwrap()]);
    engine.docker(&[
        "service",
        "create",
        "--detach",
        "--name",
        SERVICE,
        "--replicas",
        "3",
        container::REPO_TAG,
        "busybox",
        "sleep",
        "3600",
    ]);
    let three = wait_running(&engine, 3);

    let sync = Sync::new(swarm.docker().clone(), consul());
    let (sync, first) = pass(&engine, sync);
    assert_eq!(first.registered, ids(&three), "{first:?}");
    assert!(first.deregistered.is_empty(), "{first:?}");
    let listed = instances(&ns, "demo-web");
    assert_eq!(
        listed,
        ids(&three)
            .into_iter()
            .map(|id| (id, "passing".to_string()))
            .collect::<Vec<_>>(),
        "each task is an instance of demo-web with a passing check"
    );
    // In step: a second pass changes nothing; a sync started afresh neither.
    let (sync, again) = pass(&engine, sync);
    assert_eq!(again, Changes::default());
    let (restarted, fresh) = pass(&engine, Sync::new(swarm.docker().clone(), consul()));
    assert_eq!(fresh, Changes::default());

    engine.docker(&["service", "scale", "--detach", &format!("{SERVICE}=1")]);
    let one = wait_running(&engine, 1);
    let (_, scaled) = pass(&engine, sync);
    let mut gone: Vec<String> = ids(&three)
        .into_iter()
        .filter(|id| !ids(&one).contains(id))
        .collect();
    gone.sort();
    assert_eq!(scaled.deregistered, gone, "{scaled:?}");
    assert!(scaled.registered.is_empty(), "{scaled:?}");
    assert_eq!(
        instances(&ns, "demo-web"),
        vec![(ids(&one)[0].clone(), "passing".to_string())]
    );

    engine.docker(&["service", "rm", SERVICE]);
    wait_running(&engine, 0);
    let (_, removed) = pass(&engine, restarted);
    assert_eq!(removed.deregistered, ids(&one), "{removed:?}");
    assert!(instances(&ns, "demo-web").is_empty());
    // Never touched.
    let held = ns.block_on(async { consul().services().await }).unwrap();
    assert!(held.contains(&"registry".to_string()), "{held:?}");
}
