//! cluster-lab.toml fixtures: one bad file per validation rule (with the error it must give), good files
//! with the settings they must give, golden files of the effective settings, and the round trip
//! file → settings → printed settings → same settings.
//!
//! Regenerate the golden `good/*.effective.toml` files after an intended change of the output with
//! `UPDATE_GOLDEN=1 cargo test -p cluster-lab --test config_fixtures`, and review the diff.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_lab::config::{ConfigError, Role, Settings, DEFAULT_TOML};

fn data_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/config")
        .join(sub)
}

fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// `good/*.toml` without the golden `*.effective.toml` outputs.
fn good_inputs() -> Vec<PathBuf> {
    files_with_ext(&data_dir("good"), "toml")
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".effective.toml"))
        .collect()
}

/// Every `bad/NAME.toml` fails with an error that starts with `PATH:` followed by `bad/NAME.err`
/// (`LINE:COLUMN: KEY: start of the message`).
#[test]
fn every_bad_fixture_fails_naming_file_line_column_and_key() {
    let bad = files_with_ext(&data_dir("bad"), "toml");
    assert!(
        bad.len() >= 50,
        "expected one bad fixture per rule, found {}",
        bad.len()
    );
    let mut failures = Vec::new();
    for toml in &bad {
        let err_file = toml.with_extension("err");
        let expected = std::fs::read_to_string(&err_file)
            .unwrap_or_else(|e| panic!("{}: missing expected error: {e}", err_file.display()));
        let expected = format!("{}:{}", toml.display(), expected.trim_end());
        match Settings::load(toml) {
            Ok(settings) => failures.push(format!(
                "{}: accepted, but should fail with\n    {expected}\n  got {settings:?}",
                toml.display()
            )),
            Err(err) => {
                let text = err.to_string();
                if !text.starts_with(&expected) {
                    failures.push(format!(
                        "{}:\n  expected: {expected}\n  got:      {text}",
                        toml.display()
                    ));
                }
                if text.contains('\n') {
                    failures.push(format!("{}: error spans lines: {text:?}", toml.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_expected_error_has_its_fixture() {
    for err in files_with_ext(&data_dir("bad"), "err") {
        assert!(
            err.with_extension("toml").exists(),
            "{} has no .toml",
            err.display()
        );
    }
}

#[test]
fn errors_carry_key_and_position_as_data() {
    let path = Path::new("/boot/firmware/cluster-lab.toml");
    let err = Settings::parse(
        "[network]\nvlan = 200\n\n[dhcp]\nlease_time = \"1h\"\nrange = \"10.0.0.5-10.0.0.9\"\n",
        path,
    )
    .unwrap_err();
    assert_eq!(err.key(), Some("dhcp.range"));
    assert_eq!(err.position(), Some((6, 9)));
    assert_eq!(
        err.to_string(),
        "/boot/firmware/cluster-lab.toml:6:9: dhcp.range: 10.0.0.5-10.0.0.9 is outside the subnet \
         192.168.200.0/24 (the default network.subnet); give a range inside it"
    );
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let err = Settings::load(Path::new("/nonexistent/cluster-lab.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("reading /nonexistent/cluster-lab.toml: "),
        "{err}"
    );
}

#[test]
fn the_default_file_parses_to_the_default_settings() {
    let parsed = Settings::parse(DEFAULT_TOML, Path::new("default.toml")).expect("default.toml");
    assert_eq!(parsed, Settings::default());
}

#[test]
fn the_default_file_mentions_every_key() {
    // Keys that are unset by default appear commented out, so a user sees them all.
    for key in [
        "version",
        "[cluster]",
        "name",
        "secret",
        "[node]",
        "hostname",
        "role",
        "ssh_authorized_keys",
        "password_hash",
        "[network]",
        "interface",
        "vlan",
        "subnet",
        "master",
        "[dhcp]",
        "range",
        "lease_time",
        "router",
        "dns",
        "lease_file",
        "decline_quarantine",
    ] {
        let line_start = if key.starts_with('[') {
            key.to_owned()
        } else {
            format!("{key} = ")
        };
        assert!(
            DEFAULT_TOML
                .lines()
                .any(|l| l.trim_start_matches("# ").starts_with(&line_start)),
            "default.toml does not show {key}"
        );
    }
}

#[test]
fn an_empty_file_is_the_defaults() {
    assert_eq!(
        Settings::parse("", Path::new("empty.toml")).unwrap(),
        Settings::default()
    );
    assert_eq!(
        Settings::load(&data_dir("good").join("minimal.toml")).unwrap(),
        Settings::default()
    );
}

#[test]
fn flashed_card_sets_hostname_keys_and_secret() {
    let s = Settings::load(&data_dir("good").join("flashed.toml")).unwrap();
    let mut want = Settings::default();
    want.cluster.secret = Some(
        "9f2c4e7a1b3d5f60718293a4b5c6d7e8f9012a3b4c5d6e7f8091a2b3c4d5e6f7"
            .parse()
            .unwrap(),
    );
    want.node.hostname = Some("node2".parse().unwrap());
    want.node.ssh_authorized_keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl user@laptop"
            .parse()
            .unwrap(),
    ];
    assert_eq!(s, want);
}

#[test]
fn custom_network_sets_every_key() {
    let s = Settings::load(&data_dir("good").join("custom-network.toml")).unwrap();
    assert_eq!(s.cluster.name, "lab.home_1");
    assert_eq!(
        s.node.hostname.as_ref().map(|h| h.as_str()),
        Some("pi-master")
    );
    assert_eq!(s.node.role, Role::Master);
    assert_eq!(s.node.ssh_authorized_keys.len(), 2);
    assert!(s.node.password_hash.as_deref().unwrap().starts_with("$y$"));
    assert_eq!(s.network.interface, "end0");
    assert_eq!(s.network.vlan, 42);
    assert_eq!(s.network.vlan_interface(), "end0.42");
    assert_eq!(s.network.subnet.to_string(), "10.42.0.0/16");
    assert_eq!(s.network.master, Ipv4Addr::new(10, 42, 0, 254));
    assert_eq!(s.dhcp.range_start, Ipv4Addr::new(10, 42, 1, 1));
    assert_eq!(s.dhcp.range_end, Ipv4Addr::new(10, 42, 1, 254));
    assert_eq!(s.dhcp.lease_time, Duration::from_secs(5400));
    assert_eq!(s.dhcp.router, Some(Ipv4Addr::new(10, 42, 0, 254)));
    assert_eq!(
        s.dhcp.dns,
        [Ipv4Addr::new(10, 42, 0, 254), Ipv4Addr::new(9, 9, 9, 9)]
    );
    assert_eq!(s.dhcp.lease_file, Path::new("/srv/cluster-lab/leases"));
    assert_eq!(s.dhcp.decline_quarantine, Duration::ZERO);
}

#[test]
fn small_subnet_derives_master_and_range() {
    let s = Settings::load(&data_dir("good").join("small-subnet.toml")).unwrap();
    assert_eq!(s.network.master, Ipv4Addr::new(172, 16, 5, 17));
    assert_eq!(s.dhcp.range_start, Ipv4Addr::new(172, 16, 5, 18));
    assert_eq!(s.dhcp.range_end, Ipv4Addr::new(172, 16, 5, 30));
}

#[test]
fn a_changed_subnet_moves_the_default_master_and_range_with_it() {
    let s = Settings::parse(
        "[network]\nsubnet = \"10.20.0.0/16\"\n",
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(s.network.master, Ipv4Addr::new(10, 20, 0, 1));
    assert_eq!(s.dhcp.range_start, Ipv4Addr::new(10, 20, 0, 101));
    assert_eq!(s.dhcp.range_end, Ipv4Addr::new(10, 20, 0, 200));
}

#[test]
fn inline_tables_dotted_keys_and_integer_seconds() {
    let s = Settings::load(&data_dir("good").join("inline-tables.toml")).unwrap();
    assert_eq!(s.cluster.name, "rack-2");
    assert_eq!(s.network.vlan, 300);
    assert_eq!(s.network.vlan_interface(), "eth1.300");
    assert_eq!(s.dhcp.lease_time, Duration::from_secs(7200));
    assert_eq!(s.dhcp.decline_quarantine, Duration::from_secs(86_400));
    assert_eq!(s.node.role, Role::Node);
}

#[test]
fn a_nic_name_too_long_for_a_dotted_vlan_name_gets_vlan_id() {
    let s = Settings::load(&data_dir("good").join("predictable-nic-name.toml")).unwrap();
    assert_eq!(s.network.interface, "enxb827eb123456");
    assert_eq!(s.network.vlan_interface(), "vlan200");
    // 15 bytes exactly still fits: "enp1s0f0.4094" is 13, "eth0.4094" 9.
    let s = Settings::parse(
        "[network]\ninterface = \"enp1s0f1\"\nvlan = 4094\n",
        Path::new("x.toml"),
    )
    .unwrap();
    assert_eq!(s.network.vlan_interface(), "enp1s0f1.4094");
}

#[test]
fn vlan_bounds_and_windows_line_ends_are_accepted() {
    let s = Settings::load(&data_dir("good").join("vlan-1.toml")).unwrap();
    assert_eq!(s.network.vlan_interface(), "eth0.1");
    let s = Settings::load(&data_dir("good").join("windows-editor.toml")).unwrap();
    assert_eq!(s.network.vlan, 4094);
    assert_eq!(s.node.hostname.as_ref().map(|h| h.as_str()), Some("node3"));
}

/// The printed settings parse back to the same settings; only the secret is withheld.
#[test]
fn effective_settings_round_trip() {
    for input in good_inputs() {
        let settings = Settings::load(&input).unwrap();
        let printed = settings.to_toml();
        let again = Settings::parse(&printed, Path::new("printed.toml")).unwrap_or_else(|e| {
            panic!(
                "{}: printed settings do not parse: {e}\n{printed}",
                input.display()
            )
        });
        let mut want = settings.clone();
        want.cluster.secret = None;
        assert_eq!(again, want, "{}:\n{printed}", input.display());
        if let Some(secret) = &settings.cluster.secret {
            assert!(printed.contains("<set>"), "{printed}");
            assert!(
                !printed.contains(secret.expose()),
                "secret leaked:\n{printed}"
            );
            // Formatting the settings for a log line or a panic does not show it either.
            let debug = format!("{settings:?} {settings:#?}");
            assert!(
                !debug.contains(secret.expose()),
                "secret leaked by Debug:\n{debug}"
            );
        }
    }
}

/// `good/NAME.toml` prints as `good/NAME.effective.toml`.
#[test]
fn effective_settings_match_golden_files() {
    let bless = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for input in good_inputs() {
        let printed = Settings::load(&input).unwrap().to_toml();
        let golden = input.with_extension("effective.toml");
        if bless {
            std::fs::write(&golden, &printed).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == printed => {}
            Ok(want) => failures.push(format!(
                "{} differs:\n--- want\n{want}\n--- got\n{printed}",
                golden.display()
            )),
            Err(e) => failures.push(format!("{}: {e}", golden.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(regenerate with UPDATE_GOLDEN=1 cargo test -p cluster-lab --test config_fixtures)",
        failures.join("\n")
    );
}
