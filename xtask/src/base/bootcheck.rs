//! `cargo xtask base --boot-check`: boot the base image in QEMU (TCG) and wait for the serial login prompt.
//!
//! amd64 boots directly (`-kernel`/`-initrd` extracted next to the image, `-append` from the manifest)
//! from a virtio disk; `-snapshot` keeps the image unchanged. No network card: nothing leaves the VM.

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::BaseOutput;
use crate::tools;

/// What the boot showed.
#[derive(Debug)]
pub struct BootReport {
    pub login_after: Duration,
    pub failed_units: Vec<String>,
}

pub fn boot_check(out: &BaseOutput, timeout: Duration) -> Result<BootReport> {
    if out.manifest.arch != "amd64" {
        bail!(
            "--boot-check boots amd64 bases only (this one is {}); boot Pi images on a Pi",
            out.manifest.arch
        );
    }
    tools::require(&[tools::QEMU_SYSTEM_X86])?;
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg,thread=multi", "-m", "1024", "-smp", "2"])
        .args(["-nographic", "-no-reboot", "-nic", "none", "-snapshot"])
        .arg("-kernel")
        .arg(&out.kernel)
        .arg("-initrd")
        .arg(&out.initrd)
        .arg("-append")
        .arg(format!("{} panic=-1", out.manifest.cmdline))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", out.image.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
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

    let mut failed_units = Vec::new();
    let mut last = Vec::<String>::new();
    let result = loop {
        let left = timeout.saturating_sub(started.elapsed());
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let clean = strip_ansi(&line);
                if clean.contains("[FAILED]") {
                    eprintln!("boot-check: {}", clean.trim());
                    failed_units.push(clean.trim().to_string());
                }
                if clean.contains(" login:") {
                    break Ok(started.elapsed());
                }
                last.push(clean);
                if last.len() > 30 {
                    last.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if started.elapsed() < timeout => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!("no login prompt within {} s", timeout.as_secs()))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Err("QEMU exited".to_string()),
        }
    };
    child.kill().ok();
    let status = child.wait().ok();
    match result {
        Ok(login_after) => Ok(BootReport {
            login_after,
            failed_units,
        }),
        Err(why) => {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut stderr).ok();
            }
            bail!(
                "booting {} in QEMU failed: {why} ({status:?})\n--- last console lines ---\n{}\n--- qemu stderr ---\n{}",
                out.image.display(),
                last.join("\n"),
                tools::tail(&stderr, 10)
            )
        }
    }
}

/// Drop terminal escape sequences (systemd colours its status words).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_systemd_colours() {
        let line = "[\u{1b}[0;1;31mFAILED\u{1b}[0m] Failed to start foo.service\r";
        assert_eq!(strip_ansi(line), "[FAILED] Failed to start foo.service");
    }
}
