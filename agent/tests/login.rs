//! Login set up by first boot, on a scratch root with `/etc/passwd` and `/etc/shadow` fixtures: the configured SSH
//! keys land in `~cluster/.ssh/authorized_keys` with the modes and owner sshd insists on, keys added by hand stay,
//! the password hash goes into the shadow entry, a second run changes nothing, and a dry run touches nothing.
//!
//! Run as root, the fixture user is uid/gid 1000 like on the image, so the chown is real; run as anyone else, the
//! fixture user is the caller (a non-root process cannot give files away), and ownership is asserted either way.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cluster_lab::config::Settings;
use cluster_lab::firstboot::{Environment, Finished, Firstboot};
use cluster_lab::host::hostname::Hostname;
use cluster_lab::host::login::{Login, LoginError, Outcome, USER};
use cluster_lab::plan::Plan;

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl flashed@laptop";
const KEY_B: &str =
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHvh flashed@desk";
const HAND: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7handadded user@phone";
const HASH: &str = "$y$j9T$cdM5Bmj1g3lYw6tX0P0pC1$2GRfK7d5bVqU7b3X8cOqHj0Y8aS5oQ3vW6yZ1xN4mE7";
const SHADOW: &str =
    "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\ncluster:!:20000:0:99999:7:::\n";

/// A scratch target root: /etc/passwd and /etc/shadow (0640) with the user `cluster`, and its home.
struct Root {
    dir: tempfile::TempDir,
    uid: u32,
    gid: u32,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().unwrap();
        let (uid, gid) = if nix::unistd::geteuid().is_root() {
            (1000, 1000)
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        };
        let etc = dir.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/bash\n\
                 cluster:x:{uid}:{gid}:cluster-lab:/home/cluster:/bin/bash\n"
            ),
        )
        .unwrap();
        std::fs::write(etc.join("shadow"), SHADOW).unwrap();
        std::fs::set_permissions(etc.join("shadow"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home/cluster")).unwrap();
        Root { dir, uid, gid }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn ssh_dir(&self) -> PathBuf {
        self.path().join("home/cluster/.ssh")
    }

    fn keys_file(&self) -> PathBuf {
        self.ssh_dir().join("authorized_keys")
    }

    fn shadow(&self) -> PathBuf {
        self.path().join("etc/shadow")
    }

    fn apply(&self, keys: &[String], hash: Option<&str>, plan: Option<&Plan>) -> Outcome {
        Login {
            user: USER,
            keys,
            password_hash: hash,
        }
        .apply(self.path(), plan)
        .unwrap_or_else(|e| panic!("login: {e}"))
    }

    fn assert_owned_by_user(&self, path: &Path) {
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (self.uid, self.gid),
            "{}",
            path.display()
        );
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

type Meta = (u32, u32, u32, u64, i64, i64);

/// Mode, owner, inode and mtime of a file or directory.
fn metadata(path: &Path) -> Meta {
    let meta = std::fs::metadata(path).unwrap();
    (
        meta.mode(),
        meta.uid(),
        meta.gid(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec(),
    )
}

/// Contents and metadata: anything a write would change.
fn fingerprint(path: &Path) -> (Vec<u8>, Meta) {
    (std::fs::read(path).unwrap(), metadata(path))
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|k| k.to_string()).collect()
}

#[test]
fn configured_keys_are_written_with_the_modes_and_owner_sshd_wants() {
    let root = Root::new();
    let out = root.apply(&keys(&[KEY_A, KEY_B]), None, None);
    assert_eq!(
        out,
        Outcome {
            keys_changed: true,
            password_changed: false
        }
    );
    assert_eq!(
        std::fs::read_to_string(root.keys_file()).unwrap(),
        format!("{KEY_A}\n{KEY_B}\n")
    );
    assert_eq!(mode(&root.ssh_dir()), 0o700);
    assert_eq!(mode(&root.keys_file()), 0o600);
    root.assert_owned_by_user(&root.ssh_dir());
    root.assert_owned_by_user(&root.keys_file());
    // The rewrite left no temporary file behind.
    let names: Vec<_> = std::fs::read_dir(root.ssh_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["authorized_keys"]);
    // No password configured: the shadow file is as it was.
    assert_eq!(std::fs::read_to_string(root.shadow()).unwrap(), SHADOW);
}

#[test]
fn keys_added_by_hand_stay_and_configured_keys_are_added_once() {
    let root = Root::new();
    std::fs::create_dir_all(root.ssh_dir()).unwrap();
    std::fs::set_permissions(root.ssh_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The hand-written file already holds KEY_A under another comment, with an option, and no final newline.
    let hand = format!(
        "# added by hand\n{HAND}\nfrom=\"192.168.1.0/24\" {}",
        KEY_A.replace("flashed@laptop", "old-comment")
    );
    std::fs::write(root.keys_file(), &hand).unwrap();
    std::fs::set_permissions(root.keys_file(), std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = root.apply(&keys(&[KEY_A, KEY_B, KEY_B]), None, None);
    assert!(out.keys_changed);
    assert_eq!(
        std::fs::read_to_string(root.keys_file()).unwrap(),
        format!("{hand}\n{KEY_B}\n")
    );
    assert_eq!(mode(&root.ssh_dir()), 0o700, "loose .ssh mode is fixed");
    assert_eq!(mode(&root.keys_file()), 0o600, "loose file mode is fixed");
    root.assert_owned_by_user(&root.keys_file());
}

#[test]
fn a_second_run_changes_nothing() {
    let root = Root::new();
    let configured = keys(&[KEY_A, KEY_B]);
    assert!(root.apply(&configured, Some(HASH), None).changed());
    let keys_before = fingerprint(&root.keys_file());
    let shadow_before = fingerprint(&root.shadow());
    let dir_before = metadata(&root.ssh_dir());

    let again = root.apply(&configured, Some(HASH), None);
    assert_eq!(
        again,
        Outcome {
            keys_changed: false,
            password_changed: false
        }
    );
    assert!(!again.changed());
    assert_eq!(fingerprint(&root.keys_file()), keys_before);
    assert_eq!(fingerprint(&root.shadow()), shadow_before);
    assert_eq!(metadata(&root.ssh_dir()), dir_before);
}

#[test]
fn the_password_hash_goes_into_the_users_shadow_entry() {
    let root = Root::new();
    let before = std::fs::metadata(root.shadow()).unwrap();
    let out = root.apply(&[], Some(HASH), None);
    assert_eq!(
        out,
        Outcome {
            keys_changed: false,
            password_changed: true
        }
    );
    assert_eq!(
        std::fs::read_to_string(root.shadow()).unwrap(),
        format!(
            "root:*:20000:0:99999:7:::\ndaemon:*:20000:0:99999:7:::\ncluster:{HASH}:20000:0:99999:7:::\n"
        )
    );
    let after = std::fs::metadata(root.shadow()).unwrap();
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!(
        (after.uid(), after.gid()),
        (before.uid(), before.gid()),
        "owner kept"
    );
    assert_ne!(
        after.ino(),
        before.ino(),
        "replaced by rename, not in place"
    );
    // No keys configured: nothing was created in the home directory.
    assert!(!root.ssh_dir().exists());
    let names: Vec<_> = std::fs::read_dir(root.path().join("etc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("tmp")), "{names:?}");
}

#[test]
fn without_a_password_hash_the_shadow_file_is_untouched() {
    let root = Root::new();
    let before = fingerprint(&root.shadow());
    root.apply(&keys(&[KEY_A]), None, None);
    assert_eq!(fingerprint(&root.shadow()), before);
    // Nothing configured at all: nothing is read or written.
    let empty = Root::new();
    std::fs::remove_file(empty.path().join("etc/passwd")).unwrap();
    assert!(!empty.apply(&[], None, None).changed());
    assert!(!empty.ssh_dir().exists());
}

#[test]
fn a_dry_run_says_what_would_change_and_touches_nothing() {
    let root = Root::new();
    let shadow_before = fingerprint(&root.shadow());
    let plan = Plan::default();
    let out = root.apply(&keys(&[KEY_A]), Some(HASH), Some(&plan));
    assert_eq!(
        out,
        Outcome {
            keys_changed: true,
            password_changed: true
        }
    );
    assert_eq!(
        plan.lines(),
        [
            "would set /home/cluster/.ssh to mode 0700, owned by the user",
            "would write /home/cluster/.ssh/authorized_keys (1 configured keys)",
            "would set the password hash of cluster in /etc/shadow",
        ]
    );
    assert!(!root.ssh_dir().exists());
    assert_eq!(fingerprint(&root.shadow()), shadow_before);
}

#[test]
fn a_missing_user_is_an_error_naming_the_file() {
    let root = Root::new();
    std::fs::write(
        root.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n",
    )
    .unwrap();
    let err = Login {
        user: USER,
        keys: &keys(&[KEY_A]),
        password_hash: None,
    }
    .apply(root.path(), None)
    .unwrap_err();
    assert!(matches!(err, LoginError::NoUser { .. }), "{err:?}");
    assert!(
        err.to_string().contains("user cluster is not in")
            && err.to_string().contains("etc/passwd"),
        "{err}"
    );
    assert!(!root.ssh_dir().exists());
}

/// The step as `cluster-lab firstboot --dry-run` runs it, under a scratch root: nothing is written anywhere.
#[test]
fn firstboot_dry_run_leaves_login_untouched() {
    let root = Root::new();
    let config_text = format!(
        "[cluster]\nname = \"lab\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n[node]\nhostname = \"login-test\"\n\
         role = \"node\"\nssh_authorized_keys = [\"{KEY_A}\"]\npassword_hash = \"{HASH}\"\n"
    );
    let config_path = root.path().join("cluster-lab.toml");
    let settings = Settings::parse(&config_text, &config_path).unwrap();
    let shadow_before = fingerprint(&root.shadow());
    let fb = Firstboot {
        settings,
        config_text,
        user_data: Default::default(),
        boot_config: None,
        hostname: Hostname::parse("login-test").unwrap(),
        secret: "0123456789abcdef0123456789abcdef".parse().unwrap(),
        root: root.path().to_path_buf(),
        plan: Some(Default::default()),
        env: Environment::target(),
    };
    let finished = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fb.run())
        .unwrap();
    let Finished::Planned(lines) = finished else {
        panic!("a dry run ends with a plan: {finished:?}")
    };
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("would write /home/cluster/.ssh/authorized_keys")),
        "{lines:?}"
    );
    assert!(!root.ssh_dir().exists());
    assert_eq!(fingerprint(&root.shadow()), shadow_before);
    assert!(!root.path().join("etc/hostname").exists());
}
