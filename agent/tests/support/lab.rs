//! The lab: network namespaces named `cl-<test id>-<pid>-<role>`, veth pairs created straight into them, and
//! Linux bridges where several hosts share a segment. Leftovers of a crashed run of the same test are removed
//! when a lab is made, and everything the lab made is removed when it is dropped.

use std::path::{Path, PathBuf};

use super::{cmd, require_root, run, try_run, Netns};

/// One test's lab. Dropping it kills every process left in its namespaces and deletes them.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// A fresh lab for the test `id` (a few letters, unique among the root tests). Leftovers of an earlier
    /// run of the same test (one whose process is gone) are removed first.
    pub fn new(id: &str) -> Lab {
        require_root();
        assert!(
            id.len() <= 8 && !id.contains('-'),
            "lab id {id:?}: use up to 8 letters"
        );
        let test_prefix = format!("cl-{id}-");
        let errors = remove_namespaces(&test_prefix);
        assert!(
            errors.is_empty(),
            "removing leftovers of an earlier run:\n{}",
            errors.join("\n")
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("cluster-lab-{id}-"))
            .tempdir()
            .expect("creating the lab's temporary directory");
        Lab {
            prefix: format!("{test_prefix}{}-", std::process::id()),
            namespaces: Vec::new(),
            dir,
        }
    }

    /// The lab's temporary directory (configs, lease files, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A subdirectory of the lab's directory, created.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        p
    }

    /// Add a namespace playing `role` (`srv`, `c1`, ...) with loopback up.
    pub fn netns(&mut self, role: &str) -> Netns {
        let name = format!("{}{role}", self.prefix);
        run(&mut cmd("ip", ["netns", "add", &name]));
        self.namespaces.push(name.clone());
        let ns = Netns { name };
        ns.ip(["link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair from `a`/`a_if` to `b`/`b_if`, both ends up.
    pub fn veth(&self, a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
        run(&mut cmd(
            "ip",
            [
                "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if,
                "netns", &b.name,
            ],
        ));
        a.ip(["link", "set", a_if, "up"]);
        b.ip(["link", "set", b_if, "up"]);
    }

    /// A segment: a bridge `br0` in a switch namespace of its own, forwarding at once (no STP).
    pub fn switch(&mut self, role: &str) -> Netns {
        let sw = self.netns(role);
        sw.ip([
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
        ]);
        sw.ip(["link", "set", "br0", "up"]);
        sw
    }

    /// Plug `host`'s interface `host_if` into the bridge of `switch` (port named `port`).
    pub fn plug(&self, switch: &Netns, port: &str, host: &Netns, host_if: &str) {
        self.veth(switch, port, host, host_if);
        switch.ip(["link", "set", port, "master", "br0"]);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let mut errors = Vec::new();
        for name in self.namespaces.iter().rev() {
            errors.extend(remove_namespace(name));
        }
        if !errors.is_empty() {
            let msg = format!("tearing down the lab:\n{}", errors.join("\n"));
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// Kill every process in each namespace named `prefix<pid>-…` whose test process `<pid>` is gone, and delete it.
/// Namespaces of a run of the same test that is still going (another checkout, another user) are left alone.
/// Returns the errors met.
fn remove_namespaces(prefix: &str) -> Vec<String> {
    let list = match try_run(&mut cmd("ip", ["netns", "list"])) {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        Err(e) => return vec![e],
    };
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| {
            n.strip_prefix(prefix)
                .is_some_and(|rest| !owner_alive(rest))
        })
        .flat_map(remove_namespace)
        .collect()
}

/// Whether the test process named at the start of `<pid>-<role>` is still running (and is not this one).
fn owner_alive(rest: &str) -> bool {
    match rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) if pid == std::process::id() => false,
        Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

fn remove_namespace(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    match try_run(&mut cmd("ip", ["netns", "pids", name])) {
        Ok(out) => {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        Err(e) => errors.push(e),
    }
    if let Err(e) = try_run(&mut cmd("ip", ["netns", "del", name])) {
        errors.push(e);
    }
    errors
}
