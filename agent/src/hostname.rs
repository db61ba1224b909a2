//! The machine's name: kernel hostname, `/etc/hostname`, and the `127.0.1.1` line of `/etc/hosts`.
//!
//! The name comes from `cluster-lab.toml` or, for cards prepared with the old `flash --hostname`, from a
//! `hostname:` line in a cloud-init style `user-data` file on the boot partition.

use std::path::PathBuf;

use crate::render::RenderedFile;

/// A hostname that is a valid DNS label (RFC 1123): 1–63 of `a-z 0-9 -`, not starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hostname(String);

/// Why a hostname was refused.
#[derive(Debug, thiserror::Error)]
#[error("hostname {name:?}: {reason} (use 1-63 letters, digits and '-', not starting or ending with '-')")]
pub struct HostnameError {
    pub name: String,
    pub reason: &'static str,
}

impl Hostname {
    pub fn parse(name: &str) -> Result<Hostname, HostnameError> {
        let err = |reason| HostnameError {
            name: name.to_string(),
            reason,
        };
        if name.is_empty() || name.len() > 63 {
            return Err(err("length must be 1-63"));
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(err("invalid character"));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(err("leading or trailing '-'"));
        }
        Ok(Hostname(name.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Hostname {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `hostname:` value of a cloud-init style `user-data` document, if it has one at the top level.
pub fn from_user_data(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix("hostname:")?;
        let value = value.split('#').next().unwrap_or("").trim();
        let value = value.trim_matches(|c| c == '"' || c == '\'');
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// `/etc/hostname`.
pub fn render_hostname_file(name: &Hostname) -> RenderedFile {
    RenderedFile {
        path: PathBuf::from("/etc/hostname"),
        contents: format!("{name}\n"),
        mode: 0o644,
        group: None,
    }
}

/// `/etc/hosts` with the `127.0.1.1` line (Debian's convention for the machine's own name) set to `name`; every
/// other line is kept as it is.
pub fn render_hosts_file(current: &str, name: &Hostname) -> RenderedFile {
    let own = format!("127.0.1.1\t{name}");
    let mut lines: Vec<String> = Vec::new();
    let mut replaced = false;
    for line in current.lines() {
        if line.split_whitespace().next() == Some("127.0.1.1") {
            if !replaced {
                lines.push(own.clone());
                replaced = true;
            }
        } else {
            lines.push(line.to_string());
        }
    }
    if !replaced {
        let at = lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some("127.0.0.1"))
            .map_or(0, |i| i + 1);
        lines.insert(at, own);
    }
    RenderedFile {
        path: PathBuf::from("/etc/hosts"),
        contents: lines.join("\n") + "\n",
        mode: 0o644,
        group: None,
    }
}

/// Set the kernel hostname (no-op when it already matches).
pub fn set_kernel_hostname(name: &Hostname) -> nix::Result<bool> {
    let current = nix::unistd::gethostname()?;
    if current.to_str() == Some(name.as_str()) {
        return Ok(false);
    }
    nix::unistd::sethostname(name.as_str())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_labels() {
        assert_eq!(Hostname::parse("Node-1").unwrap().as_str(), "node-1");
        for bad in ["", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(Hostname::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reads_user_data_hostname() {
        let doc = "#cloud-config\n# comment\nhostname: cluster-node-2 # set by flash\nmanage_etc_hosts: true\n";
        assert_eq!(from_user_data(doc).as_deref(), Some("cluster-node-2"));
        assert_eq!(
            from_user_data("hostname: 'quoted'\n").as_deref(),
            Some("quoted")
        );
        assert_eq!(from_user_data("#cloud-config\nusers: []\n"), None);
        assert_eq!(from_user_data("  hostname: nested\n"), None);
    }

    #[test]
    fn hosts_line_is_replaced_once() {
        let name = Hostname::parse("master").unwrap();
        let out = render_hosts_file(
            "127.0.0.1\tlocalhost\n127.0.1.1\told\n127.0.1.1 older\n",
            &name,
        );
        assert_eq!(out.contents, "127.0.0.1\tlocalhost\n127.0.1.1\tmaster\n");
        let again = render_hosts_file(&out.contents, &name);
        assert_eq!(again.contents, out.contents);
    }
}
