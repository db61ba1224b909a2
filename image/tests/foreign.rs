//! A base made by the standard tools (sfdisk, mkfs.vfat, mke2fs — see tests/data/make-fixtures.sh), laid out
//! like Raspberry Pi OS: found, injected into, still clean for fsck, and flashable with a hostname.

use cluster_lab_config::edit;
use cluster_lab_image::inject::{self, Payload};
use cluster_lab_image::{disk, ext4, fat, flash};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/raspios-like.img.xz"
);

#[test]
fn raspios_like_base_takes_the_injection() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("base.img");
    assert_eq!(disk::unpack(FIXTURE.as_ref(), &img).unwrap(), 52 << 20);
    let located = disk::locate(&img).unwrap();
    assert_eq!(
        (located.boot.index, located.boot.kind, located.boot.start),
        (1, 0x0c, 8192 * 512)
    );
    assert_eq!((located.root.index, located.root.start), (2, 90112 * 512));
    let vol = fat::FatVolume::open(&img, &located.boot, false).unwrap();
    assert_eq!(vol.label(), "bootfs");
    assert_eq!(
        vol.read("user-data").unwrap().unwrap(),
        b"hostname: black-pearl\n"
    );
    drop(vol);

    let agent = dir.path().join("agent");
    std::fs::write(&agent, b"agent").unwrap();
    let mut p = Payload::default();
    p.add_agent(&agent).unwrap();
    p.add_overlay(concat!(env!("CARGO_MANIFEST_DIR"), "/../overlays").as_ref())
        .unwrap();
    let cfg = edit::set_secret(
        cluster_lab_config::DEFAULT_TOML,
        "0123456789abcdef0123456789abcdef",
    )
    .unwrap();
    p.add_boot_file(cluster_lab_config::FILE_NAME, cfg.into_bytes());
    inject::inject(&img, &p).unwrap();

    let st = ext4::stat_all(
        &img,
        &located.root,
        &["/usr/bin/cluster-lab", "/etc/hostname"],
    )
    .unwrap();
    assert_eq!(st[0].as_ref().map(|s| (s.mode, s.uid)), Some((0o755, 0)));
    assert!(st[1].is_some(), "the base's own files stay");

    let card = dir.path().join("card.img");
    flash::write(&img, &flash::check_target(&card, &img).unwrap()).unwrap();
    let text = flash::personalise(&card, "pi-1", None).unwrap();
    assert!(text.contains("hostname = \"pi-1\""), "{text}");
    let vol = fat::FatVolume::open(&card, &located.boot, false).unwrap();
    assert_eq!(
        vol.read("config.txt").unwrap().unwrap(),
        b"arm_64bit=1\nenable_uart=1\n"
    );
    fat::check(&card, &located.boot).unwrap();
    ext4::check(&card, &located.root).unwrap();
}
