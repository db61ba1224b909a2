//! Root tier: `cargo xtask bench election`'s harness — three real `cluster-lab elect` processes in their own network
//! namespaces, powered on at one instant, end with exactly one master, the lowest MAC, and the table says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn the_election_bench_elects_exactly_one_master_among_three() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "election",
            "--candidates",
            "3",
            "--trials",
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
    assert!(
        stdout.contains("| 3 | 2 | 2/2 | 2/2 |"),
        "two trials, each with exactly one master, the lowest MAC:\n{stdout}\n{stderr}"
    );
    // The namespaces are gone afterwards.
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("clbench-el"),
        "{}",
        String::from_utf8_lossy(&list.stdout)
    );
}
