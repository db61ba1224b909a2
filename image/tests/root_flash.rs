//! Root tier: flashing a real block device (a loop device over a file), and refusing one whose partition
//! is mounted. Needs root (losetup, mount); without it the test fails and says so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use cluster_lab_config::edit;
use cluster_lab_image::blockmap::BlockMap;
use cluster_lab_image::flash::{self, Target};
use cluster_lab_image::inject::{self, Payload};
use cluster_lab_image::{disk, ext4, fat};
use common::*;

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2));
    assert_eq!(euid, Some("0"), "root tier: run as root (`sudo -E cargo xtask test --tier root`): losetup and mount need it");
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A loop device over a file, detached (and anything mounted from it unmounted) on drop.
struct Loop {
    dev: PathBuf,
    mounts: Vec<PathBuf>,
    /// Device nodes this test made (no udev), removed on drop.
    nodes: Vec<PathBuf>,
}

impl Loop {
    fn new(file: &Path) -> Loop {
        let dev = run(
            "losetup",
            &["--find", "--show", "--partscan", file.to_str().unwrap()],
        );
        Loop {
            dev: dev.into(),
            mounts: Vec::new(),
            nodes: Vec::new(),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        for m in &self.mounts {
            let _ = Command::new("umount").arg(m).status();
        }
        for n in &self.nodes {
            let _ = std::fs::remove_file(n);
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn prepared_image(fx: &Fixture) {
    let mut p = Payload::default();
    let cfg = edit::set_secret(
        cluster_lab_config::DEFAULT_TOML,
        "feedfacecafebeef0123456789abcdef",
    )
    .unwrap();
    p.add_boot_file(cluster_lab_config::FILE_NAME, cfg.into_bytes());
    inject::inject(&fx.image, &p).unwrap();
}

#[test]
fn flash_a_block_device_and_personalise_it() {
    require_root();
    let fx = small_disk();
    prepared_image(&fx);
    let card = fx.dir.path().join("card");
    // A used card: whatever it held stays where the image needs nothing, and must not matter.
    std::fs::write(&card, vec![0xa5u8; (96 * MIB) as usize]).unwrap();
    let lo = Loop::new(&card);

    let target = flash::check_target(&lo.dev, &fx.image).unwrap();
    assert!(
        matches!(target, Target::BlockDevice { size, .. } if size == 96 * MIB),
        "{target:?}"
    );
    let w = flash::write(&fx.image, &target).unwrap();
    assert_eq!(w.image_bytes, fx.layout.size);
    let map = BlockMap::of_image(&fx.image).unwrap();
    assert_eq!(w.data_bytes, map.mapped_bytes());
    let old = std::fs::read(&card).unwrap();
    let gap = map.ranges[0].last as usize + 1;
    assert_eq!(old[gap * 4096], 0xa5, "an unmapped block is not written");
    flash::personalise(&lo.dev, "node3", None).unwrap();
    flash::reread_partitions(&lo.dev).unwrap();

    // Read through the device and through the backing file: both see the card's content.
    for p in [lo.dev.as_path(), card.as_path()] {
        let located = disk::locate(p).unwrap();
        let vol = fat::FatVolume::open(p, &located.boot, false).unwrap();
        let text =
            String::from_utf8(vol.read(cluster_lab_config::FILE_NAME).unwrap().unwrap()).unwrap();
        assert!(
            text.contains("hostname = \"node3\""),
            "{}: {text}",
            p.display()
        );
        fat::check(p, &located.boot).unwrap();
        ext4::check(p, &located.root).unwrap();
    }
}

#[test]
fn a_device_with_a_mounted_partition_is_refused() {
    require_root();
    let fx = small_disk();
    prepared_image(&fx);
    let card = fx.dir.path().join("card");
    std::fs::copy(&fx.image, &card).unwrap();
    let mut lo = Loop::new(&card);
    // The ext4 root partition: every kernel that runs this has ext4 (not every one has vfat).
    let part = PathBuf::from(format!("{}p2", lo.dev.display()));
    let name = part.file_name().unwrap().to_str().unwrap().to_string();
    let sys = PathBuf::from(format!("/sys/class/block/{name}/dev"));
    for _ in 0..20 {
        if part.exists() || sys.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !sys.exists() {
        // Some kernels do not scan loop partitions themselves: add them with BLKPG.
        run("partx", &["-a", lo.dev.to_str().unwrap()]);
    }
    if !part.exists() {
        // No udev here: make the partition's node from what the kernel reports.
        let majmin =
            std::fs::read_to_string(&sys).unwrap_or_else(|e| panic!("{}: {e}", sys.display()));
        let (maj, min) = majmin.trim().split_once(':').unwrap();
        run("mknod", &[part.to_str().unwrap(), "b", maj, min]);
        lo.nodes.push(part.clone());
    }
    let mnt = fx.dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    run(
        "mount",
        &["-o", "ro", part.to_str().unwrap(), mnt.to_str().unwrap()],
    );
    lo.mounts.push(mnt.clone());

    let e = flash::check_target(&lo.dev, &fx.image)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refusing to overwrite a disk in use") && e.contains(mnt.to_str().unwrap()),
        "{e}"
    );
    let e = flash::check_target(&part, &fx.image)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("refusing to overwrite a disk in use"),
        "the partition itself: {e}"
    );
}

#[test]
fn a_device_too_small_for_the_image_is_refused() {
    require_root();
    let fx = small_disk();
    let card = fx.dir.path().join("small");
    std::fs::File::create(&card)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    let lo = Loop::new(&card);
    let target = flash::check_target(&lo.dev, &fx.image).unwrap();
    let e = flash::write(&fx.image, &target).unwrap_err().to_string();
    assert!(
        e.contains("too small for the image") && e.contains("nothing was written"),
        "{e}"
    );
    assert!(
        std::fs::read(&card).unwrap().iter().all(|&b| b == 0),
        "the device was touched"
    );
    // A compressed image is sized by its block map: refused before anything is written, too.
    std::fs::write(
        fx.dir.path().join("i.img.bmap"),
        BlockMap::of_image(&fx.image).unwrap().to_bmap(),
    )
    .unwrap();
    let zst = fx.dir.path().join("i.img.zst");
    std::fs::write(
        &zst,
        zstd::encode_all(&std::fs::read(&fx.image).unwrap()[..], 1).unwrap(),
    )
    .unwrap();
    let e = flash::write(&zst, &target).unwrap_err().to_string();
    assert!(e.contains("too small for the image"), "{e}");
}
