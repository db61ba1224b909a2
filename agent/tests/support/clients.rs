//! Real DHCP clients in the lab: ISC dhclient, busybox udhcpc and dhcpcd. Each gets its own directory with its
//! event script (which records every event in `events`), lease and pid files, so clients never share state
//! with each other or with the host.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::{describe, run, try_run, wait_for, Daemon, Lab, Netns};

const UDHCPC_SCRIPT: &str = include_str!("scripts/udhcpc.sh");
const DHCLIENT_SCRIPT: &str = include_str!("scripts/dhclient.sh");
const DHCPCD_SCRIPT: &str = include_str!("scripts/dhcpcd.sh");

/// What a client and its script have recorded.
pub struct Client {
    pub name: String,
    pub ns: Netns,
    pub interface: String,
    pub dir: PathBuf,
    pub script: PathBuf,
    pub daemon: Option<Daemon>,
    /// The command line of a one-shot run (daemons carry their own).
    pub command: Option<String>,
}

impl Client {
    /// Client `name` on `interface` in `ns`, not started yet: its own directory in the lab's, with the event
    /// script `script` installed there.
    fn new(lab: &Lab, name: &str, ns: &Netns, interface: &str, script: &str) -> Client {
        let dir = lab.subdir(name);
        let path = dir.join("script");
        std::fs::write(&path, script).expect("writing a client script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("making a client script executable");
        Client {
            name: name.to_owned(),
            ns: ns.clone(),
            interface: interface.to_owned(),
            dir,
            script: path,
            daemon: None,
            command: None,
        }
    }

    /// Start `cmd` as this client's daemon, its output in `log` in the client's directory.
    fn spawn(&mut self, cmd: Command) {
        self.daemon = Some(Daemon::spawn(&self.name, cmd, &self.dir.join("log")));
    }

    /// Lines the event script recorded (`<event> <address>...`).
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("events"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Wait until the script has recorded more than `after` events and one of the new ones starts with one of
    /// `kinds`; returns that line. `diagnose` adds context (server log) to the failure message.
    pub fn wait_event(
        &self,
        timeout: Duration,
        after: usize,
        kinds: &[&str],
        diagnose: impl FnOnce() -> String,
    ) -> String {
        let what = format!("{} to report one of {kinds:?}", self.name);
        wait_for(
            timeout,
            &what,
            || {
                self.events()
                    .into_iter()
                    .skip(after)
                    .find(|l| kinds.iter().any(|k| l.split_whitespace().next() == Some(k)))
            },
            || format!("{}{}", self.report(), diagnose()),
        )
    }

    /// Failure context: the event log and the client's own output.
    pub fn report(&self) -> String {
        let addrs = self.ns.try_ipv4_addrs(&self.interface);
        let mut s = format!(
            "--- {} events: {:?}\n--- {} addresses on {}: {addrs:?}\n",
            self.name,
            self.events(),
            self.name,
            self.interface
        );
        if let Some(c) = &self.command {
            s.push_str(&format!("--- {} ran `{c}`\n", self.name));
        }
        if let Some(d) = &self.daemon {
            s.push_str(&d.report());
        }
        s
    }
}

/// busybox udhcpc.
pub mod udhcpc {
    use super::*;

    /// Start udhcpc in the foreground, retrying until it gets a lease.
    pub fn start(lab: &Lab, name: &str, ns: &Netns, interface: &str) -> Client {
        let mut c = Client::new(lab, name, ns, interface, UDHCPC_SCRIPT);
        let pid = c.dir.join("pid");
        let cmd = ns.command(
            "udhcpc",
            [
                "-f",
                "-i",
                interface,
                "-s",
                c.script.to_str().unwrap(),
                "-p",
                pid.to_str().unwrap(),
                "-t",
                "5",
                "-T",
                "1",
                "-A",
                "1",
            ],
        );
        c.spawn(cmd);
        c
    }

    /// Run `udhcpc -q -n` once (obtain a lease and quit; give up after `tries` DISCOVERs one second apart).
    pub fn once(
        lab: &Lab,
        name: &str,
        ns: &Netns,
        interface: &str,
        tries: u32,
        extra: &[&str],
    ) -> (Client, Output) {
        let mut c = Client::new(lab, name, ns, interface, UDHCPC_SCRIPT);
        let tries = tries.to_string();
        let mut args = vec![
            "-f",
            "-q",
            "-n",
            "-i",
            interface,
            "-s",
            c.script.to_str().unwrap(),
            "-t",
            &tries,
            "-T",
            "1",
        ];
        args.extend_from_slice(extra);
        let mut cmd = ns.command("udhcpc", args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("`{}`: cannot start: {e}", describe(&cmd)));
        c.command = Some(describe(&cmd));
        (c, out)
    }

    /// SIGUSR1: renew the lease now (unicast REQUEST to the server).
    pub fn renew(c: &Client) {
        c.daemon
            .as_ref()
            .expect("udhcpc running")
            .signal(Signal::SIGUSR1);
    }

    /// SIGUSR2: release the lease.
    pub fn release(c: &Client) {
        c.daemon
            .as_ref()
            .expect("udhcpc running")
            .signal(Signal::SIGUSR2);
    }
}

/// ISC dhclient.
pub mod dhclient {
    use super::*;

    /// `dhclient MODE INTERFACE` with the client's own script, lease file and pid file.
    fn command(c: &Client, mode: &str) -> Command {
        c.ns.command(
            "dhclient",
            [
                "-4".into(),
                "-v".into(),
                "-sf".into(),
                c.script.display().to_string(),
                "-lf".into(),
                c.dir.join("leases").display().to_string(),
                "-pf".into(),
                c.dir.join("pid").display().to_string(),
                mode.into(),
                c.interface.clone(),
            ],
        )
    }

    /// Start dhclient in the foreground (`-d`).
    pub fn start(lab: &Lab, name: &str, ns: &Netns, interface: &str) -> Client {
        let mut c = Client::new(lab, name, ns, interface, DHCLIENT_SCRIPT);
        restart(&mut c);
        c
    }

    /// `dhclient -x`: stop the running dhclient without releasing (as at a reboot), keeping its lease file.
    pub fn stop(c: &mut Client) {
        if let Err(e) = try_run(&mut command(c, "-x")) {
            panic!("{e}\n{}", c.report());
        }
        if let Some(d) = &c.daemon {
            if d.wait_exit(std::time::Duration::from_secs(30)).is_none() {
                panic!("dhclient -x did not stop dhclient\n{}", c.report());
            }
        }
    }

    /// Start dhclient (again) in the foreground (`-d`). With the lease file of an earlier run it asks for its
    /// old address (INIT-REBOOT).
    pub fn restart(c: &mut Client) {
        let cmd = command(c, "-d");
        c.spawn(cmd);
    }

    /// `dhclient -r`: stop the running dhclient and release its lease.
    pub fn release(c: &Client) -> Result<Output, String> {
        try_run(&mut command(c, "-r"))
    }
}

/// dhcpcd, in a mount namespace of its own where /run/dhcpcd and /var/lib/dhcpcd are the client's directories.
pub mod dhcpcd {
    use super::*;

    fn command(c: &Client, dhcpcd_args: &[&str]) -> Command {
        let run_dir = c.dir.join("run");
        let db_dir = c.dir.join("db");
        for d in [&run_dir, &db_dir] {
            std::fs::create_dir_all(d).expect("creating dhcpcd state directories");
        }
        // A private resolv.conf too: whatever dhcpcd does, the host's DNS settings stay untouched.
        let resolv = c.dir.join("resolv.conf");
        std::fs::write(&resolv, "").expect("creating dhcpcd's private resolv.conf");
        let mut args: Vec<String> = [
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mkdir -p /run/dhcpcd && mount --bind \"$1\" /run/dhcpcd && \
             mount --bind \"$2\" /var/lib/dhcpcd && mount --bind \"$3\" /etc/resolv.conf && \
             shift 3 && exec \"$@\"",
            "sh",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(run_dir.display().to_string());
        args.push(db_dir.display().to_string());
        args.push(resolv.display().to_string());
        args.push("dhcpcd".into());
        args.extend(dhcpcd_args.iter().map(|s| s.to_string()));
        c.ns.command("unshare", args)
    }

    /// Start dhcpcd in the foreground (`-B`), IPv4 only, no ARP probe, no hooks but the recording script.
    pub fn start(lab: &Lab, name: &str, ns: &Netns, interface: &str) -> Client {
        let mut c = Client::new(lab, name, ns, interface, DHCPCD_SCRIPT);
        let script = c.script.display().to_string();
        let cmd = command(
            &c,
            &[
                "-4",
                "-B",
                "-A",
                "-f",
                "/dev/null",
                "-c",
                &script,
                "-t",
                "0",
                interface,
            ],
        );
        c.spawn(cmd);
        c
    }

    /// `dhcpcd -n`: rebind the lease now.
    pub fn rebind(c: &Client) -> String {
        run(&mut command(c, &["-4", "-n", &c.interface]))
    }

    /// `dhcpcd -k`: release the lease (the running dhcpcd then exits).
    pub fn release(c: &Client) -> String {
        run(&mut command(c, &["-4", "-k", &c.interface]))
    }
}
