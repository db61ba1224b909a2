//! `cluster-lab.toml`: the one file a user edits.
//!
//! Built in three steps: wire structs (every field optional, unknown keys rejected) → defaults →
//! validated [`Settings`].

use std::path::Path;

mod duration;
mod location;
mod render;
mod settings;
mod types;
mod validate;
mod wire;

pub use duration::{format_duration, parse_duration};
pub use settings::*;
pub use validate::{
    default_range, first_host, DECLINE_QUARANTINE_MAX, DNS_MAX, LEASE_TIME_MAX, LEASE_TIME_MIN,
};

/// The complete, commented default `cluster-lab.toml` (what `cluster-lab config default` prints).
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Name of the file on the boot partition.
pub const FILE_NAME: &str = "cluster-lab.toml";

/// A configuration error a person will read: which file, where, which key, and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
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
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
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
    let mut message = err.message().trim().replace('\n', "; ");
    if let Some(rest) = message.strip_prefix("unknown field") {
        message = format!("unknown key{rest}");
    } else if let Some(rest) = message.strip_prefix("unknown variant") {
        message = format!("unknown value{rest}");
    }
    message = message.replace("expected a sequence", "expected an array such as [\"...\"]");
    if let Some(i) = message.find("expected struct Wire") {
        message.replace_range(i.., "expected a table");
    }
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
