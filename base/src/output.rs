//! Where a base build's files go (`build/base/<arch>-<hash>.*`, the `<arch>.*` symlinks) and the progress
//! lines printed while it runs.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{BaseOutput, Manifest};
use cluster_lab_image::arch::Arch;

pub struct Paths {
    pub image: PathBuf,
    pub manifest: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub log: PathBuf,
    /// Debian packages unpacked for the built-in stacks' container images (one directory per package).
    pub packages: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path, stem: &str) -> Paths {
        Paths {
            image: dir.join(format!("{stem}.img")),
            manifest: dir.join(format!("{stem}.json")),
            kernel: dir.join(format!("{stem}.vmlinuz")),
            initrd: dir.join(format!("{stem}.initrd.img")),
            log: dir.join(format!("{stem}.log")),
            packages: dir.join(format!("{stem}.packages")),
        }
    }

    pub fn output(&self, manifest: Manifest, cached: bool) -> BaseOutput {
        BaseOutput {
            image: self.image.clone(),
            manifest_path: self.manifest.clone(),
            manifest,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cached,
        }
    }
}

/// `build/base/<arch>.img` (and .json, .vmlinuz, .initrd.img, .packages) point at the newest build for that arch.
pub fn link_latest(dir: &Path, arch: Arch, paths: &Paths) -> Result<()> {
    for (target, ext) in [
        (&paths.image, "img"),
        (&paths.manifest, "json"),
        (&paths.kernel, "vmlinuz"),
        (&paths.initrd, "initrd.img"),
        (&paths.packages, "packages"),
    ] {
        let link = dir.join(format!("{arch}.{ext}"));
        let tmp = dir.join(format!(".{arch}.{ext}.link"));
        std::fs::remove_file(&tmp).ok();
        let name = target.file_name().context("output without a file name")?;
        std::os::unix::fs::symlink(name, &tmp)?;
        std::fs::rename(&tmp, &link).with_context(|| format!("updating {}", link.display()))?;
    }
    Ok(())
}

/// `p` relative to the workspace root, for messages.
pub fn rel(p: &Path) -> PathBuf {
    p.strip_prefix(crate::project_root())
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}

/// One progress line per step on stderr, with elapsed time.
pub struct Step {
    what: String,
    started: Instant,
}

impl Step {
    pub fn start(what: impl Into<String>) -> Step {
        let what = what.into();
        eprintln!("base: {what} …");
        Step {
            what,
            started: Instant::now(),
        }
    }

    /// Print the step's time and return it in seconds.
    pub fn done(self) -> f64 {
        let s = self.started.elapsed().as_secs_f64();
        eprintln!("base: {} — done in {s:.1} s", self.what);
        s
    }
}
