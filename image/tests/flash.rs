//! Flashing to a file: bytes verified, hostname and SSH keys set in cluster-lab.toml, the rest of the
//! file kept; disks in use are refused.

mod common;

use std::os::unix::fs::MetadataExt;

use cluster_lab_config::edit;
use cluster_lab_image::blockmap::BlockMap;
use cluster_lab_image::flash::{self, Target};
use cluster_lab_image::inject::{self, Payload};
use cluster_lab_image::output::sha256_file;
use cluster_lab_image::{disk, ext4, fat};
use common::*;

const KEY1: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk3m7b0v7h8H0pZ2m1fN2Yq0v3Lr4x0C5Zb0S2vQZ1x alice@laptop";
const KEY2: &str =
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJ bob@desk";

fn image_with_config(fx: &Fixture) -> String {
    let text = edit::set_secret(
        "# my comment stays\nversion = 1\n\n[cluster]\nname = \"lab\"\n\n[node]\n# pick a role\nrole = \"auto\"\nssh_authorized_keys = []\n",
        "00112233445566778899aabbccddeeff",
    )
    .unwrap();
    let mut p = Payload::default();
    p.add_boot_file(cluster_lab_config::FILE_NAME, text.clone().into_bytes());
    inject::inject(&fx.image, &p).unwrap();
    text
}

#[test]
fn flash_to_file_sets_hostname_and_keys() {
    let fx = small_disk();
    let before = image_with_config(&fx);
    let target_path = fx.dir.path().join("card.img");
    let target = flash::check_target(&target_path, &fx.image).unwrap();
    assert_eq!(
        target,
        Target::File {
            path: target_path.clone()
        }
    );
    let written = flash::write(&fx.image, &target).unwrap();
    assert_eq!(written.image_bytes, fx.layout.size);
    assert!(
        written.data_bytes < written.image_bytes / 2,
        "only the blocks that hold data are written: {written:?}"
    );
    assert_eq!(written.map_source, "made from the image");
    // Unwritten blocks of a fresh file read as zeros, as they do in this image.
    assert_eq!(
        sha256_file(&target_path).unwrap(),
        sha256_file(&fx.image).unwrap()
    );
    let meta = std::fs::metadata(&target_path).unwrap();
    assert_eq!(meta.len(), fx.layout.size);
    assert!(
        meta.blocks() * 512 < meta.len() / 2,
        "a file target is written sparse"
    );

    let keys = edit::parse_ssh_keys(&format!("{KEY1}\n\n# comment\n{KEY2}\n")).unwrap();
    flash::personalise(&target_path, "node-7", Some(&keys)).unwrap();

    let located = disk::locate(&target_path).unwrap();
    let vol = fat::FatVolume::open(&target_path, &located.boot, false).unwrap();
    let text =
        String::from_utf8(vol.read(cluster_lab_config::FILE_NAME).unwrap().unwrap()).unwrap();
    let doc: toml_edit::DocumentMut = text.parse().unwrap();
    assert_eq!(doc["node"]["hostname"].as_str(), Some("node-7"));
    let got: Vec<&str> = doc["node"]["ssh_authorized_keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(got, vec![KEY1, KEY2]);
    // Everything else is as it was: comments, the secret, other keys.
    assert!(text.starts_with("# my comment stays\n"), "{text}");
    assert!(text.contains("# pick a role\nrole = \"auto\""), "{text}");
    assert_eq!(edit::secret(&text).unwrap(), edit::secret(&before).unwrap());
    assert_eq!(doc["cluster"]["name"].as_str(), Some("lab"));
    fat::check(&target_path, &located.boot).unwrap();
    ext4::check(&target_path, &located.root).unwrap();

    // A second flash over the same file starts clean.
    let target = flash::check_target(&target_path, &fx.image).unwrap();
    flash::write(&fx.image, &target).unwrap();
    flash::personalise(&target_path, "node8", None).unwrap();
    let vol = fat::FatVolume::open(&target_path, &located.boot, false).unwrap();
    let text =
        String::from_utf8(vol.read(cluster_lab_config::FILE_NAME).unwrap().unwrap()).unwrap();
    assert!(
        text.contains("hostname = \"node8\"") && text.contains("ssh_authorized_keys = []"),
        "{text}"
    );
}

#[test]
fn flash_from_zstd_image() {
    let fx = small_disk();
    image_with_config(&fx);
    let raw = std::fs::read(&fx.image).unwrap();
    let zst = fx.dir.path().join("x.img.zst");
    std::fs::write(&zst, zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    let t = fx.dir.path().join("card.img");
    // A stream cannot be mapped as it is read: the block map must be beside it.
    let e = flash::write(&zst, &flash::check_target(&t, &zst).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("needs its block map") && e.contains("x.img.bmap"),
        "{e}"
    );
    let map = BlockMap::of_image(&fx.image).unwrap();
    std::fs::write(fx.dir.path().join("x.img.bmap"), map.to_bmap()).unwrap();
    let w = flash::write(&zst, &flash::check_target(&t, &zst).unwrap()).unwrap();
    assert!(w.map_source.ends_with("x.img.bmap"), "{w:?}");
    assert_eq!(w.data_bytes, map.mapped_bytes());
    assert_eq!(sha256_file(&t).unwrap(), sha256_file(&fx.image).unwrap());
}

#[test]
fn blocks_a_filesystem_does_not_use_are_not_written_even_when_the_image_holds_data_there() {
    let fx = small_disk();
    image_with_config(&fx);
    let located = disk::locate(&fx.image).unwrap();
    let map = BlockMap::of_image(&fx.image).unwrap();
    // A block inside the ext4 partition that the map leaves out, filled with stale data in the image.
    let stale = (located.root.start / 4096 + 1..located.root.end() / 4096)
        .find(|b| !map.ranges.iter().any(|r| (r.first..=r.last).contains(b)))
        .expect("a free block in the root filesystem");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&fx.image)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xa5; 4096], stale * 4096).unwrap();
    drop(f);
    assert_eq!(
        BlockMap::of_image(&fx.image).unwrap().ranges,
        map.ranges,
        "free in ext4, so still unmapped"
    );
    let t = fx.dir.path().join("card.img");
    flash::write(&fx.image, &flash::check_target(&t, &fx.image).unwrap()).unwrap();
    let card = std::fs::read(&t).unwrap();
    let at = (stale * 4096) as usize;
    assert!(card[at..at + 4096].iter().all(|&b| b == 0), "not written");
    ext4::check(&t, &located.root).unwrap();
    fat::check(&t, &located.boot).unwrap();
}

#[test]
fn bmaptool_copies_with_our_block_map_and_we_read_its_own() {
    let fx = small_disk();
    image_with_config(&fx);
    let map = BlockMap::of_image(&fx.image).unwrap();
    let ours = fx.dir.path().join("disk.img.bmap");
    std::fs::write(&ours, map.to_bmap()).unwrap();
    let card = fx.dir.path().join("bmaptool-card.img");
    run_ok(
        "bmaptool",
        &[
            "copy".as_ref(),
            "--bmap".as_ref(),
            ours.as_os_str(),
            fx.image.as_os_str(),
            card.as_os_str(),
        ],
    );
    map.verify(&card, false, &|_| {}).unwrap();
    let located = disk::locate(&card).unwrap();
    ext4::check(&card, &located.root).unwrap();
    fat::check(&card, &located.boot).unwrap();

    // bmaptool's own map (data extents only) parses, and a card we flashed passes it.
    let theirs = fx.dir.path().join("theirs.bmap");
    run_ok(
        "bmaptool",
        &[
            "create".as_ref(),
            "-o".as_ref(),
            theirs.as_os_str(),
            fx.image.as_os_str(),
        ],
    );
    let text = std::fs::read_to_string(&theirs).unwrap();
    let their_map = BlockMap::parse_bmap(&text, &theirs).unwrap();
    assert_eq!(their_map.image_size, map.image_size);
    let t = fx.dir.path().join("card.img");
    flash::write(&fx.image, &flash::check_target(&t, &fx.image).unwrap()).unwrap();
    their_map.verify(&t, false, &|_| {}).unwrap();
}

fn run_ok(program: &str, args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (install the Debian package bmap-tools)"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_hostnames_are_refused_before_anything_is_written() {
    let fx = small_disk();
    image_with_config(&fx);
    for bad in [
        "",
        "-node",
        "node-",
        "no_de",
        "node.lab",
        "nöde",
        &"a".repeat(64),
    ] {
        let e = flash::personalise(&fx.image, bad, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hostname"), "{bad:?}: {e}");
    }
    for good in ["a", "node1", "Node-1", &"a".repeat(63), "1node"] {
        edit::validate_hostname(good).unwrap();
    }
}

#[test]
fn bad_ssh_key_file_is_refused() {
    assert!(edit::parse_ssh_keys("").is_err());
    assert!(edit::parse_ssh_keys("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n").is_err());
    assert_eq!(edit::parse_ssh_keys(KEY1).unwrap(), vec![KEY1.to_string()]);
}

/// The block device `/` lives on, from /proc/self/mounts (or /dev/block/MAJ:MIN of `/`).
fn root_device() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 1 && f[1] == "/" && f[0].starts_with("/dev/") {
            return f[0].into();
        }
    }
    let dev = std::fs::metadata("/").unwrap().dev();
    let p = std::path::PathBuf::from(format!(
        "/dev/block/{}:{}",
        (dev >> 8) & 0xfff,
        (dev & 0xff) | ((dev >> 12) & !0xff)
    ));
    assert!(
        p.exists(),
        "cannot find the block device of / (no /dev source in /proc/self/mounts, no {})",
        p.display()
    );
    p
}

#[test]
fn the_system_disk_is_refused() {
    let dev = root_device();
    let fx = small_disk();
    let e = flash::check_target(&dev, &fx.image)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refusing to overwrite a disk in use"),
        "{}: {e}",
        dev.display()
    );
}

#[test]
fn the_image_itself_and_odd_targets_are_refused() {
    let fx = small_disk();
    let e = flash::check_target(&fx.image, &fx.image)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the target is the image itself"), "{e}");
    let e = flash::check_target(fx.dir.path(), &fx.image)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a block device or a regular file"), "{e}");
    let e = flash::check_target(
        std::path::Path::new("/dev/cluster-lab-no-such-disk"),
        &fx.image,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no such device"), "{e}");
}

/// A FAT32 volume with fewer than 65525 clusters (mkfs.vfat makes one with big clusters): its table has 4-byte
/// entries all the same. Read as 2-byte ones (going by the cluster count), a file's clusters would look free and
/// not be written. Here a file's chain is written into the table by hand, at clusters 1000–1010.
#[test]
fn a_small_fat32_volume_is_mapped_by_its_own_table() {
    use cluster_lab_image::mbr::Partition;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("fat32.img");
    let size: u64 = 256 << 20;
    std::fs::File::create(&img).unwrap().set_len(size).unwrap();
    // 8 KiB clusters: about 32,700 of them, far under the 65,525 a FAT16 has at most.
    run_ok(
        "mkfs.vfat",
        &[
            "-F".as_ref(),
            "32".as_ref(),
            "-s".as_ref(),
            "16".as_ref(),
            img.as_os_str(),
        ],
    );
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&img)
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut bs = [0u8; 512];
    f.read_exact_at(&mut bs, 0).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([bs[o], bs[o + 1]]) as u64;
    let u32_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]) as u64;
    let (sector, per_cluster, reserved, fats, fat_sectors) = (
        u16_at(11),
        bs[13] as u64,
        u16_at(14),
        bs[16] as u64,
        u32_at(36),
    );
    assert_eq!(u16_at(22), 0, "a FAT32 boot sector");
    for fat in 0..fats {
        let table = (reserved + fat * fat_sectors) * sector;
        for c in 1000u64..=1010 {
            let next: u32 = if c == 1010 { 0x0fff_ffff } else { c as u32 + 1 };
            f.write_all_at(&next.to_le_bytes(), table + c * 4).unwrap();
        }
    }
    let data_start = (reserved + fats * fat_sectors) * sector;
    let cluster = per_cluster * sector;
    let file_bytes = data_start + (1000 - 2) * cluster..data_start + (1011 - 2) * cluster;
    f.write_all_at(
        &vec![0x5a; (file_bytes.end - file_bytes.start) as usize],
        file_bytes.start,
    )
    .unwrap();
    drop(f);
    let part = Partition {
        index: 1,
        kind: 0x0c,
        bootable: false,
        start: 0,
        size,
    };
    let free = fat::free_ranges(&img, &part)
        .unwrap()
        .expect("a FAT32 volume is mapped");
    assert!(
        !free
            .iter()
            .any(|r| r.start < file_bytes.end && file_bytes.start < r.end),
        "the file's clusters {file_bytes:?} are used, not free: {free:?}"
    );
    assert!(
        free.iter().any(|r| r.start >= file_bytes.end),
        "clusters after the file are free"
    );
}
