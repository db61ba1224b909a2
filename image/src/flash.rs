//! Writing an image to an SD card (or a file) safely: refuse disks in use, write, read back and compare,
//! then personalise the card's `cluster-lab.toml`.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::disk::{self, Packing};
use crate::error::{ImageError, IoContext, Result};
use crate::fat::FatVolume;
use crate::output::hex;
use crate::progress;
use cluster_lab_config::edit;

/// What TARGET is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A block device (an SD card reader), with its size in bytes.
    BlockDevice { path: PathBuf, size: u64 },
    /// A regular file (created when missing).
    File { path: PathBuf },
}

impl Target {
    pub fn path(&self) -> &Path {
        match self {
            Target::BlockDevice { path, .. } | Target::File { path } => path,
        }
    }
}

fn major(dev: u64) -> u64 {
    ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff)
}

fn minor(dev: u64) -> u64 {
    (dev & 0xff) | ((dev >> 12) & !0xff)
}

/// `MAJ:MIN` of the whole disk a block device belongs to (itself when it is a whole disk).
fn whole_disk(dev: u64) -> String {
    let id = format!("{}:{}", major(dev), minor(dev));
    let sys = PathBuf::from(format!("/sys/dev/block/{id}"));
    if sys.join("partition").exists() {
        if let Ok(real) = std::fs::canonicalize(&sys) {
            if let Some(parent) = real.parent() {
                if let Ok(d) = std::fs::read_to_string(parent.join("dev")) {
                    return d.trim().to_string();
                }
            }
        }
    }
    id
}

/// Block devices in use: mount sources from /proc/self/mounts and the device holding `/`, each
/// mapped to its whole disk, with the mount point that makes it busy.
fn disks_in_use() -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Ok(root) = std::fs::metadata("/") {
        out.push((whole_disk(root.dev()), "/ (the running system)".to_string()));
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for line in mounts.lines() {
        let mut f = line.split_whitespace();
        let (Some(src), Some(mnt)) = (f.next(), f.next()) else {
            continue;
        };
        if !src.starts_with('/') {
            continue;
        }
        if let Ok(m) = std::fs::metadata(src) {
            if m.file_type().is_block_device() {
                out.push((whole_disk(m.rdev()), format!("{src} on {}", unescape(mnt))));
            }
        }
    }
    out
}

/// /proc/self/mounts escapes spaces and the like as octal (`\040`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// Check that `target` may be overwritten: a block device that no mounted filesystem (nor `/`) lives
/// on and that no other device (LVM, dm-crypt, RAID) holds, or a regular file that is not `image`.
pub fn check_target(target: &Path, image: &Path) -> Result<Target> {
    let refuse = |reason: String| ImageError::BadInput {
        path: target.into(),
        reason,
    };
    let meta = match std::fs::metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if target.starts_with("/dev") {
                return Err(refuse("no such device".into()));
            }
            return Ok(Target::File {
                path: target.into(),
            });
        }
        Err(e) => return Err(e).at(target, "inspecting target"),
    };
    if meta.file_type().is_block_device() {
        let disk = whole_disk(meta.rdev());
        let mine = format!("{}:{}", major(meta.rdev()), minor(meta.rdev()));
        for (busy, why) in disks_in_use() {
            if busy == disk || busy == mine {
                return Err(refuse(format!(
                    "refusing to overwrite a disk in use: {why}; unmount it first (and never pick the system disk)"
                )));
            }
        }
        let holders = PathBuf::from(format!("/sys/dev/block/{disk}/holders"));
        if std::fs::read_dir(&holders)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            return Err(refuse(
                "refusing to overwrite a disk held by another device (LVM, dm-crypt or RAID)"
                    .into(),
            ));
        }
        let size = File::open(target)
            .and_then(|mut f| f.seek(SeekFrom::End(0)))
            .at(target, "opening target device")?;
        Ok(Target::BlockDevice {
            path: target.into(),
            size,
        })
    } else if meta.is_file() {
        if let Ok(img) = std::fs::metadata(image) {
            if img.dev() == meta.dev() && img.ino() == meta.ino() {
                return Err(refuse("the target is the image itself".into()));
            }
        }
        Ok(Target::File {
            path: target.into(),
        })
    } else {
        Err(refuse(
            "not a block device or a regular file (give e.g. /dev/sdX or a path ending in .img)"
                .into(),
        ))
    }
}

/// Open `image` for reading its raw bytes: `.img` as is, `.img.xz`/`.img.zst` decompressed on the fly.
/// Returns the reader and the size of the packed file (for the progress bar).
fn open_image(image: &Path) -> Result<(Box<dyn Read>, u64)> {
    let f = File::open(image).at(image, "opening image")?;
    let len = f.metadata().at(image, "reading image size")?.len();
    let reader: Box<dyn Read> = match Packing::detect(image)? {
        Packing::Raw => Box::new(f),
        Packing::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(BufReader::new(
            f,
        ))),
        Packing::Zstd => Box::new(zstd::Decoder::new(f).at(image, "starting zstd")?),
        Packing::Zip => {
            return Err(ImageError::BadInput {
                path: image.into(),
                reason: "flash takes .img, .img.xz or .img.zst; unzip the archive first".into(),
            })
        }
    };
    Ok((reader, len))
}

/// What [`write`] did.
#[derive(Debug, Clone)]
pub struct Written {
    pub bytes: u64,
    pub sha256: String,
}

/// Write the image to the target, then read the same number of bytes back from the target (past the
/// page cache for devices) and compare checksums.
pub fn write(image: &Path, target: &Target) -> Result<Written> {
    let (reader, packed_len) = open_image(image)?;
    let tpath = target.path();
    if let Target::BlockDevice { size, .. } = target {
        // A raw image's size is known up front: refuse before writing anything.
        if Packing::detect(image)? == Packing::Raw && packed_len > *size {
            return Err(ImageError::BadInput {
                path: tpath.into(),
                reason: format!(
                    "the device holds {size} bytes, too small for the image ({packed_len} bytes); nothing was written"
                ),
            });
        }
    }
    let mut out = match target {
        Target::File { path } => File::create(path).at(path, "creating target file")?,
        Target::BlockDevice { path, .. } => File::options()
            .write(true)
            .open(path)
            .at(path, "opening target device for writing")?,
    };
    let bar = progress::bytes(packed_len, "writing");
    let mut reader = bar.wrap_read(reader);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut bytes = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| ImageError::BadInput {
            path: image.into(),
            reason: format!("reading the image failed (corrupt or truncated?): {e}"),
        })?;
        if n == 0 {
            break;
        }
        if let Target::BlockDevice { size, .. } = target {
            if bytes + n as u64 > *size {
                return Err(ImageError::BadInput {
                    path: tpath.into(),
                    reason: format!("the device holds {size} bytes, too small for the image"),
                });
            }
        }
        let block_device = matches!(target, Target::BlockDevice { .. });
        if !block_device && buf[..n].iter().all(|&b| b == 0) {
            // A file target stays sparse (it was just truncated, so holes read back as zeros).
            out.seek(SeekFrom::Current(n as i64))
                .at(tpath, "writing to target")?;
        } else {
            out.write_all(&buf[..n]).at(tpath, "writing to target")?;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
        // Flush a card every 64 MiB, so the progress bar shows the card's speed rather than the page
        // cache's, and the final sync does not hang at 100 %.
        if block_device && bytes % (64 << 20) < n as u64 {
            out.sync_data().at(tpath, "syncing target")?;
        }
    }
    if matches!(target, Target::File { .. }) {
        out.set_len(bytes).at(tpath, "sizing target file")?;
    }
    out.sync_all().at(tpath, "syncing target")?;
    bar.finish_and_clear();
    drop(out);
    let sha256 = hex(&hasher.finalize());

    // Read back from the medium, not from the page cache.
    let back = File::open(tpath).at(tpath, "opening target to verify")?;
    let _ = nix::fcntl::posix_fadvise(
        &back,
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
    let bar = progress::bytes(bytes, "verifying");
    let mut back = bar.wrap_read(back.take(bytes));
    let mut h = Sha256::new();
    let read = std::io::copy(&mut back, &mut h).at(tpath, "reading back target")?;
    bar.finish_and_clear();
    let got = hex(&h.finalize());
    if read != bytes || got != sha256 {
        return Err(ImageError::BadInput {
            path: tpath.into(),
            reason: format!(
                "verification failed: wrote {bytes} bytes with sha256 {sha256}, read back {read} bytes with sha256 {got}; the card may be faulty"
            ),
        });
    }
    Ok(Written { bytes, sha256 })
}

/// Set `[node] hostname` (and `ssh_authorized_keys` when given) in the `cluster-lab.toml` on the
/// written target's boot partition, creating the file from a minimal one if the image has none.
pub fn personalise(target: &Path, hostname: &str, ssh_keys: Option<&[String]>) -> Result<String> {
    edit::validate_hostname(hostname)?;
    let located = disk::locate(target)?;
    let vol = FatVolume::open(target, &located.boot, false)?;
    let text = match vol.read(cluster_lab_config::FILE_NAME)? {
        Some(b) => String::from_utf8(b).map_err(|_| {
            ImageError::Invalid(format!(
                "{}: {} on the boot partition is not UTF-8 text",
                target.display(),
                cluster_lab_config::FILE_NAME
            ))
        })?,
        None => cluster_lab_config::DEFAULT_TOML.to_string(),
    };
    let new = edit::set_node(&text, hostname, ssh_keys)?;
    drop(vol);
    write_boot_files(target, &[(cluster_lab_config::FILE_NAME, new.as_bytes())])?;
    Ok(new)
}

/// Write `files` (name, contents) into the root of `target`'s boot partition, as a flasher that personalises the
/// card does (Raspberry Pi Imager's `user-data`, `meta-data`), and read them back.
pub fn write_boot_files(target: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let located = disk::locate(target)?;
    let vol = FatVolume::open(target, &located.boot, true)?;
    for (name, data) in files {
        vol.write(name, data)?;
    }
    vol.close()?;
    let vol = FatVolume::open(target, &located.boot, false)?;
    for (name, data) in files {
        if vol.read(name)?.as_deref() != Some(*data) {
            return Err(ImageError::Fat {
                path: target.into(),
                index: located.boot.index,
                reason: format!("{name} reads back different from what was written"),
            });
        }
    }
    Ok(())
}

/// Ask the kernel to re-read the partition table of a flashed device (`blockdev --rereadpt`), so the
/// new partitions appear without unplugging the card.
pub fn reread_partitions(device: &Path) -> Result<()> {
    crate::command::run(
        "blockdev",
        &[std::ffi::OsStr::new("--rereadpt"), device.as_os_str()],
    )?;
    Ok(())
}
