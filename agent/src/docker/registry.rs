//! The cluster's image registry: Debian's `docker-registry` (the distribution registry) on the master, listening
//! on the master's VLAN address only, over plain HTTP.
//!
//! Plain HTTP is trusted for that one address (`insecure-registries` in every engine's daemon.json), not for any
//! other: the firewall keeps the home LAN off VLAN addresses, and a laptop pushes through the master's engine over
//! SSH (`docker context`), so nothing crosses the home LAN unencrypted. It asks for no login: whoever gets onto the
//! VLAN (a device on the same switch that tags VLAN frames) can push to it too; docs/security.md says so.
//! First boot of the master pushes the images the card carries into it, so every node can pull them by the
//! registry's name (`192.168.200.1:5000/cluster-lab/busybox:latest`). Its data lives in the package's
//! `/var/lib/docker-registry` and survives reboots.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use bollard::query_parameters::{PushImageOptions, TagImageOptions};
use bollard::Docker;
use futures_util::TryStreamExt;

use crate::host::render::RenderedFile;

/// Debian's unit for the registry.
pub const UNIT: &str = "docker-registry.service";
/// The registry's port (the distribution registry's default).
pub const PORT: u16 = 5000;
/// The registry's configuration, written by first boot on the master; the unit's drop-in (overlays) serves it and
/// starts only where it exists.
pub const CONFIG: &str = "/etc/cluster-lab/registry.yml";
/// Where the registry keeps its data (the Debian package's directory, owned by its user).
pub const DATA_DIR: &str = "/var/lib/docker-registry";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("tagging {image} as {target}: {source}")]
    Tag {
        image: String,
        target: String,
        source: bollard::errors::Error,
    },
    #[error("pushing {target} to the cluster registry: {source}")]
    Push {
        target: String,
        source: bollard::errors::Error,
    },
}

/// `host:port` of the registry on the master's VLAN address, as images are named and engines trust it.
pub fn address(master: Ipv4Addr) -> String {
    format!("{master}:{PORT}")
}

/// The registry's configuration: listen on the master's VLAN address only, no authentication (see the module's
/// reasons), data in [`DATA_DIR`], deleting allowed (`docker-registry garbage-collect` frees the space).
pub fn render_config(master: Ipv4Addr) -> RenderedFile {
    let contents = format!(
        "# Written by cluster-lab firstboot; served by docker-registry.service on the master.\n\
         version: 0.1\n\
         log:\n  fields:\n    service: registry\n\
         storage:\n  filesystem:\n    rootdirectory: {DATA_DIR}\n  delete:\n    enabled: true\n\
         http:\n  addr: {}\n  headers:\n    X-Content-Type-Options: [nosniff]\n\
         health:\n  storagedriver:\n    enabled: true\n    interval: 10s\n    threshold: 3\n",
        address(master)
    );
    RenderedFile {
        path: PathBuf::from(CONFIG),
        contents,
        mode: 0o644,
        group: None,
    }
}

/// `image` (`busybox:latest`, `library/busybox`) as named in the registry at `registry`:
/// `192.168.200.1:5000/busybox:latest`. An image already named after another registry keeps its path.
pub fn name_in(registry: &str, image: &str) -> String {
    let (repo, tag) = split_tag(image);
    let path = match repo.split_once('/') {
        // `host:port/…` or `host.domain/…`: another registry's name; keep its path.
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => rest,
        _ => repo,
    };
    format!("{registry}/{path}:{tag}")
}

/// `repo` and `tag` of `image` (`latest` when it has none); a registry's `:port` is not a tag.
fn split_tag(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// Tag `image` for the registry at `registry` and push it there. Returns the name it has there.
pub async fn push(docker: &Docker, registry: &str, image: &str) -> Result<String, RegistryError> {
    let target = name_in(registry, image);
    let (repo, tag) = split_tag(&target);
    docker
        .tag_image(
            image,
            Some(TagImageOptions {
                repo: Some(repo.to_string()),
                tag: Some(tag.to_string()),
            }),
        )
        .await
        .map_err(|source| RegistryError::Tag {
            image: image.into(),
            target: target.clone(),
            source,
        })?;
    docker
        .push_image(
            repo,
            Some(PushImageOptions {
                tag: Some(tag.to_string()),
                ..Default::default()
            }),
            None,
        )
        .try_collect::<Vec<_>>()
        .await
        .map_err(|source| RegistryError::Push {
            target: target.clone(),
            source,
        })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_named_after_the_registry_on_the_vlan() {
        let reg = address("192.168.200.1".parse().unwrap());
        assert_eq!(reg, "192.168.200.1:5000");
        for (image, named) in [
            ("cluster-lab/busybox:latest", "cluster-lab/busybox:latest"),
            ("busybox", "busybox:latest"),
            // Another registry's name keeps its path.
            ("registry.example:443/team/app:1.2", "team/app:1.2"),
            ("localhost:5000/app", "app:latest"),
        ] {
            assert_eq!(name_in(&reg, image), format!("{reg}/{named}"), "{image}");
        }
        assert_eq!(
            split_tag("192.168.200.1:5000/app"),
            ("192.168.200.1:5000/app", "latest")
        );
    }

    #[test]
    fn the_registry_listens_on_the_vlan_address_only() {
        let config = render_config("10.42.0.1".parse().unwrap());
        assert_eq!(config.path.to_str(), Some(CONFIG));
        assert!(
            config.contents.contains("\n  addr: 10.42.0.1:5000\n"),
            "{}",
            config.contents
        );
        assert!(!config.contents.contains("auth:"), "{}", config.contents);
    }
}
