//! Disk-image code for cluster-lab: read and edit SD-card images without root or loop mounts.
//!
//! - [`mbr`]: the MBR partition table (mbrman).
//! - [`fat`]: the FAT boot partition (fatfs), checked with `fsck.vfat -n`.
//! - [`ext4`]: the ext4 root partition (mke2fs -d, debugfs with read-back verification, `e2fsck -fn`).
//! - [`assemble`]: a fresh image from a boot tree and a root tree ([`assemble::build_disk`]).

pub mod assemble;
pub mod command;
pub mod error;
pub mod ext4;
pub mod fat;
pub mod mbr;

pub use error::{ImageError, Result};
