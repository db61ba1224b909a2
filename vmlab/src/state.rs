//! A running virtual cluster's state directory, `build/cluster/<name>/`: `state.json` (what `down`,
//! `status` and `ssh` need), the test SSH key, the boot files, one directory per VM (disk, serial log,
//! QMP socket, pid), the home router's files and `artifacts/` (screenshots, DOM dumps, timings).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::vm;

/// What `cluster up` set up; written as soon as anything exists, so `down` can always clean up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub netns: String,
    pub arch: String,
    pub image: PathBuf,
    /// The test key flashed into every card's cluster-lab.toml.
    pub ssh_key: PathBuf,
    pub ssh_user: String,
    pub router_pid: Option<u32>,
    pub machines: Vec<Machine>,
    /// How the machines boot, so that `cluster power` can power one on again.
    #[serde(default)]
    pub boot: Option<Boot>,
}

/// What every machine boots (the files extracted from the card) and the size of the `virt` machines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Boot {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The image's own `cmdline.txt`.
    pub cmdline: String,
    pub memory_mib: u32,
    pub cpus: u32,
}

/// One VM of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub index: usize,
    pub hostname: String,
    pub mac: String,
    pub tap: String,
    /// Its address on the home LAN (a fixed lease from the home router).
    pub lan_ip: Ipv4Addr,
    pub disk: PathBuf,
    pub files: vm::Files,
    /// When it was powered on (milliseconds since the Unix epoch), once it was.
    pub powered_on_ms: Option<u64>,
    /// Flashed the way Raspberry Pi Imager does (user-data on the boot partition) instead of by cluster-lab.toml.
    #[serde(default)]
    pub imager: bool,
    /// Booted as a Raspberry Pi 3B (QEMU's `raspi3b`) instead of the `virt` machine.
    #[serde(default)]
    pub raspi3b: bool,
    /// Its network cable is pulled (`cluster cable NAME unplug`).
    #[serde(default)]
    pub cable_unplugged: bool,
    /// Its switch port drops 802.1Q-tagged frames (`cluster cable NAME drop-tags`).
    #[serde(default)]
    pub tags_dropped: bool,
}

/// The state directory of cluster `name`.
/// Machines one virtual switch holds: MACs, taps and home-LAN addresses are numbered by index.
pub const MAX_MACHINES: usize = 10;

pub fn dir(name: &str) -> PathBuf {
    crate::project_root().join("build/cluster").join(name)
}

/// A cluster name: 1–12 lowercase letters, digits and '-', so `clvm-<name>` is a valid namespace.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 12
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !ok {
        bail!("cluster name {name:?}: use 1–12 lowercase letters, digits and '-' (e.g. lab)");
    }
    Ok(())
}

impl State {
    pub fn path(name: &str) -> PathBuf {
        dir(name).join("state.json")
    }

    pub fn save(&self) -> Result<()> {
        let path = State::path(&self.name);
        let tmp = path.with_extension("json.partial");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    /// The state of cluster `name`, if one was set up.
    pub fn load(name: &str) -> Result<Option<State>> {
        let path = State::path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not a cluster state file; remove it and run `cargo xtask cluster down --name {name}`", path.display()))
    }

    /// The state of cluster `name`, or an error telling how to start one.
    pub fn require(name: &str) -> Result<State> {
        State::load(name)?.with_context(|| {
            format!("no cluster {name:?} is up (no {}); start one with `cargo xtask cluster up --name {name}`", State::path(name).display())
        })
    }

    pub fn dir(&self) -> PathBuf {
        dir(&self.name)
    }

    pub fn artifacts(&self) -> PathBuf {
        self.dir().join("artifacts")
    }

    /// A machine by hostname or index (`0`, `1`, …).
    pub fn machine(&self, which: &str) -> Result<&Machine> {
        self.machines
            .iter()
            .find(|m| m.hostname == which || m.index.to_string() == which)
            .with_context(|| {
                format!(
                    "no machine {which:?} in cluster {}; it has {}",
                    self.name,
                    self.machines
                        .iter()
                        .map(|m| m.hostname.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// SSH with the key flashed into every card's cluster-lab.toml.
    pub fn ssh(&self) -> super::ssh::Ssh {
        super::ssh::Ssh {
            netns: self.netns.clone(),
            keys: vec![self.ssh_key.clone()],
            user: self.ssh_user.clone(),
        }
    }

    /// SSH to machine `m` as its login user: the test key is flashed for `cluster`, or, on a card flashed the Imager
    /// way, for the user its user-data names.
    pub fn ssh_for(&self, m: &Machine) -> super::ssh::Ssh {
        super::ssh::Ssh {
            user: m.login_user(&self.ssh_user).to_string(),
            ..self.ssh()
        }
    }

    /// The Pi 3B's device tree, copied from the card.
    pub fn raspi3b_dtb(&self) -> PathBuf {
        self.dir().join("boot").join(vm::RASPI3B_DTB)
    }

    /// What QEMU needs to boot machine `m`.
    pub fn spec(&self, m: &Machine) -> Result<vm::Spec> {
        let boot = self.boot.as_ref().with_context(|| {
            format!(
                "{}: written by an older `cluster up` without the boot files; bring the cluster down and up again",
                State::path(&self.name).display()
            )
        })?;
        let arch: cluster_lab_image::arch::Arch = clap::ValueEnum::from_str(&self.arch, true)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: arch {:?}: {e}",
                    State::path(&self.name).display(),
                    self.arch
                )
            })?;
        Ok(vm::Spec {
            arch,
            hostname: m.hostname.clone(),
            mac: m.mac.clone(),
            tap: m.tap.clone(),
            disk: m.disk.clone(),
            kernel: boot.kernel.clone(),
            initrd: boot.initrd.clone(),
            cmdline: if m.raspi3b {
                vm::raspi3b_cmdline(&boot.cmdline)
            } else {
                vm::kernel_cmdline(&boot.cmdline, arch)
            },
            memory_mib: boot.memory_mib,
            cpus: boot.cpus,
            board: if m.raspi3b {
                vm::Board::Raspi3b {
                    dtb: self.raspi3b_dtb(),
                }
            } else {
                vm::Board::Virtual
            },
            files: m.files.clone(),
        })
    }

    pub fn router_files(&self) -> super::switch::RouterFiles {
        super::switch::RouterFiles::new(&self.dir())
    }
}

impl Machine {
    /// Machine number `index` of a cluster whose state directory is `dir`: the MAC, tap and home-LAN address the
    /// index gives it on the virtual switch, its files under `dir/<hostname>/`; a `virt` machine flashed by
    /// cluster-lab.toml, not yet powered on.
    pub fn new(dir: &Path, index: usize, hostname: &str) -> Machine {
        let vdir = dir.join(hostname);
        Machine {
            index,
            hostname: hostname.to_string(),
            mac: super::switch::mac(index),
            tap: super::switch::tap(index),
            lan_ip: super::switch::lan_ip(index),
            disk: vdir.join("disk.img"),
            files: vm::Files::new(&vdir),
            powered_on_ms: None,
            imager: false,
            raspi3b: false,
            cable_unplugged: false,
            tags_dropped: false,
        }
    }

    /// Its fixed lease from the home router.
    pub fn lease(&self) -> super::switch::Lease {
        super::switch::Lease {
            mac: self.mac.clone(),
            ip: self.lan_ip,
            hostname: self.hostname.clone(),
        }
    }

    /// The user the test key logs in as on this machine.
    pub fn login_user<'a>(&self, flashed: &'a str) -> &'a str {
        if self.imager {
            super::imager::USER
        } else {
            flashed
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.files.pid()
    }

    pub fn running(&self) -> bool {
        self.pid().is_some_and(super::host::alive)
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `p` relative to the workspace root, for messages.
pub fn rel(p: &Path) -> PathBuf {
    p.strip_prefix(crate::project_root())
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_machine_takes_everything_from_its_index_and_hostname() {
        let m = Machine::new(Path::new("/s"), 2, "node2");
        assert_eq!(
            (m.mac.as_str(), m.tap.as_str(), m.lan_ip),
            ("52:54:00:c1:00:12", "tap2", Ipv4Addr::new(192, 0, 2, 13))
        );
        assert_eq!(m.disk, PathBuf::from("/s/node2/disk.img"));
        assert_eq!(m.files.serial, PathBuf::from("/s/node2/serial.log"));
        let lease = m.lease();
        assert_eq!(
            (lease.mac.as_str(), lease.ip, lease.hostname.as_str()),
            ("52:54:00:c1:00:12", m.lan_ip, "node2")
        );
        assert!(!m.imager && !m.raspi3b && !m.cable_unplugged && !m.tags_dropped);
    }

    fn sample(boot: Option<Boot>) -> State {
        let m = |i: usize, host: &str, raspi3b: bool| Machine {
            index: i,
            hostname: host.into(),
            mac: format!("52:54:00:c1:00:1{i}"),
            tap: format!("tap{i}"),
            lan_ip: Ipv4Addr::new(192, 0, 2, 11 + i as u8),
            disk: PathBuf::from(format!("/s/{host}/disk.img")),
            files: vm::Files::new(Path::new(&format!("/s/{host}"))),
            powered_on_ms: None,
            imager: false,
            raspi3b,
            cable_unplugged: false,
            tags_dropped: false,
        };
        State {
            name: "lab".into(),
            netns: "clvm-lab".into(),
            arch: "arm64".into(),
            image: "/i.img".into(),
            ssh_key: "/k".into(),
            ssh_user: "cluster".into(),
            router_pid: None,
            machines: vec![m(0, "master", false), m(1, "node1", true)],
            boot,
        }
    }

    #[test]
    fn a_machine_powers_on_again_from_the_state_alone() {
        let st = sample(Some(Boot {
            kernel: "/s/boot/kernel8.img".into(),
            initrd: "/s/boot/initrd.img".into(),
            cmdline: "console=serial0,115200 console=tty1 root=LABEL=clroot".into(),
            memory_mib: 1024,
            cpus: 1,
        }));
        // What state.json holds is enough: the spec is the same after a round trip.
        let back: State = serde_json::from_slice(&serde_json::to_vec(&st).unwrap()).unwrap();
        let master = back.spec(&back.machines[0]).unwrap();
        assert_eq!(master.board, vm::Board::Virtual);
        assert!(
            master.cmdline.contains("console=ttyAMA0"),
            "{}",
            master.cmdline
        );
        assert_eq!((master.memory_mib, master.cpus), (1024, 1));
        let pi = back.spec(&back.machines[1]).unwrap();
        assert!(
            matches!(pi.board, vm::Board::Raspi3b { .. }),
            "{:?}",
            pi.board
        );
        assert!(
            pi.cmdline.starts_with("console=serial0,115200"),
            "{}",
            pi.cmdline
        );
    }

    #[test]
    fn a_state_from_an_older_cluster_up_says_what_to_do() {
        let text = serde_json::to_string(&sample(None)).unwrap();
        // Older state files have neither key.
        let text = text
            .replace(",\"boot\":null", "")
            .replace(",\"cable_unplugged\":false", "");
        let st: State = serde_json::from_str(&text).unwrap();
        assert!(!st.machines[0].cable_unplugged);
        let e = st.spec(&st.machines[0]).unwrap_err().to_string();
        assert!(e.contains("bring the cluster down and up again"), "{e}");
    }

    #[test]
    fn names_fit_a_namespace() {
        for good in ["lab", "e2e-3", "a"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "Lab", "a b", "-x", "a/b", "much-too-long-name"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
