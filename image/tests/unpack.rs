//! Base images packed as .img, .img.xz, .img.zst and .zip unpack to the same bytes; broken packs fail
//! with the packing named.

mod common;

use std::io::Write;

use cluster_lab_image::disk::{self, Packing};
use cluster_lab_image::output::sha256_file;
use common::*;

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn every_packing_unpacks_to_the_same_image() {
    let fx = small_disk();
    let raw = std::fs::read(&fx.image).unwrap();
    let want = sha256_file(&fx.image).unwrap();
    let d = fx.dir.path();
    std::fs::write(d.join("b.img.xz"), xz(&raw)).unwrap();
    std::fs::write(d.join("b.img.zst"), zstd::encode_all(&raw[..], 3).unwrap()).unwrap();
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(d.join("b.zip")).unwrap());
        z.start_file(
            "2024-01-01-raspios.img",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        z.write_all(&raw).unwrap();
        z.finish().unwrap();
    }
    for (name, packing) in [
        ("disk.img", Packing::Raw),
        ("b.img.xz", Packing::Xz),
        ("b.img.zst", Packing::Zstd),
        ("b.zip", Packing::Zip),
    ] {
        let src = d.join(name);
        assert_eq!(Packing::detect(&src).unwrap(), packing, "{name}");
        let out = d.join(format!("{name}.out"));
        assert_eq!(
            disk::unpack(&src, &out).unwrap(),
            raw.len() as u64,
            "{name}"
        );
        assert_eq!(sha256_file(&out).unwrap(), want, "{name}");
        disk::locate(&out).unwrap();
        // Sparse: the mostly-empty fixture takes far less space than its size.
        let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&out).unwrap());
        assert!(
            blocks * 512 < raw.len() as u64 / 2,
            "{name} copy is not sparse"
        );
    }
}

#[test]
fn truncated_xz_is_reported() {
    let fx = small_disk();
    let packed = xz(&std::fs::read(&fx.image).unwrap());
    let p = fx.dir.path().join("cut.img.xz");
    std::fs::write(&p, &packed[..packed.len() / 2]).unwrap();
    let e = disk::unpack(&p, &fx.dir.path().join("o"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("Xz data is corrupt or truncated"), "{e}");
}

#[test]
fn zip_without_exactly_one_img_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("two.zip");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    for n in ["a.img", "b.img"] {
        z.start_file(n, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(b"x").unwrap();
    }
    z.finish().unwrap();
    let e = disk::unpack(&p, &dir.path().join("o"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("exactly one .img") && e.contains("a.img"), "{e}");
}
