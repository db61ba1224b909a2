//! The DHCP servers under test, each started in the server namespace with the same subnet and pool and with
//! its leases kept in a file on disk.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use xshell::{cmd, Shell};

use super::netns::{SERVER_IF, SERVER_NS};

/// Server side of the veth pair; also the cluster-lab master address (the product's default .1).
pub const SERVER_ADDR: &str = "192.168.200.1/20";
/// perfdhcp's side; perfdhcp needs an address to act as a relay agent from.
pub const CLIENT_ADDR: &str = "192.168.200.2/20";
/// A /20 around the product's default 192.168.200.0/24, so the pool holds every simulated client.
pub const SUBNET: &str = "192.168.192.0/20";
pub const NETMASK: &str = "255.255.240.0";
pub const MASTER: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);
pub const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(192, 168, 193, 1);
pub const POOL_LAST: Ipv4Addr = Ipv4Addr::new(192, 168, 199, 254);
/// Lease time handed out by every server; longer than the whole bench.
const LEASE_SECS: u32 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Server {
    /// `cluster-lab dhcpd` (built in release mode by the bench).
    #[value(name = "cluster-lab")]
    ClusterLab,
    /// ISC kea-dhcp4 with the memfile lease database (persist = true).
    Kea,
    /// dnsmasq with --dhcp-leasefile.
    Dnsmasq,
}

impl Server {
    pub const ALL: [Server; 3] = [Server::ClusterLab, Server::Kea, Server::Dnsmasq];

    pub fn label(self) -> &'static str {
        match self {
            Server::ClusterLab => "cluster-lab dhcpd",
            Server::Kea => "kea-dhcp4",
            Server::Dnsmasq => "dnsmasq",
        }
    }

    /// How the server keeps its leases in this bench (for the report; behaviour checked with strace).
    pub fn storage(self) -> &'static str {
        match self {
            Server::ClusterLab => {
                "lease log (`[dhcp] lease_file`): records appended and fsynced before the ACK is sent, \
                 several leases per fsync under load"
            }
            Server::Kea => {
                "memfile, `persist: true` (lease file cleanup off): one CSV line written per lease change, \
                 no fsync (survives a crash of the server, not a power cut)"
            }
            Server::Dnsmasq => {
                "`--dhcp-leasefile`: the whole file rewritten and fsynced after lease changes, so each write \
                 grows with the number of leases. Run with `--no-ping`: by default dnsmasq pings every new \
                 address and waits (3 s here) before offering it, a check the other two do not make"
            }
        }
    }

    /// The program that must be installed (for a clear error up front).
    pub fn program(self) -> Option<&'static str> {
        match self {
            Server::ClusterLab => None,
            Server::Kea => Some("kea-dhcp4"),
            Server::Dnsmasq => Some("dnsmasq"),
        }
    }

    pub fn version(self, sh: &Shell, cluster_lab: Option<&Path>) -> String {
        let out = match self {
            Server::ClusterLab => match cluster_lab {
                Some(bin) => cmd!(sh, "{bin} --version").ignore_status().read(),
                None => return "not built".into(),
            },
            Server::Kea => cmd!(sh, "kea-dhcp4 -v").ignore_status().read(),
            Server::Dnsmasq => cmd!(sh, "dnsmasq --version").ignore_status().read(),
        };
        let first = out.unwrap_or_default();
        let first = first.lines().next().unwrap_or("unknown").trim();
        // "cluster-lab 0.1.0", "2.2.0", "Dnsmasq version 2.90  Copyright (c) ..."
        match self {
            Server::ClusterLab => first.trim_start_matches("cluster-lab").trim().to_string(),
            Server::Kea => first.to_string(),
            Server::Dnsmasq => first
                .strip_prefix("Dnsmasq version ")
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or(first)
                .to_string(),
        }
    }

    /// Start the server in the server namespace; its config, leases and log go to `dir` (created empty).
    pub fn start(self, dir: &Path, cluster_lab: Option<&Path>) -> Result<Daemon> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", SERVER_NS]);
        let leases = lease_file(dir);
        match self {
            Server::ClusterLab => {
                let bin = cluster_lab.context("cluster-lab was not built")?;
                let config = dir.join("cluster-lab.toml");
                write(&config, &cluster_lab_config(&leases))?;
                // Warnings only, like the other two: no line per OFFER and ACK.
                cmd.env("CLUSTER_LAB_LOG", "warn")
                    .arg(bin)
                    .arg("dhcpd")
                    .arg("--config")
                    .arg(&config)
                    .args(["--interface", SERVER_IF]);
            }
            Server::Kea => {
                let config = dir.join("kea-dhcp4.json");
                write(&config, &kea_config(&leases))?;
                // Kea writes pid and lock files to fixed system paths unless told otherwise; newer Kea also
                // refuses lease files outside its data directory.
                cmd.env("KEA_PIDFILE_DIR", dir)
                    .env("KEA_LOCKFILE_DIR", dir)
                    .env("KEA_DHCP_DATA_DIR", dir)
                    .arg("kea-dhcp4")
                    .arg("-c")
                    .arg(&config);
            }
            Server::Dnsmasq => {
                cmd.arg("dnsmasq").args(dnsmasq_args(dir, &leases));
            }
        }
        Daemon::spawn(self.label(), cmd, dir.join("server.log"))
    }
}

/// Where a server started with `dir` keeps its leases.
pub fn lease_file(dir: &Path) -> PathBuf {
    dir.join("leases")
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn cluster_lab_config(leases: &Path) -> String {
    format!(
        "# cluster-lab dhcpd under `cargo xtask bench dhcp`: a /20 so the pool holds every simulated client.\n\
         version = 1\n\n\
         [cluster]\nname = \"clbench\"\n\n\
         [network]\nsubnet = \"{SUBNET}\"\nmaster = \"{MASTER}\"\n\n\
         [dhcp]\nrange = \"{POOL_FIRST}-{POOL_LAST}\"\nlease_time = \"{LEASE_SECS}s\"\nlease_file = {leases:?}\n"
    )
}

fn kea_config(leases: &Path) -> String {
    format!(
        r#"{{
  "Dhcp4": {{
    "interfaces-config": {{ "interfaces": [ "{SERVER_IF}" ] }},
    "lease-database": {{ "type": "memfile", "persist": true, "name": {leases:?}, "lfc-interval": 0 }},
    "valid-lifetime": {LEASE_SECS},
    "subnet4": [ {{ "id": 1, "subnet": "{SUBNET}", "pools": [ {{ "pool": "{POOL_FIRST} - {POOL_LAST}" }} ] }} ],
    "loggers": [ {{ "name": "kea-dhcp4", "output_options": [ {{ "output": "stderr" }} ], "severity": "WARN" }} ]
  }}
}}
"#
    )
}

fn dnsmasq_args(dir: &Path, leases: &Path) -> Vec<String> {
    let size = u32::from(POOL_LAST) - u32::from(POOL_FIRST) + 1;
    vec![
        "--keep-in-foreground".into(),
        // No /etc/dnsmasq.conf, no DNS service: DHCP only, on our interface only.
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        format!("--interface={SERVER_IF}"),
        "--bind-interfaces".into(),
        format!("--dhcp-range={POOL_FIRST},{POOL_LAST},{NETMASK},{LEASE_SECS}"),
        format!("--dhcp-lease-max={size}"),
        format!("--dhcp-leasefile={}", leases.display()),
        "--dhcp-authoritative".into(),
        // dnsmasq pings every new address and waits up to 3 s before offering it; neither Kea nor cluster-lab
        // does, and with a thousand new clients the bench would measure the ping timeout.
        "--no-ping".into(),
        // Log like the others: warnings only, not a line per packet.
        "--quiet-dhcp".into(),
        "--log-facility=-".into(),
        format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
    ]
}

/// A server process; killed on drop.
pub struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Start `cmd` as `name`, its stdout and stderr in `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Result<Daemon> {
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let shown = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {shown}"))?;
        Ok(Daemon {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// Fail, with the end of its log, if it has exited.
    pub fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let tail = self.log_tail();
            let tail = if tail.is_empty() {
                "(empty log)"
            } else {
                &tail
            };
            bail!(
                "{} exited ({status}); the end of its log:\n{tail}",
                self.name
            );
        }
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last 20 lines of the server's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The server's peak resident memory so far (`VmHWM` in `/proc/<pid>/status`), KiB; `None` once it is gone.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// The server's resident memory now (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// Kill the server and reap it.
    pub fn stop(mut self) -> Result<()> {
        self.kill()
    }

    fn kill(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            self.child
                .kill()
                .with_context(|| format!("stopping {}", self.name))?;
        }
        self.child.wait()?;
        Ok(())
    }
}

/// The `key` line (`VmHWM:`, `VmRSS:`, …) of process `pid`'s `/proc/<pid>/status`, KiB; `None` once it is gone.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, key)
}

/// A `Key:   1234 kB` line of a `/proc/<pid>/status` text, KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("bench: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_from_proc_status() {
        let status =
            "Name:\tdnsmasq\nVmPeak:\t   12000 kB\nVmHWM:\t    2412 kB\nVmRSS:\t    2300 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(2412));
        assert_eq!(status_kib("Name:\tx\n", "VmHWM:"), None);
        // Our own process has one.
        assert!(proc_status_kib(std::process::id(), "VmHWM:").is_some_and(|k| k > 0));
        assert_eq!(proc_status_kib(u32::MAX, "VmHWM:"), None);
    }
    use crate::bench::perfdhcp::CLIENTS;

    #[test]
    fn pool_holds_every_simulated_client() {
        let size = u32::from(POOL_LAST) - u32::from(POOL_FIRST) + 1;
        assert!(size >= CLIENTS, "pool of {size} < {CLIENTS} clients");
    }

    #[test]
    fn pool_and_master_are_inside_the_subnet_and_apart() {
        let mask = u32::from(NETMASK.parse::<Ipv4Addr>().unwrap());
        let net = u32::from(
            SUBNET
                .split('/')
                .next()
                .unwrap()
                .parse::<Ipv4Addr>()
                .unwrap(),
        );
        for a in [POOL_FIRST, POOL_LAST, MASTER] {
            assert_eq!(u32::from(a) & mask, net, "{a} outside {SUBNET}");
        }
        assert!(!(POOL_FIRST..=POOL_LAST).contains(&MASTER));
        assert!(SERVER_ADDR.starts_with(&format!("{MASTER}/")));
        assert!(
            SUBNET.ends_with("/20") && SERVER_ADDR.ends_with("/20") && CLIENT_ADDR.ends_with("/20")
        );
    }

    #[test]
    fn kea_config_is_json_with_the_lease_file() {
        let text = kea_config(Path::new("/tmp/bench \"x\"/leases"));
        // Balanced braces and the escaped path are enough to catch a broken template without a JSON parser.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
        assert!(
            text.contains(r#""name": "/tmp/bench \"x\"/leases""#),
            "{text}"
        );
    }
}
