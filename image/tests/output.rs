//! Publishing: OUT.img, the compressed copy, the block map and OUT.sha256 appear together, with correct checksums,
//! and no `.partial` file is left behind.

mod common;

use std::io::Read;

use cluster_lab_image::blockmap::BlockMap;
use cluster_lab_image::output::{self, Compression};
use common::*;

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn zstd_and_xz_outputs_with_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate().take(1 << 20) {
        *b = (i % 251) as u8;
    }
    for (comp, ext) in [
        (Compression::Zstd(3), "img.zst"),
        (Compression::Xz(1), "img.xz"),
    ] {
        let sub = dir.path().join(ext);
        std::fs::create_dir(&sub).unwrap();
        let work = sub.join(".work");
        std::fs::write(&work, &data).unwrap();
        let out = sub.join("cluster-lab-arm64");
        let p = output::publish(&work, &out, comp).unwrap();
        let mut want = vec![
            format!("cluster-lab-arm64.{ext}"),
            "cluster-lab-arm64.img".into(),
            "cluster-lab-arm64.img.bmap".into(),
            "cluster-lab-arm64.sha256".into(),
        ];
        want.sort();
        assert_eq!(names(&sub), want);
        assert_eq!(std::fs::read(&p.image).unwrap(), data);
        // No partition table: the block map is the image's data (the first MiB here, the rest a hole or zeros
        // written as data, as the file holds it).
        let bmap = std::fs::read_to_string(&p.bmap).unwrap();
        let map = BlockMap::parse_bmap(&bmap, &p.bmap).unwrap();
        assert_eq!(map, BlockMap::of_image(&p.image).unwrap());
        assert_eq!(p.mapped_bytes, map.mapped_bytes());
        let c = p.compressed.clone().unwrap();
        let mut back = Vec::new();
        match comp {
            Compression::Zstd(_) => {
                zstd::Decoder::new(std::fs::File::open(&c).unwrap())
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
            }
            _ => {
                liblzma::read::XzDecoder::new(std::fs::File::open(&c).unwrap())
                    .read_to_end(&mut back)
                    .unwrap();
            }
        }
        assert_eq!(back, data, "{ext} round trip");
        // OUT.sha256 is in `sha256sum -c` format and right for both files.
        let sums = std::fs::read_to_string(&p.checksums).unwrap();
        let want = format!(
            "{}  cluster-lab-arm64.img\n{}  cluster-lab-arm64.{ext}\n",
            output::sha256_file(&p.image).unwrap(),
            output::sha256_file(&c).unwrap()
        );
        assert_eq!(sums, want);
        let check = std::process::Command::new("sha256sum")
            .arg("-c")
            .arg(&p.checksums)
            .current_dir(&sub)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        assert_eq!(
            p.compressed_size,
            Some(std::fs::metadata(&c).unwrap().len())
        );
    }
}

#[test]
fn previous_outputs_are_removed_and_none_is_uncompressed_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    for ext in ["img", "img.zst", "img.bmap", "sha256", "img.zst.partial"] {
        std::fs::write(output::with_ext(&out, ext), b"old").unwrap();
    }
    std::fs::write(
        cluster_lab_image::inject::temp_path(&out, "img"),
        b"interrupted",
    )
    .unwrap();
    output::remove_previous(&out).unwrap();
    assert!(names(dir.path()).is_empty());
    let work = dir.path().join("w");
    std::fs::write(&work, vec![1u8; 1000]).unwrap();
    let p = output::publish(&work, &out, Compression::None).unwrap();
    assert!(p.compressed.is_none());
    assert_eq!(
        names(dir.path()),
        vec!["x.img".to_string(), "x.img.bmap".into(), "x.sha256".into()]
    );
}

#[test]
fn missing_work_file_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    assert!(output::publish(&dir.path().join("nope"), &out, Compression::Zstd(1)).is_err());
    assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    let _ = MIB;
}
