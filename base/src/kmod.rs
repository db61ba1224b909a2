//! The kernel's own module metadata in a root tree (`usr/lib/modules/<version>/`): which module claims a device
//! (`modules.alias`), which drivers are built in (`modules.builtin`, and their aliases in
//! `modules.builtin.modinfo`), where each module lives (`modules.dep`); and which modules an initramfs carries.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A module name as the kernel compares them: `-` and `_` are the same.
pub fn module_name(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a `.ko` path (`kernel/drivers/mmc/host/sdhci-iproc.ko.xz` → `sdhci_iproc`).
pub fn module_of_path(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next()?;
    (file.contains(".ko") && !stem.is_empty()).then(|| module_name(stem))
}

/// What the kernel knows about its modules.
#[derive(Debug, Default)]
pub struct Modules {
    /// `(pattern, module)` from `modules.alias`.
    aliases: Vec<(String, String)>,
    /// `(pattern, module)` of built-in drivers, from `modules.builtin.modinfo`.
    builtin_aliases: Vec<(String, String)>,
    /// Built-in module names, from `modules.builtin`.
    builtin: BTreeSet<String>,
    /// Module name → its path under the module directory, built in or not.
    paths: BTreeMap<String, String>,
}

/// A driver that claims a device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Driver {
    pub module: String,
    pub builtin: bool,
    /// Where it lives in the kernel tree (`kernel/drivers/mmc/host/sdhci-iproc.ko.xz`); empty if unknown.
    pub path: String,
}

impl Modules {
    /// Read `modules.alias`, `modules.builtin`, `modules.builtin.modinfo` and `modules.dep` from `dir`.
    pub fn load(dir: &Path) -> Result<Modules> {
        let read = |name: &str| -> Result<Vec<u8>> {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let text = |name: &str| -> Result<String> {
            Ok(String::from_utf8_lossy(&read(name)?).into_owned())
        };
        Ok(Modules::from_files(
            &text("modules.alias")?,
            &text("modules.builtin")?,
            &read("modules.builtin.modinfo")?,
            &text("modules.dep")?,
        ))
    }

    pub fn from_files(alias: &str, builtin: &str, builtin_modinfo: &[u8], dep: &str) -> Modules {
        let aliases = alias
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("alias")).then_some(())?;
                Some((w.next()?.to_string(), module_name(w.next()?)))
            })
            .collect();
        let mut paths = BTreeMap::new();
        let mut builtin_set = BTreeSet::new();
        for line in builtin.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(m) = module_of_path(line) {
                builtin_set.insert(m.clone());
                paths.insert(m, line.to_string());
            }
        }
        for line in dep.lines() {
            let path = line.split(':').next().unwrap_or("").trim();
            if let Some(m) = module_of_path(path) {
                paths.insert(m, path.to_string());
            }
        }
        let builtin_aliases = builtin_modinfo
            .split(|b| *b == 0)
            .filter_map(|rec| {
                let rec = std::str::from_utf8(rec).ok()?;
                // `module.key=value`: the module name ends at the first dot.
                let (module, field) = rec.split_once('.')?;
                let value = field.strip_prefix("alias=")?;
                Some((value.to_string(), module_name(module)))
            })
            .collect();
        Modules {
            aliases,
            builtin_aliases,
            builtin: builtin_set,
            paths,
        }
    }

    /// Every driver whose alias matches `modalias`, built-in ones first.
    pub fn drivers(&self, modalias: &str) -> Vec<Driver> {
        let mut found: BTreeMap<&str, bool> = BTreeMap::new();
        for (list, builtin) in [(&self.builtin_aliases, true), (&self.aliases, false)] {
            for (pattern, module) in list {
                if alias_matches(pattern, modalias) {
                    *found.entry(module).or_default() |= builtin || self.builtin.contains(module);
                }
            }
        }
        let mut out: Vec<Driver> = found
            .into_iter()
            .map(|(module, builtin)| Driver {
                module: module.to_string(),
                builtin,
                path: self.paths.get(module).cloned().unwrap_or_default(),
            })
            .collect();
        out.sort_by_key(|d| !d.builtin);
        out
    }

    pub fn is_builtin(&self, module: &str) -> bool {
        self.builtin.contains(&module_name(module))
    }
}

/// The modalias the kernel gives a device-tree node (`of:N<name>T<type>C<compatible>…`, the type `(null)` when
/// the node has no `device_type`; see `of_modalias()`), or for a USB device named by its IDs (`usbVVVV,PPPP`) the start of its USB modalias.
pub fn modalias(node_name: &str, device_type: Option<&str>, compatible: &[&str]) -> String {
    if let Some(usb) = compatible.first().and_then(|c| usb_ids(c)) {
        return usb;
    }
    let name = node_name.split('@').next().unwrap_or(node_name);
    let mut s = format!("of:N{name}T{}", device_type.unwrap_or("(null)"));
    for c in compatible {
        s.push('C');
        s.push_str(c);
    }
    s
}

/// `usb424,ec00` → `usb:v0424pEC00d`: a USB device in the tree, which its driver claims by vendor and product.
fn usb_ids(compatible: &str) -> Option<String> {
    let ids = compatible.strip_prefix("usb")?;
    let (v, p) = ids.split_once(',')?;
    let hex = |s: &str| u16::from_str_radix(s, 16).ok();
    Some(format!("usb:v{:04X}p{:04X}d", hex(v)?, hex(p)?))
}

/// Does an alias pattern match? A USB modalias start (ending in `d`) matches patterns that begin with it.
fn alias_matches(pattern: &str, modalias: &str) -> bool {
    if modalias.starts_with("usb:") && modalias.ends_with('d') {
        return pattern.starts_with(modalias);
    }
    glob(pattern.as_bytes(), modalias.as_bytes())
}

/// fnmatch as modprobe uses it: `*`, `?` and `[…]` (with ranges).
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&p[pi..], s[si]) {
                        if ok {
                            pi += next;
                            si += 1;
                            continue;
                        }
                    }
                }
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// A `[…]` class at the start of `p`: whether `c` is in it, and the class's length.
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let end = p.iter().skip(1).position(|b| *b == b']')? + 1;
    let body = &p[1..end];
    let (negate, body) = match body.first() {
        Some(b'!') | Some(b'^') => (true, &body[1..]),
        _ => (false, body),
    };
    let mut found = false;
    let mut i = 0;
    while i < body.len() {
        if i + 2 < body.len() && body[i + 1] == b'-' {
            found |= (body[i]..=body[i + 2]).contains(&c);
            i += 3;
        } else {
            found |= body[i] == c;
            i += 1;
        }
    }
    Some((found != negate, end + 1))
}

/// The kernel image itself, decompressed: the compatible strings of drivers built in without a module alias
/// are in it (their match tables hold each string NUL-terminated).
pub struct KernelImage {
    /// Every NUL-delimited run of printable bytes in the image.
    strings: BTreeSet<Vec<u8>>,
}

impl KernelImage {
    /// Read `vmlinuz`: an arm64 `Image` as it is, or a compressed kernel (armhf `zImage`) from the first gzip or
    /// xz stream inside it.
    pub fn load(path: &Path) -> Result<KernelImage> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let bytes = Self::unpack(data).with_context(|| format!("unpacking {}", path.display()))?;
        Ok(Self::from_bytes(&bytes))
    }

    fn unpack(data: Vec<u8>) -> Result<Vec<u8>> {
        // arm64 Image: "ARMd" at 0x38.
        if data.get(0x38..0x3c) == Some(b"ARMd") {
            return Ok(data);
        }
        for (magic, xz) in [
            (&[0x1f, 0x8b, 0x08][..], false),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], true),
        ] {
            let mut from = 0;
            while let Some(at) = data[from..].windows(magic.len()).position(|w| w == magic) {
                let stream = &data[from + at..];
                let mut out = Vec::new();
                let read = if xz {
                    liblzma::read::XzDecoder::new(stream).read_to_end(&mut out)
                } else {
                    flate2::read::GzDecoder::new(stream).read_to_end(&mut out)
                };
                // A kernel is megabytes; a false magic inside the decompressor stub yields an error or crumbs.
                if out.len() > 1 << 20 && (read.is_ok() || out.len() > 4 << 20) {
                    return Ok(out);
                }
                from += at + 1;
            }
        }
        bail!("neither an arm64 Image nor a kernel with a gzip or xz payload")
    }

    /// Does the kernel name this compatible string?
    pub fn names(&self, compatible: &str) -> bool {
        self.strings.contains(compatible.as_bytes())
    }

    pub fn from_bytes(bytes: &[u8]) -> KernelImage {
        let strings = bytes
            .split(|b| *b == 0)
            .filter(|s| (3..=128).contains(&s.len()) && s.iter().all(|b| b.is_ascii_graphic()))
            .map(<[u8]>::to_vec)
            .collect();
        KernelImage { strings }
    }
}

/// The modules an initramfs carries (names as the kernel compares them). Reads Debian's layout: one or more cpio
/// (newc) archives, each plain or compressed with zstd, xz or gzip.
pub fn initramfs_modules(path: &Path) -> Result<BTreeSet<String>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let files = cpio_names(&data).with_context(|| format!("listing {}", path.display()))?;
    Ok(files.iter().filter_map(|f| module_of_path(f)).collect())
}

fn cpio_names(mut data: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    loop {
        while data.first() == Some(&0) {
            data = &data[1..];
        }
        if data.is_empty() {
            return Ok(names);
        }
        if data.starts_with(b"070701") || data.starts_with(b"070702") {
            data = read_newc(data, &mut names)?;
            continue;
        }
        let mut unpacked = Vec::new();
        if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd::stream::read::Decoder::new(data)?.read_to_end(&mut unpacked)?;
        } else if data.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            liblzma::read::XzDecoder::new_multi_decoder(data).read_to_end(&mut unpacked)?;
        } else {
            bail!(
                "neither a cpio archive nor zstd/xz data at this point (starts {:02x?}); gzip initramfs images \
                 are not read here",
                &data[..data.len().min(6)]
            );
        }
        // A compressed archive runs to the end of the file.
        names.extend(cpio_names(&unpacked)?);
        return Ok(names);
    }
}

/// One newc archive: its file names; returns what follows its trailer.
fn read_newc<'a>(mut data: &'a [u8], names: &mut Vec<String>) -> Result<&'a [u8]> {
    let hex =
        |b: &[u8]| -> Result<usize> { Ok(usize::from_str_radix(std::str::from_utf8(b)?, 16)?) };
    let pad = |n: usize| (4 - n % 4) % 4;
    loop {
        if data.len() < 110 {
            bail!("cpio archive cut short");
        }
        let file_size = hex(&data[54..62])?;
        let name_size = hex(&data[94..102])?;
        if name_size == 0 {
            bail!("cpio entry without a name");
        }
        let name_end = 110 + name_size;
        if data.len() < name_end {
            bail!("cpio archive cut short in a file name");
        }
        let name = String::from_utf8_lossy(&data[110..name_end - 1]).into_owned();
        let body = name_end + pad(name_end);
        let next = body + file_size + pad(file_size);
        if data.len() < body + file_size {
            bail!("cpio archive cut short in {name}");
        }
        data = &data[next.min(data.len())..];
        if name == "TRAILER!!!" {
            return Ok(data);
        }
        names.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_as_modprobe_does() {
        assert!(glob(
            b"of:N*T*Cbrcm,bcm2711-emmc2C*",
            b"of:NmmcT(null)Cbrcm,bcm2711-emmc2Cfoo"
        ));
        assert!(glob(
            b"of:N*T*Cbrcm,bcm2711-emmc2",
            b"of:NmmcT(null)Cbrcm,bcm2711-emmc2"
        ));
        assert!(!glob(
            b"of:N*T*Cbrcm,bcm2711-emmc2",
            b"of:NmmcT(null)Cbrcm,bcm2711-emmc2x"
        ));
        assert!(glob(b"usb:v0424pEC00d0[0-1]*", b"usb:v0424pEC00d01ab"));
        assert!(!glob(b"usb:v0424pEC00d0[0-1]*", b"usb:v0424pEC00d02ab"));
        assert!(glob(b"a?c", b"abc"));
    }

    #[test]
    fn modaliases_of_tree_nodes_and_usb_devices() {
        assert_eq!(
            modalias("mmc@7e340000", None, &["brcm,bcm2711-emmc2"]),
            "of:NmmcT(null)Cbrcm,bcm2711-emmc2"
        );
        assert_eq!(
            modalias("ethernet@1", None, &["usb424,ec00"]),
            "usb:v0424pEC00d"
        );
    }

    fn fixture() -> Modules {
        Modules::from_files(
            "# Aliases extracted from modules themselves.\n\
             alias of:N*T*Cbrcm,bcm2711-emmc2C* sdhci_iproc\n\
             alias of:N*T*Cbrcm,bcm2711-emmc2 sdhci_iproc\n\
             alias of:N*T*Cregulator-fixedC* reg_fixed_voltage\n\
             alias of:N*T*Cregulator-fixed reg_fixed_voltage\n\
             alias usb:v0424pEC00d*dc*dsc*dp*ic*isc*ip*in* smsc95xx\n",
            "kernel/drivers/mmc/core/mmc_core.ko\n",
            b"mmc_core.file=drivers/mmc/core/mmc_core\0reg_fixed_voltage.alias=of:N*T*Cregulator-fixed\0",
            "kernel/drivers/mmc/host/sdhci-iproc.ko.xz: kernel/drivers/mmc/host/sdhci-pltfm.ko.xz\n\
             kernel/drivers/net/usb/smsc95xx.ko.xz: kernel/drivers/net/usb/usbnet.ko.xz\n",
        )
    }

    #[test]
    fn drivers_come_from_the_aliases_built_in_or_not() {
        let m = fixture();
        let sd = m.drivers("of:NmmcT(null)Cbrcm,bcm2711-emmc2");
        assert_eq!(
            sd,
            [Driver {
                module: "sdhci_iproc".into(),
                builtin: false,
                path: "kernel/drivers/mmc/host/sdhci-iproc.ko.xz".into()
            }]
        );
        let reg = m.drivers("of:Nsd_vcc_regT(null)Cregulator-fixed");
        assert!(reg.iter().all(|d| d.builtin), "{reg:?}");
        assert_eq!(m.drivers("usb:v0424pEC00d")[0].module, "smsc95xx");
        assert!(m.drivers("of:NxT(null)Cnothing,claims-this").is_empty());
        assert!(m.is_builtin("mmc-core"));
    }

    fn newc(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for name in names.iter().chain(["TRAILER!!!"].iter()) {
            let body = b"x";
            let header = format!(
                "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
                0, 0o100644, 0, 0, 1, 0, body.len(), 0, 0, 0, 0, name.len() + 1, 0
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
            out.extend_from_slice(body);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        out
    }

    #[test]
    fn initramfs_modules_from_a_plain_and_a_zstd_archive() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = newc(&["kernel/x86/microcode/AuthenticAMD.bin"]);
        let inner = newc(&[
            "usr/lib/modules/6.12.0-1-arm64/kernel/drivers/mmc/host/sdhci-iproc.ko.xz",
            "usr/lib/modules/6.12.0-1-arm64/modules.dep",
            "usr/bin/busybox",
        ]);
        data.extend(zstd::encode_all(&inner[..], 3).unwrap());
        let path = dir.path().join("initrd.img");
        std::fs::write(&path, data).unwrap();
        let got = initramfs_modules(&path).unwrap();
        assert_eq!(got.into_iter().collect::<Vec<_>>(), ["sdhci_iproc"]);

        std::fs::write(&path, b"\x1f\x8b\x08 gzip").unwrap();
        let err = format!("{:#}", initramfs_modules(&path).unwrap_err());
        assert!(err.contains("gzip"), "{err}");
    }
}
