//! Login on the target: the SSH keys and the password hash of the image's `cluster` user, from `[node]
//! ssh_authorized_keys` and `[node] password_hash` in cluster-lab.toml.
//!
//! The base image has no password anywhere (the user's is locked, root is locked, sshd takes keys only), so these
//! settings are the only way in. Keys go to `~/.ssh/authorized_keys`, merged with what is there (a key the user
//! added by hand stays; a configured key is added once). The hash replaces the user's field in `/etc/shadow`.
//! Both files are rewritten atomically and only when something differs, so a second run changes nothing. The user
//! (uid, gid, home) is looked up in the `/etc/passwd` under the given root, never in the host's user database.

use std::fs::Permissions;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::plan::Plan;

/// The login user the base image creates (uid 1000, groups sudo and docker).
pub const USER: &str = "cluster";

/// Errors from setting up login.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "user {user} is not in {path} (the base image creates it; is this a cluster-lab image?)"
    )]
    NoUser { user: String, path: PathBuf },
    #[error("{path}: {what} (fix or remove it and run `cluster-lab firstboot --force`)")]
    Refused { path: PathBuf, what: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What login should look like: the keys and the password hash from cluster-lab.toml.
#[derive(Debug, Clone, Copy)]
pub struct Login<'a> {
    pub user: &'a str,
    pub keys: &'a [String],
    pub password_hash: Option<&'a str>,
}

/// What [`Login::apply`] did (or, in a dry run, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub keys_changed: bool,
    pub password_changed: bool,
}

impl Outcome {
    pub fn changed(&self) -> bool {
        self.keys_changed || self.password_changed
    }
}

/// A user's entry in `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub uid: u32,
    pub gid: u32,
    /// The home directory as written in the file (absolute on the target).
    pub home: PathBuf,
}

/// The error for an I/O `action` on `path` (also used by [`super::login_user`]).
pub(super) fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LoginError {
    let path = path.to_path_buf();
    move |source| LoginError::Io {
        action,
        path,
        source,
    }
}

/// `path` (absolute on the target) under `root`.
pub(super) fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Look `user` up in `passwd` (the text of `/etc/passwd`).
pub fn find_user(passwd: &str, user: &str) -> Option<PasswdEntry> {
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() != 7 || fields[0] != user {
            return None;
        }
        Some(PasswdEntry {
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: PathBuf::from(fields[5]),
        })
    })
}

/// The key itself (type and base64 data) in an authorized_keys line or a `.pub` string, options and comment aside.
/// The data of every OpenSSH public key starts with `AAAA` (the length of its type name).
fn key_identity(line: &str) -> Option<(&str, &str)> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = line.split_ascii_whitespace().collect();
    fields.windows(2).find_map(|w| {
        let kind_like = ["ssh-", "ecdsa-", "sk-"]
            .iter()
            .any(|p| w[0].starts_with(p));
        (kind_like && w[1].starts_with("AAAA")).then_some((w[0], w[1]))
    })
}

/// `current` (authorized_keys as it is) with every key of `keys` it lacks appended, each once.
pub fn merge_keys(current: &str, keys: &[String]) -> String {
    let mut out = current.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    let mut present: Vec<(String, String)> = current
        .lines()
        .filter_map(key_identity)
        .map(|(t, b)| (t.to_string(), b.to_string()))
        .collect();
    for key in keys {
        let key = key.trim();
        let Some((kind, blob)) = key_identity(key) else {
            continue;
        };
        if present.iter().any(|(t, b)| t == kind && b == blob) {
            continue;
        }
        present.push((kind.to_string(), blob.to_string()));
        out.push_str(key);
        out.push('\n');
    }
    out
}

/// `shadow` (the text of `/etc/shadow`) with `user`'s password field set to `hash`; `None` when the user has no
/// entry. Every other line and field is kept as it is.
pub fn set_shadow_hash(shadow: &str, user: &str, hash: &str) -> Option<String> {
    let mut found = false;
    let mut lines: Vec<String> = Vec::new();
    for line in shadow.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if !found && fields.len() >= 2 && fields[0] == user {
            found = true;
            fields[1] = hash;
            lines.push(fields.join(":"));
        } else {
            lines.push(line.to_string());
        }
    }
    found.then(|| lines.join("\n") + "\n")
}

impl Login<'_> {
    /// Bring keys and password to what is configured under `root`; given a `plan` (a dry run), only record what
    /// would change.
    pub fn apply(&self, root: &Path, plan: Option<&Plan>) -> Result<Outcome, LoginError> {
        let mut outcome = Outcome {
            keys_changed: false,
            password_changed: false,
        };
        if self.keys.is_empty() && self.password_hash.is_none() {
            return Ok(outcome);
        }
        if !self.keys.is_empty() {
            let passwd_path = root.join("etc/passwd");
            let passwd =
                std::fs::read_to_string(&passwd_path).map_err(io("reading", &passwd_path))?;
            let entry = find_user(&passwd, self.user).ok_or_else(|| LoginError::NoUser {
                user: self.user.to_string(),
                path: passwd_path.clone(),
            })?;
            outcome.keys_changed = self.install_keys(root, &entry, plan)?;
        }
        if let Some(hash) = self.password_hash {
            outcome.password_changed = self.set_password(root, hash, plan)?;
        }
        Ok(outcome)
    }

    fn install_keys(
        &self,
        root: &Path,
        entry: &PasswdEntry,
        plan: Option<&Plan>,
    ) -> Result<bool, LoginError> {
        let ssh_dir = under(root, &entry.home).join(".ssh");
        let shown = entry.home.join(".ssh/authorized_keys");
        let dir_changed = ensure_dir(&ssh_dir, entry, plan)?;
        let path = ssh_dir.join("authorized_keys");
        let (current, meta) = match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_file() => {
                return Err(LoginError::Refused {
                    path,
                    what: "not a regular file".into(),
                })
            }
            Ok(m) => (
                std::fs::read_to_string(&path).map_err(io("reading", &path))?,
                Some(m),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), None),
            Err(e) => return Err(io("reading", &path)(e)),
        };
        let wanted = merge_keys(&current, self.keys);
        let right_file = meta.as_ref().is_some_and(|m| {
            m.mode() & 0o7777 == 0o600 && m.uid() == entry.uid && m.gid() == entry.gid
        });
        if wanted == current && right_file {
            return Ok(dir_changed);
        }
        if let Some(plan) = plan {
            plan.note(format!(
                "would write {} ({} configured keys)",
                shown.display(),
                self.keys.len()
            ));
            return Ok(true);
        }
        write_atomic(&path, &wanted, 0o600, (entry.uid, entry.gid))?;
        Ok(true)
    }

    fn set_password(
        &self,
        root: &Path,
        hash: &str,
        plan: Option<&Plan>,
    ) -> Result<bool, LoginError> {
        let path = root.join("etc/shadow");
        let shadow = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
        let wanted =
            set_shadow_hash(&shadow, self.user, hash).ok_or_else(|| LoginError::NoUser {
                user: self.user.to_string(),
                path: path.clone(),
            })?;
        if wanted == shadow {
            return Ok(false);
        }
        if let Some(plan) = plan {
            plan.note(format!(
                "would set the password hash of {} in /etc/shadow",
                self.user
            ));
            return Ok(true);
        }
        // Keep the file's mode and owner (0640 root:shadow on Debian).
        let meta = std::fs::metadata(&path).map_err(io("reading metadata of", &path))?;
        write_atomic(
            &path,
            &wanted,
            meta.mode() & 0o7777,
            (meta.uid(), meta.gid()),
        )?;
        Ok(true)
    }
}

/// Make `dir` a directory with mode 0700 owned by the user. Returns whether anything changed (or would).
fn ensure_dir(dir: &Path, entry: &PasswdEntry, plan: Option<&Plan>) -> Result<bool, LoginError> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(LoginError::Refused {
                path: dir.to_path_buf(),
                what: "not a directory".into(),
            })
        }
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading metadata of", dir)(e)),
    };
    let right = meta.as_ref().is_some_and(|m| {
        m.mode() & 0o7777 == 0o700 && m.uid() == entry.uid && m.gid() == entry.gid
    });
    if right {
        return Ok(false);
    }
    if let Some(plan) = plan {
        plan.note(format!(
            "would set {} to mode 0700, owned by the user",
            entry.home.join(".ssh").display()
        ));
        return Ok(true);
    }
    if meta.is_none() {
        std::fs::create_dir(dir).map_err(io("creating", dir))?;
    }
    std::fs::set_permissions(dir, Permissions::from_mode(0o700))
        .map_err(io("setting mode of", dir))?;
    std::os::unix::fs::lchown(dir, Some(entry.uid), Some(entry.gid))
        .map_err(io("changing owner of", dir))?;
    Ok(true)
}

/// Replace `path` with `contents` atomically, with `mode` and `owner` set before the rename.
fn write_atomic(
    path: &Path,
    contents: &str,
    mode: u32,
    owner: (u32, u32),
) -> Result<(), LoginError> {
    super::atomic::write(
        path,
        contents.as_bytes(),
        mode,
        Some(owner.0),
        Some(owner.1),
    )
    .map_err(io("writing", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";

    #[test]
    fn finds_the_user_in_passwd() {
        let passwd =
            "root:x:0:0:root:/root:/bin/bash\ncluster:x:1000:1000:,,,:/home/cluster:/bin/bash\n";
        assert_eq!(
            find_user(passwd, "cluster"),
            Some(PasswdEntry {
                uid: 1000,
                gid: 1000,
                home: "/home/cluster".into()
            })
        );
        assert_eq!(find_user(passwd, "clust"), None);
    }

    #[test]
    fn merge_keeps_hand_added_keys_and_adds_each_key_once() {
        let hand = "# mine\nfrom=\"10.0.0.0/8\" ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB hand";
        let keys = vec![
            ED.to_string(),
            // Same key, another comment: not added twice.
            ED.replace("me@laptop", "other"),
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAB flashed".to_string(),
        ];
        let out = merge_keys(hand, &keys);
        assert_eq!(out, format!("{hand}\n{ED}\n"));
        assert_eq!(merge_keys(&out, &keys), out);
    }

    #[test]
    fn shadow_field_is_replaced_for_the_user_only() {
        let shadow = "root:*:19000:0:99999:7:::\ncluster:!:19000:0:99999:7:::\n";
        let out = set_shadow_hash(shadow, "cluster", "$y$j9T$abc").unwrap();
        assert_eq!(
            out,
            "root:*:19000:0:99999:7:::\ncluster:$y$j9T$abc:19000:0:99999:7:::\n"
        );
        assert_eq!(set_shadow_hash(shadow, "nobody", "$y$x"), None);
    }
}
