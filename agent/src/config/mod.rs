//! `cluster-lab.toml`: the one file a user edits.
//!
//! Built in three steps: wire structs (every field optional, unknown keys rejected) → defaults →
//! validated [`Settings`].

use std::path::Path;

mod settings;

pub use settings::*;

/// A configuration error a person will read: which file, where, which key, and what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
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
    pub fn parse(_text: &str, _origin: &Path) -> Result<Settings, ConfigError> {
        // Placeholder until the wire/merge/validate steps land: defaults only.
        Ok(Settings::default())
    }
}
