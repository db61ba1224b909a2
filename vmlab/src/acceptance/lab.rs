//! The running cluster as the checks see it: its state, SSH with the test key, and which machine
//! turned out to be the master.

use std::time::Duration;

use anyhow::Result;

use crate::http;
use crate::ssh::Ssh;
use crate::state::{Machine, State};

pub struct Lab {
    pub st: State,
    pub ssh: Ssh,
    /// Index of the master (the machine serving the Consul UI); machine 0 until known otherwise.
    pub master: usize,
}

impl Lab {
    pub fn new(st: State, master: Option<usize>) -> Lab {
        let ssh = st.ssh();
        Lab {
            st,
            ssh,
            master: master.unwrap_or(0),
        }
    }

    pub fn machine(&self, i: usize) -> &Machine {
        &self.st.machines[i]
    }

    pub fn master(&self) -> &Machine {
        self.machine(self.master)
    }

    /// The machines that are not the master.
    pub fn nodes(&self) -> Vec<&Machine> {
        self.st
            .machines
            .iter()
            .filter(|m| m.index != self.master)
            .collect()
    }

    pub fn master_ip(&self) -> String {
        self.master().lan_ip.to_string()
    }

    /// Run a shell command as root on machine `m` over SSH (sudo as its login user; 2-minute limit).
    pub fn sh(&self, m: &Machine, cmd: &str) -> Result<String> {
        self.st
            .ssh_for(m)
            .run_as_root(&m.lan_ip.to_string(), cmd, Duration::from_secs(120))
    }

    /// [`Lab::sh`] for a command that may take longer than two minutes.
    pub fn sh_within(&self, m: &Machine, cmd: &str, limit: Duration) -> Result<String> {
        self.st
            .ssh_for(m)
            .run_as_root(&m.lan_ip.to_string(), cmd, limit)
    }

    pub fn get(&self, url: &str) -> Result<http::Response> {
        http::get(&self.st.netns, url, Duration::from_secs(10))
    }

    /// Poll `f` every 3 s until it returns `Ok(Some(_))` or `limit` runs out; the last error or
    /// "still not" is returned on timeout.
    pub fn poll<T>(&self, limit: Duration, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
        let start = std::time::Instant::now();
        loop {
            let last = match f() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => None,
                Err(e) => Some(e),
            };
            if start.elapsed() > limit {
                return Err(last.unwrap_or_else(|| {
                    anyhow::anyhow!("condition not met within {} s", limit.as_secs())
                }));
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}
