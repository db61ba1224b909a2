//! Root tier: real dockerd engines, each in its own network namespace with its own data root, exec root and unix
//! socket (never TCP). cluster-lab's swarm code initialises a swarm (a second run is a no-op), reads the worker
//! token, joins a worker (again idempotent), and labels it; `docker node ls` is the oracle.

mod nslab;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster_lab::swarm::{Outcome, Swarm};
use nslab::{require_root, require_tool, run, veth, wait_for, Daemon, Netns};

struct Engine {
    ns: Netns,
    socket: PathBuf,
    exec_root: PathBuf,
    daemon: Option<Daemon>,
}

impl Engine {
    fn start(ns: Netns, dir: &Path, name: &str) -> Engine {
        let root = dir.join(name);
        let exec_root = root.join("exec");
        let socket = root.join("docker.sock");
        std::fs::create_dir_all(&root).unwrap();
        let mut cmd = ns.command("dockerd");
        cmd.arg(format!("--data-root={}", root.join("data").display()))
            .arg(format!("--exec-root={}", exec_root.display()))
            .arg(format!("--pidfile={}", root.join("docker.pid").display()))
            .arg(format!("--host=unix://{}", socket.display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"]);
        let daemon = Daemon::spawn(&format!("dockerd {name}"), cmd, &root.join("dockerd.log"));
        Engine {
            ns,
            socket,
            exec_root,
            daemon: Some(daemon),
        }
    }

    fn connect(&self) -> Swarm {
        let socket = self.socket.clone();
        let connected = self
            .ns
            .block_on(async move { Swarm::connect(&socket, Duration::from_secs(60)).await });
        match connected {
            Ok(s) => s,
            Err(e) => panic!("{e}\n{}", self.daemon.as_ref().unwrap().output()),
        }
    }

    fn block_on<F, T>(&self, f: F) -> T
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.ns.block_on(f)
    }

    fn docker(&self, args: &[&str]) -> String {
        run(Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .args(args))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        // dockerd's own containerd, if it outlived dockerd.
        let pidfile = self.exec_root.join("containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Namespace files of swarm's ingress sandbox stay mounted under the exec root; unmount whatever is left
        // there (deepest first) so the temporary directory can be removed.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefix = self.exec_root.to_string_lossy().into_owned();
        let mut left: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        left.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in left {
            let _ = Command::new("umount").args(["-l", m]).output();
        }
    }
}

#[test]
fn manager_init_is_idempotent_and_a_worker_joins_with_the_token() {
    require_root();
    require_tool(
        "dockerd",
        "install Debian's docker.io (listed in ci/apt-packages.txt)",
    );
    require_tool(
        "docker",
        "install Debian's docker.io (listed in ci/apt-packages.txt)",
    );
    let dir = tempfile::tempdir().unwrap();
    let mgr_ns = Netns::new("cl-swarm-mgr");
    let wrk_ns = Netns::new("cl-swarm-wrk");
    veth(
        &mgr_ns,
        "clswm0",
        "192.0.2.1/24",
        &wrk_ns,
        "clswm1",
        "192.0.2.101/24",
    );
    let mgr_addr: Ipv4Addr = "192.0.2.1".parse().unwrap();
    let wrk_addr: Ipv4Addr = "192.0.2.101".parse().unwrap();
    let manager = Engine::start(mgr_ns, dir.path(), "mgr");
    let worker = Engine::start(wrk_ns, dir.path(), "wrk");

    let m = manager.connect();
    let before = {
        let m = m.clone();
        manager
            .block_on(async move { m.local_state().await })
            .unwrap()
    };
    assert_eq!(before.state, "inactive");

    // init, then init again: the second run inspects the state and does nothing.
    for expected in [Outcome::Done, Outcome::AlreadyDone] {
        let m = m.clone();
        let outcome = manager
            .block_on(async move { m.init(mgr_addr).await })
            .unwrap();
        assert_eq!(outcome, expected);
    }
    let state = {
        let m = m.clone();
        manager
            .block_on(async move { m.local_state().await })
            .unwrap()
    };
    assert!(state.is_active() && state.manager, "{state:?}");
    assert_eq!(state.node_addr.as_deref(), Some("192.0.2.1"));
    let token = {
        let m = m.clone();
        manager
            .block_on(async move { m.worker_token().await })
            .unwrap()
    };
    assert!(token.starts_with("SWMTKN-1-"), "{token}");

    // The routing mesh gets the overlay MTU that fits the VLAN, once: the overlay driver's option carries the
    // VLAN's MTU (1496); root_ingress checks the interfaces and the race right after init.
    for expected in [Outcome::Done, Outcome::AlreadyDone] {
        let m = m.clone();
        let outcome = manager
            .block_on(async move { cluster_lab::overlay::ensure_ingress_mtu(&m, 1496).await })
            .unwrap();
        assert_eq!(outcome, expected);
    }
    let ingress = manager.docker(&[
        "network",
        "inspect",
        "ingress",
        "--format",
        "{{json .Options}}",
    ]);
    assert!(
        ingress.contains("\"com.docker.network.driver.mtu\":\"1496\""),
        "{ingress}"
    );

    // The worker joins with the token, twice: the second is a no-op.
    let w = worker.connect();
    for expected in [Outcome::Done, Outcome::AlreadyDone] {
        let (w, token) = (w.clone(), token.clone());
        let outcome = worker
            .block_on(async move { w.join(wrk_addr, mgr_addr, &token).await })
            .unwrap();
        assert_eq!(outcome, expected);
    }

    let nodes = wait_for("two ready nodes", Duration::from_secs(60), || {
        let m = m.clone();
        let nodes = manager
            .block_on(async move { m.nodes().await })
            .map_err(|e| e.to_string())?;
        if nodes.len() == 2 && nodes.iter().all(|n| n.state == "ready") {
            Ok(nodes)
        } else {
            Err(format!("{nodes:?}"))
        }
    });
    let worker_node = nodes.iter().find(|n| n.role == "worker").expect("a worker");
    assert_eq!(worker_node.addr, "192.0.2.101");

    // Label the worker (arch, hostname), twice.
    for expected in [Outcome::Done, Outcome::AlreadyDone] {
        let (m, id) = (m.clone(), worker_node.id.clone());
        let outcome = manager
            .block_on(async move { m.label_node(&id, &[("cluster-lab.arch", "amd64")]).await })
            .unwrap();
        assert_eq!(outcome, expected);
    }
    let inspect = manager.docker(&[
        "node",
        "inspect",
        &worker_node.id,
        "--format",
        "{{json .Spec.Labels}}",
    ]);
    assert!(
        inspect.contains("\"cluster-lab.arch\":\"amd64\""),
        "{inspect}"
    );

    // The oracle: `docker node ls` on the manager shows both Ready.
    let table = manager.docker(&["node", "ls", "--format", "{{.Status}} {{.ManagerStatus}}"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines.iter().all(|l| l.starts_with("Ready")), "{table}");
    assert!(lines.iter().any(|l| l.contains("Leader")), "{table}");
}
