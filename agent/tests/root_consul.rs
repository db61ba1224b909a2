//! Root tier: a real Consul 1.8 server and client, each in its own network namespace, started from the
//! configuration cluster-lab renders, joined over a veth pair (standing in for the VLAN), with gossip encrypted by
//! the key derived from the cluster secret. cluster-lab's own Consul client registers a service and reads members.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use cluster_lab::consul::api::Service;
use cluster_lab::consul::config::{datacenter_name, AgentConfig, BindAddr, ConsulParams};
use cluster_lab::consul::ConsulClient;
use cluster_lab::secret::gossip_key;
use support::{cmd, require_tool, run, wait_for, Daemon, Lab, Netns};

const SECRET: &str = "root-test-cluster-secret";

/// This namespace's agent, with the management token (as first boot uses it).
fn local() -> ConsulClient {
    anonymous().with_token(cluster_lab::secret::consul_management_token(SECRET))
}

/// This namespace's agent without a token: what a guest on the home LAN gets.
fn anonymous() -> ConsulClient {
    ConsulClient::new("127.0.0.1:8500".parse::<SocketAddr>().unwrap())
}

fn write_config(dir: &std::path::Path, name: &str, cfg: &AgentConfig) -> String {
    let path = dir.join(name);
    let file = cfg.render_at(path.to_str().unwrap(), None);
    file.install(std::path::Path::new("/")).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn server_and_client_from_rendered_configs_form_an_encrypted_cluster() {
    let mut lab = Lab::new("consul");
    require_tool(
        "consul",
        "run ci/install-consul.sh (Consul 1.8.7 from Debian bullseye)",
    );
    let version = run(&mut cmd("consul", ["version"]));
    assert!(
        version.starts_with("Consul v1.8."),
        "need Consul 1.8 (the image's version), found {version}"
    );

    let srv = lab.netns("srv");
    let cli = lab.netns("cli");
    lab.veth(&srv, "clcons0", &cli, "clcons1");
    srv.add_addr("clcons0", "192.0.2.1/24");
    cli.add_addr("clcons1", "192.0.2.101/24");
    let dir = lab.dir();

    let params = |node: &str, bind, data: &str| ConsulParams {
        datacenter: datacenter_name("root-test"),
        node_name: node.into(),
        node_id: cluster_lab::secret::consul_node_id(SECRET, node),
        data_dir: dir.join(data).to_string_lossy().into_owned(),
        bind,
        master: "192.0.2.1".parse().unwrap(),
        gossip_key: gossip_key(SECRET),
        management_token: cluster_lab::secret::consul_management_token(SECRET),
    };
    let server_cfg = AgentConfig::server(&params(
        "master",
        BindAddr::Addr("192.0.2.1".parse().unwrap()),
        "srv",
    ));
    // The client binds through the go-sockaddr template, as on a node whose address comes from DHCP.
    let client_cfg = AgentConfig::client(&params(
        "node-1",
        BindAddr::Interface("clcons1".into()),
        "cli",
    ));
    let server_file = write_config(dir, "server.json", &server_cfg);
    let client_file = write_config(dir, "client.json", &client_cfg);

    // Consul itself accepts both files (the client's only where its interface exists).
    run(&mut srv.nsenter("consul", ["validate", &server_file]));
    run(&mut cli.nsenter("consul", ["validate", &client_file]));

    let agent = |ns: &Netns, file: &str| ns.nsenter("consul", ["agent", "-config-file", file]);
    let server = Daemon::spawn(
        "consul server",
        agent(&srv, &server_file),
        &dir.join("server.log"),
    );
    let mut client = Daemon::spawn(
        "consul client",
        agent(&cli, &client_file),
        &dir.join("client.log"),
    );

    // Both alive, as the client's agent sees them through cluster-lab's client.
    let members = wait_for(
        Duration::from_secs(90),
        "both members alive",
        || -> Result<_, String> {
            server.assert_running();
            client.assert_running();
            let m = cli
                .block_on(async { local().members().await })
                .map_err(|e| e.to_string())?;
            let alive = m.iter().filter(|m| m.is_alive()).count();
            if alive == 2 {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        },
        || format!("{}{}", server.report(), client.report()),
    );
    let names: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
    assert!(
        names.contains(&"master") && names.contains(&"node-1"),
        "{names:?}"
    );
    let master = members.iter().find(|m| m.name == "master").unwrap();
    assert!(master.is_server(), "{master:?}");
    assert_eq!(master.addr, "192.0.2.1");
    let node = members.iter().find(|m| m.name == "node-1").unwrap();
    assert_eq!(
        node.addr, "192.0.2.101",
        "client bound through the interface template"
    );

    // The oracle: `consul members` itself.
    let token = format!(
        "-token={}",
        cluster_lab::secret::consul_management_token(SECRET)
    );
    let table = run(&mut cli.nsenter(
        "consul",
        ["members", "-http-addr=127.0.0.1:8500", token.as_str()],
    ));
    for name in ["master", "node-1"] {
        let line = table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from `consul members`:\n{table}"));
        assert!(line.contains("alive"), "{line}");
    }

    // Gossip is encrypted, with the key derived from the cluster secret.
    for (ns, server_expected) in [(&srv, true), (&cli, false)] {
        let me = ns.block_on(async { local().agent_self().await }).unwrap();
        assert!(me.gossip_encrypted, "{me:?}");
        assert_eq!(me.server, server_expected);
        assert_eq!(me.datacenter, "root-test");
    }
    let keyring = run(&mut srv.nsenter(
        "consul",
        [
            "keyring",
            "-list",
            "-http-addr=127.0.0.1:8500",
            token.as_str(),
        ],
    ));
    assert!(keyring.contains(&gossip_key(SECRET)), "{keyring}");

    // A leader exists; cluster-lab's client registers a service (twice: idempotent) and reads KV back.
    let leader = wait_for(
        Duration::from_secs(30),
        "a raft leader",
        || -> Result<_, String> {
            srv.block_on(async { local().leader().await })
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "no leader yet".to_string())
        },
        || server.report(),
    );
    assert_eq!(leader, "192.0.2.1:8300");

    // ACLs deny by default; first boot's step gives the anonymous token read access to nodes and services (once,
    // then it finds it done), and a request without a token can read the catalog and nothing else.
    use cluster_lab::consul::acl::{ensure_anonymous_read, Outcome};
    let first = wait_for(
        Duration::from_secs(60),
        "the anonymous token made read-only",
        || -> Result<_, String> {
            srv.block_on(async { ensure_anonymous_read(&local()).await })
                .map_err(|e| e.to_string())
        },
        || server.report(),
    );
    assert_eq!(first, Outcome::Applied);
    let again = srv
        .block_on(async { ensure_anonymous_read(&local()).await })
        .unwrap();
    assert_eq!(again, Outcome::AlreadyDone);
    let seen = wait_for(
        Duration::from_secs(60),
        "both members listed to an anonymous request",
        || -> Result<_, String> {
            let m = srv
                .block_on(async { anonymous().members().await })
                .map_err(|e| e.to_string())?;
            if m.len() == 2 {
                Ok(m)
            } else {
                Err(format!("{m:?}"))
            }
        },
        || server.report(),
    );
    assert_eq!(seen.len(), 2);
    // The client registers its node in the catalog (with its agent token) a moment after it joins.
    let node_seen = wait_for(
        Duration::from_secs(60),
        "node-1 alive in the catalog, to an anonymous request",
        || -> Result<_, String> {
            match srv.block_on(async { anonymous().catalog_node("node-1").await }) {
                Ok(Some(n)) if n.alive => Ok(n),
                other => Err(format!("{other:?}")),
            }
        },
        || format!("{}{}", server.report(), client.report()),
    );
    assert_eq!(node_seen.address, "192.0.2.101");
    for (what, denied) in [
        (
            "KV write",
            srv.block_on(async { anonymous().kv_put("cluster-lab/guest", b"x").await }),
        ),
        (
            "KV read",
            srv.block_on(async { anonymous().kv_get("cluster-lab/guest").await.map(drop) }),
        ),
        (
            "agent self",
            srv.block_on(async { anonymous().agent_self().await.map(drop) }),
        ),
        (
            "force-leave",
            srv.block_on(async { anonymous().force_leave("node-1").await }),
        ),
    ] {
        let err = denied.expect_err(what).to_string();
        assert!(err.contains("HTTP 403"), "{what}: {err}");
    }
    let denied_keyring = srv
        .nsenter("consul", ["keyring", "-list", "-http-addr=127.0.0.1:8500"])
        .output()
        .unwrap();
    assert!(
        !denied_keyring.status.success(),
        "keyring listed without a token"
    );
    let service = Service {
        id: "swarm-manager".into(),
        name: "swarm-manager".into(),
        address: Some("192.0.2.1".into()),
        port: Some(2377),
        tags: vec!["cluster-lab".into()],
        ..Default::default()
    };
    for _ in 0..2 {
        let s = service.clone();
        srv.block_on(async move { local().register_service(&s).await })
            .unwrap();
    }
    let services = srv.block_on(async { local().services().await }).unwrap();
    assert_eq!(
        services.iter().filter(|s| *s == "swarm-manager").count(),
        1,
        "{services:?}"
    );
    // The node reads what the master wrote, through its own agent.
    srv.block_on(async { local().kv_put("cluster-lab/test", b"hello").await })
        .unwrap();
    let value = cli
        .block_on(async { local().kv_get("cluster-lab/test").await })
        .unwrap();
    assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    let missing = cli
        .block_on(async { local().kv_get("cluster-lab/none").await })
        .unwrap();
    assert_eq!(missing, None);

    // The swarm join token travels sealed: the master stores it, the node opens it with the same secret.
    let sealed = cluster_lab::docker::join_token::seal(SECRET, "SWMTKN-1-root-test");
    srv.block_on(async move {
        local()
            .kv_put(cluster_lab::docker::join_token::KV_KEY, sealed.as_bytes())
            .await
    })
    .unwrap();
    let stored = cli
        .block_on(async {
            local()
                .kv_get(cluster_lab::docker::join_token::KV_KEY)
                .await
        })
        .unwrap()
        .expect("token stored");
    assert_eq!(
        cluster_lab::docker::join_token::open(SECRET, &stored).unwrap(),
        "SWMTKN-1-root-test"
    );
    assert!(cluster_lab::docker::join_token::open("another-cluster-secret", &stored).is_err());

    // `cluster-lab status` reads the same agent: healthy Consul, and no dockerd here is reported as a problem.
    let status = srv.block_on(async {
        // No home LAN in this lab: loopback stands in for the wired link.
        cluster_lab::status::Status::collect(
            std::path::Path::new("/nonexistent-root"),
            "lo",
            "clcons0",
            &local(),
            std::path::Path::new("/nonexistent/docker.sock"),
        )
        .await
    });
    assert_eq!(status.consul_leader.as_deref(), Some("192.0.2.1:8300"));
    assert_eq!(
        status
            .consul_members
            .iter()
            .filter(|m| m.is_alive())
            .count(),
        2
    );
    assert_eq!(
        status.vlan_addresses,
        ["192.0.2.1".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(status.problems.len(), 1, "{:?}", status.problems);
    assert!(
        status.problems[0].starts_with("docker not answering"),
        "{:?}",
        status.problems
    );
    assert!(status.to_text().contains("problem: docker not answering"));

    // A re-flashed card: the node loses power (SIGKILL: it never leaves), comes back as a fresh card (an empty
    // data dir) with the same hostname, so with the same rendered configuration — node ID included. It takes its
    // old place: one node-1 in the catalog, with that ID, alive (a new random ID would be refused: the name is
    // the old node's).
    let node_id = cluster_lab::secret::consul_node_id(SECRET, "node-1");
    assert!(client_cfg.node_id == node_id && server_cfg.node_id != node_id);
    client.assert_running();
    client.kill9();
    std::fs::remove_dir_all(dir.join("cli")).unwrap();
    client = Daemon::spawn(
        "consul client (re-flashed)",
        agent(&cli, &client_file),
        &dir.join("client-reflashed.log"),
    );
    wait_for(
        Duration::from_secs(90),
        "the re-flashed node-1 alive again in its old place",
        || -> Result<_, String> {
            client.assert_running();
            let out = srv
                .nsenter(
                    "consul",
                    ["catalog", "nodes", "-detailed", "-http-addr=127.0.0.1:8500"],
                )
                .output()
                .map_err(|e| e.to_string())?;
            let table = String::from_utf8_lossy(&out.stdout).into_owned();
            let rows: Vec<&str> = table
                .lines()
                .filter(|l| l.split_whitespace().next() == Some("node-1"))
                .collect();
            let alive = cli
                .block_on(async { local().members().await })
                .map_err(|e| e.to_string())?
                .iter()
                .any(|m| m.name == "node-1" && m.is_alive());
            if rows.len() == 1 && rows[0].contains(&node_id) && alive {
                Ok(())
            } else {
                Err(format!("alive {alive}; catalog:\n{table}"))
            }
        },
        || format!("{}{}", server.report(), client.report()),
    );

    // The check a node makes before it joins under its name, against the real catalog: node-1 is alive at
    // 192.0.2.101, so a second machine at another address may not take the name; its own earlier self may.
    let found = srv
        .block_on(async { local().catalog_node("node-1").await })
        .unwrap()
        .expect("node-1 in the catalog");
    assert_eq!((found.address.as_str(), found.alive), ("192.0.2.101", true));
    let taken = cluster_lab::firstboot::node::check_hostname_free(
        "node-1",
        "192.0.2.102".parse().unwrap(),
        Some(&found),
    );
    assert!(taken.is_err(), "{found:?}");
    assert!(cluster_lab::firstboot::node::check_hostname_free(
        "node-1",
        "192.0.2.101".parse().unwrap(),
        Some(&found)
    )
    .is_ok());
    let nobody = srv
        .block_on(async { local().catalog_node("nobody").await })
        .unwrap();
    assert_eq!(nobody, None);

    client.stop();
    server.stop();
}
