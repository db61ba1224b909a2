//! Root tier: the flashable image from the real amd64 base (`cargo xtask base`, needs root) with the real
//! agent (`cargo xtask agent` through `cargo xtask image`): outputs and checksums, fsck of both
//! filesystems, the injected files listed with their modes and owners, the agent's own `config check` on
//! the generated cluster-lab.toml, then a flash to a file with a hostname.
//!
//! Slow (minutes on a cold cache): run with `cargo xtask test --tier root`. Without root it fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::workspace;

use cluster_lab_config::edit;
use cluster_lab_image::{disk, ext4, fat};

fn xtask(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(workspace())
        .args(args)
        .stdin(Stdio::null())
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running xtask");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr,
    )
}

/// The amd64 base. root_base.rs builds it in the same tier run; wait for that build rather than racing
/// it in the same work directory, and build it here only if it never shows up.
fn amd64_base() -> PathBuf {
    let latest = workspace().join("build/base/amd64.img");
    let started = Instant::now();
    while !latest.exists() && started.elapsed() < Duration::from_secs(20 * 60) {
        std::thread::sleep(Duration::from_secs(5));
    }
    if !latest.exists() {
        let (ok, _, err) = xtask(&["base", "--arch", "amd64"]);
        assert!(ok, "cargo xtask base --arch amd64 failed: {err}");
    }
    std::fs::canonicalize(&latest).unwrap()
}

fn card_toml(img: &Path) -> String {
    let located = disk::locate(img).unwrap();
    let vol = fat::FatVolume::open(img, &located.boot, false).unwrap();
    String::from_utf8(vol.read(cluster_lab_config::FILE_NAME).unwrap().unwrap()).unwrap()
}

fn agent_check(agent: &Path, toml: &str, dir: &Path) -> String {
    let f = dir.join("check.toml");
    std::fs::write(&f, toml).unwrap();
    let out = Command::new(agent)
        .args(["config", "check"])
        .arg(&f)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "cluster-lab config check rejects the image's file: {text}"
    );
    text
}

#[test]
fn amd64_image_from_the_real_base_and_agent() {
    assert!(
        cluster_lab_image::host_tools::is_root(),
        "this root-tier test needs the amd64 base, which `cargo xtask base` builds with mmdebstrap as root: \
         run it as root (sudo -E cargo xtask test --tier root)"
    );
    let base = amd64_base();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cluster-lab-amd64");
    let (ok, stdout, err) = xtask(&[
        "image",
        "--arch",
        "amd64",
        "--base",
        base.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "cargo xtask image failed: {err}");
    let img = PathBuf::from(stdout.lines().last().unwrap());
    assert_eq!(img, dir.path().join("cluster-lab-amd64.img"));
    let sums = Command::new("sha256sum")
        .arg("-c")
        .arg("cluster-lab-amd64.sha256")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        sums.status.success(),
        "{}",
        String::from_utf8_lossy(&sums.stdout)
    );
    let zst = std::fs::metadata(dir.path().join("cluster-lab-amd64.img.zst"))
        .unwrap()
        .len();
    assert!(
        zst < 400_000_000,
        "compressed image is {zst} bytes, over the 400 MB target"
    );

    let located = disk::locate(&img).unwrap();
    fat::check(&img, &located.boot).unwrap();
    ext4::check(&img, &located.root).unwrap();

    // Every file under overlays/ is in the image, root-owned, 0644 or 0755 (executables).
    let overlay = workspace().join("overlays");
    let mut payload = cluster_lab_image::inject::Payload::default();
    payload.add_overlay(&overlay).unwrap();
    let files: Vec<&ext4::Entry> = payload
        .root
        .iter()
        .filter(|e| !matches!(e.content, ext4::Content::Dir))
        .collect();
    let mut paths: Vec<&str> = files.iter().map(|e| e.dest.as_str()).collect();
    paths.push("/usr/bin/cluster-lab");
    let st = ext4::stat_all(&img, &located.root, &paths).unwrap();
    for (p, s) in paths.iter().zip(&st) {
        let s = s
            .as_ref()
            .unwrap_or_else(|| panic!("{p} missing from the image"));
        assert_eq!((s.uid, s.gid), (0, 0), "{p}");
        eprintln!(
            "{p}: {} {:o} {}:{} {} bytes",
            s.kind, s.mode, s.uid, s.gid, s.size
        );
    }
    for (e, s) in files.iter().zip(&st) {
        assert_eq!(s.as_ref().unwrap().mode, e.mode & 0o7777, "{}", e.dest);
    }
    assert_eq!(st.last().unwrap().as_ref().unwrap().mode, 0o755);

    // The injected agent is the real x86-64 one, and it accepts the generated cluster-lab.toml.
    let agent_bytes = ext4::read_file(&img, &located.root, "/usr/bin/cluster-lab")
        .unwrap()
        .unwrap();
    assert_eq!(&agent_bytes[..4], b"\x7fELF");
    assert_eq!(
        u16::from_le_bytes([agent_bytes[18], agent_bytes[19]]),
        62,
        "x86-64"
    );
    let agent = dir.path().join("agent");
    std::fs::write(&agent, &agent_bytes).unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let text = card_toml(&img);
    assert_eq!(edit::secret(&text).unwrap().map(|s| s.len()), Some(64));
    agent_check(&agent, &text, dir.path());

    // Flash to a file with a hostname: the agent sees it.
    let card = dir.path().join("card.img");
    let (ok, _, err) = xtask(&[
        "flash",
        "--hostname",
        "ci-node1",
        "--yes",
        img.to_str().unwrap(),
        card.to_str().unwrap(),
    ]);
    assert!(ok, "cargo xtask flash failed: {err}");
    let checked = agent_check(&agent, &card_toml(&card), dir.path());
    assert!(checked.contains("hostname = \"ci-node1\""), "{checked}");
}
