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
}

/// The state directory of cluster `name`.
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

    pub fn router_files(&self) -> super::switch::RouterFiles {
        super::switch::RouterFiles::new(&self.dir())
    }
}

impl Machine {
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
    fn names_fit_a_namespace() {
        for good in ["lab", "e2e-3", "a"] {
            validate_name(good).unwrap();
        }
        for bad in ["", "Lab", "a b", "-x", "a/b", "much-too-long-name"] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
