//! Host tools the build tasks run: check they are there, name the Debian package when one is missing,
//! and install it when running as root on Debian.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A host tool that is missing and could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}\n(run as root on Debian and xtask installs them itself)")]
    Missing(String),
    #[error("running apt-get: {0}")]
    Spawn(std::io::Error),
    #[error("`apt-get {command}` failed ({status}):\n{stderr}{hint}")]
    Apt {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
        hint: &'static str,
    },
    #[error("installed {package} but {program} is still not on PATH")]
    StillMissing {
        package: &'static str,
        program: &'static str,
    },
}

type Result<T> = std::result::Result<T, ToolError>;

/// A program on the host and the Debian package that ships it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
    /// Only bookworm-backports has a recent enough version (QEMU 10 to match the preinstalled qemu-utils).
    pub backports: bool,
}

pub const MMDEBSTRAP: Tool = Tool::debian("mmdebstrap", "mmdebstrap");
pub const MKE2FS: Tool = Tool::debian("mke2fs", "e2fsprogs");
pub const E2FSCK: Tool = Tool::debian("e2fsck", "e2fsprogs");
pub const FSCK_VFAT: Tool = Tool::debian("fsck.vfat", "dosfstools");
pub const MKFS_VFAT: Tool = Tool::debian("mkfs.vfat", "dosfstools");
pub const QEMU_AARCH64: Tool = Tool::debian("qemu-aarch64-static", "qemu-user-static");
pub const QEMU_ARM: Tool = Tool::debian("qemu-arm-static", "qemu-user-static");
/// mmdebstrap only Recommends it, and stops with "install arch-test for foreign architecture support" without it.
pub const ARCH_TEST: Tool = Tool::debian("arch-test", "arch-test");
pub const CURL: Tool = Tool::debian("curl", "curl");
pub const ARM_GCC: Tool = Tool::debian("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf");
pub const AARCH64_GCC: Tool = Tool::debian("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu");
pub const QEMU_IMG: Tool = Tool::debian("qemu-img", "qemu-utils");
pub const QEMU_SYSTEM_ARM: Tool = Tool {
    program: "qemu-system-aarch64",
    package: "qemu-system-arm",
    backports: true,
};
pub const QEMU_SYSTEM_X86: Tool = Tool {
    program: "qemu-system-x86_64",
    package: "qemu-system-x86",
    backports: true,
};

impl Tool {
    pub const fn debian(program: &'static str, package: &'static str) -> Tool {
        Tool {
            program,
            package,
            backports: false,
        }
    }

    fn install_hint(&self) -> String {
        if self.backports {
            format!("apt-get install -t bookworm-backports {}", self.package)
        } else {
            format!("apt-get install {}", self.package)
        }
    }
}

/// Where `program` is on PATH (plus the sbin directories, which a non-login root shell may lack).
pub fn find(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    // The effective uid of this process, without a libc binding: /proc/self/status "Uid: real effective ...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists() && find("apt-get").is_some()
}

/// Make sure every tool is present: install missing ones when root on Debian, otherwise fail with the
/// `apt-get install` line that fixes it.
pub fn require(tools: &[Tool]) -> Result<()> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|t| find(t.program).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !(is_root() && is_debian()) {
        let lines: Vec<String> = missing
            .iter()
            .map(|t| format!("missing host tool {}: {}", t.program, t.install_hint()))
            .collect();
        return Err(ToolError::Missing(lines.join("\n")));
    }
    let (backports, plain): (Vec<Tool>, Vec<Tool>) = missing.iter().partition(|t| t.backports);
    eprintln!(
        "tools: installing {}",
        missing
            .iter()
            .map(|t| t.package)
            .collect::<Vec<_>>()
            .join(" ")
    );
    apt(&["update", "-qq"], "")?;
    if !plain.is_empty() {
        let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
        args.extend(plain.iter().map(|t| t.package));
        apt(&args, "")?;
    }
    if !backports.is_empty() {
        let mut args = vec![
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
        ];
        args.extend(backports.iter().map(|t| t.package));
        apt(
            &args,
            "\nbookworm-backports must be in the apt sources (bash ci/deps.sh adds it)",
        )?;
    }
    for t in &missing {
        if find(t.program).is_none() {
            return Err(ToolError::StillMissing {
                package: t.package,
                program: t.program,
            });
        }
    }
    Ok(())
}

fn apt(args: &[&str], hint: &'static str) -> Result<()> {
    let out = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(ToolError::Spawn)?;
    if !out.status.success() {
        return Err(ToolError::Apt {
            command: args.join(" "),
            status: out.status,
            stderr: tail(&String::from_utf8_lossy(&out.stderr), 20),
            hint,
        });
    }
    Ok(())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find("sh").is_some());
        assert!(find("cluster-lab-no-such-tool").is_none());
    }

    #[test]
    fn hint_names_the_package() {
        assert_eq!(MMDEBSTRAP.install_hint(), "apt-get install mmdebstrap");
        assert_eq!(
            QEMU_SYSTEM_X86.install_hint(),
            "apt-get install -t bookworm-backports qemu-system-x86"
        );
    }

    #[test]
    fn tail_keeps_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }
}
