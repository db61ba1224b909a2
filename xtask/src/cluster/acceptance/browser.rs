//! A real browser on the home LAN: headless Chromium (inside the cluster's namespace) opens the Consul
//! UI's nodes page, keeps a screenshot and the rendered DOM as artifacts, and the DOM must name every
//! machine.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use super::lab::Lab;
use super::report::Check;
use crate::cluster::host;

pub const CHROMIUM: crate::tools::Tool = crate::tools::Tool::debian("chromium", "chromium");

/// Flags for a quiet, self-contained headless run as root.
fn chromium_args(profile: &Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// The screenshot: `--timeout` ends loading after 15 s at most (the node list is drawn within ~2 s).
/// A virtual time budget hangs here: Consul's UI keeps blocking queries open and virtual time never
/// runs out while requests are pending.
const SCREENSHOT_WAIT: &str = "--timeout=15000";
/// The DOM dump: without a budget it is taken at the load event, before the UI has fetched the nodes;
/// 5 s of virtual time renders them (about a minute of real time on a loaded 2-core host).
const DOM_WAIT: &str = "--virtual-time-budget=5000";

/// Whether `word` occurs in `text` with no letter, digit or '-' right before or after it.
pub fn contains_word(text: &str, word: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'));
    text.match_indices(word).any(|(i, _)| {
        edge(text[..i].chars().next_back()) && edge(text[i + word.len()..].chars().next())
    })
}

pub fn nodes_page(lab: &Lab, artifacts: &Path) -> Check {
    let n = lab.st.machines.len();
    let name = format!("headless Chromium shows all {n} nodes on the Consul UI's nodes page");
    Check::from_result(&name, inner(lab, artifacts, &name))
}

fn inner(lab: &Lab, artifacts: &Path, name: &str) -> Result<Check> {
    crate::tools::require(&[CHROMIUM])?;
    let ip = lab.master_ip();
    let dc = crate::cluster::http::get_json(
        &lab.st.netns,
        &format!("http://{ip}:8500/v1/agent/self"),
        Duration::from_secs(10),
    )
    .ok()
    .and_then(|v| v["Config"]["Datacenter"].as_str().map(str::to_string))
    .unwrap_or_else(|| "dc1".to_string());
    let url = format!("http://{ip}:8500/ui/{dc}/nodes");
    let profile = tempfile::tempdir().context("creating a Chromium profile directory")?;
    let shot = artifacts.join("consul-nodes.png");
    let dom_path = artifacts.join("consul-nodes.html");
    // Artifacts of an earlier run of the same cluster name must not pass for this run's.
    std::fs::remove_file(&shot).ok();
    std::fs::remove_file(&dom_path).ok();

    // The DOM first: it waits for the UI to render the nodes and leaves its scripts in the profile's
    // cache, so the screenshot after it shows the node list rather than the loading splash.
    let mut args = chromium_args(profile.path());
    args.push(DOM_WAIT.into());
    args.push("--dump-dom".into());
    args.push(url.clone());
    let dom = host::output_within(
        &mut host::in_netns(&lab.st.netns, CHROMIUM.program, &args),
        Duration::from_secs(300),
    )?;
    let mut args = chromium_args(profile.path());
    args.push(SCREENSHOT_WAIT.into());
    args.push(format!("--screenshot={}", shot.display()));
    args.push(url.clone());
    let out = host::output_within(
        &mut host::in_netns(&lab.st.netns, CHROMIUM.program, &args),
        Duration::from_secs(300),
    )?;
    let shot_ok = shot.metadata().map(|m| m.len() > 1000).unwrap_or(false);

    let dom_text = String::from_utf8_lossy(&dom.stdout).into_owned();
    std::fs::write(&dom_path, &dom_text)?;
    let missing: Vec<&str> = lab
        .st
        .machines
        .iter()
        .map(|m| m.hostname.as_str())
        .filter(|h| !contains_word(&dom_text, h))
        .collect();
    let ok = shot_ok && missing.is_empty() && !dom_text.is_empty();
    Ok(Check::verdict(
        name,
        ok,
        format!(
            "{url}\nscreenshot {} ({})\nDOM {} ({} bytes){}{}",
            crate::cluster::state::rel(&shot).display(),
            if shot_ok { "written" } else { "MISSING" },
            crate::cluster::state::rel(&dom_path).display(),
            dom_text.len(),
            if missing.is_empty() {
                ", names every machine".to_string()
            } else {
                format!(", MISSING {}", missing.join(", "))
            },
            if out.status.success() {
                String::new()
            } else {
                format!(
                    "\nchromium (screenshot) exited {}: {}",
                    out.status,
                    host::failure_text(&out)
                )
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_only() {
        assert!(contains_word("<a>node1</a>", "node1"));
        assert!(!contains_word("<a>node10</a>", "node1"));
        assert!(!contains_word("remaster", "master"));
        assert!(contains_word("master", "master"));
    }
}
