//! `cluster-lab firstboot`: run by cluster-lab-firstboot.service on first boot.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::{self, Settings};
use crate::firstboot::{Finished, Firstboot};
use crate::host::hostname::{self, Hostname};
use crate::host::user_data::UserData;

/// Exit status for a bad configuration: the unit does not restart on it (RestartPreventExitStatus=3).
pub const EXIT_BAD_CONFIG: u8 = 3;

/// Set up this machine as master or node of the cluster: hostname, VLAN, election, Consul, Docker Swarm.
///
/// Every step checks the current state first; running it again (after a power cut, say) finishes the job without
/// re-electing. When done it writes /var/lib/cluster-lab/firstboot.done and disables its unit.
#[derive(Debug, Args)]
pub struct FirstbootArgs {
    /// cluster-lab.toml [default: /boot/firmware/cluster-lab.toml, else /boot/cluster-lab.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Show what would be written and done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Run again even if the firstboot stamp exists.
    #[arg(long)]
    pub force: bool,
    /// Only the steps that must come before dockerd, sshd and avahi start: SSH keys and hostname
    /// (cluster-lab-early.service runs this; the full run skips what is already done).
    #[arg(long, conflicts_with = "dry_run")]
    pub early: bool,
}

impl FirstbootArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let root = PathBuf::from("/");
        if crate::host::stamp::is_done(&root) && !self.force && !self.dry_run {
            println!(
                "cluster-lab: first boot already done ({}); nothing to do",
                crate::host::stamp::DONE
            );
            return Ok(ExitCode::SUCCESS);
        }
        let fb = match self.load(&root) {
            Ok(fb) => fb,
            Err(e) => {
                // On the console and in the journal, before anything was changed.
                eprintln!("cluster-lab: error: {e:#}");
                eprintln!("cluster-lab: nothing was changed; fix the file and reboot (or run `cluster-lab firstboot`)");
                return Ok(ExitCode::from(EXIT_BAD_CONFIG));
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        if self.early {
            runtime.block_on(fb.run_early())?;
            return Ok(ExitCode::SUCCESS);
        }
        if !self.dry_run {
            crate::host::stamp::clear_stopped(&root);
        }
        let finished = match runtime.block_on(fb.run()) {
            Ok(f) => f,
            Err(e) => {
                if let Some(reason) = stopping_reason(&e) {
                    // Not retried: another reboot cannot fix it; a new hostname on the card, or a switch that carries
                    // the VLAN, can. `cluster-lab status` shows the reason.
                    eprintln!("cluster-lab: error: {reason}");
                    eprintln!("cluster-lab: first boot stopped; nothing was stamped");
                    if let Err(e) = crate::host::stamp::mark_stopped(&root, &reason) {
                        eprintln!("cluster-lab: warning: {e}");
                    }
                    return Ok(ExitCode::from(EXIT_BAD_CONFIG));
                }
                return Err(e);
            }
        };
        match finished {
            Finished::Done(summary) => {
                println!("{}", summary.console_line());
                // What first boot cost in memory, for the footprint on a 1 GiB Pi (the acceptance test reads it).
                if let Some(kib) = peak_rss_kib() {
                    tracing::info!("first boot done: peak resident memory {kib} KiB");
                }
            }
            Finished::Planned(lines) => {
                for line in lines {
                    println!("{line}");
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    /// Read and check everything first boot needs; any error here means nothing was touched.
    fn load(&self, root: &Path) -> anyhow::Result<Firstboot> {
        let path = match &self.config {
            Some(p) => p.clone(),
            None => crate::host::boot_partition::wait_for(
                config::find_on_boot_partition,
                crate::host::boot_partition::WAIT,
                !self.dry_run,
            )
            .with_context(|| {
                format!(
                    "no {} on the boot partition ({}) after waiting {} s for {}",
                    config::FILE_NAME,
                    config::BOOT_PATHS.join(" or "),
                    crate::host::boot_partition::WAIT.as_secs(),
                    crate::host::boot_partition::device().display()
                )
            })?,
        };
        let mut config_text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut settings = Settings::parse(&config_text, &path)?;
        if settings.cluster.secret.is_none() {
            // First boot took the secret off the card after an earlier run; the machine kept it.
            if let Some(kept) = kept_secret(root) {
                config_text = config::edit::set_secret(&config_text, kept.expose())
                    .with_context(|| format!("{}: putting the kept secret back", path.display()))?;
                settings.cluster.secret = Some(kept);
            }
        }
        if settings.network.interface == crate::net::link::AUTO {
            let links = crate::net::link::links(Path::new("/sys/class/net"));
            let found = crate::net::link::choose_wired(&links)?;
            eprintln!("cluster-lab: network.interface = \"auto\": the wired link is {found}");
            // The copy in /etc names it, for dhcpd and status after first boot.
            config_text = config::edit::set_interface(&config_text, &found)
                .with_context(|| format!("{}: naming the interface", path.display()))?;
            settings.network.interface = found;
        }
        let user_data = read_user_data(&path.with_file_name("user-data"))?;
        // The hostname: cluster-lab.toml, else the cloud-init style user-data beside it, else the system's own.
        let hostname = match settings.node.hostname.clone() {
            Some(h) => h,
            None => {
                let system = nix::unistd::gethostname()
                    .map(|h| h.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match &user_data.hostname {
                    Some(name) => {
                        Hostname::parse(name).map_err(|e| anyhow::anyhow!("user-data: {e}"))?
                    }
                    // Nobody named this card: a name of its own from its MAC, not the image's shared default. A NIC
                    // that is not there yet (USB Ethernet comes up late) keeps the system's name for this run.
                    None if hostname::is_unnamed(&system) => {
                        let interface = &settings.network.interface;
                        match crate::net::link::mac(interface) {
                            Ok(mac) => {
                                let name = hostname::unnamed_default(mac);
                                eprintln!("cluster-lab: no hostname set on this card; naming it {name} (after its MAC address)");
                                name
                            }
                            Err(e) => {
                                eprintln!("cluster-lab: warning: no hostname set and {e}; keeping {system:?} for now");
                                Hostname::parse(&system).map_err(anyhow::Error::msg)?
                            }
                        }
                    }
                    None => Hostname::parse(&system).map_err(anyhow::Error::msg)?,
                }
            }
        };
        let secret = settings.cluster.secret.clone().with_context(|| {
            format!(
                "{}: [cluster] secret is missing; the image builder writes one (every card of a cluster needs the same)",
                path.display()
            )
        })?;
        Ok(Firstboot {
            settings,
            config_text,
            user_data,
            // Only a file found on the boot partition loses its secret, never one named with --config.
            boot_config: self.config.is_none().then_some(path),
            hostname,
            secret,
            root: root.to_path_buf(),
            plan: self.dry_run.then(Default::default),
            env: crate::firstboot::Environment::target(),
        })
    }
}

/// The cloud-init `user-data` beside cluster-lab.toml (Raspberry Pi Imager writes one), checked: a malformed file, a
/// bad user name or a bad SSH key stops first boot before anything changed. No file is nothing to apply.
fn read_user_data(path: &Path) -> anyhow::Result<UserData> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UserData::default()),
        Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    };
    let ud = UserData::parse(&text).with_context(|| format!("{}", path.display()))?;
    if let Some(user) = &ud.user {
        crate::host::login_user::check_name(&user.name)
            .map_err(|e| anyhow::anyhow!("{}: user-data: {e}", path.display()))?;
    }
    for key in ud.login_keys() {
        key.parse::<config::SshKey>()
            .map_err(|e| anyhow::anyhow!("{}: user-data: SSH key: {e}", path.display()))?;
    }
    if let Some(tz) = &ud.timezone {
        crate::host::timezone::check_name(tz)
            .map_err(|e| anyhow::anyhow!("{}: user-data: {e}", path.display()))?;
    }
    if !ud.ignored.is_empty() {
        eprintln!(
            "cluster-lab: user-data: not applied (cluster-lab has no cloud-init): {}",
            ud.ignored.join(", ")
        );
    }
    Ok(ud)
}

/// The secret the machine keeps in /etc/cluster-lab/cluster-lab.toml, if an earlier first boot left it there.
fn kept_secret(root: &Path) -> Option<config::Secret> {
    let path = root.join(crate::firstboot::ETC_CONFIG.trim_start_matches('/'));
    let text = std::fs::read_to_string(&path).ok()?;
    Settings::parse(&text, &path).ok()?.cluster.secret
}

/// This process's peak resident memory (`VmHWM` in `/proc/self/status`), KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// The errors that stop first boot for good instead of failing the unit (which systemd would retry): a second
/// machine under a hostname already alive in the cluster, a switch that drops the VLAN's tagged frames.
fn stopping_reason(e: &anyhow::Error) -> Option<String> {
    if let Some(taken) = e.downcast_ref::<crate::firstboot::node::HostnameTaken>() {
        return Some(taken.to_string());
    }
    if let Some(other) = e.downcast_ref::<crate::firstboot::master::OtherMaster>() {
        return Some(other.to_string());
    }
    match e.downcast_ref::<crate::firstboot::ElectionError>() {
        Some(crate::firstboot::ElectionError::TagsDropped(dropped)) => Some(dropped.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_kept_under_the_root_is_found() {
        let root = tempfile::tempdir().unwrap();
        assert!(kept_secret(root.path()).is_none());
        let etc = root.path().join("etc/cluster-lab");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("cluster-lab.toml"),
            "[cluster]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        assert_eq!(
            kept_secret(root.path()).map(|s| s.expose().to_string()),
            Some("0123456789abcdef0123456789abcdef".to_string())
        );
    }

    #[test]
    fn a_switch_that_drops_tags_stops_first_boot_for_good_other_errors_do_not() {
        use crate::election::switch_check::{Sightings, TagsDropped};
        use crate::election::{Claim, Mac};
        let mut heard = Sightings::new("lab", Mac([2, 0, 0, 0, 0, 2]));
        heard.untagged(&Claim {
            cluster: "lab".into(),
            mac: Mac([2, 0, 0, 0, 0, 1]),
            master: true,
        });
        let dropped = TagsDropped::judge(&heard, "eth0", "eth0.200", 200).unwrap();
        let e = anyhow::Error::from(crate::firstboot::ElectionError::TagsDropped(dropped))
            .context("electing the role");
        let reason = stopping_reason(&e).expect("a reason to stop");
        assert!(reason.contains("drop VLAN-tagged frames"), "{reason}");
        assert_eq!(
            stopping_reason(&anyhow::anyhow!("consul did not start")),
            None
        );
    }
}
