//! Root tier: the master and node parts of `cluster-lab firstboot`, run concurrently in two network namespaces
//! joined by a veth pair named like the VLAN (`clfbm.200` / `clfbn.200`), against real Consul 1.8.7 and real
//! dockerd, then run again to show a second run changes nothing.
//!
//! The one stand-in is the service manager (there is no systemd here): starting `consul.service` runs the Consul
//! agent from the configuration first boot wrote, starting `docker-registry.service` runs the real registry from
//! the configuration first boot wrote, starting `cluster-lab-dhcpd@…` runs the real `cluster-lab dhcpd`,
//! reloading `docker.service` sends dockerd SIGHUP. networkd's part is played by the test: the master's static
//! address is put on its link, and the node's lease comes from the master's dhcpd through busybox udhcpc. The VLAN itself and the election are covered
//! by root_vlan and root_election; the whole boot by the QEMU cluster proof.

mod support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_lab::config::Settings;
use cluster_lab::consul::ConsulClient;
use cluster_lab::docker::swarm::Swarm;
use cluster_lab::firstboot::{master, node, Clock, Environment, Firstboot, Services};
use cluster_lab::host::hostname::Hostname;
use futures_util::future::BoxFuture;
use nix::unistd::Pid;
use support::clients::udhcpc;
use support::dockerd::{require_docker, Dockerd};
use support::{require_tool, wait_for, Daemon, Lab, Netns};

const SECRET: &str = "root-firstboot-secret-0123456789";

/// cluster-lab's client of the machine's own Consul agent.
/// The local agent with the management token first boot derived from the secret (ACLs deny by default).
fn consul() -> ConsulClient {
    ConsulClient::new("127.0.0.1:8500".parse().unwrap())
        .with_token(cluster_lab::secret::consul_management_token(SECRET))
}

/// The service manager of one machine.
#[derive(Debug)]
struct TestServices {
    ns: Netns,
    root: PathBuf,
    dockerd_pid: Pid,
    consul: Mutex<Option<Daemon>>,
    dhcpd: Mutex<Option<Daemon>>,
    others: Mutex<Vec<Daemon>>,
    calls: Mutex<Vec<String>>,
}

impl TestServices {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Services for TestServices {
    fn enable_and_start(&self, unit: &str, restart: bool) -> BoxFuture<'_, anyhow::Result<()>> {
        self.record(format!("start {unit} restart={restart}"));
        if unit == "consul.service" {
            let mut consul = self.consul.lock().unwrap();
            let running = consul.as_ref().is_some_and(Daemon::is_running);
            if restart || !running {
                if let Some(old) = consul.take() {
                    old.stop();
                }
                let mut cmd = self.ns.nsenter("consul", ["agent", "-config-file"]);
                cmd.arg(self.root.join("etc/consul.d/cluster-lab.json"));
                *consul = Some(Daemon::spawn("consul", cmd, &self.root.join("consul.log")));
            }
        }
        if unit == cluster_lab::docker::registry::UNIT {
            // The package's unit with cluster-lab's drop-in: `docker-registry serve` of the written configuration,
            // its data under this machine's root.
            let mut cmd = self.ns.nsenter("docker-registry", ["serve"]);
            cmd.arg(self.root.join("etc/cluster-lab/registry.yml")).env(
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY",
                self.root.join("registry-data"),
            );
            let daemon = Daemon::spawn("docker-registry", cmd, &self.root.join("registry.log"));
            self.others.lock().unwrap().push(daemon);
        }
        if let Some(interface) = unit
            .strip_prefix("cluster-lab-dhcpd@")
            .and_then(|u| u.strip_suffix(".service"))
        {
            let mut cmd = self
                .ns
                .nsenter(support::cluster_lab_bin(), ["dhcpd", "--config"]);
            cmd.arg(self.root.join("etc/cluster-lab/cluster-lab.toml"))
                .args(["--interface", interface]);
            let mut dhcpd = self.dhcpd.lock().unwrap();
            if !dhcpd.as_ref().is_some_and(Daemon::is_running) {
                *dhcpd = Some(Daemon::spawn(
                    "cluster-lab dhcpd",
                    cmd,
                    &self.root.join("dhcpd.log"),
                ));
            }
        }
        Box::pin(async { Ok(()) })
    }
    fn reload(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        self.record(format!("reload {unit}"));
        if unit == "docker.service" {
            nix::sys::signal::kill(self.dockerd_pid, nix::sys::signal::Signal::SIGHUP).unwrap();
        }
        Box::pin(async { Ok(()) })
    }
    fn try_restart(&self, units: &[&str]) -> BoxFuture<'_, anyhow::Result<()>> {
        self.record(format!("try-restart {}", units.join(" ")));
        Box::pin(async { Ok(()) })
    }
    fn networkd_reload(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        self.record("networkd reload".into());
        Box::pin(async { Ok(()) })
    }
    fn disable(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        self.record(format!("disable {unit}"));
        Box::pin(async { Ok(()) })
    }
    fn stop(&self, unit: &str) -> BoxFuture<'_, anyhow::Result<()>> {
        self.record(format!("stop {unit}"));
        if unit.starts_with("cluster-lab-dhcpd@") {
            if let Some(d) = self.dhcpd.lock().unwrap().take() {
                d.stop();
            }
        }
        Box::pin(async { Ok(()) })
    }
}

struct Machine {
    ns: Netns,
    root: PathBuf,
    dockerd: Dockerd,
    services: Arc<TestServices>,
    fb: Firstboot,
}

impl Machine {
    fn new(ns: Netns, dir: &Path, name: &str, interface: &str) -> Machine {
        let root = dir.join(name);
        let daemon_json = root.join("etc/docker/daemon.json");
        std::fs::create_dir_all(daemon_json.parent().unwrap()).unwrap();
        // What the early step writes before dockerd starts: the master's registry trusted over plain HTTP.
        let trusted = cluster_lab::docker::daemon_json::render_insecure_registry(
            "{}",
            &cluster_lab::docker::registry::address("192.168.200.1".parse().unwrap()),
        )
        .unwrap();
        std::fs::write(&daemon_json, trusted.contents).unwrap();
        // The preloaded container image, as `cargo xtask image` ships it (from the host's busybox-static).
        let busybox =
            std::fs::read("/bin/busybox").expect("reading /bin/busybox: install busybox-static");
        let archive = cluster_lab_image::container::busybox_image(&busybox).unwrap();
        std::fs::create_dir_all(root.join("images")).unwrap();
        std::fs::write(root.join("images/busybox.tar"), archive.archive).unwrap();
        // dockerd keeps its state under the machine's root too; SIGHUP makes it read daemon.json again.
        let dockerd = Dockerd::start_with(&ns, dir, name, Some(&daemon_json));
        let services = Arc::new(TestServices {
            ns: ns.clone(),
            root: root.clone(),
            dockerd_pid: dockerd.pid(),
            consul: Mutex::new(None),
            dhcpd: Mutex::new(None),
            others: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        });
        let config_text = format!(
            "[cluster]\nname = \"fb-test\"\nsecret = \"{SECRET}\"\n[network]\ninterface = \"{interface}\"\n\
             [dhcp]\nlease_file = \"{}\"\n",
            root.join("dhcp-leases").display()
        );
        let config_path = root.join("etc/cluster-lab/cluster-lab.toml");
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        std::fs::write(&config_path, &config_text).unwrap();
        let settings = Settings::parse(&config_text, &config_path).unwrap();
        // The card's own copy on its boot partition, which first boot takes the secret off.
        let boot_config = root.join("boot/firmware/cluster-lab.toml");
        std::fs::create_dir_all(boot_config.parent().unwrap()).unwrap();
        std::fs::write(&boot_config, &config_text).unwrap();
        let fb = Firstboot {
            settings,
            config_text,
            user_data: Default::default(),
            boot_config: Some(boot_config),
            hostname: format!("fb-{name}").parse::<Hostname>().unwrap(),
            secret: SECRET.parse().unwrap(),
            root: root.clone(),
            plan: None,
            env: Environment {
                consul: "127.0.0.1:8500".parse().unwrap(),
                docker_socket: dockerd.socket.clone(),
                consul_data_dir: root.join("consul-data").to_string_lossy().into_owned(),
                images_dir: root.join("images"),
                services: services.clone(),
                // The namespaces share the host's clock: chrony would set the host's.
                clock: Clock::Shared,
            },
        };
        Machine {
            ns,
            root,
            dockerd,
            services,
            fb,
        }
    }
}

impl Drop for Machine {
    /// The services first; dockerd then stops as the field drops, and what it left mounted under the root goes.
    fn drop(&mut self) {
        if let Some(c) = self.services.consul.lock().unwrap().take() {
            c.stop();
        }
        if let Some(d) = self.services.dhcpd.lock().unwrap().take() {
            d.stop();
        }
        for d in self.services.others.lock().unwrap().drain(..) {
            d.stop();
        }
    }
}

fn run_master(m: &Machine) -> Ipv4Addr {
    let fb = m.fb.clone();
    m.ns.block_on(async move { master::run(&fb, None).await })
        .unwrap_or_else(|e| panic!("master: {e:#}"))
}

fn run_node(n: &Machine) -> Ipv4Addr {
    let fb = n.fb.clone();
    n.ns.block_on(async move { node::run(&fb).await })
        .unwrap_or_else(|e| panic!("node: {e:#}"))
}

#[test]
fn master_and_node_form_the_cluster_and_a_second_run_changes_nothing() {
    let mut lab = Lab::new("fb");
    require_tool(
        "consul",
        "run ci/install-consul.sh (Consul 1.8.7 from Debian bullseye)",
    );
    require_docker();
    require_tool(
        "docker-registry",
        "install the Debian package docker-registry",
    );
    let (m_ns, n_ns) = (lab.netns("master"), lab.netns("node"));
    lab.veth(&m_ns, "clfbm.200", &n_ns, "clfbn.200");
    m_ns.add_addr("clfbm.200", "192.168.200.1/24");
    let m = Machine::new(m_ns, lab.dir(), "master", "clfbm");
    let n = Machine::new(n_ns, lab.dir(), "node", "clfbn");
    // The node's DHCP client (networkd's part on the target), applying the lease with its event script.
    let _udhcpc = udhcpc::start(&lab, "udhcpc", &n.ns, "clfbn.200");

    // Powered on together: the node waits for the master's Consul, token and swarm.
    let (m_addr, n_addr) = std::thread::scope(|s| {
        let master = s.spawn(|| run_master(&m));
        let node = s.spawn(|| run_node(&n));
        (master.join().unwrap(), node.join().unwrap())
    });
    assert_eq!(m_addr, "192.168.200.1".parse::<Ipv4Addr>().unwrap());
    // The node's address is a lease from the master's dhcpd, inside its range.
    let range = "192.168.200.101".parse::<Ipv4Addr>().unwrap()..="192.168.200.200".parse().unwrap();
    assert!(range.contains(&n_addr), "{n_addr}");

    let master_calls = m.services.calls();
    assert!(
        master_calls
            .contains(&"start cluster-lab-dhcpd@clfbm.200.service restart=false".to_string()),
        "{master_calls:?}"
    );
    assert!(
        master_calls.contains(&"start consul.service restart=true".to_string()),
        "{master_calls:?}"
    );
    let leases = std::fs::read_to_string(m.root.join("dhcp-leases")).unwrap_or_default();
    assert!(leases.contains(&n_addr.to_string()), "lease file: {leases}");

    // Consul: both members alive, seen from the master; the master's services registered.
    let members = m.ns.block_on(async { consul().members().await }).unwrap();
    let alive: Vec<_> = members
        .iter()
        .filter(|x| x.is_alive())
        .map(|x| x.name.clone())
        .collect();
    assert_eq!(alive.len(), 2, "{members:?}");
    assert!(
        alive.contains(&"fb-master".to_string()) && alive.contains(&"fb-node".to_string()),
        "{alive:?}"
    );
    let services = m.ns.block_on(async { consul().services().await }).unwrap();
    for s in ["swarm-manager", "docker", "cluster-lab-dhcpd"] {
        assert!(
            services.iter().any(|x| x == s),
            "{s} not registered: {services:?}"
        );
    }
    // The token in KV is sealed.
    let raw =
        m.ns.block_on(async {
            consul()
                .kv_get(cluster_lab::docker::join_token::KV_KEY)
                .await
        })
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("SWMTKN"));

    // Swarm: two ready nodes; the node labelled itself through daemon.json and a reload.
    let socket = m.dockerd.socket.clone();
    let nodes =
        m.ns.block_on(async move {
            let swarm = Swarm::connect(&socket, Duration::from_secs(10)).await?;
            for _ in 0..60 {
                let nodes = swarm.nodes().await?;
                if nodes.len() == 2 && nodes.iter().all(|n| n.state == "ready") {
                    return Ok(nodes);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            swarm.nodes().await
        })
        .unwrap();
    assert!(
        nodes.len() == 2 && nodes.iter().all(|n| n.state == "ready"),
        "{nodes:?}"
    );
    // Both roles loaded the preloaded image right after dockerd answered.
    for machine in [&m, &n] {
        let tags = machine
            .dockerd
            .docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        assert!(tags.contains("cluster-lab/busybox:latest"), "{tags}");
    }
    assert!(n
        .services
        .calls()
        .contains(&"reload docker.service".to_string()));
    // The master started its registry and pushed the card's image into it.
    assert!(
        master_calls.contains(&"start docker-registry.service restart=true".to_string()),
        "{master_calls:?}"
    );
    let catalog = support::run(
        &mut m
            .ns
            .nsenter("curl", ["-sS", "http://192.168.200.1:5000/v2/_catalog"]),
    );
    assert!(catalog.contains("\"cluster-lab/busybox\""), "{catalog}");
    // dockerd applies reloaded labels asynchronously.
    let info = wait_for(
        Duration::from_secs(10),
        "engine labels after reload",
        || {
            let info = n.dockerd.docker(&["info", "--format", "{{json .Labels}}"]);
            if info.contains("cluster-lab.hostname=fb-node") {
                Ok(info)
            } else {
                Err(info)
            }
        },
        || n.dockerd.report(),
    );
    assert!(
        info.contains(&format!(
            "cluster-lab.arch={}",
            cluster_lab::docker::daemon_json::arch()
        )),
        "{info}"
    );

    // Exactly one routing mesh (the name `ingress` is not ambiguous), carrying the VLAN's MTU as the overlay
    // driver's option (1496), so that the master's routing-mesh interface really has 1446.
    let ingress = m.dockerd.docker(&[
        "network",
        "inspect",
        "ingress",
        "--format",
        "{{.Ingress}} {{index .Options \"com.docker.network.driver.mtu\"}}",
    ]);
    assert_eq!(ingress.trim(), "true 1496", "{ingress}");
    // The routing-mesh interface of both machines (the node's is set up once it joined) really has 1446.
    for machine in [&m, &n] {
        let mtu = wait_for(
            Duration::from_secs(60),
            "the routing-mesh interface",
            || machine.dockerd.routing_mesh_mtu(),
            || machine.dockerd.report(),
        );
        assert_eq!(mtu, 1446, "{:?}", machine.dockerd.routing_mesh_link());
    }

    // `cluster-lab status` on the master: healthy, both machines in Consul and Swarm.
    let socket = m.dockerd.socket.clone();
    let root = m.root.clone();
    let status = m.ns.block_on(async move {
        // The configured interface, as `cluster-lab status` passes it; this lab has no home LAN on it.
        cluster_lab::status::Status::collect(&root, "clfbm", "clfbm.200", &consul(), &socket).await
    });
    assert!(status.problems.is_empty(), "{:?}", status.problems);
    assert_eq!(status.consul_members.len(), 2);
    assert_eq!(status.swarm_nodes.len(), 2);
    assert!(status.swarm.as_ref().is_some_and(|s| s.manager));
    assert!(
        status.to_text().ends_with("healthy\n"),
        "{}",
        status.to_text()
    );

    // The secret is off both cards (first boot's last step before the stamp), and each machine keeps it in
    // /etc/cluster-lab (its mode, 0600, is checked on the booted image by the acceptance test). Twice changes
    // nothing.
    for machine in [&m, &n] {
        assert!(machine.fb.step_secret_off_the_card().unwrap());
        assert!(!machine.fb.step_secret_off_the_card().unwrap());
        let card =
            std::fs::read_to_string(machine.root.join("boot/firmware/cluster-lab.toml")).unwrap();
        assert_eq!(
            cluster_lab::config::edit::secret(&card).unwrap(),
            None,
            "{card}"
        );
        assert!(
            card.contains("secret: kept in /etc/cluster-lab/cluster-lab.toml"),
            "{card}"
        );
        let kept = machine.root.join("etc/cluster-lab/cluster-lab.toml");
        let text = std::fs::read_to_string(&kept).unwrap();
        assert_eq!(
            cluster_lab::config::edit::secret(&text).unwrap().as_deref(),
            Some(SECRET)
        );
    }

    // Second run of both, as after a power cut before the stamp: nothing restarted, nothing re-initialised. The
    // master, its role not elected on this run, first stops its own DHCP server (which would answer its own probe),
    // finds no other master, and starts it again.
    // The master recorded the swarm its init made: the second run keeps that swarm.
    let cluster_id = m
        .dockerd
        .docker(&["info", "--format", "{{.Swarm.Cluster.ID}}"]);
    assert_eq!(
        cluster_lab::host::stamp::read_swarm_made(&m.root).as_deref(),
        Some(cluster_id.trim())
    );
    let before_m = m.services.calls().len();
    let before_n = n.services.calls().len();
    assert_eq!(run_master(&m), m_addr);
    assert_eq!(run_node(&n), n_addr);
    let again_m = &m.services.calls()[before_m..];
    let again_n = &n.services.calls()[before_n..];
    assert!(
        again_m.iter().all(|c| !c.contains("restart=true")),
        "{again_m:?}"
    );
    let dhcpd = "cluster-lab-dhcpd@clfbm.200.service";
    let stopped = again_m.iter().position(|c| *c == format!("stop {dhcpd}"));
    let started = again_m
        .iter()
        .position(|c| *c == format!("start {dhcpd} restart=false"));
    assert!(
        matches!((stopped, started), (Some(s), Some(t)) if s < t),
        "{again_m:?}"
    );
    assert!(m
        .services
        .dhcpd
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(Daemon::is_running));
    assert!(
        again_n
            .iter()
            .all(|c| !c.contains("restart=true") && !c.starts_with("reload")),
        "{again_n:?}"
    );
    assert_eq!(m.dockerd.docker(&["node", "ls", "-q"]).lines().count(), 2);
    assert_eq!(
        m.dockerd
            .docker(&["info", "--format", "{{.Swarm.Cluster.ID}}"]),
        cluster_id
    );
}
