//! Errors of the disk-image code. Each one names the file, partition or command it is about.

use std::path::PathBuf;

/// Anything that can go wrong reading, building or editing a disk image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: not a disk image: {reason}")]
    PartitionTable { path: PathBuf, reason: String },
    #[error("{path}: partition {index} ends at byte {end}, beyond the end of the file ({len} bytes): the image is truncated")]
    PartitionBeyondEnd {
        path: PathBuf,
        index: usize,
        end: u64,
        len: u64,
    },
    #[error("{path}: no {what} partition found (partitions: {found}); expected a FAT boot partition and an ext4 root partition in an MBR table")]
    MissingPartition {
        path: PathBuf,
        what: &'static str,
        found: String,
    },
    #[error("{path}: FAT partition {index}: {reason}")]
    Fat {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{path}: ext4 partition {index}: {reason}")]
    Ext4 {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("`{command}` could not be started: {source} (install the Debian package `{package}`)")]
    MissingTool {
        command: String,
        package: &'static str,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadInput { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = ImageError> = std::result::Result<T, E>;

/// Attach a path and a short description of the step to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path, what: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path, what: &'static str) -> Result<T> {
        self.map_err(|source| ImageError::Io {
            path: path.to_path_buf(),
            what,
            source,
        })
    }
}

impl From<cluster_lab_config::edit::EditError> for ImageError {
    fn from(e: cluster_lab_config::edit::EditError) -> Self {
        ImageError::Invalid(e.0)
    }
}
