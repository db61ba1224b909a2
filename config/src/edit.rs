//! In-place edits of `cluster-lab.toml` on the boot partition: the per-image secret written at image build time
//! and the per-card hostname and SSH keys written at flash time. Edits keep the user's comments and layout
//! (toml_edit). What a valid hostname or SSH key is comes from [`crate::Hostname`] and [`crate::SshKey`], the same
//! rules the agent applies when it reads the file.

use toml_edit::{value, Array, DocumentMut, Item, Table};

use crate::FILE_NAME;

/// Why an edit was refused.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EditError(pub String);

type Result<T> = std::result::Result<T, EditError>;

/// A fresh cluster secret: 32 random bytes, hex-encoded (64 characters).
pub fn random_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse(text: &str) -> Result<DocumentMut> {
    text.parse::<DocumentMut>()
        .map_err(|e| EditError(format!("{FILE_NAME} is not valid TOML: {e}")))
}

fn table<'d>(doc: &'d mut DocumentMut, name: &str) -> Result<&'d mut Table> {
    let item = doc.entry(name).or_insert_with(|| {
        let mut t = Table::new();
        t.set_implicit(false);
        Item::Table(t)
    });
    item.as_table_mut()
        .ok_or_else(|| EditError(format!("{FILE_NAME}: [{name}] must be a table")))
}

/// In `[table]`, turn a commented-out example line `# key = ...` into `key = <value>` (keeping the
/// comment block above it). `None` when the table has the key already or no such example line.
fn uncomment(text: &str, table: &str, key: &str, value: &toml_edit::Value) -> Option<String> {
    let doc = parse(text).ok()?;
    if doc.get(table).and_then(|t| t.get(key)).is_some() {
        return None;
    }
    let header = format!("[{table}]");
    let example = format!("# {key} = ");
    let mut in_table = false;
    let mut out = String::with_capacity(text.len() + 80);
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            in_table = t == header;
        }
        if in_table && !done && t.starts_with(&example) {
            let mut v = value.clone();
            v.decor_mut().clear();
            out.push_str(&format!("{key} = {v}\n"));
            done = true;
        } else {
            out.push_str(line);
        }
    }
    // The result must still parse and hold the value; otherwise fall back to a plain insert.
    let check = parse(&out).ok()?;
    let got = check.get(table)?.get(key)?.as_value()?.to_string();
    (done && got.trim() == value.to_string().trim()).then_some(out)
}

/// Set `key` in `[table]`: replaces an existing value, or uncomments the file's example line, or
/// inserts the key.
fn set(
    text: &str,
    table_name: &str,
    key: &str,
    v: toml_edit::Value,
    note: Option<&str>,
) -> Result<String> {
    if let Some(out) = uncomment(text, table_name, key, &v) {
        return Ok(out);
    }
    let mut doc = parse(text)?;
    let t = table(&mut doc, table_name)?;
    let fresh = !t.contains_key(key);
    t.insert(key, Item::Value(v));
    if let (true, Some(note)) = (fresh, note) {
        if let Some(mut k) = t.key_mut(key) {
            k.leaf_decor_mut().set_prefix(note);
        }
    }
    Ok(doc.to_string())
}

/// Set `[cluster] secret` in `text`, keeping everything else as it is.
pub fn set_secret(text: &str, secret: &str) -> Result<String> {
    set(
        text,
        "cluster",
        "secret",
        secret.into(),
        Some(
            "# Written by `cargo xtask image`: shared by every card of the cluster (fresh for each\n\
             # image build unless built with --secret-file).\n",
        ),
    )
}

/// Read `[cluster] secret`, if set.
pub fn secret(text: &str) -> Result<Option<String>> {
    let doc = parse(text)?;
    Ok(doc
        .get("cluster")
        .and_then(|c| c.get("secret"))
        .and_then(|s| s.as_str())
        .map(str::to_string))
}

/// Set `[network] interface` (first boot writes the link `interface = "auto"` found).
pub fn set_interface(text: &str, interface: &str) -> Result<String> {
    set(text, "network", "interface", interface.into(), None)
}

/// `text` without `[cluster] secret`, a comment line `# {note}` under the `[cluster]` header in its place; `None`
/// when there is no secret to remove (so a second call changes nothing).
pub fn remove_secret(text: &str, note: &str) -> Result<Option<String>> {
    if secret(text)?.is_none() {
        return Ok(None);
    }
    // The usual shape: `secret = "…"` on its own line in `[cluster]` (what `set_secret` writes). Replacing that line
    // keeps every comment around it.
    let mut table = "";
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            table = trimmed;
        }
        let is_secret = table == "[cluster]"
            && trimmed
                .split_once('=')
                .is_some_and(|(k, _)| k.trim() == "secret");
        if is_secret {
            out.push_str(&format!("# {note}\n"));
        } else {
            out.push_str(line);
        }
    }
    if secret(&out)?.is_none() {
        return Ok(Some(out));
    }
    // Any other shape (an inline table, dotted keys): remove the key itself, the note under the header.
    let mut doc = parse(text)?;
    if let Some(t) = doc.get_mut("cluster").and_then(Item::as_table_like_mut) {
        t.remove("secret");
    }
    let mut out = doc.to_string();
    let line = format!("# {note}\n");
    match out.find("[cluster]\n") {
        Some(i) => out.insert_str(i + "[cluster]\n".len(), &line),
        None => out.push_str(&line),
    }
    if secret(&out)?.is_some() {
        return Err(EditError(
            "the secret could not be removed from this file's layout".into(),
        ));
    }
    Ok(Some(out))
}

/// Check a hostname with the agent's own rule ([`crate::Hostname`]).
pub fn validate_hostname(name: &str) -> Result<()> {
    crate::Hostname::parse(name).map(drop).map_err(EditError)
}

/// Parse an OpenSSH public key file: one key per non-empty, non-comment line.
pub fn parse_ssh_keys(text: &str) -> Result<Vec<String>> {
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for k in &keys {
        k.parse::<crate::SshKey>()
            .map_err(|e| EditError(format!("SSH key: {e}")))?;
    }
    if keys.is_empty() {
        return Err(EditError(
            "the SSH key file holds no key (give an OpenSSH .pub file)".into(),
        ));
    }
    Ok(keys)
}

/// Set `[node] hostname` and, when given, replace `[node] ssh_authorized_keys`.
pub fn set_node(text: &str, hostname: &str, ssh_keys: Option<&[String]>) -> Result<String> {
    validate_hostname(hostname)?;
    let text = set(text, "node", "hostname", hostname.into(), None)?;
    let mut doc = parse(&text)?;
    let node = table(&mut doc, "node")?;
    if let Some(keys) = ssh_keys {
        let mut arr = Array::new();
        for k in keys {
            arr.push(k.as_str());
        }
        if keys.len() > 1 {
            for v in arr.iter_mut() {
                v.decor_mut().set_prefix("\n  ");
            }
            arr.set_trailing("\n");
            arr.set_trailing_comma(true);
        }
        node.insert("ssh_authorized_keys", value(arr));
    }
    Ok(doc.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_fresh_hex_and_inserted_once() {
        let a = random_secret();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_secret());
        let t = set_secret(crate::DEFAULT_TOML, &a).unwrap();
        assert_eq!(secret(&t).unwrap().as_deref(), Some(a.as_str()));
        let t2 = set_secret(&t, "other").unwrap();
        assert_eq!(t2.matches("secret =").count(), 1, "{t2}");
        assert_eq!(secret(&t2).unwrap().as_deref(), Some("other"));
    }

    #[test]
    fn secret_lands_in_cluster_table_of_a_file_without_one() {
        let t = set_secret("version = 1\n", "abc").unwrap();
        assert!(t.contains("[cluster]"), "{t}");
        assert_eq!(secret(&t).unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn invalid_toml_is_an_error() {
        assert!(set_secret("[cluster\n", "x").is_err());
        assert!(set_node("cluster = 3\nnode = 1\n", "n1", None).is_err());
    }

    #[test]
    fn agent_default_config_takes_a_secret_and_a_hostname() {
        let text = crate::DEFAULT_TOML;
        let t = set_secret(text, "8c1f4e2a9b7d3c605e1f2a4b6c8d0e9f").unwrap();
        let t = set_node(
            &t,
            "node1",
            Some(&["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA x".into()]),
        )
        .unwrap();
        let doc: DocumentMut = t.parse().unwrap();
        assert_eq!(
            doc["cluster"]["secret"].as_str(),
            Some("8c1f4e2a9b7d3c605e1f2a4b6c8d0e9f")
        );
        assert_eq!(doc["node"]["hostname"].as_str(), Some("node1"));
        assert_eq!(
            doc["node"]["ssh_authorized_keys"][0].as_str(),
            Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA x")
        );
        // Comments of the original survive.
        assert!(t.contains("# Shared secret of the cluster"), "{t}");
        // And the agent accepts what `cargo xtask image` and `flash` write.
        let s = crate::Settings::parse(&t, std::path::Path::new(crate::FILE_NAME)).unwrap();
        assert_eq!(s.node.hostname.unwrap().as_str(), "node1");
        assert_eq!(
            s.cluster.secret.unwrap().expose(),
            "8c1f4e2a9b7d3c605e1f2a4b6c8d0e9f"
        );
    }
}

#[cfg(test)]
mod uncomment_tests {
    use super::*;

    #[test]
    fn example_line_is_uncommented_in_place() {
        let text = "[cluster]\nname = \"x\"\n# The secret.\n# secret = \"...\"\n\n[node]\n# hostname = \"node1\"\nrole = \"auto\"\n";
        let t = set_secret(text, "abc").unwrap();
        assert_eq!(t, text.replace("# secret = \"...\"", "secret = \"abc\""));
        let t = set_node(&t, "n2", None).unwrap();
        assert!(t.contains("[node]\nhostname = \"n2\"\nrole"), "{t}");
        // Set again: the value is replaced, not duplicated.
        let t = set_node(&t, "n3", None).unwrap();
        assert_eq!(t.matches("hostname").count(), 1, "{t}");
        assert!(t.contains("hostname = \"n3\""), "{t}");
    }

    #[test]
    fn example_line_in_another_table_is_left_alone() {
        let text = "[node]\n# secret = \"...\"\n[cluster]\nname = \"x\"\n";
        let t = set_secret(text, "abc").unwrap();
        assert!(t.contains("[node]\n# secret = \"...\""), "{t}");
        assert_eq!(secret(&t).unwrap().as_deref(), Some("abc"));
    }

    #[test]
    fn secrets_below_128_bits_are_refused_with_the_way_to_make_one() {
        use crate::Secret;
        for (weak, why) in [
            ("0123456789abcdef0123456789abcde", "31 characters long"),
            (
                "abababababababababababababababab",
                "only 2 different characters",
            ),
            (
                "0123456789abcdef 0123456789abcdef",
                "printable ASCII without spaces",
            ),
        ] {
            let err = weak.parse::<Secret>().unwrap_err();
            assert!(
                err.contains(why) && err.contains("openssl rand -hex 32"),
                "{weak}: {err}"
            );
        }
        assert!(random_secret().parse::<Secret>().is_ok());
        assert!("0123456789abcdef0123456789abcdef".parse::<Secret>().is_ok());
    }

    #[test]
    fn the_secret_can_be_taken_off_a_file_once() {
        let t = set_secret(crate::DEFAULT_TOML, &random_secret()).unwrap();
        let t = set_node(&t, "node1", None).unwrap();
        let off = remove_secret(&t, "secret: moved")
            .unwrap()
            .expect("had a secret");
        assert_eq!(secret(&off).unwrap(), None);
        assert!(off.contains("\n# secret: moved\n"), "{off}");
        assert_eq!(off.lines().count(), t.lines().count(), "one line replaced");
        // Everything else stays, comments included.
        assert!(off.contains("hostname = \"node1\""));
        assert!(off.contains("# Shared secret of the cluster"));
        assert_eq!(remove_secret(&off, "secret: moved").unwrap(), None);
        // What is left still validates (no secret is a valid file; first boot then needs its kept copy).
        crate::Settings::parse(&off, std::path::Path::new("x.toml")).unwrap();
        // An inline table too.
        let inline =
            "cluster = { name = \"lab\", secret = \"0123456789abcdef0123456789abcdef\" }\n";
        let off = remove_secret(inline, "moved").unwrap().unwrap();
        assert_eq!(secret(&off).unwrap(), None);
        assert!(off.contains("name = \"lab\""), "{off}");
    }
}
