//! A network namespace of the lab, and the ways to act inside it: `ip -n`, a program started inside it, code
//! run on a thread that entered it.

use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use super::{cmd, run, try_run};

/// A network namespace of a [`Lab`](super::Lab), which creates it and removes it.
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// `ip -n NS ARGS`, panicking with the command and stderr on failure.
    pub fn ip<S: AsRef<std::ffi::OsStr>>(&self, args: impl IntoIterator<Item = S>) -> String {
        let mut c = cmd("ip", ["-n", &self.name]);
        c.args(args);
        run(&mut c)
    }

    /// `ip netns exec NS PROGRAM ARGS`, not yet started. Besides the network namespace the program gets the
    /// namespace's own /sys, where /sys/class/net lists its interfaces: what DHCP clients and servers and
    /// `cluster-lab probe` look at.
    pub fn command<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let mut c = cmd("ip", ["netns", "exec", &self.name]);
        c.arg(program).args(args);
        c
    }

    /// `nsenter --net=NS -- PROGRAM ARGS`, not yet started: only the network namespace is entered, and /sys
    /// with the cgroup mounts stays the host's, as dockerd needs (`ip netns exec` remounts /sys and hides them).
    pub fn nsenter<S: AsRef<std::ffi::OsStr>>(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        args: impl IntoIterator<Item = S>,
    ) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program)
            .args(args);
        c
    }

    /// An address `cidr` on `dev`, one end of a veth pair (`dev`, `peer`) whose both ends stay in this namespace and
    /// are up: a local address to bind and advertise that nothing can leave the namespace through.
    pub fn veth_within(&self, dev: &str, peer: &str, cidr: &str) {
        self.ip(["link", "add", dev, "type", "veth", "peer", "name", peer]);
        self.add_addr(dev, cidr);
        self.ip(["link", "set", dev, "up"]);
        self.ip(["link", "set", peer, "up"]);
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

    /// Path of the namespace's handle, for `setns` and `nsenter`.
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

    /// Run `future` to completion inside this namespace, on a thread of its own with its own tokio runtime.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.within(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a tokio runtime")
                .block_on(future)
        })
    }
}
