//! A real dockerd inside a test's network namespace, with its own data root, exec root and unix socket (never TCP),
//! no bridge and no iptables rules: nothing it does reaches the host's own Docker or network. Stopped in `Drop`,
//! with its containerd and any mounts left under the exec root cleaned up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cluster_lab::docker::swarm::Swarm;

use super::{run, unmount_under, Daemon, Netns};

pub struct Dockerd<'a> {
    pub ns: &'a Netns,
    pub socket: PathBuf,
    root: PathBuf,
    daemon: Option<Daemon>,
}

impl<'a> Dockerd<'a> {
    /// Start dockerd in `ns`, keeping its state under `dir/name`.
    pub fn start(ns: &'a Netns, dir: &Path, name: &str) -> Dockerd<'a> {
        let root = dir.join(name);
        let socket = root.join("docker.sock");
        std::fs::create_dir_all(&root).unwrap();
        let mut cmd = ns.command("dockerd");
        cmd.arg(format!("--data-root={}", root.join("data").display()))
            .arg(format!("--exec-root={}", root.join("exec").display()))
            .arg(format!("--pidfile={}", root.join("docker.pid").display()))
            .arg(format!("--host=unix://{}", socket.display()))
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"]);
        let daemon = Daemon::spawn(&format!("dockerd {name}"), cmd, &root.join("dockerd.log"));
        Dockerd {
            ns,
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
            Err(e) => panic!("{e}\n{}", self.output()),
        }
    }

    /// The engine's exec root (network namespaces of its sandboxes live under `netns/`).
    pub fn exec_root(&self) -> PathBuf {
        self.root.join("exec")
    }

    /// The last lines dockerd logged (for failure messages).
    pub fn output(&self) -> String {
        self.daemon.as_ref().map(Daemon::output).unwrap_or_default()
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

impl Drop for Dockerd<'_> {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            d.stop();
        }
        // dockerd's own containerd, if it outlived dockerd.
        let pidfile = self.root.join("exec/containerd/containerd.pid");
        if let Ok(pid) = std::fs::read_to_string(pidfile) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Mounts left under the engine's directories (overlay layers, namespace files).
        unmount_under(&self.root);
    }
}
