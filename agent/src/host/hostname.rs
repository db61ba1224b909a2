//! The machine's name: kernel hostname, `/etc/hostname`, and the `127.0.1.1` line of `/etc/hosts`.
//!
//! The name comes from `cluster-lab.toml` or, for cards prepared with the old `flash --hostname`, from a
//! `hostname:` line in a cloud-init style `user-data` file on the boot partition.

use std::path::PathBuf;

use crate::host::render::RenderedFile;

/// The machine's name, validated by the one hostname rule in `cluster-lab.toml`'s schema.
pub use crate::config::Hostname;

/// The hostname every card has before first boot (the image recipe writes it to /etc/hostname).
pub const IMAGE_DEFAULT: &str = "cluster-lab";

/// The name of a card flashed without a hostname: `cl-` and the last three bytes of its wired MAC address, so
/// two unnamed cards on one switch never share a name.
pub fn unnamed_default(mac: crate::net::link::Mac) -> Hostname {
    let [.., a, b, c] = mac.0;
    Hostname::parse(&format!("cl-{a:02x}{b:02x}{c:02x}")).expect("cl-xxxxxx is a valid hostname")
}

/// Whether `name` (the system's current hostname) says nobody has named this machine yet.
pub fn is_unnamed(name: &str) -> bool {
    matches!(name, "" | IMAGE_DEFAULT | "localhost" | "(none)")
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
        assert_eq!("Node-1".parse::<Hostname>().unwrap().as_str(), "node-1");
        for bad in ["", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(bad.parse::<Hostname>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn an_unnamed_card_is_named_after_its_mac() {
        let mac: crate::net::link::Mac = "b8:27:eb:12:ab:9f".parse().unwrap();
        assert_eq!(unnamed_default(mac).as_str(), "cl-12ab9f");
        assert!(is_unnamed(IMAGE_DEFAULT) && is_unnamed("localhost") && is_unnamed(""));
        assert!(!is_unnamed("node1"));
    }

    #[test]
    fn hosts_line_is_replaced_once() {
        let name: Hostname = "master".parse().unwrap();
        let out = render_hosts_file(
            "127.0.0.1\tlocalhost\n127.0.1.1\told\n127.0.1.1 older\n",
            &name,
        );
        assert_eq!(out.contents, "127.0.0.1\tlocalhost\n127.0.1.1\tmaster\n");
        let again = render_hosts_file(&out.contents, &name);
        assert_eq!(again.contents, out.contents);
    }
}
