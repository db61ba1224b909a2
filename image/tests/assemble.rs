//! build_disk: a fresh image from two trees, checked against the partition table, FAT and ext4 readers
//! and the external oracles (`fsck.vfat -n`, `e2fsck -fn`).

mod common;

use cluster_lab_image::assemble::{build_disk, Labels};
use cluster_lab_image::{ext4, fat, mbr};
use common::*;

#[test]
fn built_disk_has_labelled_fat32_boot_and_ext4_root() {
    let fx = small_disk();
    let parts = mbr::read(&fx.image).unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0], fx.layout.boot);
    assert_eq!(parts[1], fx.layout.root);
    assert_eq!(parts[0].kind, 0x0c);
    assert!(parts[0].bootable);
    assert_eq!(parts[0].start, 4 * MIB);
    assert_eq!(parts[1].kind, 0x83);
    assert_eq!(parts[1].start % (4 * MIB), 0);
    assert_eq!(std::fs::metadata(&fx.image).unwrap().len(), fx.layout.size);

    let vol = fat::FatVolume::open(&fx.image, &parts[0], false).unwrap();
    assert_eq!(vol.label(), "CLBOOT");
    assert_eq!(vol.fat_type(), fatfs::FatType::Fat32);
    assert_eq!(
        vol.read("cmdline.txt").unwrap().unwrap(),
        b"console=tty1 root=LABEL=clroot rootwait\n"
    );
    assert_eq!(
        vol.read("overlays/README").unwrap().unwrap(),
        b"device tree overlays\n"
    );
    assert_eq!(vol.read("missing.txt").unwrap(), None);

    assert_eq!(
        ext4::read_file(&fx.image, &parts[1], "/etc/hostname")
            .unwrap()
            .unwrap(),
        b"base\n"
    );
    let blkid = std::process::Command::new("/usr/sbin/debugfs")
        .args(["-R", "show_super_stats -h"])
        .arg(ext4::device_arg(&fx.image, &parts[1]))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&blkid.stdout);
    assert!(text.contains("Filesystem volume name:   clroot"), "{text}");
    assert!(text.contains("extent"), "ext4 features missing: {text}");

    fat::check(&fx.image, &parts[0]).unwrap();
    ext4::check(&fx.image, &parts[1]).unwrap();
}

#[test]
fn build_disk_sizes_root_from_tree_when_not_given() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, root) = (dir.path().join("b"), dir.path().join("r"));
    write(&boot.join("x"), b"x");
    write(&root.join("big"), &vec![7u8; 3 * MIB as usize]);
    let out = dir.path().join("auto.img");
    let layout = build_disk(&out, &boot, 40 * MIB, &root, None, &Labels::default()).unwrap();
    assert!(
        layout.root.size >= 128 * MIB,
        "root {} too small",
        layout.root.size
    );
    assert_eq!(
        ext4::read_file(&out, &layout.root, "/big")
            .unwrap()
            .unwrap()
            .len(),
        3 * MIB as usize
    );
}

#[test]
fn build_disk_leaves_no_file_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, root) = (dir.path().join("b"), dir.path().join("r"));
    write(&boot.join("x"), b"x");
    write(&root.join("big"), &vec![7u8; 8 * MIB as usize]);
    let out = dir.path().join("fail.img");
    // 4 MiB cannot hold an 8 MiB file: mke2fs -d fails.
    let err = build_disk(
        &out,
        &boot,
        40 * MIB,
        &root,
        Some(4 * MIB),
        &Labels::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("mke2fs"), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers
            .iter()
            .all(|n| !n.to_string_lossy().contains("partial")),
        "{leftovers:?}"
    );
}

#[test]
fn fat32_needs_room() {
    let dir = tempfile::tempdir().unwrap();
    let (boot, root) = (dir.path().join("b"), dir.path().join("r"));
    write(&boot.join("x"), b"x");
    write(&root.join("y"), b"y");
    let err = build_disk(
        &dir.path().join("o.img"),
        &boot,
        8 * MIB,
        &root,
        Some(8 * MIB),
        &Labels::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("too small for FAT32"), "{err}");
}

#[test]
fn boot_partition_of_256_mib_is_real_fat32_for_mtools() {
    // mkfs.vfat's default cluster size leaves 256 MiB just under the FAT32 cluster minimum, and mtools
    // then refuses to copy into the root ("No directory slots"); build_disk picks the cluster size.
    let dir = tempfile::tempdir().unwrap();
    let (boot, root) = (dir.path().join("b"), dir.path().join("r"));
    for i in 0..5 {
        write(&boot.join(format!("overlays/o{i}.dtbo")), b"dtb");
    }
    write(&boot.join("kernel8.img"), &vec![3u8; 2 << 20]);
    write(&root.join("y"), b"y");
    let out = dir.path().join("b256.img");
    let layout = build_disk(
        &out,
        &boot,
        256 * MIB,
        &root,
        Some(16 * MIB),
        &Labels::default(),
    )
    .unwrap();
    let vol = fat::FatVolume::open(&out, &layout.boot, false).unwrap();
    assert_eq!(vol.fat_type(), fatfs::FatType::Fat32);
    assert_eq!(vol.read("overlays/o4.dtbo").unwrap().unwrap(), b"dtb");
    assert_eq!(vol.read("kernel8.img").unwrap().unwrap().len(), 2 << 20);
}
