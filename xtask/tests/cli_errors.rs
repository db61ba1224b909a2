//! Bad command lines for `cargo xtask agent` and `cargo xtask base` end with a clear message, before any work.

use std::path::Path;
use std::process::Command;

fn xtask(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
        .args(["run", "--quiet", "--package", "xtask", "--"])
        .args(args)
        .output()
        .expect("running cargo xtask");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unknown_arch_lists_the_known_ones() {
    for task in ["agent", "base"] {
        let (ok, err) = xtask(&[task, "--arch", "sparc"]);
        assert!(!ok);
        assert!(err.contains("invalid value 'sparc'"), "{err}");
        assert!(
            err.contains("armhf") && err.contains("arm64") && err.contains("amd64"),
            "{err}"
        );
    }
}

#[test]
fn consul_zip_needs_its_sha256sums() {
    let (ok, err) = xtask(&["base", "--arch", "arm64", "--consul-zip", "consul.zip"]);
    assert!(!ok);
    assert!(err.contains("--consul-sha256sums"), "{err}");
}

#[test]
fn consul_zip_that_does_not_match_is_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let zip = dir.path().join("consul_1.0.0_linux_arm64.zip");
    let sums = dir.path().join("SHA256SUMS");
    std::fs::write(&zip, b"not really a zip").unwrap();
    std::fs::write(
        &sums,
        format!("{}  consul_1.0.0_linux_arm64.zip\n", "0".repeat(64)),
    )
    .unwrap();
    let (ok, err) = xtask(&[
        "base",
        "--arch",
        "arm64",
        "--consul-zip",
        zip.to_str().unwrap(),
        "--consul-sha256sums",
        sums.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("does not match"), "{err}");
}
