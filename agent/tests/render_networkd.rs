//! systemd-networkd files for the cluster VLAN, compared with golden files.

mod golden;

use cluster_lab::config::Settings;
use cluster_lab::election::ClusterRole;
use cluster_lab::host::networkd;

fn check_role(role: ClusterRole, suffix: &str) {
    let files = networkd::render(&Settings::default().network, role).unwrap();
    let names = ["eth0.network", "eth0.200.netdev", "eth0.200.network"];
    assert_eq!(files.len(), names.len());
    for (file, name) in files.iter().zip(names) {
        assert_eq!(file.mode, 0o644);
        golden::check(&format!("networkd-{suffix}-{name}"), &file.contents);
    }
}

#[test]
fn master_files_match_golden() {
    check_role(ClusterRole::Master, "master");
}

#[test]
fn node_files_match_golden() {
    check_role(ClusterRole::Node, "node");
}

#[test]
fn parent_and_netdev_do_not_depend_on_the_role() {
    let net = Settings::default().network;
    let m = networkd::render(&net, ClusterRole::Master).unwrap();
    let n = networkd::render(&net, ClusterRole::Node).unwrap();
    assert_eq!(m[..2], n[..2]);
    assert_ne!(m[2], n[2]);
}

#[test]
fn other_interface_and_vlan_id_flow_into_every_file() {
    let mut net = Settings::default().network;
    net.interface = "end0".into();
    net.vlan = 42;
    net.master = "10.42.0.1".parse().unwrap();
    net.subnet = "10.42.0.0/16".parse().unwrap();
    let files = networkd::render(&net, ClusterRole::Master).unwrap();
    assert!(files[0].contents.contains("Name=end0\n"));
    assert!(files[0].contents.contains("VLAN=end0.42\n"));
    assert!(files[1].contents.contains("Id=42\n"));
    assert!(files[2].contents.contains("Address=10.42.0.1/16\n"));
    assert_eq!(
        files[2].path.to_str(),
        Some("/etc/systemd/network/10-cluster-lab-end0.42.network")
    );
}

#[test]
fn overlay_default_has_the_name_the_rendered_parent_file_replaces() {
    let overlay = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../overlays/usr/lib/systemd/network/10-cluster-lab-eth0.network");
    assert!(overlay.is_file(), "{} missing", overlay.display());
    let files = networkd::render(&Settings::default().network, ClusterRole::Node).unwrap();
    assert_eq!(files[0].path.file_name(), overlay.file_name());
}
