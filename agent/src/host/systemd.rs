//! Talking to systemd and networkd through their command-line tools (`systemctl`, `networkctl`).

use crate::command::{output, run, CommandError};

/// Enable `unit` so it starts on every boot (no-op when already enabled), without reloading systemd.
pub async fn enable(unit: &str) -> Result<(), CommandError> {
    set_enabled("enable", unit).await
}

/// `systemctl enable|disable`: only symlinks change, and the unit files are already loaded, so systemd is not made to
/// reload every unit (seconds on a Pi; systemd starts nothing meanwhile) just for that. `--no-reload` alone is not
/// enough where the package also ships a SysV script (consul, docker-registry, chrony): systemctl then runs
/// `update-rc.d`, which asks for a reload itself, twice. `SYSTEMD_OFFLINE=1` (inherited by that nested systemctl)
/// keeps both from talking to systemd.
async fn set_enabled(verb: &str, unit: &str) -> Result<(), CommandError> {
    run(
        "env",
        [
            "SYSTEMD_OFFLINE=1",
            "systemctl",
            verb,
            "--quiet",
            "--no-reload",
            unit,
        ],
    )
    .await
    .map(drop)
}

/// Start `unit` without waiting for it (it may be ordered after network-online.target, which can take a while).
pub async fn start_no_block(unit: &str) -> Result<(), CommandError> {
    run("systemctl", ["start", "--no-block", unit])
        .await
        .map(drop)
}

/// Restart `unit` without waiting (picks up a changed configuration).
pub async fn restart_no_block(unit: &str) -> Result<(), CommandError> {
    run("systemctl", ["restart", "--no-block", unit])
        .await
        .map(drop)
}

/// Restart those of `units` that are running (leaves stopped ones alone).
pub async fn try_restart(units: &[&str]) -> Result<(), CommandError> {
    let mut args = vec!["try-restart"];
    args.extend_from_slice(units);
    run("systemctl", args).await.map(drop)
}

/// Stop `unit` and wait until it has stopped.
pub async fn stop(unit: &str) -> Result<(), CommandError> {
    run("systemctl", ["stop", unit]).await.map(drop)
}

/// Restart `unit` and wait until it has started again.
pub async fn restart(unit: &str) -> Result<(), CommandError> {
    run("systemctl", ["restart", unit]).await.map(drop)
}

/// Start `unit` and wait until it has started.
pub async fn start(unit: &str) -> Result<(), CommandError> {
    run("systemctl", ["start", unit]).await.map(drop)
}

/// Send `unit` its reload signal.
pub async fn reload(unit: &str) -> Result<(), CommandError> {
    run("systemctl", ["reload", unit]).await.map(drop)
}

/// Disable `unit` for later boots (no-op when already disabled); like [`enable`], without reloading systemd.
pub async fn disable(unit: &str) -> Result<(), CommandError> {
    set_enabled("disable", unit).await
}

/// Whether `unit` is active right now.
pub async fn is_active(unit: &str) -> Result<bool, CommandError> {
    let (_, out) = output("systemctl", ["is-active", "--quiet", unit]).await?;
    Ok(out.status.success())
}

/// Make networkd re-read its files and apply them to existing links.
pub async fn networkd_reload() -> Result<(), CommandError> {
    run("networkctl", ["reload"]).await.map(drop)
}

/// The name of the DHCP service instance for a VLAN interface.
pub fn dhcpd_unit(vlan_interface: &str) -> String {
    format!("cluster-lab-dhcpd@{vlan_interface}.service")
}

/// The firstboot unit itself.
pub const FIRSTBOOT_UNIT: &str = "cluster-lab-firstboot.service";
/// The early part of first boot (`cluster-lab firstboot --early`): hostname and SSH keys before dockerd, sshd and
/// avahi start.
pub const EARLY_UNIT: &str = "cluster-lab-early.service";
pub const CONSUL_UNIT: &str = "consul.service";
pub const DOCKER_UNIT: &str = "docker.service";

#[cfg(test)]
mod tests {
    #[test]
    fn dhcpd_unit_template_exists_in_the_overlay() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../overlays/usr/lib/systemd/system/cluster-lab-dhcpd@.service");
        let unit = std::fs::read_to_string(&path).unwrap();
        assert!(unit.contains("--interface %I"));
        assert_eq!(
            super::dhcpd_unit("eth0.200"),
            "cluster-lab-dhcpd@eth0.200.service"
        );
    }
}
