//! Root tier: a real Consul 1.8 server and client, each in its own network namespace, started from the
//! configuration cluster-lab renders, joined over a veth pair (standing in for the VLAN), with gossip encrypted by
//! the key derived from the cluster secret. cluster-lab's own Consul client registers a service and reads members.

mod nslab;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use cluster_lab::consul::api::Service;
use cluster_lab::consul::config::{datacenter_name, AgentConfig, BindAddr, ConsulParams};
use cluster_lab::consul::ConsulClient;
use cluster_lab::secret::gossip_key;
use nslab::{require_root, require_tool, run, veth, wait_for, Daemon, Netns};

const SECRET: &str = "root-test-cluster-secret";

fn local() -> ConsulClient {
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
    require_root();
    require_tool(
        "consul",
        "run ci/install-consul.sh (Consul 1.8.7 from Debian bullseye)",
    );
    let version = run(Command::new("consul").arg("version"));
    assert!(
        version.starts_with("Consul v1.8."),
        "need Consul 1.8 (the image's version), found {version}"
    );

    let srv = Netns::new("cl-consul-srv");
    let cli = Netns::new("cl-consul-cli");
    veth(
        &srv,
        "clcons0",
        "192.0.2.1/24",
        &cli,
        "clcons1",
        "192.0.2.101/24",
    );
    let dir = tempfile::tempdir().unwrap();

    let params = |node: &str, bind, data: &str| ConsulParams {
        datacenter: datacenter_name("root-test"),
        node_name: node.into(),
        node_id: cluster_lab::secret::consul_node_id(SECRET, node),
        data_dir: dir.path().join(data).to_string_lossy().into_owned(),
        bind,
        master: "192.0.2.1".parse().unwrap(),
        gossip_key: gossip_key(SECRET),
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
    let server_file = write_config(dir.path(), "server.json", &server_cfg);
    let client_file = write_config(dir.path(), "client.json", &client_cfg);

    // Consul itself accepts both files (the client's only where its interface exists).
    run(srv.command("consul").args(["validate", &server_file]));
    run(cli.command("consul").args(["validate", &client_file]));

    let mut cmd = srv.command("consul");
    cmd.args(["agent", "-config-file", &server_file]);
    let mut server = Daemon::spawn("consul server", cmd, &dir.path().join("server.log"));
    let mut cmd = cli.command("consul");
    cmd.args(["agent", "-config-file", &client_file]);
    let mut client = Daemon::spawn("consul client", cmd, &dir.path().join("client.log"));

    // Both alive, as the client's agent sees them through cluster-lab's client.
    let members = wait_for("both members alive", Duration::from_secs(90), || {
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
    });
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
    let table = run(cli
        .command("consul")
        .args(["members", "-http-addr=127.0.0.1:8500"]));
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
    let keyring =
        run(srv
            .command("consul")
            .args(["keyring", "-list", "-http-addr=127.0.0.1:8500"]));
    assert!(keyring.contains(&gossip_key(SECRET)), "{keyring}");

    // A leader exists; cluster-lab's client registers a service (twice: idempotent) and reads KV back.
    let leader = wait_for("a raft leader", Duration::from_secs(30), || {
        srv.block_on(async { local().leader().await })
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no leader yet".to_string())
    });
    assert_eq!(leader, "192.0.2.1:8300");
    let service = Service {
        id: "swarm-manager".into(),
        name: "swarm-manager".into(),
        address: Some("192.0.2.1".into()),
        port: Some(2377),
        tags: vec!["cluster-lab".into()],
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
        cluster_lab::status::Status::collect(
            std::path::Path::new("/nonexistent-root"),
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
    client.child.kill().unwrap();
    client.child.wait().unwrap();
    std::fs::remove_dir_all(dir.path().join("cli")).unwrap();
    let mut cmd = cli.command("consul");
    cmd.args(["agent", "-config-file", &client_file]);
    client = Daemon::spawn(
        "consul client (re-flashed)",
        cmd,
        &dir.path().join("client-reflashed.log"),
    );
    wait_for(
        "the re-flashed node-1 alive again in its old place",
        Duration::from_secs(90),
        || {
            client.assert_running();
            let out = srv
                .command("consul")
                .args(["catalog", "nodes", "-detailed", "-http-addr=127.0.0.1:8500"])
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
                Err(format!(
                    "alive {alive}; catalog:\n{table}{}",
                    client.output()
                ))
            }
        },
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
