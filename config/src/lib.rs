//! `cluster-lab.toml`: the one file a user edits, and the one home of its schema.
//!
//! Read in three steps: wire structs (every field optional, unknown keys rejected) → defaults →
//! validated [`Settings`], which keep the validated types ([`Hostname`], [`Secret`], [`SshKey`]). The agent reads
//! it on the card; the image library and `cargo xtask image`/`flash` edit it in place through [`edit`], with the
//! same rules.

use std::path::Path;

mod duration;
pub mod edit;
mod location;
mod render;
mod settings;
mod types;
mod validate;
mod wire;

pub use duration::{format_duration, parse_duration};
pub use settings::*;
pub use types::{
    ClusterName, Hostname, InterfaceName, PasswordHash, Secret, SshKey, VlanId, SECRET_MIN,
    SSH_KEY_TYPES,
};
pub use validate::{
    default_range, first_host, DECLINE_QUARANTINE_MAX, DNS_MAX, LEASE_TIME_MAX, LEASE_TIME_MIN,
};

/// The complete, commented default `cluster-lab.toml` (what `cluster-lab config default` prints).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Name of the file on the boot partition.
pub const FILE_NAME: &str = "cluster-lab.toml";

/// Where the file is looked for on a running node, in order: the boot partition as Debian's
/// raspi-firmware mounts it, then a plain `/boot`.
pub const BOOT_PATHS: [&str; 2] = ["/boot/firmware/cluster-lab.toml", "/boot/cluster-lab.toml"];

/// The first of [`BOOT_PATHS`] that exists.
pub fn find_on_boot_partition() -> Option<std::path::PathBuf> {
    first_existing(BOOT_PATHS.iter().map(Path::new))
}

/// The first of `candidates` that exists.
fn first_existing<'a>(
    candidates: impl IntoIterator<Item = &'a Path>,
) -> Option<std::path::PathBuf> {
    candidates
        .into_iter()
        .find(|p| p.exists())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod lookup_tests {
    use super::*;

    #[test]
    fn first_existing_config_wins() {
        let dir = tempfile::tempdir().unwrap();
        let firmware = dir.path().join("firmware.toml");
        let boot = dir.path().join("boot.toml");
        assert_eq!(first_existing([firmware.as_path(), boot.as_path()]), None);
        std::fs::write(&boot, "").unwrap();
        assert_eq!(
            first_existing([firmware.as_path(), boot.as_path()]),
            Some(boot.clone())
        );
        std::fs::write(&firmware, "").unwrap();
        assert_eq!(
            first_existing([firmware.as_path(), boot.as_path()]),
            Some(firmware)
        );
    }
}

/// A configuration error a person will read: which file, where, which key, and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The io error is part of the message, not a `source`, so a printed chain does not say it twice.
    #[error("reading {path}: {error}")]
    Read {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    /// A value or key that is not allowed, with the dotted key it belongs to.
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// Text that is not TOML at all, where no key could be told.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        path: std::path::PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl ConfigError {
    /// The dotted key the error is about, when known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }

    /// 1-based line and column in the file, when the error points into it.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ConfigError::Invalid { line, column, .. }
            | ConfigError::Syntax { line, column, .. } => Some((*line, *column)),
            ConfigError::Read { .. } => None,
        }
    }
}

impl Settings {
    /// Read and validate a `cluster-lab.toml`.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Settings::parse(&text, path)
    }

    /// Validate TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Settings, ConfigError> {
        let wire: wire::WireFile = match toml::from_str(text) {
            Ok(wire) => wire,
            Err(err) => return Err(toml_error(text, origin, &err)),
        };
        validate::settings(wire).map_err(|p| {
            let (line, column) = p
                .span
                .map_or((1, 1), |span| location::line_col(text, span.start));
            ConfigError::Invalid {
                path: origin.to_path_buf(),
                line,
                column,
                key: p.key,
                message: p.message,
            }
        })
    }
}

/// serde's wording in TOML's terms, with a suggestion for a misspelt key or value.
fn reword(message: &str) -> String {
    let mut message = message.trim().replace('\n', "; ");
    let unknown = ["unknown field", "unknown variant"]
        .iter()
        .find(|p| message.starts_with(*p));
    if let Some(prefix) = unknown {
        if let Some(hint) = did_you_mean(&message) {
            message.push_str(&format!("; did you mean `{hint}`?"));
        }
        let word = if *prefix == "unknown field" {
            "unknown key"
        } else {
            "unknown value"
        };
        message = format!("{word}{}", &message[prefix.len()..]);
    }
    message = message.replace("expected a sequence", "expected an array such as [\"...\"]");
    if let Some(i) = message.find("expected struct Wire") {
        message.replace_range(i.., "expected a table");
    }
    message
}

/// For "unknown field `vlna`, expected one of `vlan`, ...": the allowed name closest to the given one.
fn did_you_mean(message: &str) -> Option<String> {
    let mut quoted = message.split('`').skip(1).step_by(2);
    let given = quoted.next()?;
    quoted
        .map(|c| (edit_distance(given, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// A syntax, type or single-value error from the TOML deserializer, placed and named.
fn toml_error(text: &str, origin: &Path, err: &toml::de::Error) -> ConfigError {
    let offset = err.span().map_or(0, |s| s.start);
    let (line, column) = location::line_col(text, offset);
    let syntax = toml::de::DeTable::parse(text).is_err();
    let key = if syntax {
        location::key_on_line(text, offset)
    } else {
        location::key_at(text, offset)
    };
    let mut message = reword(err.message());
    if syntax {
        message = format!("not valid TOML: {message}");
    }
    match key {
        Some(key) => ConfigError::Invalid {
            path: origin.to_path_buf(),
            line,
            column,
            key,
            message,
        },
        None => ConfigError::Syntax {
            path: origin.to_path_buf(),
            line,
            column,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_closest_key() {
        let m = "unknown field `vlna`, expected one of `interface`, `vlan`, `subnet`, `master`";
        assert_eq!(
            reword(m),
            "unknown key `vlna`, expected one of `interface`, `vlan`, `subnet`, `master`; \
             did you mean `vlan`?"
        );
        let m = "unknown variant `mater`, expected one of `auto`, `master`, `node`";
        assert!(
            reword(m).ends_with("did you mean `master`?"),
            "{}",
            reword(m)
        );
        let m = "unknown field `colour`, expected one of `interface`, `vlan`, `subnet`, `master`";
        assert!(!reword(m).contains("did you mean"), "{}", reword(m));
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("vlna", "vlan"), 2);
        assert_eq!(edit_distance("lease_tme", "lease_time"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
