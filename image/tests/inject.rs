//! Injection into a generated disk: files present with the right content, mode and owner (debugfs
//! stat), units enabled, cluster-lab.toml with a secret on the boot partition, filesystems clean.

mod common;

use std::os::unix::fs::PermissionsExt;

use cluster_lab_config::edit;
use cluster_lab_image::ext4::{self, Content, Entry};
use cluster_lab_image::inject::{self, Payload};
use cluster_lab_image::{disk, fat};
use common::*;

fn overlay(dir: &std::path::Path) -> std::path::PathBuf {
    let o = dir.join("overlays");
    write(
        &o.join("usr/lib/systemd/system/cluster-lab-firstboot.service"),
        b"[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/cluster-lab firstboot\n[Install]\nWantedBy=multi-user.target\n",
    );
    write(
        &o.join("usr/lib/systemd/system/cluster-lab-dhcpd@.service"),
        b"[Service]\nExecStart=/usr/bin/cluster-lab dhcpd\n[Install]\nWantedBy=multi-user.target\n",
    );
    write(
        &o.join("usr/local/sbin/helper.sh"),
        b"#!/bin/sh\necho helper\n",
    );
    std::fs::set_permissions(
        o.join("usr/local/sbin/helper.sh"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    write(&o.join("etc/cluster-lab/notes.txt"), b"notes\n");
    std::fs::set_permissions(
        o.join("etc/cluster-lab/notes.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("notes.txt", o.join("etc/cluster-lab/link")).unwrap();
    o
}

fn payload(fx: &Fixture) -> Payload {
    let agent = fx.dir.path().join("agent-bin");
    write(&agent, b"\x7fELF fake agent binary");
    let mut p = Payload::default();
    p.add_agent(&agent).unwrap();
    p.add_overlay(&overlay(fx.dir.path())).unwrap();
    let cfg = edit::set_secret(cluster_lab_config::DEFAULT_TOML, &edit::random_secret()).unwrap();
    p.add_boot_file(cluster_lab_config::FILE_NAME, cfg.into_bytes());
    p
}

#[test]
fn injected_files_have_content_mode_and_owner() {
    let fx = small_disk();
    let p = payload(&fx);
    let done = inject::inject(&fx.image, &p).unwrap();
    let root = done.located.root;
    let paths = [
        "/usr/bin/cluster-lab",
        "/usr/local/sbin/helper.sh",
        "/etc/cluster-lab/notes.txt",
        "/etc/cluster-lab",
        "/usr/lib/systemd/system/cluster-lab-firstboot.service",
        "/etc/systemd/system/multi-user.target.wants/cluster-lab-firstboot.service",
        "/etc/cluster-lab/link",
        "/etc/systemd/system/multi-user.target.wants/cluster-lab-dhcpd@.service",
    ];
    let st = ext4::stat_all(&fx.image, &root, &paths).unwrap();
    let s = |i: usize| {
        st[i]
            .clone()
            .unwrap_or_else(|| panic!("{} missing", paths[i]))
    };
    assert_eq!(
        (s(0).kind.as_str(), s(0).mode, s(0).uid, s(0).gid),
        ("regular", 0o755, 0, 0)
    );
    assert_eq!(
        (s(1).mode, s(1).uid),
        (0o755, 0),
        "executable overlay file → 0755"
    );
    assert_eq!(
        (s(2).mode, s(2).uid),
        (0o644, 0),
        "other overlay file → 0644"
    );
    assert_eq!((s(3).kind.as_str(), s(3).mode), ("directory", 0o755));
    assert_eq!(s(4).mode, 0o644);
    assert_eq!(s(5).kind, "symlink");
    assert_eq!(
        s(5).link.as_deref(),
        Some("/usr/lib/systemd/system/cluster-lab-firstboot.service")
    );
    assert_eq!(
        (s(6).kind.as_str(), s(6).link.as_deref()),
        ("symlink", Some("notes.txt"))
    );
    assert!(st[7].is_none(), "template units are not enabled");
    assert_eq!(
        ext4::read_file(&fx.image, &root, "/usr/bin/cluster-lab")
            .unwrap()
            .unwrap(),
        b"\x7fELF fake agent binary"
    );
    // The base's own files are untouched.
    assert_eq!(
        ext4::read_file(&fx.image, &root, "/etc/hostname")
            .unwrap()
            .unwrap(),
        b"base\n"
    );

    let vol = fat::FatVolume::open(&fx.image, &done.located.boot, false).unwrap();
    let cfg = String::from_utf8(vol.read("cluster-lab.toml").unwrap().unwrap()).unwrap();
    let secret = edit::secret(&cfg).unwrap().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(secret.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(vol.read("config.txt").unwrap().unwrap(), b"arm_64bit=1\n");

    fat::check(&fx.image, &done.located.boot).unwrap();
    ext4::check(&fx.image, &root).unwrap();
}

#[test]
fn injecting_twice_replaces_files() {
    let fx = small_disk();
    let p = payload(&fx);
    inject::inject(&fx.image, &p).unwrap();
    let newer = fx.dir.path().join("agent-v2");
    write(&newer, &vec![0x42; 300_000]);
    let mut p2 = p.clone();
    p2.add_agent(&newer).unwrap();
    let done = inject::inject(&fx.image, &p2).unwrap();
    let got = ext4::read_file(&fx.image, &done.located.root, "/usr/bin/cluster-lab")
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 300_000);
    ext4::check(&fx.image, &done.located.root).unwrap();
}

#[test]
fn failed_debugfs_write_is_detected() {
    // debugfs exits 0 when a write fails; a file larger than the 20 MiB root cannot be written, and the
    // read-back must catch it.
    let fx = small_disk();
    let big = fx.dir.path().join("big");
    write(&big, &vec![1u8; 40 << 20]);
    let mut p = Payload::default();
    p.add(Entry {
        dest: "/big".into(),
        content: Content::File(big),
        mode: 0o644,
        uid: 0,
        gid: 0,
    });
    let located = disk::locate(&fx.image).unwrap();
    let err = ext4::write_entries(&fx.image, &located.root, &p.root)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/big") && err.contains("did not take effect"),
        "{err}"
    );
}

#[test]
fn file_where_directory_is_needed_is_refused() {
    let fx = small_disk();
    let f = fx.dir.path().join("f");
    write(&f, b"x");
    let mut p = Payload::default();
    p.add(Entry {
        dest: "/etc/hostname/x".into(),
        content: Content::File(f),
        mode: 0o644,
        uid: 0,
        gid: 0,
    });
    let err = inject::inject(&fx.image, &p).unwrap_err().to_string();
    assert!(err.contains("/etc/hostname exists as a regular"), "{err}");
}

#[test]
fn units_with_wantedby_are_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let o = overlay(dir.path());
    assert_eq!(
        inject::units_to_enable(&o).unwrap(),
        vec![(
            "cluster-lab-firstboot.service".to_string(),
            "multi-user.target".to_string()
        )]
    );
}

#[test]
fn real_overlays_directory_is_injectable() {
    // Whatever the project ships under overlays/ must turn into a valid payload.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let mut p = Payload::default();
    p.add_overlay(&root.join("overlays")).unwrap();
    assert!(
        p.root
            .iter()
            .any(|e| e.dest.starts_with("/usr/lib/systemd/system/")),
        "{:?}",
        p.root
    );
    for e in &p.root {
        assert_eq!((e.uid, e.gid), (0, 0));
        assert!(matches!(e.mode, 0o755 | 0o644 | 0o777), "{e:?}");
    }
}
