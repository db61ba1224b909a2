//! The ext4 root partition: built with `mke2fs -d`, edited with `debugfs -w`, checked with `e2fsck -fn`.
//!
//! e2fsprogs open `FILE?offset=N` (the unix I/O manager's `offset` option), so the partition is edited in
//! place inside the image file — no copy out and back, no loop device, no root. debugfs exits 0 even when
//! a command fails, so every write is read back (`stat` + `dump`) and compared before it counts.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::command;
use crate::error::{ImageError, IoContext, Result};
use crate::mbr::Partition;

/// ext2/3/4 superblock magic, at byte 56 of the superblock (which starts 1024 bytes into the partition).
const EXT_MAGIC: u16 = 0xef53;

fn ext4_error(path: &Path, part: &Partition, reason: impl Into<String>) -> ImageError {
    ImageError::Ext4 {
        path: path.into(),
        index: part.index,
        reason: reason.into(),
    }
}

/// `IMAGE?offset=N`: how e2fsprogs address a filesystem inside a disk image.
pub fn device_arg(path: &Path, part: &Partition) -> OsString {
    let mut s = path.as_os_str().to_owned();
    s.push(format!("?offset={}", part.start));
    s
}

/// Whether the partition starts with an ext2/3/4 superblock (checked before handing it to e2fsprogs).
pub fn has_superblock(path: &Path, part: &Partition) -> Result<bool> {
    let mut f = File::open(path).at(path, "opening image")?;
    let mut magic = [0u8; 2];
    f.seek(SeekFrom::Start(part.start + 1024 + 56))
        .at(path, "seeking to the ext4 superblock")?;
    match f.read_exact(&mut magic) {
        Ok(()) => Ok(u16::from_le_bytes(magic) == EXT_MAGIC),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e).at(path, "reading the ext4 superblock"),
    }
}

/// Create an ext4 filesystem filling `part` inside the image at `path`, populated from `src_dir`
/// (`mke2fs -d`: owners and modes are copied from the source tree, so build it as root to keep them).
pub fn make_from_dir(path: &Path, part: &Partition, src_dir: &Path, label: &str) -> Result<()> {
    if label.is_empty() || label.len() > 16 {
        return Err(ImageError::Invalid(format!(
            "ext4 label {label:?}: use 1 to 16 characters"
        )));
    }
    let ext = OsString::from(format!("offset={},nodiscard", part.start));
    let args: Vec<OsString> = vec![
        "-q".into(),
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-L".into(),
        label.into(),
        "-d".into(),
        src_dir.into(),
        "-E".into(),
        ext,
        path.into(),
        format!("{}k", part.size / 1024).into(),
    ];
    command::run("mke2fs", &args)?;
    Ok(())
}

/// `e2fsck -fn`: a full read-only check; any problem is an error carrying e2fsck's report.
pub fn check(path: &Path, part: &Partition) -> Result<()> {
    let dev = device_arg(path, part);
    let out = command::output("e2fsck", &[OsString::from("-fn"), dev.clone()])?;
    if !out.status.success() {
        return Err(ext4_error(
            path,
            part,
            format!(
                "e2fsck -fn {} found problems ({}): {}{}",
                dev.to_string_lossy(),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}

/// What to put at a path in the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// A regular file copied from the host.
    File(PathBuf),
    /// A directory (created when missing; an existing directory is left as it is).
    Dir,
    /// A symbolic link to this target.
    Symlink(String),
}

/// One entry to write into the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path inside the filesystem, e.g. `/usr/local/bin/cluster-lab`.
    pub dest: String,
    pub content: Content,
    /// Permission bits, e.g. 0o755.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What `debugfs stat` says about an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// `regular`, `directory`, `symlink`, ...
    pub kind: String,
    /// Permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// Target of a fast symlink (short targets are stored in the inode and printed by stat).
    pub link: Option<String>,
}

fn check_dest(dest: &str) -> Result<()> {
    let ok = dest.starts_with('/')
        && dest.len() > 1
        && !dest
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c.is_control())
        && !dest.split('/').any(|c| c == "." || c == "..");
    if ok {
        Ok(())
    } else {
        Err(ImageError::Invalid(format!(
            "{dest:?}: paths written into ext4 must be absolute, without spaces, quotes, `.` or `..`"
        )))
    }
}

/// Run a debugfs command script; returns stdout split per command (`debugfs: CMD` echo lines).
fn debugfs(
    path: &Path,
    part: &Partition,
    write: bool,
    script: &str,
) -> Result<(Vec<(String, String)>, String)> {
    let mut cmds = tempfile::Builder::new()
        .prefix("cluster-lab-debugfs-")
        .tempfile()
        .at(Path::new("/tmp"), "creating debugfs script")?;
    std::io::Write::write_all(&mut cmds, script.as_bytes())
        .at(cmds.path(), "writing debugfs script")?;
    let mut args: Vec<OsString> = Vec::new();
    if write {
        args.push("-w".into());
    }
    args.push("-f".into());
    args.push(cmds.path().into());
    args.push(device_arg(path, part));
    let out = command::output("debugfs", &args)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(ext4_error(
            path,
            part,
            format!("debugfs failed ({}): {}", out.status, stderr.trim()),
        ));
    }
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(cmd) = line.strip_prefix("debugfs: ") {
            sections.push((cmd.to_string(), String::new()));
        } else if let Some((_, body)) = sections.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    Ok((sections, stderr))
}

/// Parse the first lines of `debugfs stat` output.
pub fn parse_stat(body: &str) -> Option<Stat> {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    for line in body.lines().take(4) {
        let mut words = line.split_whitespace().peekable();
        while let Some(w) = words.next() {
            if let Some(key) = w.strip_suffix(':') {
                if let Some(v) = words.peek() {
                    fields.entry(key).or_insert(v);
                }
            }
        }
    }
    let link = body
        .lines()
        .find_map(|l| l.trim().strip_prefix("Fast link dest: "))
        .map(|s| s.trim_matches('"').to_string());
    Some(Stat {
        kind: fields.get("Type")?.to_string(),
        mode: u32::from_str_radix(fields.get("Mode")?, 8).ok()?,
        uid: fields.get("User")?.parse().ok()?,
        gid: fields.get("Group")?.parse().ok()?,
        size: fields.get("Size")?.parse().ok()?,
        link,
    })
}

/// `stat` each path; `None` for paths that do not exist.
pub fn stat_all(path: &Path, part: &Partition, dests: &[&str]) -> Result<Vec<Option<Stat>>> {
    for d in dests {
        check_dest(d)?;
    }
    let script: String = dests.iter().map(|d| format!("stat {d}\n")).collect();
    let (sections, _) = debugfs(path, part, false, &script)?;
    Ok(dests
        .iter()
        .map(|d| {
            sections
                .iter()
                .find(|(cmd, _)| cmd == &format!("stat {d}"))
                .and_then(|(_, body)| parse_stat(body))
        })
        .collect())
}

/// Read one file out of the filesystem (`debugfs dump`); `None` when it does not exist.
pub fn read_file(path: &Path, part: &Partition, dest: &str) -> Result<Option<Vec<u8>>> {
    check_dest(dest)?;
    let dir = tempfile::tempdir().at(Path::new("/tmp"), "creating temporary directory")?;
    let out = dir.path().join("out");
    debugfs(
        path,
        part,
        false,
        &format!("dump {dest} {}\n", out.display()),
    )?;
    match std::fs::read(&out) {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(&out, "reading dumped file"),
    }
}

/// Write `entries` (in order; parents before children) into the ext4 partition, then read every one back
/// and compare type, mode, owner, size and content. Missing parent directories must be listed as entries.
pub fn write_entries(path: &Path, part: &Partition, entries: &[Entry]) -> Result<()> {
    if !has_superblock(path, part)? {
        return Err(ext4_error(
            path,
            part,
            "no ext4 superblock (magic 0xEF53 missing): not an ext2/3/4 filesystem or corrupt",
        ));
    }
    for e in entries {
        check_dest(&e.dest)?;
        if let Content::File(src) = &e.content {
            if src
                .to_string_lossy()
                .chars()
                .any(|c| c.is_whitespace() || c == '"')
            {
                return Err(ImageError::BadInput {
                    path: src.clone(),
                    reason: "host paths given to debugfs must not contain spaces or quotes".into(),
                });
            }
        }
    }
    let dests: Vec<&str> = entries.iter().map(|e| e.dest.as_str()).collect();
    let before = stat_all(path, part, &dests)?;

    let mut script = String::new();
    for (e, old) in entries.iter().zip(&before) {
        let d = &e.dest;
        match (&e.content, old) {
            (Content::Dir, Some(s)) if s.kind == "directory" => continue,
            (Content::Dir, Some(s)) => {
                return Err(ext4_error(
                    path,
                    part,
                    format!("{d} exists as a {} where a directory is wanted", s.kind),
                ))
            }
            (_, Some(s)) if s.kind == "directory" => {
                return Err(ext4_error(
                    path,
                    part,
                    format!("{d} is a directory; refusing to replace it with a file"),
                ))
            }
            (Content::Dir, None) => {
                script.push_str(&format!("mkdir {d}\nsif {d} mode 040{:03o}\n", e.mode))
            }
            (Content::File(src), old) => {
                if old.is_some() {
                    script.push_str(&format!("rm {d}\n"));
                }
                script.push_str(&format!(
                    "write {} {d}\nsif {d} mode 0100{:03o}\n",
                    src.display(),
                    e.mode & 0o7777
                ));
            }
            (Content::Symlink(target), old) => {
                if target.chars().any(|c| c.is_whitespace() || c == '"') {
                    return Err(ImageError::Invalid(format!(
                        "symlink {d} -> {target:?}: targets must not contain spaces or quotes"
                    )));
                }
                if old.is_some() {
                    script.push_str(&format!("rm {d}\n"));
                }
                script.push_str(&format!("symlink {d} {target}\n"));
            }
        }
        // `uid`/`gid` set all 32 bits (low and high halves).
        script.push_str(&format!("sif {d} uid {}\nsif {d} gid {}\n", e.uid, e.gid));
    }
    let (_, stderr) = if script.is_empty() {
        (Vec::new(), String::new())
    } else {
        debugfs(path, part, true, &script)?
    };
    verify(path, part, entries, &before, &stderr)
}

fn verify(
    path: &Path,
    part: &Partition,
    entries: &[Entry],
    before: &[Option<Stat>],
    stderr: &str,
) -> Result<()> {
    let dir = tempfile::tempdir().at(Path::new("/tmp"), "creating temporary directory")?;
    let mut script = String::new();
    for (i, e) in entries.iter().enumerate() {
        script.push_str(&format!("stat {}\n", e.dest));
        if matches!(e.content, Content::File(_)) {
            script.push_str(&format!(
                "dump {} {}\n",
                e.dest,
                dir.path().join(i.to_string()).display()
            ));
        }
    }
    let (sections, _) = debugfs(path, part, false, &script)?;
    let fail = |d: &str, why: String| {
        ext4_error(
            path,
            part,
            format!(
                "writing {d} did not take effect ({why}); debugfs said: {}",
                stderr.trim()
            ),
        )
    };
    for ((i, e), old) in entries.iter().enumerate().zip(before) {
        let d = &e.dest;
        let st = sections
            .iter()
            .find(|(c, _)| c == &format!("stat {d}"))
            .and_then(|(_, b)| parse_stat(b))
            .ok_or_else(|| fail(d, "missing after the write".into()))?;
        let want_kind = match e.content {
            Content::File(_) => "regular",
            Content::Dir => "directory",
            Content::Symlink(_) => "symlink",
        };
        if st.kind != want_kind {
            return Err(fail(d, format!("is a {}, expected {want_kind}", st.kind)));
        }
        // Existing directories are left as they are.
        let checks_meta = !(matches!(e.content, Content::Dir) && old.is_some());
        if checks_meta {
            if !matches!(e.content, Content::Symlink(_)) && st.mode != e.mode & 0o7777 {
                return Err(fail(
                    d,
                    format!("mode {:o}, expected {:o}", st.mode, e.mode),
                ));
            }
            if st.uid != e.uid || st.gid != e.gid {
                return Err(fail(
                    d,
                    format!("owner {}:{}, expected {}:{}", st.uid, st.gid, e.uid, e.gid),
                ));
            }
        }
        match &e.content {
            Content::File(src) => {
                let want = std::fs::read(src).at(src, "reading file to inject")?;
                let got = std::fs::read(dir.path().join(i.to_string())).unwrap_or_default();
                if got != want || st.size != want.len() as u64 {
                    return Err(fail(
                        d,
                        format!(
                            "content differs: {} bytes read back, {} expected",
                            got.len(),
                            want.len()
                        ),
                    ));
                }
            }
            Content::Symlink(target) => {
                let ok =
                    st.size == target.len() as u64 && st.link.as_ref().is_none_or(|l| l == target);
                if !ok {
                    return Err(fail(d, format!("symlink does not point to {target}")));
                }
            }
            Content::Dir => {}
        }
    }
    Ok(())
}

/// The blocks the filesystem does not use, as byte ranges in the image, read from its block bitmaps through
/// `dumpe2fs` (each group's `Free blocks:` line).
pub fn free_ranges(path: &Path, part: &Partition) -> Result<Vec<std::ops::Range<u64>>> {
    let out = command::run("dumpe2fs", &[device_arg(path, part)])?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_free_blocks(&text)
        .map(|(block_size, free)| {
            free.into_iter()
                .map(|(a, b)| part.start + a * block_size..part.start + (b + 1) * block_size)
                .collect()
        })
        .map_err(|reason| ext4_error(path, part, format!("reading dumpe2fs: {reason}")))
}

/// Block size and the inclusive free block runs from `dumpe2fs` output. The header's `Free blocks:` is a count;
/// the groups' indented `Free blocks:` lines list runs (`12-40, 77, 90-99`).
pub fn parse_free_blocks(text: &str) -> std::result::Result<(u64, Vec<(u64, u64)>), String> {
    let block_size = text
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or("no \"Block size:\" line")?;
    let mut free = Vec::new();
    let mut groups = 0;
    for line in text.lines() {
        let Some(list) = line
            .strip_prefix("  Free blocks:")
            .or_else(|| line.strip_prefix("\tFree blocks:"))
        else {
            continue;
        };
        groups += 1;
        for run in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (a, b) = run.split_once('-').unwrap_or((run, run));
            match (a.trim().parse::<u64>(), b.trim().parse::<u64>()) {
                (Ok(a), Ok(b)) if a <= b => free.push((a, b)),
                _ => return Err(format!("bad free block run {run:?}")),
            }
        }
    }
    if groups == 0 {
        return Err("no block group lists its free blocks".into());
    }
    Ok((block_size, free))
}
