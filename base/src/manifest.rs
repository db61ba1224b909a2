//! `build/base/<arch>-<hash>.json`: what a base image holds (packages, kernel, partitions, sizes) and how
//! long it took to build. Written last, so its presence marks a complete build.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub arch: String,
    pub recipe_hash: String,
    pub suite: String,
    pub mirror: String,
    /// `debian-bullseye` or `hashicorp-sha256:<digest of the release zip>`.
    pub consul: String,
    pub kernel_version: String,
    /// Kernel command line (as in the boot partition's cmdline.txt); use it with QEMU's `-append`.
    pub cmdline: String,
    /// Kernel command line for QEMU's direct boot (`-kernel`/`-initrd`): amd64 `-M pc`, arm64/armhf `-M virt`
    /// (serial console on ttyAMA0 there).
    #[serde(default)]
    pub qemu_cmdline: String,
    pub image_bytes: u64,
    pub root_tree_bytes: u64,
    pub boot_tree_bytes: u64,
    pub partitions: Vec<PartitionInfo>,
    pub timings_s: Timings,
    pub built_at_unix: u64,
    /// `name version`, sorted.
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartitionInfo {
    pub number: u32,
    pub label: String,
    pub filesystem: String,
    pub mbr_type: String,
    /// Byte offset and size in the image.
    pub start: u64,
    pub size: u64,
    pub mountpoint: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    pub bootstrap: f64,
    pub disk: f64,
    pub total: f64,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a base manifest of this xtask version (delete it or pass --rebuild)",
                path.display()
            )
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.partial");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
    }
}

pub fn partitions(layout: &cluster_lab_image::assemble::Layout) -> Vec<PartitionInfo> {
    let labels = cluster_lab_image::assemble::Labels::default();
    [
        (&layout.boot, labels.boot, "vfat (FAT32)", "/boot/firmware"),
        (&layout.root, labels.root, "ext4", "/"),
    ]
    .into_iter()
    .map(|(part, label, filesystem, mountpoint)| PartitionInfo {
        number: part.index as u32,
        label,
        filesystem: filesystem.into(),
        mbr_type: format!("{:#04x}", part.kind),
        start: part.start,
        size: part.size,
        mountpoint: mountpoint.into(),
    })
    .collect()
}

/// Installed packages of the tree, read from its dpkg database.
pub fn installed_packages(tree: &Path) -> Result<Vec<String>> {
    let status = tree.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status)
        .with_context(|| format!("reading {}", status.display()))?;
    Ok(parse_dpkg_status(&text))
}

fn parse_dpkg_status(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        };
        if let (Some(p), Some(v), Some(s)) = (field("Package"), field("Version"), field("Status")) {
            if s.ends_with(" installed") {
                out.push(format!("{p} {v}"));
            }
        }
    }
    out.sort();
    out
}

/// Bytes used by the files of a tree (apparent sizes), not following symlinks.
pub fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        total += if meta.is_dir() {
            tree_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lists_installed_only() {
        let text = "Package: b\nStatus: install ok installed\nVersion: 2\n\n\
                    Package: a\nStatus: install ok installed\nVersion: 1:1.0\n\n\
                    Package: gone\nStatus: deinstall ok config-files\nVersion: 3\n";
        assert_eq!(parse_dpkg_status(text), ["a 1:1.0", "b 2"]);
    }
}
