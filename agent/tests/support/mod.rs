//! The one harness of the root-tier tests: a lab of network namespaces joined by veth pairs and bridges, the
//! programs that run inside it (cluster-lab dhcpd and probe, dnsmasq, kea, dhclient, udhcpc, dhcpcd, Consul,
//! dockerd), and helpers that run commands and wait for conditions.
//!
//! Every test builds its own lab with a unique prefix (`cl-<test id>-<pid>-`), removes leftovers of the same
//! test at start, and tears everything down in `Drop`, collecting errors and carrying on.

#![allow(dead_code)] // each test binary uses a different part of this module

pub mod clients;
pub mod daemon;
pub mod dockerd;
pub mod lab;
pub mod netns;
pub mod registry;
pub mod servers;

use std::fmt::Write as _;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use daemon::Daemon;
pub use lab::Lab;
pub use netns::Netns;

/// Fail (never skip) when not root: these tests need to create network namespaces.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "root-tier test run without root: it needs CAP_NET_ADMIN to create network namespaces. \
         Run the root tier as root: `cargo xtask test --tier root` \
         (or `sudo -E cargo nextest run -p cluster-lab -E 'binary(/^root_/)'`)."
    );
}

/// Fail (never skip) with what to install when `tool` is not on PATH.
pub fn require_tool(tool: &str, hint: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(found, "{tool} not found on PATH: {hint}");
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

/// What a [`wait_for`] check returns: `Some`/`Ok` ends the wait, `None`/`Err` means "not yet"; an `Err` says
/// what the check saw instead, for the message if the wait times out.
pub trait Check {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl<T> Check for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(String::new)
    }
}

impl<T> Check for Result<T, String> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self
    }
}

/// Poll `check` every 100 ms until it succeeds, or panic after `timeout` with `what`, what the last check saw
/// and the output of `diagnose` (logs of the programs involved).
pub fn wait_for<C: Check>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> C,
    diagnose: impl FnOnce() -> String,
) -> C::Value {
    let start = Instant::now();
    loop {
        let last = match check().into_result() {
            Ok(v) => return v,
            Err(last) => last,
        };
        if start.elapsed() >= timeout {
            let last = if last.is_empty() {
                last
            } else {
                format!("; last seen: {last}")
            };
            panic!(
                "timed out after {:.1} s waiting for {what}{last}\n{}",
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
