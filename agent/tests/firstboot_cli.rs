//! `cluster-lab firstboot` as a user meets it: a bad or incomplete configuration stops it before anything changes
//! (exit status 3, which the unit does not retry), and `--dry-run` lists what would be done.

use std::process::{Command, Output};

fn firstboot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cluster-lab"))
        .arg("firstboot")
        .args(args)
        .output()
        .unwrap()
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[test]
fn a_bad_file_stops_before_any_change_with_exit_3() {
    let file = config(
        "[cluster]\nname = \"lab\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n[network]\nvlan = 0\n",
    );
    let out = firstboot(&["--dry-run", "--config", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:5:", file.path().display())),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "no step ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_missing_secret_is_a_configuration_error() {
    let file = config("[cluster]\nname = \"lab\"\n[node]\nhostname = \"node-1\"\n");
    let out = firstboot(&["--dry-run", "--config", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[cluster] secret is missing"), "{stderr}");
}

#[test]
fn a_bad_hostname_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster-lab.toml");
    std::fs::write(
        &path,
        "[cluster]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    )
    .unwrap();
    // No hostname in the file: the cloud-init style user-data next to it is honoured, and checked.
    std::fs::write(
        dir.path().join("user-data"),
        "#cloud-config\nhostname: bad_name\n",
    )
    .unwrap();
    let out = firstboot(&["--dry-run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hostname \"bad_name\""), "{stderr}");
}

#[test]
fn dry_run_lists_the_steps_and_changes_nothing() {
    let file = config(
        "[cluster]\nname = \"lab\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n[node]\nhostname = \"dry-run-test\"\n",
    );
    let out = firstboot(&["--dry-run", "--config", file.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "login of cluster: nothing to change (0 keys, no password)",
        "would write /etc/hostname",
        "would write /etc/cluster-lab/cluster-lab.toml",
        "would create VLAN eth0.200 (id 200) on eth0",
        "would elect the role on eth0.200",
        "would write /etc/systemd/network/10-cluster-lab-eth0.200.netdev",
        "dry run, nothing was changed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!std::path::Path::new("/etc/systemd/network/10-cluster-lab-eth0.200.netdev").exists());
}
