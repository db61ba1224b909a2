//! `cargo xtask bench scale`: a master and up to 100 machines in network namespaces on one bridge (the VLAN's role),
//! running the real services. The master runs what its first boot starts: `cluster-lab dhcpd`, the Consul server
//! from the configuration first boot renders, and dockerd as the Swarm manager, with the worker join token sealed in
//! Consul's KV store. Every machine leases its address from the master with busybox udhcpc (a real client), runs a
//! real Consul client agent from the rendered client configuration, and the first `--workers` of them a real dockerd
//! that opens the sealed token read through its own Consul agent and joins the Swarm. Reported: the time until all
//! hold leases, all are alive in Consul and all workers are Ready; the master's peak memory and CPU seconds per
//! service; the lease file; and the same lease phase served by dnsmasq (the original lab's DHCP server) in the same
//! run. What does not come up in time is reported as such, with how far it got.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use cluster_lab::consul::config::{datacenter_name, AgentConfig, BindAddr, ConsulParams};
use cluster_lab::docker::join_token;
use cluster_lab::secret;
use xshell::{cmd, Shell};

use super::netns::run;
use super::servers::{proc_status_kib, Daemon};
use super::switch::{Switch, LINK};
use super::{dhcp::target_dir, machine, report};

pub const HEADING: &str = "## A hundred machines (`cargo xtask bench scale`)";
const MASTER_NS: &str = "clbench-scm";
/// Machine `i` lives in namespace `clbench-sc{i}`.
const PREFIX: &str = "clbench-sc";
/// The product's defaults: the master's address and the DHCP range (100 addresses).
const MASTER: &str = "192.168.200.1";
const RANGE: (&str, &str) = ("192.168.200.101", "192.168.200.200");
const NETMASK: &str = "255.255.255.0";
/// How long each phase may take before the bench reports how far it got.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
const UDHCPC_SCRIPT: &str = "#!/bin/sh\n\
    case \"$1\" in\n\
    bound|renew) ip -4 addr flush dev \"$interface\"; ip addr add \"$ip/$mask\" dev \"$interface\" ;;\n\
    esac\n\
    exit 0\n";

#[derive(Debug, Args)]
pub struct Scale {
    /// Machines besides the master (the default DHCP range holds 100).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    nodes: u32,
    /// How many of them also run dockerd and join the Swarm as workers.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=100))]
    workers: u32,
    /// Print the table only; leave docs/benchmarks.md alone.
    #[arg(long)]
    no_record: bool,
}

/// One phase: how long it took and how many machines got there.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Phase {
    /// How many were there when the phase ended.
    pub reached: usize,
    /// The most there were at once (a count that falls again shows machines flapping).
    pub most: usize,
    pub of: usize,
    pub secs: f64,
}

/// A master service's cost during the join.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cost {
    pub service: &'static str,
    pub peak_rss_kib: u64,
    pub cpu_secs: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub nodes: usize,
    pub workers: usize,
    pub leases: Phase,
    pub consul: Phase,
    pub swarm: Phase,
    pub costs: Vec<Cost>,
    pub lease_file_bytes: u64,
    /// DHCPNAKs the clients received (each sends the client back to DISCOVER).
    pub naks: usize,
    pub dnsmasq_leases: Phase,
    pub dnsmasq_naks: usize,
    pub dnsmasq_peak_rss_kib: Option<u64>,
    /// Machine memory: the Consul clients' and workers' dockerd summed resident memory, KiB.
    pub clients_rss_kib: u64,
    pub dockerd_rss_kib: u64,
}

impl Scale {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if cmd!(sh, "id -u").quiet().read()? != "0" {
            bail!("bench scale needs root (network namespaces); run it with sudo");
        }
        if self.workers > self.nodes {
            bail!(
                "--workers {} is more than --nodes {}",
                self.workers,
                self.nodes
            );
        }
        for (tool, fix) in [
            (
                "consul",
                "run ci/install-consul.sh (Consul 1.8.7 from Debian bullseye)",
            ),
            ("dockerd", "install docker.io"),
            ("docker", "install docker.io"),
            ("udhcpc", "install udhcpc"),
            ("dnsmasq", "install dnsmasq"),
        ] {
            if cmd!(sh, "which {tool}")
                .quiet()
                .ignore_stdout()
                .run()
                .is_err()
            {
                bail!("bench scale needs {tool}: {fix}");
            }
        }
        eprintln!("==> building cluster-lab (release)");
        cmd!(sh, "cargo build -q --release -p cluster-lab").run()?;
        let agent = target_dir(sh).join("release/cluster-lab");
        let work = target_dir(sh).join("bench-scale");
        let names: Vec<String> = std::iter::once(MASTER_NS.to_string())
            .chain((0..self.nodes as usize).map(ns_name))
            .collect();
        let switch = Switch::create(sh, PREFIX, &names)?;
        run(cmd!(
            sh,
            "ip -n {MASTER_NS} addr add {MASTER}/24 dev {LINK}"
        ))?;
        let _neighbours = NeighbourTable::raise(self.nodes as usize + 1)?;
        unmount_under(&work);
        if work.exists() {
            std::fs::remove_dir_all(&work)
                .with_context(|| format!("removing {}", work.display()))?;
        }
        std::fs::create_dir_all(&work)?;
        let m = machine::describe(sh, &work);
        let date = cmd!(sh, "date -u '+%Y-%m-%d %H:%M UTC'").quiet().read()?;
        let outcome = measure(
            sh,
            &agent,
            &work,
            self.nodes as usize,
            self.workers as usize,
        );
        switch.teardown(sh)?;
        unmount_under(&work);
        let outcome = outcome?;
        let section = render(&date, &m, &outcome);
        report::publish(&section, !self.no_record)
    }
}

/// Start `program args` in namespace `ns` as a [`Daemon`] (killed when dropped), its output in `log`.
fn spawn_in(ns: &str, name: &str, program: &Path, args: &[String], log: PathBuf) -> Result<Daemon> {
    let mut cmd = in_ns(ns);
    cmd.arg(program).args(args);
    Daemon::spawn(name, cmd, log)
}

/// A command run in network namespace `ns` only. Not `ip netns exec`: that also gives the command a mount
/// namespace with a fresh /sys, without the cgroup hierarchy dockerd needs.
fn in_ns(ns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg("--");
    cmd
}

fn ns_name(i: usize) -> String {
    format!("{PREFIX}{i}")
}

/// The kernel's ARP table is one for all network namespaces, and its limit (`gc_thresh3`, 1024 by default) is
/// for all of them together: 101 machines that each talk to every other need about 10,000 entries, so with the
/// default the kernel drops packets ("neighbor table overflow!") and Consul's gossip probes fail. Each real
/// machine has its own table with room for the cluster, so the bench raises the shared limits for its run and
/// puts them back afterwards.
struct NeighbourTable {
    saved: Vec<(PathBuf, String)>,
}

impl NeighbourTable {
    const DIR: &'static str = "/proc/sys/net/ipv4/neigh/default";

    fn raise(machines: usize) -> Result<NeighbourTable> {
        let need = machines * machines;
        let mut table = NeighbourTable { saved: Vec::new() };
        for (name, want) in [("gc_thresh2", need), ("gc_thresh3", 2 * need)] {
            let path = Path::new(Self::DIR).join(name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let now: usize = text
                .trim()
                .parse()
                .with_context(|| format!("{}: {text:?}", path.display()))?;
            if now < want {
                std::fs::write(&path, want.to_string())
                    .with_context(|| format!("writing {}", path.display()))?;
                table.saved.push((path, text.trim().to_string()));
            }
        }
        Ok(table)
    }
}

impl Drop for NeighbourTable {
    fn drop(&mut self) {
        for (path, value) in self.saved.iter().rev() {
            if let Err(e) = std::fs::write(path, value) {
                eprintln!("bench: putting {} back to {value}: {e}", path.display());
            }
        }
    }
}

/// dockerd leaves mounts under its roots (overlays, sandbox namespaces); lazily unmount them, deepest first.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

/// The secret, names and paths of one run.
struct Cluster<'a> {
    secret: String,
    token: String,
    work: &'a Path,
}

impl Cluster<'_> {
    fn consul_config(&self, name: &str, server: bool) -> Result<PathBuf> {
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir)?;
        let params = ConsulParams {
            datacenter: datacenter_name("bench"),
            node_name: name.into(),
            node_id: secret::consul_node_id(&self.secret, name),
            data_dir: dir.join("consul").to_string_lossy().into_owned(),
            bind: if server {
                BindAddr::Addr(MASTER.parse()?)
            } else {
                BindAddr::Interface(LINK.into())
            },
            master: MASTER.parse()?,
            gossip_key: secret::gossip_key(&self.secret),
            management_token: self.token.clone(),
        };
        let cfg = if server {
            AgentConfig::server(&params)
        } else {
            AgentConfig::client(&params)
        };
        let path = dir.join("consul.json");
        cfg.render_at(path.to_str().context("non-UTF-8 work directory")?, None)
            .install(Path::new("/"))?;
        Ok(path)
    }

    fn consul(&self, ns: &str, name: &str) -> Result<Daemon> {
        let server = ns == MASTER_NS;
        let config = self.consul_config(name, server)?;
        spawn_in(
            ns,
            &format!("consul on {name}"),
            Path::new("consul"),
            &["agent".into(), format!("-config-file={}", config.display())],
            self.work.join(name).join("consul.log"),
        )
    }

    fn dockerd(&self, ns: &str, name: &str) -> Result<(Daemon, PathBuf)> {
        let root = self.work.join(name).join("docker");
        std::fs::create_dir_all(&root)?;
        let socket = root.join("docker.sock");
        let args = vec![
            format!("--data-root={}", root.join("data").display()),
            format!("--exec-root={}", root.join("exec").display()),
            format!("--pidfile={}", root.join("docker.pid").display()),
            format!("--host=unix://{}", socket.display()),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--bridge=none".into(),
        ];
        let p = spawn_in(
            ns,
            &format!("dockerd on {name}"),
            Path::new("dockerd"),
            &args,
            root.join("dockerd.log"),
        )?;
        Ok((p, socket))
    }

    /// `consul ARGS` against the agent of namespace `ns`, with the management token.
    fn consul_cli(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut cmd = in_ns(ns);
        cmd.arg("consul")
            .args(args)
            .env("CONSUL_HTTP_TOKEN", &self.token);
        read(ns, "consul", args, cmd)
    }
}

fn docker(ns: &str, socket: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = in_ns(ns);
    cmd.args(["docker", "-H"])
        .arg(format!("unix://{}", socket.display()))
        .args(args);
    read(ns, "docker", args, cmd)
}

/// Run `cmd` (`program args` in namespace `ns`) to its end; its stdout, or an error with its stderr.
fn read(ns: &str, program: &str, args: &[&str], mut cmd: Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "{program} {} in {ns} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Poll `f` every second until it returns `Ok(Some(_))`, for at most `timeout`.
fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => String::new(),
            Err(e) => format!(": {e:#}"),
        };
        if start.elapsed() > timeout {
            bail!("timed out after {:?} waiting for {what}{last}", timeout);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Progress of a phase, polled every second: returns the phase once `count()` reaches `of` or the time is up.
fn phase(what: &str, of: usize, started: Instant, mut count: impl FnMut() -> usize) -> Phase {
    let mut reached = 0;
    let mut most = 0;
    let mut said = usize::MAX;
    while started.elapsed() < PHASE_TIMEOUT {
        reached = count();
        most = most.max(reached);
        if reached != said {
            eprintln!(
                "    {what}: {reached}/{of} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            said = reached;
        }
        if reached >= of {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    Phase {
        reached,
        most,
        of,
        secs: started.elapsed().as_secs_f64(),
    }
}

/// Start `udhcpc -q` on every machine at once; the phase ends when every machine holds an address.
/// Returns the phase and how many DHCPNAKs the clients received.
fn lease_phase(sh: &Shell, work: &Path, nodes: usize, label: &str) -> Result<(Phase, usize)> {
    let script = work.join("udhcpc.sh");
    std::fs::write(&script, UDHCPC_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    for i in 0..nodes {
        let ns = ns_name(i);
        run(cmd!(sh, "ip -n {ns} -4 addr flush dev {LINK}"))?;
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for i in 0..nodes {
        let args: Vec<String> = ["-q", "-f", "-i", LINK, "-s"]
            .iter()
            .map(|s| s.to_string())
            .chain([script.display().to_string()])
            .chain(
                ["-t", "60", "-T", "1", "-A", "1"]
                    .iter()
                    .map(|s| s.to_string()),
            )
            .collect();
        clients.push(spawn_in(
            &ns_name(i),
            &format!("udhcpc on machine {i}"),
            Path::new("udhcpc"),
            &args,
            work.join(format!("udhcpc-{label}-{i}.log")),
        )?);
    }
    let p = phase(&format!("leases from {label}"), nodes, started, || {
        (0..nodes).filter(|&i| lease_addr(i).is_some()).count()
    });
    drop(clients);
    let naks = (0..nodes)
        .map(|i| {
            std::fs::read_to_string(work.join(format!("udhcpc-{label}-{i}.log")))
                .unwrap_or_default()
                .matches("received DHCP NAK")
                .count()
        })
        .sum();
    Ok((p, naks))
}

/// The IPv4 address machine `i` holds on the VLAN link.
fn lease_addr(i: usize) -> Option<String> {
    let out = Command::new("ip")
        .args(["-n", &ns_name(i), "-4", "-o", "addr", "show", "dev", LINK])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)?;
    Some(addr.split('/').next()?.to_string())
}

/// User + system CPU seconds of a process (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

fn dnsmasq_args(work: &Path) -> Vec<String> {
    vec![
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        format!("--interface={LINK}"),
        "--bind-interfaces".into(),
        format!("--dhcp-range={},{},{NETMASK},1h", RANGE.0, RANGE.1),
        format!("--dhcp-leasefile={}", work.join("dnsmasq.leases").display()),
        "--dhcp-authoritative".into(),
        "--no-ping".into(),
        format!("--pid-file={}", work.join("dnsmasq.pid").display()),
    ]
}

fn measure(sh: &Shell, agent: &Path, work: &Path, nodes: usize, workers: usize) -> Result<Outcome> {
    let secret = cluster_lab_config::edit::random_secret();
    let cluster = Cluster {
        token: secret::consul_management_token(&secret),
        secret,
        work,
    };
    // The master, as its first boot leaves it.
    eprintln!("==> master: Consul server, dockerd as Swarm manager");
    let leases = work.join("leases");
    let config = work.join("cluster-lab.toml");
    // The default configuration, with the leases kept in the bench's directory.
    let default_leases = "lease_file = \"/var/lib/cluster-lab/dhcp-leases\"";
    if !cluster_lab_config::DEFAULT_TOML.contains(default_leases) {
        bail!(
            "the default configuration no longer says `{default_leases}`: update the scale bench"
        );
    }
    let text = cluster_lab_config::DEFAULT_TOML
        .replace("name = \"cluster-lab\"", "name = \"bench\"")
        .replace(default_leases, &format!("lease_file = {leases:?}"));
    std::fs::write(
        &config,
        cluster_lab_config::edit::set_secret(&text, &cluster.secret)?,
    )?;
    let mut server = cluster.consul(MASTER_NS, "master")?;
    let (mut manager, manager_sock) = cluster.dockerd(MASTER_NS, "master")?;
    wait("the master's dockerd", Duration::from_secs(60), || {
        manager.alive()?;
        Ok(docker(MASTER_NS, &manager_sock, &["info", "--format", "{{.ID}}"]).ok())
    })?;
    docker(
        MASTER_NS,
        &manager_sock,
        &[
            "swarm",
            "init",
            "--advertise-addr",
            MASTER,
            "--listen-addr",
            &format!("{MASTER}:2377"),
        ],
    )?;
    let worker_token = docker(
        MASTER_NS,
        &manager_sock,
        &["swarm", "join-token", "-q", "worker"],
    )?;
    let sealed = join_token::seal(&cluster.secret, worker_token.trim());
    wait(
        "the Consul server to take the sealed join token",
        Duration::from_secs(120),
        || {
            server.alive()?;
            Ok(cluster
                .consul_cli(MASTER_NS, &["kv", "put", join_token::KV_KEY, &sealed])
                .ok())
        },
    )?;

    // The peer first, in the same conditions: the same machines, the same master services running.
    eprintln!("==> {nodes} machines: leases from dnsmasq (the peer)");
    let dnsmasq = spawn_in(
        MASTER_NS,
        "dnsmasq",
        Path::new("dnsmasq"),
        &dnsmasq_args(work),
        work.join("dnsmasq.log"),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let (dnsmasq_leases, dnsmasq_naks) = lease_phase(sh, work, nodes, "dnsmasq")?;
    let dnsmasq_peak = dnsmasq.peak_rss_kib().unwrap_or(0);
    drop(dnsmasq);

    let mut dhcpd = spawn_in(
        MASTER_NS,
        "cluster-lab dhcpd",
        agent,
        &[
            "dhcpd".into(),
            "--config".into(),
            config.display().to_string(),
            "--interface".into(),
            LINK.into(),
        ],
        work.join("dhcpd.log"),
    )?;
    std::thread::sleep(Duration::from_millis(500));
    dhcpd.alive()?;
    let services = [
        ("cluster-lab dhcpd", dhcpd.pid()),
        ("Consul server", server.pid()),
        ("dockerd", manager.pid()),
    ];
    let cpu_before: Vec<f64> = services.iter().map(|(_, pid)| cpu_secs(*pid)).collect();

    // Every machine at once: lease, then Consul, then (workers) dockerd and the join.
    eprintln!("==> {nodes} machines: leases from cluster-lab dhcpd");
    let (leases_phase, naks) = lease_phase(sh, work, nodes, "cluster-lab")?;
    let leased: Vec<usize> = (0..nodes).filter(|&i| lease_addr(i).is_some()).collect();

    eprintln!("==> {} machines: Consul client agents", leased.len());
    let started = Instant::now();
    let mut clients = Vec::new();
    for &i in &leased {
        clients.push(cluster.consul(&ns_name(i), &format!("machine{i}"))?);
    }
    let consul_phase = phase("alive in Consul", nodes, started, || {
        cluster
            .consul_cli(MASTER_NS, &["members", "-status=alive"])
            .map(|out| {
                out.lines()
                    .skip(1)
                    .filter(|l| l.contains(" client "))
                    .count()
            })
            .unwrap_or(0)
    });

    eprintln!("==> {workers} workers: dockerd, the sealed token from KV, swarm join");
    let started = Instant::now();
    let chosen: Vec<usize> = leased.iter().copied().take(workers).collect();
    let mut engines = Vec::new();
    for &i in &chosen {
        engines.push((i, cluster.dockerd(&ns_name(i), &format!("machine{i}"))?));
    }
    let join_errors: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = engines
            .iter()
            .map(|(i, (_, sock))| {
                let cluster = &cluster;
                s.spawn(move || {
                    join(cluster, *i, sock)
                        .err()
                        .map(|e| format!("machine {i}: {e:#}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .collect()
    });
    for e in &join_errors {
        eprintln!("    join failed: {e}");
    }
    let swarm_phase = phase("Ready in Swarm", workers, started, || {
        docker(
            MASTER_NS,
            &manager_sock,
            &["node", "ls", "--format", "{{.Status}} {{.ManagerStatus}}"],
        )
        .map(|out| out.lines().filter(|l| l.trim() == "Ready").count())
        .unwrap_or(0)
    });

    let costs = services
        .iter()
        .zip(cpu_before)
        .map(|((service, pid), before)| Cost {
            service,
            peak_rss_kib: proc_status_kib(*pid, "VmHWM:").unwrap_or(0),
            cpu_secs: cpu_secs(*pid) - before,
        })
        .collect();
    let clients_rss_kib = clients.iter().filter_map(Daemon::rss_kib).sum();
    let dockerd_rss_kib = engines.iter().filter_map(|(_, (p, _))| p.rss_kib()).sum();
    let lease_file_bytes = std::fs::metadata(&leases).map_or(0, |m| m.len());
    drop(engines);
    drop(clients);
    drop(dhcpd);

    drop(manager);
    drop(server);
    Ok(Outcome {
        nodes,
        workers,
        leases: leases_phase,
        consul: consul_phase,
        swarm: swarm_phase,
        costs,
        lease_file_bytes,
        naks,
        dnsmasq_leases,
        dnsmasq_naks,
        dnsmasq_peak_rss_kib: Some(dnsmasq_peak),
        clients_rss_kib,
        dockerd_rss_kib,
    })
}

/// A worker's path: wait for its engine, read the sealed token through its own Consul agent, open it, join.
fn join(cluster: &Cluster, i: usize, socket: &Path) -> Result<()> {
    let ns = ns_name(i);
    wait("the machine's dockerd", PHASE_TIMEOUT, || {
        Ok(docker(&ns, socket, &["info", "--format", "{{.ID}}"]).ok())
    })?;
    let sealed = wait("the sealed join token in KV", PHASE_TIMEOUT, || {
        Ok(cluster
            .consul_cli(&ns, &["kv", "get", join_token::KV_KEY])
            .ok())
    })?;
    let token = join_token::open(&cluster.secret, sealed.as_bytes())?;
    let addr = lease_addr(i).context("no lease")?;
    docker(
        &ns,
        socket,
        &[
            "swarm",
            "join",
            "--advertise-addr",
            &addr,
            "--token",
            &token,
            &format!("{MASTER}:2377"),
        ],
    )?;
    Ok(())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn phase_cell(p: &Phase) -> String {
    if p.reached >= p.of {
        format!("{}/{} in {:.1} s", p.reached, p.of, p.secs)
    } else {
        format!(
            "**{}/{}** when stopped after {:.0} s (at most {} at once)",
            p.reached, p.of, p.secs, p.most
        )
    }
}

pub fn render(date: &str, m: &machine::Machine, o: &Outcome) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "Measured {date} with `cargo xtask bench scale --nodes {} --workers {}` on {} cores ({}), {:.1} GiB, Linux \
         {}; 1-minute load average {} at the start.\n",
        o.nodes, o.workers, m.cores, m.cpu, m.mem_gib, m.kernel, m.load
    );
    let _ = writeln!(
        s,
        "| Phase (all machines started at once) | Reached | Peer in the same run | Ratio |"
    );
    let _ = writeln!(s, "|---|---|---|---:|");
    let d = &o.dnsmasq_leases;
    let ratio = if d.reached >= d.of && o.leases.reached >= o.leases.of && d.secs > 0.0 {
        format!("{:.2}×", o.leases.secs / d.secs)
    } else {
        "n/a".into()
    };
    let _ = writeln!(
        s,
        "| Leases from `cluster-lab dhcpd` (busybox udhcpc) | {}, {} NAK(s) | dnsmasq: {}, {} NAK(s) | {ratio} |",
        phase_cell(&o.leases),
        o.naks,
        phase_cell(d),
        o.dnsmasq_naks
    );
    let _ = writeln!(
        s,
        "| Alive in Consul (client agents from the rendered configuration) | {} | - | - |",
        phase_cell(&o.consul)
    );
    let _ = writeln!(
        s,
        "| Workers Ready in Swarm (token sealed in KV) | {} | - | - |",
        phase_cell(&o.swarm)
    );
    let _ = writeln!(
        s,
        "\nThe master's services while the machines joined (peak = VmHWM since the service started; CPU = user + \
         system seconds spent from the first lease to the last worker Ready):\n"
    );
    let _ = writeln!(s, "| Service | Peak RSS | CPU seconds |\n|---|---:|---:|");
    for c in &o.costs {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} |",
            c.service,
            mib(c.peak_rss_kib),
            c.cpu_secs
        );
    }
    if let Some(d) = o.dnsmasq_peak_rss_kib {
        let _ = writeln!(s, "| dnsmasq (peer, lease phase only) | {} | - |", mib(d));
    }
    let total: u64 = o.costs.iter().map(|c| c.peak_rss_kib).sum();
    let _ = writeln!(
        s,
        "\nThe master's three services peaked at {} together (a 1 GiB Pi master's budget). Lease file after {} leases: \
         {} bytes. On the machines: {} Consul client agents held {} resident ({} each), {} workers' dockerd {}.",
        mib(total),
        o.leases.reached,
        o.lease_file_bytes,
        o.consul.reached.max(1),
        mib(o.clients_rss_kib),
        mib(o.clients_rss_kib / o.consul.of.max(1) as u64),
        o.workers,
        mib(o.dockerd_rss_kib),
    );
    let _ = writeln!(
        s,
        "\nEach machine is a network namespace bridged on one switch namespace (no packet leaves them; the kernel's \
         ARP table, shared by all namespaces, is raised for the run so that it holds what {} separate machines \
         would); the master \
         runs the real `cluster-lab dhcpd` (release build), Consul 1.8.7 from the server configuration first boot \
         renders, and dockerd as the Swarm manager. The phases run one after the other, each started on every \
         machine at one instant: all udhcpc clients, then all Consul client agents (client configuration, gossip \
         encrypted, ACLs on), then the workers' dockerd, each reading the sealed join token through its own Consul \
         agent and joining. The dnsmasq row is the same lease phase, all clients at once, in the same run, \
         just before cluster-lab's (the master's Consul server and dockerd running in both). A NAK (a server \
         refusing the address a client asks for) sends the client back to DISCOVER after a 3 s pause (busybox \
         udhcpc's), which is where a slow phase's seconds go.",
        o.nodes + 1
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_phases_ratios_and_where_it_stopped() {
        let o = Outcome {
            nodes: 100,
            workers: 20,
            leases: Phase {
                reached: 100,
                most: 100,
                of: 100,
                secs: 4.0,
            },
            consul: Phase {
                reached: 100,
                most: 100,
                of: 100,
                secs: 30.0,
            },
            swarm: Phase {
                reached: 12,
                most: 15,
                of: 20,
                secs: 600.0,
            },
            costs: vec![Cost {
                service: "Consul server",
                peak_rss_kib: 51200,
                cpu_secs: 12.34,
            }],
            lease_file_bytes: 4096,
            naks: 0,
            dnsmasq_leases: Phase {
                reached: 100,
                most: 100,
                of: 100,
                secs: 8.0,
            },
            dnsmasq_naks: 29,
            dnsmasq_peak_rss_kib: Some(2048),
            clients_rss_kib: 102400 * 40,
            dockerd_rss_kib: 1024,
        };
        let text = render("d", &machine::Machine::default(), &o);
        assert!(
            text.contains(
                "| 100/100 in 4.0 s, 0 NAK(s) | dnsmasq: 100/100 in 8.0 s, 29 NAK(s) | 0.50× |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| **12/20** when stopped after 600 s (at most 15 at once) |"),
            "{text}"
        );
        assert!(
            text.contains("| Consul server | 50.0 MiB | 12.34 |"),
            "{text}"
        );
        assert!(
            text.contains("| dnsmasq (peer, lease phase only) | 2.0 MiB | - |"),
            "{text}"
        );
        assert!(text.contains("(40.0 MiB each)"), "{text}");
    }

    #[test]
    fn cpu_time_reads_utime_and_stime() {
        // This process has spent some CPU time; the parse must not come back as zero for a live pid.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_secs(std::process::id()) > 0.0);
        assert_eq!(cpu_secs(u32::MAX), 0.0);
    }
}
