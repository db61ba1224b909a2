//! Engine labels (arch, hostname) a node gives itself in `/etc/docker/daemon.json`.
//!
//! A worker cannot change its own Swarm node spec, but engine labels are read by dockerd on `systemctl reload`
//! (SIGHUP) and usable in placement constraints (`engine.labels.cluster-lab.arch == arm64`). Other settings in an
//! existing daemon.json are kept.

use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::render::RenderedFile;

pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// Prefix of every label cluster-lab sets.
pub const PREFIX: &str = "cluster-lab.";

#[derive(Debug, thiserror::Error)]
#[error("{DAEMON_JSON}: not a JSON object ({0}); fix or remove it")]
pub struct DaemonJsonError(String);

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
    let mut obj: Map<String, Value> = if current.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str(current) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(DaemonJsonError("top level is not an object".into())),
            Err(e) => return Err(DaemonJsonError(e.to_string())),
        }
    };
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
    let text = serde_json::to_string_pretty(&Value::Object(obj)).expect("json serialises");
    Ok(RenderedFile {
        path: PathBuf::from(DAEMON_JSON),
        contents: text + "\n",
        mode: 0o644,
        group: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(render("{", &[]).is_err());
    }
}
