//! The flashable image, built from a base: the agent, the overlay files, the preloaded busybox container image
//! and a `cluster-lab.toml` with a fresh cluster secret injected, without root or loop mounts.
//!
//! Steps: check the payload (before any big copy) → unpack the base into a working copy next to the output →
//! build the busybox container image from the base's own static busybox → write the root-filesystem entries with
//! debugfs (each verified) and the boot files with fatfs → `e2fsck -fn` + `fsck.vfat -n` → compress and hash →
//! rename `OUT.img`, `OUT.img.zst|xz` and `OUT.sha256` into place. A failure removes the working copy; the
//! previous outputs are gone either way, so a half-built image is never mistaken for a good one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cluster_lab_config::edit;

use crate::arch::Arch;
use crate::container;
use crate::disk;
use crate::error::{ImageError, IoContext, Result};
use crate::inject;
use crate::output::{self, Compression, Published};
use crate::package_images::{self, PackageImage};

/// What to build from what.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub arch: Arch,
    /// The base image: .img, .img.xz, .img.zst or .zip holding one .img.
    pub base: PathBuf,
    /// Output path without extension.
    pub out: PathBuf,
    /// The agent binary for `arch`.
    pub agent: PathBuf,
    /// Directory mirrored into the root filesystem.
    pub overlays: PathBuf,
    pub compression: Compression,
    /// Debian packages the base build unpacked for the built-in stacks' container images (`<base>.packages/`);
    /// `None` or missing: the image carries no such images, and says so.
    pub packages: Option<PathBuf>,
    /// The cluster secret for the image's cluster-lab.toml: an existing cluster's, so new cards join it; `None`
    /// makes a new cluster (a fresh random secret).
    pub secret: Option<cluster_lab_config::Secret>,
}

/// Build the image `recipe` describes. `report` receives one line per step and per result, for a person.
pub fn build(recipe: &Recipe, report: &mut dyn FnMut(String)) -> Result<Published> {
    // A binary for another board would leave a card that never finishes its first boot.
    crate::elf::require_machine(&recipe.agent, recipe.arch)
        .map_err(|e| ImageError::Invalid(format!("checking the agent: {e}")))?;

    // Payload first: a bad overlay or missing agent fails before any big copy.
    let mut payload = inject::Payload::default();
    payload.add_agent(&recipe.agent)?;
    payload.add_overlay(&recipe.overlays)?;
    let config = match &recipe.secret {
        Some(secret) => config_with(secret.expose())?,
        None => fresh_config()?,
    };
    payload.add_boot_file(cluster_lab_config::FILE_NAME, config.into_bytes());

    output::remove_previous(&recipe.out)?;
    let work = inject::temp_path(&recipe.out, "img");
    let result = build_in(recipe, &work, &mut payload, report);
    if result.is_err() {
        let _ = std::fs::remove_file(&work);
    }
    result
}

/// The commented default `cluster-lab.toml` with a fresh secret, checked by the agent's own parser: the card
/// must not boot with a file its agent rejects.
pub fn fresh_config() -> Result<String> {
    config_with(&edit::random_secret())
}

/// The commented default `cluster-lab.toml` with `secret`, checked by the agent's own parser.
pub fn config_with(secret: &str) -> Result<String> {
    let config = edit::set_secret(cluster_lab_config::DEFAULT_TOML, secret)?;
    cluster_lab_config::Settings::parse(&config, Path::new(cluster_lab_config::FILE_NAME))
        .map_err(|e| {
            ImageError::Invalid(format!(
                "the generated cluster-lab.toml does not validate: {e}"
            ))
        })?;
    Ok(config)
}

fn build_in(
    recipe: &Recipe,
    work: &Path,
    payload: &mut inject::Payload,
    report: &mut dyn FnMut(String),
) -> Result<Published> {
    let t = Instant::now();
    report(format!("==> unpacking base {}", recipe.base.display()));
    let size = disk::unpack(&recipe.base, work)?;
    // Owner only before the secret goes in (the base itself holds none).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(0o600))
            .at(work, "making private")?;
    }
    report(format!(
        "    {} MiB in {:.1} s",
        size >> 20,
        t.elapsed().as_secs_f64()
    ));

    let busybox = preload_busybox(work, recipe.arch, report)?;
    if let Some(archive) = &busybox {
        payload.add_container_image(container::ARCHIVE_NAME, archive.path());
    }
    let stack_images = package_images(recipe, report)?;
    for (image, archive) in &stack_images {
        payload.add_archive_in(
            package_images::IMAGES_DIR,
            &image.archive_name(),
            archive.path(),
        );
    }

    let t = Instant::now();
    report("==> injecting agent, overlays and cluster-lab.toml".into());
    let done = inject::inject(work, payload)?;
    report(format!(
        "    {} root entries, {} boot file(s); boot {}, root {}; inject + fsck {:.1} s",
        done.root_entries,
        done.boot_files,
        done.located.boot,
        done.located.root,
        t.elapsed().as_secs_f64()
    ));

    let t = Instant::now();
    report("==> compressing and hashing".into());
    let published = output::publish(work, &recipe.out, recipe.compression)?;
    report(format!("    {:.1} s", t.elapsed().as_secs_f64()));
    if let Some(list) = crate::imager::write(&recipe.out, &published, recipe.arch)? {
        report(format!(
            "    Raspberry Pi Imager OS list: {} (Imager: App Options, Content Repository, Use custom file)",
            list.display()
        ));
    }
    Ok(published)
}

/// The busybox container image first boot loads into dockerd, built from the base's static busybox into a
/// temporary file (removed when dropped). A base without busybox-static gets a warning and no preloaded image.
fn preload_busybox(
    work: &Path,
    arch: Arch,
    report: &mut dyn FnMut(String),
) -> Result<Option<tempfile::NamedTempFile>> {
    report(format!(
        "==> building the preloaded container image {}",
        container::REPO_TAG
    ));
    let binary = match container::find_busybox(work)? {
        container::FoundBusybox::Static { path, binary } => {
            report(format!("    {path}: {} KiB", binary.len() >> 10));
            binary
        }
        found => {
            let why = match found {
                container::FoundBusybox::Dynamic { path } => {
                    format!("{path} is dynamically linked")
                }
                _ => format!("no {}", container::BUSYBOX_PATHS.join(" or ")),
            };
            report(format!(
                "    warning: {why} in the base; no container image is preloaded (install busybox-static in the base)"
            ));
            return Ok(None);
        }
    };
    let image = container::busybox_image(&binary)?;
    if arch.docker_platform() != image.platform {
        return Err(ImageError::Invalid(format!(
            "the base's busybox is {}, but the image is for {arch}: is the base an image for another board?",
            image.platform
        )));
    }
    let file = temp_archive(&image.archive)?;
    report(format!(
        "    {} ({}), {} KiB, image id {}",
        container::REPO_TAG,
        image.platform,
        image.archive.len() >> 10,
        image.image_id
    ));
    Ok(Some(file))
}

/// `archive` in a temporary file, removed when dropped: what the payload copies into the image.
fn temp_archive(archive: &[u8]) -> Result<tempfile::NamedTempFile> {
    let tmp = std::env::temp_dir();
    let mut file = tempfile::NamedTempFile::new().at(&tmp, "creating a temporary file in")?;
    let path = file.path().to_path_buf();
    std::io::Write::write_all(&mut file, archive).at(&path, "writing")?;
    Ok(file)
}

/// The built-in stacks' container images, made from the Debian packages the base unpacked, each in a temporary
/// file (removed when dropped). Without the packages: a warning, and no such images.
fn package_images(
    recipe: &Recipe,
    report: &mut dyn FnMut(String),
) -> Result<Vec<(PackageImage, tempfile::NamedTempFile)>> {
    report(format!(
        "==> building the {} stack's container images from Debian packages",
        package_images::STACK
    ));
    let Some(dir) = recipe.packages.as_deref().filter(|d| d.is_dir()) else {
        report(format!(
            "    warning: the base has no unpacked packages{}; the {} stack cannot be deployed from this image (rebuild the base with `cargo xtask base`)",
            recipe
                .packages
                .as_deref()
                .map(|d| format!(" ({} missing)", d.display()))
                .unwrap_or_default(),
            package_images::STACK
        ));
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for image in package_images::IMAGES {
        let built = image.build(dir)?;
        if recipe.arch.docker_platform() != built.platform {
            return Err(ImageError::Invalid(format!(
                "{}'s program is {}, but the image is for {}: were the packages unpacked for another board?",
                image.package, built.platform, recipe.arch
            )));
        }
        let file = temp_archive(&built.archive)?;
        report(format!(
            "    {} ({}) from {}, {} MiB, image id {}",
            image.repo_tag(),
            built.platform,
            image.package,
            built.archive.len() >> 20,
            built.image_id
        ));
        out.push((image, file));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_config_has_a_new_secret_each_time_and_validates() {
        let a = fresh_config().unwrap();
        let b = fresh_config().unwrap();
        let secret = |t: &str| edit::secret(t).unwrap().unwrap();
        assert_eq!(secret(&a).len(), 64);
        assert_ne!(secret(&a), secret(&b));
        // The default file's comments travel to the card.
        assert!(a.contains("# Shared secret of the cluster"), "{a}");
    }

    #[test]
    fn an_agent_for_another_board_is_refused_before_any_copy() {
        let dir = tempfile::tempdir().unwrap();
        let recipe = Recipe {
            arch: Arch::Arm64,
            base: dir.path().join("missing-base.img"),
            out: dir.path().join("out"),
            agent: std::env::current_exe().unwrap(),
            overlays: dir.path().to_path_buf(),
            compression: Compression::None,
            packages: None,
            secret: None,
        };
        let mut lines = Vec::new();
        let err = build(&recipe, &mut |l| lines.push(l))
            .unwrap_err()
            .to_string();
        assert!(err.contains("arm64 needs AArch64"), "{err}");
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
