//! `ci/backports-source.sh`, which `ci/deps.sh` uses to add bookworm-backports from the machine's own mirror, on
//! apt source trees in the shapes Debian writes them: a one-line `sources.list`, deb822 `*.sources` only (what a
//! fresh Debian 12 cloud machine has), both, none, and backports already configured.

use std::path::Path;
use std::process::Command;

/// Runs the script on a fixture `/etc/apt` holding `files` (path relative to it, content).
fn run(files: &[(&str, &str)]) -> (bool, String, String) {
    let etc = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(etc.path().join("sources.list.d")).unwrap();
    for (path, text) in files {
        std::fs::write(etc.path().join(path), text).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/backports-source.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(etc.path())
        .output()
        .expect("running bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const DEB822_DEBIAN: &str = "Types: deb\n\
# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
URIs: http://deb.debian.org/debian\n\
Suites: bookworm bookworm-updates\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
\n\
Types: deb\n\
URIs: http://deb.debian.org/debian-security\n\
Suites: bookworm-security\n\
Components: main\n\
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

const NODESOURCE: &str =
    "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n\
Components: main\nArchitectures: amd64\nSigned-By: /usr/share/keyrings/nodesource.gpg\n";

fn assert_source(stdout: &str, mirror: &str) {
    assert_eq!(
        stdout,
        format!(
            "Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        )
    );
}

#[test]
fn deb822_only_without_sources_list() {
    let (ok, out, err) = run(&[
        ("sources.list.d/nodesource.sources", NODESOURCE),
        ("sources.list.d/debian.sources", DEB822_DEBIAN),
    ]);
    assert!(ok, "{err}");
    assert_source(&out, "http://deb.debian.org/debian");
}

#[test]
fn one_line_sources_list() {
    let (ok, out, err) = run(&[(
        "sources.list",
        "# generated\ndeb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example.org/debian/ bookworm main\n\
         deb http://security.debian.org/debian-security bookworm-security main\n",
    )]);
    assert!(ok, "{err}");
    assert_source(&out, "http://mirror.example.org/debian");
}

#[test]
fn both_formats_prefer_a_debian_org_mirror() {
    let (ok, out, err) = run(&[
        (
            "sources.list",
            "deb http://ftp.example.net/debian bookworm main\n",
        ),
        ("sources.list.d/debian.sources", DEB822_DEBIAN),
    ]);
    assert!(ok, "{err}");
    assert_source(&out, "http://deb.debian.org/debian");
}

#[test]
fn other_archives_ending_in_debian_do_not_count() {
    // Docker's and Raspberry Pi's archives also end in /debian; the Debian mirror is the one on debian.org.
    let (ok, out, err) = run(&[
        (
            "sources.list.d/docker.list",
            "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.gpg] https://download.docker.com/linux/debian bookworm stable\n",
        ),
        (
            "sources.list.d/raspi.list",
            "deb http://archive.raspberrypi.com/debian/ bookworm main\n",
        ),
        ("sources.list.d/debian.sources", DEB822_DEBIAN),
    ]);
    assert!(ok, "{err}");
    assert_source(&out, "http://deb.debian.org/debian");
}

#[test]
fn a_mirror_for_another_release_does_not_count() {
    let (ok, out, err) = run(&[(
        "sources.list",
        "deb http://old.example.org/debian bullseye main\ndeb http://mirror.example.org/debian bookworm main\n",
    )]);
    assert!(ok, "{err}");
    assert_source(&out, "http://mirror.example.org/debian");
}

#[test]
fn no_debian_source_is_a_clear_error() {
    let (ok, out, err) = run(&[("sources.list.d/nodesource.sources", NODESOURCE)]);
    assert!(!ok);
    assert_eq!(out, "");
    assert!(err.contains("no Debian apt source"), "{err}");

    let (ok, _, err) = run(&[]);
    assert!(!ok);
    assert!(err.contains("add the Debian mirror first"), "{err}");
}

#[test]
fn backports_already_present_adds_nothing() {
    for files in [
        vec![(
            "sources.list",
            "deb http://deb.debian.org/debian bookworm main\ndeb http://deb.debian.org/debian bookworm-backports main\n",
        )],
        vec![
            ("sources.list.d/debian.sources", DEB822_DEBIAN),
            (
                "sources.list.d/backports.sources",
                "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\n",
            ),
        ],
    ] {
        let (ok, out, err) = run(&files);
        assert!(ok, "{err}");
        assert_eq!(out, "", "backports is already configured: {files:?}");
    }
}

#[test]
fn commented_backports_does_not_count() {
    let (ok, out, err) = run(&[(
        "sources.list",
        "deb http://deb.debian.org/debian bookworm main\n# deb http://deb.debian.org/debian bookworm-backports main\n",
    )]);
    assert!(ok, "{err}");
    assert_source(&out, "http://deb.debian.org/debian");
}
