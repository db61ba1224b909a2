//! chrony's drop-in for the master (serves the VLAN) and for a node (steps to the master), compared with golden
//! files; that a node with a clock months behind joins is the virtual cluster's Pi 3B check.

mod golden;

use cluster_lab::config::Settings;
use cluster_lab::host::clock;

#[test]
fn the_master_serves_the_cluster_subnet_only() {
    let s = Settings::default();
    let file = clock::render_master(s.network.subnet).unwrap();
    assert_eq!(file.path.to_str(), Some(clock::PATH));
    assert_eq!(file.mode, 0o644);
    golden::check("chrony-master.conf", &file.contents);
    assert!(
        file.contents.contains("\nallow 192.168.200.0/24\n"),
        "{}",
        file.contents
    );
    assert!(!file.contents.contains("allow all"), "{}", file.contents);
}

#[test]
fn a_node_takes_the_master_s_time() {
    let s = Settings::default();
    let file = clock::render_node(s.network.master).unwrap();
    golden::check("chrony-node.conf", &file.contents);
    assert!(
        file.contents.contains("\nserver 192.168.200.1 iburst"),
        "{}",
        file.contents
    );
    // Stepping is Debian's `makestep 1 3`, read after conf.d: a makestep here would be overridden, not used.
    assert!(!file.contents.contains("\nmakestep"), "{}", file.contents);
}
