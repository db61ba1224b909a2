//! `cargo xtask image`: the flashable image (`cluster_lab_image::build`) from the command line — defaults for
//! the base, the output and the overlays, the agent built when none is given, the compression chosen.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use cluster_lab_image::{build, output};
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
    /// The cluster's secret, to build more cards for an existing cluster: the file holds the secret on one line.
    /// A file that does not exist yet is created (mode 0600) with a fresh secret, so the first build of a
    /// cluster can keep it for later ones. Without this option every build makes a new cluster.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
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
            Some(a) => a.clone(),
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

        let secret = self.secret_file.as_deref().map(secret_from).transpose()?;
        // The base build leaves the Debian packages it unpacked for the stacks' images beside the base.
        // `<arch>.img` is a link: the packages are those of the base it points at, `<arch>-<hash>.packages`.
        let packages = Some(
            std::fs::canonicalize(&base)
                .unwrap_or_else(|_| base.clone())
                .with_extension("packages"),
        );
        let recipe = build::Recipe {
            packages,
            secret,
            arch: self.arch,
            base,
            out,
            agent,
            overlays,
            compression,
        };
        let published = build::build(&recipe, &mut |line| eprintln!("{line}"))?;
        step("done");
        eprintln!(
            "    {}  ({} MiB)",
            published.image.display(),
            published.image_size >> 20
        );
        if let (Some(c), Some(s)) = (&published.compressed, published.compressed_size) {
            eprintln!("    {}  ({} MiB)", c.display(), s >> 20);
        }
        eprintln!(
            "    {}  (block map: {} MiB of data to write)",
            published.bmap.display(),
            published.mapped_bytes >> 20
        );
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

/// The secret in `path` (one line, checked by the same rule the agent applies), or a fresh one written there
/// (mode 0600, never overwriting) when the file does not exist.
fn secret_from(path: &Path) -> Result<cluster_lab_config::Secret> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let fresh = cluster_lab_config::edit::random_secret();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            writeln!(f, "{fresh}").with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "==> wrote a fresh cluster secret to {} (keep it to build more cards for this cluster)",
                path.display()
            );
            fresh
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
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
