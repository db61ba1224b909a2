//! `cluster-lab node remove` as a user meets it off the master or with a bad name: a clear refusal, nothing
//! touched. (Its parts — the lease release on a real lease log, Consul's catalog — have their own tests.)

use std::process::Command;

fn node(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cluster-lab"))
        .arg("node")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_hostname_is_refused_by_the_hostname_rule() {
    let (code, err) = node(&["remove", "node_1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("\"node_1\" contains '_'"), "{err}");
}

#[test]
fn off_the_master_it_says_where_to_run_it() {
    // This build host has no /var/lib/cluster-lab/role: it is not a cluster's master.
    assert!(!std::path::Path::new("/var/lib/cluster-lab/role").exists());
    let (code, err) = node(&["remove", "node1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not the cluster's master"), "{err}");
}

#[test]
fn help_explains_what_remove_does() {
    let out = Command::new(env!("CARGO_BIN_EXE_cluster-lab"))
        .args(["node", "remove", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for words in ["force-leave", "lease", "--force"] {
        assert!(help.contains(words), "{help}");
    }
}
