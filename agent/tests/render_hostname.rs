//! /etc/hostname and /etc/hosts, compared with golden files.

mod golden;

use cluster_lab::host::hostname::{render_hostname_file, render_hosts_file, Hostname};

/// /etc/hosts as Debian's netbase and debootstrap leave it.
const DEBIAN_HOSTS: &str = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n\n\
# The following lines are desirable for IPv6 capable hosts\n::1     localhost ip6-localhost ip6-loopback\n\
ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n";

#[test]
fn hostname_file_matches_golden() {
    let name = Hostname::parse("cluster-master").unwrap();
    golden::check("hostname", &render_hostname_file(&name).contents);
}

#[test]
fn hosts_file_matches_golden_and_is_stable() {
    let name = Hostname::parse("cluster-master").unwrap();
    let hosts = render_hosts_file(DEBIAN_HOSTS, &name);
    golden::check("hosts", &hosts.contents);
    assert_eq!(render_hosts_file(&hosts.contents, &name), hosts);
}

#[test]
fn hosts_without_own_line_gets_one_after_localhost() {
    let name = Hostname::parse("node-3").unwrap();
    let hosts = render_hosts_file("127.0.0.1 localhost\n::1 localhost\n", &name);
    assert_eq!(
        hosts.contents,
        "127.0.0.1 localhost\n127.0.1.1\tnode-3\n::1 localhost\n"
    );
}
