//! Opening a base image: raw `.img`, `.img.xz`, `.img.zst` or a `.zip` holding one `.img`, unpacked into
//! a working copy; then finding its FAT boot and ext4 root partitions.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{ImageError, IoContext, Result};
use crate::mbr::{self, Partition};
use crate::{ext4, fat, progress};

/// How a base image file is packed, told by its first bytes (not its name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    Raw,
    Xz,
    Zstd,
    Zip,
}

impl Packing {
    pub fn detect(path: &Path) -> Result<Packing> {
        let mut f = File::open(path).at(path, "opening base image")?;
        let mut magic = [0u8; 6];
        let n = read_up_to(&mut f, &mut magic).at(path, "reading base image")?;
        let m = &magic[..n];
        Ok(if m.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Packing::Xz
        } else if m.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Packing::Zstd
        } else if m.starts_with(b"PK\x03\x04") {
            Packing::Zip
        } else {
            Packing::Raw
        })
    }
}

fn read_up_to<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Unpack (or copy) the base image at `base` into `out`, which is created or truncated. All-zero
/// 1 MiB blocks are skipped, so the copy is sparse and fast. Returns the image size in bytes.
pub fn unpack(base: &Path, out: &Path) -> Result<u64> {
    let packing = Packing::detect(base)?;
    let file = File::open(base).at(base, "opening base image")?;
    let packed_len = file.metadata().at(base, "reading base image size")?.len();
    let corrupt = |e: std::io::Error| ImageError::BadInput {
        path: base.into(),
        reason: format!("{packing:?} data is corrupt or truncated: {e}"),
    };
    let mut dst = File::create(out).at(out, "creating working image")?;
    let written = match packing {
        Packing::Raw => {
            let bar = progress::bytes(packed_len, "copying");
            copy_raw(&file, packed_len, &mut dst, out, &bar).map_err(|e| match e {
                CopyError::Read(e) => ImageError::Io {
                    path: base.into(),
                    what: "reading base image",
                    source: e,
                },
                CopyError::Write(e) => e,
            })?
        }
        Packing::Xz | Packing::Zstd => {
            let bar = progress::bytes(packed_len, "unpacking");
            let input = BufReader::new(bar.wrap_read(file));
            let mut dec: Box<dyn Read> = if packing == Packing::Xz {
                Box::new(liblzma::read::XzDecoder::new_multi_decoder(input))
            } else {
                Box::new(zstd::Decoder::with_buffer(input).map_err(corrupt)?)
            };
            copy_sparse(&mut dec, &mut dst, out).map_err(|e| match e {
                CopyError::Read(e) => corrupt(e),
                CopyError::Write(e) => e,
            })?
        }
        Packing::Zip => {
            let mut archive =
                zip::ZipArchive::new(BufReader::new(file)).map_err(|e| ImageError::BadInput {
                    path: base.into(),
                    reason: format!("unreadable zip archive: {e}"),
                })?;
            let names: Vec<String> = archive.file_names().map(str::to_string).collect();
            let imgs: Vec<&String> = names.iter().filter(|n| n.ends_with(".img")).collect();
            let [name] = imgs[..] else {
                return Err(ImageError::BadInput {
                    path: base.into(),
                    reason: format!(
                        "a zip base must hold exactly one .img file; it holds {names:?}"
                    ),
                });
            };
            let mut entry = archive.by_name(name).map_err(|e| ImageError::BadInput {
                path: base.into(),
                reason: format!("reading {name} from the zip archive: {e}"),
            })?;
            let bar = progress::bytes(entry.size(), "unzipping");
            copy_sparse(&mut bar.wrap_read(&mut entry), &mut dst, out).map_err(|e| match e {
                CopyError::Read(e) => corrupt(e),
                CopyError::Write(e) => e,
            })?
        }
    };
    dst.set_len(written).at(out, "sizing working image")?;
    dst.sync_all().at(out, "syncing working image")?;
    Ok(written)
}

enum CopyError {
    Read(std::io::Error),
    Write(ImageError),
}

/// Copy `src` to `dst` from its current position in 1 MiB blocks, seeking over blocks that are all
/// zeros (the caller sets the final length).
fn copy_sparse(src: &mut dyn Read, dst: &mut File, dst_path: &Path) -> Result<u64, CopyError> {
    const BLOCK: usize = 1 << 20;
    let mut buf = vec![0u8; BLOCK];
    let mut total = 0u64;
    loop {
        let n = read_up_to(src, &mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(n as i64))
                .at(dst_path, "writing working image")
                .map_err(CopyError::Write)?;
        } else {
            dst.write_all(&buf[..n])
                .at(dst_path, "writing working image")
                .map_err(CopyError::Write)?;
        }
        total += n as u64;
        if n < BLOCK {
            break;
        }
    }
    Ok(total)
}

/// The data extents of the first `len` bytes of `file` (everything but its holes, by SEEK_DATA/SEEK_HOLE). Where the
/// filesystem does not report extents, the rest of the file counts as data.
pub fn data_extents(file: &File, len: u64) -> Vec<std::ops::Range<u64>> {
    use nix::unistd::{lseek64, Whence};
    let end = len as i64;
    let mut out = Vec::new();
    let mut pos: i64 = 0;
    while pos < end {
        let data = match lseek64(file, pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break, // only a hole is left
            Err(_) => pos,                          // no extent support: the rest is data
        };
        let hole = lseek64(file, data, Whence::SeekHole)
            .unwrap_or(end)
            .min(end);
        out.push(data as u64..hole as u64);
        pos = hole;
    }
    out
}

/// Copy a raw image: only its data extents, each sparsely; holes stay holes.
fn copy_raw(
    src: &File,
    len: u64,
    dst: &mut File,
    dst_path: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<u64, CopyError> {
    for extent in data_extents(src, len) {
        let mut reader = src;
        reader
            .seek(SeekFrom::Start(extent.start))
            .map_err(CopyError::Read)?;
        dst.seek(SeekFrom::Start(extent.start))
            .at(dst_path, "writing working image")
            .map_err(CopyError::Write)?;
        bar.set_position(extent.start);
        copy_sparse(
            &mut bar.wrap_read(reader.take(extent.end - extent.start)),
            dst,
            dst_path,
        )?;
    }
    bar.set_position(len);
    Ok(len)
}

/// The two partitions cluster-lab edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// The FAT partition holding the firmware/kernel and `cluster-lab.toml`.
    pub boot: Partition,
    /// The ext4 root filesystem.
    pub root: Partition,
}

/// Find the FAT boot partition (the first FAT-typed partition that opens as FAT) and the ext4 root
/// partition (the first Linux-typed partition with an ext superblock) of a raw image or device.
pub fn locate(path: &Path) -> Result<Located> {
    let parts = mbr::read(path)?;
    let found = parts
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let boot =
        parts
            .iter()
            .find(|p| p.is_fat_type())
            .ok_or_else(|| ImageError::MissingPartition {
                path: path.into(),
                what: "FAT boot",
                found: found.clone(),
            })?;
    // Opening it proves it is FAT (a wrong type byte or a damaged boot sector fails here).
    fat::FatVolume::open(path, boot, false)?;
    let linux: Vec<&Partition> = parts
        .iter()
        .filter(|p| p.kind == mbr::types::LINUX)
        .collect();
    if linux.is_empty() {
        return Err(ImageError::MissingPartition {
            path: path.into(),
            what: "Linux (type 0x83) root",
            found,
        });
    }
    for p in &linux {
        if ext4::has_superblock(path, p)? {
            return Ok(Located {
                boot: *boot,
                root: **p,
            });
        }
    }
    Err(ImageError::Ext4 {
        path: path.into(),
        index: linux[0].index,
        reason: "ext4 superblock bad: no ext2/3/4 magic (0xEF53) at byte 1080 of the partition"
            .into(),
    })
}
