//! `cargo xtask cluster up`: N copies of the image, each flashed with its own hostname and the test SSH
//! key, booted in QEMU on one virtual switch with a home router; the master first, the nodes after it
//! (or all at the same instant with `--simultaneous`), then wait until the cluster has formed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use super::disk;
use super::ssh::{self, Ssh};
use super::state::{self, rel, Machine, State};
use super::switch::{self, Switch};
use super::vm;
use super::watch::{Milestones, Watcher};
use cluster_lab_image::arch::Arch;
use cluster_lab_image::host_tools as tools;

/// The machines of a virtual cluster: how many, which image, how big each VM is. `cluster up` and
/// `cluster test` take the same arguments.
#[derive(Debug, Clone, Args)]
pub struct Machines {
    /// Machines in the cluster, the master included (1–9; `cluster test` needs at least 2, and 3 for the
    /// overlay check).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Architecture of the image (amd64, or arm64: slower under TCG).
    #[arg(long, value_enum, default_value = "amd64")]
    pub arch: Arch,
    /// The image to boot (default: build/image/cluster-lab-<arch>.img from `cargo xtask image`).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Memory per VM in MiB.
    #[arg(long, default_value_t = 1024)]
    pub memory: u32,
    /// Virtual CPUs per VM (TCG: each one is a host thread).
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Seconds to wait for each stage (master ready, nodes joined).
    #[arg(long, default_value_t = 1200)]
    pub timeout: u64,
    /// Boot this machine (node1, …; arm64 only) as a Raspberry Pi 3B — QEMU's `raspi3b`: the Pi 3B device tree
    /// from the card, the card on the Pi's SD controller, USB networking, 1 GiB and 4 cores — instead of the
    /// `virt` machine. Repeat for more machines. The disk size must be a power of two (an SD card's).
    #[arg(long, value_name = "HOSTNAME")]
    pub raspi3b: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct Up {
    #[command(flatten)]
    pub machines: Machines,
    /// Name of the cluster: its state lives in build/cluster/<name>/, its switch in netns clvm-<name>.
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// Power every machine on at the same instant instead of master first (the election test).
    #[arg(long)]
    pub simultaneous: bool,
    /// Size of each VM's disk (the "SD card"): 4G, 2048M, …
    #[arg(long, default_value = "4G", value_parser = disk::parse_size)]
    pub disk_size: u64,
    /// User the test key logs in as: the image installs cluster-lab.toml's keys for `cluster`
    /// (root is locked; `cluster` has sudo).
    #[arg(long, default_value = "cluster")]
    pub ssh_user: String,
    /// Also wait until every machine is Ready in Docker Swarm (checked over SSH on the master).
    #[arg(long)]
    pub wait_swarm: bool,
    /// Flash this machine (a hostname: node2, vm3, …) the way Raspberry Pi Imager personalises a card: user-data
    /// with its hostname, user `pi` with the test key and timezone Europe/Berlin on the boot partition, nothing in
    /// cluster-lab.toml. Repeat for more machines; `cluster ssh` logs in as `pi` there.
    #[arg(long, value_name = "HOSTNAME")]
    pub imager: Vec<String>,
    /// A power cut in the middle of a boot (the acceptance test's): the first machine whose console shows this line.
    #[arg(skip)]
    pub cut: Option<super::watch::Cut>,
}

/// What `up` measured, written to `artifacts/formation.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Formation {
    pub simultaneous: bool,
    pub hostnames: Vec<String>,
    pub master: Option<String>,
    pub milestones: Vec<Milestones>,
    /// Seconds from the first power-on until every machine was alive in Consul (and Ready in Swarm
    /// when that was waited for).
    pub whole_cluster: Option<f64>,
    /// The power cut made during the boot, when one was asked for and its line came.
    pub cut: Option<super::watch::CutMade>,
}

impl Up {
    /// Hostnames: `master`, `node1`, … when powered on in order; `vm1`, `vm2`, … when simultaneous
    /// (nobody is the master until the election says so).
    pub fn hostnames(&self) -> Vec<String> {
        (0..self.machines.nodes)
            .map(|i| match (self.simultaneous, i) {
                (true, _) => format!("vm{}", i + 1),
                (false, 0) => "master".to_string(),
                (false, _) => format!("node{i}"),
            })
            .collect()
    }

    pub fn run(self) -> Result<()> {
        let f = self.start()?;
        eprintln!(
            "cluster: {} is up — master {}; `cargo xtask cluster status --name {}`, `cargo xtask cluster down --name {}`",
            self.name,
            f.master.as_deref().unwrap_or("?"),
            self.name,
            self.name
        );
        Ok(())
    }

    /// Set everything up, power on, wait; the state stays (VMs keep running) for `status`, `ssh`,
    /// the acceptance test and `down`.
    pub fn start(&self) -> Result<Formation> {
        let image = self.check_host_and_image()?;
        let leftovers = super::down::teardown(&self.name);
        if !leftovers.is_empty() {
            eprintln!(
                "cluster: removed leftovers of an earlier cluster {} with errors:\n  {}",
                self.name,
                leftovers.join("\n  ")
            );
        }
        let dir = state::dir(&self.name);
        std::fs::create_dir_all(dir.join("artifacts"))?;
        let key = ssh::keygen(&dir.join("ssh"), "id_ed25519")?;
        let pubkey = ssh::public_key(&key)?;
        let sw = Switch::for_cluster(&self.name);
        let mut st = State {
            name: self.name.clone(),
            netns: sw.netns.clone(),
            arch: self.machines.arch.to_string(),
            image: image.clone(),
            ssh_key: key.clone(),
            ssh_user: self.ssh_user.clone(),
            router_pid: None,
            machines: self.plan_machines(&dir),
            boot: None,
        };
        st.save()?;

        let boot = self.flash_disks(&st, &pubkey)?;
        self.start_switch(&sw, &mut st)?;
        self.launch_vms(&sw, &mut st, &boot)?;

        let ssh = st.ssh();
        let formation = self.power_and_wait(&mut st, ssh)?;
        std::fs::write(
            st.artifacts().join("formation.json"),
            serde_json::to_vec_pretty(&formation)?,
        )?;
        Ok(formation)
    }

    /// Valid arguments, root, the host tools, and the image to boot.
    fn check_host_and_image(&self) -> Result<PathBuf> {
        state::validate_name(&self.name)?;
        let names = self.hostnames();
        if let Some(unknown) = self.imager.iter().find(|h| !names.contains(h)) {
            bail!(
                "--imager {unknown}: no such machine; this cluster's are {}",
                names.join(", ")
            );
        }
        if let Some(unknown) = self.machines.raspi3b.iter().find(|h| !names.contains(h)) {
            bail!(
                "--raspi3b {unknown}: no such machine; this cluster's are {}",
                names.join(", ")
            );
        }
        if !self.machines.raspi3b.is_empty() {
            if self.machines.arch != Arch::Arm64 {
                bail!(
                    "--raspi3b: a Raspberry Pi 3B boots the arm64 image, not {}",
                    self.machines.arch
                );
            }
            if !self.disk_size.is_power_of_two() {
                bail!(
                    "--raspi3b: QEMU's SD card must be a power of two in size; --disk-size is {} bytes",
                    self.disk_size
                );
            }
        }
        if !(1..state::MAX_MACHINES).contains(&self.machines.nodes) {
            bail!(
                "--nodes {}: the virtual cluster starts with 1 to {} machines (its switch holds {}, one kept for \
                 `cluster add`)",
                self.machines.nodes,
                state::MAX_MACHINES - 1,
                state::MAX_MACHINES
            );
        }
        if !tools::is_root() {
            bail!("the virtual cluster needs root (network namespace, taps): run `sudo -E cargo xtask cluster up`");
        }
        tools::require(&[
            vm::qemu_tool(self.machines.arch)?,
            tools::Tool::debian("dnsmasq", "dnsmasq-base"),
            tools::Tool::debian("ssh", "openssh-client"),
            tools::Tool::debian("ssh-keygen", "openssh-client"),
            tools::CURL,
        ])?;
        let image = self
            .machines
            .image
            .clone()
            .unwrap_or_else(|| disk::default_image(self.machines.arch));
        if !image.is_file() {
            bail!(
                "image {} does not exist: build it with `cargo xtask base --arch {a}` and `cargo xtask image --arch {a}`, or pass --image",
                image.display(),
                a = self.machines.arch
            );
        }
        Ok(image)
    }

    /// One machine per hostname: its MAC, tap, home-LAN address and files under `dir/<hostname>/`.
    fn plan_machines(&self, dir: &std::path::Path) -> Vec<Machine> {
        self.hostnames()
            .into_iter()
            .enumerate()
            .map(|(i, hostname)| {
                let raspi3b = self.machines.raspi3b.contains(&hostname);
                let mut m = Machine::new(dir, i, &hostname);
                // What the home router's fixed lease and the checks see is the address on the wire.
                if raspi3b {
                    m.mac = vm::raspi3b_wire_mac(&m.mac);
                }
                m.imager = self.imager.contains(&hostname);
                m.raspi3b = raspi3b;
                m
            })
            .collect()
    }

    /// Every machine's disk flashed from the image (hostname, test key); the boot files QEMU loads.
    fn flash_disks(&self, st: &State, pubkey: &str) -> Result<disk::BootFiles> {
        let t = Instant::now();
        let image = &st.image;
        eprintln!(
            "cluster: reading kernel, initrd and cmdline.txt from {}",
            rel(image).display()
        );
        let boot = disk::extract_boot_files(image, self.machines.arch, &st.dir().join("boot"))?;
        if st.machines.iter().any(|m| m.raspi3b) {
            disk::extract_boot_file(image, vm::RASPI3B_DTB, &st.raspi3b_dtb())?;
        }
        for m in &st.machines {
            std::fs::create_dir_all(&m.files.dir)?;
            vm::clear_serial_logs(&m.files);
            let how = if m.imager {
                disk::prepare_imager(image, &m.disk, &m.hostname, pubkey, self.disk_size)?;
                "the Imager way: user-data with hostname, user pi, test key"
            } else {
                disk::prepare(image, &m.disk, &m.hostname, pubkey, self.disk_size)?;
                "hostname, test key in cluster-lab.toml"
            };
            eprintln!(
                "cluster: {:<8} disk {} flashed ({how}), {} MiB",
                m.hostname,
                rel(&m.disk).display(),
                self.disk_size >> 20
            );
        }
        eprintln!("cluster: disks ready in {:.1} s", t.elapsed().as_secs_f64());
        Ok(boot)
    }

    /// The switch, one tap per machine, and the home router with a fixed lease for each.
    fn start_switch(&self, sw: &Switch, st: &mut State) -> Result<()> {
        sw.create()?;
        for m in &st.machines {
            sw.add_tap(&m.tap)?;
        }
        let leases: Vec<switch::Lease> = st.machines.iter().map(Machine::lease).collect();
        st.router_pid = Some(sw.start_router(&st.dir(), &leases)?);
        st.save()?;
        eprintln!(
            "cluster: switch {} up: bridge {} with home router {}/{} (dnsmasq), {} taps",
            sw.netns,
            switch::BRIDGE,
            switch::ROUTER,
            switch::LAN_PREFIX_LEN,
            st.machines.len()
        );
        Ok(())
    }

    /// One paused QEMU process per machine; `power_and_wait` powers them on.
    fn launch_vms(&self, sw: &Switch, st: &mut State, boot: &disk::BootFiles) -> Result<()> {
        st.boot = Some(state::Boot {
            kernel: boot.kernel.clone(),
            initrd: boot.initrd.clone(),
            cmdline: boot.cmdline.clone(),
            memory_mib: self.machines.memory,
            cpus: self.machines.cpus,
        });
        st.save()?;
        for m in &st.machines {
            let spec = st.spec(m)?;
            let pid = vm::launch(&sw.netns, &spec)?;
            eprintln!(
                "cluster: {:<8} QEMU {} pid {pid} (paused), MAC {}, LAN {}, console {}",
                m.hostname,
                if m.raspi3b { "raspi3b" } else { "virt" },
                m.mac,
                m.lan_ip,
                rel(&m.files.serial).display()
            );
        }
        Ok(())
    }

    fn power_and_wait(&self, st: &mut State, ssh: Ssh) -> Result<Formation> {
        let timeout = Duration::from_secs(self.machines.timeout);
        let n = st.machines.len();
        let all: Vec<usize> = (0..n).collect();
        let snapshot = st.clone();
        let mut w = Watcher::new(&snapshot, ssh);
        w.cut = self.cut.clone();
        let first;
        let power = |st: &mut State, w: &mut Watcher, which: &[usize]| -> Result<Instant> {
            let sockets: Vec<&std::path::Path> = which
                .iter()
                .map(|&i| snapshot.machines[i].files.qmp.as_path())
                .collect();
            let (at, wall) = vm::power_on(&sockets)?;
            for &i in which {
                w.powered_on(i, at);
                st.machines[i].powered_on_ms = Some(state::unix_ms(wall));
            }
            st.save()?;
            let names: Vec<&str> = which
                .iter()
                .map(|&i| snapshot.machines[i].hostname.as_str())
                .collect();
            eprintln!("cluster: powered on {}", names.join(", "));
            Ok(at)
        };
        if self.simultaneous {
            first = power(st, &mut w, &all)?;
            w.wait(
                "one machine to serve the Consul UI",
                timeout,
                |w| w.master.is_some(),
                |_, _| true,
            )?;
        } else {
            first = power(st, &mut w, &[0])?;
            w.wait(
                "the master's Consul UI",
                timeout,
                |w| w.milestones[0].consul_ui.is_some(),
                |_, _| true,
            )?;
            if n > 1 {
                power(st, &mut w, &all[1..])?;
            }
        }
        w.wait(
            "every machine alive in Consul",
            timeout,
            |w| w.milestones.iter().all(|m| m.consul_alive.is_some()),
            |w, i| w.milestones[i].consul_alive.is_none(),
        )?;
        if self.wait_swarm {
            // Swarm is checked over SSH on the master; a shorter wait, so a cluster whose Consul
            // formed but whose SSH or Swarm does not work fails in minutes, not in --timeout.
            w.wait(
                "every machine Ready in Swarm",
                timeout.min(Duration::from_secs(600)),
                |w| w.milestones.iter().all(|m| m.swarm_ready.is_some()),
                |w, i| w.milestones[i].swarm_ready.is_none(),
            )?;
        }
        let whole = first.elapsed().as_secs_f64();
        eprintln!("cluster: {n} machine(s) formed a cluster {whole:.1} s after the first power-on");
        Ok(Formation {
            simultaneous: self.simultaneous,
            hostnames: snapshot
                .machines
                .iter()
                .map(|m| m.hostname.clone())
                .collect(),
            master: w.master.map(|i| snapshot.machines[i].hostname.clone()),
            milestones: w.milestones.clone(),
            whole_cluster: Some(whole),
            cut: w.cut_made.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        up: Up,
    }

    #[test]
    fn hostnames_name_the_master_only_when_it_is_powered_first() {
        let up = T::parse_from(["t", "--nodes", "3"]).up;
        assert_eq!(up.hostnames(), ["master", "node1", "node2"]);
        let up = T::parse_from(["t", "--nodes", "3", "--simultaneous"]).up;
        assert_eq!(up.hostnames(), ["vm1", "vm2", "vm3"]);
    }

    #[test]
    fn disk_size_takes_units() {
        let up = T::parse_from(["t", "--disk-size", "2G"]).up;
        assert_eq!(up.disk_size, 2 << 30);
        assert!(T::try_parse_from(["t", "--disk-size", "big"]).is_err());
    }
}
