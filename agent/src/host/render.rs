//! Files the agent writes onto the target: rendering templates and installing the result idempotently.
//!
//! Templates live in `agent/templates/` and are compiled in with `include_str!`. Placeholders are `{{name}}`; a
//! placeholder left without a value is an error, so a template and its caller cannot drift apart silently.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Errors from rendering or installing a file.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("template {template}: no value for placeholder {{{{{name}}}}}")]
    MissingValue {
        template: &'static str,
        name: String,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A file as it will land on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path on the target, e.g. `/etc/systemd/network/10-cluster-lab-eth0.network`.
    pub path: PathBuf,
    pub contents: String,
    /// Permission bits, e.g. 0o644.
    pub mode: u32,
    /// Group owning the file (owner stays root), for files a service user must read, e.g. Consul's config.
    pub group: Option<&'static str>,
}

/// Fill `{{name}}` placeholders in `template` (named `origin` in errors) with `values`.
pub fn fill(
    origin: &'static str,
    template: &str,
    values: &[(&str, &str)],
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| RenderError::MissingValue {
            template: origin,
            name: after.chars().take(20).collect(),
        })?;
        let name = after[..end].trim();
        let value = values
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| RenderError::MissingValue {
                template: origin,
                name: name.to_string(),
            })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

impl RenderedFile {
    /// Where this file lands under `root` (`/` on the target, a temporary directory in tests).
    pub fn target(&self, root: &Path) -> PathBuf {
        root.join(self.path.strip_prefix("/").unwrap_or(&self.path))
    }

    /// Write the file under `root` unless it already has these contents and mode. Returns whether anything changed.
    ///
    /// The write is atomic (temporary file in the same directory, fsync, rename), so a power cut leaves either the
    /// old file or the new one.
    pub fn install(&self, root: &Path) -> Result<bool, RenderError> {
        let target = self.target(root);
        let io = |action, source| RenderError::Io {
            action,
            path: target.clone(),
            source,
        };
        if let Ok(current) = std::fs::read(&target) {
            let mode = std::fs::metadata(&target)
                .map_err(|e| io("reading metadata of", e))?
                .permissions()
                .mode()
                & 0o7777;
            if current == self.contents.as_bytes()
                && mode == self.mode
                && !self.needs_chown(&target)?
            {
                return Ok(false);
            }
        }
        let dir = target.parent().unwrap_or(root);
        std::fs::create_dir_all(dir).map_err(|e| io("creating directory for", e))?;
        let gid = self.gid().map_err(|e| io("writing", e))?;
        super::atomic::write(
            &target,
            self.contents.as_bytes(),
            self.mode,
            None,
            gid.map(|g| g.as_raw()),
        )
        .map_err(|e| io("writing", e))?;
        Ok(true)
    }

    /// The numeric group id of `group`; an unknown group is an error (the package that creates it is missing).
    fn gid(&self) -> std::io::Result<Option<nix::unistd::Gid>> {
        let Some(name) = self.group else {
            return Ok(None);
        };
        match nix::unistd::Group::from_name(name)? {
            Some(g) => Ok(Some(g.gid)),
            None => Err(std::io::Error::other(format!(
                "group {name} does not exist (is its package installed?)"
            ))),
        }
    }

    fn needs_chown(&self, target: &Path) -> Result<bool, RenderError> {
        use std::os::unix::fs::MetadataExt;
        let err = |source| RenderError::Io {
            action: "checking owner of",
            path: target.to_path_buf(),
            source,
        };
        let Some(gid) = self.gid().map_err(err)? else {
            return Ok(false);
        };
        let meta = std::fs::metadata(target).map_err(err)?;
        Ok(meta.gid() != gid.as_raw())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders() {
        let out = fill("t", "a={{a}} b={{ b }}\n", &[("a", "1"), ("b", "2")]).unwrap();
        assert_eq!(out, "a=1 b=2\n");
    }

    #[test]
    fn missing_value_is_an_error() {
        let err = fill("t", "x={{nope}}", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "template t: no value for placeholder {{nope}}"
        );
    }

    #[test]
    fn install_is_idempotent_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = RenderedFile {
            path: "/etc/x/y.conf".into(),
            contents: "hello\n".into(),
            mode: 0o640,
            group: None,
        };
        assert!(file.install(dir.path()).unwrap());
        assert!(!file.install(dir.path()).unwrap());
        let target = dir.path().join("etc/x/y.conf");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "hello\n");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let changed = RenderedFile {
            contents: "bye\n".into(),
            ..file
        };
        assert!(changed.install(dir.path()).unwrap());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "bye\n");
    }
}
