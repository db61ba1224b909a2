//! Container images made from Debian packages when the image is built: the `monitoring` stack's Prometheus and
//! node-exporter. No registry is reachable from a cluster, so what a built-in stack runs must be on the card.
//!
//! The base build unpacks each package named by [`packages`] (with `dpkg-deb -x`, for the base's architecture)
//! into a directory of its own under the base's `<arch>.packages/`; the image build turns each
//! [`PackageImage`] into a one-layer `docker save` archive: the program and what else it takes from its package,
//! the C library's shared objects from `libc6` (Debian's Go programs link only `libc.so.6`), the merged-/usr
//! links the ELF interpreter path needs, and the empty directories the program writes to. The archives land in
//! the stack's `images/`, where `cluster-lab stack deploy` loads them from.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::container::{self, ContainerImage, LayerEntry, RunConfig};
use crate::error::{ImageError, IoContext, Result};

/// The stack whose images these are.
pub const STACK: &str = "monitoring";
/// Where the stack's archives go in the root filesystem.
pub const IMAGES_DIR: &str = "/usr/lib/cluster-lab/stacks/monitoring/images";
/// The package every image takes its C library from.
pub const LIBC: &str = "libc6";
/// What of [`LIBC`] an image takes: the shared objects, not gconv's charset modules nor the docs.
const LIBC_TAKE: [&str; 2] = ["usr/lib", "usr/lib64"];
const LIBC_SKIP: &str = "/gconv";
/// `nobody`: the programs run unprivileged.
const NOBODY: u32 = 65534;

/// One image made from one Debian package.
#[derive(Debug, Clone, Copy)]
pub struct PackageImage {
    /// The archive's stem and the image's name: `cluster-lab/<name>:latest` in `<name>.tar`.
    pub name: &'static str,
    pub package: &'static str,
    /// Paths in the package the image takes (a directory with everything under it); the first is the program.
    pub take: &'static [&'static str],
    /// Empty directories owned by `nobody` (the program's data).
    pub data_dirs: &'static [&'static str],
    pub cmd: &'static [&'static str],
    pub exposed_port: &'static str,
}

/// The monitoring stack's images.
pub const IMAGES: [PackageImage; 2] = [
    PackageImage {
        name: "prometheus",
        package: "prometheus",
        // Debian's Prometheus serves a page that explains its web UI is not packaged from here; its API works.
        take: &["usr/bin/prometheus", "usr/share/prometheus/web"],
        data_dirs: &["prometheus", "etc/prometheus"],
        cmd: &[
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=7d",
            "--web.listen-address=:9090",
        ],
        exposed_port: "9090/tcp",
    },
    PackageImage {
        name: "node-exporter",
        package: "prometheus-node-exporter",
        take: &["usr/bin/prometheus-node-exporter"],
        data_dirs: &[],
        cmd: &["--path.rootfs=/host", "--web.listen-address=:9100"],
        exposed_port: "9100/tcp",
    },
];

/// The packages the base build unpacks: the C library, then each image's package.
pub fn packages() -> Vec<&'static str> {
    std::iter::once(LIBC)
        .chain(IMAGES.iter().map(|i| i.package))
        .collect()
}

impl PackageImage {
    pub fn repo_tag(&self) -> String {
        format!("cluster-lab/{}:latest", self.name)
    }

    pub fn archive_name(&self) -> String {
        format!("{}.tar", self.name)
    }

    /// The image, from the packages unpacked under `unpacked` (`<unpacked>/<package>/…`).
    pub fn build(&self, unpacked: &Path) -> Result<ContainerImage> {
        let mut entries = BTreeMap::new();
        let pkg = unpacked.join(self.package);
        for take in self.take {
            collect(&pkg, Path::new(take), &mut entries)?;
        }
        // The program's ELF header, read once: its platform, and the loader it needs.
        let elf = match entries.get(Path::new(self.take[0])) {
            Some(LayerEntry::File { data, .. }) => crate::elf::parse(data)
                .map_err(|e| ImageError::Invalid(format!("{}: {e}", self.take[0])))?,
            _ => {
                return Err(ImageError::Invalid(format!(
                    "{}: {} is not a file in the unpacked package {}",
                    self.name,
                    self.take[0],
                    pkg.display()
                )))
            }
        };
        let platform = container::platform_of(&elf, self.take[0])?;
        let libc = unpacked.join(LIBC);
        if !libc.join(LIBC_TAKE[0]).is_dir() {
            return Err(ImageError::Invalid(format!(
                "{}: the C library is not unpacked at {} (rebuild the base with `cargo xtask base`)",
                self.name,
                libc.join(LIBC_TAKE[0]).display()
            )));
        }
        for take in LIBC_TAKE {
            if libc.join(take).exists() {
                collect(&libc, Path::new(take), &mut entries)?;
            }
        }
        entries.retain(|p, _| !p.to_string_lossy().contains(LIBC_SKIP));
        // The ELF interpreter is /lib/ld-linux-*.so or /lib64/ld-linux-*.so: merged /usr, as on the host.
        for top in ["lib", "lib64"] {
            if entries.contains_key(&Path::new("usr").join(top)) {
                entries.insert(
                    PathBuf::from(top),
                    LayerEntry::Symlink {
                        path: top.into(),
                        target: format!("usr/{top}"),
                    },
                );
            }
        }
        for dir in self.data_dirs {
            entries.insert(
                PathBuf::from(dir),
                LayerEntry::Dir {
                    path: (*dir).into(),
                    mode: 0o755,
                    owner: NOBODY,
                },
            );
        }
        entries.insert(
            PathBuf::from("tmp"),
            LayerEntry::Dir {
                path: "tmp".into(),
                mode: 0o1777,
                owner: 0,
            },
        );
        add_parents(&mut entries);
        // The program must find its loader in the layer, or the container dies with "no such file or directory".
        if let Some(interp) = &elf.interpreter {
            if !resolves_to_file(&entries, interp) {
                return Err(ImageError::Invalid(format!(
                    "{}: {}'s loader {interp} is not in the image (does {LIBC} hold it?)",
                    self.name, self.take[0]
                )));
            }
        }
        let layer = container::layer(&entries.into_values().collect::<Vec<_>>())?;
        container::save_archive(
            &self.repo_tag(),
            platform,
            layer,
            &RunConfig {
                entrypoint: vec![format!("/{}", self.take[0])],
                cmd: self.cmd.iter().map(|s| s.to_string()).collect(),
                user: Some(format!("{NOBODY}:{NOBODY}")),
                exposed_ports: vec![self.exposed_port.into()],
            },
            &format!(
                "cluster-lab image builder: Debian's {} and {LIBC}",
                self.package
            ),
        )
    }
}

/// `rel` under `root` (a file, a symlink, or a directory and everything under it) into `out`, keyed by path.
fn collect(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, LayerEntry>) -> Result<()> {
    let full = root.join(rel);
    let meta = std::fs::symlink_metadata(&full).at(&full, "reading the unpacked package")?;
    let path = rel.to_string_lossy().into_owned();
    let mode = meta.mode() & 0o7777;
    let entry = if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&full).at(&full, "reading the link")?;
        LayerEntry::Symlink {
            path,
            target: target.to_string_lossy().into_owned(),
        }
    } else if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&full)
            .at(&full, "listing")?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .at(&full, "listing")?;
        names.sort();
        for name in names {
            collect(root, &rel.join(name), out)?;
        }
        LayerEntry::Dir {
            path,
            mode,
            owner: 0,
        }
    } else if meta.is_file() {
        LayerEntry::File {
            path,
            mode,
            owner: 0,
            data: std::fs::read(&full).at(&full, "reading")?,
        }
    } else {
        return Err(ImageError::Invalid(format!(
            "{}: neither a file, a directory nor a link",
            full.display()
        )));
    };
    out.insert(rel.to_path_buf(), entry);
    Ok(())
}

/// Whether the absolute `path` leads to a regular file among `entries`, following their symlinks (relative or
/// absolute, in any component) as the kernel would inside the container.
fn resolves_to_file(entries: &BTreeMap<PathBuf, LayerEntry>, path: &str) -> bool {
    let mut pending: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .map(String::from)
        .collect();
    let mut at: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                at.pop();
                continue;
            }
            _ => at.push(c),
        }
        match entries.get(&at.iter().collect::<PathBuf>()) {
            Some(LayerEntry::Symlink { target, .. }) => {
                hops += 1;
                if hops > 40 {
                    return false;
                }
                at.pop();
                if target.starts_with('/') {
                    at.clear();
                }
                pending.extend(
                    target
                        .split('/')
                        .filter(|c| !c.is_empty())
                        .rev()
                        .map(String::from),
                );
            }
            Some(LayerEntry::File { .. }) => {
                if pending.is_empty() {
                    return true;
                }
                return false;
            }
            Some(LayerEntry::Dir { .. }) => {}
            None => return false,
        }
    }
    false
}

/// Every entry's missing parent directories (0755, root).
fn add_parents(entries: &mut BTreeMap<PathBuf, LayerEntry>) {
    let parents: Vec<PathBuf> = entries
        .keys()
        .flat_map(|p| p.ancestors().skip(1).map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    for p in parents {
        entries.entry(p.clone()).or_insert_with(|| LayerEntry::Dir {
            path: p.to_string_lossy().into_owned(),
            mode: 0o755,
            owner: 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;

    /// An x86-64 program that asks for Debian's loader.
    fn fake_program() -> Vec<u8> {
        crate::elf::elf64(crate::elf::EM_X86_64, Some("/lib64/ld-linux-x86-64.so.2"))
    }

    fn write(path: &Path, data: &[u8], mode: u32) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn unpacked() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let program = fake_program();
        let files: [(&str, &[u8], u32); 7] = [
            ("prometheus/usr/bin/prometheus", &program, 0o755),
            (
                "prometheus/usr/share/prometheus/web/no-ui/index.html",
                b"<p>",
                0o644,
            ),
            ("prometheus/etc/default/prometheus", b"ARGS=", 0o644),
            ("libc6/usr/lib/x86_64-linux-gnu/libc.so.6", b"libc", 0o755),
            (
                "libc6/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                b"ld",
                0o755,
            ),
            (
                "libc6/usr/lib/x86_64-linux-gnu/gconv/UTF-16.so",
                b"gconv",
                0o644,
            ),
            ("libc6/usr/share/doc/libc6/copyright", b"c", 0o644),
        ];
        for (path, data, mode) in files {
            write(&p.join(path), data, mode);
        }
        std::fs::create_dir_all(p.join("libc6/usr/lib64")).unwrap();
        std::os::unix::fs::symlink(
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            p.join("libc6/usr/lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        d
    }

    /// (path, type, mode, uid, link) of one layer entry.
    type Listed = (String, tar::EntryType, u32, u64, Option<String>);

    /// Every entry of the archive's one layer, and the image's config.
    fn layer_and_config(img: &ContainerImage) -> (Vec<Listed>, serde_json::Value) {
        let mut files = BTreeMap::new();
        for e in tar::Archive::new(img.archive.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            e.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        let config: serde_json::Value =
            serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
        let layer = &files[manifest[0]["Layers"][0].as_str().unwrap()];
        let listed = tar::Archive::new(layer.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                    e.header().mode().unwrap(),
                    e.header().uid().unwrap(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                )
            })
            .collect();
        (listed, config)
    }

    #[test]
    fn the_prometheus_image_holds_the_program_its_libc_and_a_data_dir_for_nobody() {
        let d = unpacked();
        let img = IMAGES[0].build(d.path()).unwrap();
        let (layer, config) = layer_and_config(&img);
        let paths: Vec<&str> = layer.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc",
                "etc/prometheus",
                "lib",
                "lib64",
                "prometheus",
                "tmp",
                "usr",
                "usr/bin",
                "usr/bin/prometheus",
                "usr/lib",
                "usr/lib/x86_64-linux-gnu",
                "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
                "usr/lib/x86_64-linux-gnu/libc.so.6",
                "usr/lib64",
                "usr/lib64/ld-linux-x86-64.so.2",
                "usr/share",
                "usr/share/prometheus",
                "usr/share/prometheus/web",
                "usr/share/prometheus/web/no-ui",
                "usr/share/prometheus/web/no-ui/index.html",
            ]
        );
        let get = |p: &str| layer.iter().find(|e| e.0 == p).unwrap().clone();
        assert_eq!(get("lib64").4.as_deref(), Some("usr/lib64"));
        assert_eq!(get("prometheus").3, u64::from(NOBODY));
        assert_eq!(get("usr/bin/prometheus").2, 0o755);
        assert_eq!(get("tmp").2, 0o1777);
        assert_eq!(config["architecture"], "amd64");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/usr/bin/prometheus"])
        );
        assert_eq!(config["config"]["User"], "65534:65534");
        assert_eq!(
            config["config"]["ExposedPorts"],
            serde_json::json!({"9090/tcp": {}})
        );
        assert_eq!(
            config["config"]["Cmd"][0],
            "--config.file=/etc/prometheus/prometheus.yml"
        );
    }

    #[test]
    fn an_arm64_program_finds_its_loader_through_the_merged_usr_links() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let program = crate::elf::elf64(crate::elf::EM_AARCH64, Some("/lib/ld-linux-aarch64.so.1"));
        write(
            &p.join("prometheus-node-exporter/usr/bin/prometheus-node-exporter"),
            &program,
            0o755,
        );
        write(
            &p.join("libc6/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"),
            b"ld",
            0o755,
        );
        write(
            &p.join("libc6/usr/lib/aarch64-linux-gnu/libc.so.6"),
            b"libc",
            0o755,
        );
        std::os::unix::fs::symlink(
            "aarch64-linux-gnu/ld-linux-aarch64.so.1",
            p.join("libc6/usr/lib/ld-linux-aarch64.so.1"),
        )
        .unwrap();
        let img = IMAGES[1].build(p).unwrap();
        assert_eq!(img.platform.architecture, "arm64");
        // Without the loader the image is refused, naming it.
        std::fs::remove_file(p.join("libc6/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"))
            .unwrap();
        let e = IMAGES[1].build(p).unwrap_err().to_string();
        assert!(e.contains("/lib/ld-linux-aarch64.so.1"), "{e}");
        // Without the C library at all, too.
        std::fs::remove_dir_all(p.join("libc6")).unwrap();
        let e = IMAGES[1].build(p).unwrap_err().to_string();
        assert!(e.contains("C library"), "{e}");
    }

    #[test]
    fn the_same_packages_make_the_same_bytes() {
        let d = unpacked();
        let a = IMAGES[0].build(d.path()).unwrap();
        let b = IMAGES[0].build(d.path()).unwrap();
        assert_eq!(a.image_id, b.image_id);
        assert_eq!(a.archive, b.archive);
    }

    #[test]
    fn a_package_without_its_program_is_refused_by_name() {
        let d = unpacked();
        let e = IMAGES[1].build(d.path()).unwrap_err().to_string();
        assert!(e.contains("prometheus-node-exporter"), "{e}");
    }

    #[test]
    fn the_base_unpacks_libc_and_every_images_package() {
        assert_eq!(
            packages(),
            ["libc6", "prometheus", "prometheus-node-exporter"]
        );
    }
}
