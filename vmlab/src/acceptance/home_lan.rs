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

/// Whether a TCP connection from the home LAN to `ip:port` is accepted within 3 s (a dropped SYN times out).
fn tcp_open(lab: &Lab, ip: &str, port: u16) -> Result<bool, String> {
    let script = format!("exec 3<>/dev/tcp/{ip}/{port}");
    let out = crate::host::output_within(
        &mut crate::host::in_netns(&lab.st.netns, "timeout", &["3", "bash", "-c", &script]),
        Duration::from_secs(10),
    )
    .map_err(|e| format!("{e:#}"))?;
    Ok(out.status.success())
}

/// The firewall from the home LAN: with a static route to the VLAN's subnet through the master (what any laptop
/// on the home LAN can add), the cluster's ports answer neither on the master's LAN address nor on any VLAN
/// address, and nothing is routed through the master to a node; SSH on the LAN address still answers. Every
/// machine has the table loaded and its unit enabled.
pub fn firewall_keeps_the_home_lan_out(lab: &Lab) -> Check {
    const NAME: &str =
        "firewall: from the home LAN, with a static route into the VLAN through the master, no \
                        cluster port answers (LAN or VLAN address, routed to a node); SSH does";
    let net = cluster_lab_config::Settings::default().network;
    let (subnet, vlan_if) = (net.subnet.to_string(), net.vlan_interface());
    let master_vlan = net.master.to_string();
    let master_lan = lab.master_ip();
    let mut ok = true;
    let mut ev = String::new();

    for m in &lab.st.machines {
        let loaded = lab.sh(
            m,
            "systemctl is-enabled cluster-lab-firewall.service; nft list table inet cluster_lab | head -1",
        );
        let fine = loaded
            .as_ref()
            .is_ok_and(|o| o.lines().eq(["enabled", "table inet cluster_lab {"]));
        ok &= fine;
        ev.push_str(&format!(
            "{}: {}\n",
            m.hostname,
            match loaded {
                Ok(o) => o.replace('\n', "; "),
                Err(e) => format!("{e:#}"),
            }
        ));
    }
    let node_vlan = lab.nodes().first().and_then(|n| {
        let out = lab
            .sh(n, &format!("ip -4 -o addr show dev {vlan_if}"))
            .ok()?;
        super::checks::vlan_addresses(&out)
            .first()
            .map(|a| a.to_string())
    });

    let route = |verb: &str| {
        crate::host::output_within(
            &mut crate::host::in_netns(
                &lab.st.netns,
                "ip",
                &["route", verb, &subnet, "via", &master_lan],
            ),
            Duration::from_secs(10),
        )
    };
    if let Err(e) = route("replace") {
        return Check::fail(NAME, format!("{ev}adding the route: {e:#}"));
    }
    let mut probes: Vec<(String, u16, bool)> = vec![(master_lan.clone(), 22, true)];
    for port in [8300, 2377, 7946] {
        probes.push((master_lan.clone(), port, false));
        probes.push((master_vlan.clone(), port, false));
    }
    probes.push((master_vlan.clone(), 22, false));
    match &node_vlan {
        Some(ip) => probes.push((ip.clone(), 2377, false)),
        None => {
            ok = false;
            ev.push_str("no VLAN address found on the first node\n");
        }
    }
    for (ip, port, want) in probes {
        let got = tcp_open(lab, &ip, port);
        ok &= got == Ok(want);
        ev.push_str(&format!(
            "home LAN → {ip}:{port}/tcp: {} (want {})\n",
            match got {
                Ok(true) => "answers".to_string(),
                Ok(false) => "no answer".to_string(),
                Err(e) => e,
            },
            if want { "answers" } else { "no answer" }
        ));
    }
    if let Err(e) = route("del") {
        ev.push_str(&format!("removing the route: {e:#}\n"));
    }
    Check::verdict(NAME, ok, ev)
}
