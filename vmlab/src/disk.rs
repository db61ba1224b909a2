//! Per-VM disks and the boot files: each VM gets its own sparse copy of the image, "flashed" the way a
//! user flashes a card (hostname and SSH key set in the boot partition's `cluster-lab.toml` by the same
//! library function `cargo xtask flash` uses), grown to the size of an SD card. The kernel, initrd and
//! command line for QEMU's direct boot are read from the image's FAT boot partition.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cluster_lab_image::{disk, fat::FatVolume, flash};

use cluster_lab_image::arch::Arch;

/// The kernel, initrd and command line QEMU boots with.
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// Names of the kernel and initrd on the boot partition, per architecture: the amd64 base puts
/// `vmlinuz`/`initrd.img` there (systemd-boot's entry and QEMU use the same files); Raspberry Pi images
/// name them after the Pi's `config.txt` conventions.
fn candidates(arch: Arch) -> (&'static [&'static str], &'static [&'static str]) {
    match arch {
        Arch::Amd64 => (&["vmlinuz"], &["initrd.img"]),
        Arch::Arm64 => (
            &["vmlinuz", "kernel8.img", "Image"],
            &["initrd.img", "initramfs8", "initrd.img-arm64"],
        ),
        Arch::Armhf => (&["vmlinuz", "kernel7l.img"], &["initrd.img", "initramfs7l"]),
    }
}

/// Copy one file of the image's boot partition (a device tree) to `dest`.
pub fn extract_boot_file(image: &Path, name: &str, dest: &Path) -> Result<()> {
    let located = disk::locate(image)
        .with_context(|| format!("reading the partitions of {}", image.display()))?;
    let vol = FatVolume::open(image, &located.boot, false)
        .with_context(|| format!("opening the boot partition of {}", image.display()))?;
    let Some(bytes) = vol.read(name)? else {
        bail!("{}: no {name} on the boot partition", image.display());
    };
    std::fs::write(dest, bytes).with_context(|| format!("writing {}", dest.display()))
}

/// Copy the kernel and initrd out of the image's boot partition into `dir`; read its `cmdline.txt`.
pub fn extract_boot_files(image: &Path, arch: Arch, dir: &Path) -> Result<BootFiles> {
    std::fs::create_dir_all(dir)?;
    let located = disk::locate(image)
        .with_context(|| format!("reading the partitions of {}", image.display()))?;
    let vol = FatVolume::open(image, &located.boot, false)
        .with_context(|| format!("opening the boot partition of {}", image.display()))?;
    let read_first = |names: &[&str]| -> Result<Option<(String, Vec<u8>)>> {
        for n in names {
            if let Some(bytes) = vol.read(n)? {
                return Ok(Some((n.to_string(), bytes)));
            }
        }
        Ok(None)
    };
    // A Raspberry Pi card names its kernel and initramfs in config.txt (what the firmware boots).
    let (pi_kernel, pi_initrd) = match vol.read("config.txt")? {
        Some(b) => pi_boot_files(&String::from_utf8_lossy(&b)),
        None => (None, None),
    };
    let (fixed_kernels, fixed_initrds) = candidates(arch);
    let kernels: Vec<&str> = pi_kernel
        .as_deref()
        .into_iter()
        .chain(fixed_kernels.iter().copied())
        .collect();
    let initrds: Vec<&str> = pi_initrd
        .as_deref()
        .into_iter()
        .chain(fixed_initrds.iter().copied())
        .collect();
    let (kernels, initrds) = (kernels.as_slice(), initrds.as_slice());
    let Some((_, kernel)) = read_first(kernels)? else {
        bail!(
            "{}: no kernel on the boot partition (looked for {}); the virtual cluster boots the kernel there directly",
            image.display(),
            kernels.join(", ")
        );
    };
    let Some((_, initrd)) = read_first(initrds)? else {
        bail!(
            "{}: no initrd on the boot partition (looked for {})",
            image.display(),
            initrds.join(", ")
        );
    };
    let cmdline = match vol.read("cmdline.txt")? {
        Some(b) => String::from_utf8_lossy(&b)
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join(" ")
            .trim()
            .to_string(),
        None => bail!("{}: no cmdline.txt on the boot partition", image.display()),
    };
    let files = BootFiles {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        cmdline,
    };
    std::fs::write(&files.kernel, kernel)?;
    std::fs::write(&files.initrd, initrd)?;
    Ok(files)
}

/// The kernel (`kernel=NAME`) and initramfs (`initramfs NAME [followkernel]`) a Raspberry Pi's config.txt names.
fn pi_boot_files(config_txt: &str) -> (Option<String>, Option<String>) {
    let mut kernel = None;
    let mut initrd = None;
    for line in config_txt.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if let Some(k) = line.strip_prefix("kernel=") {
            kernel = Some(k.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("initramfs ") {
            initrd = rest.split_whitespace().next().map(str::to_string);
        }
    }
    (kernel, initrd)
}

/// A VM's disk: a sparse copy of `image` at `out`, with `hostname` and the test key in its
/// `cluster-lab.toml` (what `cargo xtask flash --hostname H --ssh-key K` writes on a card), then
/// grown to `size` bytes like a bigger SD card (the image grows its root filesystem on first boot).
pub fn prepare(image: &Path, out: &Path, hostname: &str, ssh_pub: &str, size: u64) -> Result<()> {
    copy_and_personalise(image, out, size, |card| {
        flash::personalise(card, hostname, Some(&[ssh_pub.trim().to_string()]))
            .map(drop)
            .with_context(|| format!("setting hostname {hostname} in {}", card.display()))
    })
}

/// A VM's disk flashed the way Raspberry Pi Imager personalises a card: `user-data` (hostname, user
/// [`crate::imager::USER`] with the test key, a timezone) and `meta-data` on the boot partition, cluster-lab.toml as
/// the image has it (no hostname, no keys); then grown to `size` bytes.
pub fn prepare_imager(
    image: &Path,
    out: &Path,
    hostname: &str,
    ssh_pub: &str,
    size: u64,
) -> Result<()> {
    copy_and_personalise(image, out, size, |card| {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let user_data = crate::imager::user_data(hostname, ssh_pub);
        let meta_data = crate::imager::meta_data(now_ms);
        flash::write_boot_files(
            card,
            &[
                ("user-data", user_data.as_bytes()),
                ("meta-data", meta_data.as_bytes()),
            ],
        )
        .with_context(|| format!("writing Imager's user-data into {}", card.display()))
    })
}

/// Copy `image` to `out` (sparse), let `personalise` edit the copy, grow it to `size` bytes; `out` appears only
/// when all of that worked.
fn copy_and_personalise(
    image: &Path,
    out: &Path,
    size: u64,
    personalise: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let partial = out.with_extension("img.partial");
    let len = disk::unpack(image, &partial)
        .with_context(|| format!("copying {} to {}", image.display(), partial.display()))?;
    personalise(&partial)?;
    if size > len {
        let f = std::fs::OpenOptions::new().write(true).open(&partial)?;
        f.set_len(size)
            .with_context(|| format!("growing {} to {size} bytes", partial.display()))?;
    }
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    Ok(())
}

/// The image the cluster boots by default: what `cargo xtask image --arch A` writes.
pub fn default_image(arch: Arch) -> PathBuf {
    crate::project_root().join(format!("build/image/cluster-lab-{arch}.img"))
}

/// Parse a size like `4G`, `512M` or a byte count.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'G' | 'g')) => (&s[..i], 1u64 << 30),
        Some((i, 'M' | 'm')) => (&s[..i], 1u64 << 20),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("{s:?} is not a size (e.g. 4G, 2048M)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pi_config_names_kernel_and_initramfs() {
        let txt = "# comment\narm_64bit=1\nkernel=vmlinuz-6.12-arm64\ninitramfs initrd.img-6.12-arm64 followkernel\n";
        assert_eq!(
            pi_boot_files(txt),
            (
                Some("vmlinuz-6.12-arm64".into()),
                Some("initrd.img-6.12-arm64".into())
            )
        );
        assert_eq!(pi_boot_files("#kernel=x\n"), (None, None));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("lots").is_err());
    }
}
