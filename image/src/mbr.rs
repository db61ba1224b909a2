//! The MBR partition table, read and written through mbrman.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use crate::error::{ImageError, IoContext, Result};

/// Sector size of every image we handle (SD cards and disk images use 512-byte sectors).
pub const SECTOR: u64 = 512;

/// MBR partition type bytes we write and recognise.
pub mod types {
    /// FAT32 with LBA addressing: what Raspberry Pi firmware expects on the boot partition.
    pub const FAT32_LBA: u8 = 0x0c;
    pub const FAT32_CHS: u8 = 0x0b;
    pub const FAT16_LBA: u8 = 0x0e;
    pub const FAT16: u8 = 0x06;
    pub const FAT16_SMALL: u8 = 0x04;
    pub const FAT12: u8 = 0x01;
    pub const EFI_SYSTEM: u8 = 0xef;
    pub const LINUX: u8 = 0x83;
    /// Protective MBR of a GPT disk.
    pub const GPT_PROTECTIVE: u8 = 0xee;
}

/// One used primary partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based, as in `/dev/sda1`.
    pub index: usize,
    /// MBR type byte.
    pub kind: u8,
    pub bootable: bool,
    /// Byte offset of the first sector.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Partition {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Whether the type byte says FAT (the content is checked separately).
    pub fn is_fat_type(&self) -> bool {
        use types::*;
        matches!(
            self.kind,
            FAT32_LBA | FAT32_CHS | FAT16_LBA | FAT16 | FAT16_SMALL | FAT12 | EFI_SYSTEM
        )
    }
}

impl std::fmt::Display for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} type 0x{:02x} at {} MiB, {} MiB",
            self.index,
            self.kind,
            self.start / (1 << 20),
            self.size / (1 << 20)
        )
    }
}

/// Read the used primary partitions of the image at `path`, checking that each lies inside the file.
pub fn read(path: &Path) -> Result<Vec<Partition>> {
    let mut f = File::open(path).at(path, "opening image")?;
    // Seek to the end rather than stat: block devices report a length of 0.
    let len = f.seek(SeekFrom::End(0)).at(path, "reading image size")?;
    f.seek(SeekFrom::Start(0)).at(path, "reading image")?;
    if len < SECTOR {
        return Err(ImageError::PartitionTable {
            path: path.into(),
            reason: format!("the file is {len} bytes, smaller than one 512-byte sector"),
        });
    }
    let mbr = mbrman::MBR::read_from(&mut f, SECTOR as u32).map_err(|e| {
        let reason = match e {
            mbrman::Error::InvalidSignature => {
                "no MBR signature (0x55AA) in the first sector".to_string()
            }
            other => format!("unreadable MBR partition table: {other}"),
        };
        ImageError::PartitionTable {
            path: path.into(),
            reason,
        }
    })?;
    let mut parts = Vec::new();
    for (index, p) in mbr.header.iter() {
        if p.is_unused() {
            continue;
        }
        if p.sys == types::GPT_PROTECTIVE {
            return Err(ImageError::PartitionTable {
                path: path.into(),
                reason: "GPT disk (protective MBR); only MBR images are supported".into(),
            });
        }
        let part = Partition {
            index,
            kind: p.sys,
            bootable: p.is_active(),
            start: u64::from(p.starting_lba) * SECTOR,
            size: u64::from(p.sectors) * SECTOR,
        };
        if part.end() > len {
            return Err(ImageError::PartitionBeyondEnd {
                path: path.into(),
                index,
                end: part.end(),
                len,
            });
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(ImageError::PartitionTable {
            path: path.into(),
            reason: "the MBR partition table is empty".into(),
        });
    }
    Ok(parts)
}

/// A partition to write into a fresh table.
#[derive(Debug, Clone, Copy)]
pub struct NewPartition {
    pub kind: u8,
    pub bootable: bool,
    /// Byte offset; a multiple of 512.
    pub start: u64,
    /// Byte length; a multiple of 512.
    pub size: u64,
}

/// Write a new MBR into the first sector of `path` with the given primary partitions (1..=4).
pub fn write(path: &Path, partitions: &[NewPartition], disk_signature: [u8; 4]) -> Result<()> {
    let invalid = |reason: String| ImageError::Invalid(format!("{}: {reason}", path.display()));
    if partitions.is_empty() || partitions.len() > 4 {
        return Err(invalid(format!(
            "an MBR holds 1 to 4 primary partitions, not {}",
            partitions.len()
        )));
    }
    let mut f = File::options()
        .read(true)
        .write(true)
        .open(path)
        .at(path, "opening image for the partition table")?;
    let mut mbr = mbrman::MBR::new_from(&mut f, SECTOR as u32, disk_signature)
        .map_err(|e| invalid(format!("creating partition table: {e}")))?;
    for (i, p) in partitions.iter().enumerate() {
        if p.start % SECTOR != 0 || p.size % SECTOR != 0 || p.start == 0 {
            return Err(invalid(format!(
                "partition {} is not sector-aligned or starts at 0",
                i + 1
            )));
        }
        let lba = |bytes: u64| {
            u32::try_from(bytes / SECTOR).map_err(|_| invalid("disk too large for MBR".into()))
        };
        mbr[i + 1] = mbrman::MBRPartitionEntry {
            boot: if p.bootable {
                mbrman::BOOT_ACTIVE
            } else {
                mbrman::BOOT_INACTIVE
            },
            first_chs: mbrman::CHS::empty(),
            sys: p.kind,
            last_chs: mbrman::CHS::empty(),
            starting_lba: lba(p.start)?,
            sectors: lba(p.size)?,
        };
    }
    mbr.write_into(&mut f)
        .map_err(|e| invalid(format!("writing partition table: {e}")))?;
    f.sync_all().at(path, "syncing partition table")?;
    Ok(())
}
