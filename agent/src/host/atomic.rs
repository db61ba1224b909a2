//! The one atomic file write on the target: a temporary file in the same directory, mode and owner set, data
//! fsynced, renamed over the target, the directory fsynced. A power cut leaves the old file or the new one,
//! never half of either.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Replace `path` with `contents`, with `mode` and (where given) owner `uid`/`gid` set before the rename. The
/// temporary file is removed when anything fails.
pub fn write(
    path: &Path,
    contents: &[u8],
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> std::io::Result<()> {
    write_with(path, mode, uid, gid, |out| out.write_all(contents))
}

/// [`write`] for contents produced piece by piece (a lease log being compacted): `fill` writes them into a
/// buffered temporary file; everything else is the same.
pub fn write_with(
    path: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.cluster-lab-tmp"));
    let write = || -> std::io::Result<()> {
        let _ = std::fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&file, uid, gid)?;
        }
        // Created 0600 already; FAT (the boot partition) refuses chmod, and needs none for 0600.
        if mode != 0o600 {
            file.set_permissions(Permissions::from_mode(mode))?;
        }
        let mut out = BufWriter::new(file);
        fill(&mut out)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_the_file_with_its_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.conf");
        std::fs::write(&path, "old").unwrap();
        write(&path, b"new\n", 0o640, None, None).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.conf")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temporary file was written.
        let path = dir.path().join("d");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("x"), "keep").unwrap();
        assert!(write(&path, b"new", 0o644, None, None).is_err());
        assert_eq!(std::fs::read_to_string(path.join("x")).unwrap(), "keep");
        assert!(!dir.path().join(".d.cluster-lab-tmp").exists());
    }
}
