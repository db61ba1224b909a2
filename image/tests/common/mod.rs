//! Small generated disk fixtures for the plain-tier tests: built with the crate's own assembly code
//! (mbrman + fatfs + `mke2fs -d` on a regular file, no root).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use cluster_lab_image::assemble::{build_disk, Labels, Layout};

pub const MIB: u64 = 1 << 20;

/// A 64 MiB-class disk: 40 MiB FAT32 boot, 20 MiB ext4 root.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub layout: Layout,
}

pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

pub fn small_disk() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    let root = dir.path().join("root");
    write(&boot.join("config.txt"), b"arm_64bit=1\n");
    write(
        &boot.join("cmdline.txt"),
        b"console=tty1 root=LABEL=clroot rootwait\n",
    );
    write(&boot.join("overlays/README"), b"device tree overlays\n");
    write(&root.join("etc/hostname"), b"base\n");
    write(&root.join("etc/os-release"), b"ID=debian\n");
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(root.join("etc/systemd/system")).unwrap();
    let image = dir.path().join("disk.img");
    let layout = fixture_disk(&image, &boot, &root);
    Fixture { dir, image, layout }
}

/// A 40 MiB FAT boot partition from `boot` and a 20 MiB ext4 root from `root`, with the default labels.
pub fn fixture_disk(image: &Path, boot: &Path, root: &Path) -> Layout {
    build_disk(
        image,
        boot,
        40 * MIB,
        root,
        Some(20 * MIB),
        &Labels::default(),
    )
    .expect("building fixture disk")
}
