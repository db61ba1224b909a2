//! The block map of a disk image: which 4 KiB blocks hold something a card needs, each run of them with its
//! SHA-256, in the file format of bmaptool (`bmap-tools`, format 2.0), so that `cargo xtask flash` and bmaptool
//! both write only those blocks and check them.
//!
//! A block is mapped when a filesystem uses it (ext4 from its block bitmaps as `dumpe2fs` lists them, FAT from
//! its allocation table) or, outside any filesystem we can read, when the image file holds data there
//! (`SEEK_DATA`/`SEEK_HOLE`). A filesystem's used blocks are mapped even where the image file has a hole: an
//! ext4 journal or inode table of zeros must read as zeros on the card, not as whatever the card held before.
//! Blocks a filesystem does not use are left out even where the image file holds data.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{ImageError, IoContext, Result};
use crate::mbr::Partition;
use crate::output::hex;
use crate::{ext4, fat, mbr};

/// Block size of every map we make (bmaptool's default, and ext4's).
pub const BLOCK_SIZE: u64 = 4096;

/// A run of mapped blocks, `first..=last`, and the SHA-256 of their bytes in the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRange {
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

/// Which blocks of an image a card needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMap {
    /// Size of the raw image in bytes.
    pub image_size: u64,
    pub block_size: u64,
    pub ranges: Vec<MappedRange>,
}

impl BlockMap {
    /// Byte range of `r` in the image (the last block may be short).
    pub fn bytes(&self, r: &MappedRange) -> Range<u64> {
        r.first * self.block_size..((r.last + 1) * self.block_size).min(self.image_size)
    }

    /// Bytes the map says to write.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let b = self.bytes(r);
                b.end - b.start
            })
            .sum()
    }

    /// The map of a raw image file: filesystems' used blocks, data extents elsewhere, each run checksummed.
    pub fn of_image(path: &Path) -> Result<BlockMap> {
        let file = File::open(path).at(path, "opening image")?;
        let image_size = file.metadata().at(path, "reading image size")?.len();
        let blocks = image_size.div_ceil(BLOCK_SIZE) as usize;
        let mut mapped = vec![false; blocks];
        for extent in crate::disk::data_extents(&file, image_size) {
            mark(&mut mapped, &extent, true);
        }
        // An image without a partition table is mapped by its data extents alone.
        let partitions = mbr::read(path).unwrap_or_default();
        for part in &partitions {
            let Some(free) = free_ranges(path, part)? else {
                continue;
            };
            mark(&mut mapped, &(part.start..part.end().min(image_size)), true);
            for f in free {
                // Only blocks wholly free: a block shared with used bytes stays mapped.
                let first = f.start.div_ceil(BLOCK_SIZE);
                let last = f.end / BLOCK_SIZE;
                if first < last {
                    mark(&mut mapped, &(first * BLOCK_SIZE..last * BLOCK_SIZE), false);
                }
            }
        }
        let mut ranges = Vec::new();
        let mut i = 0;
        while i < blocks {
            if !mapped[i] {
                i += 1;
                continue;
            }
            let first = i;
            while i < blocks && mapped[i] {
                i += 1;
            }
            ranges.push(MappedRange {
                first: first as u64,
                last: i as u64 - 1,
                sha256: String::new(),
            });
        }
        let mut map = BlockMap {
            image_size,
            block_size: BLOCK_SIZE,
            ranges,
        };
        let mut buf = vec![0u8; CHUNK];
        for idx in 0..map.ranges.len() {
            let span = map.bytes(&map.ranges[idx]);
            map.ranges[idx].sha256 = hash_range(&file, path, span, &mut buf)?;
        }
        Ok(map)
    }

    /// The map in bmaptool's file format (version 2.0), with its own checksum.
    pub fn to_bmap(&self) -> String {
        let blocks = self.image_size.div_ceil(self.block_size);
        let mapped: u64 = self.ranges.iter().map(|r| r.last - r.first + 1).sum();
        let mut s = String::new();
        let _ = writeln!(s, "<?xml version=\"1.0\" ?>");
        let _ = writeln!(
            s,
            "<!-- Block map of a cluster-lab image: the blocks a card needs (used by its filesystems, or holding data\n     outside them), for `cargo xtask flash` and `bmaptool copy`. -->"
        );
        let _ = writeln!(s, "<bmap version=\"2.0\">");
        let _ = writeln!(s, "    <ImageSize> {} </ImageSize>", self.image_size);
        let _ = writeln!(s, "    <BlockSize> {} </BlockSize>", self.block_size);
        let _ = writeln!(s, "    <BlocksCount> {blocks} </BlocksCount>");
        let _ = writeln!(s, "    <MappedBlocksCount> {mapped} </MappedBlocksCount>");
        let _ = writeln!(s, "    <ChecksumType> sha256 </ChecksumType>");
        let _ = writeln!(s, "    <BmapFileChecksum> {ZEROS} </BmapFileChecksum>");
        let _ = writeln!(s, "    <BlockMap>");
        for r in &self.ranges {
            let span = if r.first == r.last {
                r.first.to_string()
            } else {
                format!("{}-{}", r.first, r.last)
            };
            let _ = writeln!(s, "        <Range chksum=\"{}\"> {span} </Range>", r.sha256);
        }
        let _ = writeln!(s, "    </BlockMap>");
        let _ = writeln!(s, "</bmap>");
        // bmaptool checks the file's SHA-256 taken with the checksum's own value as zeros.
        let sum = hex(&Sha256::digest(s.as_bytes()));
        s.replacen(ZEROS, &sum, 1)
    }

    /// Read a bmap file (ours or bmaptool's), checking its own checksum.
    pub fn parse_bmap(text: &str, path: &Path) -> Result<BlockMap> {
        let bad = |reason: String| ImageError::BadInput {
            path: path.into(),
            reason,
        };
        let body = strip_comments(text);
        let field = |tag: &str| -> Result<String> {
            let open = format!("<{tag}>");
            let close = format!("</{tag}>");
            let start = body
                .find(&open)
                .ok_or_else(|| bad(format!("not a bmap file: no <{tag}>")))?
                + open.len();
            let end = body[start..]
                .find(&close)
                .ok_or_else(|| bad(format!("not a bmap file: <{tag}> is not closed")))?;
            Ok(body[start..start + end].trim().to_string())
        };
        let number = |tag: &str| -> Result<u64> {
            let v = field(tag)?;
            v.parse()
                .map_err(|_| bad(format!("<{tag}> is not a number: {v:?}")))
        };
        let version = body
            .split("<bmap version=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .ok_or_else(|| bad("not a bmap file: no <bmap version=\"…\">".into()))?;
        if !version.starts_with("2.") {
            return Err(bad(format!(
                "bmap format {version} is not supported (only 2.x, as bmaptool 3.x writes)"
            )));
        }
        let image_size = number("ImageSize")?;
        let block_size = number("BlockSize")?;
        if block_size == 0 || block_size % 512 != 0 {
            return Err(bad(format!(
                "<BlockSize> {block_size} is not a multiple of 512"
            )));
        }
        let kind = field("ChecksumType")?;
        if kind != "sha256" {
            return Err(bad(format!(
                "checksum type {kind:?} is not supported (only sha256)"
            )));
        }
        let sum = field("BmapFileChecksum")?;
        let zeroed = text.replacen(&sum, &"0".repeat(sum.len()), 1);
        let got = hex(&Sha256::digest(zeroed.as_bytes()));
        if got != sum {
            return Err(bad(format!(
                "the bmap file is damaged: its checksum is {sum}, its contents hash to {got}"
            )));
        }
        let blocks = image_size.div_ceil(block_size);
        let mut ranges: Vec<MappedRange> = Vec::new();
        for piece in body.split("<Range").skip(1) {
            let (attrs, rest) = piece
                .split_once('>')
                .ok_or_else(|| bad("a <Range> is not closed".into()))?;
            let span = rest
                .split("</Range>")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            let sha256 = attrs
                .split("chksum=\"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .ok_or_else(|| bad(format!("range {span} has no chksum")))?
                .to_string();
            let (a, b) = span.split_once('-').unwrap_or((&span, &span));
            let (first, last) = match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                (Ok(f), Ok(l)) if f <= l && l < blocks => (f, l),
                _ => {
                    return Err(bad(format!(
                        "range {span:?} is not a block range inside the image's {blocks} blocks"
                    )))
                }
            };
            if ranges.last().is_some_and(|p| p.last >= first) {
                return Err(bad(format!(
                    "range {span} overlaps or precedes the one before it"
                )));
            }
            ranges.push(MappedRange {
                first,
                last,
                sha256,
            });
        }
        Ok(BlockMap {
            image_size,
            block_size,
            ranges,
        })
    }

    /// The bmap file next to `image`, as bmaptool looks for it: `IMAGE.bmap`, then with the compression
    /// suffix removed (`x.img.xz` → `x.img.bmap`).
    pub fn beside(image: &Path) -> Result<Option<(PathBuf, BlockMap)>> {
        let mut candidates = vec![PathBuf::from(format!("{}.bmap", image.display()))];
        let stripped = crate::flash::with_bmap_ext(image);
        if !candidates.contains(&stripped) {
            candidates.push(stripped);
        }
        for c in candidates {
            match std::fs::read_to_string(&c) {
                Ok(text) => {
                    let map = BlockMap::parse_bmap(&text, &c)?;
                    return Ok(Some((c, map)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).at(&c, "reading bmap file"),
            }
        }
        Ok(None)
    }

    /// Read the mapped ranges back from `target` and compare each with its checksum. `direct` reads past the
    /// page cache (O_DIRECT, for block devices); otherwise the file's cached pages are dropped first.
    /// Calls `progress` with the bytes read so far.
    pub fn verify(&self, target: &Path, direct: bool, progress: &dyn Fn(u64)) -> Result<()> {
        let file = open_for_reading(target, direct && self.image_size % 512 == 0)?;
        if !direct {
            let _ = nix::fcntl::posix_fadvise(
                &file,
                0,
                0,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
        }
        let mut buf = AlignedBuf::new();
        let mut done = 0;
        for r in &self.ranges {
            let span = self.bytes(r);
            let got = hash_range(&file, target, span.clone(), buf.as_mut())?;
            if got != r.sha256 {
                return Err(ImageError::BadInput {
                    path: target.into(),
                    reason: format!(
                        "verification failed: bytes {}..{} (blocks {}-{}) read back with sha256 {got}, expected {}; the card may be faulty",
                        span.start, span.end, r.first, r.last, r.sha256
                    ),
                });
            }
            done += span.end - span.start;
            progress(done);
        }
        Ok(())
    }
}

const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Bytes read or written at a time.
pub(crate) const CHUNK: usize = 4 << 20;

/// A [`CHUNK`]-sized buffer aligned to 4 KiB, as O_DIRECT wants it.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    offset: usize,
}

impl AlignedBuf {
    pub(crate) fn new() -> AlignedBuf {
        let raw = vec![0u8; CHUNK + BLOCK_SIZE as usize];
        let offset = raw.as_ptr().align_offset(BLOCK_SIZE as usize);
        AlignedBuf { raw, offset }
    }

    pub(crate) fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.offset..self.offset + CHUNK]
    }
}

pub(crate) fn open_for_reading(path: &Path, direct: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = File::options();
    o.read(true);
    if direct {
        o.custom_flags(nix::fcntl::OFlag::O_DIRECT.bits());
    }
    o.open(path).at(path, "opening target to verify")
}

/// SHA-256 of `span` of `file`, read with positioned reads in `buf`-sized pieces.
fn hash_range(file: &File, path: &Path, span: Range<u64>, buf: &mut [u8]) -> Result<String> {
    let mut h = Sha256::new();
    let mut pos = span.start;
    while pos < span.end {
        let n = ((span.end - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)
            .at(path, "reading mapped blocks")?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex(&h.finalize()))
}

fn mark(mapped: &mut [bool], bytes: &Range<u64>, value: bool) {
    if bytes.start >= bytes.end {
        return;
    }
    let first = (bytes.start / BLOCK_SIZE) as usize;
    let last = (bytes.end.div_ceil(BLOCK_SIZE) as usize).min(mapped.len());
    for m in &mut mapped[first.min(last)..last] {
        *m = value;
    }
}

/// The free byte ranges (in image offsets) of the filesystem on `part`, or `None` when it is not one we read.
fn free_ranges(path: &Path, part: &Partition) -> Result<Option<Vec<Range<u64>>>> {
    if ext4::has_superblock(path, part)? {
        return ext4::free_ranges(path, part).map(Some);
    }
    if part.is_fat_type() {
        return fat::free_ranges(path, part);
    }
    Ok(None)
}

/// Drop `<!-- … -->` comments (bmaptool's files are full of them).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        match rest[i..].find("-->") {
            Some(j) => rest = &rest[i + j + 3..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Read `len` bytes of a stream into nothing (skipping unmapped parts of a compressed image).
pub(crate) fn skip(reader: &mut dyn Read, len: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut reader.take(len), &mut std::io::sink())?;
    if copied < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BlockMap {
        BlockMap {
            image_size: 10 * 4096 + 512,
            block_size: 4096,
            ranges: vec![
                MappedRange {
                    first: 0,
                    last: 0,
                    sha256: "a".repeat(64),
                },
                MappedRange {
                    first: 3,
                    last: 10,
                    sha256: "b".repeat(64),
                },
            ],
        }
    }

    #[test]
    fn a_map_reads_back_from_its_bmap_file() {
        let m = sample();
        let text = m.to_bmap();
        assert!(text.contains("<Range chksum=\"aaaa"), "{text}");
        assert!(text.contains("> 3-10 </Range>"), "{text}");
        assert!(!text.contains(ZEROS), "the file checksum is filled in");
        assert_eq!(BlockMap::parse_bmap(&text, Path::new("x.bmap")).unwrap(), m);
        assert_eq!(m.mapped_bytes(), 4096 + 7 * 4096 + 512);
    }

    #[test]
    fn a_damaged_or_foreign_bmap_file_is_refused() {
        let text = sample().to_bmap();
        let e = BlockMap::parse_bmap(&text.replace("3-10", "3-9"), Path::new("x.bmap"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.bmap") && e.contains("damaged"), "{e}");
        let e = BlockMap::parse_bmap("<html></html>", Path::new("x.bmap"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a bmap file"), "{e}");
        let e = BlockMap::parse_bmap(
            &text.replace("version=\"2.0\"", "version=\"1.4\""),
            Path::new("x.bmap"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("1.4"), "{e}");
    }

    #[test]
    fn comments_are_not_read_as_fields() {
        assert_eq!(strip_comments("a<!-- <ImageSize> 1 -->b<!--x"), "ab");
    }
}
