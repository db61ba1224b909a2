//! The Raspberry Pi Imager OS list (`os_list` JSON, Imager's "custom repository"): one entry describing the image
//! just built, so Imager 2.x offers it with its customisation dialogue. `init_format: cloudinit` makes Imager write
//! cloud-init `user-data`/`meta-data` on the boot partition, which first boot applies (hostname, user, SSH key,
//! timezone). Field names and types follow Imager's `doc/json-schema/os-list-schema.json`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::arch::Arch;
use crate::error::{IoContext, Result};
use crate::output::{with_ext, Published};

/// The top-level document.
#[derive(Debug, Serialize)]
pub struct OsList {
    pub os_list: Vec<OsEntry>,
}

/// One OS entry.
#[derive(Debug, Serialize)]
pub struct OsEntry {
    pub name: String,
    pub description: String,
    /// Imager requires an icon; the empty string shows its generic one.
    pub icon: String,
    pub url: String,
    pub extract_size: u64,
    pub extract_sha256: String,
    pub image_download_size: u64,
    pub image_download_sha256: String,
    pub release_date: String,
    pub devices: Vec<&'static str>,
    pub architecture: &'static str,
    pub init_format: &'static str,
}

/// Imager's device tags and architecture name for the boards this image boots on; `None` for images no Raspberry
/// Pi boots (amd64). The Pi 5 is not listed: this image's kernel cannot boot it (the board check in
/// `base/src/boards.rs` reports why).
pub fn devices(arch: Arch) -> Option<(Vec<&'static str>, &'static str)> {
    match arch {
        Arch::Arm64 => Some((vec!["pi4-64bit", "pi3-64bit"], "armv8")),
        Arch::Armhf => Some((vec!["pi3-32bit", "pi2-32bit"], "armhf")),
        Arch::Amd64 => None,
    }
}

/// Where the OS list for output `out` goes: `OUT.rpi-imager.json`.
pub fn path(out: &Path) -> PathBuf {
    with_ext(out, "rpi-imager.json")
}

/// The entry for `published`: the compressed copy is what Imager downloads (the plain image when there is none),
/// addressed by a `file://` URL (replace it with an `http(s)://` one to serve the list to others).
pub fn entry(published: &Published, arch: Arch, release_date: &str) -> Option<OsEntry> {
    let (devices, architecture) = devices(arch)?;
    let (download, size, sha) = match (
        &published.compressed,
        published.compressed_size,
        &published.compressed_sha256,
    ) {
        (Some(c), Some(s), Some(h)) => (c.clone(), s, h.clone()),
        _ => (
            published.image.clone(),
            published.image_size,
            published.image_sha256.clone(),
        ),
    };
    let absolute = std::path::absolute(&download).unwrap_or(download);
    Some(OsEntry {
        name: format!("cluster-lab ({arch})"),
        description:
            "Docker Swarm and Consul on Raspberry Pis, set up on first boot: flash every card, \
                      name each one, power on the master first"
                .into(),
        icon: String::new(),
        url: format!("file://{}", absolute.display()),
        extract_size: published.image_size,
        extract_sha256: published.image_sha256.clone(),
        image_download_size: size,
        image_download_sha256: sha,
        release_date: release_date.into(),
        devices,
        architecture,
        init_format: "cloudinit",
    })
}

/// Write `OUT.rpi-imager.json` for `published`; `None` (nothing written) for an architecture no Pi boots.
pub fn write(out: &Path, published: &Published, arch: Arch) -> Result<Option<PathBuf>> {
    let Some(entry) = entry(published, arch, &today()) else {
        return Ok(None);
    };
    let path = path(out);
    let text = serde_json::to_string_pretty(&OsList {
        os_list: vec![entry],
    })
    .expect("the OS list serialises")
        + "\n";
    std::fs::write(&path, text).at(&path, "writing the Raspberry Pi Imager OS list")?;
    Ok(Some(path))
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    civil_date(days)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(compressed: bool) -> Published {
        Published {
            image: PathBuf::from("/tmp/out/lab.img"),
            compressed: compressed.then(|| PathBuf::from("/tmp/out/lab.img.zst")),
            bmap: PathBuf::from("/tmp/out/lab.img.bmap"),
            mapped_bytes: 900_000_000,
            checksums: PathBuf::from("/tmp/out/lab.sha256"),
            image_sha256: "aa".repeat(32),
            image_size: 2_000_000_000,
            compressed_size: compressed.then_some(500_000_000),
            compressed_sha256: compressed.then(|| "bb".repeat(32)),
        }
    }

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(19_723), "2024-01-01");
        assert_eq!(civil_date(20_793), "2026-12-06");
        assert_eq!(civil_date(11_016), "2000-02-29");
    }

    #[test]
    fn the_entry_has_every_field_imager_requires() {
        let e = entry(&published(true), Arch::Arm64, "2026-12-06").unwrap();
        let v = serde_json::to_value(OsList { os_list: vec![e] }).unwrap();
        let os = &v["os_list"][0];
        // Required by Imager's schema.
        for key in [
            "name",
            "description",
            "icon",
            "url",
            "extract_size",
            "extract_sha256",
            "image_download_size",
            "release_date",
            "devices",
        ] {
            assert!(!os[key].is_null(), "{key} missing: {os}");
        }
        assert_eq!(os["url"], "file:///tmp/out/lab.img.zst");
        assert_eq!(os["extract_size"], 2_000_000_000u64);
        assert_eq!(os["extract_sha256"], "aa".repeat(32));
        assert_eq!(os["image_download_size"], 500_000_000u64);
        assert_eq!(os["image_download_sha256"], "bb".repeat(32));
        assert_eq!(os["init_format"], "cloudinit");
        assert_eq!(os["architecture"], "armv8");
        assert_eq!(os["devices"], serde_json::json!(["pi4-64bit", "pi3-64bit"]));
    }

    #[test]
    fn without_compression_the_image_itself_is_the_download_and_amd64_has_no_entry() {
        let e = entry(&published(false), Arch::Armhf, "2026-12-06").unwrap();
        assert_eq!(e.url, "file:///tmp/out/lab.img");
        assert_eq!(e.image_download_sha256, "aa".repeat(32));
        assert_eq!(e.architecture, "armhf");
        assert!(entry(&published(true), Arch::Amd64, "2026-12-06").is_none());
    }
}
