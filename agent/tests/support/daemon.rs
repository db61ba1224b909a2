//! A long-running program of the lab, with its output in a log file. Dropping it kills it; `stop` ends it
//! gracefully.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{describe, tail};

#[derive(Debug)]
pub struct Daemon {
    name: String,
    command: String,
    /// Behind a lock so that threads of a test (and services it hands to the code under test) can share it.
    /// `Child` keeps the exit status once reaped, so asking again is cheap and stays right.
    child: Mutex<Child>,
    pid: Pid,
    log: PathBuf,
}

impl Daemon {
    /// Start `cmd` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Daemon {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let err = file.try_clone().expect("duplicating the log file handle");
        let command = describe(&cmd);
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("`{command}`: cannot start {name}: {e}"));
        Daemon {
            name: name.to_owned(),
            command,
            pid: Pid::from_raw(child.id() as i32),
            child: Mutex::new(child),
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).unwrap_or_else(|e| panic!("sending {sig} to {}: {e}", self.name));
    }

    /// The exit status, once the program has ended.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child
            .lock()
            .unwrap()
            .try_wait()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name))
    }

    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    /// Panic with the command and the end of its log if the program has ended.
    pub fn assert_running(&self) {
        if let Some(status) = self.exit_status() {
            panic!("{} ended ({status})\n{}", self.name, self.report());
        }
    }

    /// Wait up to `timeout` for the program to end.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.exit_status() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.exit_status()
    }

    /// `kill -9` and reap.
    pub fn kill9(&self) {
        if self.is_running() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            self.child
                .lock()
                .unwrap()
                .wait()
                .unwrap_or_else(|e| panic!("reaping {}: {e}", self.name));
        }
    }

    /// SIGTERM, then SIGKILL if it has not ended after 20 s (dockerd with a swarm can take that long).
    pub fn stop(&self) {
        if self.is_running() {
            let _ = kill(self.pid(), Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(20)).is_none() {
                self.kill9();
            }
        }
    }

    /// Everything the program wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A block for failure messages: the command, its state and the end of its log.
    pub fn report(&self) -> String {
        self.report_skipping(|_| false)
    }

    /// [`Daemon::report`] without the log lines `noise` picks (messages a daemon repeats on every start).
    pub fn report_skipping(&self, noise: impl Fn(&str) -> bool) -> String {
        let state = match self.exit_status() {
            None => "running".to_owned(),
            Some(s) => format!("exited: {s}"),
        };
        let log: String = self
            .log()
            .lines()
            .filter(|l| !noise(l))
            .map(|l| format!("{l}\n"))
            .collect();
        format!(
            "--- {} ({state}): `{}`\n{}",
            self.name,
            self.command,
            tail(&log, 40)
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}
