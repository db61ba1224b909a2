//! Writing an image to an SD card (or a file) safely: refuse disks in use, write the blocks that hold data,
//! read them back and compare, then personalise the card's `cluster-lab.toml`.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::blockmap::{skip, AlignedBuf, BlockMap};
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

/// What [`write`] did.
#[derive(Debug, Clone)]
pub struct Written {
    /// Size of the image.
    pub image_bytes: u64,
    /// Bytes written to the target (and read back): the mapped blocks.
    pub data_bytes: u64,
    /// Runs of blocks written.
    pub ranges: usize,
    /// Where the block map came from: a bmap file beside the image, or made from the image now.
    pub map_source: String,
}

/// Write the blocks of the image a card needs (its [`BlockMap`]: the filesystems' used blocks and any other data,
/// as bmaptool does), checking each run against the map's checksum as it is read, then read every written run
/// back from the target (past the page cache) and check it again. The map is the `.bmap` file beside the image
/// when there is one (needed for `.img.xz`/`.img.zst`), else it is made from the raw image. A file target is
/// created sparse: blocks not written read as zeros.
pub fn write(image: &Path, target: &Target) -> Result<Written> {
    let packing = Packing::detect(image)?;
    if packing == Packing::Zip {
        return Err(ImageError::BadInput {
            path: image.into(),
            reason: "flash takes .img, .img.xz or .img.zst; unzip the archive first".into(),
        });
    }
    let (map, map_source) = match BlockMap::beside(image)? {
        Some((path, map)) => (map, path.display().to_string()),
        None if packing == Packing::Raw => (
            BlockMap::of_image(image)?,
            "made from the image".to_string(),
        ),
        None => {
            return Err(ImageError::BadInput {
                path: image.into(),
                reason: format!(
                    "a compressed image needs its block map beside it ({}); `cargo xtask image` writes one",
                    with_bmap_ext(image).display()
                ),
            })
        }
    };
    write_mapped(image, &map, target)?;
    Ok(Written {
        image_bytes: map.image_size,
        data_bytes: map.mapped_bytes(),
        ranges: map.ranges.len(),
        map_source,
    })
}

/// `x.img.bmap` for `x.img`, `x.img.xz` and `x.img.zst`.
pub fn with_bmap_ext(image: &Path) -> PathBuf {
    let name = image.to_string_lossy();
    let stem = name
        .strip_suffix(".xz")
        .or_else(|| name.strip_suffix(".zst"))
        .unwrap_or(&name);
    PathBuf::from(format!("{stem}.bmap"))
}

/// Write `map`'s ranges of `image` to `target`, then verify them; see [`write`].
pub fn write_mapped(image: &Path, map: &BlockMap, target: &Target) -> Result<()> {
    write_blocks(image, map, target)?;
    let bar = progress::bytes(map.mapped_bytes(), "verifying");
    map.verify(target.path(), direct_io(map, target), &|done| {
        bar.set_position(done)
    })?;
    bar.finish_and_clear();
    Ok(())
}

/// Whether a card is written and read past the page cache (O_DIRECT): block devices, for images whose size is a
/// whole number of 512-byte sectors.
pub fn direct_io(map: &BlockMap, target: &Target) -> bool {
    matches!(target, Target::BlockDevice { .. }) && map.image_size % 512 == 0
}

/// Write `map`'s ranges of `image` to `target`, each checked against the map as it is read, and sync; the
/// first half of [`write_mapped`]. Returns the bytes written: all mapped bytes to a card, fewer to a fresh file,
/// where runs of zeros are left as holes.
pub fn write_blocks(image: &Path, map: &BlockMap, target: &Target) -> Result<u64> {
    let tpath = target.path();
    if let Target::BlockDevice { size, .. } = target {
        if map.image_size > *size {
            return Err(ImageError::BadInput {
                path: tpath.into(),
                reason: format!(
                    "the device holds {size} bytes, too small for the image ({} bytes); nothing was written",
                    map.image_size
                ),
            });
        }
    }
    let block_device = matches!(target, Target::BlockDevice { .. });
    // Past the page cache on a card, so the bar moves at the card's speed and nothing is left to sync.
    let direct = direct_io(map, target);
    let out = match target {
        Target::File { path } => {
            let f = File::create(path).at(path, "creating target file")?;
            f.set_len(map.image_size).at(path, "sizing target file")?;
            f
        }
        Target::BlockDevice { path, .. } => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut o = File::options();
            o.write(true);
            if direct {
                o.custom_flags(nix::fcntl::OFlag::O_DIRECT.bits());
            }
            o.open(path).at(path, "opening target device for writing")?
        }
    };
    let mut source = Source::open(image)?;
    let bar = progress::bytes(map.mapped_bytes(), "writing data");
    let mut written = 0;
    let mut buf = AlignedBuf::new();
    let buf = buf.as_mut();
    for r in &map.ranges {
        let span = map.bytes(r);
        let mut hasher = Sha256::new();
        let mut pos = span.start;
        while pos < span.end {
            let n = ((span.end - pos) as usize).min(buf.len());
            source.read_at(&mut buf[..n], pos)?;
            hasher.update(&buf[..n]);
            // A fresh file target reads zeros where nothing is written: it stays sparse.
            if block_device || buf[..n].iter().any(|&b| b != 0) {
                out.write_all_at(&buf[..n], pos)
                    .at(tpath, "writing to target")?;
                written += n as u64;
            }
            pos += n as u64;
            bar.inc(n as u64);
        }
        let got = hex(&hasher.finalize());
        if got != r.sha256 {
            return Err(ImageError::BadInput {
                path: image.into(),
                reason: format!(
                    "blocks {}-{} of the image do not match its block map (sha256 {got}, the map says {}): the image or its .bmap file is damaged or they do not belong together",
                    r.first, r.last, r.sha256
                ),
            });
        }
    }
    out.sync_all().at(tpath, "syncing target")?;
    bar.finish_and_clear();
    Ok(written)
}

/// The image's bytes, by offset: positioned reads from a raw image, a forward-only stream from a compressed one
/// (unmapped parts are decompressed and dropped).
enum Source {
    Raw {
        file: File,
        path: PathBuf,
    },
    Stream {
        reader: Box<dyn Read>,
        pos: u64,
        path: PathBuf,
    },
}

impl Source {
    fn open(image: &Path) -> Result<Source> {
        let f = File::open(image).at(image, "opening image")?;
        let path = image.to_path_buf();
        Ok(match Packing::detect(image)? {
            Packing::Raw => Source::Raw { file: f, path },
            Packing::Xz => Source::Stream {
                reader: Box::new(liblzma::read::XzDecoder::new_multi_decoder(BufReader::new(
                    f,
                ))),
                pos: 0,
                path,
            },
            Packing::Zstd => Source::Stream {
                reader: Box::new(zstd::Decoder::new(f).at(image, "starting zstd")?),
                pos: 0,
                path,
            },
            Packing::Zip => unreachable!("refused by write"),
        })
    }

    fn read_at(&mut self, buf: &mut [u8], at: u64) -> Result<()> {
        let truncated = |path: &Path, e: std::io::Error| ImageError::BadInput {
            path: path.into(),
            reason: format!("reading the image failed (corrupt or truncated?): {e}"),
        };
        match self {
            Source::Raw { file, path } => {
                file.read_exact_at(buf, at).map_err(|e| truncated(path, e))
            }
            Source::Stream { reader, pos, path } => {
                if at < *pos {
                    return Err(truncated(
                        path,
                        std::io::Error::other("ranges out of order"),
                    ));
                }
                skip(reader.as_mut(), at - *pos).map_err(|e| truncated(path, e))?;
                reader.read_exact(buf).map_err(|e| truncated(path, e))?;
                *pos = at + buf.len() as u64;
                Ok(())
            }
        }
    }
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
