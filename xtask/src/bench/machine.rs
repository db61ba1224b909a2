//! What the numbers were measured on: cores, memory, kernel, load, and the file system holding the lease files.

use std::path::Path;

use xshell::{cmd, Shell};

#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub mem_gib: f64,
    pub kernel: String,
    /// 1-minute load average when the bench started (other work on the machine skews the numbers).
    pub load: String,
    /// File system type of the directory holding the lease files, e.g. "ext4".
    pub lease_fs: String,
}

pub fn describe(sh: &Shell, lease_dir: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into()),
        mem_gib: mem_kib / (1024.0 * 1024.0),
        kernel: cmd!(sh, "uname -r").quiet().read().unwrap_or_default(),
        load: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_default(),
        lease_fs: cmd!(sh, "findmnt -n -o FSTYPE --target {lease_dir}")
            .quiet()
            .read()
            .unwrap_or_else(|_| "unknown".into()),
    }
}
