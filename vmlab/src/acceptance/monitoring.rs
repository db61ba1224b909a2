//! The built-in `monitoring` stack: `cluster-lab stack deploy monitoring` on the master runs node-exporter on every
//! machine and Prometheus on the master, both from images the image build made from Debian's packages. Prometheus
//! answers on :9090 from the home LAN and finds every machine's node-exporter through Consul's DNS (where the
//! catalog sync lists it); node-exporter's :9100 stays closed to the home LAN. What it costs in memory is measured:
//! each container's use, and what the master has left, which must leave room on a 1 GiB machine.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::lab::Lab;
use super::report::Check;

pub const PROMETHEUS_PORT: u16 = 9090;
const NODE_EXPORTER_PORT: u16 = 9100;
/// What the master must still have available (MemAvailable) with the stack running: room for a user's services.
const MASTER_AVAILABLE_FLOOR_MIB: u64 = 200;

pub fn monitoring_stack(lab: &Lab) -> Check {
    let name = format!(
        "monitoring: `cluster-lab stack deploy monitoring` runs node-exporter on every machine and Prometheus on the \
         master; Prometheus answers on :{PROMETHEUS_PORT} from the home LAN and scrapes every machine's node-exporter, \
         found through Consul; :{NODE_EXPORTER_PORT} is closed to the home LAN; the master keeps at least \
         {MASTER_AVAILABLE_FLOOR_MIB} MiB available (memory measured); `stack rm` removes it"
    );
    let result = inner(lab, &name);
    if result.is_err() {
        // Whatever went wrong, the checks after this one must not run beside the stack.
        let _ = lab.sh(
            lab.master(),
            "cluster-lab stack rm monitoring >/dev/null 2>&1 || true",
        );
    }
    Check::from_result(&name, result)
}

fn mem_available_mib(lab: &Lab) -> Result<u64> {
    let out = lab.sh(lab.master(), "grep MemAvailable /proc/meminfo")?;
    let kib: u64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("MemAvailable in {out:?}"))?;
    Ok(kib >> 10)
}

/// `(instance, health)` of every active target of `job` in Prometheus's `/api/v1/targets` answer.
pub fn targets(body: &str, job: &str) -> Result<Vec<(String, String)>> {
    let v: serde_json::Value = serde_json::from_str(body).context("targets: not JSON")?;
    let mut out: Vec<(String, String)> = v["data"]["activeTargets"]
        .as_array()
        .context("targets: no data.activeTargets")?
        .iter()
        .filter(|t| t["labels"]["job"] == job)
        .map(|t| {
            (
                t["labels"]["instance"].as_str().unwrap_or("?").to_string(),
                t["health"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

fn inner(lab: &Lab, name: &str) -> Result<Check> {
    let master = lab.master();
    let mut ev = String::new();
    let mut ok = true;
    let before = mem_available_mib(lab)?;

    let start = Instant::now();
    let out = lab.sh_within(
        master,
        "cluster-lab stack deploy monitoring 2>&1; echo \"exit=$?\"",
        Duration::from_secs(600),
    )?;
    let deployed = out.trim_end().ends_with("exit=0");
    ok &= deployed;
    ev.push_str(&format!(
        "stack deploy monitoring ({:.1} s): {}\n",
        start.elapsed().as_secs_f64(),
        out.trim().replace('\n', " | ")
    ));

    // Every machine's node-exporter up, through a node's routing mesh from the home LAN.
    let via = lab.nodes().first().copied().unwrap_or(master);
    let url = format!(
        "http://{}:{PROMETHEUS_PORT}/api/v1/targets?state=active",
        via.lan_ip
    );
    let want = lab.st.machines.len();
    let start = Instant::now();
    let up = lab.poll(Duration::from_secs(180), || {
        let Ok(r) = lab.get(&url) else {
            return Ok(None);
        };
        let t = targets(&r.body, "node")?;
        let up = t.iter().filter(|(_, health)| health == "up").count();
        Ok((up == want && t.len() == want).then_some(t))
    });
    ok &= up.is_ok();
    ev.push_str(&format!(
        "GET {url} (from the home LAN): {}\n",
        match &up {
            Ok(t) => format!(
                "{want} node-exporter targets (the machines' cluster addresses, from Consul's DNS) up {:.1} s after the deploy: {}",
                start.elapsed().as_secs_f64(),
                t.iter()
                    .map(|(i, h)| format!("{i} {h}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("{e:#}"),
        }
    ));
    let q = format!(
        "http://{}:{PROMETHEUS_PORT}/api/v1/query?query=node_memory_MemAvailable_bytes",
        via.lan_ip
    );
    match lab.get(&q) {
        Ok(r) => {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            let per: Vec<String> = v["data"]["result"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| {
                            let bytes: f64 = s["value"][1]
                                .as_str()
                                .and_then(|b| b.parse().ok())
                                .unwrap_or(0.0);
                            format!(
                                "{} {:.0} MiB",
                                s["metric"]["instance"].as_str().unwrap_or("?"),
                                bytes / 1048576.0
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            ok &= per.len() == want;
            ev.push_str(&format!(
                "node_memory_MemAvailable_bytes as Prometheus has it: {}\n",
                per.join(", ")
            ));
        }
        Err(e) => {
            ok = false;
            ev.push_str(&format!("GET {q}: {e:#}\n"));
        }
    }

    // node-exporter is on the host's network, but the home LAN cannot reach it.
    // First that it listens on that address (asked from the machine itself), then that the home LAN gets nothing.
    let exporter = format!("http://{}:{NODE_EXPORTER_PORT}/metrics", via.lan_ip);
    let listening = lab
        .sh(
            via,
            &format!("curl -sS -m 10 -o /dev/null -w '%{{http_code}}' {exporter}"),
        )
        .map(|code| code.trim() == "200")
        .unwrap_or(false);
    let closed = lab.get(&exporter).is_err();
    ok &= listening && closed;
    ev.push_str(&format!(
        "GET {exporter}: from {} itself {}; from the home LAN {}\n",
        via.hostname,
        if listening {
            "HTTP 200"
        } else {
            "NO ANSWER (nothing to keep out?)"
        },
        if closed {
            "no answer (firewall)"
        } else {
            "ANSWERED"
        }
    ));

    // Memory: each container, and what the master has left.
    for m in &lab.st.machines {
        let s = lab.sh(
            m,
            "docker stats --no-stream --format '{{.Name}} {{.MemUsage}}' | grep '^monitoring_' | sed 's/\\.[a-z0-9]*\\.[a-z0-9]* / /'",
        )?;
        ev.push_str(&format!(
            "{}: {}\n",
            m.hostname,
            s.trim().replace('\n', "; ")
        ));
    }
    // The peers on the same machine at the same moment: what the cluster itself runs.
    let peers = lab.sh(
        master,
        "ps -o rss=,comm= -C prometheus,prometheus-node,consul,dockerd,containerd,docker-registry | awk '{m[$2]+=$1} END {for (c in m) printf \"%s %.1f MiB, \", c, m[c]/1024}'",
    )?;
    ev.push_str(&format!(
        "master, resident memory of the stack's programs and, for comparison, of the cluster's own: {}\n",
        peers.trim().trim_end_matches(',')
    ));
    let after = mem_available_mib(lab)?;
    let fits = after >= MASTER_AVAILABLE_FLOOR_MIB;
    ok &= fits;
    ev.push_str(&format!(
        "master MemAvailable: {before} MiB before the deploy, {after} MiB with the stack running (floor {MASTER_AVAILABLE_FLOOR_MIB} MiB)\n"
    ));

    let out = lab.sh(
        master,
        "cluster-lab stack rm monitoring 2>&1; echo \"exit=$?\"",
    )?;
    let removed = out.trim_end().ends_with("exit=0");
    ok &= removed;
    ev.push_str(&format!(
        "stack rm monitoring: {}\n",
        out.trim().replace('\n', " | ")
    ));
    Ok(Check::verdict(name, ok, ev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_lists_a_jobs_instances_with_their_health() {
        let body = r#"{"status":"success","data":{"activeTargets":[
            {"labels":{"instance":"node1","job":"node"},"health":"up"},
            {"labels":{"instance":"localhost:9090","job":"prometheus"},"health":"up"},
            {"labels":{"instance":"master","job":"node"},"health":"down"}]}}"#;
        assert_eq!(
            targets(body, "node").unwrap(),
            [
                ("master".to_string(), "down".to_string()),
                ("node1".to_string(), "up".to_string())
            ]
        );
        assert!(targets("<html>", "node").is_err());
    }
}
