//! docs/config.md stays in step with the code: every key is documented, and the example file is valid.

use std::path::Path;

use cluster_lab::config::{Settings, DEFAULT_TOML};

fn docs() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `(section, key)` for every key the default file shows, commented out or not.
fn default_file_keys() -> Vec<(String, String)> {
    let mut section = String::new();
    let mut keys = Vec::new();
    for line in DEFAULT_TOML.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let line = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = line.split_once(" = ") {
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                keys.push((section.clone(), key.to_owned()));
            }
        }
    }
    keys
}

#[test]
fn every_key_has_a_row_in_its_section_of_the_docs() {
    let docs = docs();
    let keys = default_file_keys();
    assert!(keys.len() >= 17, "found only {keys:?}");
    for (section, key) in keys {
        let heading = if section.is_empty() {
            "### Top level".to_owned()
        } else {
            format!("### `[{section}]`")
        };
        let start = docs
            .find(&heading)
            .unwrap_or_else(|| panic!("docs/config.md has no heading {heading:?}"));
        let body = &docs[start + heading.len()..];
        let body = &body[..body.find("\n#").unwrap_or(body.len())];
        assert!(
            body.lines().any(|l| l.starts_with(&format!("| `{key}`"))),
            "docs/config.md: no row for `{key}` under {heading}"
        );
    }
}

#[test]
fn the_docs_example_is_a_valid_file() {
    let docs = docs();
    let start = docs.find("## Example").expect("an Example section");
    let block = &docs[start..];
    let block = &block[block.find("```toml\n").expect("a toml block") + 8..];
    let block = &block[..block.find("```").expect("end of block")];
    let s = Settings::parse(block, Path::new("docs/config.md example")).unwrap();
    assert_eq!(s.network.vlan_interface(), "eth0.42");
    assert_ne!(s, Settings::default());
}
