//! The lab: network namespaces named `cl-<test id>-<pid>-<role>`, veth pairs created straight into them, and
//! Linux bridges where several hosts share a segment.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{cmd, require_root, run, try_run};

/// One test's lab. Dropping it kills every process left in its namespaces and deletes them.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
}

/// A network namespace of the lab.
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
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

impl Netns {
    /// `ip -n NS ARGS`, panicking with the command and stderr on failure.
    pub fn ip<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> String {
        let mut c = cmd("ip", ["-n", &self.name]);
        c.args(args);
        run(&mut c)
    }

    /// `ip netns exec NS PROGRAM ARGS`, not yet started.
    pub fn command<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let mut c = cmd("ip", ["netns", "exec", &self.name]);
        c.arg(program).args(args);
        c
    }

    /// Add `cidr` to `dev`.
    pub fn add_addr(&self, dev: &str, cidr: &str) {
        self.ip(["addr", "add", cidr, "dev", dev]);
    }

    /// IPv4 addresses on `dev`.
    pub fn ipv4_addrs(&self, dev: &str) -> Vec<Ipv4Addr> {
        self.try_ipv4_addrs(dev).unwrap_or_else(|e| panic!("{e}"))
    }

    /// IPv4 addresses on `dev`, or what went wrong asking.
    pub fn try_ipv4_addrs(&self, dev: &str) -> Result<Vec<Ipv4Addr>, String> {
        let out = try_run(&mut cmd(
            "ip",
            ["-n", &self.name, "-j", "-4", "addr", "show", "dev", dev],
        ))?;
        let out = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| format!("`ip -n {} -j addr show dev {dev}`: {e}: {out}", self.name))?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a["local"].as_str().and_then(|s| s.parse().ok()))
            .collect())
    }

    /// The address of `dev` inside `first..=last`, if any.
    pub fn addr_in(&self, dev: &str, first: Ipv4Addr, last: Ipv4Addr) -> Option<Ipv4Addr> {
        self.ipv4_addrs(dev)
            .into_iter()
            .find(|a| (first..=last).contains(a))
    }

    /// MAC address of `dev`, lowercase colon-separated.
    pub fn mac(&self, dev: &str) -> String {
        let out = self.ip(["-j", "link", "show", "dev", dev]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`ip -n {} -j link show dev {dev}`: {e}: {out}", self.name));
        v[0]["address"]
            .as_str()
            .unwrap_or_else(|| panic!("no MAC address for {dev} in {}: {out}", self.name))
            .to_ascii_lowercase()
    }

    /// Whether something in the namespace has UDP port `port` open.
    pub fn udp_listening(&self, port: u16) -> bool {
        let filter = format!("sport = :{port}");
        let out = run(&mut self.command("ss", ["-H", "-u", "-l", "-n", &filter]));
        !out.trim().is_empty()
    }

    /// Path of the namespace's handle, for `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Run `f` on a thread that has entered this namespace (sockets it opens stay in the namespace).
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = self.path();
        std::thread::spawn(move || {
            let handle = std::fs::File::open(&path)
                .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
            nix::sched::setns(&handle, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}
