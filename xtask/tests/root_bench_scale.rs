//! Root tier: `cargo xtask bench scale`'s harness at five machines — a master running `cluster-lab dhcpd`, a Consul
//! server and a Swarm manager, five machines leasing, joining Consul, two of them joining the Swarm with the sealed
//! token from KV, and dnsmasq serving the same leases — gets every machine through every phase, says so in its
//! table, and leaves no namespace or raised kernel limit behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

const GC_THRESH3: &str = "/proc/sys/net/ipv4/neigh/default/gc_thresh3";

#[test]
fn the_scale_bench_gets_five_machines_through_every_phase() {
    let thresh_before = std::fs::read_to_string(GC_THRESH3).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "scale",
            "--nodes",
            "5",
            "--workers",
            "2",
            "--no-record",
        ])
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for row in [
        "| Leases from `cluster-lab dhcpd` (busybox udhcpc) | 5/5 in ",
        "| dnsmasq: 5/5 in ",
        "| Alive in Consul (client agents from the rendered configuration) | 5/5 in ",
        "| Workers Ready in Swarm (token sealed in KV) | 2/2 in ",
    ] {
        assert!(stdout.contains(row), "no `{row}` in:\n{stdout}\n{stderr}");
    }
    for service in [
        "| cluster-lab dhcpd | ",
        "| Consul server | ",
        "| dockerd | ",
    ] {
        assert!(stdout.contains(service), "no `{service}` row:\n{stdout}");
    }
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("clbench-sc"),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
    assert_eq!(std::fs::read_to_string(GC_THRESH3).unwrap(), thresh_before);
}
