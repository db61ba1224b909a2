//! The base image (`cargo xtask base`): a HypriotOS-style Debian trixie image built from Debian packages,
//! which `cargo xtask image` turns into the flashable cluster-lab image.
//!
//! Steps: recipe hash → cache lookup (`build/base/<arch>-<hash>.img`) → Consul source → binfmt for foreign
//! architectures → mmdebstrap (trixie, hooks from `image/recipe/hooks/`) → checks → boot tree split off
//! `/boot/firmware` → disk image (MBR: FAT32 `CLBOOT` + ext4 `clroot`) → manifest. Everything is built
//! under `build/base/.work-*` and renamed into place at the end, so an interrupted build never leaves a
//! file that looks finished.

pub mod boards;
pub mod bootcheck;
pub mod consul;
pub mod devicetree;
pub mod kmod;
pub mod manifest;
mod output;
pub mod recipe;
mod rootfs;

use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

use cluster_lab_image::arch::Arch;
use cluster_lab_image::host_tools as tools;
pub use consul::ConsulSource;
pub use manifest::Manifest;
use output::{link_latest, rel, Paths, Step};
use recipe::Recipe;

/// Size of the FAT boot partition: Pi firmware, kernel, initrd, device trees (or the EFI loader) with room
/// for a kernel upgrade.
const BOOT_PARTITION_BYTES: u64 = 320 << 20;
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

#[derive(Debug, Args)]
pub struct Base {
    /// Target architecture.
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Use this HashiCorp release archive (consul_<v>_linux_<arch>.zip) instead of Debian's consul package.
    #[arg(
        long,
        value_name = "PATH",
        requires = "consul_sha256sums",
        conflicts_with = "consul_version"
    )]
    pub consul_zip: Option<PathBuf>,
    /// The release's SHA256SUMS file; the zip must match its line there.
    #[arg(long, value_name = "PATH", requires = "consul_zip")]
    pub consul_sha256sums: Option<PathBuf>,
    /// Download this HashiCorp Consul release (needs internet) instead of Debian's consul package.
    #[arg(long, value_name = "VERSION")]
    pub consul_version: Option<String>,
    /// Debian mirror for trixie (and bullseye, for consul).
    #[arg(long, default_value = DEFAULT_MIRROR)]
    pub mirror: String,
    /// Build even when a cached base with the same recipe hash exists.
    #[arg(long)]
    pub rebuild: bool,
    /// Then boot it in QEMU (amd64 or arm64, TCG) and check its services, root growth and identity on the
    /// serial console.
    #[arg(long)]
    pub boot_check: bool,
    /// Seconds --boot-check waits for the guest's report.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub boot_timeout: u64,
    /// Also copy the image here (the cached copy stays in build/base/).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// What a base build produced (or found in the cache).
#[derive(Debug, Clone)]
pub struct BaseOutput {
    pub image: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    /// Kernel and initrd extracted for QEMU's direct boot (`-kernel`/`-initrd`, `-append manifest.cmdline`).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cached: bool,
}

impl Base {
    pub fn run(self) -> Result<()> {
        let out = self.build()?;
        if let Some(dest) = &self.output {
            let step = Step::start(format!("copying image to {}", dest.display()));
            let tmp = dest.with_extension("img.partial");
            std::fs::copy(&out.image, &tmp)
                .with_context(|| format!("copying {} to {}", out.image.display(), tmp.display()))?;
            std::fs::rename(&tmp, dest)
                .with_context(|| format!("renaming to {}", dest.display()))?;
            step.done();
        }
        let m = &out.manifest;
        eprintln!(
            "base: {} {} — image {} MiB (boot {} MiB FAT32 `{}`, root {} MiB ext4 `{}`), Debian {} with kernel {}",
            m.arch,
            if out.cached { "(cached)" } else { "built" },
            m.image_bytes >> 20,
            m.partitions[0].size >> 20,
            m.partitions[0].label,
            m.partitions[1].size >> 20,
            m.partitions[1].label,
            m.suite,
            m.kernel_version
        );
        eprintln!("base: manifest {}", rel(&out.manifest_path).display());
        eprintln!(
            "base: QEMU direct boot: -kernel {} -initrd {} -append '{}'",
            rel(&out.kernel).display(),
            rel(&out.initrd).display(),
            if m.qemu_cmdline.is_empty() {
                &m.cmdline
            } else {
                &m.qemu_cmdline
            }
        );
        if self.boot_check {
            let step = Step::start("boot check: QEMU TCG, waiting for the serial login prompt");
            let report =
                bootcheck::boot_check(&out, std::time::Duration::from_secs(self.boot_timeout))?;
            step.done();
            eprintln!(
                "base: boot check passed — login prompt after {}, services up after {:.1} s (QEMU TCG, 2 vCPU, 1 GiB)",
                report
                    .login_after
                    .map(|t| format!("{:.1} s", t.as_secs_f64()))
                    .unwrap_or_else(|| "(not seen)".into()),
                report.report_after.as_secs_f64()
            );
            for (k, v) in &report.facts {
                eprintln!("base:   {k} = {v}");
            }
        }
        println!("{}", self.output.as_ref().unwrap_or(&out.image).display());
        Ok(())
    }

    fn consul_source(&self) -> ConsulSource {
        match (
            &self.consul_zip,
            &self.consul_sha256sums,
            &self.consul_version,
        ) {
            (Some(zip), Some(sums), _) => ConsulSource::Zip {
                zip: zip.clone(),
                sums: sums.clone(),
            },
            (_, _, Some(v)) => ConsulSource::Version(v.clone()),
            _ => ConsulSource::Debian,
        }
    }

    /// Build the base for `self.arch`, or return the cached one.
    pub fn build(&self) -> Result<BaseOutput> {
        let total = Instant::now();
        let root = crate::project_root();
        let recipe = Recipe::new(root.join("image/recipe"))?;
        let arch = self.arch;
        let out_dir = root.join("build/base");
        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("creating {}", out_dir.display()))?;

        // One build per architecture at a time: a second one waits, then usually finds the first one's result.
        let _lock = lock_arch(&out_dir, arch)?;

        // Consul first: its digest is part of the cache key.
        let staging = out_dir.join(format!(".consul-{arch}"));
        std::fs::create_dir_all(&staging)?;
        let consul = self.consul_source().prepare(arch, &staging)?;
        let consul_key = match &consul {
            None => "debian-bullseye".to_string(),
            Some(c) => format!("hashicorp-sha256:{}", c.sha256),
        };
        let unpack = cluster_lab_image::package_images::packages();
        let hash = recipe.hash(&[
            ("arch", arch.debian()),
            ("consul", &consul_key),
            ("mirror", &self.mirror),
            ("unpack", &unpack.join(" ")),
        ])?;
        let stem = format!("{arch}-{hash}");
        let paths = Paths::new(&out_dir, &stem);
        eprintln!("base: {arch}, recipe hash {hash}, consul from {consul_key}");

        if !self.rebuild
            && paths.manifest.exists()
            && paths.image.exists()
            && paths.packages.is_dir()
        {
            let manifest = Manifest::load(&paths.manifest)?;
            link_latest(&out_dir, arch, &paths)?;
            eprintln!(
                "base: cached {} is up to date ({:.1} s)",
                rel(&paths.image).display(),
                total.elapsed().as_secs_f64()
            );
            return Ok(paths.output(manifest, true));
        }

        require_build_host(arch)?;
        remove_interrupted_work(&out_dir, arch)?;
        let work = out_dir.join(format!(".work-{stem}"));
        std::fs::create_dir_all(&work)?;
        let tree = work.join("rootfs");
        let mut packages = recipe.packages(arch)?;
        if consul.is_some() {
            packages.retain(|p| p != "consul");
        }

        let step = Step::start(format!(
            "mmdebstrap trixie {arch}: {} packages (log: {})",
            packages.len(),
            rel(&paths.log).display()
        ));
        rootfs::Bootstrap {
            recipe: &recipe,
            arch,
            mirror: &self.mirror,
            packages,
            consul_bin: consul.as_ref().map(|c| c.binary.clone()),
            root_label: cluster_lab_image::assemble::ROOT_LABEL,
            unpack,
            unpack_dir: work.join("packages"),
            log: paths.log.clone(),
        }
        .run(&tree, &work)?;
        let t_bootstrap = step.done();

        let step = Step::start("checking the root tree (passwords, host keys, consul, every board's boot and network drivers)");
        rootfs::check(&tree, arch)?;
        let BootFiles {
            boot,
            kernel_version,
            cmdline,
        } = extract_boot_files(&tree, &work)?;
        let packages = manifest::installed_packages(&tree)?;
        for report in boards::check(&tree, arch, &kernel_version)? {
            eprintln!("base:   {}", boards::summary(&report));
        }
        let root_used = manifest::tree_bytes(&tree)?;
        let boot_used = manifest::tree_bytes(&boot)?;
        step.done();

        let step = Step::start("assembling the disk image (FAT32 boot + ext4 root, MBR)");
        let disk = work.join("disk.img");
        let layout = assemble(&disk, &boot, &tree)?;
        let t_disk = step.done();

        let manifest = Manifest {
            arch: arch.debian().into(),
            recipe_hash: hash.clone(),
            suite: "trixie".into(),
            mirror: self.mirror.clone(),
            consul: consul_key,
            kernel_version,
            qemu_cmdline: qemu_cmdline(arch, &cmdline),
            cmdline,
            image_bytes: layout.size,
            root_tree_bytes: root_used,
            boot_tree_bytes: boot_used,
            partitions: manifest::partitions(&layout),
            timings_s: manifest::Timings {
                bootstrap: t_bootstrap,
                disk: t_disk,
                total: total.elapsed().as_secs_f64(),
            },
            built_at_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            packages,
        };

        publish(&work, &disk, &paths, &manifest)?;
        link_latest(&out_dir, arch, &paths)?;
        rootfs::remove_stale(&work)?;
        std::fs::remove_dir_all(&staging).ok();
        eprintln!(
            "base: {} in {:.1} s",
            rel(&paths.image).display(),
            total.elapsed().as_secs_f64()
        );
        Ok(paths.output(manifest, false))
    }
}

/// A foreign or native base needs root, mmdebstrap, the filesystem tools and (foreign) binfmt emulation.
fn require_build_host(arch: Arch) -> Result<()> {
    if !tools::is_root() {
        bail!("building a base image needs root (mmdebstrap --mode=root); run `sudo -E cargo xtask base --arch {arch}`");
    }
    tools::require(&[
        tools::MMDEBSTRAP,
        tools::MKE2FS,
        tools::E2FSCK,
        tools::FSCK_VFAT,
        tools::MKFS_VFAT,
    ])?;
    rootfs::ensure_binfmt(arch)
}

/// Work directories of interrupted builds of this architecture (any recipe hash) go first.
fn remove_interrupted_work(out_dir: &Path, arch: Arch) -> Result<()> {
    for entry in std::fs::read_dir(out_dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&format!(".work-{arch}-")) {
            rootfs::remove_stale(&path)?;
        }
    }
    Ok(())
}

/// The boot partition's tree, split off the root tree, and what QEMU's direct boot needs from it.
struct BootFiles {
    boot: PathBuf,
    kernel_version: String,
    cmdline: String,
}

/// Split `/boot/firmware` off `tree` into `work/boot`; copy the newest kernel and initrd to `work/`.
fn extract_boot_files(tree: &Path, work: &Path) -> Result<BootFiles> {
    let boot = work.join("boot");
    split_boot_tree(tree, &boot)?;
    let kernel_version = newest_kernel(tree)?;
    let cmdline = std::fs::read_to_string(boot.join("cmdline.txt"))
        .context("reading the boot partition's cmdline.txt")?
        .trim()
        .to_string();
    for (from, to, what) in [
        ("vmlinuz", "vmlinuz", "the kernel"),
        ("initrd.img", "initrd.img", "the initrd"),
    ] {
        std::fs::copy(
            tree.join(format!("boot/{from}-{kernel_version}")),
            work.join(to),
        )
        .with_context(|| format!("copying {what}"))?;
    }
    Ok(BootFiles {
        boot,
        kernel_version,
        cmdline,
    })
}

/// Into place: image, kernel and initrd first, the manifest last (a manifest means "complete").
fn publish(work: &Path, disk: &Path, paths: &Paths, manifest: &Manifest) -> Result<()> {
    std::fs::rename(disk, &paths.image)?;
    std::fs::rename(work.join("vmlinuz"), &paths.kernel)?;
    std::fs::rename(work.join("initrd.img"), &paths.initrd)?;
    if paths.packages.exists() {
        std::fs::remove_dir_all(&paths.packages)
            .with_context(|| format!("removing the old {}", paths.packages.display()))?;
    }
    std::fs::rename(work.join("packages"), &paths.packages).with_context(|| {
        format!(
            "moving the unpacked packages to {}",
            paths.packages.display()
        )
    })?;
    manifest.save(&paths.manifest)
}

/// An exclusive lock on `build/base/.lock-<arch>`, held until the returned file is dropped.
fn lock_arch(dir: &Path, arch: Arch) -> Result<std::fs::File> {
    let path = dir.join(format!(".lock-{arch}"));
    let file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    if file.try_lock().is_err() {
        eprintln!(
            "base: another {arch} base build is running; waiting for it ({})",
            rel(&path).display()
        );
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(file)
}

/// The one place the disk image is put together: cluster-lab-image's assembler (mbrman, fatfs, mke2fs -d,
/// fsck checks) builds it from the boot tree and the root tree.
fn assemble(disk: &Path, boot: &Path, tree: &Path) -> Result<cluster_lab_image::assemble::Layout> {
    cluster_lab_image::assemble::build_disk(
        disk,
        boot,
        BOOT_PARTITION_BYTES,
        tree,
        None,
        &cluster_lab_image::assemble::Labels::default(),
    )
    .context("assembling the disk image")
}

/// The command line for booting the base in QEMU: on amd64 the boot partition's own; the Pi's names the Pi's
/// UARTs, so arm64/armhf (`-M virt`) get the virt machine's PL011 as console instead.
fn qemu_cmdline(arch: Arch, cmdline: &str) -> String {
    match arch {
        Arch::Amd64 => cmdline.to_string(),
        Arch::Arm64 | Arch::Armhf => {
            let rest: Vec<&str> = cmdline
                .split_whitespace()
                .filter(|w| !w.starts_with("console="))
                .collect();
            format!("console=ttyAMA0,115200 {}", rest.join(" "))
        }
    }
}

/// Move the contents of `<tree>/boot/firmware` (the FAT partition's files) to `boot`, leaving the empty
/// mount point in the root tree.
fn split_boot_tree(tree: &Path, boot: &Path) -> Result<()> {
    let fw = tree.join("boot/firmware");
    std::fs::create_dir_all(boot)?;
    for entry in std::fs::read_dir(&fw).with_context(|| format!("listing {}", fw.display()))? {
        let entry = entry?;
        std::fs::rename(entry.path(), boot.join(entry.file_name()))
            .with_context(|| format!("moving {} to the boot tree", entry.path().display()))?;
    }
    if !boot.join("cmdline.txt").is_file() {
        bail!("the recipe's customize hook left no cmdline.txt in /boot/firmware");
    }
    Ok(())
}

fn newest_kernel(tree: &Path) -> Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir(tree.join("boot"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .collect();
    versions.sort();
    versions.pop().context(
        "no kernel (boot/vmlinuz-*) in the root tree: is a linux-image package in the recipe?",
    )
}

/// The workspace root (the parent of base/): the recipe lives in `image/recipe/`, bases are cached in
/// `build/base/`.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("base lives in the workspace root")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_cmdline_swaps_pi_consoles_for_virt() {
        let pi = "console=tty0 console=ttyAMA0,115200 console=ttyS1,115200 root=LABEL=clroot rw fsck.repair=yes net.ifnames=0 rootwait";
        assert_eq!(
            qemu_cmdline(Arch::Arm64, pi),
            "console=ttyAMA0,115200 root=LABEL=clroot rw fsck.repair=yes net.ifnames=0 rootwait"
        );
        let pc = "root=LABEL=clroot ro console=tty0 console=ttyS0,115200";
        assert_eq!(qemu_cmdline(Arch::Amd64, pc), pc);
    }
}
