//! Consul's data directory after a power cut. Consul 1.8 writes its gossip keyring (`serf/local.keyring`, from the
//! `encrypt` key of its configuration on its first start) without syncing it: a power cut right then leaves the file
//! empty or cut short, and every later start fails with `Failed to configure keyring: unexpected end of JSON input`,
//! for ever. A keyring that does not parse is removed before Consul starts; Consul writes it again from `encrypt`,
//! which cluster-lab derives from the cluster secret, so nothing is lost.

use std::path::{Path, PathBuf};

/// The keyring files under `data_dir` that Consul reads at start.
pub fn keyrings(data_dir: &Path) -> [PathBuf; 2] {
    [
        data_dir.join("serf/local.keyring"),
        data_dir.join("serf/remote.keyring"),
    ]
}

/// Whether `text` is a keyring as Consul writes it: a JSON array of base64 keys.
pub fn is_keyring(text: &[u8]) -> bool {
    serde_json::from_slice::<Vec<String>>(text).is_ok_and(|keys| !keys.is_empty())
}

/// Remove the keyrings under `data_dir` that a power cut left unreadable. Returns the files removed.
pub fn remove_torn_keyrings(data_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for path in keyrings(data_dir) {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if !is_keyring(&text) {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyring_cut_short_is_removed_and_a_whole_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let serf = dir.path().join("serf");
        std::fs::create_dir_all(&serf).unwrap();
        // What Consul 1.8 writes, and what a power cut leaves of it.
        std::fs::write(serf.join("local.keyring"), "").unwrap();
        std::fs::write(
            serf.join("remote.keyring"),
            r#"["pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="]"#,
        )
        .unwrap();
        let removed = remove_torn_keyrings(dir.path()).unwrap();
        assert_eq!(removed, [serf.join("local.keyring")]);
        assert!(serf.join("remote.keyring").exists());
        // Nothing left to remove; no data directory yet is fine too.
        assert!(remove_torn_keyrings(dir.path()).unwrap().is_empty());
        assert!(remove_torn_keyrings(&dir.path().join("none"))
            .unwrap()
            .is_empty());
        assert!(!is_keyring(br#"["pUqJrVyVRj5jsiYEkM/t"#));
        assert!(!is_keyring(b"[]"));
    }
}
