//! A real dockerd inside a test's network namespace, with its own data root, exec root and unix socket (never TCP),
//! no bridge and no iptables rules: nothing it does reaches the host's own Docker or network. Stopped in `Drop`,
//! with its containerd and any mounts left under its directory cleaned up.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster_lab::docker::swarm::Swarm;
use nix::unistd::Pid;

use super::{require_tool, run, Daemon, Netns};

/// Fail (never skip) when dockerd or the docker CLI is missing.
pub fn require_docker() {
    for tool in ["dockerd", "docker"] {
        require_tool(
            tool,
            "install Debian's docker.io (listed in ci/apt-packages.txt)",
        );
    }
}

pub struct Dockerd {
    pub ns: Netns,
    pub socket: PathBuf,
    root: PathBuf,
    daemon: Option<Daemon>,
}

impl Dockerd {
    /// Start dockerd in `ns`, keeping its state under `dir/name`.
    pub fn start(ns: &Netns, dir: &Path, name: &str) -> Dockerd {
        Self::start_with(ns, dir, name, None)
    }

    /// Start dockerd in `ns`, keeping its state under `dir/name`, reading `config_file` (its daemon.json) if
    /// given; SIGHUP makes it read that file again.
    pub fn start_with(ns: &Netns, dir: &Path, name: &str, config_file: Option<&Path>) -> Dockerd {
        let root = dir.join(name);
        let socket = root.join("docker.sock");
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        let mut args = vec![
            format!("--data-root={}", root.join("data").display()),
            format!("--exec-root={}", root.join("exec").display()),
            format!("--pidfile={}", root.join("docker.pid").display()),
            format!("--host=unix://{}", socket.display()),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
            "--bridge=none".into(),
        ];
        if let Some(config) = config_file {
            args.push(format!("--config-file={}", config.display()));
        }
        let daemon = Daemon::spawn(
            &format!("dockerd {name}"),
            ns.nsenter("dockerd", args),
            &root.join("dockerd.log"),
        );
        Dockerd {
            ns: ns.clone(),
            socket,
            root,
            daemon: Some(daemon),
        }
    }

    /// cluster-lab's own connection (waits for the socket), from inside the namespace.
    pub fn connect(&self) -> Swarm {
        let socket = self.socket.clone();
        let connected = self
            .ns
            .block_on(async move { Swarm::connect(&socket, Duration::from_secs(60)).await });
        match connected {
            Ok(s) => s,
            Err(e) => panic!("{e}\n{}", self.report()),
        }
    }

    /// Run `f` with a handle of `swarm` (a connection to this engine) inside the engine's namespace.
    pub fn block_on<F>(&self, swarm: &Swarm, f: impl FnOnce(Swarm) -> F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.ns.block_on(f(swarm.clone()))
    }

    /// dockerd's process, for signals.
    pub fn pid(&self) -> Pid {
        self.daemon.as_ref().expect("dockerd started").pid()
    }

    /// The engine's exec root (network namespaces of its sandboxes live under `netns/`).
    pub fn exec_root(&self) -> PathBuf {
        self.root.join("exec")
    }

    /// `ip -o link show eth0` inside this engine's routing-mesh sandbox (`ingress_sbox`), or `None` while the
    /// engine has not set it up.
    pub fn routing_mesh_link(&self) -> Option<String> {
        let sandbox = self.exec_root().join("netns/ingress_sbox");
        let out = Command::new("nsenter")
            .arg(format!("--net={}", sandbox.display()))
            .args(["--", "ip", "-o", "link", "show", "eth0"])
            .output()
            .ok()?;
        let link = String::from_utf8_lossy(&out.stdout).into_owned();
        (!link.is_empty()).then_some(link)
    }

    /// The MTU of this engine's routing-mesh interface, once it exists.
    pub fn routing_mesh_mtu(&self) -> Option<u32> {
        let link = self.routing_mesh_link()?;
        let mut words = link.split_whitespace();
        words.find(|w| *w == "mtu")?;
        words.next()?.parse().ok()
    }

    /// dockerd's command, state and last log lines (for failure messages).
    pub fn report(&self) -> String {
        // dockerd in a network namespace complains on every start of sysctls the namespace does not have.
        // Its gRPC and raft chatter would push the lines that explain a failure out of the report's tail.
        let noise = |l: &str| {
            l.contains("error reading the kernel parameter")
                || l.contains("module=grpc")
                || l.contains("module=raft")
        };
        self.daemon
            .as_ref()
            .map(|d| d.report_skipping(noise))
            .unwrap_or_default()
    }

    /// The docker CLI against this engine; panics with its stderr when it fails.
    pub fn docker(&self, args: &[&str]) -> String {
        run(self.cli().args(args))
    }

    /// A docker CLI command against this engine.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", format!("unix://{}", self.socket.display()));
        cmd
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
        // dockerd's own containerd, if it outlived dockerd.
        let pidfile = self.root.join("exec/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ =
                    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        // Mounts left under the engine's directories (overlay layers, namespace files).
        unmount_under(&self.root);
    }
}

/// Lazily unmount whatever is still mounted under `dir` (dockerd's overlay layers and sandbox namespace files),
/// deepest first, so the temporary directory holding it can be removed.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.to_string_lossy().into_owned();
    let mut left: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    left.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in left {
        let _ = Command::new("umount").args(["-l", m]).output();
    }
}
