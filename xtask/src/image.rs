//! `cargo xtask image`: the flashable image — a base image with the agent, its units, the overlay files
//! and a `cluster-lab.toml` (with a fresh cluster secret) injected, without root or loop mounts.
//!
//! Steps: unpack the base into a working copy next to the output → write the root-filesystem entries
//! with debugfs (each verified) and the boot config with fatfs → `e2fsck -fn` + `fsck.vfat -n` →
//! compress and hash → rename `OUT.img`, `OUT.img.zst` and `OUT.sha256` into place.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use cluster_lab_config::edit;
use cluster_lab_image::{container, disk, inject, output};
use xshell::Shell;

use cluster_lab_image::arch::Arch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compress {
    /// OUT.img.zst: multi-threaded zstd (fast; Raspberry Pi Imager, balenaEtcher and `zstd -d` read it).
    Zst,
    /// OUT.img.xz: multi-threaded xz (smaller, several times slower).
    Xz,
    /// No compressed copy (OUT.img and OUT.sha256 only).
    None,
}

#[derive(Debug, Args)]
pub struct Image {
    /// Target architecture (of the agent that is built and injected).
    #[arg(long, value_enum)]
    pub arch: Arch,
    /// Base image to inject into: .img, .img.xz, .img.zst or .zip holding one .img, with an MBR, a FAT
    /// boot partition and an ext4 root (Raspberry Pi OS, Debian raspi images, ours).
    /// Default: build/base/<arch>.img from `cargo xtask base`.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Output path without extension: writes OUT.img, OUT.img.zst (or .xz) and OUT.sha256.
    /// Default: build/image/cluster-lab-<arch>.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Use this agent binary instead of building it with `cargo xtask agent --arch A --release`.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Directory mirrored into the root filesystem (default: overlays/).
    #[arg(long)]
    pub overlays: Option<PathBuf>,
    /// Compressed copy to produce.
    #[arg(long, value_enum, default_value = "zst")]
    pub compress: Compress,
    /// Compression level (zstd 1–19, default 12; xz 0–9, default 6).
    #[arg(long)]
    pub level: Option<i32>,
}

impl Image {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let root = crate::project_root();
        let base = match &self.base {
            Some(b) => b.clone(),
            None => default_base(&root, self.arch)?,
        };
        if !base.is_file() {
            bail!(
                "base image {} does not exist; build one with `cargo xtask base --arch {}` or pass --base FILE",
                base.display(),
                self.arch
            );
        }
        let out = self
            .out
            .clone()
            .unwrap_or_else(|| root.join(format!("build/image/cluster-lab-{}", self.arch)));
        let out = strip_img_ext(&out);
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let overlays = self
            .overlays
            .clone()
            .unwrap_or_else(|| root.join("overlays"));
        let agent = match &self.agent {
            Some(a) => {
                // A binary for another board would leave a card that never finishes its first boot.
                cluster_lab_image::elf::require_machine(a, self.arch)
                    .context("checking --agent")?;
                a.clone()
            }
            None => {
                step(&format!(
                    "building the agent for {} (cargo xtask agent --arch {} --release)",
                    self.arch, self.arch
                ));
                crate::agent::build(sh, self.arch, true, false)
                    .context("building the agent (pass --agent PATH to use an existing binary)")?
                    .path
            }
        };
        let compression = match (self.compress, self.level) {
            (Compress::Zst, None) => output::Compression::Zstd(12),
            (Compress::Zst, Some(l @ 1..=19)) => output::Compression::Zstd(l),
            (Compress::Xz, None) => output::Compression::Xz(6),
            (Compress::Xz, Some(l @ 0..=9)) => output::Compression::Xz(l as u32),
            (Compress::None, _) => output::Compression::None,
            (c, Some(l)) => bail!("--level {l} is out of range for {c:?} (zstd: 1–19, xz: 0–9)"),
        };

        // Payload first: a bad overlay or missing agent fails before any big copy.
        let mut payload = inject::Payload::default();
        payload
            .add_agent(&agent)
            .context("adding the agent binary")?;
        payload.add_overlay(&overlays).context("reading overlays")?;
        let secret = edit::random_secret();
        let config = edit::set_secret(cluster_lab_config::DEFAULT_TOML, &secret)
            .context("writing the cluster secret")?;
        // The card must not boot with a file its agent rejects: the agent's own parser checks it here.
        cluster_lab_config::Settings::parse(&config, Path::new(cluster_lab_config::FILE_NAME))
            .context("the generated cluster-lab.toml does not validate")?;
        payload.add_boot_file(cluster_lab_config::FILE_NAME, config.into_bytes());

        output::remove_previous(&out).context("removing previous outputs")?;
        let work = inject::temp_path(&out, "img");
        let result = (|| -> Result<output::Published> {
            let t = Instant::now();
            step(&format!("unpacking base {}", base.display()));
            let size = disk::unpack(&base, &work).context("unpacking base image")?;
            eprintln!(
                "    {} MiB in {:.1} s",
                size >> 20,
                t.elapsed().as_secs_f64()
            );

            let busybox = preload_busybox(&work, self.arch)?;
            if let Some(archive) = &busybox {
                payload.add_container_image(container::ARCHIVE_NAME, archive.path());
            }

            let t = Instant::now();
            step("injecting agent, overlays and cluster-lab.toml");
            let done = inject::inject(&work, &payload).context("injecting into the image")?;
            eprintln!(
                "    {} root entries, {} boot file(s); boot {}, root {}; inject + fsck {:.1} s",
                done.root_entries,
                done.boot_files,
                done.located.boot,
                done.located.root,
                t.elapsed().as_secs_f64()
            );

            let t = Instant::now();
            step("compressing and hashing");
            let published = output::publish(&work, &out, compression).context("writing outputs")?;
            eprintln!("    {:.1} s", t.elapsed().as_secs_f64());
            Ok(published)
        })();
        let published = match result {
            Ok(p) => p,
            Err(e) => {
                let _ = std::fs::remove_file(&work);
                return Err(e);
            }
        };
        step("done");
        eprintln!(
            "    {}  ({} MiB)",
            published.image.display(),
            published.image_size >> 20
        );
        if let (Some(c), Some(s)) = (&published.compressed, published.compressed_size) {
            eprintln!("    {}  ({} MiB)", c.display(), s >> 20);
        }
        eprintln!("    {}", published.checksums.display());
        eprintln!(
            "    flash with: cargo xtask flash --hostname node1 --ssh-key ~/.ssh/id_ed25519.pub {} /dev/sdX",
            published.image.display()
        );
        println!("{}", published.image.display());
        Ok(())
    }
}

fn step(what: &str) {
    eprintln!("==> {what}");
}

/// The busybox container image first boot loads into dockerd, built from the base's static busybox into a temporary
/// file (removed when dropped). A base without busybox-static gets a warning and no preloaded image.
fn preload_busybox(work: &Path, arch: Arch) -> Result<Option<tempfile::NamedTempFile>> {
    step(&format!(
        "building the preloaded container image {}",
        container::REPO_TAG
    ));
    let binary = match container::find_busybox(work).context("reading busybox from the base")? {
        container::FoundBusybox::Static { path, binary } => {
            eprintln!("    {path}: {} KiB", binary.len() >> 10);
            binary
        }
        found => {
            let why = match found {
                container::FoundBusybox::Dynamic { path } => {
                    format!("{path} is dynamically linked")
                }
                _ => format!("no {}", container::BUSYBOX_PATHS.join(" or ")),
            };
            eprintln!(
                "    warning: {why} in the base; no container image is preloaded (install busybox-static in the base)"
            );
            return Ok(None);
        }
    };
    let image = container::busybox_image(&binary).context("building the busybox image")?;
    if arch.docker_platform() != image.platform {
        bail!(
            "the base's busybox is {}, but the image is for {arch}: is --base an image for another board?",
            image.platform
        );
    }
    let mut file = tempfile::NamedTempFile::new().context("creating a temporary file")?;
    std::io::Write::write_all(&mut file, &image.archive)
        .with_context(|| format!("writing {}", file.path().display()))?;
    eprintln!(
        "    {} ({}), {} KiB, image id {}",
        container::REPO_TAG,
        image.platform,
        image.archive.len() >> 10,
        image.image_id
    );
    Ok(Some(file))
}

/// `OUT.img` given as OUT: drop the extension so outputs are not named `x.img.img`.
fn strip_img_ext(out: &Path) -> PathBuf {
    let s = out.to_string_lossy();
    for ext in [".img.zst", ".img.xz", ".img"] {
        if let Some(stem) = s.strip_suffix(ext) {
            return PathBuf::from(stem);
        }
    }
    out.to_path_buf()
}

/// `build/base/<arch>.img` (the newest base `cargo xtask base` built), else the newest
/// `build/base/<arch>-*.img`.
fn default_base(root: &Path, arch: Arch) -> Result<PathBuf> {
    let dir = root.join("build/base");
    let latest = dir.join(format!("{arch}.img"));
    if latest.exists() {
        return Ok(latest);
    }
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(&format!("{arch}-")) && n.ends_with(".img") && !n.ends_with(".initrd.img")
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    match found.pop() {
        Some((_, p)) => Ok(p),
        None => bail!(
            "no base image for {arch} in {}: run `cargo xtask base --arch {arch}` first, or pass --base FILE \
             (a Raspberry Pi OS or Debian .img/.img.xz/.zip works too)",
            dir.display()
        ),
    }
}
