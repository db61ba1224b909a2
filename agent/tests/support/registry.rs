//! The cluster registry as first boot sets it up, inside a test's namespace: a real `docker-registry` serving the
//! configuration `registry::render_config` writes (its data in the lab), and the daemon.json that makes a dockerd
//! trust it.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use cluster_lab::docker::{daemon_json, registry};

use super::{Daemon, Lab, Netns};

pub struct Registry {
    pub daemon: Daemon,
    /// `host:port`.
    pub address: String,
    /// Where it keeps its data.
    pub data: PathBuf,
    /// A daemon.json trusting it (for `Dockerd::start_with`).
    pub daemon_json: PathBuf,
}

/// Serve the registry on `master` (an address of `ns`).
pub fn serve(lab: &Lab, ns: &Netns, master: Ipv4Addr) -> Registry {
    super::require_tool(
        "docker-registry",
        "install the Debian package docker-registry",
    );
    let address = registry::address(master);
    let root = lab.subdir("root");
    let config = registry::render_config(master);
    config.install(&root).unwrap();
    let data = lab.subdir("registry-data");
    let mut serve = ns.nsenter("docker-registry", ["serve"]);
    serve
        .arg(config.target(&root))
        .env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", &data);
    let daemon = Daemon::spawn("docker-registry", serve, &lab.dir().join("registry.log"));
    let daemon_json = lab.dir().join("daemon.json");
    std::fs::write(
        &daemon_json,
        daemon_json::render_insecure_registry("", &address)
            .unwrap()
            .contents,
    )
    .unwrap();
    Registry {
        daemon,
        address,
        data,
        daemon_json,
    }
}
