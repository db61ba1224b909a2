//! Running host tools (mke2fs, debugfs, e2fsck, fsck.vfat): one helper whose errors carry the command and stderr.

use std::ffi::OsStr;
use std::process::{Command, Output};

use crate::error::{ImageError, Result};

/// Debian package that provides a host tool, for "install X" hints.
fn package_of(program: &str) -> &'static str {
    match program {
        "fsck.vfat" | "mkfs.vfat" => "dosfstools",
        "mcopy" | "mdir" => "mtools",
        "blockdev" | "partx" | "sfdisk" => "util-linux",
        _ => "e2fsprogs",
    }
}

/// Render a command line for messages.
pub fn render(program: &str, args: &[&OsStr]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Run `program args…`, returning its output; a non-zero exit becomes [`ImageError::Command`].
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    let out = output(program, args)?;
    if !out.status.success() {
        let args: Vec<&OsStr> = args.iter().map(|a| a.as_ref()).collect();
        return Err(ImageError::Command {
            command: render(program, &args),
            status: out.status.to_string(),
            // Some tools (fsck.vfat, e2fsck) report on stdout: keep both.
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
            .trim()
            .to_string(),
        });
    }
    Ok(out)
}

/// Run `program args…` and return its output whatever the exit status (for tools such as debugfs
/// whose exit status says nothing).
pub fn output<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    // mtools refuses images whose geometry it finds odd unless told not to check.
    cmd.env("MTOOLS_SKIP_CHECK", "1");
    // Host tools live in /usr/sbin, which is not on every user's PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<std::path::PathBuf> = std::env::split_paths(&path).collect();
    for extra in ["/usr/sbin", "/sbin"] {
        if !dirs.iter().any(|d| d == std::path::Path::new(extra)) {
            dirs.push(extra.into());
        }
    }
    if let Ok(joined) = std::env::join_paths(dirs) {
        cmd.env("PATH", joined);
    }
    tracing::debug!(command = %render(program, &args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()), "running");
    cmd.output().map_err(|source| ImageError::MissingTool {
        command: program.to_string(),
        package: package_of(program),
        source,
    })
}
