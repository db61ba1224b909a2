//! Root tier: build the amd64 base image for real (mmdebstrap as root), boot it in QEMU and check its
//! services (`--boot-check`), then check that a second build is a cache hit; cross-build the arm64 agent
//! and check its ELF header.
//!
//! Slow (minutes): run with `cargo xtask test --tier root`. Without root the base test fails.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::workspace;

fn xtask(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running cargo xtask");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

#[test]
fn amd64_base_builds_boots_and_is_cached() {
    assert!(
        cluster_lab_image::host_tools::is_root(),
        "this root-tier test builds a base image with mmdebstrap --mode=root: run it as root \
         (sudo -E cargo xtask test --tier root)"
    );
    let out = xtask(&["base", "--arch", "amd64", "--boot-check"]);
    assert!(
        out.status.success(),
        "cargo xtask base --arch amd64 --boot-check failed"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("boot check passed"), "{stderr}");
    let image = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(image.is_file(), "{} missing", image.display());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(image.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(manifest["partitions"][0]["label"], "CLBOOT");
    assert_eq!(manifest["partitions"][1]["label"], "clroot");
    let packages: Vec<&str> = manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    for needed in [
        "docker.io ",
        "docker-cli ",
        "consul 1.8.7",
        "openssh-server ",
        "avahi-daemon ",
        "busybox-static ",
    ] {
        assert!(
            packages.iter().any(|p| p.starts_with(needed)),
            "no {needed}in {packages:?}"
        );
    }

    // The partition table as sfdisk reads it.
    let sf = Command::new("sfdisk")
        .arg("--json")
        .arg(&image)
        .output()
        .unwrap();
    assert!(sf.status.success(), "sfdisk --json {}", image.display());
    let table: serde_json::Value = serde_json::from_slice(&sf.stdout).unwrap();
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[1]["type"], "83");

    // Nothing changed: a cache hit, in seconds.
    let started = Instant::now();
    let again = xtask(&["base", "--arch", "amd64"]);
    assert!(again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("(cached)"), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).trim(),
        image.to_string_lossy()
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "cached build took {:?}",
        started.elapsed()
    );

    // An unreachable package source: mmdebstrap's failure is shown with the command and a hint.
    // (Same test as the build: both use build/base/.work-amd64-*.)
    let bad = xtask(&[
        "base",
        "--arch",
        "amd64",
        "--mirror",
        "http://127.0.0.1:9/debian",
    ]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("mmdebstrap failed"), "{stderr}");
    assert!(
        stderr.contains("mmdebstrap --mode=root"),
        "the command is shown: {stderr}"
    );
    assert!(
        stderr.contains("check that the mirror http://127.0.0.1:9/debian is reachable"),
        "{stderr}"
    );
}

#[test]
fn arm64_agent_cross_builds_static() {
    let out = xtask(&["agent", "--arch", "arm64", "--release"]);
    assert!(
        out.status.success(),
        "cargo xtask agent --arch arm64 --release failed"
    );
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        path.starts_with(workspace().join("target/cross")),
        "{}",
        path.display()
    );
    let elf = std::fs::read(&path).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit");
    assert_eq!(u16::from_le_bytes([elf[18], elf[19]]), 183, "EM_AARCH64");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("64-bit AArch64, static"), "{stderr}");
}
