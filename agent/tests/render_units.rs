//! The systemd units in overlays/: accepted by `systemd-analyze verify` without a single warning, and in
//! agreement with the constants the agent uses (stamp path, exit status for a bad configuration, unit names).

use std::path::{Path, PathBuf};
use std::process::Command;

use cluster_lab::cli::firstboot::EXIT_BAD_CONFIG;
use cluster_lab::{host::stamp, host::systemd};

fn overlay(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../overlays")
        .join(path)
}

fn read(path: &str) -> String {
    let p = overlay(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// Verify `text` as unit `name`, with the agent binary replaced by /bin/true (it is not installed here).
fn verify(name: &str, text: &str) {
    verify_beside(name, text, &[]);
}

/// [`verify`], with other units (`(name, text)`) in the same directory: a timer is verified beside its service.
fn verify_beside(name: &str, text: &str, beside: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    for (other, other_text) in beside {
        std::fs::write(dir.path().join(other), other_text).unwrap();
    }
    let path = dir.path().join(name);
    std::fs::write(&path, text.replace("/usr/bin/cluster-lab", "/bin/true")).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("running systemd-analyze (Debian package systemd)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Messages about units outside this one (docker.service, device units) do not concern it.
    let own: Vec<&str> = stderr.lines().filter(|l| l.contains(name)).collect();
    assert!(
        out.status.success() && own.is_empty(),
        "systemd-analyze verify {name}:\n{stderr}"
    );
}

#[test]
fn firstboot_unit_verifies_and_matches_the_agent() {
    let unit = read("usr/lib/systemd/system/cluster-lab-firstboot.service");
    verify(systemd::FIRSTBOOT_UNIT, &unit);
    for line in [
        "Type=oneshot".to_string(),
        "RemainAfterExit=yes".into(),
        format!("ConditionPathExists=!{}", stamp::DONE),
        format!("RestartPreventExitStatus={EXIT_BAD_CONFIG}"),
        "StandardOutput=journal+console".into(),
        "ExecStart=/usr/bin/cluster-lab firstboot".into(),
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}");
    }
    assert!(unit.contains("After=systemd-machine-id-commit.service"));
    assert!(
        !unit.lines().any(|l| l.starts_with("ConditionFirstBoot")),
        "the stamp decides, not ConditionFirstBoot"
    );
}

#[test]
fn dhcpd_unit_verifies_as_an_instance() {
    let unit = read("usr/lib/systemd/system/cluster-lab-dhcpd@.service");
    verify(&systemd::dhcpd_unit("eth0.200"), &unit);
    assert!(unit.contains("BindsTo=sys-subsystem-net-devices-%i.device"));
    assert!(unit.contains("dhcpd --config /etc/cluster-lab/cluster-lab.toml --interface %I"));
    // Restarted every 2 s for as long as it takes (a late master address), never stopped by the start limit.
    let unit_lines: Vec<&str> = unit.lines().collect();
    for line in [
        "Restart=on-failure",
        "RestartSec=2s",
        "StartLimitIntervalSec=0",
    ] {
        assert!(unit_lines.contains(&line), "dhcpd unit lacks {line}");
    }
    assert!(unit.contains(cluster_lab::firstboot::ETC_CONFIG));
}

#[test]
fn consul_drop_in_uses_only_known_keys() {
    let drop_in = read("usr/lib/systemd/system/consul.service.d/cluster-lab.conf");
    // A drop-in cannot be verified alone: verify it merged into a minimal service.
    let merged = format!("[Service]\nExecStart=/bin/true\n{drop_in}");
    verify("consul-drop-in-check.service", &merged);
    assert!(drop_in.contains(&format!(
        "ConditionPathExists={}",
        cluster_lab::consul::config::CONFIG_PATH
    )));
    // The guard against a keyring a power cut left empty names the files first boot checks.
    let guard = drop_in
        .lines()
        .find(|l| l.starts_with("ExecStartPre=+/bin/sh -c "))
        .expect("the keyring guard");
    let data_dir = std::path::Path::new(cluster_lab::consul::config::DATA_DIR);
    for keyring in cluster_lab::consul::data_dir::keyrings(data_dir) {
        assert!(guard.contains(&*keyring.to_string_lossy()), "{guard}");
    }
}

#[test]
fn the_master_tidies_re_flashed_cards_swarm_nodes_every_minute_after_first_boot() {
    let service = read("usr/lib/systemd/system/cluster-lab-node-tidy.service");
    let timer = read("usr/lib/systemd/system/cluster-lab-node-tidy.timer");
    verify("cluster-lab-node-tidy.service", &service);
    verify_beside(
        "cluster-lab-node-tidy.timer",
        &timer,
        &[("cluster-lab-node-tidy.service", &service)],
    );
    assert!(service.contains("ExecStart=/usr/bin/cluster-lab node tidy"));
    assert!(service.contains(&format!(
        "ConditionPathExists={}",
        cluster_lab::host::stamp::DONE
    )));
    assert!(timer.contains("OnUnitActiveSec=1min"));
    assert!(timer.contains("WantedBy=timers.target"));
}

#[test]
fn the_clock_is_saved_every_minute_where_systemd_reads_it_at_boot() {
    let service = read("usr/lib/systemd/system/cluster-lab-clock-save.service");
    let timer = read("usr/lib/systemd/system/cluster-lab-clock-save.timer");
    verify("cluster-lab-clock-save.service", &service);
    verify_beside(
        "cluster-lab-clock-save.timer",
        &timer,
        &[("cluster-lab-clock-save.service", &service)],
    );
    // PID 1 advances the clock to this file's modification time at boot.
    assert!(service.contains("ExecStart=/usr/bin/touch /var/lib/systemd/timesync/clock"));
    assert!(timer.contains("OnUnitActiveSec=1min"));
    assert!(timer.contains("WantedBy=timers.target"));
}

#[test]
fn a_unit_with_a_typo_is_caught() {
    // Guard for the check itself: systemd-analyze exits 0 on unknown keys, the warning is what fails.
    let result = std::panic::catch_unwind(|| {
        verify(
            "typo.service",
            "[Service]\nExecStart=/bin/true\nTyp=oneshot\n",
        )
    });
    assert!(result.is_err());
}

#[test]
fn early_unit_verifies_and_runs_before_the_services_that_read_the_hostname() {
    let unit = read("usr/lib/systemd/system/cluster-lab-early.service");
    verify(systemd::EARLY_UNIT, &unit);
    for line in [
        "Type=oneshot".to_string(),
        format!("ConditionPathExists=!{}", stamp::DONE),
        "ExecStart=/usr/bin/cluster-lab firstboot --early".into(),
        "Wants=boot-firmware.mount".into(),
        "After=boot-firmware.mount".into(),
        format!(
            "Before=docker.service avahi-daemon.service ssh.service {}",
            systemd::FIRSTBOOT_UNIT
        ),
        "WantedBy=multi-user.target".into(),
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}");
    }
    // Ordering only: a bad cluster-lab.toml must not keep dockerd or sshd from starting.
    assert!(!unit.contains("Requires=") && !unit.contains("RequiredBy="));
    // A boot partition that mounts late (slow card) must not fail the unit through a dependency.
    assert!(!unit.contains("RequiresMountsFor="));
}

#[test]
fn firewall_unit_verifies_and_loads_the_rendered_file_before_the_network_and_services() {
    use cluster_lab::host::firewall;
    let unit = read(&format!("usr/lib/systemd/system/{}", firewall::UNIT));
    verify(firewall::UNIT, &unit.replace("/usr/sbin/nft", "/bin/true"));
    for line in [
        "Type=oneshot".to_string(),
        "RemainAfterExit=yes".into(),
        "DefaultDependencies=no".into(),
        format!("ConditionPathExists={}", firewall::PATH),
        format!(
            "ExecStart=/usr/sbin/{} -f {}",
            firewall::NFT,
            firewall::PATH
        ),
        format!(
            "Before=network-pre.target shutdown.target {} {}",
            systemd::DOCKER_UNIT,
            systemd::CONSUL_UNIT
        ),
        "WantedBy=sysinit.target".into(),
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line:?}");
    }
    // Loading must never flush other tables (Docker's): no `flush ruleset` anywhere.
    assert!(!unit.contains("flush"));
}

#[test]
fn every_machine_syncs_its_swarm_tasks_into_consul_once_first_boot_kept_the_settings() {
    let service = read("usr/lib/systemd/system/cluster-lab-catalog.service");
    verify(cluster_lab::catalog::UNIT, &service);
    assert!(service.contains("ExecStart=/usr/bin/cluster-lab catalog-sync"));
    assert!(service.contains(&format!(
        "ConditionPathExists={}",
        cluster_lab::firstboot::ETC_CONFIG
    )));
    assert!(service.contains("Restart=always"));
    assert!(service.contains("WantedBy=multi-user.target"));
    // `.consul` names go to the local agent's DNS interface.
    let resolved = read("usr/lib/systemd/resolved.conf.d/20-cluster-lab-consul.conf");
    assert!(resolved.contains("DNS=127.0.0.1:8600\nDomains=~consul\n"));
    // ... and containers reach the machine's resolver where daemon.json sends them.
    assert!(resolved.contains(&format!(
        "\nDNSStubListenerExtra={}\n",
        cluster_lab::docker::daemon_json::CONTAINER_DNS
    )));
}
