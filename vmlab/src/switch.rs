//! The virtual switch and the home LAN: one network namespace per cluster (`clvm-<name>`) holding a
//! Linux bridge, one tap per VM, and a home-router DHCP server (dnsmasq) on the bridge.
//!
//! The bridge has no VLAN filtering, so it forwards 802.1Q-tagged frames untouched: the guests' kernels
//! tag and untag the cluster VLAN, and this host's kernel (which has no 802.1Q support) only switches
//! frames. The bridge's own address, 192.0.2.1/24 (TEST-NET-1), is the home router; dnsmasq serves
//! untagged DHCP on it, with a fixed address per VM's MAC so every VM's LAN address is known in advance.
//! Nothing in the namespace routes anywhere else: all cluster traffic stays inside it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::host;

/// The bridge inside the namespace.
pub const BRIDGE: &str = "br0";
/// The home router (and the host side of every check): the bridge's address.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const LAN_PREFIX_LEN: u8 = 24;
/// Addresses dnsmasq hands to unknown MACs (none are expected; the VMs have fixed leases below .100).
const DYNAMIC_RANGE: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(192, 0, 2, 200), Ipv4Addr::new(192, 0, 2, 250));

/// The home-LAN address the router leases to VM number `index` (0-based): 192.0.2.11, .12, …
pub fn lan_ip(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 11 + index as u8)
}

/// The MAC address of VM number `index`: QEMU's locally administered prefix 52:54:00, then c1 and the
/// index. Lower index, lower MAC.
pub fn mac(index: usize) -> String {
    format!("52:54:00:c1:00:{:02x}", 0x10 + index)
}

/// The tap device of VM number `index` (inside the namespace, so names never clash between clusters).
pub fn tap(index: usize) -> String {
    format!("tap{index}")
}

/// One VM's fixed lease on the home LAN.
#[derive(Debug, Clone)]
pub struct Lease {
    pub mac: String,
    pub ip: Ipv4Addr,
    pub hostname: String,
}

/// The cluster's switch, by namespace name.
#[derive(Debug, Clone)]
pub struct Switch {
    pub netns: String,
}

impl Switch {
    pub fn for_cluster(name: &str) -> Switch {
        Switch {
            netns: format!("clvm-{name}"),
        }
    }

    /// The switch in namespace `netns` (a cluster's state names it).
    pub fn for_netns(netns: &str) -> Switch {
        Switch {
            netns: netns.to_owned(),
        }
    }

    pub fn exists(&self) -> bool {
        Path::new("/run/netns").join(&self.netns).exists()
    }

    /// Create the namespace, the bridge with the router address, and bring them up.
    pub fn create(&self) -> Result<()> {
        if self.exists() {
            bail!(
                "network namespace {} already exists: an earlier cluster is still up; run `cargo xtask cluster down` first",
                self.netns
            );
        }
        let ns = self.netns.as_str();
        host::run(&mut host::command("ip", &["netns", "add", ns]))
            .context("creating the cluster's network namespace")?;
        let steps: [&[&str]; 5] = [
            &["link", "set", "lo", "up"],
            // VLAN filtering stays off (the default; this host's kernel cannot even turn it on): tagged
            // frames pass untouched. No STP and no forwarding delay: ports forward as soon as a VM's
            // NIC comes up. No multicast snooping: mDNS and friends flood.
            &[
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
            &[
                "addr",
                "add",
                &format!("{ROUTER}/{LAN_PREFIX_LEN}"),
                "dev",
                BRIDGE,
            ],
            &["link", "set", BRIDGE, "up"],
            &["link", "show", BRIDGE],
        ];
        for args in steps {
            host::run(&mut self.ip(args)).context("setting up the virtual switch")?;
        }
        Ok(())
    }

    /// `ip -n NETNS args…`
    fn ip(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = host::command("ip", &["-n", &self.netns]);
        cmd.args(args);
        cmd
    }

    /// A tap device plugged into the bridge, for one VM's NIC.
    pub fn add_tap(&self, tap: &str) -> Result<()> {
        let ctx = || format!("plugging tap {tap} into the virtual switch");
        host::run(&mut self.ip(&["tuntap", "add", "dev", tap, "mode", "tap"])).with_context(ctx)?;
        host::run(&mut self.ip(&["link", "set", tap, "master", BRIDGE])).with_context(ctx)?;
        host::run(&mut self.ip(&["link", "set", tap, "up"])).with_context(ctx)?;
        Ok(())
    }

    /// Start the home router's DHCP server (dnsmasq, daemonized, no DNS) with a fixed lease per VM.
    /// Returns its pid.
    pub fn start_router(&self, dir: &Path, leases: &[Lease]) -> Result<u32> {
        let files = RouterFiles::new(dir);
        std::fs::write(&files.conf, router_conf(&files))
            .with_context(|| format!("writing {}", files.conf.display()))?;
        std::fs::write(&files.hosts, router_hosts(leases))
            .with_context(|| format!("writing {}", files.hosts.display()))?;
        std::fs::write(&files.leases, "").ok();
        std::fs::remove_file(&files.pid).ok();
        host::run(&mut host::in_netns(
            &self.netns,
            "dnsmasq",
            &[format!("--conf-file={}", files.conf.display())],
        ))
        .context("starting the home router's DHCP server")?;
        for _ in 0..50 {
            if let Ok(text) = std::fs::read_to_string(&files.pid) {
                if let Ok(pid) = text.trim().parse() {
                    return Ok(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "dnsmasq started but wrote no pid file {}; see {}",
            files.pid.display(),
            files.log.display()
        )
    }

    /// One more fixed lease for the running router (`pid`): appended to its hosts file, which SIGHUP makes it read.
    pub fn add_router_lease(&self, dir: &Path, pid: u32, lease: &Lease) -> Result<()> {
        let files = RouterFiles::new(dir);
        let mut text = std::fs::read_to_string(&files.hosts).unwrap_or_default();
        text.push_str(&router_hosts(std::slice::from_ref(lease)));
        std::fs::write(&files.hosts, text)
            .with_context(|| format!("writing {}", files.hosts.display()))?;
        if !host::signal(pid, "HUP")? {
            bail!("the home router (dnsmasq, pid {pid}) is not running: `cargo xtask cluster down`, then `up`");
        }
        Ok(())
    }

    /// Make the switch ports of `taps` drop 802.1Q-tagged frames (and every other port carry them): the ruleset is
    /// written to `dir/switch.nft` and loaded into the namespace.
    pub fn drop_tags_on(&self, dir: &Path, taps: &[String]) -> Result<()> {
        let path = dir.join("switch.nft");
        std::fs::write(&path, tag_filter(taps))
            .with_context(|| format!("writing {}", path.display()))?;
        host::run(&mut host::in_netns(
            &self.netns,
            "nft",
            &[std::ffi::OsStr::new("-f"), path.as_os_str()],
        ))
        .context("loading the switch's VLAN tag filter (nftables, bridge family)")?;
        Ok(())
    }

    /// Every process running inside the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        host::run(&mut host::command("ip", &["netns", "pids", &self.netns]))
            .map(|out| {
                out.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Stop every process left in the namespace, delete the taps, the bridge and the namespace.
    /// Collects errors and keeps going.
    pub fn destroy(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !self.exists() {
            return errors;
        }
        for pid in self.pids() {
            if let Err(e) = host::stop(pid, Duration::from_secs(5)) {
                errors.push(format!("stopping process {pid} in {}: {e:#}", self.netns));
            }
        }
        let links = host::run(&mut self.ip(&["-o", "link", "show"])).unwrap_or_default();
        for line in links.lines() {
            let Some(name) = line.split(':').nth(1).map(str::trim) else {
                continue;
            };
            let name = name.split('@').next().unwrap_or(name);
            if name.starts_with("tap") || name == BRIDGE {
                if let Err(e) = host::run(&mut self.ip(&["link", "del", name])) {
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if let Err(e) = host::run(&mut host::command("ip", &["netns", "del", &self.netns])) {
            errors.push(format!("{e:#}"));
        }
        errors
    }
}

/// Where the router keeps its files (in the cluster's state directory).
#[derive(Debug, Clone)]
pub struct RouterFiles {
    pub conf: PathBuf,
    /// The fixed leases, one `dhcp-host` value per line (read again on SIGHUP, so a machine can be added).
    pub hosts: PathBuf,
    pub leases: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
}

impl RouterFiles {
    pub fn new(dir: &Path) -> RouterFiles {
        RouterFiles {
            conf: dir.join("dnsmasq.conf"),
            hosts: dir.join("dnsmasq.hosts"),
            leases: dir.join("dnsmasq.leases"),
            log: dir.join("dnsmasq.log"),
            pid: dir.join("dnsmasq.pid"),
        }
    }

    /// `(mac, ip, hostname)` of every lease the router has handed out.
    pub fn leases(&self) -> Vec<(String, Ipv4Addr, String)> {
        std::fs::read_to_string(&self.leases)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.get(1)?.to_string(),
                    f.get(2)?.parse().ok()?,
                    f.get(3)?.to_string(),
                ))
            })
            .collect()
    }
}

/// dnsmasq's configuration: DHCP only (port=0), on the bridge only, authoritative, the fixed leases in a hosts file.
fn router_conf(files: &RouterFiles) -> String {
    format!(
        "# cluster-lab virtual cluster: the home router's DHCP server (untagged, on the bridge only).\n\
         port=0\n\
         interface={BRIDGE}\n\
         bind-interfaces\n\
         dhcp-authoritative\n\
         dhcp-range={},{},255.255.255.0,12h\n\
         dhcp-option=option:router,{ROUTER}\n\
         dhcp-leasefile={}\n\
         dhcp-hostsfile={}\n\
         pid-file={}\n\
         log-facility={}\n\
         log-dhcp\n\
         user=root\n",
        DYNAMIC_RANGE.0,
        DYNAMIC_RANGE.1,
        files.leases.display(),
        files.hosts.display(),
        files.pid.display(),
        files.log.display(),
    )
}

/// The fixed leases' file: `MAC,IP,HOSTNAME,12h` per line (a `dhcp-host` value).
fn router_hosts(leases: &[Lease]) -> String {
    leases
        .iter()
        .map(|l| format!("{},{},{},12h\n", l.mac, l.ip, l.hostname))
        .collect()
}

/// The bridge's filter (nftables, family `bridge`): on each tap of `taps`, 802.1Q-tagged frames are dropped in both
/// directions, as a managed switch does on a port without the VLAN. Loading it replaces the table.
fn tag_filter(taps: &[String]) -> String {
    let mut s = String::from(
        "table bridge vmlab_switch\n\
         delete table bridge vmlab_switch\n\
         table bridge vmlab_switch {\n\
         \tchain forward {\n\
         \t\ttype filter hook forward priority 0; policy accept;\n",
    );
    for tap in taps {
        s.push_str(&format!(
            "\t\tiifname \"{tap}\" ether type 8021q drop\n\t\toifname \"{tap}\" ether type 8021q drop\n"
        ));
    }
    s.push_str("\t}\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_index() {
        assert_eq!(lan_ip(0), Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(mac(0), "52:54:00:c1:00:10");
        assert_eq!(mac(2), "52:54:00:c1:00:12");
        assert!(mac(0) < mac(1), "lower index must mean lower MAC");
        assert_eq!(tap(3), "tap3");
        assert_eq!(Switch::for_cluster("lab").netns, "clvm-lab");
    }

    #[test]
    fn router_serves_only_the_bridge_and_fixed_leases() {
        let files = RouterFiles::new(Path::new("/s"));
        let conf = router_conf(&files);
        assert!(conf.contains("interface=br0\nbind-interfaces\n"), "{conf}");
        assert!(conf.contains("port=0\n"), "{conf}");
        assert!(conf.contains("dhcp-hostsfile=/s/dnsmasq.hosts\n"), "{conf}");
        assert!(conf.contains("dhcp-leasefile=/s/dnsmasq.leases\n"));
        let hosts = router_hosts(&[Lease {
            mac: mac(0),
            ip: lan_ip(0),
            hostname: "master".into(),
        }]);
        assert_eq!(hosts, "52:54:00:c1:00:10,192.0.2.11,master,12h\n");
    }

    #[test]
    fn the_tag_filter_drops_tagged_frames_on_the_named_ports_only() {
        let rules = tag_filter(&["tap3".into()]);
        assert!(
            rules.contains("delete table bridge vmlab_switch\n"),
            "{rules}"
        );
        assert!(
            rules.contains("iifname \"tap3\" ether type 8021q drop\n"),
            "{rules}"
        );
        assert!(
            rules.contains("oifname \"tap3\" ether type 8021q drop\n"),
            "{rules}"
        );
        assert!(!tag_filter(&[]).contains("drop"));
    }

    #[test]
    fn reads_dnsmasq_leases() {
        let dir = tempfile::tempdir().unwrap();
        let files = RouterFiles::new(dir.path());
        std::fs::write(
            &files.leases,
            "1763773200 52:54:00:c1:00:10 192.0.2.11 master 01:52:54:00:c1:00:10\n",
        )
        .unwrap();
        assert_eq!(
            files.leases(),
            vec![(
                "52:54:00:c1:00:10".to_string(),
                Ipv4Addr::new(192, 0, 2, 11),
                "master".to_string()
            )]
        );
    }
}
