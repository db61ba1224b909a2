//! Putting cluster-lab into an image: the agent binary, the overlay tree (systemd units, configs) and
//! `cluster-lab.toml` on the boot partition. Works on a raw image file in place, without root.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::container;
use crate::disk::{self, Located};
use crate::error::{ImageError, IoContext, Result};
use crate::ext4::{self, Content, Entry};
use crate::fat;

/// Where the agent binary goes (the units under overlays/ start it from here).
pub const AGENT_PATH: &str = "/usr/bin/cluster-lab";
/// Where unit files live in the overlay tree; non-template units with `WantedBy=` are enabled.
pub const UNIT_DIR: &str = "/usr/lib/systemd/system";

/// Everything to write into an image.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// Root filesystem entries, parents before children.
    pub root: Vec<Entry>,
    /// Files at the root of the boot partition: (name, content).
    pub boot: Vec<(String, Vec<u8>)>,
}

fn entry(dest: String, content: Content, mode: u32) -> Entry {
    Entry {
        dest,
        content,
        mode,
        uid: 0,
        gid: 0,
    }
}

impl Payload {
    /// Add every file under `overlay_dir`, mirrored to the same path in the root filesystem: owner
    /// root, mode 0755 for executables (any x bit on the host) and directories, 0644 for other files;
    /// symlinks kept as symlinks. Units under [`UNIT_DIR`] with `WantedBy=` are enabled.
    pub fn add_overlay(&mut self, overlay_dir: &Path) -> Result<()> {
        if !overlay_dir.is_dir() {
            return Err(ImageError::BadInput {
                path: overlay_dir.into(),
                reason: "the overlay directory does not exist".into(),
            });
        }
        let mut stack = vec![(overlay_dir.to_path_buf(), String::new())];
        let mut found = Vec::new();
        while let Some((host, dest)) = stack.pop() {
            let mut children: Vec<_> = std::fs::read_dir(&host)
                .at(&host, "listing overlay directory")?
                .collect::<std::io::Result<_>>()
                .at(&host, "listing overlay directory")?;
            children.sort_by_key(|e| e.file_name());
            for child in children {
                let path = child.path();
                let name = child
                    .file_name()
                    .into_string()
                    .map_err(|n| ImageError::BadInput {
                        path: path.clone(),
                        reason: format!("overlay file name {n:?} is not UTF-8"),
                    })?;
                let d = format!("{dest}/{name}");
                let meta = path.symlink_metadata().at(&path, "reading overlay file")?;
                if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path).at(&path, "reading overlay symlink")?;
                    found.push(entry(
                        d,
                        Content::Symlink(target.to_string_lossy().into()),
                        0o777,
                    ));
                } else if meta.is_dir() {
                    found.push(entry(d.clone(), Content::Dir, 0o755));
                    stack.push((path, d));
                } else if meta.is_file() {
                    let exec = meta.permissions().mode() & 0o111 != 0;
                    found.push(entry(
                        d,
                        Content::File(path),
                        if exec { 0o755 } else { 0o644 },
                    ));
                } else {
                    return Err(ImageError::BadInput {
                        path,
                        reason: "overlay entries must be files, directories or symlinks".into(),
                    });
                }
            }
        }
        for e in found {
            self.add(e);
        }
        for (unit, wanted_by) in units_to_enable(overlay_dir)? {
            self.add(entry(
                format!("/etc/systemd/system/{wanted_by}.wants/{unit}"),
                Content::Symlink(format!("{UNIT_DIR}/{unit}")),
                0o777,
            ));
        }
        Ok(())
    }

    /// Add the agent binary at [`AGENT_PATH`] (0755, root).
    pub fn add_agent(&mut self, binary: &Path) -> Result<()> {
        if !binary.is_file() {
            return Err(ImageError::BadInput {
                path: binary.into(),
                reason: "the agent binary does not exist".into(),
            });
        }
        self.add(entry(
            AGENT_PATH.into(),
            Content::File(binary.into()),
            0o755,
        ));
        Ok(())
    }

    /// Add a `docker save` archive at [`container::IMAGES_DIR`]`/name` (0644, root), for first boot to load.
    pub fn add_container_image(&mut self, name: &str, archive: &Path) {
        self.add_archive_in(container::IMAGES_DIR, name, archive);
    }

    /// Add a `docker save` archive at `dir/name` (0644, root): a stack's `images/`.
    pub fn add_archive_in(&mut self, dir: &str, name: &str, archive: &Path) {
        self.add(entry(
            format!("{dir}/{name}"),
            Content::File(archive.into()),
            0o644,
        ));
    }

    /// Add one entry, with any missing parent directories (0755, root) before it; a later entry for
    /// the same path replaces an earlier one.
    pub fn add(&mut self, e: Entry) {
        let mut parent = String::new();
        let comps: Vec<&str> = e.dest.split('/').filter(|c| !c.is_empty()).collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            parent = format!("{parent}/{c}");
            if !self.root.iter().any(|x| x.dest == parent) {
                self.root.push(entry(parent.clone(), Content::Dir, 0o755));
            }
        }
        if let Some(old) = self.root.iter_mut().find(|x| x.dest == e.dest) {
            *old = e;
        } else {
            self.root.push(e);
        }
    }

    /// Put a file at the root of the boot partition.
    pub fn add_boot_file(&mut self, name: &str, content: Vec<u8>) {
        self.boot.retain(|(n, _)| n != name);
        self.boot.push((name.to_string(), content));
    }
}

/// `(unit file name, target)` for every non-template unit in the overlay's unit directory that has
/// `WantedBy=` in its `[Install]` section: what `systemctl enable` would link.
pub fn units_to_enable(overlay_dir: &Path) -> Result<Vec<(String, String)>> {
    let dir = overlay_dir.join(UNIT_DIR.trim_start_matches('/'));
    let mut out = BTreeSet::new();
    let Ok(read) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    for e in read {
        let e = e.at(&dir, "listing unit directory")?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_unit = [".service", ".timer", ".socket", ".path"]
            .iter()
            .any(|s| name.ends_with(s));
        if !is_unit || name.contains('@') || !e.path().is_file() {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).at(&e.path(), "reading unit file")?;
        let mut in_install = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_install = line == "[Install]";
            } else if in_install {
                if let Some(targets) = line.strip_prefix("WantedBy=") {
                    for t in targets.split_whitespace() {
                        out.insert((name.clone(), t.to_string()));
                    }
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// What [`inject`] did.
#[derive(Debug, Clone)]
pub struct Injected {
    pub located: Located,
    pub root_entries: usize,
    pub boot_files: usize,
}

/// Write `payload` into the raw image at `image` (edited in place), verify every write, then check both
/// filesystems with `fsck.vfat -n` and `e2fsck -fn`.
pub fn inject(image: &Path, payload: &Payload) -> Result<Injected> {
    let located = disk::locate(image)?;
    tracing::info!(boot = %located.boot, root = %located.root, "found partitions");
    // Check the root filesystem first: debugfs on a damaged one could make it worse.
    ext4::check(image, &located.root)?;

    tracing::info!(
        entries = payload.root.len(),
        "writing root filesystem entries (debugfs)"
    );
    ext4::write_entries(image, &located.root, &payload.root)?;

    if !payload.boot.is_empty() {
        tracing::info!(
            files = payload.boot.len(),
            "writing boot partition files (fatfs)"
        );
        let vol = fat::FatVolume::open(image, &located.boot, true)?;
        for (name, data) in &payload.boot {
            vol.write(name, data)?;
        }
        vol.close()?;
        let vol = fat::FatVolume::open(image, &located.boot, false)?;
        for (name, data) in &payload.boot {
            if vol.read(name)?.as_deref() != Some(data.as_slice()) {
                return Err(ImageError::Fat {
                    path: image.into(),
                    index: located.boot.index,
                    reason: format!("{name} reads back different from what was written"),
                });
            }
        }
    }

    tracing::info!("checking filesystems (fsck.vfat -n, e2fsck -fn)");
    fat::check(image, &located.boot)?;
    ext4::check(image, &located.root)?;
    Ok(Injected {
        located,
        root_entries: payload.root.len(),
        boot_files: payload.boot.len(),
    })
}

/// A working file next to `out` (same filesystem, so it can be renamed into place).
pub fn temp_path(out: &Path, suffix: &str) -> PathBuf {
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    out.with_file_name(format!(".{name}.{suffix}.partial"))
}
