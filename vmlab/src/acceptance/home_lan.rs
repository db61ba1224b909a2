//! What a guest on the home LAN (any laptop or phone on the same router) can do with the master's Consul API at
//! :8500 without a token: see every node (the UI's promise), and nothing else. Asked from the virtual switch's
//! namespace, the home-LAN side, with curl and no token.

use std::time::Duration;

use super::lab::Lab;
use super::report::Check;
use crate::http;

/// How Consul 1.8 refuses a request without the rights for it.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// 403 "Permission denied".
    Forbidden,
    /// A listing filtered down to nothing: 404 with an empty body (the keys exist, the guest sees none).
    FilteredEmpty,
    /// The keyring endpoint reports the denial as a server error: 500 "… denied by ACLs".
    DeniedByAcls,
}

impl Refusal {
    fn holds(self, r: &http::Response) -> bool {
        match self {
            Refusal::Forbidden => r.status == 403,
            Refusal::FilteredEmpty => r.status == 404 && r.body.trim().is_empty(),
            Refusal::DeniedByAcls => r.status == 500 && r.body.contains("denied by ACLs"),
        }
    }
}

/// Requests that need a token, and must be refused without one. `agent/leave` last: were it allowed, the master
/// would leave the cluster.
const DENIED: &[(&str, &str, Refusal)] = &[
    (
        "PUT",
        "/v1/kv/cluster-lab/guest-was-here",
        Refusal::Forbidden,
    ),
    (
        "GET",
        "/v1/kv/cluster-lab/swarm/worker-token",
        Refusal::Forbidden,
    ),
    ("GET", "/v1/kv/?recurse", Refusal::FilteredEmpty),
    ("GET", "/v1/operator/keyring", Refusal::DeniedByAcls),
    ("GET", "/v1/snapshot", Refusal::Forbidden),
    ("GET", "/v1/acl/tokens", Refusal::Forbidden),
    ("GET", "/v1/agent/self", Refusal::Forbidden),
    ("PUT", "/v1/agent/leave", Refusal::Forbidden),
];

/// Anonymous: the catalog lists every machine; KV, keyring, snapshot, ACLs and the agent are refused.
pub fn anonymous_is_read_only(lab: &Lab) -> Check {
    const NAME: &str =
        "from the home LAN without a token: every node in the catalog; KV (write, read, list), keyring, \
         snapshot, ACL and agent endpoints refused";
    let base = format!("http://{}:8500", lab.master_ip());
    let mut ok = true;
    let mut ev = String::new();
    match http::get_json(
        &lab.st.netns,
        &format!("{base}/v1/catalog/nodes"),
        Duration::from_secs(10),
    ) {
        Ok(v) => {
            let names: Vec<&str> = v
                .as_array()
                .map(|a| a.iter().filter_map(|n| n["Node"].as_str()).collect())
                .unwrap_or_default();
            let all = lab
                .st
                .machines
                .iter()
                .all(|m| names.contains(&m.hostname.as_str()));
            ok &= all;
            ev.push_str(&format!("GET /v1/catalog/nodes: 200, nodes {names:?}\n"));
        }
        Err(e) => {
            ok = false;
            ev.push_str(&format!("GET /v1/catalog/nodes: {e:#}\n"));
        }
    }
    for (method, path, refusal) in DENIED {
        match http::request(
            &lab.st.netns,
            method,
            &format!("{base}{path}"),
            Duration::from_secs(10),
        ) {
            Ok(r) => {
                let refused = refusal.holds(&r);
                ok &= refused;
                ev.push_str(&format!(
                    "{method} {path}: {} {} ({})\n",
                    r.status,
                    first_line(&r.body),
                    if refused { "refused" } else { "NOT REFUSED" }
                ));
            }
            Err(e) => {
                ok = false;
                ev.push_str(&format!("{method} {path}: {e:#}\n"));
            }
        }
    }
    Check::verdict(NAME, ok, ev)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}
