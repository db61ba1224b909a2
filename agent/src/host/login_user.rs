//! The login user's name. The base image creates one login user, `cluster` (uid 1000, groups sudo and docker, sudo
//! without password). When the card's user-data names another user (Raspberry Pi Imager's "username"), first boot
//! renames `cluster` to it, as Raspberry Pi OS renames its first user: the account database (`passwd`, `shadow`,
//! `group`, `gshadow`, `subuid`, `subgid`), the sudo rule and the home directory.
//!
//! Every file is edited on its own and only where it still names the old user, so a run cut short by a power loss
//! finishes the rest the next time. All edits work on files under a root directory, never on the host's database.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::login::{find_user, io, under, LoginError, USER};
use crate::plan::Plan;

/// Account files whose first field is a user name, and group files whose member lists name users.
const USER_FILES: &[&str] = &["etc/passwd", "etc/shadow", "etc/subuid", "etc/subgid"];
const GROUP_FILES: &[&str] = &["etc/group", "etc/gshadow"];
/// The image's sudo rule for its login user.
pub const SUDOERS: &str = "etc/sudoers.d/cluster-lab";

/// A user name as Debian's `adduser` accepts it by default: lower-case letter or `_` first, then lower-case letters,
/// digits, `_` and `-`, at most 32 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !ok_first || !ok_rest || name.len() > 32 {
        return Err(format!(
            "user name {name:?}: use a lower-case letter first, then lower-case letters, digits, '_' or '-' \
             (at most 32), e.g. \"alice\""
        ));
    }
    Ok(())
}

/// The name of the login user under `root`: the user with uid 1000 (the base image's first user), else `cluster`.
pub fn current(root: &Path) -> String {
    std::fs::read_to_string(root.join("etc/passwd"))
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() == 7 && f[2] == "1000").then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| USER.to_string())
}

/// Rename the image's login user `cluster` to `to` under `root` (or, with a `plan`, say what would change). Returns
/// whether anything changed. Refuses a name that breaks the rule or belongs to another account already.
pub fn rename(root: &Path, to: &str, plan: Option<&Plan>) -> Result<bool, LoginError> {
    let from = USER;
    if to == from {
        return Ok(false);
    }
    let passwd_path = root.join("etc/passwd");
    check_name(to).map_err(|what| LoginError::Refused {
        path: passwd_path.clone(),
        what,
    })?;
    let passwd = std::fs::read_to_string(&passwd_path).map_err(io("reading", &passwd_path))?;
    let (old, new) = (find_user(&passwd, from), find_user(&passwd, to));
    let home_from = PathBuf::from(format!("/home/{from}"));
    let home_to = PathBuf::from(format!("/home/{to}"));
    match (&old, &new) {
        (None, None) => {
            return Err(LoginError::NoUser {
                user: from.to_string(),
                path: passwd_path,
            })
        }
        (Some(_), Some(_)) => {
            return Err(LoginError::Refused {
                path: passwd_path,
                what: format!("user-data names user {to}, which exists already beside {from}: choose another name"),
            })
        }
        // Renamed by an earlier run, maybe not everywhere: go on, every edit below finds what is left.
        (None, Some(entry)) if entry.home != home_to => {
            return Err(LoginError::Refused {
                path: passwd_path,
                what: format!("user {to} exists already and is not the renamed {from}: choose another name"),
            })
        }
        _ => {}
    }
    let mut changed = false;
    for file in USER_FILES {
        changed |= edit(root, file, plan, |line| rename_user_line(line, from, to))?;
    }
    for file in GROUP_FILES {
        changed |= edit(root, file, plan, |line| rename_group_line(line, from, to))?;
    }
    changed |= edit(root, SUDOERS, plan, |line| {
        line.strip_prefix(&format!("{from} "))
            .map(|rest| format!("{to} {rest}"))
    })?;
    // The home directory last: passwd already points at the new one.
    let (src, dst) = (under(root, &home_from), under(root, &home_to));
    if src.is_dir() && !dst.exists() {
        changed = true;
        match plan {
            Some(plan) => plan.note(format!(
                "would move {} to {}",
                home_from.display(),
                home_to.display()
            )),
            None => std::fs::rename(&src, &dst).map_err(io("renaming", &src))?,
        }
    }
    Ok(changed)
}

/// `name:…` lines of `from` become `to`'s; in passwd the home directory field follows.
fn rename_user_line(line: &str, from: &str, to: &str) -> Option<String> {
    let rest = line.strip_prefix(from)?.strip_prefix(':')?;
    let home_from = format!(":/home/{from}:");
    let home_to = format!(":/home/{to}:");
    Some(format!("{to}:{}", rest.replacen(&home_from, &home_to, 1)))
}

/// A group line: the group named `from` (its personal group) renamed, and `from` in the member (and, in gshadow,
/// administrator) lists replaced.
fn rename_group_line(line: &str, from: &str, to: &str) -> Option<String> {
    let mut fields: Vec<String> = line.split(':').map(str::to_string).collect();
    if fields.len() < 3 {
        return None;
    }
    let mut changed = false;
    if fields[0] == from {
        fields[0] = to.to_string();
        changed = true;
    }
    // group: name:x:gid:members; gshadow: name:password:admins:members.
    let lists: Vec<usize> = if fields.len() == 4 {
        vec![2, 3]
    } else {
        vec![]
    };
    for i in lists {
        if fields[i].split(',').any(|m| m == from) {
            fields[i] = fields[i]
                .split(',')
                .map(|m| if m == from { to } else { m })
                .collect::<Vec<_>>()
                .join(",");
            changed = true;
        }
    }
    changed.then(|| fields.join(":"))
}

/// Rewrite `root/file` (if it exists) with `change` applied to each line; keeps the file's mode and owner.
fn edit(
    root: &Path,
    file: &str,
    plan: Option<&Plan>,
    change: impl Fn(&str) -> Option<String>,
) -> Result<bool, LoginError> {
    let path = root.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io("reading", &path)(e)),
    };
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for line in text.split_inclusive('\n') {
        let (body, end) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        match change(body) {
            Some(new) => {
                changed = true;
                out.push_str(&new);
                out.push_str(end);
            }
            None => out.push_str(line),
        }
    }
    if !changed {
        return Ok(false);
    }
    if let Some(plan) = plan {
        plan.note(format!("would rename the login user in /{file}"));
        return Ok(true);
    }
    let meta = std::fs::metadata(&path).map_err(io("reading metadata of", &path))?;
    super::atomic::write(
        &path,
        out.as_bytes(),
        meta.mode() & 0o7777,
        Some(meta.uid()),
        Some(meta.gid()),
    )
    .map_err(io("writing", &path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The account files as the base image's `useradd --create-home --groups sudo,docker cluster` leaves them.
    fn base_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("etc/sudoers.d")).unwrap();
        std::fs::create_dir_all(r.join("home/cluster/.ssh")).unwrap();
        let files = [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/bash\nconsul:x:100:102::/var/lib/consul:/usr/sbin/nologin\n\
                 cluster:x:1000:1000::/home/cluster:/bin/bash\n",
            ),
            (
                "etc/shadow",
                "root:*:20000:0:99999:7:::\ncluster:!:20000:0:99999:7:::\n",
            ),
            (
                "etc/group",
                "root:x:0:\nsudo:x:27:cluster\ndocker:x:990:cluster\ncluster:x:1000:\n",
            ),
            (
                "etc/gshadow",
                "root:*::\nsudo:*::cluster\ndocker:!::cluster\ncluster:!::\n",
            ),
            ("etc/subuid", "cluster:100000:65536\n"),
            ("etc/subgid", "cluster:100000:65536\n"),
            (
                SUDOERS,
                "# The `cluster` user has no password; it logs in with an SSH key and may use sudo.\n\
                 cluster ALL=(ALL) NOPASSWD: ALL\n",
            ),
        ];
        for (f, text) in files {
            std::fs::write(r.join(f), text).unwrap();
        }
        root
    }

    fn read(root: &Path, f: &str) -> String {
        std::fs::read_to_string(root.join(f)).unwrap()
    }

    #[test]
    fn renames_the_login_user_everywhere_once() {
        let root = base_root();
        let r = root.path();
        assert_eq!(current(r), "cluster");
        assert!(rename(r, "alice", None).unwrap());
        assert_eq!(current(r), "alice");
        assert!(read(r, "etc/passwd").contains("\nalice:x:1000:1000::/home/alice:/bin/bash\n"));
        assert!(read(r, "etc/shadow").contains("\nalice:!:20000:"));
        assert_eq!(
            read(r, "etc/group"),
            "root:x:0:\nsudo:x:27:alice\ndocker:x:990:alice\nalice:x:1000:\n"
        );
        assert_eq!(
            read(r, "etc/gshadow"),
            "root:*::\nsudo:*::alice\ndocker:!::alice\nalice:!::\n"
        );
        assert_eq!(read(r, "etc/subuid"), "alice:100000:65536\n");
        assert!(read(r, SUDOERS).ends_with("\nalice ALL=(ALL) NOPASSWD: ALL\n"));
        assert!(r.join("home/alice/.ssh").is_dir() && !r.join("home/cluster").exists());
        assert!(!read(r, "etc/passwd").contains("cluster"));
        // A second run finds nothing to do.
        assert!(!rename(r, "alice", None).unwrap());
    }

    #[test]
    fn a_rename_cut_short_is_finished_by_the_next_run() {
        let root = base_root();
        let r = root.path();
        // passwd renamed, nothing else (a power cut after the first file).
        let passwd = read(r, "etc/passwd").replace(
            "cluster:x:1000:1000::/home/cluster:",
            "alice:x:1000:1000::/home/alice:",
        );
        std::fs::write(r.join("etc/passwd"), passwd).unwrap();
        assert!(rename(r, "alice", None).unwrap());
        assert_eq!(read(r, "etc/group").matches("alice").count(), 3);
        assert!(r.join("home/alice").is_dir());
    }

    #[test]
    fn names_that_break_the_rule_or_are_taken_are_refused() {
        let root = base_root();
        let r = root.path();
        for bad in ["Alice", "1alice", "al ice", "a:b", ""] {
            let err = rename(r, bad, None).unwrap_err().to_string();
            assert!(err.contains("lower-case letter first"), "{bad}: {err}");
        }
        let err = rename(r, "consul", None).unwrap_err().to_string();
        assert!(
            err.contains("not the renamed cluster") || err.contains("exists already"),
            "{err}"
        );
        // Nothing was changed by the refusals.
        assert_eq!(current(r), "cluster");
    }

    #[test]
    fn a_dry_run_changes_nothing() {
        let root = base_root();
        let plan = Plan::default();
        assert!(rename(root.path(), "alice", Some(&plan)).unwrap());
        assert_eq!(current(root.path()), "cluster");
        assert!(
            plan.lines().iter().any(|l| l.contains("/etc/passwd")),
            "{:?}",
            plan.lines()
        );
    }
}
