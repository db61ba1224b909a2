//! The FAT boot partition, read and written through fatfs inside the image file (no mount, no root).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fscommon::StreamSlice;

use crate::command;
use crate::error::{ImageError, IoContext, Result};
use crate::mbr::Partition;

type Disk = StreamSlice<File>;
type Fs = fatfs::FileSystem<Disk>;

/// Smallest partition that can hold FAT32 (65525 clusters of 512 bytes, plus the FATs).
pub const MIN_FAT32_SIZE: u64 = 36 << 20;

fn fat_error(path: &Path, part: &Partition, reason: impl Into<String>) -> ImageError {
    ImageError::Fat {
        path: path.into(),
        index: part.index,
        reason: reason.into(),
    }
}

fn slice(path: &Path, part: &Partition, write: bool) -> Result<Disk> {
    let f = File::options()
        .read(true)
        .write(write)
        .open(path)
        .at(path, "opening image")?;
    let s = StreamSlice::new(f, part.start, part.end()).at(path, "seeking to the FAT partition")?;
    Ok(s)
}

/// Create a FAT32 filesystem labelled `label` filling `part`, holding a copy of `src_dir`.
///
/// Built with `mkfs.vfat --offset` and `mcopy -s` (mtools) on the image file: fatfs 0.3 writes
/// subdirectories that `fsck.vfat` rejects (long-name entries for `.`/`..`, and `..` pointing at the
/// FAT32 root cluster instead of 0), so trees go through dosfstools/mtools; single-file edits of an
/// existing filesystem go through fatfs ([`FatVolume`]).
pub fn make_from_dir(path: &Path, part: &Partition, src_dir: &Path, label: &str) -> Result<()> {
    if part.size < MIN_FAT32_SIZE {
        return Err(fat_error(
            path,
            part,
            format!(
                "{} MiB is too small for FAT32 (at least {} MiB)",
                part.size >> 20,
                MIN_FAT32_SIZE >> 20
            ),
        ));
    }
    let label = String::from_utf8_lossy(&fat_label(label)?)
        .trim_end()
        .to_string();
    // mkfs.vfat's own cluster size choice leaves e.g. a 256 MiB FAT32 just under 65525 clusters, which
    // mtools (and some firmware) then take for FAT16: pick the largest cluster (up to 4 KiB) that keeps
    // a comfortable margin.
    let sectors_per_cluster = [8u64, 4, 2, 1]
        .into_iter()
        .find(|spc| part.size / (spc * 512) >= 70_000)
        .unwrap_or(1);
    let args: Vec<OsString> = vec![
        "-F".into(),
        "32".into(),
        "-S".into(),
        "512".into(),
        "-s".into(),
        sectors_per_cluster.to_string().into(),
        "-n".into(),
        label.into(),
        format!("--offset={}", part.start / 512).into(),
        path.into(),
        (part.size / 1024).to_string().into(),
    ];
    command::run("mkfs.vfat", &args)?;

    let mut entries: Vec<PathBuf> = std::fs::read_dir(src_dir)
        .at(src_dir, "listing boot directory")?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .at(src_dir, "listing boot directory")?;
    if entries.is_empty() {
        return Ok(());
    }
    entries.sort();
    let mut image = path.as_os_str().to_owned();
    image.push(format!("@@{}", part.start));
    let mut args: Vec<OsString> = vec!["-s".into(), "-m".into(), "-Q".into(), "-i".into(), image];
    args.extend(entries.into_iter().map(OsString::from));
    args.push("::/".into());
    command::run("mcopy", &args)?;
    Ok(())
}

/// An 11-byte FAT volume label.
pub fn fat_label(label: &str) -> Result<[u8; 11]> {
    let up = label.to_ascii_uppercase();
    if up.is_empty()
        || up.len() > 11
        || !up
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ImageError::Invalid(format!(
            "FAT label {label:?}: use 1 to 11 characters among A-Z, 0-9, '_' and '-'"
        )));
    }
    let mut out = [b' '; 11];
    out[..up.len()].copy_from_slice(up.as_bytes());
    Ok(out)
}

/// An open FAT filesystem inside an image file.
pub struct FatVolume<'p> {
    path: &'p Path,
    part: Partition,
    fs: Fs,
}

impl<'p> FatVolume<'p> {
    /// Open the FAT filesystem of `part`; fails with a clear message when it is not FAT.
    pub fn open(path: &'p Path, part: &Partition, write: bool) -> Result<Self> {
        let disk = slice(path, part, write)?;
        let fs = fatfs::FileSystem::new(disk, fatfs::FsOptions::new())
            .map_err(|e| fat_error(path, part, format!("FAT unreadable: {e}")))?;
        Ok(FatVolume {
            path,
            part: *part,
            fs,
        })
    }

    fn err(&self, reason: String) -> ImageError {
        fat_error(self.path, &self.part, reason)
    }

    /// The volume label from the boot sector, trimmed.
    pub fn label(&self) -> String {
        self.fs.volume_label().trim_end().to_string()
    }

    pub fn fat_type(&self) -> fatfs::FatType {
        self.fs.fat_type()
    }

    /// Read a file (path relative to the partition root, `/`-separated); `None` when absent.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let mut file = match self.fs.root_dir().open_file(name) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.err(format!("opening {name}: {e}"))),
        };
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(|e| self.err(format!("reading {name}: {e}")))?;
        Ok(Some(data))
    }

    /// Create or replace a file; its directory must exist (fatfs 0.3 creates subdirectories that
    /// fsck.vfat rejects, so this never creates one).
    pub fn write(&self, name: &str, data: &[u8]) -> Result<()> {
        let name = name.trim_start_matches('/');
        let mut file = self
            .fs
            .root_dir()
            .create_file(name)
            .map_err(|e| self.err(format!("creating {name}: {e}")))?;
        file.truncate()
            .map_err(|e| self.err(format!("truncating {name}: {e}")))?;
        file.write_all(data)
            .map_err(|e| self.err(format!("writing {name}: {e}")))?;
        file.flush()
            .map_err(|e| self.err(format!("writing {name}: {e}")))?;
        Ok(())
    }

    /// Flush and close, reporting write errors (dropping would hide them).
    pub fn close(self) -> Result<()> {
        let path = self.path;
        let part = self.part;
        // Recount free clusters so the FSInfo sector is accurate (fsck.vfat checks it).
        self.fs
            .stats()
            .map_err(|e| fat_error(path, &part, format!("counting free clusters: {e}")))?;
        self.fs
            .unmount()
            .map_err(|e| fat_error(path, &part, format!("flushing: {e}")))
    }
}

/// Check the FAT partition with `fsck.vfat -n` (read-only) on a copy of the partition.
pub fn check(path: &Path, part: &Partition) -> Result<()> {
    let tmp = tempfile::Builder::new()
        .prefix("cluster-lab-fat-")
        .tempfile()
        .at(Path::new("/tmp"), "creating temporary file")?;
    let mut src = File::open(path).at(path, "opening image")?;
    src.seek(SeekFrom::Start(part.start))
        .at(path, "seeking to the FAT partition")?;
    let mut dst = tmp.as_file();
    std::io::copy(&mut src.take(part.size), &mut dst).at(tmp.path(), "copying FAT partition")?;
    command::run(
        "fsck.vfat",
        &[std::ffi::OsStr::new("-n"), tmp.path().as_os_str()],
    )?;
    Ok(())
}

/// The clusters the FAT16/FAT32 filesystem does not use (and the slack after its last cluster), as byte ranges
/// in the image, read from its first allocation table. `None` for FAT12 or an unreadable boot sector.
pub fn free_ranges(path: &Path, part: &Partition) -> Result<Option<Vec<std::ops::Range<u64>>>> {
    let file = File::open(path).at(path, "opening image")?;
    let mut bs = [0u8; 512];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut bs, part.start)
        .at(path, "reading the FAT boot sector")?;
    let u16_at = |o: usize| u16::from_le_bytes([bs[o], bs[o + 1]]) as u64;
    let u32_at = |o: usize| u32::from_le_bytes([bs[o], bs[o + 1], bs[o + 2], bs[o + 3]]) as u64;
    let bytes_per_sector = u16_at(11);
    let per_cluster = bs[13] as u64;
    let reserved = u16_at(14);
    let fats = bs[16] as u64;
    let root_entries = u16_at(17);
    let total = if u16_at(19) != 0 {
        u16_at(19)
    } else {
        u32_at(32)
    };
    let fat_sectors = if u16_at(22) != 0 {
        u16_at(22)
    } else {
        u32_at(36)
    };
    if ![512, 1024, 2048, 4096].contains(&bytes_per_sector) || per_cluster == 0 || fats == 0 {
        return Ok(None);
    }
    let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
    let first_data = reserved + fats * fat_sectors + root_sectors;
    if total <= first_data || (total * bytes_per_sector) > part.size {
        return Ok(None);
    }
    let clusters = (total - first_data) / per_cluster;
    // The boot sector says which FAT it is: FAT32 has no 16-bit table size (and no fixed root directory). Going by
    // the cluster count alone would read a small FAT32 (mkfs.vfat makes them under 65525 clusters) as FAT16 and
    // take every other cluster of a file for free. When the two disagree, or the table is too small for the count,
    // the volume is not mapped (its data extents are written instead).
    let entry = match (u16_at(22) == 0, clusters) {
        (_, 0..4085) => return Ok(None),
        (true, _) => 4,
        (false, 4085..65525) => 2,
        (false, _) => return Ok(None),
    };
    if (clusters + 2) * entry > fat_sectors * bytes_per_sector {
        return Ok(None);
    }
    let mut table = vec![0u8; ((clusters + 2) * entry) as usize];
    std::os::unix::fs::FileExt::read_exact_at(
        &file,
        &mut table,
        part.start + reserved * bytes_per_sector,
    )
    .at(path, "reading the FAT allocation table")?;
    let cluster_bytes = per_cluster * bytes_per_sector;
    let data_start = part.start + first_data * bytes_per_sector;
    let mut free: Vec<std::ops::Range<u64>> = Vec::new();
    for c in 2..clusters + 2 {
        let o = (c * entry) as usize;
        let value = if entry == 2 {
            u16::from_le_bytes([table[o], table[o + 1]]) as u64
        } else {
            u32::from_le_bytes([table[o], table[o + 1], table[o + 2], table[o + 3]]) as u64
                & 0x0fff_ffff
        };
        if value != 0 {
            continue;
        }
        let start = data_start + (c - 2) * cluster_bytes;
        match free.last_mut() {
            Some(last) if last.end == start => last.end += cluster_bytes,
            _ => free.push(start..start + cluster_bytes),
        }
    }
    let slack = data_start + clusters * cluster_bytes;
    if slack < part.end() {
        free.push(slack..part.end());
    }
    Ok(Some(free))
}
