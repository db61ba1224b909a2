//! The firewall ruleset, compared with golden files; that nftables accepts it and that it does what it says is
//! root_firewall's part.

mod golden;

use cluster_lab::config::Settings;
use cluster_lab::host::firewall;

#[test]
fn default_network_matches_golden() {
    let file = firewall::render(&Settings::default().network).unwrap();
    assert_eq!(file.path.to_str(), Some(firewall::PATH));
    assert_eq!(file.mode, 0o644);
    golden::check("firewall-eth0.200.nft", &file.contents);
}

#[test]
fn a_long_interface_name_gives_the_vlan_name_networkd_uses() {
    let mut net = Settings::default().network;
    net.interface = "enxb827eb123456".into();
    net.vlan = 42;
    net.subnet = "10.42.0.0/16".parse().unwrap();
    let file = firewall::render(&net).unwrap();
    golden::check("firewall-vlan42.nft", &file.contents);
    assert!(file
        .contents
        .contains("iifname \"vlan42\" jump from_cluster"));
    assert!(file.contents.contains("ip daddr 10.42.0.0/16 drop"));
    // The name the VLAN gets comes from one place, the same the networkd files use.
    assert_eq!(net.vlan_interface(), "vlan42");
}

#[test]
fn the_table_is_replaced_never_the_whole_ruleset_flushed() {
    let text = firewall::render(&Settings::default().network)
        .unwrap()
        .contents;
    assert!(!text.contains("flush ruleset"), "{text}");
    let table = format!("table inet {}", firewall::TABLE);
    let delete = format!("delete table inet {}", firewall::TABLE);
    let lines: Vec<&str> = text.lines().collect();
    let at = |l: &str| lines.iter().position(|x| *x == l);
    // Declared (so the delete cannot fail on a first load), deleted, declared with its rules: one transaction.
    assert!(at(&table) < at(&delete) && at(&delete).is_some(), "{text}");
    assert!(text.contains(&format!("{table} {{")), "{text}");
}
