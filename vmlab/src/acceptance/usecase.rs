//! The first thing people do with a new cluster, offline: an attachable overlay network, a small web server pinned to the first
//! node, a client on the second node fetching it by name; and a replicated service reached through the
//! routing mesh from the home LAN. The container image is the tiny busybox image the image builder
//! preloads (no registry is reachable).

use std::time::Duration;

use anyhow::{bail, Result};

use super::lab::Lab;
use super::report::Check;

const NET: &str = "clvm-accept";
const WEB: &str = "clvm-web";
const MESH: &str = "clvm-mesh";
pub const MESH_PORT: u16 = 8080;
/// Overlay interfaces on the 1496-byte VLAN: 1496 − 50 (VXLAN).
const OVERLAY_MTU: u32 = 1446;

/// The preloaded busybox image on the master: `wanted` if given, else the first image whose name
/// mentions busybox.
pub fn busybox_image(lab: &Lab, wanted: Option<&str>) -> Result<String> {
    if let Some(w) = wanted {
        return Ok(w.to_string());
    }
    let out = lab.sh(
        lab.master(),
        "docker image ls --format '{{.Repository}}:{{.Tag}}'",
    )?;
    match out.lines().find(|l| l.contains("busybox")) {
        Some(i) => Ok(i.trim().to_string()),
        None => bail!(
            "no preloaded busybox image on {} (docker image ls: {:?}); the image builder must preload one (no registry here)",
            lab.master().hostname,
            out.trim()
        ),
    }
}

/// A busybox web server answering with `text` on port 80.
fn httpd_args(image: &str, text: &str) -> String {
    format!(
        "{image} busybox sh -c 'mkdir -p /www && echo {text} > /www/index.html && exec busybox httpd -f -p 80 -h /www'"
    )
}

pub fn overlay_by_name(lab: &Lab, image: &Result<String>) -> Check {
    const NAME: &str =
        "overlay network: web server pinned to node 1, fetched by name from a client on node 2 (interface MTU fits the VLAN)";
    Check::from_result(NAME, overlay_inner(lab, image, NAME))
}

fn overlay_inner(lab: &Lab, image: &Result<String>, name: &str) -> Result<Check> {
    let image = match image {
        Ok(i) => i.clone(),
        Err(e) => bail!("{e:#}"),
    };
    let nodes = lab.nodes();
    let (Some(n1), Some(n2)) = (nodes.first(), nodes.get(1)) else {
        bail!("needs two nodes besides the master (run with --nodes 3 or more)");
    };
    let master = lab.master();
    lab.sh(
        master,
        &format!("docker network inspect {NET} >/dev/null 2>&1 || docker network create --driver overlay --attachable {NET}"),
    )?;
    lab.sh(
        master,
        &format!(
            "docker service inspect {WEB} >/dev/null 2>&1 || docker service create --detach --name {WEB} --network {NET} --constraint node.hostname=={} {}",
            n1.hostname,
            httpd_args(&image, "cluster-lab-overlay-ok")
        ),
    )?;
    let placed = lab.poll(Duration::from_secs(180), || {
        let ps = lab.sh(
            master,
            &format!("docker service ps {WEB} --format '{{{{.Node}}}} {{{{.CurrentState}}}}' --filter desired-state=running"),
        )?;
        Ok(ps
            .lines()
            .any(|l| l.starts_with(&format!("{} Running", n1.hostname)))
            .then_some(ps))
    })?;
    let fetch = lab.poll(Duration::from_secs(120), || {
        let out = lab.sh(
            n2,
            &format!("docker run --rm --network {NET} {image} busybox sh -c 'echo mtu=$(cat /sys/class/net/eth0/mtu); busybox wget -q -T 5 -O - http://{WEB}/ 2>&1' || true"),
        )?;
        Ok(out.contains("cluster-lab-overlay-ok").then_some(out))
    });
    // The network was created without an MTU option: the machines' dockerd default (daemon.json) must make it fit
    // the 1496-byte VLAN, i.e. 1446 inside (VXLAN takes 50).
    let mtu_ok = fetch
        .as_ref()
        .is_ok_and(|o| o.lines().any(|l| l.trim() == format!("mtu={OVERLAY_MTU}")));
    let ok = fetch.is_ok() && mtu_ok;
    Ok(Check::verdict(
        name,
        ok,
        format!(
            "service {WEB} on {}: {}\nclient on {} (want mtu={OVERLAY_MTU}) GET http://{WEB}/: {}",
            n1.hostname,
            placed.trim(),
            n2.hostname,
            match fetch {
                Ok(o) => o.trim().to_string(),
                Err(e) => format!("{e:#}"),
            }
        ),
    ))
}

pub fn routing_mesh(lab: &Lab, image: &Result<String>) -> Check {
    let name = format!(
        "routing mesh: a replicated service published on :{MESH_PORT} answers on every machine's home-LAN address"
    );
    Check::from_result(&name, mesh_inner(lab, image, &name))
}

fn mesh_inner(lab: &Lab, image: &Result<String>, name: &str) -> Result<Check> {
    let image = match image {
        Ok(i) => i.clone(),
        Err(e) => bail!("{e:#}"),
    };
    let master = lab.master();
    lab.sh(
        master,
        &format!(
            "docker service inspect {MESH} >/dev/null 2>&1 || docker service create --detach --name {MESH} --replicas 2 --publish published={MESH_PORT},target=80 {}",
            httpd_args(&image, "cluster-lab-mesh-ok")
        ),
    )?;
    let (ok, mut ev) = answers_on_every_machine(
        lab,
        MESH_PORT,
        "cluster-lab-mesh-ok",
        Duration::from_secs(180),
    );
    if let Ok(ps) = lab.sh(
        master,
        &format!("docker service ps {MESH} --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"),
    ) {
        ev.push_str(&format!("tasks: {}", ps.trim().replace('\n', "; ")));
    }
    Ok(Check::verdict(name, ok, ev))
}

/// The service of the registry check.
const FROM_REGISTRY: &str = "cl-from-registry";

/// The cluster registry on the master: the card's busybox image is in it (first boot pushed it), and a global
/// service of it by the registry's name runs a task on every machine, each having pulled it from the master.
pub fn registry(lab: &Lab) -> Check {
    const NAME: &str = "registry on the master: the card's image was pushed into it at first boot, and a global \
                        service of it by the registry's name runs on every machine, pulled from the master";
    Check::from_result(NAME, registry_inner(lab, NAME))
}

fn registry_inner(lab: &Lab, name: &str) -> Result<Check> {
    let at = registry_address();
    let image = format!("{at}/cluster-lab/busybox:latest");
    let master = lab.master();
    let n = lab.st.machines.len();
    let mut ev = String::new();
    let catalog = lab.sh(master, &format!("curl -sS http://{at}/v2/_catalog"))?;
    ev.push_str(&format!(
        "GET http://{at}/v2/_catalog: {}\n",
        catalog.trim()
    ));
    lab.sh(
        master,
        &format!(
            "docker service inspect {FROM_REGISTRY} >/dev/null 2>&1 || docker service create --detach \
             --name {FROM_REGISTRY} --mode global {image} busybox sleep 86400"
        ),
    )?;
    let running = lab.poll(Duration::from_secs(300), || {
        let out = lab.sh(
            master,
            &format!(
                "docker service ps {FROM_REGISTRY} --filter desired-state=running \
                 --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"
            ),
        )?;
        let up = out.lines().filter(|l| l.contains(" Running ")).count();
        Ok((up == n).then(|| out.trim().replace('\n', "; ")))
    });
    ev.push_str(&format!(
        "tasks of {FROM_REGISTRY}: {}\n",
        match &running {
            Ok(t) => t.clone(),
            Err(e) => format!("not all {n} running: {e:#}"),
        }
    ));
    let (pulled, pulled_ev) = pulled_by_every_machine(lab, image.trim_end_matches(":latest"));
    ev.push_str(&pulled_ev);
    let ok = catalog.contains("\"cluster-lab/busybox\"") && running.is_ok() && pulled;
    Ok(Check::verdict(name, ok, ev))
}

/// Whether every machine's engine holds an image of `repo` (`host:port/name`) by a repository digest under that
/// name, with each machine's evidence. Swarm pulls a task's image by digest (`name:tag@sha256:…`), which may leave
/// it untagged: what shows that an engine pulled it from (or pushed it to) the registry is its repository digest.
pub fn pulled_by_every_machine(lab: &Lab, repo: &str) -> (bool, String) {
    let digests = format!(
        "docker image ls -q | sort -u | xargs -r docker image inspect \
         --format '{{{{range .RepoDigests}}}}{{{{println .}}}}{{{{end}}}}' | grep '^{repo}@sha256:' || true"
    );
    let mut ev = String::new();
    let mut pulled = true;
    for m in &lab.st.machines {
        let has = lab.sh(m, &digests);
        let digest = has
            .as_ref()
            .ok()
            .and_then(|o| o.lines().next().map(str::to_string));
        pulled &= digest.is_some();
        ev.push_str(&format!(
            "{}: {}\n",
            m.hostname,
            match (&digest, &has) {
                (Some(d), _) => d.clone(),
                (None, Ok(_)) => format!("no {repo}@sha256:… on this engine"),
                (None, Err(e)) => format!("{e:#}"),
            }
        ));
    }
    (pulled, ev)
}

/// Whether `http://<machine's home-LAN address>:port/` answers with a body holding `needle` on every machine (each
/// polled up to `limit`, from the home LAN), with each machine's evidence.
pub fn answers_on_every_machine(
    lab: &Lab,
    port: u16,
    needle: &str,
    limit: Duration,
) -> (bool, String) {
    let mut ev = String::new();
    let mut ok = true;
    for m in &lab.st.machines {
        let url = format!("http://{}:{port}/", m.lan_ip);
        let r = lab.poll(limit, || {
            Ok(lab.get(&url).ok().filter(|r| r.body.contains(needle)))
        });
        ok &= r.is_ok();
        ev.push_str(&format!(
            "GET {url} ({}): {}\n",
            m.hostname,
            match r {
                Ok(r) => format!("HTTP {} {}", r.status, r.body.trim()),
                Err(e) => format!("{e:#}"),
            }
        ));
    }
    (ok, ev)
}

/// The cluster registry's `host:port`: the master's VLAN address with the default settings the harness flashes.
pub fn registry_address() -> String {
    let master = cluster_lab_config::Settings::default().network.master;
    format!("{master}:5000")
}
