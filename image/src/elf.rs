//! Just enough of a binary's ELF headers to check it before it goes into an image: its machine, whether it needs
//! a dynamic loader (and which), and the newest glibc symbol version it references. Parsed with the `object`
//! crate; every cluster-lab target is little-endian.

use std::path::{Path, PathBuf};

use object::elf::{FileHeader32, FileHeader64, PT_INTERP};
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian;

use crate::arch::Arch;

pub use object::elf::{EM_386, EM_AARCH64, EM_ARM, EM_X86_64};

/// Why a file is not a binary we can use.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("{path} is built for {found} but {arch} needs {want}")]
    WrongMachine {
        path: PathBuf,
        found: &'static str,
        arch: Arch,
        want: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub machine: u16,
    pub bits: u8,
    /// The program interpreter (dynamic loader); `None` for a static binary.
    pub interpreter: Option<String>,
    /// Highest `GLIBC_x.y` symbol version referenced, e.g. `(2, 34)`.
    pub glibc_floor: Option<(u32, u32)>,
}

impl ElfInfo {
    pub fn machine_name(&self) -> &'static str {
        machine_name(self.machine)
    }

    /// Needs a dynamic loader (has a `PT_INTERP` program header).
    pub fn is_dynamic(&self) -> bool {
        self.interpreter.is_some()
    }
}

pub fn machine_name(machine: u16) -> &'static str {
    match machine {
        EM_ARM => "ARM",
        EM_X86_64 => "x86-64",
        EM_AARCH64 => "AArch64",
        EM_386 => "i386",
        _ => "unknown machine",
    }
}

/// Read `path` and check it is an executable for `arch`.
pub fn require_machine(path: &Path, arch: Arch) -> Result<ElfInfo, ElfError> {
    let info = read(path)?;
    if info.machine != arch.elf_machine() {
        return Err(ElfError::WrongMachine {
            path: path.to_path_buf(),
            found: info.machine_name(),
            arch,
            want: machine_name(arch.elf_machine()),
        });
    }
    Ok(info)
}

pub fn read(path: &Path) -> Result<ElfInfo, ElfError> {
    let data = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&data).map_err(|reason| ElfError::Parse {
        path: path.to_path_buf(),
        reason: format!("parsing its ELF header: {reason}"),
    })
}

/// Parse a little-endian ELF image.
pub fn parse(d: &[u8]) -> Result<ElfInfo, String> {
    if d.len() < 16 || &d[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if d[5] != 1 {
        return Err("big-endian ELF is not a cluster-lab target".into());
    }
    match d[4] {
        1 => parse_as::<FileHeader32<LittleEndian>>(d, 32),
        2 => parse_as::<FileHeader64<LittleEndian>>(d, 64),
        c => Err(format!("unknown ELF class {c}")),
    }
}

fn parse_as<H: FileHeader<Endian = LittleEndian>>(d: &[u8], bits: u8) -> Result<ElfInfo, String> {
    let header = H::parse(d).map_err(|e| format!("truncated ELF: {e}"))?;
    let endian = LittleEndian;
    let mut interpreter = None;
    for ph in header
        .program_headers(endian, d)
        .map_err(|e| format!("program headers: {e}"))?
    {
        if ph.p_type(endian) != PT_INTERP {
            continue;
        }
        let raw = ph
            .data(endian, d)
            .map_err(|()| "interpreter outside the file".to_string())?;
        interpreter = Some(
            String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string(),
        );
    }
    Ok(ElfInfo {
        machine: header.e_machine(endian),
        bits,
        interpreter,
        glibc_floor: glibc_floor(d),
    })
}

/// The highest `GLIBC_x.y[.z]` version string in the file (symbol version requirements are stored as
/// such strings in `.dynstr`).
fn glibc_floor(d: &[u8]) -> Option<(u32, u32)> {
    let needle = b"GLIBC_";
    let mut best = None;
    let mut i = 0;
    while i + needle.len() < d.len() {
        if &d[i..i + needle.len()] == needle {
            let rest = &d[i + needle.len()..];
            let end = rest
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(rest.len())
                .min(16);
            if let Ok(s) = std::str::from_utf8(&rest[..end]) {
                let mut parts = s.split('.').map(|p| p.parse::<u32>());
                if let (Some(Ok(maj)), Some(Ok(min))) = (parts.next(), parts.next()) {
                    best = best.max(Some((maj, min)));
                }
            }
            i += needle.len();
        } else {
            i += 1;
        }
    }
    best
}
#[cfg(test)]
/// A minimal 64-bit ELF header with one PT_INTERP program header.
pub(crate) fn elf64(machine: u16, interp: Option<&str>) -> Vec<u8> {
    let mut d = vec![0u8; 64 + 56];
    d[..4].copy_from_slice(b"\x7fELF");
    d[4] = 2;
    d[5] = 1;
    d[6] = 1; // EI_VERSION: EV_CURRENT
    d[18..20].copy_from_slice(&machine.to_le_bytes());
    d[32..40].copy_from_slice(&64u64.to_le_bytes());
    d[54..56].copy_from_slice(&56u16.to_le_bytes());
    if let Some(i) = interp {
        d[56..58].copy_from_slice(&1u16.to_le_bytes());
        let off = d.len() as u64;
        d[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        d[64 + 8..64 + 16].copy_from_slice(&off.to_le_bytes());
        d[64 + 32..64 + 40].copy_from_slice(&(i.len() as u64 + 1).to_le_bytes());
        d.extend_from_slice(i.as_bytes());
        d.push(0);
        d.extend_from_slice(b"GLIBC_2.17\0GLIBC_2.34\0GLIBC_2.4\0");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_aarch64() {
        let e = parse(&elf64(EM_AARCH64, None)).unwrap();
        assert_eq!(e.machine, EM_AARCH64);
        assert_eq!(e.bits, 64);
        assert_eq!(e.interpreter, None);
        assert_eq!(e.glibc_floor, None);
    }

    #[test]
    fn dynamic_with_glibc_floor() {
        let e = parse(&elf64(EM_X86_64, Some("/lib64/ld-linux-x86-64.so.2"))).unwrap();
        assert_eq!(
            e.interpreter.as_deref(),
            Some("/lib64/ld-linux-x86-64.so.2")
        );
        assert_eq!(e.glibc_floor, Some((2, 34)));
    }

    #[test]
    fn rejects_non_elf() {
        assert!(
            parse(b"#!/bin/sh\necho not an elf file at all, long enough to pass the size").is_err()
        );
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn this_test_binary_is_host_elf() {
        let e = read(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(e.machine, EM_X86_64);
    }
}
