//! `cargo xtask base --boot-check`: boot the base image in QEMU (TCG) and check what came up.
//!
//! amd64 (`-M pc`) and arm64 (`-M virt`) boot directly (`-kernel`/`-initrd` extracted next to the image,
//! `-append` from the manifest's `qemu_cmdline`)
//! from a virtio disk: a qcow2 overlay on the image, 4 GiB large, so the image stays unchanged and
//! first-boot growth of the root partition is exercised. `systemd.wants=cluster-lab-base-report.service`
//! makes the guest print `base-report: key=value` lines on the serial console once multi-user.target is
//! reached. No network card: nothing leaves the VM. The whole console goes to `<image>.boot.log`.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BaseOutput;
use cluster_lab_image::host_tools as tools;
use vmlab::serial::strip_ansi;

/// Size of the virtual disk the guest sees (the image grows into it on first boot).
const DISK_MIB: u64 = 4096;

/// What the boot showed.
#[derive(Debug)]
pub struct BootReport {
    /// Serial `login:` prompt, counted from QEMU start.
    pub login_after: Option<Duration>,
    /// The guest's report, counted from QEMU start.
    pub report_after: Duration,
    pub facts: BTreeMap<String, String>,
}

pub fn boot_check(out: &BaseOutput, timeout: Duration) -> Result<BootReport> {
    let (tool, machine): (_, &[&str]) = match out.manifest.arch.as_str() {
        "amd64" => (tools::QEMU_SYSTEM_X86, &["-M", "pc"]),
        "arm64" => (tools::QEMU_SYSTEM_ARM, &["-M", "virt", "-cpu", "cortex-a72"]),
        other => bail!(
            "--boot-check boots amd64 and arm64 bases (this one is {other}); boot 32-bit Pi images on a Pi"
        ),
    };
    tools::require(&[tool, tools::QEMU_IMG])?;
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let overlay = dir.path().join("disk.qcow2");
    let image = out
        .image
        .canonicalize()
        .with_context(|| format!("resolving {}", out.image.display()))?;
    super::rootfs::run_quiet(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&image)
            .arg(&overlay)
            .arg(format!("{DISK_MIB}M")),
    )?;

    let mut cmd = Command::new(tool.program);
    cmd.args(machine)
        .args(["-accel", "tcg,thread=multi", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(&out.kernel)
        .arg("-initrd")
        .arg(&out.initrd)
        .arg("-append")
        .arg(format!(
            "{} panic=-1 systemd.wants=cluster-lab-base-report.service",
            out.manifest.qemu_cmdline
        ))
        .arg("-drive")
        .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let log_path = out.image.with_extension("boot.log");
    let mut log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", tool.program))?;
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("qemu stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(|l| l.ok()) {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });

    let mut facts = BTreeMap::new();
    let mut login_after = None;
    let mut last = Vec::<String>::new();
    let result = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                let clean = strip_ansi(&line);
                writeln!(log, "{clean}").ok();
                if clean.contains("[FAILED]") {
                    eprintln!("boot-check: {}", clean.trim());
                }
                if login_after.is_none() && clean.contains(" login:") {
                    login_after = Some(started.elapsed());
                    eprintln!(
                        "boot-check: login prompt after {:.1} s",
                        started.elapsed().as_secs_f64()
                    );
                }
                if let Some((k, v)) = parse_fact(&clean) {
                    if k == "done" {
                        break Ok(started.elapsed());
                    }
                    facts.insert(k, v);
                }
                last.push(clean);
                if last.len() > 30 {
                    last.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < timeout => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!("no base report within {} s", timeout.as_secs()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err("QEMU exited".to_string()),
        }
    };
    child.kill().ok();
    let status = child.wait().ok();
    let report_after = match result {
        Ok(t) => t,
        Err(why) => {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr).ok();
            }
            bail!(
                "booting {} in QEMU failed: {why} ({status:?})\n--- last console lines (all in {}) ---\n{}\n--- qemu stderr ---\n{}",
                out.image.display(),
                log_path.display(),
                last.join("\n"),
                tools::tail(&stderr, 10)
            )
        }
    };
    let report = BootReport {
        login_after,
        report_after,
        facts,
    };
    let problems = judge(&report.facts);
    if !problems.is_empty() {
        bail!(
            "the base booted but is not right (console in {}):\n  {}",
            log_path.display(),
            problems.join("\n  ")
        );
    }
    Ok(report)
}

/// `base-report: key=value` → (key, value); `base-report: done` → ("done", "").
fn parse_fact(line: &str) -> Option<(String, String)> {
    let rest = line[line.find("base-report: ")? + "base-report: ".len()..].trim();
    match rest.split_once('=') {
        Some((k, v)) => Some((k.to_string(), v.to_string())),
        None => Some((rest.to_string(), String::new())),
    }
}

/// Everything that is wrong with a booted base, judged from its report.
fn judge(f: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    let units: Vec<_> = f.iter().filter(|(k, _)| k.starts_with("unit.")).collect();
    if units.is_empty() {
        problems.push("the report lists no units".to_string());
    }
    for (k, v) in units {
        if v != "active" {
            problems.push(format!("{} is {v}, expected active", &k["unit.".len()..]));
        }
    }
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    if !get("docker").ends_with("/overlay2") {
        problems.push(format!(
            "dockerd not answering with overlay2: {}",
            get("docker")
        ));
    }
    if !get("consul").starts_with("Consul_v") {
        problems.push(format!("consul does not run: {}", get("consul")));
    }
    let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    if num("disk_mib") < DISK_MIB || num("root_mib") < DISK_MIB * 8 / 10 {
        problems.push(format!(
            "root filesystem did not grow: {} MiB on a {} MiB disk",
            num("root_mib"),
            num("disk_mib")
        ));
    }
    if num("host_keys") == 0 {
        problems.push("no SSH host keys were generated".into());
    }
    let id = get("machine_id");
    if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        problems.push(format!("machine id not initialised: {id:?}"));
    }
    if !get("failed").is_empty() {
        problems.push(format!("failed units: {}", get("failed")));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_systemd_colours() {
        let line = "[\u{1b}[0;1;31mFAILED\u{1b}[0m] Failed to start foo.service\r";
        assert_eq!(strip_ansi(line), "[FAILED] Failed to start foo.service");
    }

    fn good() -> BTreeMap<String, String> {
        [
            ("unit.docker", "active"),
            ("unit.ssh", "active"),
            ("docker", "26.1.5+dfsg1/overlay2"),
            ("consul", "Consul_v1.8.7"),
            ("root_mib", "3900"),
            ("disk_mib", "4096"),
            ("host_keys", "3"),
            ("machine_id", "0123456789abcdef0123456789abcdef"),
            ("failed", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn judge_accepts_a_good_report_and_names_each_problem() {
        assert_eq!(judge(&good()), Vec::<String>::new());
        let mut bad = good();
        bad.insert("unit.docker".into(), "failed".into());
        bad.insert("root_mib".into(), "900".into());
        bad.insert("failed".into(), "docker.service".into());
        let p = judge(&bad);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("docker is failed"), "{p:?}");
        assert!(p.iter().any(|x| x.contains("did not grow")), "{p:?}");
    }

    #[test]
    fn parses_report_lines() {
        assert_eq!(
            parse_fact("[   40.1] cluster-lab-base-report[612]: base-report: unit.ssh=active"),
            Some(("unit.ssh".into(), "active".into()))
        );
        assert_eq!(
            parse_fact("base-report: done"),
            Some(("done".into(), String::new()))
        );
        assert_eq!(parse_fact("Welcome to Debian"), None);
    }
}
