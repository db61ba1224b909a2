//! HTTP from the home LAN side: curl inside the cluster's namespace, and the Consul API calls the
//! harness and the acceptance test make against the master.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::host;

/// A response: status code and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// The `Server:` or other headers are not needed; the final URL after redirects is.
    pub url: String,
}

/// GET `url` from inside the namespace, following redirects, within `limit`.
pub fn get(netns: &str, url: &str, limit: Duration) -> Result<Response> {
    request(netns, "GET", url, limit)
}

/// `method url` (no body) from inside the namespace, following redirects, within `limit`; any HTTP status is a
/// response, only a failed transfer is an error.
pub fn request(netns: &str, method: &str, url: &str, limit: Duration) -> Result<Response> {
    let secs = limit.as_secs().max(1).to_string();
    let out = host::output_within(
        &mut host::in_netns(
            netns,
            "curl",
            &[
                "-sS",
                "-L",
                "-X",
                method,
                "--max-time",
                &secs,
                "-o",
                "-",
                "-w",
                "\n%{http_code} %{url_effective}",
                url,
            ],
        ),
        limit + Duration::from_secs(5),
    )?;
    if !out.status.success() {
        bail!("{method} {url}: {}", host::failure_text(&out));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
    let (code, final_url) = trailer.split_once(' ').unwrap_or((trailer, url));
    Ok(Response {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        url: final_url.trim().to_string(),
    })
}

/// GET a JSON document; a non-200 status is an error.
pub fn get_json(netns: &str, url: &str, limit: Duration) -> Result<Value> {
    let r = get(netns, url, limit)?;
    if r.status != 200 {
        bail!("GET {url}: HTTP {} {}", r.status, r.body.trim());
    }
    serde_json::from_str(&r.body).with_context(|| format!("GET {url}: not JSON: {}", r.body))
}

/// A Consul gossip member as the master's agent sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub addr: String,
    /// Serf status: 1 alive, 2 leaving, 3 left, 4 failed.
    pub status: u64,
    pub server: bool,
}

impl Member {
    pub fn alive(&self) -> bool {
        self.status == 1
    }
}

/// `GET /v1/agent/members` on the Consul agent at `ip`.
pub fn consul_members(netns: &str, ip: &str) -> Result<Vec<Member>> {
    let v = get_json(
        netns,
        &format!("http://{ip}:8500/v1/agent/members"),
        Duration::from_secs(5),
    )?;
    parse_members(&v)
}

pub fn parse_members(v: &Value) -> Result<Vec<Member>> {
    let arr = v.as_array().context("members: not a JSON array")?;
    Ok(arr
        .iter()
        .map(|m| Member {
            name: m["Name"].as_str().unwrap_or_default().to_string(),
            addr: m["Addr"].as_str().unwrap_or_default().to_string(),
            status: m["Status"].as_u64().unwrap_or(0),
            server: m["Tags"]["role"].as_str() == Some("consul"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_from_consul_json() {
        let v: Value = serde_json::from_str(
            r#"[{"Name":"master","Addr":"192.168.200.1","Port":8301,"Tags":{"role":"consul"},"Status":1},
                {"Name":"node1","Addr":"192.168.200.101","Port":8301,"Tags":{"role":"node"},"Status":4}]"#,
        )
        .unwrap();
        let m = parse_members(&v).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[0].alive() && m[0].server);
        assert!(!m[1].alive() && !m[1].server);
        assert_eq!(m[1].addr, "192.168.200.101");
    }
}
