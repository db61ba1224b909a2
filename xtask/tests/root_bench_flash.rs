//! Root tier: `cargo xtask bench flash`'s harness on a small image — the throttled "card" (qemu-storage-daemon's
//! throttle filter, a FUSE export, a loop device) really runs at the speed asked for, every tool's write passes the
//! read-back check, and the table has a row per tool and target.

mod support;

use std::process::{Command, Stdio};
use support::workspace;

#[test]
fn the_flash_bench_runs_every_tool_on_a_card_at_the_speed_asked() {
    assert!(
        is_root(),
        "the root tier runs as root (loop devices, FUSE, drop_caches)"
    );
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fixture.img");
    let size = cluster_lab_image::disk::unpack(
        &workspace().join("image/tests/data/raspios-like.img.xz"),
        &image,
    )
    .unwrap();
    const WRITE_MBPS: u64 = 20;
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "flash", "--no-record", "--image"])
        .arg(&image)
        .args([
            "--card-write-mbps",
            &WRITE_MBPS.to_string(),
            "--card-read-mbps",
            "40",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("| file ") || l.starts_with("| card "))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 6, "{stdout}");
    let seconds = |cell: &str| cell.trim_end_matches(" s").parse::<f64>().unwrap();
    // dd writes the whole image to the card: at 20 MB/s that takes at least size / 20e6 seconds (less a burst).
    let dd_card = rows
        .iter()
        .find(|r| r[1] == "card" && r[2].starts_with("`dd"))
        .unwrap();
    let floor = size as f64 / (WRITE_MBPS as f64 * 1e6);
    assert!(
        seconds(dd_card[4]) > 0.8 * floor,
        "the card is not throttled: dd wrote {size} bytes in {} (floor {floor:.1} s)\n{stdout}",
        dd_card[4]
    );
    // cluster-lab's flash writes less than the whole image.
    let ours = rows
        .iter()
        .find(|r| r[1] == "card" && r[2] == "`cargo xtask flash`")
        .unwrap();
    let mib = |cell: &str| cell.trim_end_matches(" MiB").parse::<f64>().unwrap();
    assert!(mib(ours[3]) < mib(dd_card[3]), "{stdout}");
    // Nothing is left behind: no loop device over the bench's card, no export.
    let loops = Command::new("losetup").arg("-a").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&loops.stdout).contains("card-export.img"),
        "{}",
        String::from_utf8_lossy(&loops.stdout)
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains("card-export.img"), "{mounts}");
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}
