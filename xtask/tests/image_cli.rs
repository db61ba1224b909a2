//! `cargo xtask image` and `cargo xtask flash` end to end on the Raspberry Pi OS-like fixture
//! (image/tests/data/raspios-like.img.xz): outputs, checksums, injected files, hostname on the card, and
//! the refusals (no --yes without a terminal, the system disk, a bad hostname).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use support::workspace;

use cluster_lab_config::edit;
use cluster_lab_image::{disk, ext4, fat};

fn xtask(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .stdin(Stdio::null())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .expect("running xtask");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_secret_file_builds_more_cards_for_the_same_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let base = workspace().join("image/tests/data/raspios-like.img.xz");
    let agent = dir.path().join("cluster-lab");
    stand_in_agent(&agent, 183);
    let file = dir.path().join("lab.secret");
    let file_arg = file.to_str().unwrap();
    let opts = ["--compress", "none", "--secret-file", file_arg];

    // The first build creates the file (0600) with a fresh secret and uses it.
    let (ok, log) = image_arm64(&base, &agent, &dir.path().join("a"), &opts);
    assert!(ok, "{log}");
    assert!(log.contains("wrote a fresh cluster secret"), "{log}");
    let kept = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(kept.len(), 64);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let on_card = |img: &str| {
        edit::secret(&toml_on_card(&dir.path().join(img)))
            .unwrap()
            .unwrap()
    };
    assert_eq!(on_card("a.img"), kept);

    // A later build reads it: same cluster.
    let (ok, log) = image_arm64(&base, &agent, &dir.path().join("b"), &opts);
    assert!(ok && !log.contains("wrote a fresh"), "{log}");
    assert_eq!(on_card("b.img"), kept);

    // A secret the agent would reject stops the build before anything is written.
    std::fs::write(&file, "short\n").unwrap();
    let (ok, log) = image_arm64(&base, &agent, &dir.path().join("c"), &opts);
    assert!(
        !ok && log.contains("lab.secret") && log.contains("at least 32"),
        "{log}"
    );
    assert!(!dir.path().join("c.img").exists());
}

/// `cargo xtask image --arch arm64 --base BASE --agent AGENT -o OUT EXTRA…`.
fn image_arm64(base: &Path, agent: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "image",
        "--arch",
        "arm64",
        "--base",
        base.to_str().unwrap(),
        "--agent",
        agent.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask(&args)
}

/// A minimal little-endian ELF64 header for `machine` (183 = AArch64, 62 = x86-64): enough for the
/// architecture check `cargo xtask image` does on `--agent`.
fn stand_in_agent(path: &Path, machine: u16) {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1;
    h[16] = 2; // ET_EXEC
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h[54] = 56; // program header entry size, no entries
    h.extend_from_slice(b"stand-in agent");
    std::fs::write(path, h).unwrap();
}

fn toml_on_card(img: &Path) -> String {
    let located = disk::locate(img).unwrap();
    let vol = fat::FatVolume::open(img, &located.boot, false).unwrap();
    String::from_utf8(vol.read(cluster_lab_config::FILE_NAME).unwrap().unwrap()).unwrap()
}

#[test]
fn image_then_flash_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = workspace().join("image/tests/data/raspios-like.img.xz");
    let agent = dir.path().join("cluster-lab");
    stand_in_agent(&agent, 183);
    let out = dir.path().join("out/lab");
    let (ok, log) = image_arm64(&base, &agent, &out, &[]);
    assert!(ok, "{log}");
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "lab.img",
            "lab.img.bmap",
            "lab.img.zst",
            "lab.rpi-imager.json",
            "lab.sha256"
        ],
        "{log}"
    );
    // The image and its compressed copy carry the cluster secret: owner only.
    for name in ["lab.img", "lab.img.zst"] {
        let mode = std::fs::metadata(dir.path().join("out").join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg("lab.sha256")
        .current_dir(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // Raspberry Pi Imager's OS list describes these very files: sizes and digests as sha256sum sees them.
    let sums = std::fs::read_to_string(dir.path().join("out/lab.sha256")).unwrap();
    let digest_of = |name: &str| {
        sums.lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .and_then(|l| l.split_whitespace().next())
            .unwrap()
            .to_string()
    };
    let list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/lab.rpi-imager.json")).unwrap(),
    )
    .unwrap();
    let os = &list["os_list"][0];
    assert_eq!(os["extract_sha256"], digest_of("lab.img"));
    assert_eq!(os["image_download_sha256"], digest_of("lab.img.zst"));
    let size = |name: &str| {
        std::fs::metadata(dir.path().join("out").join(name))
            .unwrap()
            .len()
    };
    assert_eq!(os["extract_size"], size("lab.img"));
    assert_eq!(os["image_download_size"], size("lab.img.zst"));
    assert_eq!(os["init_format"], "cloudinit");
    assert!(
        os["url"].as_str().unwrap().ends_with("/out/lab.img.zst"),
        "{os}"
    );

    let img = dir.path().join("out/lab.img");
    let located = disk::locate(&img).unwrap();
    let st = ext4::stat_all(
        &img,
        &located.root,
        &[
            "/usr/bin/cluster-lab",
            "/usr/lib/systemd/system/cluster-lab-firstboot.service",
            "/etc/systemd/system/multi-user.target.wants/cluster-lab-firstboot.service",
        ],
    )
    .unwrap();
    assert_eq!(
        st[0]
            .as_ref()
            .map(|s| (s.kind.as_str(), s.mode, s.uid, s.gid)),
        Some(("regular", 0o755, 0, 0))
    );
    assert_eq!(st[1].as_ref().map(|s| (s.mode, s.uid)), Some((0o644, 0)));
    assert_eq!(st[2].as_ref().map(|s| s.kind.as_str()), Some("symlink"));
    let first = toml_on_card(&img);
    let secret = edit::secret(&first).unwrap().expect("secret set");
    assert_eq!(secret.len(), 64);

    // A second build gets a different secret.
    let (ok, log) = image_arm64(
        &base,
        &agent,
        &dir.path().join("out/lab2"),
        &["--compress", "none"],
    );
    assert!(ok, "{log}");
    let second = edit::secret(&toml_on_card(&dir.path().join("out/lab2.img")))
        .unwrap()
        .unwrap();
    assert_ne!(secret, second);

    let card = dir.path().join("card.img");
    // No terminal and no --yes: refused, nothing written.
    let (ok, log) = xtask(&[
        "flash",
        "--hostname",
        "node1",
        img.to_str().unwrap(),
        card.to_str().unwrap(),
    ]);
    assert!(!ok && log.contains("pass --yes"), "{log}");
    assert!(!card.exists());
    let (ok, log) = xtask(&[
        "flash",
        "--hostname",
        "node_1",
        "--yes",
        img.to_str().unwrap(),
        card.to_str().unwrap(),
    ]);
    assert!(!ok && log.contains("hostname \"node_1\""), "{log}");

    let key = dir.path().join("id.pub");
    std::fs::write(
        &key,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA test@example\n",
    )
    .unwrap();
    let (ok, log) = xtask(&[
        "flash",
        "--hostname",
        "node1",
        "--ssh-key",
        key.to_str().unwrap(),
        "--yes",
        dir.path().join("out/lab.img.zst").to_str().unwrap(),
        card.to_str().unwrap(),
    ]);
    assert!(ok, "{log}");
    assert!(log.contains("verified"), "{log}");
    // The compressed image is written by the block map the build put beside it.
    assert!(
        log.contains("MiB of data in") && log.contains("block map") && log.contains("lab.img.bmap"),
        "{log}"
    );
    let text = toml_on_card(&card);
    assert!(text.contains("hostname = \"node1\""), "{text}");
    assert!(
        text.contains("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA test@example"),
        "{text}"
    );
    assert_eq!(
        edit::secret(&text).unwrap().as_deref(),
        Some(secret.as_str())
    );
}

#[test]
fn agent_for_another_board_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("a");
    stand_in_agent(&agent, 62);
    let base = workspace().join("image/tests/data/raspios-like.img.xz");
    let (ok, log) = image_arm64(&base, &agent, &dir.path().join("o"), &[]);
    assert!(
        !ok && log.contains("x86-64") && log.contains("AArch64"),
        "{log}"
    );
}

#[test]
fn flash_refuses_the_system_disk() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let dev = mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 1 && f[1] == "/" && f[0].starts_with("/dev/"))
        .map(|f| f[0].to_string())
        .expect("no /dev source for / in /proc/self/mounts");
    let img = workspace().join("image/tests/data/raspios-like.img.xz");
    let (ok, log) = xtask(&[
        "flash",
        "--hostname",
        "node1",
        "--yes",
        img.to_str().unwrap(),
        &dev,
    ]);
    assert!(
        !ok && log.contains("refusing to overwrite a disk in use"),
        "{log}"
    );
}

#[test]
fn image_with_a_corrupt_base_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("junk.img");
    std::fs::write(&base, vec![0x5a; 4096]).unwrap();
    let agent = dir.path().join("a");
    stand_in_agent(&agent, 183);
    let out = dir.path().join("o");
    let (ok, log) = image_arm64(&base, &agent, &out, &[]);
    assert!(!ok && log.contains("no MBR signature"), "{log}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 2, "only the inputs remain: {left:?}");
}
