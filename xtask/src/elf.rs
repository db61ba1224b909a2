//! Just enough ELF to check a built binary: machine type, static or dynamic, the glibc version it needs.

use anyhow::{bail, Context, Result};
use std::path::Path;

pub const EM_ARM: u16 = 40;
pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
const PT_INTERP: u32 = 3;

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
}

pub fn machine_name(machine: u16) -> &'static str {
    match machine {
        EM_ARM => "ARM",
        EM_X86_64 => "x86-64",
        EM_AARCH64 => "AArch64",
        _ => "unknown machine",
    }
}

/// Read `path` and check it is an executable for `arch`.
pub fn require_machine(path: &Path, arch: crate::arch::Arch) -> Result<ElfInfo> {
    let info = read(path)?;
    if info.machine != arch.elf_machine() {
        bail!(
            "{} is built for {} but {arch} needs {}",
            path.display(),
            info.machine_name(),
            machine_name(arch.elf_machine())
        );
    }
    Ok(info)
}

pub fn read(path: &Path) -> Result<ElfInfo> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&data).with_context(|| format!("parsing ELF header of {}", path.display()))
}

/// Parse a little-endian ELF image (all our targets are little-endian).
pub fn parse(d: &[u8]) -> Result<ElfInfo> {
    if d.len() < 52 || &d[..4] != b"\x7fELF" {
        bail!("not an ELF file");
    }
    if d[5] != 1 {
        bail!("big-endian ELF is not a cluster-lab target");
    }
    let u16_at = |o: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            d.get(o..o + 2).context("truncated ELF")?.try_into()?,
        ))
    };
    let u32_at = |o: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            d.get(o..o + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    let u64_at = |o: usize| -> Result<u64> {
        Ok(u64::from_le_bytes(
            d.get(o..o + 8).context("truncated ELF")?.try_into()?,
        ))
    };
    let bits = match d[4] {
        1 => 32,
        2 => 64,
        c => bail!("unknown ELF class {c}"),
    };
    let machine = u16_at(18)?;
    // Program headers: offset, entry size and count sit at class-dependent places.
    let (phoff, phentsize, phnum) = if bits == 64 {
        (
            u64_at(32)? as usize,
            u16_at(54)? as usize,
            u16_at(56)? as usize,
        )
    } else {
        (
            u32_at(28)? as usize,
            u16_at(42)? as usize,
            u16_at(44)? as usize,
        )
    };
    let mut interpreter = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let (off, size) = if bits == 64 {
            (u64_at(ph + 8)? as usize, u64_at(ph + 32)? as usize)
        } else {
            (u32_at(ph + 4)? as usize, u32_at(ph + 16)? as usize)
        };
        let raw = d
            .get(off..off + size)
            .context("interpreter outside the file")?;
        interpreter = Some(
            String::from_utf8_lossy(raw)
                .trim_end_matches('\0')
                .to_string(),
        );
    }
    Ok(ElfInfo {
        machine,
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
mod tests {
    use super::*;

    /// A minimal 64-bit ELF header with one PT_INTERP program header.
    fn elf64(machine: u16, interp: Option<&str>) -> Vec<u8> {
        let mut d = vec![0u8; 64 + 56];
        d[..4].copy_from_slice(b"\x7fELF");
        d[4] = 2;
        d[5] = 1;
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
