//! DHCP servers of the lab — `cluster-lab dhcpd` under test, dnsmasq and kea-dhcp4 as foreign servers — and
//! `cluster-lab probe`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use super::{cluster_lab_bin, describe, wait_for, Daemon, Lab, Netns};

/// How long a server may take to start listening on a loaded machine.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// First and last address `cluster-lab dhcpd` hands out in the lab (the product default range).
pub const RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(192, 168, 200, 101),
    Ipv4Addr::new(192, 168, 200, 200),
);
/// The master's address on the lab segment.
pub const MASTER: &str = "192.168.200.1/24";

/// `cluster-lab dhcpd` in `ns`, serving `interface`.
pub struct Dhcpd {
    pub daemon: Daemon,
    pub ns: Netns,
    pub interface: String,
    pub config: PathBuf,
    pub lease_file: PathBuf,
}

impl Dhcpd {
    /// Write a cluster-lab.toml for cluster `cluster` with a one-minute lease into the lab's directory
    /// (`<name>.toml`, leases in `<name>.leases`) and start the server on `interface`.
    pub fn start(lab: &Lab, name: &str, ns: &Netns, interface: &str, cluster: &str) -> Dhcpd {
        Self::start_with_secret(lab, name, ns, interface, cluster, None)
    }

    /// [`Dhcpd::start`] with `[cluster] secret` set: the master then signs its marker.
    pub fn start_with_secret(
        lab: &Lab,
        name: &str,
        ns: &Netns,
        interface: &str,
        cluster: &str,
        secret: Option<&str>,
    ) -> Dhcpd {
        let config = lab.dir().join(format!("{name}.toml"));
        let secret_line = secret
            .map(|s| format!("secret = \"{s}\"\n"))
            .unwrap_or_default();
        let lease_file = lab.dir().join(format!("{name}.leases"));
        let text = format!(
            "version = 1\n\
             \n\
             [cluster]\n\
             name = \"{cluster}\"\n\
             {secret_line}\
             \n\
             [network]\n\
             interface = \"eth0\"\n\
             subnet = \"192.168.200.0/24\"\n\
             master = \"192.168.200.1\"\n\
             \n\
             [dhcp]\n\
             range = \"{}-{}\"\n\
             lease_time = \"1m\"\n\
             lease_file = \"{}\"\n",
            RANGE.0,
            RANGE.1,
            lease_file.display()
        );
        std::fs::write(&config, text).expect("writing the dhcpd configuration");
        let dhcpd = Dhcpd {
            daemon: Self::spawn(lab, name, ns, interface, &config),
            ns: ns.clone(),
            interface: interface.to_owned(),
            config,
            lease_file,
        };
        dhcpd.wait_ready();
        dhcpd
    }

    fn spawn(lab: &Lab, name: &str, ns: &Netns, interface: &str, config: &Path) -> Daemon {
        let mut cmd = ns.command(
            cluster_lab_bin(),
            [
                "dhcpd",
                "--config",
                config.to_str().unwrap(),
                "--interface",
                interface,
            ],
        );
        cmd.env("CLUSTER_LAB_LOG", "debug").env("NO_COLOR", "1");
        Daemon::spawn(name, cmd, &lab.dir().join(format!("{name}.log")))
    }

    /// Start the same server again (after `stop` or `kill9`), with the same configuration and lease file.
    pub fn restart(&mut self, lab: &Lab, name: &str) {
        assert!(
            !self.daemon.is_running(),
            "restart: the previous dhcpd is still running"
        );
        self.daemon = Self::spawn(lab, name, &self.ns, &self.interface, &self.config);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        wait_for(
            START_TIMEOUT,
            "cluster-lab dhcpd to listen on UDP port 67",
            || {
                assert!(
                    self.daemon.is_running(),
                    "cluster-lab dhcpd exited at start\n{}",
                    self.report()
                );
                self.ns.udp_listening(67).then_some(())
            },
            || self.report(),
        );
    }

    /// The lease file as records.
    pub fn leases(&self) -> LeaseFile {
        LeaseFile::read(&self.lease_file)
    }

    /// Failure context: server log and lease file.
    pub fn report(&self) -> String {
        format!(
            "{}--- lease file {}\n{}",
            self.daemon.report(),
            self.lease_file.display(),
            super::tail(
                &std::fs::read_to_string(&self.lease_file).unwrap_or_default(),
                30
            )
        )
    }
}

/// What the lease file says about one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    Leased { hw: String, expires: u64 },
    Released,
}

/// The server's lease file (one JSON record per line), read leniently: a torn or unknown line is skipped.
#[derive(Debug, Default)]
pub struct LeaseFile {
    pub records: Vec<serde_json::Value>,
}

impl LeaseFile {
    pub fn read(path: &Path) -> LeaseFile {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        LeaseFile {
            records: text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        }
    }

    /// The last record about `ip`.
    pub fn state(&self, ip: Ipv4Addr) -> Option<LeaseState> {
        let ip = ip.to_string();
        self.records
            .iter()
            .rev()
            .find(|r| r["ip"].as_str() == Some(ip.as_str()))
            .and_then(|r| match r["kind"].as_str() {
                Some("lease") => Some(LeaseState::Leased {
                    hw: r["hw"].as_str().unwrap_or_default().to_ascii_lowercase(),
                    expires: r["expires"].as_u64().unwrap_or(0),
                }),
                Some("release") => Some(LeaseState::Released),
                _ => None,
            })
    }

    /// The address leased to hardware address `hw`, if its last record is a lease.
    pub fn address_of(&self, hw: &str) -> Option<Ipv4Addr> {
        let hw = hw.to_ascii_lowercase();
        self.records
            .iter()
            .rev()
            .filter(|r| r["kind"].as_str() == Some("lease"))
            .find(|r| r["hw"].as_str().map(str::to_ascii_lowercase) == Some(hw.clone()))
            .and_then(|r| r["ip"].as_str()?.parse().ok())
            .filter(|ip| matches!(self.state(*ip), Some(LeaseState::Leased { .. })))
    }
}

/// dnsmasq as a foreign DHCP server on `interface` (which must carry an address of the subnet).
pub fn dnsmasq(lab: &Lab, ns: &Netns, interface: &str, first: Ipv4Addr, last: Ipv4Addr) -> Daemon {
    dnsmasq_with(lab, ns, interface, first, last, &[])
}

/// [`dnsmasq`] with `extra` arguments (options to send).
pub fn dnsmasq_with(
    lab: &Lab,
    ns: &Netns,
    interface: &str,
    first: Ipv4Addr,
    last: Ipv4Addr,
    extra: &[&str],
) -> Daemon {
    let dir = lab.subdir("dnsmasq");
    let mut args = vec![
        "--no-daemon".to_owned(),
        "--conf-file=/dev/null".to_owned(),
        format!("--interface={interface}"),
        "--bind-interfaces".to_owned(),
        format!("--dhcp-range={first},{last},10m"),
        format!("--dhcp-leasefile={}", dir.join("leases").display()),
        format!("--pid-file={}", dir.join("pid").display()),
        "--port=0".to_owned(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let d = Daemon::spawn(
        "dnsmasq",
        ns.command("dnsmasq", args),
        &lab.dir().join("dnsmasq.log"),
    );
    wait_for(
        START_TIMEOUT,
        "dnsmasq to listen on UDP port 67",
        || {
            assert!(d.is_running(), "dnsmasq exited at start\n{}", d.report());
            ns.udp_listening(67).then_some(())
        },
        String::new,
    );
    d
}

/// kea-dhcp4 as a foreign DHCP server on `interface`, memfile leases in the lab's directory.
pub fn kea(lab: &Lab, ns: &Netns, interface: &str, first: Ipv4Addr, last: Ipv4Addr) -> Daemon {
    let dir = lab.subdir("kea");
    let config = serde_json::json!({
        "Dhcp4": {
            "interfaces-config": { "interfaces": [interface], "dhcp-socket-type": "raw" },
            "lease-database": {
                "type": "memfile",
                "persist": true,
                "name": dir.join("leases4.csv"),
                "lfc-interval": 0
            },
            "valid-lifetime": 600,
            "subnet4": [{
                "id": 1,
                "subnet": "192.168.200.0/24",
                "pools": [{ "pool": format!("{first} - {last}") }]
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{ "output": "stdout" }],
                "severity": "INFO"
            }]
        }
    });
    let path = dir.join("kea-dhcp4.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap())
        .expect("writing the kea configuration");
    let mut cmd = ns.command("kea-dhcp4", ["-c", path.to_str().unwrap()]);
    cmd.env("KEA_LOCKFILE_DIR", &dir)
        .env("KEA_PIDFILE_DIR", &dir);
    let d = Daemon::spawn("kea-dhcp4", cmd, &lab.dir().join("kea.log"));
    wait_for(
        START_TIMEOUT,
        "kea-dhcp4 to start (DHCP4_STARTED)",
        || {
            assert!(d.is_running(), "kea-dhcp4 exited at start\n{}", d.report());
            d.log().contains("DHCP4_STARTED").then_some(())
        },
        String::new,
    );
    d
}

/// One run of `cluster-lab probe`.
#[derive(Debug)]
pub struct ProbeRun {
    pub command: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl ProbeRun {
    /// The `--json` document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("probe output is not JSON ({e}):\n{self}"))
    }

    /// The JSON entry of the server with id `server_id`.
    pub fn server(&self, server_id: &str) -> Option<serde_json::Value> {
        self.json()["servers"]
            .as_array()?
            .iter()
            .find(|s| s["server_id"].as_str() == Some(server_id))
            .cloned()
    }
}

impl std::fmt::Display for ProbeRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {:?} after {:.2} s\nstdout:\n{}stderr:\n{}",
            self.command,
            self.code,
            self.elapsed.as_secs_f64(),
            super::tail(&self.stdout, 40),
            super::tail(&self.stderr, 40)
        )
    }
}

/// Run `cluster-lab probe --json` on `interface` in `ns`, looking for cluster `cluster`.
pub fn probe(ns: &Netns, interface: &str, cluster: &str, timeout_secs: u64) -> ProbeRun {
    let mut cmd = ns.command(
        cluster_lab_bin(),
        [
            "probe",
            "--interface",
            interface,
            "--cluster",
            cluster,
            "--timeout",
            &timeout_secs.to_string(),
            "--json",
        ],
    );
    cmd.env("NO_COLOR", "1");
    let command = describe(&cmd);
    let start = Instant::now();
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("`{command}`: cannot start: {e}"));
    ProbeRun {
        command,
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}
