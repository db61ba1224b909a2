//! The durable lease store: an append-only log, one JSON record per line.
//!
//! An ACK is only sent after its record is written and `fdatasync`ed; records of every packet handled in one loop
//! iteration share one sync (group commit). On start, and whenever the log has grown well past the live state, it
//! is compacted: the live state is written to a temporary file, synced, renamed over the log, and the directory
//! synced. A torn last line (crash mid-write) is ignored when reading, and dropped by the compaction.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// First line of a compacted log.
const FORMAT: &str = "cluster-lab-leases";
const VERSION: u32 = 1;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// File header.
    Format { format: String, version: u32 },
    /// `client` holds `ip` until `expires` (Unix seconds).
    Lease {
        ip: Ipv4Addr,
        /// `id:<hex>` (client identifier) or `hw:<hex>` (hardware address).
        client: String,
        /// Hardware address, colon-separated hex.
        hw: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostname: Option<String>,
        expires: u64,
    },
    /// `client` gave `ip` back at `at`.
    Release {
        ip: Ipv4Addr,
        client: String,
        at: u64,
    },
    /// `ip` was declined (in use by someone else) and stays out of the pool until `until`.
    Decline { ip: Ipv4Addr, until: u64 },
}

/// What reading the log found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<Record>,
    /// A last line without its newline: a write cut short by a crash.
    pub torn_tail: bool,
    /// Complete lines that did not parse, with their line numbers.
    pub bad_lines: Vec<usize>,
}

/// The open lease log.
#[derive(Debug)]
pub struct LeaseLog {
    path: PathBuf,
    file: File,
    pending: Vec<u8>,
    /// Records in the file now.
    lines: usize,
    /// A failed write may have left a partial line: start the next write on a fresh line.
    broken: bool,
}

impl LeaseLog {
    /// Read the log at `path` (missing is empty) and open it for appending. Call [`Self::compact`] next.
    pub fn open(path: &Path) -> io::Result<(LeaseLog, Loaded)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let loaded = match File::open(path) {
            Ok(f) => read(BufReader::new(f))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::default(),
            Err(e) => return Err(e),
        };
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let lines = loaded.records.len();
        Ok((
            LeaseLog {
                path: path.to_path_buf(),
                file,
                pending: Vec::with_capacity(64 * 1024),
                lines,
                broken: false,
            },
            loaded,
        ))
    }

    /// Path of the log.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records in the file, including those superseded by later ones.
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// Queue `record`; it is on disk after the next [`Self::commit`].
    pub fn append(&mut self, record: &Record) {
        // Serializing these plain structs cannot fail.
        if serde_json::to_writer(&mut self.pending, record).is_ok() {
            self.pending.push(b'\n');
            self.lines += 1;
        }
    }

    /// Whether records are waiting for [`Self::commit`].
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Write every queued record and sync it to disk.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.broken {
            // The partial line becomes one unreadable line, skipped on load; the records after it stay whole.
            self.pending.insert(0, b'\n');
        }
        let result = self
            .file
            .write_all(&self.pending)
            .and_then(|()| self.file.sync_data());
        self.pending.clear();
        self.broken = result.is_err();
        result
    }

    /// Replace the log with `records` (the live state): temp file, fsync, rename, fsync of the directory.
    pub fn compact(&mut self, records: impl IntoIterator<Item = Record>) -> io::Result<()> {
        self.commit()?;
        let header = Record::Format {
            format: FORMAT.into(),
            version: VERSION,
        };
        let mut lines = 0;
        // Readable by all, as before: addresses, MACs and hostnames, nothing secret.
        crate::host::atomic::write_with(&self.path, 0o644, None, None, |out| {
            for r in std::iter::once(header).chain(records) {
                serde_json::to_writer(&mut *out, &r)?;
                out.write_all(b"\n")?;
                lines += 1;
            }
            Ok(())
        })?;
        // From here on the old file is unlinked: switch to the new one before anything else can fail.
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.lines = lines;
        self.broken = false;
        Ok(())
    }
}

/// Parse a log; stops at nothing, skips what it cannot read.
pub fn read(mut input: impl BufRead) -> io::Result<Loaded> {
    let mut loaded = Loaded::default();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        number += 1;
        if line.last() != Some(&b'\n') {
            loaded.torn_tail = true;
            break;
        }
        let text = &line[..line.len() - 1];
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(text) {
            Ok(Record::Format { .. }) => {}
            Ok(r) => loaded.records.push(r),
            Err(_) => loaded.bad_lines.push(number),
        }
    }
    Ok(loaded)
}

#[cfg(test)]
#[path = "leases_tests.rs"]
mod tests;
