//! After :8500, from the laptop: the home-LAN side (the cluster's namespace) runs the Docker CLI with the context
//! the master's `cluster-lab status` prints, lists the nodes, makes an image of its own (`docker import` of a
//! tarball: no internet), pushes it into the master's registry through that context, deploys a stack of it with
//! `docker stack deploy`, and reaches it through the routing mesh. Consul's catalog follows the stack's tasks as it
//! is scaled up and down, and `<service>.service.consul` resolves on a node.
//!
//! The laptop's `ssh` is a wrapper in front of the system's that offers the cluster's test key (the key flashed
//! onto the cards) and forgets host keys, as a person's `~/.ssh/config` would; `DOCKER_CONFIG` keeps its contexts
//! in the cluster's state directory, not in root's home.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::lab::Lab;
use super::report::Check;
use crate::host;

/// The stack the laptop deploys, and its one service as Swarm and Consul name it.
const STACK: &str = "laptop";
const SERVICE: &str = "laptop_hello";
const CONSUL_SERVICE: &str = "laptop-hello";
/// The image the laptop makes, under the registry's name.
const REPO: &str = "laptop/hello";
pub const STACK_PORT: u16 = 8090;
const BODY: &str = "cluster-lab-laptop-ok";

/// The laptop: a Docker CLI whose contexts live in `dir/docker` and whose `ssh` offers the test key.
pub struct Laptop<'a> {
    lab: &'a Lab,
    dir: PathBuf,
}

impl<'a> Laptop<'a> {
    pub fn new(lab: &'a Lab) -> Result<Laptop<'a>> {
        let dir = lab.st.dir().join("laptop");
        std::fs::create_dir_all(dir.join("bin"))?;
        std::fs::create_dir_all(dir.join("docker"))?;
        let key = lab.st.ssh_key.display().to_string();
        let wrapper = dir.join("bin/ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# The laptop's ssh: the key flashed onto the cards; cards get new host keys on every first boot.\n\
                 exec /usr/bin/ssh -i {key} -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
                 -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \"$@\"\n"
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
        Ok(Laptop { lab, dir })
    }

    /// `sh -c script` on the laptop (inside the cluster's home-LAN namespace) with the laptop's PATH and Docker
    /// configuration.
    fn command(&self, script: &str) -> Command {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into())
        );
        let mut cmd = host::in_netns(
            &self.lab.st.netns,
            "env",
            &[
                format!("PATH={path}"),
                format!("DOCKER_CONFIG={}", self.dir.join("docker").display()),
                "sh".into(),
                "-c".into(),
                script.into(),
            ],
        );
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Run `script` on the laptop; its stdout, or an error with the script, status and stderr.
    pub fn sh(&self, script: &str, limit: Duration) -> Result<String> {
        let out = host::output_within(&mut self.command(script), limit)?;
        if !out.status.success() {
            bail!(
                "laptop `{script}` failed ({}): {}",
                out.status,
                host::failure_text(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The `docker context create … && docker context use …` line the master's `cluster-lab status` prints.
fn printed_context_command(lab: &Lab) -> Result<String> {
    // status exits 1 when it finds problems; its text is what counts here.
    let status = lab.sh(lab.master(), "cluster-lab status || true")?;
    status
        .lines()
        .find_map(|l| {
            l.find("docker context create")
                .map(|i| l[i..].trim().to_string())
        })
        .with_context(|| {
            format!("`cluster-lab status` on the master prints no docker context line:\n{status}")
        })
}

/// The laptop sets up the printed context and lists every machine Ready through it.
pub fn context(lab: &Lab, laptop: &Result<Laptop>) -> Check {
    const NAME: &str = "from the laptop: the `docker context` line `cluster-lab status` prints works from the home \
                        LAN, and `docker node ls` through it lists every machine Ready";
    Check::from_result(NAME, context_inner(lab, laptop, NAME))
}

fn context_inner(lab: &Lab, laptop: &Result<Laptop>, name: &str) -> Result<Check> {
    let laptop = laptop.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let line = printed_context_command(lab)?;
    // Run again (a kept cluster): the context may exist already.
    laptop.sh(
        "docker context rm -f cluster-lab >/dev/null 2>&1 || true",
        Duration::from_secs(30),
    )?;
    let created = laptop.sh(&line, Duration::from_secs(60))?;
    let nodes = laptop.sh(
        "docker node ls --format '{{.Hostname}} {{.Status}}'",
        Duration::from_secs(60),
    )?;
    let ready = nodes.lines().filter(|l| l.ends_with(" Ready")).count();
    let n = lab.st.machines.len();
    let every = lab
        .st
        .machines
        .iter()
        .all(|m| nodes.lines().any(|l| l == format!("{} Ready", m.hostname)));
    Ok(Check::verdict(
        name,
        ready == n && every,
        format!(
            "printed: {line}\n{}docker node ls: {}",
            created,
            nodes.trim().replace('\n', "; ")
        ),
    ))
}

/// A root filesystem of the cluster's busybox (the card's own binary, so it runs on the cluster's architecture)
/// serving [`BODY`], as a tarball on the laptop.
fn rootfs_tarball(lab: &Lab, laptop: &Laptop) -> Result<PathBuf> {
    let busybox = match cluster_lab_image::container::find_busybox(&lab.st.image)? {
        cluster_lab_image::container::FoundBusybox::Static { binary, .. } => binary,
        other => bail!("no static busybox in {}: {other:?}", lab.st.image.display()),
    };
    let root = laptop.path("rootfs");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("www"))?;
    std::fs::write(root.join("bin/busybox"), busybox)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    for applet in ["sh", "httpd", "nslookup"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    std::fs::write(root.join("www/index.html"), format!("{BODY}\n"))?;
    let tar = laptop.path("hello.tar");
    host::run(&mut host::command(
        "tar",
        &[
            "-C".to_string(),
            root.display().to_string(),
            "-cf".into(),
            tar.display().to_string(),
            ".".into(),
        ],
    ))?;
    Ok(tar)
}

fn stack_file(replicas: usize, image: &str) -> String {
    format!(
        "# The laptop's stack: its own image from the cluster registry, one task per machine, behind the routing mesh.\n\
         version: \"3.8\"\n\
         services:\n  hello:\n    image: {image}\n    command: [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n\
         \x20   ports:\n      - \"{STACK_PORT}:80\"\n\
         \x20   stop_grace_period: 2s\n\
         \x20   deploy:\n      replicas: {replicas}\n      placement:\n        max_replicas_per_node: 1\n"
    )
}

/// The laptop imports an image of its own, pushes it into the master's registry through the context, and deploys a
/// stack of it: a task on every machine, each having pulled the image from the master, answering on every machine's
/// home-LAN address.
pub fn push_and_stack(lab: &Lab, laptop: &Result<Laptop>) -> Check {
    let name = format!(
        "from the laptop: an image made there (`docker import`) is pushed into the master's registry through the \
         context, and `docker stack deploy` of it runs a task on every machine (each pulled it from the master), \
         answering on :{STACK_PORT} of every machine's home-LAN address"
    );
    Check::from_result(&name, push_inner(lab, laptop, &name))
}

fn push_inner(lab: &Lab, laptop: &Result<Laptop>, name: &str) -> Result<Check> {
    let laptop = laptop.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let registry = super::usecase::registry_address();
    let image = format!("{registry}/{REPO}:1");
    let tar = rootfs_tarball(lab, laptop)?;
    let mut ev = String::new();
    let imported = laptop.sh(
        &format!("docker import {} {image}", tar.display()),
        Duration::from_secs(180),
    )?;
    ev.push_str(&format!("docker import: {}", imported));
    let pushed = laptop.sh(&format!("docker push {image}"), Duration::from_secs(180))?;
    ev.push_str(&format!(
        "docker push: {}\n",
        pushed.lines().last().unwrap_or("").trim()
    ));
    let n = lab.st.machines.len();
    std::fs::write(laptop.path("stack.yml"), stack_file(n, &image))?;
    let deployed = laptop.sh(
        &format!("docker stack deploy -c stack.yml {STACK}"),
        Duration::from_secs(180),
    )?;
    ev.push_str(&format!(
        "docker stack deploy: {}",
        deployed.trim().replace('\n', "; ")
    ));
    let running = lab.poll(Duration::from_secs(300), || {
        let out = laptop.sh(
            &format!(
                "docker service ps {SERVICE} --filter desired-state=running --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"
            ),
            Duration::from_secs(60),
        )?;
        let up = out.lines().filter(|l| l.contains(" Running ")).count();
        Ok((up == n).then(|| out.trim().replace('\n', "; ")))
    });
    ev.push_str(&format!(
        "\ntasks of {SERVICE}: {}\n",
        match &running {
            Ok(t) => t.clone(),
            Err(e) => format!("not all {n} running: {e:#}"),
        }
    ));
    let (pulled, pulled_ev) =
        super::usecase::pulled_by_every_machine(lab, &format!("{registry}/{REPO}"));
    ev.push_str(&pulled_ev);
    let (answered, answered_ev) =
        super::usecase::answers_on_every_machine(lab, STACK_PORT, BODY, Duration::from_secs(120));
    ev.push_str(&answered_ev);
    Ok(Check::verdict(
        name,
        running.is_ok() && pulled && answered,
        ev,
    ))
}

/// `node service-id status` of every instance of [`CONSUL_SERVICE`] in the catalog, read on the master; an instance
/// is `passing` when its checks (running, Docker's health) both pass, else the status of one that does not.
fn catalog(lab: &Lab) -> Result<Vec<String>> {
    let out = lab.sh(
        lab.master(),
        &format!("curl -sS http://127.0.0.1:8500/v1/health/checks/{CONSUL_SERVICE}"),
    )?;
    let checks: Vec<serde_json::Value> =
        serde_json::from_str(&out).with_context(|| format!("decoding {out:?}"))?;
    let mut by_instance: std::collections::BTreeMap<(String, String), String> = Default::default();
    for c in &checks {
        let key = (
            c["Node"].as_str().unwrap_or("").to_string(),
            c["ServiceID"].as_str().unwrap_or("").to_string(),
        );
        let status = c["Status"].as_str().unwrap_or("").to_string();
        let entry = by_instance.entry(key).or_insert_with(|| "passing".into());
        if status != "passing" {
            *entry = status;
        }
    }
    Ok(by_instance
        .into_iter()
        .map(|((node, id), status)| format!("{node} {id} {status}"))
        .collect())
}

/// `node` of every running task of [`SERVICE`], sorted, as Swarm places them.
fn placed(laptop: &Laptop) -> Result<Vec<String>> {
    let out = laptop.sh(
        &format!(
            "docker service ps {SERVICE} --filter desired-state=running --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"
        ),
        Duration::from_secs(60),
    )?;
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.contains(" Running "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    v.sort();
    Ok(v)
}

/// Wait until the catalog lists exactly the machines Swarm runs the tasks on, each passing. Returns the seconds from
/// `since` until Swarm's own task list was in step (the containers started or stopped), until the catalog was, and
/// the catalog's listing.
fn catalog_follows(
    lab: &Lab,
    laptop: &Laptop,
    want: usize,
    since: Instant,
) -> Result<(Option<f64>, f64, String)> {
    let mut swarm_at = None;
    let in_step = lab.poll(Duration::from_secs(120), || {
        let nodes = placed(laptop)?;
        if nodes.len() == want && swarm_at.is_none() {
            swarm_at = Some(since.elapsed().as_secs_f64());
        }
        let listed = catalog(lab)?;
        let listed_nodes: Vec<String> = listed
            .iter()
            .filter(|l| l.ends_with(" passing"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        Ok(
            (nodes.len() == want && listed.len() == want && listed_nodes == nodes)
                .then(|| listed.join("; ")),
        )
    })?;
    Ok((swarm_at, since.elapsed().as_secs_f64(), in_step))
}

/// The evidence of [`catalog_follows`], its times counted from `since` (what happened then).
fn followed(r: &Result<(Option<f64>, f64, String)>, since: &str) -> String {
    match r {
        Ok((swarm, catalog, l)) => format!(
            "Swarm's tasks in step {} s, the catalog {catalog:.1} s after {since} (polled every 3 s): {l}",
            swarm.map(|s| format!("{s:.1}")).unwrap_or_else(|| "?".into())
        ),
        Err(e) => format!("{e:#}"),
    }
}

/// The stack's tasks in Consul's catalog, following a scale down and up; the name resolves on a node's host and in
/// a container on its host network.
pub fn catalog_and_names(lab: &Lab, laptop: &Result<Laptop>) -> Check {
    const NAME: &str = "consul catalog: every task of the laptop's stack is an instance of `laptop-hello` on the \
                        machine running it, with a passing check; the catalog follows a scale down and up within \
                        seconds, and a node whose cable is pulled leaves the healthy instances; `laptop-hello.service.consul` resolves on a node and inside one of the stack's tasks there";
    Check::from_result(NAME, catalog_inner(lab, laptop, NAME))
}

fn catalog_inner(lab: &Lab, laptop: &Result<Laptop>, name: &str) -> Result<Check> {
    let laptop = laptop.as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let n = lab.st.machines.len();
    let mut ev = String::new();
    let (_, _, all) = catalog_follows(lab, laptop, n, Instant::now())?;
    ev.push_str(&format!("{n} tasks: {all}\n"));
    let scale = |k: usize| -> Result<Instant> {
        laptop.sh(
            &format!("docker service scale --detach {SERVICE}={k}"),
            Duration::from_secs(60),
        )?;
        Ok(Instant::now())
    };
    let t = scale(1)?;
    let down = catalog_follows(lab, laptop, 1, t);
    ev.push_str(&format!(
        "scaled to 1: {}\n",
        followed(&down, "the scale command")
    ));
    let t = scale(n)?;
    let up = catalog_follows(lab, laptop, n, t);
    ev.push_str(&format!(
        "scaled to {n}: {}\n",
        followed(&up, "the scale command")
    ));
    let (gone_ok, gone_ev) = cut_off_node_leaves(lab, laptop, n);
    ev.push_str(&gone_ev);
    let node = lab.nodes()[0];
    let host = lab.sh(
        node,
        &format!("getent ahostsv4 {CONSUL_SERVICE}.service.consul | awk '{{print $1}}' | sort -u"),
    );
    // Consul answers up to three addresses per UDP answer (its `udp_answer_limit`).
    let host_ok = host
        .as_ref()
        .is_ok_and(|h| (1..=n).contains(&h.lines().count()));
    // One of the stack's own tasks on that node: Docker's embedded DNS forwards `.consul` to the machine's resolver
    // on the default bridge's address (`dns` in daemon.json).
    let container = lab.sh(
        node,
        &format!(
            "c=$(docker ps -q --filter label=com.docker.swarm.service.name={SERVICE} | head -n 1); \
             test -n \"$c\" || {{ echo no task of {SERVICE} here; exit 1; }}; \
             docker exec \"$c\" /bin/busybox nslookup {CONSUL_SERVICE}.service.consul 2>&1 || true"
        ),
    );
    // The container answers with the addresses the host resolved (the machines running the tasks).
    let container_ok = match (&host, &container) {
        (Ok(h), Ok(c)) => h.lines().next().is_some_and(|a| {
            c.lines()
                .any(|l| l.trim() == format!("Address: {}", a.trim()))
        }),
        _ => false,
    };
    ev.push_str(&format!(
        "getent ahostsv4 {CONSUL_SERVICE}.service.consul on {}: {}\nnslookup in a task of {SERVICE} there: {}\n",
        node.hostname,
        match &host {
            Ok(h) => h.trim().replace('\n', " "),
            Err(e) => format!("{e:#}"),
        },
        match &container {
            Ok(c) => c.trim().replace('\n', " | "),
            Err(e) => format!("{e:#}"),
        }
    ));
    Ok(Check::verdict(
        name,
        down.is_ok() && up.is_ok() && gone_ok && host_ok && container_ok,
        ev,
    ))
}

/// Nodes of the instances of [`CONSUL_SERVICE`] Consul reports healthy (`/v1/health/service/…?passing`: the
/// instance's check and its machine's Serf check passing), sorted.
fn healthy_nodes(lab: &Lab) -> Result<Vec<String>> {
    let out = lab.sh(
        lab.master(),
        &format!("curl -sS 'http://127.0.0.1:8500/v1/health/service/{CONSUL_SERVICE}?passing'"),
    )?;
    let entries: Vec<serde_json::Value> =
        serde_json::from_str(&out).with_context(|| format!("decoding {out:?}"))?;
    let mut v: Vec<String> = entries
        .iter()
        .filter_map(|e| e["Node"]["Node"].as_str().map(str::to_string))
        .collect();
    v.sort();
    Ok(v)
}

/// The last node's cable pulled: its instance leaves the healthy ones; plugged back in, the catalog follows Swarm
/// again with every machine.
fn cut_off_node_leaves(lab: &Lab, laptop: &Laptop, n: usize) -> (bool, String) {
    let Some(victim) = lab.nodes().last().map(|m| m.index) else {
        return (false, "no node".into());
    };
    let hostname = lab.machine(victim).hostname.clone();
    let mut st = lab.st.clone();
    let pulled = Instant::now();
    if let Err(e) = crate::fault::set_cable(&mut st, victim, false) {
        return (false, format!("pulling {hostname}'s cable: {e:#}\n"));
    }
    let left = lab.poll(Duration::from_secs(120), || {
        let healthy = healthy_nodes(lab)?;
        Ok((!healthy.contains(&hostname) && !healthy.is_empty()).then_some(healthy))
    });
    let left_after = pulled.elapsed().as_secs_f64();
    let plugged = crate::fault::set_cable(&mut st, victim, true);
    let back = Instant::now();
    let again = plugged.and_then(|()| catalog_follows(lab, laptop, n, back));
    let ev = format!(
        "{hostname}'s cable pulled: {}\n{hostname}'s cable plugged back: {}\n",
        match &left {
            Ok(h) => format!(
                "its instance left the healthy ones after {left_after:.1} s (healthy on {})",
                h.join(", ")
            ),
            Err(e) => format!("its instance still healthy: {e:#}"),
        },
        followed(&again, "the cable was plugged back in")
    );
    (left.is_ok() && again.is_ok(), ev)
}

/// The registry keeps what was pushed across a reboot of the master.
pub fn registry_survives(lab: &Lab) -> Check {
    const NAME: &str =
        "registry data survives the master's reboot: the card's image and the laptop's are listed";
    let at = super::usecase::registry_address();
    let r = lab.poll(Duration::from_secs(120), || {
        let c = lab.sh(lab.master(), &format!("curl -sS http://{at}/v2/_catalog"))?;
        Ok(
            (c.contains("\"cluster-lab/busybox\"") && c.contains(&format!("\"{REPO}\"")))
                .then_some(c),
        )
    });
    match r {
        Ok(c) => Check::pass(NAME, format!("GET http://{at}/v2/_catalog: {}", c.trim())),
        Err(e) => Check::fail(NAME, format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stack_runs_the_laptop_image_once_per_machine_behind_the_mesh() {
        let s = stack_file(3, "192.168.200.1:5000/laptop/hello:1");
        assert!(
            s.contains("image: 192.168.200.1:5000/laptop/hello:1\n"),
            "{s}"
        );
        assert!(s.contains("    ports:\n      - \"8090:80\"\n"), "{s}");
        assert!(
            s.contains("      replicas: 3\n      placement:\n        max_replicas_per_node: 1\n"),
            "{s}"
        );
    }
}
