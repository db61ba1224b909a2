//! The root filesystem tree: Debian trixie by mmdebstrap (`--mode=root`, we run as root; foreign
//! architectures through qemu-user binfmt), then checks that nothing per-machine or password-bearing
//! was baked in.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::recipe::Recipe;
use cluster_lab_image::arch::Arch;
use cluster_lab_image::host_tools::{self as tools, tail};

/// Everything mmdebstrap needs for one build.
#[derive(Debug)]
pub struct Bootstrap<'a> {
    pub recipe: &'a Recipe,
    pub arch: Arch,
    pub mirror: &'a str,
    pub packages: Vec<String>,
    /// A verified Consul binary to install instead of Debian's package.
    pub consul_bin: Option<PathBuf>,
    pub root_label: &'a str,
    /// Debian packages the customize hook unpacks (`dpkg-deb -x`), each into `<unpack_dir>/<package>/`.
    pub unpack: Vec<&'static str>,
    pub unpack_dir: PathBuf,
    /// mmdebstrap's full output goes here.
    pub log: PathBuf,
}

impl Bootstrap<'_> {
    /// Run mmdebstrap into `root` (which must not exist yet).
    pub fn run(&self, root: &Path, work: &Path) -> Result<()> {
        let sources = work.join("sources.list");
        std::fs::write(&sources, self.recipe.sources(self.mirror)?)
            .with_context(|| format!("writing {}", sources.display()))?;
        let hooks = self.recipe.dir.join("hooks");
        let nodoc = self
            .recipe
            .dir
            .join("rootfs/etc/dpkg/dpkg.cfg.d/10-cluster-lab-nodoc");

        let mut cmd = Command::new("mmdebstrap");
        cmd.arg("--mode=root")
            .arg("--variant=apt")
            .arg(format!("--arch={}", self.arch.debian()))
            .arg(format!("--include={}", self.packages.join(",")))
            .arg(format!("--dpkgopt={}", nodoc.display()))
            .arg("--aptopt=Acquire::Retries \"3\"")
            .arg(format!("--setup-hook={}", hooks.join("setup.sh").display()))
            .arg(format!(
                "--customize-hook={}",
                hooks.join("customize.sh").display()
            ))
            .arg("trixie")
            .arg(root)
            .arg(&sources)
            .env("CLUSTER_LAB_RECIPE", &self.recipe.dir)
            .env("CLUSTER_LAB_ARCH", self.arch.debian())
            .env("CLUSTER_LAB_ROOT_LABEL", self.root_label)
            .env("CLUSTER_LAB_UNPACK", self.unpack.join(" "))
            .env("CLUSTER_LAB_UNPACK_DIR", &self.unpack_dir)
            .env(
                "CLUSTER_LAB_CONSUL_BIN",
                self.consul_bin.as_deref().unwrap_or(Path::new("")),
            )
            .stdin(Stdio::null());
        let log = std::fs::File::create(&self.log)
            .with_context(|| format!("creating {}", self.log.display()))?;
        cmd.stdout(log.try_clone()?).stderr(log);
        let status = wait_with_heartbeat(&mut cmd, &self.log)?;
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!(
                "mmdebstrap failed ({status}):\n  {}\n--- last lines of {} ---\n{}\n---\n\
                 If apt could not fetch packages, check that the mirror {} is reachable and serves trixie \
                 (and bullseye for consul); choose another with --mirror.",
                show(&cmd),
                self.log.display(),
                tail(&text, 25),
                self.mirror
            );
        }
        Ok(())
    }
}

/// Run `cmd`; while it runs, print a line every minute with the newest line of its log, so a 20-minute
/// foreign-architecture build shows it is alive.
fn wait_with_heartbeat(cmd: &mut Command, log: &Path) -> Result<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    let mut child = cmd.spawn().context("running mmdebstrap")?;
    let mut next = 60;
    loop {
        if let Some(status) = child.try_wait().context("waiting for mmdebstrap")? {
            return Ok(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        let secs = started.elapsed().as_secs();
        if secs >= next {
            next += 60;
            let text = std::fs::read_to_string(log).unwrap_or_default();
            eprintln!("base:   … {secs} s, {}", tail(&text, 1).trim());
        }
    }
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains([' ', '"']) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Make sure this host can run `arch` binaries in a chroot: qemu-user-static installed, binfmt_misc
/// mounted, and the qemu entry registered and enabled.
pub fn ensure_binfmt(arch: Arch) -> Result<()> {
    let Some(name) = arch.qemu_binfmt() else {
        return Ok(());
    };
    // Everything a foreign-architecture mmdebstrap run calls: the emulator, and arch-test, which mmdebstrap
    // runs to check that the chroot's binaries execute.
    tools::require(&[
        if arch == Arch::Arm64 {
            tools::QEMU_AARCH64
        } else {
            tools::QEMU_ARM
        },
        tools::ARCH_TEST,
    ])?;
    let misc = Path::new("/proc/sys/fs/binfmt_misc");
    let entry = misc.join(name);
    if is_enabled(&entry) {
        return Ok(());
    }
    if !tools::is_root() {
        bail!(
            "{arch} binaries cannot run here: binfmt_misc has no enabled {name} entry, and registering it needs \
             root (sudo mount -t binfmt_misc binfmt_misc {0}; sudo update-binfmts --enable {name})",
            misc.display()
        );
    }
    if !misc.join("register").exists() {
        eprintln!("base: mounting binfmt_misc");
        run_quiet(
            Command::new("mount")
                .args(["-t", "binfmt_misc", "binfmt_misc"])
                .arg(misc),
        )?;
    }
    if !entry.exists() {
        // systemd-binfmt's format: the file's one line is what the kernel's register file takes.
        let conf = Path::new("/usr/lib/binfmt.d").join(format!("{name}.conf"));
        if let Ok(line) = std::fs::read_to_string(&conf) {
            eprintln!("base: registering {name} from {}", conf.display());
            std::fs::write(misc.join("register"), line.trim())
                .with_context(|| format!("registering {} with binfmt_misc", conf.display()))?;
        } else if tools::find("update-binfmts").is_some() {
            eprintln!("base: update-binfmts --enable {name}");
            run_quiet(Command::new("update-binfmts").args(["--enable", name]))?;
        }
    }
    if !is_enabled(&entry) {
        std::fs::write(&entry, "1").ok();
    }
    if !is_enabled(&entry) {
        bail!(
            "could not register {name} with binfmt_misc; install qemu-user-static and binfmt-support and run \
             `update-binfmts --enable {name}`"
        );
    }
    Ok(())
}

fn is_enabled(entry: &Path) -> bool {
    std::fs::read_to_string(entry)
        .map(|s| s.lines().next() == Some("enabled"))
        .unwrap_or(false)
}

pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{}",
            show(cmd),
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Remove a work directory left by an interrupted build. mmdebstrap mounts /proc, /sys and /dev inside
/// its root while it runs: unmount whatever is still there first, and never delete through a mount.
pub fn remove_stale(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let dir = dir.canonicalize()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        eprintln!("base: unmounting {m} left by an interrupted build");
        run_quiet(Command::new("umount").arg("--lazy").arg(m))?;
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

/// Checks on the finished tree: no account with a usable password, no SSH host keys, Consul present.
pub fn check(root: &Path, arch: Arch) -> Result<()> {
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).context("reading etc/shadow")?;
    check_shadow(&shadow)?;
    let keys: Vec<_> = std::fs::read_dir(root.join("etc/ssh"))
        .context("listing etc/ssh")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ssh_host_"))
        .collect();
    if !keys.is_empty() {
        bail!("the image would ship SSH host keys shared by every card: {keys:?}");
    }
    cluster_lab_image::elf::require_machine(&root.join("usr/bin/consul"), arch)
        .context("checking usr/bin/consul")?;
    Ok(())
}

/// Every account's password field must be locked (`!…`) or impossible (`*`).
pub fn check_shadow(shadow: &str) -> Result<()> {
    for line in shadow.lines() {
        let mut f = line.split(':');
        let (user, pw) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        if !(pw.starts_with('!') || pw.starts_with('*')) {
            bail!("account `{user}` has a usable password in etc/shadow; the base image must have none");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_check() {
        check_shadow(
            "root:!*:20000:0:99999:7:::\nconsul:!:20000::::::\nbin:*:20000:0:99999:7:::\n",
        )
        .unwrap();
        let err = check_shadow("root:!*:1::::::\ncluster:$y$j9T$abc:1::::::\n").unwrap_err();
        assert!(err.to_string().contains("`cluster`"), "{err}");
        assert!(check_shadow("root::1::::::\n").is_err());
    }

    #[test]
    fn show_quotes_arguments_with_spaces() {
        let mut c = Command::new("mmdebstrap");
        c.args(["--aptopt=Acquire::Retries \"3\"", "trixie"]);
        assert_eq!(
            show(&c),
            "mmdebstrap '--aptopt=Acquire::Retries \"3\"' trixie"
        );
    }
}
