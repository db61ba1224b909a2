//! Root tier: `cargo xtask bench scale`'s harness at five machines — a master running `cluster-lab dhcpd`, a Consul
//! server and a Swarm manager, five machines leasing, joining Consul, two of them joining the Swarm with the sealed
//! token from KV, and dnsmasq serving the same leases — gets every machine through every phase, says so in its
//! table, and leaves no namespace or raised kernel limit behind.

mod support;

use support::{assert_no_namespace, workspace, xtask_ok};

const GC_THRESH3: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";

#[test]
fn the_scale_bench_gets_five_machines_through_every_phase() {
    let thresh_before = std::fs::read_to_string(GC_THRESH3).unwrap();
    let (stdout, both) = xtask_ok(
        [
            "bench",
            "scale",
            "--nodes",
            "5",
            "--workers",
            "2",
            "--no-record",
        ],
        &workspace(),
    );
    for row in [
        "| Leases from `cluster-lab dhcpd` (busybox udhcpc) | 5/5 in ",
        "| dnsmasq: 5/5 in ",
        "| Alive in Consul (client agents from the rendered configuration) | 5/5 in ",
        "| Workers Ready in Swarm (token sealed in KV) | 2/2 in ",
        "| cluster-lab dhcpd | ",
        "| Consul server | ",
        "| dockerd | ",
    ] {
        assert!(stdout.contains(row), "no `{row}` in:\n{both}");
    }
    assert_no_namespace("clbench-sc");
    assert_eq!(std::fs::read_to_string(GC_THRESH3).unwrap(), thresh_before);
}
