//! What cluster-lab sets in `/etc/docker/daemon.json`: engine labels (arch, hostname) a node gives itself, the
//! default MTU option of overlay networks, and the cluster registry among the insecure (plain HTTP) registries.
//!
//! A worker cannot change its own Swarm node spec, but engine labels are read by dockerd on `systemctl reload`
//! (SIGHUP) and usable in placement constraints (`engine.labels.cluster-lab.arch == arm64`). The overlay default
//! (`default-network-opts`, Docker 24 and later) makes networks users create fit the cluster VLAN without
//! `--opt com.docker.network.driver.mtu`. Other settings in an existing daemon.json are kept.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::host::render::RenderedFile;

pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Prefix of every label cluster-lab sets.
pub const PREFIX: &str = "cluster-lab.";

#[derive(Debug, thiserror::Error)]
#[error("{DAEMON_JSON}: not a JSON object ({0}); fix or remove it")]
pub struct DaemonJsonError(String);

/// Where daemon.json is under the target's root directory `root`.
pub fn path(root: &Path) -> PathBuf {
    root.join(DAEMON_JSON.trim_start_matches('/'))
}

/// daemon.json's text under `root` (empty when there is none).
pub fn read(root: &Path) -> String {
    std::fs::read_to_string(path(root)).unwrap_or_default()
}

/// The docker architecture name for this build (`amd64`, `arm64`, `arm`).
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

/// `current` (the file's text, empty when missing) with cluster-lab's labels set to `labels`; other labels and
/// settings stay.
pub fn render(current: &str, labels: &[(&str, &str)]) -> Result<RenderedFile, DaemonJsonError> {
    let mut obj = parse(current)?;
    let mut list: Vec<Value> = match obj.remove("labels") {
        Some(Value::Array(a)) => a
            .into_iter()
            .filter(|v| !v.as_str().is_some_and(|s| s.starts_with(PREFIX)))
            .collect(),
        _ => Vec::new(),
    };
    for (k, v) in labels {
        list.push(Value::String(format!("{PREFIX}{k}={v}")));
    }
    obj.insert("labels".into(), Value::Array(list));
    Ok(file(obj))
}

/// The driver option that sets an overlay network's MTU.
pub const OVERLAY_MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// `current` with `default-network-opts.overlay` giving new overlay networks the MTU option `driver_mtu` (see
/// `ingress::driver_mtu_option`); other defaults and settings stay.
pub fn render_overlay_default(
    current: &str,
    driver_mtu: u32,
) -> Result<RenderedFile, DaemonJsonError> {
    let mut obj = parse(current)?;
    let defaults = obj
        .entry("default-network-opts")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(defaults) = defaults else {
        return Err(DaemonJsonError(
            "\"default-network-opts\" is not an object".into(),
        ));
    };
    let overlay = defaults
        .entry("overlay")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(overlay) = overlay else {
        return Err(DaemonJsonError(
            "\"default-network-opts\".\"overlay\" is not an object".into(),
        ));
    };
    overlay.insert(
        OVERLAY_MTU_OPTION.into(),
        Value::String(driver_mtu.to_string()),
    );
    Ok(file(obj))
}

/// `current` with `registry` (`host:port`) among `insecure-registries`, which dockerd then reaches over plain HTTP
/// (see `registry`); other registries and settings stay.
pub fn render_insecure_registry(
    current: &str,
    registry: &str,
) -> Result<RenderedFile, DaemonJsonError> {
    let mut obj = parse(current)?;
    let list = obj
        .entry("insecure-registries")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(list) = list else {
        return Err(DaemonJsonError(
            "\"insecure-registries\" is not a list".into(),
        ));
    };
    if !list.iter().any(|v| v.as_str() == Some(registry)) {
        list.push(Value::String(registry.into()));
    }
    Ok(file(obj))
}

/// The address of Docker's default bridge (`docker0`, Docker's default `bip`), where systemd-resolved also answers
/// (`DNSStubListenerExtra=` in overlays/usr/lib/systemd/resolved.conf.d/): every container's DNS server, so a
/// container on any network, a Swarm task included, resolves what the machine resolves, `.consul` names too.
pub const CONTAINER_DNS: &str = "172.17.0.1";

/// `current` with [`CONTAINER_DNS`] as the containers' DNS server (`dns`); other settings stay. Without it, a Swarm
/// task's upstream servers are those systemd-resolved lists in /run/systemd/resolve/resolv.conf (none for `.consul`,
/// whose server listens on a port that file cannot name), and Docker falls back to public servers.
pub fn render_container_dns(current: &str) -> Result<RenderedFile, DaemonJsonError> {
    let mut obj = parse(current)?;
    obj.insert(
        "dns".into(),
        Value::Array(vec![Value::String(CONTAINER_DNS.into())]),
    );
    Ok(file(obj))
}

fn parse(current: &str) -> Result<Map<String, Value>, DaemonJsonError> {
    if current.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str(current) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(DaemonJsonError("top level is not an object".into())),
        Err(e) => Err(DaemonJsonError(e.to_string())),
    }
}

fn file(obj: Map<String, Value>) -> RenderedFile {
    let text = serde_json::to_string_pretty(&Value::Object(obj)).expect("json serialises");
    RenderedFile {
        path: PathBuf::from(DAEMON_JSON),
        contents: text + "\n",
        mode: 0o644,
        group: None,
    }
}

/// dpkg's database of installed packages.
pub const DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// The first Docker release whose dockerd takes `default-network-opts`.
pub const DEFAULT_NETWORK_OPTS_SINCE: u32 = 24;

/// The major version of the Docker engine installed as a Debian package under `root` (`docker.io`, `docker-ce` or
/// `moby-engine`), from dpkg's database; `None` when none is installed that way.
pub fn packaged_engine_major(root: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(root.join(DPKG_STATUS.trim_start_matches('/'))).ok()?;
    engine_major_in_status(&status)
}

/// [`packaged_engine_major`] of a dpkg status file's text: the paragraph of an installed engine package, its
/// `Version:` without the epoch (`5:27.3.1-1~debian.12` → 27, `26.1.5+dfsg1-9+b9` → 26).
pub fn engine_major_in_status(status: &str) -> Option<u32> {
    status.split("\n\n").find_map(|paragraph| {
        let field = |name: &str| {
            paragraph
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let package = field("Package")?;
        if !matches!(package, "docker.io" | "docker-ce" | "moby-engine") {
            return None;
        }
        if !field("Status")?.ends_with(" installed") {
            return None;
        }
        let version = field("Version")?;
        let upstream = version.split_once(':').map_or(version, |(_, v)| v);
        let major: String = upstream.chars().take_while(char::is_ascii_digit).collect();
        major.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_version_comes_from_the_installed_package() {
        let status =
            "Package: docker-registry\nStatus: install ok installed\nVersion: 2.8.2+ds1-1\n\n\
                      Package: docker.io\nStatus: install ok installed\nPriority: optional\n\
                      Version: 26.1.5+dfsg1-9+b9\nDepends: adduser\n\n";
        assert_eq!(engine_major_in_status(status), Some(26));
        let ce = "Package: docker-ce\nStatus: install ok installed\nVersion: 5:27.3.1-1~debian.12~bookworm\n";
        assert_eq!(engine_major_in_status(ce), Some(27));
        // Removed but its configuration kept: not installed.
        let removed =
            "Package: docker.io\nStatus: deinstall ok config-files\nVersion: 20.10.24+dfsg1-1\n";
        assert_eq!(engine_major_in_status(removed), None);
        assert_eq!(
            engine_major_in_status("Package: bash\nStatus: install ok installed\nVersion: 5.2\n"),
            None
        );
    }

    #[test]
    fn labels_are_merged_and_replaced() {
        let first = render("", &[("arch", "arm64"), ("hostname", "node-1")]).unwrap();
        assert_eq!(
            first.contents,
            "{\n  \"labels\": [\n    \"cluster-lab.arch=arm64\",\n    \"cluster-lab.hostname=node-1\"\n  ]\n}\n"
        );
        let existing =
            r#"{"log-driver":"journald","labels":["site=home","cluster-lab.hostname=old"]}"#;
        let merged = render(existing, &[("hostname", "node-2")]).unwrap();
        let v: Value = serde_json::from_str(&merged.contents).unwrap();
        assert_eq!(v["log-driver"], "journald");
        assert_eq!(
            v["labels"],
            serde_json::json!(["site=home", "cluster-lab.hostname=node-2"])
        );
        // Idempotent: rendering its own output changes nothing.
        assert_eq!(
            render(&merged.contents, &[("hostname", "node-2")]).unwrap(),
            merged
        );
        assert!(render("[1]", &[]).is_err());
    }

    #[test]
    fn containers_ask_the_machines_resolver_on_the_default_bridge() {
        let f = render_container_dns(r#"{"dns":["8.8.8.8"],"labels":["a=b"]}"#).unwrap();
        let v: Value = serde_json::from_str(&f.contents).unwrap();
        assert_eq!(v["dns"], serde_json::json!(["172.17.0.1"]));
        assert_eq!(v["labels"], serde_json::json!(["a=b"]));
        assert!(render_container_dns("[1]").is_err());
    }

    #[test]
    fn the_cluster_registry_joins_the_insecure_registries_once() {
        let reg = "192.168.200.1:5000";
        let first =
            render_insecure_registry(r#"{"insecure-registries":["old:5000"]}"#, reg).unwrap();
        let v: Value = serde_json::from_str(&first.contents).unwrap();
        assert_eq!(
            v["insecure-registries"],
            serde_json::json!(["old:5000", reg])
        );
        assert_eq!(
            render_insecure_registry(&first.contents, reg).unwrap(),
            first
        );
        assert!(render_insecure_registry(r#"{"insecure-registries":"x"}"#, reg).is_err());
        assert!(render("{", &[]).is_err());
    }

    #[test]
    fn overlay_default_is_merged_and_labels_keep_it() {
        let first = render_overlay_default("", 1496).unwrap();
        assert_eq!(
            first.contents,
            "{\n  \"default-network-opts\": {\n    \"overlay\": {\n      \"com.docker.network.driver.mtu\": \"1496\"\n    }\n  }\n}\n"
        );
        let existing = r#"{"log-driver":"journald","default-network-opts":{"bridge":{"x":"1"},"overlay":{"y":"2"}}}"#;
        let merged = render_overlay_default(existing, 1496).unwrap();
        let v: Value = serde_json::from_str(&merged.contents).unwrap();
        assert_eq!(v["log-driver"], "journald");
        assert_eq!(v["default-network-opts"]["bridge"]["x"], "1");
        assert_eq!(v["default-network-opts"]["overlay"]["y"], "2");
        assert_eq!(
            v["default-network-opts"]["overlay"][OVERLAY_MTU_OPTION],
            "1496"
        );
        assert_eq!(
            render_overlay_default(&merged.contents, 1496).unwrap(),
            merged
        );
        // The node's labels, written later, keep the overlay default.
        let labelled = render(&merged.contents, &[("arch", "arm64")]).unwrap();
        let v: Value = serde_json::from_str(&labelled.contents).unwrap();
        assert_eq!(
            v["default-network-opts"]["overlay"][OVERLAY_MTU_OPTION],
            "1496"
        );
        assert!(render_overlay_default(r#"{"default-network-opts":[]}"#, 1496).is_err());
        assert!(render_overlay_default(r#"{"default-network-opts":{"overlay":1}}"#, 1496).is_err());
    }
}
