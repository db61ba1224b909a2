//! The container image preloaded into every cluster-lab image: Debian's static busybox in one layer, written as a
//! classic `docker save` archive (`manifest.json`, the config named by its sha256, `<layer>/layer.tar`). First boot
//! loads it into dockerd, so a first service runs without a registry:
//! `docker service create --name web -p 8080:80 cluster-lab/busybox busybox httpd -f -p 80 -h /www`.
//!
//! The archive is byte-for-byte reproducible: fixed modes, owners and mtimes, entries in a fixed order, and JSON
//! with sorted keys. Its architecture is read from the busybox binary itself, so it always matches what runs.

use std::path::Path;

use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use crate::arch::Arch;
use crate::disk;
use crate::error::{ImageError, Result};
use crate::ext4;

/// The image's name in dockerd.
pub const REPO_TAG: &str = "cluster-lab/busybox:latest";
/// Directory in the root filesystem holding archives first boot loads into dockerd.
pub const IMAGES_DIR: &str = "/usr/lib/cluster-lab/images";
/// The busybox archive's file name in [`IMAGES_DIR`].
pub const ARCHIVE_NAME: &str = "busybox.tar";
/// Where Debian's busybox-static installs the binary (trixie: /usr/bin; bookworm: /bin).
pub const BUSYBOX_PATHS: [&str; 2] = ["/usr/bin/busybox", "/bin/busybox"];
/// Applets linked to busybox in the layer.
pub const APPLETS: [&str; 3] = ["httpd", "sh", "wget"];

/// Modification time of every entry and the image's `created` date: 2024-01-01T00:00:00Z.
const MTIME: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";

/// An image platform in Docker's (Go's) names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// `amd64`, `arm64`, `arm`, `386`.
    pub architecture: &'static str,
    /// `v7` for Debian's armhf; none otherwise.
    pub variant: Option<&'static str>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "linux/{}", self.architecture)?;
        if let Some(v) = self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A built `docker save` archive.
#[derive(Debug, Clone)]
pub struct ContainerImage {
    /// The archive's bytes.
    pub archive: Vec<u8>,
    pub platform: Platform,
    /// `sha256:…` of the config JSON: the image id dockerd reports.
    pub image_id: String,
    /// `sha256:…` of the layer tar (its diff_id).
    pub diff_id: String,
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

fn tar_error(e: std::io::Error) -> ImageError {
    ImageError::Invalid(format!("writing the container image archive: {e}"))
}

fn add_file(b: &mut Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> Result<()> {
    let mut h = header(EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data).map_err(tar_error)
}

fn add_dir(b: &mut Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut h = header(EntryType::Directory, mode, 0);
    b.append_data(&mut h, path, std::io::empty())
        .map_err(tar_error)
}

/// One entry of an image layer. Paths are relative (`usr/bin/x`), owners numeric; every mtime is the same fixed
/// date, so a layer made twice from the same entries is the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerEntry {
    Dir {
        path: String,
        mode: u32,
        owner: u32,
    },
    File {
        path: String,
        mode: u32,
        owner: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
}

/// `h` owned by `owner` (user and group).
fn owned(mut h: Header, owner: u32) -> Header {
    h.set_uid(owner.into());
    h.set_gid(owner.into());
    h
}

/// A layer tar of `entries`, written in the order given (a directory before what it holds).
pub fn layer(entries: &[LayerEntry]) -> Result<Vec<u8>> {
    let mut b = Builder::new(Vec::new());
    for e in entries {
        match e {
            LayerEntry::Dir { path, mode, owner } => {
                let mut h = owned(header(EntryType::Directory, *mode, 0), *owner);
                b.append_data(&mut h, path, std::io::empty())
                    .map_err(tar_error)?;
            }
            LayerEntry::File {
                path,
                mode,
                owner,
                data,
            } => {
                let mut h = owned(header(EntryType::Regular, *mode, data.len() as u64), *owner);
                b.append_data(&mut h, path, data.as_slice())
                    .map_err(tar_error)?;
            }
            LayerEntry::Symlink { path, target } => {
                let mut h = header(EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, path, target).map_err(tar_error)?;
            }
        }
    }
    b.into_inner().map_err(tar_error)
}

/// The layer: `bin/busybox` (0755), `bin/{httpd,sh,wget}` → busybox, empty `etc/`, `tmp/` (1777) and `www/`.
fn layer_tar(busybox: &[u8]) -> Result<Vec<u8>> {
    let dir = |path: &str, mode| LayerEntry::Dir {
        path: path.into(),
        mode,
        owner: 0,
    };
    let mut entries = vec![
        dir("bin", 0o755),
        LayerEntry::File {
            path: "bin/busybox".into(),
            mode: 0o755,
            owner: 0,
            data: busybox.to_vec(),
        },
    ];
    for applet in APPLETS {
        entries.push(LayerEntry::Symlink {
            path: format!("bin/{applet}"),
            target: "busybox".into(),
        });
    }
    entries.extend([dir("etc", 0o755), dir("tmp", 0o1777), dir("www", 0o755)]);
    layer(&entries)
}

/// How a container of the image runs: what its config says besides the layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `uid[:gid]`; none: root.
    pub user: Option<String>,
    /// `9090/tcp`, …
    pub exposed_ports: Vec<String>,
}

/// The platform the program `what`, whose parsed ELF header is `elf`, runs as.
pub fn platform_of(elf: &crate::elf::ElfInfo, what: &str) -> Result<Platform> {
    Arch::from_elf_machine(elf.machine)
        .map(Arch::docker_platform)
        .ok_or_else(|| {
            ImageError::Invalid(format!(
                "{what} is built for ELF machine {}, which has no Docker platform here",
                elf.machine
            ))
        })
}

/// A one-layer `docker save` archive: the layer, its config (sorted keys) and the manifest naming `repo_tag`.
pub fn save_archive(
    repo_tag: &str,
    platform: Platform,
    layer: Vec<u8>,
    run: &RunConfig,
    created_by: &str,
) -> Result<ContainerImage> {
    let layer_hex = sha256_hex(&layer);
    let diff_id = format!("sha256:{layer_hex}");
    let mut exec = serde_json::json!({
        "Cmd": run.cmd,
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "WorkingDir": "/",
    });
    if !run.entrypoint.is_empty() {
        exec["Entrypoint"] = run.entrypoint.clone().into();
    }
    if let Some(user) = &run.user {
        exec["User"] = user.clone().into();
    }
    if !run.exposed_ports.is_empty() {
        exec["ExposedPorts"] = run
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), serde_json::json!({})))
            .collect::<serde_json::Map<_, _>>()
            .into();
    }
    let mut config = serde_json::json!({
        "architecture": platform.architecture,
        "os": "linux",
        "created": CREATED,
        "config": exec,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{
            "created": CREATED,
            "created_by": created_by,
        }],
    });
    if let Some(v) = platform.variant {
        config["variant"] = v.into();
    }
    let config = serde_json::to_vec(&config).expect("JSON values serialise");
    let config_hex = sha256_hex(&config);
    let config_name = format!("{config_hex}.json");
    let layer_name = format!("{layer_hex}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [repo_tag],
        "Layers": [layer_name],
    }]))
    .expect("JSON values serialise");

    let mut b = Builder::new(Vec::new());
    add_dir(&mut b, &layer_hex, 0o755)?;
    add_file(&mut b, &layer_name, 0o644, &layer)?;
    add_file(&mut b, &config_name, 0o644, &config)?;
    add_file(&mut b, "manifest.json", 0o644, &manifest)?;
    Ok(ContainerImage {
        archive: b.into_inner().map_err(tar_error)?,
        platform,
        image_id: format!("sha256:{config_hex}"),
        diff_id,
    })
}

/// Build the `docker save` archive of [`REPO_TAG`] around `busybox`, which must be a static binary (Debian's
/// busybox-static); the platform is read from its ELF header.
pub fn busybox_image(busybox: &[u8]) -> Result<ContainerImage> {
    let elf =
        crate::elf::parse(busybox).map_err(|e| ImageError::Invalid(format!("busybox: {e}")))?;
    if elf.is_dynamic() {
        return Err(ImageError::Invalid(
            "busybox is dynamically linked and cannot run alone in a container: use Debian's busybox-static"
                .into(),
        ));
    }
    let platform = platform_of(&elf, "busybox")?;
    save_archive(
        REPO_TAG,
        platform,
        layer_tar(busybox)?,
        &RunConfig {
            cmd: vec!["sh".into()],
            ..RunConfig::default()
        },
        "cluster-lab image builder: busybox-static from the base image, links sh httpd wget",
    )
}

/// What the root filesystem of a disk image holds at [`BUSYBOX_PATHS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundBusybox {
    /// A static binary at this path.
    Static {
        path: &'static str,
        binary: Vec<u8>,
    },
    /// Only a dynamically linked busybox (e.g. Debian's `busybox` package, not `busybox-static`).
    Dynamic {
        path: &'static str,
    },
    Missing,
}

/// Look for busybox in the ext4 root filesystem of the raw disk image at `image` (read with debugfs).
pub fn find_busybox(image: &Path) -> Result<FoundBusybox> {
    let located = disk::locate(image)?;
    let stats = ext4::stat_all(image, &located.root, &BUSYBOX_PATHS)?;
    for (path, stat) in BUSYBOX_PATHS.iter().zip(stats) {
        if stat.is_none_or(|s| s.kind != "regular") {
            continue;
        }
        let Some(binary) = ext4::read_file(image, &located.root, path)? else {
            continue;
        };
        let elf = crate::elf::parse(&binary).map_err(|e| ImageError::BadInput {
            path: image.into(),
            reason: format!("{path} in the root filesystem: {e}"),
        })?;
        return Ok(if elf.is_dynamic() {
            FoundBusybox::Dynamic { path }
        } else {
            FoundBusybox::Static { path, binary }
        });
    }
    Ok(FoundBusybox::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::{EM_386, EM_AARCH64, EM_ARM, EM_X86_64};
    use object::elf::PT_INTERP;
    use std::io::Read;

    /// A minimal static ELF64 header for `machine`: no program headers.
    fn fake_elf(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 128];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1; // EI_VERSION: EV_CURRENT
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b
    }

    /// Path, type, mode, link target and content of one archive entry.
    type Listed = (String, EntryType, u32, Option<String>, Vec<u8>);

    fn entries(tar_bytes: &[u8]) -> Vec<Listed> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let kind = e.header().entry_type();
                let mode = e.header().mode().unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (path, kind, mode, link, data)
            })
            .collect()
    }

    fn file<'a>(all: &'a [Listed], name: &str) -> &'a [u8] {
        &all.iter()
            .find(|e| e.0 == name)
            .unwrap_or_else(|| panic!("{name} missing from the archive"))
            .4
    }

    #[test]
    fn manifest_names_the_config_and_the_layer_and_diff_id_is_the_layer_hash() {
        let bin = fake_elf(EM_X86_64);
        let img = busybox_image(&bin).unwrap();
        let all = entries(&img.archive);
        let manifest: serde_json::Value =
            serde_json::from_slice(file(&all, "manifest.json")).unwrap();
        let m = &manifest[0];
        assert_eq!(m["RepoTags"], serde_json::json!([REPO_TAG]));
        let config_name = m["Config"].as_str().unwrap();
        let layer_name = m["Layers"][0].as_str().unwrap();
        assert_eq!(m["Layers"].as_array().unwrap().len(), 1);

        let config_bytes = file(&all, config_name);
        assert_eq!(format!("{}.json", sha256_hex(config_bytes)), config_name);
        assert_eq!(img.image_id, format!("sha256:{}", sha256_hex(config_bytes)));
        let layer = file(&all, layer_name);
        let config: serde_json::Value = serde_json::from_slice(config_bytes).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"],
            serde_json::json!([format!("sha256:{}", sha256_hex(layer))])
        );
        assert_eq!(img.diff_id, format!("sha256:{}", sha256_hex(layer)));
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(config["os"], "linux");
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
        assert!(config.get("variant").is_none());
        assert_eq!(config["history"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn layer_holds_busybox_its_links_and_empty_dirs() {
        let bin = fake_elf(EM_AARCH64);
        let layer = layer_tar(&bin).unwrap();
        let all = entries(&layer);
        let summary: Vec<(&str, EntryType, u32, Option<&str>)> = all
            .iter()
            .map(|(p, k, m, l, _)| (p.as_str(), *k, *m, l.as_deref()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("bin", EntryType::Directory, 0o755, None),
                ("bin/busybox", EntryType::Regular, 0o755, None),
                ("bin/httpd", EntryType::Symlink, 0o777, Some("busybox")),
                ("bin/sh", EntryType::Symlink, 0o777, Some("busybox")),
                ("bin/wget", EntryType::Symlink, 0o777, Some("busybox")),
                ("etc", EntryType::Directory, 0o755, None),
                ("tmp", EntryType::Directory, 0o1777, None),
                ("www", EntryType::Directory, 0o755, None),
            ]
        );
        assert_eq!(file(&all, "bin/busybox"), bin.as_slice());
        let mut a = tar::Archive::new(layer.as_slice());
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), MTIME);
            assert_eq!(
                (e.header().uid().unwrap(), e.header().gid().unwrap()),
                (0, 0)
            );
        }
    }

    #[test]
    fn archive_is_byte_identical_across_builds() {
        let bin = fake_elf(EM_ARM);
        let a = busybox_image(&bin).unwrap();
        let b = busybox_image(&bin).unwrap();
        assert_eq!(a.archive, b.archive);
        assert_eq!(a.image_id, b.image_id);
        // A different binary is a different image.
        let c = busybox_image(&fake_elf(EM_AARCH64)).unwrap();
        assert_ne!(a.image_id, c.image_id);
    }

    #[test]
    fn architecture_names_are_dockers() {
        let cases = [
            ("amd64", EM_X86_64, "amd64", None, "linux/amd64"),
            ("arm64", EM_AARCH64, "arm64", None, "linux/arm64"),
            ("armhf", EM_ARM, "arm", Some("v7"), "linux/arm/v7"),
        ];
        for (debian, machine, arch, variant, shown) in cases {
            let p = Arch::from_debian(debian).unwrap().docker_platform();
            assert_eq!((p.architecture, p.variant), (arch, variant), "{debian}");
            assert_eq!(p.to_string(), shown);
            assert_eq!(
                Arch::from_elf_machine(machine).map(Arch::docker_platform),
                Some(p),
                "{debian}"
            );
            let img = busybox_image(&fake_elf(machine)).unwrap();
            assert_eq!(img.platform, p);
            let all = entries(&img.archive);
            let manifest: serde_json::Value =
                serde_json::from_slice(file(&all, "manifest.json")).unwrap();
            let config: serde_json::Value =
                serde_json::from_slice(file(&all, manifest[0]["Config"].as_str().unwrap()))
                    .unwrap();
            assert_eq!(config["architecture"], arch);
            assert_eq!(config.get("variant").and_then(|v| v.as_str()), variant);
        }
        assert_eq!(Arch::from_debian("armel"), None);
        // i386 is no cluster-lab target: its busybox has no platform here.
        let err = busybox_image(&fake_elf(EM_386)).unwrap_err().to_string();
        assert!(err.contains("no Docker platform"), "{err}");
    }

    #[test]
    fn dynamic_or_non_elf_busybox_is_refused() {
        // One PT_INTERP program header at offset 64.
        let mut dynamic = fake_elf(EM_X86_64);
        dynamic[32..40].copy_from_slice(&64u64.to_le_bytes());
        dynamic[54..56].copy_from_slice(&56u16.to_le_bytes());
        dynamic[56..58].copy_from_slice(&1u16.to_le_bytes());
        dynamic[64..68].copy_from_slice(&PT_INTERP.to_le_bytes());
        let err = busybox_image(&dynamic).unwrap_err().to_string();
        assert!(err.contains("busybox-static"), "{err}");
        let err = busybox_image(b"#!/bin/sh\necho not a binary\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an ELF"), "{err}");
    }

    #[test]
    fn host_busybox_is_static_when_installed() {
        // Debian's busybox-static on the build host (listed in ci/apt-packages.txt) is what the root tier loads.
        let bin =
            std::fs::read("/bin/busybox").expect("reading /bin/busybox: install busybox-static");
        let elf = crate::elf::parse(&bin).unwrap();
        assert!(
            !elf.is_dynamic(),
            "/bin/busybox is dynamically linked: install busybox-static"
        );
    }
}
