//! cloud-init `user-data` on the boot partition, as Raspberry Pi Imager writes it (NoCloud, `#cloud-config`) and as
//! hypriot's `flash --userdata` copies it. cluster-lab has no cloud-init: first boot reads the few keys that make a
//! card personal and applies them itself — the hostname, the login user (name, SSH keys, password hash), top-level
//! `ssh_authorized_keys` and the timezone. Every other top-level key is named once in the log and left alone.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The keys cluster-lab applies; anything else is reported by [`UserData::ignored`].
const USED: &[&str] = &[
    "hostname",
    "user",
    "users",
    "ssh_authorized_keys",
    "timezone",
];

/// A user-data file that is not what cloud-init would accept either.
#[derive(Debug, thiserror::Error)]
#[error("user-data: {message} (fix the file on the boot partition, or remove it)")]
pub struct UserDataError {
    pub message: String,
}

/// What cluster-lab takes from a user-data document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserData {
    pub hostname: Option<String>,
    /// The login user: the first entry of `users:` that names one, else `user:`.
    pub user: Option<User>,
    /// Top-level `ssh_authorized_keys`: for the login user too.
    pub ssh_authorized_keys: Vec<String>,
    pub timezone: Option<String>,
    /// Top-level keys cluster-lab does not use, in file order of their names (sorted).
    pub ignored: Vec<String>,
}

/// One entry of `users:` (or the `user:` mapping).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct User {
    pub name: String,
    pub ssh_authorized_keys: Vec<String>,
    /// A crypt(3) hash (`$6$…`, `$y$…`), as `passwd:` carries it.
    pub passwd: Option<String>,
    /// cloud-init locks the password unless this is `false`.
    pub lock_passwd: Option<bool>,
    /// `ALL=(ALL) NOPASSWD:ALL`, a list of such rules, or `false`.
    pub sudo: Option<serde_norway::Value>,
}

impl User {
    /// The password hash to set: only when given and not locked (`lock_passwd: false`), as cloud-init would.
    pub fn password_hash(&self) -> Option<&str> {
        match (self.passwd.as_deref(), self.lock_passwd) {
            (Some(hash), Some(false)) if !hash.is_empty() => Some(hash),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum UsersEntry {
    /// `- default` (cloud-init's distribution user, here the image's own `cluster`) or a bare user name.
    Name(String),
    User(User),
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Wire {
    hostname: Option<serde_norway::Value>,
    user: Option<UserOrName>,
    users: Option<Vec<UsersEntry>>,
    ssh_authorized_keys: Vec<String>,
    timezone: Option<String>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum UserOrName {
    Name(String),
    User(User),
}

impl UserData {
    /// Parse a user-data document. An empty file (or one with only the `#cloud-config` line) has nothing to apply.
    pub fn parse(text: &str) -> Result<UserData, UserDataError> {
        if text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            return Ok(UserData::default());
        }
        let wire: Wire = serde_norway::from_str(text).map_err(|e| UserDataError {
            message: match e.location() {
                Some(at) => format!("line {}, column {}: {e}", at.line(), at.column()),
                None => e.to_string(),
            },
        })?;
        let hostname = match wire.hostname {
            None | Some(serde_norway::Value::Null) => None,
            Some(serde_norway::Value::String(s)) => Some(s),
            // A hostname of digits only is a YAML number; the hostname rule will judge it.
            Some(serde_norway::Value::Number(n)) => Some(n.to_string()),
            Some(other) => {
                return Err(UserDataError {
                    message: format!("hostname is not a string: {other:?}"),
                })
            }
        };
        let from_users = wire
            .users
            .unwrap_or_default()
            .into_iter()
            .find_map(|u| match u {
                UsersEntry::User(user) if !user.name.is_empty() => Some(user),
                UsersEntry::Name(name) if !name.is_empty() && name != "default" => Some(User {
                    name,
                    ..User::default()
                }),
                _ => None,
            });
        let user = from_users.or(match wire.user {
            Some(UserOrName::User(u)) if !u.name.is_empty() => Some(u),
            Some(UserOrName::Name(name)) if !name.is_empty() => Some(User {
                name,
                ..User::default()
            }),
            _ => None,
        });
        let mut ignored: Vec<String> = wire.rest.into_keys().collect();
        ignored.retain(|k| !USED.contains(&k.as_str()));
        Ok(UserData {
            hostname: hostname.filter(|h| !h.is_empty()),
            user,
            ssh_authorized_keys: wire.ssh_authorized_keys,
            timezone: wire.timezone.filter(|t| !t.is_empty()),
            ignored,
        })
    }

    /// Every SSH key for the login user: its own, then the top-level ones, each once.
    pub fn login_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        let own = self.user.iter().flat_map(|u| u.ssh_authorized_keys.iter());
        for k in own.chain(self.ssh_authorized_keys.iter()) {
            let k = k.trim().to_string();
            if !k.is_empty() && !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cloud_config_header_alone_has_nothing() {
        assert_eq!(
            UserData::parse("#cloud-config\n").unwrap(),
            UserData::default()
        );
        assert_eq!(UserData::parse("").unwrap(), UserData::default());
    }

    #[test]
    fn users_default_entry_is_skipped_and_the_first_named_user_is_the_login() {
        let text = "#cloud-config\nusers:\n  - default\n  - name: bob\n    lock_passwd: true\n    passwd: \"$6$x$y\"\n  - name: carol\n";
        let ud = UserData::parse(text).unwrap();
        let user = ud.user.unwrap();
        assert_eq!(user.name, "bob");
        // Locked: the hash is not applied.
        assert_eq!(user.password_hash(), None);
    }

    #[test]
    fn a_user_mapping_and_top_level_keys_merge_without_repeats() {
        let text = "user:\n  name: dave\n  ssh_authorized_keys: [\"ssh-ed25519 AAAA a\"]\n\
                    ssh_authorized_keys:\n  - ssh-ed25519 AAAA a\n  - ssh-ed25519 BBBB b\n";
        let ud = UserData::parse(text).unwrap();
        assert_eq!(ud.user.as_ref().unwrap().name, "dave");
        assert_eq!(
            ud.login_keys(),
            ["ssh-ed25519 AAAA a", "ssh-ed25519 BBBB b"]
        );
    }

    #[test]
    fn reads_the_top_level_hostname_only() {
        let doc = "#cloud-config\n# comment\nhostname: cluster-node-2 # set by flash\nmanage_etc_hosts: true\n";
        let ud = UserData::parse(doc).unwrap();
        assert_eq!(ud.hostname.as_deref(), Some("cluster-node-2"));
        assert_eq!(ud.ignored, ["manage_etc_hosts"]);
        let quoted = UserData::parse("hostname: 'quoted'\n").unwrap();
        assert_eq!(quoted.hostname.as_deref(), Some("quoted"));
        assert_eq!(
            UserData::parse("#cloud-config\nusers: []\n")
                .unwrap()
                .hostname,
            None
        );
        let nested = UserData::parse("rpi:\n  hostname: nested\n").unwrap();
        assert_eq!(nested.hostname, None);
    }

    #[test]
    fn a_bare_name_in_users_is_a_user_of_that_name() {
        let ud = UserData::parse("users: [default, erin]\n").unwrap();
        assert_eq!(ud.user.unwrap().name, "erin");
    }

    #[test]
    fn a_digits_only_hostname_is_kept_for_the_hostname_rule_to_judge() {
        assert_eq!(
            UserData::parse("hostname: 1234\n")
                .unwrap()
                .hostname
                .as_deref(),
            Some("1234")
        );
    }

    #[test]
    fn malformed_yaml_names_line_and_column() {
        let err = UserData::parse("hostname: node1\nusers:\n  - name: [unclosed\n").unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("user-data: line "), "{text}");
        assert!(
            text.contains("fix the file on the boot partition"),
            "{text}"
        );
    }

    #[test]
    fn a_hostname_that_is_a_mapping_is_an_error() {
        let err = UserData::parse("hostname:\n  a: b\n").unwrap_err();
        assert!(
            err.to_string().contains("hostname is not a string"),
            "{err}"
        );
    }
}
