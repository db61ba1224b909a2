//! The preloaded busybox image on a generated disk: busybox found in the root filesystem (through a merged-/usr
//! `bin -> usr/bin` link, like Debian's), the archive built from it and injected at
//! /usr/lib/cluster-lab/images/busybox.tar (0644, root), read back byte for byte, filesystems clean.

mod common;

use cluster_lab_image::container::{self, FoundBusybox};
use cluster_lab_image::ext4;
use cluster_lab_image::inject::{self, Payload};
use common::*;

const HOST_BUSYBOX: &str = "/bin/busybox";

fn disk_with(dir: &std::path::Path, busybox: Option<&[u8]>) -> std::path::PathBuf {
    let boot = dir.join("boot");
    let root = dir.join("root");
    write(&boot.join("config.txt"), b"arm_64bit=1\n");
    write(&root.join("etc/hostname"), b"base\n");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    if let Some(b) = busybox {
        write(&root.join("usr/bin/busybox"), b);
    }
    let image = dir.join("disk.img");
    fixture_disk(&image, &boot, &root);
    image
}

#[test]
fn busybox_from_the_root_filesystem_is_injected_as_an_archive() {
    let busybox = std::fs::read(HOST_BUSYBOX).unwrap_or_else(|e| {
        panic!(
            "reading {HOST_BUSYBOX}: {e}: install busybox-static (listed in ci/apt-packages.txt)"
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let image = disk_with(dir.path(), Some(&busybox));

    let found = container::find_busybox(&image).unwrap();
    let FoundBusybox::Static { path, binary } = found else {
        panic!("expected a static busybox, found {found:?}");
    };
    assert_eq!(path, "/usr/bin/busybox");
    assert!(binary == busybox, "busybox read back differs");

    let built = container::busybox_image(&binary).unwrap();
    let archive = dir.path().join("busybox.tar");
    std::fs::write(&archive, &built.archive).unwrap();
    let mut payload = Payload::default();
    payload.add_container_image(container::ARCHIVE_NAME, &archive);
    inject::inject(&image, &payload).unwrap();

    let located = cluster_lab_image::disk::locate(&image).unwrap();
    let dest = format!("{}/{}", container::IMAGES_DIR, container::ARCHIVE_NAME);
    assert_eq!(dest, "/usr/lib/cluster-lab/images/busybox.tar");
    let stat = ext4::stat_all(&image, &located.root, &[&dest]).unwrap()[0]
        .clone()
        .expect("archive missing after inject");
    assert_eq!(
        (stat.kind.as_str(), stat.mode, stat.uid, stat.gid),
        ("regular", 0o644, 0, 0)
    );
    let back = ext4::read_file(&image, &located.root, &dest)
        .unwrap()
        .unwrap();
    assert!(back == built.archive, "archive read back differs");
    ext4::check(&image, &located.root).unwrap();
}

#[test]
fn a_base_without_busybox_or_with_a_dynamic_one_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let image = disk_with(dir.path(), None);
    assert_eq!(
        container::find_busybox(&image).unwrap(),
        FoundBusybox::Missing
    );

    // A dynamically linked binary from the host stands in for Debian's `busybox` package.
    let dynamic = std::fs::read("/bin/ls").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = disk_with(dir.path(), Some(&dynamic));
    assert_eq!(
        container::find_busybox(&image).unwrap(),
        FoundBusybox::Dynamic {
            path: "/usr/bin/busybox"
        }
    );
}
