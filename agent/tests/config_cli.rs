//! `cluster-lab config check` and `cluster-lab config default`, run as the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cluster_lab::config::{Settings, DEFAULT_TOML};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(rel)
}

fn cluster_lab(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cluster-lab"))
        .args(args)
        .env_remove("CLUSTER_LAB_LOG")
        .output()
        .expect("running cluster-lab")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

#[test]
fn check_of_a_good_file_prints_settings_that_parse_back_the_same() {
    let file = fixture("good/custom-network.toml");
    let out = cluster_lab(&["config", "check", file.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.is_empty(), "unexpected stderr: {stderr}");

    let printed = Settings::parse(&stdout, Path::new("stdout")).expect("printed settings parse");
    let mut want = Settings::load(&file).unwrap();
    assert!(want.cluster.secret.is_some());
    want.cluster.secret = None;
    assert_eq!(printed, want);
    assert!(
        stdout.contains("<set>"),
        "secret not shown as <set>:\n{stdout}"
    );
    assert!(
        !stdout.contains("c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0Cg=="),
        "secret leaked:\n{stdout}"
    );
}

#[test]
fn check_fills_in_every_default() {
    let out = cluster_lab(&[
        "config",
        "check",
        fixture("good/minimal.toml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "name = \"cluster-lab\"",
        "role = \"auto\"",
        "interface = \"eth0\"",
        "vlan = 200",
        "subnet = \"192.168.200.0/24\"",
        "master = \"192.168.200.1\"",
        "range = \"192.168.200.101-192.168.200.200\"",
        "lease_time = \"1h\"",
        "lease_file = \"/var/lib/cluster-lab/dhcp-leases\"",
        "decline_quarantine = \"10m\"",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
}

#[test]
fn check_of_a_bad_file_exits_2_naming_file_line_column_and_key() {
    for (rel, want) in [
        (
            "bad/vlan-0.toml",
            ":3:8: network.vlan: VLAN id must be 1–4094, got 0",
        ),
        (
            "bad/range-outside-subnet.toml",
            ":5:9: dhcp.range: 10.0.0.5-10.0.0.9 is outside the subnet 192.168.200.0/24; give a range inside it",
        ),
        (
            "bad/unknown-key.toml",
            ":3:1: network.vlna: unknown key `vlna`",
        ),
        ("bad/syntax-error.toml", ":2:8: network.vlan: not valid TOML"),
    ] {
        let file = fixture(rel);
        let out = cluster_lab(&["config", "check", file.to_str().unwrap()]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{rel}: {stderr}");
        assert!(out.stdout.is_empty(), "{rel}: printed settings despite the error");
        let expected = format!("cluster-lab: error: {}{want}", file.display());
        assert!(
            stderr.starts_with(&expected),
            "{rel}:\n  expected: {expected}\n  got:      {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{rel}: one line expected: {stderr}");
    }
}

#[test]
fn check_of_a_missing_file_exits_2_naming_it() {
    let out = cluster_lab(&["config", "check", "/nonexistent/cluster-lab.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("reading /nonexistent/cluster-lab.toml: No such file or directory"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "the cause is said once: {stderr}"
    );
}

#[test]
fn default_prints_the_commented_default_file() {
    let out = cluster_lab(&["config", "default"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout, DEFAULT_TOML);
    assert!(stdout.lines().filter(|l| l.starts_with('#')).count() > 20);
    assert_eq!(
        Settings::parse(&stdout, Path::new("stdout")).unwrap(),
        Settings::default()
    );
}

#[test]
fn default_output_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cluster-lab.toml");
    std::fs::write(&file, cluster_lab(&["config", "default"]).stdout).unwrap();
    let out = cluster_lab(&["config", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn help_explains_both_subcommands() {
    let out = cluster_lab(&["config", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("check"), "{help}");
    assert!(help.contains("default"), "{help}");
    let out = cluster_lab(&["config", "check", "--help"]);
    let help = text(&out.stdout);
    assert!(help.contains("exit status is 2"), "{help}");
    assert!(help.contains("/boot/firmware/cluster-lab.toml"), "{help}");
}
