//! Root tier: creating the cluster VLAN over netlink inside a network namespace. On a kernel with 802.1Q the VLAN
//! is created with the tag-adjusted MTU and a second run changes nothing; on a kernel without it (like the machine
//! this project is developed on) the error names the missing module instead of a bare errno.

mod support;

use std::process::Command;

use cluster_lab::net::vlan::{self, VlanError};
use support::{Lab, Netns};

/// A lab `id` with one namespace holding a veth pair `a`/`b` (both ends inside, down).
fn with_veth(id: &str, a: &str, b: &str) -> (Lab, Netns) {
    let mut lab = Lab::new(id);
    let ns = lab.netns("ns");
    ns.ip(["link", "add", a, "type", "veth", "peer", "name", b]);
    (lab, ns)
}

#[test]
fn vlan_is_created_once_or_the_missing_kernel_support_is_named() {
    let (_lab, ns) = with_veth("vlan", "clvl0", "clvl1");
    let kernel_has_8021q = std::path::Path::new("/sys/module/8021q").exists()
        || Command::new("modprobe")
            .arg("8021q")
            .status()
            .is_ok_and(|s| s.success());
    let result = ns.block_on(async { vlan::ensure("clvl0", "clvl0.200", 200, 1496).await });
    if kernel_has_8021q {
        assert!(result.unwrap(), "first run creates the VLAN");
        let again = ns.block_on(async { vlan::ensure("clvl0", "clvl0.200", 200, 1496).await });
        assert!(!again.unwrap(), "second run changes nothing");
        let link = ns.ip(["-d", "link", "show", "clvl0.200"]);
        assert!(
            link.contains("mtu 1496") && link.contains("vlan protocol 802.1Q id 200"),
            "{link}"
        );
        assert!(link.contains(",UP"), "{link}");
    } else {
        let err = result.unwrap_err();
        assert!(matches!(err, VlanError::NoKernelSupport { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "creating clvl0.200 (VLAN 200 on clvl0): the kernel has no 802.1Q support (module 8021q)"
        );
    }
    // A missing parent is named as such.
    let err = ns
        .block_on(async { vlan::ensure("nosuch0", "nosuch0.200", 200, 1496).await })
        .unwrap_err();
    assert!(matches!(err, VlanError::NoParent { .. }), "{err:?}");
}

#[test]
fn an_address_is_added_once_and_an_unknown_interface_is_named() {
    let (_lab, ns) = with_veth("vaddr", "clva0", "clva1");
    let master = std::net::Ipv4Addr::new(192, 168, 200, 1);
    let first = ns.block_on(async move { vlan::add_address("clva0", master, 24).await });
    assert!(first.unwrap(), "first call adds the address");
    let again = ns.block_on(async move { vlan::add_address("clva0", master, 24).await });
    assert!(!again.unwrap(), "second call finds it there");
    let addrs = ns.ip(["-4", "-o", "addr", "show", "clva0"]);
    assert_eq!(addrs.matches("192.168.200.1/24").count(), 1, "{addrs}");
    let err = ns
        .block_on(async move { vlan::add_address("nosuch0", master, 24).await })
        .unwrap_err();
    assert!(matches!(err, VlanError::NoParent { .. }), "{err:?}");
}
