//! Root tier: `cargo xtask bench election`'s harness — three real `cluster-lab elect` processes in their own network
//! namespaces, powered on at one instant, end with exactly one master, the lowest MAC, and the table says so.

mod support;

use support::{assert_no_namespace, workspace, xtask_ok};

#[test]
fn the_election_bench_elects_exactly_one_master_among_three() {
    let (stdout, both) = xtask_ok(
        [
            "bench",
            "election",
            "--candidates",
            "3",
            "--trials",
            "2",
            "--no-record",
        ],
        &workspace(),
    );
    assert!(
        stdout.contains("| 3 | 2 | 2/2 | 2/2 |"),
        "two trials, each with exactly one master, the lowest MAC:\n{both}"
    );
    assert_no_namespace("clbench-el");
}
