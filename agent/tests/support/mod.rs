//! Shared support of the root-tier tests: a lab of network namespaces joined by veth pairs and bridges, the
//! programs that run inside it (cluster-lab dhcpd and probe, dnsmasq, kea, dhclient, udhcpc, dhcpcd), and
//! helpers that run commands and wait for conditions.
//!
//! Every test builds its own lab with a unique prefix (`cl-<test id>-<pid>-`), removes leftovers of the same
//! test at start, and tears everything down in `Drop`, collecting errors and carrying on.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod clients;
pub mod daemon;
pub mod lab;
pub mod servers;

use std::fmt::Write as _;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use daemon::Daemon;
pub use lab::{Lab, Netns};

/// Fail (never skip) when not root: these tests need to create network namespaces.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root-tier test run without root: it needs CAP_NET_ADMIN to create network namespaces. \
         Run the root tier as root: `cargo xtask test --tier root` \
         (or `sudo -E cargo nextest run -p cluster-lab -E 'binary(/^root_/)'`)."
    );
}

/// A command line as a person would type it.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let a = arg.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            let _ = write!(s, " {a:?}");
        } else {
            let _ = write!(s, " {a}");
        }
    }
    s
}

/// Run `cmd` to completion; an error names the command, its exit status and its stderr.
pub fn try_run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("`{}`: cannot start: {e}", describe(cmd)))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `cmd` and return its stdout; panic with the command and its stderr when it fails.
pub fn run(cmd: &mut Command) -> String {
    match try_run(cmd) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => panic!("{e}"),
    }
}

/// `Command::new(program).args(args)`.
pub fn cmd<S: AsRef<std::ffi::OsStr>>(program: &str, args: impl IntoIterator<Item = S>) -> Command {
    let mut c = Command::new(program);
    c.args(args);
    c
}

/// Poll `check` every 100 ms until it returns `Some`, or panic after `timeout` with `what` and the output of
/// `diagnose` (logs of the programs involved).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    diagnose: impl FnOnce() -> String,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() >= timeout {
            panic!(
                "timed out after {:.1} s waiting for {what}\n{}",
                timeout.as_secs_f64(),
                diagnose()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How long to wait for a DHCP exchange that should succeed. Generous: the machine is shared and loaded.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the cluster-lab binary under test.
pub fn cluster_lab_bin() -> &'static str {
    env!("CARGO_BIN_EXE_cluster-lab")
}

/// The last `n` lines of `text`, indented, for failure messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..]
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect()
}
