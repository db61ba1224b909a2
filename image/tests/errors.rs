//! Corrupt, truncated and unrecognised base images end in errors that say what is wrong.

mod common;

use std::io::{Seek, SeekFrom, Write};

use cluster_lab_image::mbr::{self, NewPartition};
use cluster_lab_image::{disk, ImageError};
use common::*;

fn locate_err(path: &std::path::Path) -> String {
    disk::locate(path).unwrap_err().to_string()
}

fn zero_at(path: &std::path::Path, offset: u64, len: usize) {
    let mut f = std::fs::File::options().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&vec![0u8; len]).unwrap();
}

#[test]
fn no_mbr_signature() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("zeros.img");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let e = locate_err(&p);
    assert!(e.contains("no MBR signature"), "{e}");
}

#[test]
fn tiny_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.img");
    std::fs::write(&p, b"hello").unwrap();
    let e = locate_err(&p);
    assert!(e.contains("smaller than one 512-byte sector"), "{e}");
}

#[test]
fn truncated_image() {
    let fx = small_disk();
    let f = std::fs::File::options()
        .write(true)
        .open(&fx.image)
        .unwrap();
    f.set_len(fx.layout.root.start + MIB).unwrap();
    let err = disk::locate(&fx.image).unwrap_err();
    assert!(
        matches!(err, ImageError::PartitionBeyondEnd { index: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn no_fat_partition() {
    let fx = small_disk();
    let l = fx.layout;
    mbr::write(
        &fx.image,
        &[
            NewPartition {
                kind: 0x83,
                bootable: false,
                start: l.boot.start,
                size: l.boot.size,
            },
            NewPartition {
                kind: 0x83,
                bootable: false,
                start: l.root.start,
                size: l.root.size,
            },
        ],
        [1, 2, 3, 4],
    )
    .unwrap();
    let e = locate_err(&fx.image);
    assert!(e.contains("no FAT boot partition found"), "{e}");
    assert!(e.contains("type 0x83"), "lists what it found: {e}");
}

#[test]
fn fat_unreadable() {
    let fx = small_disk();
    zero_at(&fx.image, fx.layout.boot.start, 4096);
    let e = locate_err(&fx.image);
    assert!(
        e.contains("FAT partition 1") && e.contains("FAT unreadable"),
        "{e}"
    );
}

#[test]
fn ext4_superblock_bad() {
    let fx = small_disk();
    zero_at(&fx.image, fx.layout.root.start + 1024, 1024);
    let e = locate_err(&fx.image);
    assert!(
        e.contains("ext4 partition 2") && e.contains("superblock bad"),
        "{e}"
    );
}

#[test]
fn no_root_partition() {
    let fx = small_disk();
    let l = fx.layout;
    mbr::write(
        &fx.image,
        &[NewPartition {
            kind: 0x0c,
            bootable: true,
            start: l.boot.start,
            size: l.boot.size,
        }],
        [1, 2, 3, 4],
    )
    .unwrap();
    let e = locate_err(&fx.image);
    assert!(e.contains("no Linux (type 0x83) root partition"), "{e}");
}

#[test]
fn gpt_disk_is_named() {
    let fx = small_disk();
    mbr::write(
        &fx.image,
        &[NewPartition {
            kind: 0xee,
            bootable: false,
            start: 512,
            size: fx.layout.size - 512,
        }],
        [0; 4],
    )
    .unwrap();
    let e = locate_err(&fx.image);
    assert!(e.contains("GPT"), "{e}");
}

#[test]
fn corrupt_ext4_fails_fsck_before_inject() {
    let fx = small_disk();
    // Wipe the root directory's inode table region but keep the superblock: e2fsck must object.
    let sb =
        cluster_lab_image::ext4::read_file(&fx.image, &fx.layout.root, "/etc/hostname").unwrap();
    assert!(sb.is_some());
    zero_at(&fx.image, fx.layout.root.start + 2048, 64 * 1024);
    let payload = cluster_lab_image::inject::Payload::default();
    let e = cluster_lab_image::inject::inject(&fx.image, &payload)
        .unwrap_err()
        .to_string();
    assert!(e.contains("e2fsck") || e.contains("debugfs"), "{e}");
}
