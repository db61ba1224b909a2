//! Consul agent configuration for the master (server) and nodes (client), compared with golden files.

mod golden;

use cluster_lab::consul::config::{datacenter_name, AgentConfig, BindAddr, ConsulParams, DATA_DIR};
use cluster_lab::secret::gossip_key;

fn params(node: &str, bind: BindAddr) -> ConsulParams {
    ConsulParams {
        datacenter: datacenter_name("cluster-lab"),
        node_name: node.into(),
        node_id: cluster_lab::secret::consul_node_id("golden-secret", node),
        data_dir: DATA_DIR.into(),
        bind,
        master: "192.168.200.1".parse().unwrap(),
        gossip_key: gossip_key("golden-secret"),
        management_token: cluster_lab::secret::consul_management_token("golden-secret"),
    }
}

#[test]
fn server_config_matches_golden() {
    let cfg = AgentConfig::server(&params(
        "master",
        BindAddr::Addr("192.168.200.1".parse().unwrap()),
    ));
    let file = cfg.render();
    assert_eq!(file.path.to_str(), Some("/etc/consul.d/cluster-lab.json"));
    assert_eq!((file.mode, file.group), (0o640, Some("consul")));
    golden::check("consul-server.json", &file.contents);
}

#[test]
fn client_config_matches_golden() {
    let cfg = AgentConfig::client(&params("node-1", BindAddr::Interface("eth0.200".into())));
    golden::check("consul-client.json", &cfg.render().contents);
}

#[test]
fn server_and_client_share_the_gossip_key_and_datacenter() {
    let s = AgentConfig::server(&params(
        "m",
        BindAddr::Addr("192.168.200.1".parse().unwrap()),
    ));
    let c = AgentConfig::client(&params("n", BindAddr::Interface("eth0.200".into())));
    assert_eq!(s.encrypt, c.encrypt);
    assert_eq!(s.datacenter, c.datacenter);
    assert_eq!(c.retry_join, ["192.168.200.1"]);
}

/// Every key rendered must be one Consul 1.8.7 accepts: checked by Consul itself when it is installed (root tier
/// installs it with ci/install-consul.sh); the plain tier checks the key list against the 1.8 documentation.
#[test]
fn only_consul_1_8_keys_are_used() {
    const KNOWN_1_8: &[&str] = &[
        "datacenter",
        "node_name",
        "node_id",
        "data_dir",
        "server",
        "bootstrap_expect",
        "ui",
        "client_addr",
        "bind_addr",
        "advertise_addr",
        "encrypt",
        "primary_datacenter",
        "acl",
        "disable_remote_exec",
        "enable_script_checks",
        "retry_join",
        "retry_interval",
        "performance",
        "leave_on_terminate",
        "disable_update_check",
        "dns_config",
    ];
    for cfg in [
        AgentConfig::server(&params(
            "m",
            BindAddr::Addr("192.168.200.1".parse().unwrap()),
        )),
        AgentConfig::client(&params("n", BindAddr::Interface("eth0.200".into()))),
    ] {
        let v = serde_json::to_value(&cfg).unwrap();
        for key in v.as_object().unwrap().keys() {
            assert!(
                KNOWN_1_8.contains(&key.as_str()),
                "{key} is not a Consul 1.8 key"
            );
        }
    }
}

#[test]
fn acls_deny_by_default_and_only_the_master_bootstraps_the_token() {
    let s = AgentConfig::server(&params(
        "master",
        BindAddr::Addr("192.168.200.1".parse().unwrap()),
    ));
    let c = AgentConfig::client(&params("node-1", BindAddr::Interface("eth0.200".into())));
    let token = cluster_lab::secret::consul_management_token("golden-secret");
    for cfg in [&s, &c] {
        assert!(cfg.acl.enabled);
        assert_eq!(cfg.acl.default_policy, "deny");
        assert_eq!(cfg.acl.tokens.agent, token);
        assert_eq!(cfg.primary_datacenter, cfg.datacenter);
        assert!(cfg.disable_remote_exec && !cfg.enable_script_checks);
    }
    assert_eq!(s.acl.tokens.master.as_deref(), Some(token.as_str()));
    assert_eq!(c.acl.tokens.master, None);
}
