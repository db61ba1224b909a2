//! Disk-image code for cluster-lab: read and edit SD-card images without root or loop mounts.
//!
//! - [`arch`]: the target architectures and their names in Debian, Rust, ELF and Docker.
//! - [`elf`]: what a binary's ELF headers say (machine, interpreter, glibc floor).
//! - [`mbr`]: the MBR partition table (mbrman).
//! - [`fat`]: the FAT boot partition (fatfs for file edits; mkfs.vfat + mcopy for whole trees),
//!   checked with `fsck.vfat -n`.
//! - [`ext4`]: the ext4 root partition (mke2fs -d, debugfs with read-back verification, `e2fsck -fn`).
//! - [`assemble`]: a fresh image from a boot tree and a root tree ([`assemble::build_disk`]).
//! - [`disk`]: opening a base image (.img, .img.xz, .img.zst, .zip) and finding its partitions.
//! - [`container`]: the busybox container image preloaded for first boot (a `docker save` archive).
//! - [`build`]: the flashable image from a base (agent, overlays, busybox image, fresh cluster-lab.toml).
//! - [`inject`]: the agent, overlays and `cluster-lab.toml` written into an image.
//! - [`output`]: OUT.img, OUT.img.zst|xz and OUT.sha256, renamed into place when complete.
//! - [`flash`]: writing an image to a card or file, safely, with read-back verification.

pub mod arch;
pub mod assemble;
pub mod blockmap;
pub mod build;
pub mod command;
pub mod container;
pub mod disk;
pub mod elf;
pub mod error;
pub mod ext4;
pub mod fat;
pub mod flash;
pub mod host_tools;
pub mod imager;
pub mod inject;
pub mod mbr;
pub mod output;
pub mod package_images;
pub mod progress;

pub use error::{ImageError, Result};
