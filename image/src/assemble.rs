//! Building a fresh disk image from two directory trees: a FAT32 boot partition and an ext4 root.
//!
//! Layout (MBR): partition 1 FAT32 (type 0x0c, bootable flag set, label `CLBOOT`) at 4 MiB; partition 2
//! Linux (type 0x83, ext4, label `clroot`) right after it, 4 MiB-aligned. This is the layout Raspberry Pi
//! firmware expects and what `cmdline.txt`/`fstab` can name as `LABEL=clroot` / `LABEL=CLBOOT`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::error::{ImageError, IoContext, Result};
use crate::mbr::{self, types, NewPartition, Partition};
use crate::{ext4, fat};

/// Volume label of the FAT boot partition in images cluster-lab builds.
pub const BOOT_LABEL: &str = "CLBOOT";
/// Volume label of the ext4 root partition in images cluster-lab builds.
pub const ROOT_LABEL: &str = "clroot";

const MIB: u64 = 1 << 20;
/// Partitions start on 4 MiB boundaries (SD-card erase blocks).
const ALIGN: u64 = 4 * MIB;

/// Filesystem labels for [`build_disk`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels {
    /// FAT label, up to 11 characters (stored upper-case).
    pub boot: String,
    /// ext4 label, up to 16 characters.
    pub root: String,
}

impl Default for Labels {
    fn default() -> Self {
        Labels {
            boot: BOOT_LABEL.into(),
            root: ROOT_LABEL.into(),
        }
    }
}

/// Where the partitions of a built disk are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub boot: Partition,
    pub root: Partition,
    /// Total image size in bytes.
    pub size: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Build the disk image `out` from `boot_dir` (copied onto a FAT32 partition of `boot_size` bytes) and
/// `root_dir` (an ext4 partition of `root_size` bytes, or sized from the tree's contents when `None`).
///
/// No root needed; run as root to keep the owners of `root_dir` (mke2fs -d copies uid/gid/mode).
/// Both filesystems are checked (`fsck.vfat -n`, `e2fsck -fn`) before `out` appears; the image is
/// written under a temporary name in the same directory and renamed at the end.
pub fn build_disk(
    out: &Path,
    boot_dir: &Path,
    boot_size: u64,
    root_dir: &Path,
    root_size: Option<u64>,
    labels: &Labels,
) -> Result<Layout> {
    for (dir, what) in [(boot_dir, "boot"), (root_dir, "root")] {
        if !dir.is_dir() {
            return Err(ImageError::BadInput {
                path: dir.into(),
                reason: format!("the {what} directory does not exist or is not a directory"),
            });
        }
    }
    let boot_size = align_up(boot_size, MIB);
    let root_size = match root_size {
        Some(s) => align_up(s, MIB),
        None => estimate_root_size(root_dir)?,
    };
    let boot_start = ALIGN;
    let root_start = align_up(boot_start + boot_size, ALIGN);
    let size = root_start + root_size;
    let layout = Layout {
        boot: Partition {
            index: 1,
            kind: types::FAT32_LBA,
            bootable: true,
            start: boot_start,
            size: boot_size,
        },
        root: Partition {
            index: 2,
            kind: types::LINUX,
            bootable: false,
            start: root_start,
            size: root_size,
        },
        size,
    };

    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.partial-",
            out.file_name().unwrap_or_default().to_string_lossy()
        ))
        .tempfile_in(dir)
        .at(dir, "creating temporary image")?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.as_file().set_len(size).at(&tmp_path, "sizing image")?;

    tracing::info!(root = %root_dir.display(), size_mib = root_size / MIB, "creating ext4 root (mke2fs -d)");
    ext4::make_from_dir(&tmp_path, &layout.root, root_dir, &labels.root)?;

    tracing::info!(boot = %boot_dir.display(), size_mib = boot_size / MIB, "creating FAT32 boot partition");
    fat::make_from_dir(&tmp_path, &layout.boot, boot_dir, &labels.boot)?;

    let signature: [u8; 4] = rand::random();
    mbr::write(
        &tmp_path,
        &[
            NewPartition {
                kind: layout.boot.kind,
                bootable: true,
                start: layout.boot.start,
                size: layout.boot.size,
            },
            NewPartition {
                kind: layout.root.kind,
                bootable: false,
                start: layout.root.start,
                size: layout.root.size,
            },
        ],
        signature,
    )?;

    tracing::info!("checking filesystems (fsck.vfat -n, e2fsck -fn)");
    fat::check(&tmp_path, &layout.boot)?;
    ext4::check(&tmp_path, &layout.root)?;

    // tempfile creates 0600; an image is not secret.
    std::fs::set_permissions(&tmp_path, std::fs::Permissions::from_mode(0o644))
        .at(&tmp_path, "setting image permissions")?;
    tmp.as_file().sync_all().at(&tmp_path, "syncing image")?;
    tmp.persist(out)
        .map_err(|e| e.error)
        .at(out, "renaming finished image")?;
    tracing::info!(image = %out.display(), size_mib = size / MIB, "disk image built");
    Ok(layout)
}

/// A root partition size that fits the tree with room to spare: data in 4 KiB blocks, an inode per
/// entry, 20% slack plus 128 MiB for the journal and first-boot writes, rounded to 4 MiB. The
/// partition grows to fill the card on first boot anyway.
pub fn estimate_root_size(root_dir: &Path) -> Result<u64> {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![root_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).at(&d, "listing root directory")? {
            let entry = entry.at(&d, "listing root directory")?;
            let meta = entry
                .path()
                .symlink_metadata()
                .at(&entry.path(), "reading file metadata")?;
            inodes += 1;
            bytes += align_up(meta.len(), 4096);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    let raw = bytes + inodes * 256;
    Ok(align_up(raw + raw / 5 + 128 * MIB, ALIGN))
}
