//! Root tier: real dockerd engines, each in its own network namespace with its own data root, exec root and unix
//! socket (never TCP). cluster-lab's swarm code initialises a swarm (a second run is a no-op), reads the worker
//! token, joins a worker (again idempotent), and labels it; `docker node ls` is the oracle.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use cluster_lab::docker::swarm::Outcome;
use support::dockerd::{require_docker, Dockerd};
use support::{wait_for, Lab};

#[test]
fn manager_init_is_idempotent_and_a_worker_joins_with_the_token() {
    let mut lab = Lab::new("swarm");
    require_docker();
    let mgr_ns = lab.netns("mgr");
    let wrk_ns = lab.netns("wrk");
    lab.veth(&mgr_ns, "clswm0", &wrk_ns, "clswm1");
    mgr_ns.add_addr("clswm0", "192.0.2.1/24");
    wrk_ns.add_addr("clswm1", "192.0.2.101/24");
    let mgr_addr: Ipv4Addr = "192.0.2.1".parse().unwrap();
    let wrk_addr: Ipv4Addr = "192.0.2.101".parse().unwrap();
    let manager = Dockerd::start(&mgr_ns, lab.dir(), "mgr");
    let worker = Dockerd::start(&wrk_ns, lab.dir(), "wrk");

    let m = manager.connect();
    let before = manager
        .block_on(&m, |m| async move { m.local_state().await })
        .unwrap();
    assert_eq!(before.state, "inactive");

    // init, then init again: the second run inspects the state and does nothing.
    let (outcome, made) = manager
        .block_on(&m, |m| async move { m.init(mgr_addr, None).await })
        .unwrap();
    assert_eq!(outcome, Outcome::Done);
    let again = made.clone();
    let (outcome, same) = manager
        .block_on(&m, |m| async move { m.init(mgr_addr, Some(&again)).await })
        .unwrap();
    assert_eq!((outcome, &same), (Outcome::AlreadyDone, &made));
    // An active swarm that no completed init recorded (a power cut inside `swarm init`) is left and made afresh.
    let (outcome, fresh) = manager
        .block_on(&m, |m| async move { m.init(mgr_addr, None).await })
        .unwrap();
    assert_eq!(outcome, Outcome::Done);
    assert_ne!(fresh, made, "a new swarm, not the unrecorded one");
    let state = manager
        .block_on(&m, |m| async move { m.local_state().await })
        .unwrap();
    assert!(state.is_active() && state.manager, "{state:?}");
    assert_eq!(state.node_addr.as_deref(), Some("192.0.2.1"));
    let token = manager
        .block_on(&m, |m| async move { m.worker_token().await })
        .unwrap();
    assert!(token.starts_with("SWMTKN-1-"), "{token}");

    // The routing mesh gets the overlay MTU that fits the VLAN, once: the overlay driver's option carries the
    // VLAN's MTU (1496); root_ingress checks the interfaces and the race right after init.
    for expected in [Outcome::Done, Outcome::AlreadyDone] {
        let outcome = manager
            .block_on(&m, |m| async move {
                cluster_lab::docker::ingress::ensure_ingress_mtu(&m, 1496).await
            })
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
        let token = token.clone();
        let outcome = worker
            .block_on(
                &w,
                |w| async move { w.join(wrk_addr, mgr_addr, &token).await },
            )
            .unwrap();
        assert_eq!(outcome, expected);
    }

    let nodes = wait_for(
        Duration::from_secs(60),
        "two ready nodes",
        || -> Result<_, String> {
            let nodes = manager
                .block_on(&m, |m| async move { m.nodes().await })
                .map_err(|e| e.to_string())?;
            if nodes.len() == 2 && nodes.iter().all(|n| n.state == "ready") {
                Ok(nodes)
            } else {
                Err(format!("{nodes:?}"))
            }
        },
        || format!("{}{}", manager.report(), worker.report()),
    );
    let worker_node = nodes.iter().find(|n| n.role == "worker").expect("a worker");
    assert_eq!(worker_node.addr, "192.0.2.101");

    // Label the worker (arch, hostname), twice.
    for expected in [Outcome::Done, Outcome::AlreadyDone] {
        let id = worker_node.id.clone();
        let outcome = manager
            .block_on(&m, |m| async move {
                m.label_node(&id, &[("cluster-lab.arch", "amd64")]).await
            })
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
