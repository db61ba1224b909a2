//! `cargo xtask agent`: cross-compile the `cluster-lab` agent for a target board and check the result.
//!
//! Uses `cross` when it is installed and a Docker engine answers; otherwise plain cargo with the rustup
//! target (added when missing) and a linker from the host: Debian's cross gcc for armhf (glibc), the
//! Rust-shipped self-contained musl runtime for arm64/amd64 (linked by the cross gcc / host cc).
//! Builds go to `target/cross/` so they never invalidate xtask's own build in `target/`.

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use xshell::{cmd, Shell};

use cluster_lab_image::arch::Arch;
use cluster_lab_image::elf;
use cluster_lab_image::host_tools as tools;

#[derive(Debug, Args)]
pub struct Agent {
    /// Target architecture.
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Optimised build (profile.release: size-optimised, stripped, LTO).
    #[arg(long)]
    pub release: bool,
    /// Never use `cross`, even when it is installed.
    #[arg(long)]
    pub no_cross: bool,
}

/// What `build` produced.
#[derive(Debug, Clone)]
pub struct Built {
    pub path: PathBuf,
    pub elf: elf::ElfInfo,
    pub size: u64,
}

impl Agent {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let built = build(sh, self.arch, self.release, self.no_cross)?;
        println!("{}", built.path.display());
        Ok(())
    }
}

/// The directory cross builds use (relative to the workspace root).
pub const CROSS_TARGET_DIR: &str = "target/cross";

/// Build the agent for `arch`, check its ELF header and print a one-line summary on stderr.
pub fn build(sh: &Shell, arch: Arch, release: bool, no_cross: bool) -> Result<Built> {
    let target = arch.rust_target();
    let started = Instant::now();
    let profile = if release { "release" } else { "debug" };
    let target_dir = crate::project_root().join(CROSS_TARGET_DIR);
    let mut args = vec![
        "build",
        "--package",
        "cluster-lab",
        "--bin",
        "cluster-lab",
        "--target",
        target,
    ];
    if release {
        args.push("--release");
    }

    let use_cross = !no_cross && cross_usable(sh);
    eprintln!(
        "agent: building cluster-lab for {arch} ({target}, {profile}) with {}",
        if use_cross { "cross" } else { "cargo" }
    );
    let mut command = if use_cross {
        Command::new("cross")
    } else {
        ensure_rust_target(sh, target)?;
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        if let Some((var, linker)) = linker_env(arch)? {
            c.env(var, linker);
        }
        c
    };
    command
        .current_dir(crate::project_root())
        .args(&args)
        .env("CARGO_TARGET_DIR", &target_dir);
    let status = command
        .status()
        .with_context(|| format!("running {:?}", command))?;
    if !status.success() {
        bail!(
            "building the agent for {arch} failed ({status}): {:?} {}\n\
             (the compiler's messages are above; a link error usually means the cross linker is missing: \
             apt-get install {})",
            command.get_program(),
            args.join(" "),
            match arch {
                Arch::Armhf => tools::ARM_GCC.package,
                Arch::Arm64 => tools::AARCH64_GCC.package,
                Arch::Amd64 => "gcc",
            }
        );
    }

    let path = target_dir.join(target).join(profile).join("cluster-lab");
    let built = check(&path, arch)?;
    eprintln!(
        "agent: {} — {}-bit {}, {}, {:.1} MiB, built in {:.1} s",
        path.strip_prefix(crate::project_root())
            .unwrap_or(&path)
            .display(),
        built.elf.bits,
        built.elf.machine_name(),
        linkage(&built.elf),
        built.size as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(built)
}

/// Check that `path` is an executable for `arch`: the right ELF machine, static for musl targets.
pub fn check(path: &std::path::Path, arch: Arch) -> Result<Built> {
    let info = elf::require_machine(path, arch)?;
    if arch.rust_target().ends_with("-musl") && info.interpreter.is_some() {
        bail!(
            "{} should be static (musl) but asks for the dynamic loader {}",
            path.display(),
            info.interpreter.as_deref().unwrap_or_default()
        );
    }
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    Ok(Built {
        path: path.to_path_buf(),
        elf: info,
        size,
    })
}

fn linkage(info: &elf::ElfInfo) -> String {
    match (&info.interpreter, info.glibc_floor) {
        (None, _) => "static".into(),
        (Some(_), Some((maj, min))) => format!("dynamic, needs glibc >= {maj}.{min}"),
        (Some(i), None) => format!("dynamic ({i})"),
    }
}

/// `cross` is installed and a Docker engine answers (cross runs the build in a container).
fn cross_usable(sh: &Shell) -> bool {
    tools::find("cross").is_some()
        && cmd!(sh, "cross --version")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
        && cmd!(sh, "docker info")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
}

fn ensure_rust_target(sh: &Shell, target: &str) -> Result<()> {
    let installed = cmd!(sh, "rustup target list --installed")
        .quiet()
        .read()
        .context("listing rustup targets (is rustup installed?)")?;
    if installed.lines().any(|l| l.trim() == target) {
        return Ok(());
    }
    eprintln!("agent: rustup target add {target}");
    cmd!(sh, "rustup target add {target}")
        .run()
        .with_context(|| format!("adding the Rust target {target}"))
}

/// The `CARGO_TARGET_<TRIPLE>_LINKER` setting for `arch`, checking the linker is there.
fn linker_env(arch: Arch) -> Result<Option<(String, &'static str)>> {
    let tool = match arch {
        Arch::Armhf => tools::ARM_GCC,
        Arch::Arm64 => tools::AARCH64_GCC,
        // The host cc links x86_64 musl with Rust's self-contained runtime.
        Arch::Amd64 => return Ok(None),
    };
    tools::require(&[tool])?;
    let var = format!(
        "CARGO_TARGET_{}_LINKER",
        arch.rust_target().to_uppercase().replace('-', "_")
    );
    Ok(Some((var, tool.program)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linkage_text() {
        let mut i = elf::ElfInfo {
            machine: elf::EM_ARM,
            bits: 32,
            interpreter: None,
            glibc_floor: None,
        };
        assert_eq!(linkage(&i), "static");
        i.interpreter = Some("/lib/ld-linux-armhf.so.3".into());
        i.glibc_floor = Some((2, 28));
        assert_eq!(linkage(&i), "dynamic, needs glibc >= 2.28");
    }
}
