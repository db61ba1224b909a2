//! What xtask's integration tests share: where the workspace is, running `cargo xtask`, and checking that a bench
//! left no network namespace behind.
// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Run this build's `xtask ARGS` in `dir`, stdin closed.
pub fn xtask<I, S>(args: I, dir: &Path) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// [`xtask`] that must succeed; its stdout, and its stdout and stderr for messages.
pub fn xtask_ok<I, S>(args: I, dir: &Path) -> (String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = xtask(args, dir);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let both = format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{both}");
    (stdout, both)
}

/// No network namespace whose name starts with `prefix` is left.
pub fn assert_no_namespace(prefix: &str) {
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list.lines().any(|l| l.starts_with(prefix)),
        "namespaces left behind:\n{list}"
    );
}
