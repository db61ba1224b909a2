//! A real browser on the home LAN: headless Chromium (inside the cluster's namespace) opens the Consul
//! UI's nodes page, and the rendered page must name every machine; a screenshot and the DOM are kept
//! as artifacts.
//!
//! Chromium is driven over the DevTools protocol (see `cdp`) rather than with `--dump-dom` or
//! `--screenshot`: Consul's UI keeps blocking queries open, so the page never finishes loading and
//! one-shot modes either hang or fire before the node list is drawn. Here the page text is polled
//! until every name is on it, and only then is the picture taken.

mod cdp;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::json;

use super::lab::Lab;
use super::report::Check;
use crate::host;
use cdp::Browser;

pub const CHROMIUM: cluster_lab_image::host_tools::Tool =
    cluster_lab_image::host_tools::Tool::debian("chromium", "chromium");

/// How long the node list may take to appear: TCG guests on a loaded 2-core host answer slowly.
const NODES_WITHIN: Duration = Duration::from_secs(90);
/// One protocol call; the first one also covers the browser's start.
const CALL: Duration = Duration::from_secs(30);
const FIRST_CALL: Duration = Duration::from_secs(60);
const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Flags for a quiet, self-contained headless run as root, driven through fds 3 and 4.
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
        // The cluster's addresses are reached directly, whatever proxy the host's environment names.
        "--no-proxy-server",
        "--window-size=1280,900",
        "--remote-debugging-pipe",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--user-data-dir={}", profile.display()),
        "about:blank".to_string(),
    ])
    .collect()
}

/// Whether `word` occurs in `text` with no letter, digit or '-' right before or after it.
pub fn contains_word(text: &str, word: &str) -> bool {
    let edge = |c: Option<char>| c.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-'));
    text.match_indices(word).any(|(i, _)| {
        edge(text[..i].chars().next_back()) && edge(text[i + word.len()..].chars().next())
    })
}

/// What the browser saw of a page.
#[derive(Debug)]
pub struct Capture {
    pub found: Vec<String>,
    pub missing: Vec<String>,
    /// From the start of the navigation to the last look at the page text.
    pub waited: Duration,
    /// The end of the page text at the last look (for evidence when names are missing).
    pub text_tail: String,
    pub screenshot_bytes: usize,
    pub dom_bytes: usize,
    /// Why the browser had to be killed, if it did not exit after Browser.close.
    pub close_note: Option<String>,
}

/// Open `url` in headless Chromium (inside `netns` when given), look at the page's text every second
/// until every one of `names` is on it as a whole word or `limit` has passed, then write a PNG
/// screenshot to `shot` and the page's HTML to `dom` either way.
pub fn capture(
    netns: Option<&str>,
    url: &str,
    names: &[String],
    shot: &Path,
    dom: &Path,
    limit: Duration,
) -> Result<Capture> {
    let dir = tempfile::tempdir().context("creating a Chromium profile directory")?;
    let args = chromium_args(&dir.path().join("profile"));
    let cmd = match netns {
        Some(ns) => host::in_netns(ns, CHROMIUM.program, &args),
        None => host::command(CHROMIUM.program, &args),
    };
    let mut b = Browser::spawn(cmd, &dir.path().join("chromium.log"))
        .context("launching headless Chromium")?;

    let targets = b
        .send("Target.getTargets", json!({}), None, FIRST_CALL)
        .context("listing the browser's targets")?;
    let page = targets["targetInfos"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["type"] == "page"))
        .and_then(|t| t["targetId"].as_str())
        .map(str::to_string);
    let page = match page {
        Some(p) => p,
        None => b
            .send(
                "Target.createTarget",
                json!({ "url": "about:blank" }),
                None,
                CALL,
            )
            .context("opening a page")?["targetId"]
            .as_str()
            .context("Target.createTarget answered without a targetId")?
            .to_string(),
    };
    let attached = b
        .send(
            "Target.attachToTarget",
            json!({ "targetId": page, "flatten": true }),
            None,
            CALL,
        )
        .context("attaching to the page")?;
    let session = attached["sessionId"]
        .as_str()
        .context("Target.attachToTarget answered without a sessionId")?
        .to_string();
    let s = Some(session.as_str());
    b.send("Page.enable", json!({}), s, CALL)
        .context("enabling page events")?;

    let start = Instant::now();
    let nav = b
        .send("Page.navigate", json!({ "url": url }), s, CALL)
        .with_context(|| format!("navigating to {url}"))?;
    if let Some(e) = nav["errorText"].as_str().filter(|e| !e.is_empty()) {
        bail!("navigating to {url}: {e}");
    }

    let (mut text, mut waited);
    loop {
        // Errors answered during the page's own loading (no execution context yet) just mean "not yet".
        text = evaluate(&mut b, s, r#"document.body ? document.body.innerText : """#)
            .context("reading the page text")?
            .unwrap_or_default();
        waited = start.elapsed();
        if names.iter().all(|n| contains_word(&text, n)) || waited >= limit {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let (found, missing) = names.iter().cloned().partition(|n| contains_word(&text, n));

    let png = b
        .send(
            "Page.captureScreenshot",
            json!({ "format": "png" }),
            s,
            CALL,
        )
        .context("taking the screenshot")?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png["data"].as_str().unwrap_or_default())
        .context("decoding the screenshot (base64)")?;
    if !png.starts_with(PNG_MAGIC) {
        bail!(
            "taking the screenshot: the browser's answer is not a PNG ({} bytes)",
            png.len()
        );
    }
    std::fs::write(shot, &png).with_context(|| format!("writing {}", shot.display()))?;
    let html = evaluate(&mut b, s, "document.documentElement.outerHTML")
        .context("reading the page's HTML")?
        .context("reading the page's HTML: the page has no document")?;
    std::fs::write(dom, &html).with_context(|| format!("writing {}", dom.display()))?;

    let close_note = b
        .close(Duration::from_secs(10))
        .err()
        .map(|e| format!("{e:#}"));
    let tail: String = text.trim().chars().rev().take(300).collect();
    Ok(Capture {
        found,
        missing,
        waited,
        text_tail: tail.chars().rev().collect(),
        screenshot_bytes: png.len(),
        dom_bytes: html.len(),
        close_note,
    })
}

/// The string value of `expression` in the page, `None` when the page cannot run it yet.
fn evaluate(b: &mut Browser, session: Option<&str>, expression: &str) -> Result<Option<String>> {
    let r = b.call(
        "Runtime.evaluate",
        json!({ "expression": expression, "returnByValue": true }),
        session,
        CALL,
    )?;
    Ok(r.ok()
        .filter(|r| r.get("exceptionDetails").is_none())
        .and_then(|r| r["result"]["value"].as_str().map(str::to_string)))
}

pub fn nodes_page(lab: &Lab, artifacts: &Path) -> Check {
    let n = lab.st.machines.len();
    let name = format!("headless Chromium shows all {n} nodes on the Consul UI's nodes page");
    Check::from_result(&name, inner(lab, artifacts, &name))
}

fn inner(lab: &Lab, artifacts: &Path, name: &str) -> Result<Check> {
    cluster_lab_image::host_tools::require(&[CHROMIUM])?;
    let ip = lab.master_ip();
    // The catalog's datacenter list needs no token (the agent's own endpoints do).
    let dc = crate::http::get_json(
        &lab.st.netns,
        &format!("http://{ip}:8500/v1/catalog/datacenters"),
        Duration::from_secs(10),
    )
    .ok()
    .and_then(|v| v[0].as_str().map(str::to_string))
    .unwrap_or_else(|| "dc1".to_string());
    let url = format!("http://{ip}:8500/ui/{dc}/nodes");
    let shot = artifacts.join("consul-nodes.png");
    let dom = artifacts.join("consul-nodes.html");
    // Artifacts of an earlier run of the same cluster name must not pass for this run's.
    std::fs::remove_file(&shot).ok();
    std::fs::remove_file(&dom).ok();
    let names: Vec<String> = lab.st.machines.iter().map(|m| m.hostname.clone()).collect();
    let c = capture(Some(&lab.st.netns), &url, &names, &shot, &dom, NODES_WITHIN)
        .context("headless Chromium")?;
    Ok(Check::verdict(
        name,
        c.missing.is_empty(),
        evidence(&url, &c, &shot, &dom),
    ))
}

fn evidence(url: &str, c: &Capture, shot: &Path, dom: &Path) -> String {
    let rel = crate::state::rel;
    let mut e = format!("{url}\n");
    if c.missing.is_empty() {
        e += &format!(
            "names {} after {:.1} s\n",
            c.found.join(", "),
            c.waited.as_secs_f64()
        );
    } else {
        e += &format!(
            "MISSING {} after {:.1} s (found: {}); the page text ends: {:?}\n",
            c.missing.join(", "),
            c.waited.as_secs_f64(),
            if c.found.is_empty() {
                "none".to_string()
            } else {
                c.found.join(", ")
            },
            c.text_tail
        );
    }
    e += &format!(
        "screenshot {} ({} bytes)\nDOM {} ({} bytes)",
        rel(shot).display(),
        c.screenshot_bytes,
        rel(dom).display(),
        c.dom_bytes
    );
    if let Some(note) = &c.close_note {
        e += &format!("\n{note}");
    }
    e
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn whole_words_only() {
        assert!(contains_word("<a>node1</a>", "node1"));
        assert!(!contains_word("<a>node10</a>", "node1"));
        assert!(!contains_word("remaster", "master"));
        assert!(contains_word("master", "master"));
    }

    /// A page like Consul's UI: the names are drawn by script 1.5 s after loading, and one request
    /// (a blocking query) never gets an answer.
    const PAGE: &str = r#"<!doctype html><html><head><title>nodes</title></head><body>
<p>loading</p><script>
fetch('/v1/catalog/nodes?index=7&wait=10m');
setTimeout(function () {
  var d = document.createElement('div');
  d.textContent = 'node1 node2 master';
  document.body.appendChild(d);
}, 1500);
</script></body></html>"#;

    /// Serve `PAGE` on 127.0.0.1, hold every `/v1/` request open until the test ends. Returns the
    /// URL and a sender that, dropped, releases the held requests.
    fn serve() -> (String, mpsc::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/ui/dc1/nodes", listener.local_addr().unwrap());
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (held_tx, held_rx) = mpsc::channel::<TcpStream>();
        std::thread::spawn(move || {
            // Keeps the hanging connections open until the test drops its sender.
            let _ = done_rx.recv();
            drop(held_rx);
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                reader.read_line(&mut request).ok();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("");
                let mut stream = stream;
                if path.starts_with("/v1/") {
                    held_tx.send(stream).ok();
                    continue;
                }
                let (status, body) = if path.starts_with("/ui/") {
                    ("200 OK", PAGE)
                } else {
                    ("404 Not Found", "")
                };
                write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                )
                .ok();
            }
        });
        (url, done_tx)
    }

    #[test]
    fn finds_late_names_despite_a_hanging_request() {
        let (url, _done) = serve();
        let out = tempfile::tempdir().unwrap();
        let (shot, dom) = (out.path().join("p.png"), out.path().join("p.html"));
        let names: Vec<String> = ["node1", "node2", "master"].map(String::from).into();
        let c = capture(None, &url, &names, &shot, &dom, Duration::from_secs(60)).unwrap();
        assert_eq!(c.found, names, "{c:?}");
        assert!(c.missing.is_empty(), "{c:?}");
        assert!(
            c.waited >= Duration::from_secs(1),
            "names seen before the script drew them: {c:?}"
        );
        assert!(c.waited < Duration::from_secs(60), "{c:?}");
        eprintln!("{c:?}");
        std::fs::copy(&shot, "/tmp/browser-test.png").ok();
        let png = std::fs::read(&shot).unwrap();
        assert!(
            png.starts_with(PNG_MAGIC),
            "{} is not a PNG",
            shot.display()
        );
        assert_eq!(png.len(), c.screenshot_bytes);
        let html = std::fs::read_to_string(&dom).unwrap();
        assert!(contains_word(&html, "node2"), "{html}");
        assert!(c.close_note.is_none(), "{c:?}");
    }

    #[test]
    fn reports_names_that_never_appear() {
        let (url, _done) = serve();
        let out = tempfile::tempdir().unwrap();
        let (shot, dom) = (out.path().join("p.png"), out.path().join("p.html"));
        let names: Vec<String> = ["node1", "node3"].map(String::from).into();
        let c = capture(None, &url, &names, &shot, &dom, Duration::from_secs(5)).unwrap();
        assert_eq!(c.found, ["node1"], "{c:?}");
        assert_eq!(c.missing, ["node3"], "{c:?}");
        assert!(c.waited >= Duration::from_secs(5), "{c:?}");
        assert!(std::fs::read(&shot).unwrap().starts_with(PNG_MAGIC));
        let e = evidence(&url, &c, &shot, &dom);
        assert!(
            e.contains("MISSING node3") && e.contains("found: node1"),
            "{e}"
        );
    }

    #[test]
    fn names_the_step_that_failed() {
        // A port that was free a moment ago: nothing listens, the navigation itself fails.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = tempfile::tempdir().unwrap();
        let (shot, dom) = (out.path().join("p.png"), out.path().join("p.html"));
        let url = format!("http://127.0.0.1:{port}/ui/dc1/nodes");
        let err = capture(
            None,
            &url,
            &["node1".into()],
            &shot,
            &dom,
            Duration::from_secs(5),
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("navigating to {url}")), "{msg}");
        assert!(msg.contains("ERR_CONNECTION_REFUSED"), "{msg}");
        assert!(!shot.exists());
    }
}
