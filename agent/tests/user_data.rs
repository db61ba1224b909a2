//! A card personalised with Raspberry Pi Imager: the `user-data` files in the shapes Imager writes them
//! (`tests/data/user-data/`), applied by first boot's login and timezone steps to a scratch root that holds the
//! account files as the base image leaves them; and a malformed file stopping `cluster-lab firstboot` before any
//! change, through the real binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use cluster_lab::config::Settings;
use cluster_lab::firstboot::{Environment, Firstboot};
use cluster_lab::host::hostname::Hostname;
use cluster_lab::host::user_data::UserData;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/user-data")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The account files as the base image's `useradd --create-home --groups sudo,docker cluster` leaves them, the
/// image's sudo rule, and a zoneinfo with Europe/Berlin.
fn base_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in [
        "etc/sudoers.d",
        "home/cluster",
        "usr/share/zoneinfo/Europe",
        "usr/share/zoneinfo/Etc",
    ] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (1000, 1000)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };
    let files = [
        (
            "etc/passwd".to_string(),
            format!(
                "root:x:0:0:root:/root:/bin/bash\ncluster:x:{uid}:{gid}::/home/cluster:/bin/bash\n"
            ),
        ),
        (
            "etc/shadow".into(),
            "root:*:20000:0:99999:7:::\ncluster:!:20000:0:99999:7:::\n".into(),
        ),
        (
            "etc/group".into(),
            "root:x:0:\nsudo:x:27:cluster\ndocker:x:990:cluster\ncluster:x:1000:\n".into(),
        ),
        (
            "etc/gshadow".into(),
            "root:*::\nsudo:*::cluster\ndocker:!::cluster\ncluster:!::\n".into(),
        ),
        (
            "etc/sudoers.d/cluster-lab".into(),
            "cluster ALL=(ALL) NOPASSWD: ALL\n".into(),
        ),
        ("usr/share/zoneinfo/Europe/Berlin".into(), "TZif2".into()),
        ("usr/share/zoneinfo/Etc/UTC".into(), "TZif2".into()),
    ];
    for (f, text) in files {
        std::fs::write(r.join(f), text).unwrap();
    }
    std::os::unix::fs::symlink("/usr/share/zoneinfo/Etc/UTC", r.join("etc/localtime")).unwrap();
    root
}

fn firstboot(root: &Path, user_data: UserData) -> Firstboot {
    // cluster-lab.toml as the image builder writes it: no hostname, no keys (the Imager way).
    let config_text = "[cluster]\nsecret = \"0123456789abcdef0123456789abcdef\"\n".to_string();
    let settings = Settings::parse(&config_text, Path::new("cluster-lab.toml")).unwrap();
    Firstboot {
        settings,
        config_text,
        user_data,
        boot_config: None,
        hostname: Hostname::parse("node1").unwrap(),
        secret: "0123456789abcdef0123456789abcdef".parse().unwrap(),
        root: root.to_path_buf(),
        plan: None,
        env: Environment::target(),
    }
}

fn read(root: &Path, f: &str) -> String {
    std::fs::read_to_string(root.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
}

#[test]
fn imager_2_0_11_user_data_names_the_user_gives_it_the_key_and_password_and_sets_the_timezone() {
    let ud = UserData::parse(&fixture("imager-2.0.11.yaml")).unwrap();
    assert_eq!(ud.hostname.as_deref(), Some("node1"));
    assert_eq!(ud.timezone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(
        ud.ignored,
        [
            "apt",
            "keyboard",
            "manage_etc_hosts",
            "manage_resolv_conf",
            "packages",
            "runcmd",
            "ssh_pwauth"
        ]
    );
    let root = base_root();
    let r = root.path();
    let fb = firstboot(r, ud);
    assert!(fb.step_login().unwrap());
    assert!(fb.step_timezone());

    assert!(
        read(r, "etc/passwd").contains("\nalice:x:"),
        "{}",
        read(r, "etc/passwd")
    );
    assert!(read(r, "etc/passwd").contains(":/home/alice:/bin/bash\n"));
    assert!(
        read(r, "etc/shadow").contains("\nalice:$6$abc$def:20000:"),
        "{}",
        read(r, "etc/shadow")
    );
    assert_eq!(
        read(r, "etc/group"),
        "root:x:0:\nsudo:x:27:alice\ndocker:x:990:alice\nalice:x:1000:\n"
    );
    assert_eq!(
        read(r, "etc/sudoers.d/cluster-lab"),
        "alice ALL=(ALL) NOPASSWD: ALL\n"
    );
    let keys = read(r, "home/alice/.ssh/authorized_keys");
    assert!(keys.contains(KEY), "{keys}");
    assert!(!r.join("home/cluster").exists());
    assert_eq!(read(r, "etc/timezone"), "Europe/Berlin\n");
    assert_eq!(
        std::fs::read_link(r.join("etc/localtime")).unwrap(),
        PathBuf::from("/usr/share/zoneinfo/Europe/Berlin")
    );
    assert_eq!(cluster_lab::host::login_user::current(r), "alice");

    // First boot's early and full runs both take these steps: the second time nothing changes.
    assert!(!fb.step_login().unwrap());
    assert!(!fb.step_timezone());
}

#[test]
fn imager_2_0_0_users_list_works_the_same() {
    let ud = UserData::parse(&fixture("imager-2.0.0.yaml")).unwrap();
    assert!(
        ud.ignored.contains(&"enable_ssh".to_string()),
        "{:?}",
        ud.ignored
    );
    let root = base_root();
    let r = root.path();
    assert!(firstboot(r, ud).step_login().unwrap());
    assert!(read(r, "etc/shadow").contains("\nbob:$5$salt$hash:"));
    assert!(read(r, "home/bob/.ssh/authorized_keys").contains(KEY));
}

#[test]
fn a_locked_password_is_not_set_and_top_level_keys_join_the_users() {
    let text = format!(
        "#cloud-config\nusers:\n  - default\n  - name: carol\n    passwd: \"$6$x$y\"\nssh_authorized_keys:\n  - {KEY} top@level\n"
    );
    let root = base_root();
    let r = root.path();
    assert!(firstboot(r, UserData::parse(&text).unwrap())
        .step_login()
        .unwrap());
    // lock_passwd defaults to true in cloud-init: the hash is not applied.
    assert!(
        read(r, "etc/shadow").contains("\ncarol:!:"),
        "{}",
        read(r, "etc/shadow")
    );
    assert!(read(r, "home/carol/.ssh/authorized_keys").contains("top@level"));
}

/// `cluster-lab firstboot` with a user-data file it cannot read stops before any step, naming the file and the
/// line, with the configuration-error exit status.
#[test]
fn a_malformed_user_data_file_stops_first_boot_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster-lab.toml");
    std::fs::write(
        &config,
        "[cluster]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    )
    .unwrap();
    for (text, says) in [
        (
            "#cloud-config\nuser:\n  name: alice\n  ssh_authorized_keys: [unclosed\n",
            "line ",
        ),
        (
            "#cloud-config\nuser:\n  name: Alice\n",
            "lower-case letter first",
        ),
        (
            "#cloud-config\nssh_authorized_keys:\n  - not-a-key\n",
            "SSH key",
        ),
        (
            "#cloud-config\ntimezone: ../../etc/passwd\n",
            "is not a zone name",
        ),
    ] {
        std::fs::write(dir.path().join("user-data"), text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_cluster-lab"))
            .args(["firstboot", "--dry-run", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{text}: {stderr}");
        assert!(stderr.contains("user-data"), "{stderr}");
        assert!(stderr.contains(says), "{text}: {stderr}");
        assert!(stderr.contains("nothing was changed"), "{stderr}");
    }
}
