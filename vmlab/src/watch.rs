//! Watching a booting cluster: each machine's milestones (login prompt on the serial console, the
//! agent's "ready" line, Consul UI serving, alive in Consul, Ready in Swarm), timed from its power-on.
//! One poll every couple of seconds; one line on stderr per milestone reached.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use super::http;
use super::ssh::Ssh;
use super::state::{Machine, State};
use super::vm;

/// Seconds from power-on to each milestone, once reached.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Milestones {
    pub login_prompt: Option<f64>,
    pub agent_done: Option<f64>,
    pub consul_ui: Option<f64>,
    pub consul_alive: Option<f64>,
    pub swarm_ready: Option<f64>,
}

/// The agent's last console line, e.g. `cluster-lab: master ready — open http://…:8500`.
pub fn is_agent_done_line(line: &str) -> bool {
    line.contains("cluster-lab:") && line.contains("ready") && !line.contains("not ready")
}

/// A power cut the watcher makes once, in the middle of a boot: the first machine whose console of this boot shows a
/// line containing `needle` loses its power, stays off for `off_for`, and is powered on again (its milestones start
/// over).
#[derive(Debug, Clone)]
pub struct Cut {
    pub needle: String,
    pub off_for: Duration,
}

/// The cut as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct CutMade {
    pub hostname: String,
    /// The console line it was cut on.
    pub line: String,
    /// Seconds from that machine's power-on to the cut.
    pub after: f64,
}

pub struct Watcher<'a> {
    pub state: &'a State,
    /// A cut still to make, and the one made.
    pub cut: Option<Cut>,
    pub cut_made: Option<CutMade>,
    ssh: Ssh,
    powered: Vec<Option<Instant>>,
    pub milestones: Vec<Milestones>,
    /// Index of the machine serving the Consul UI, once one does.
    pub master: Option<usize>,
    /// Why the last Swarm check over SSH failed, if it did.
    pub ssh_error: Option<String>,
    serial: Vec<vm::SerialWatch>,
}

impl<'a> Watcher<'a> {
    pub fn new(state: &'a State, ssh: Ssh) -> Watcher<'a> {
        let n = state.machines.len();
        Watcher {
            state,
            ssh,
            cut: None,
            cut_made: None,
            powered: vec![None; n],
            milestones: vec![Milestones::default(); n],
            master: None,
            ssh_error: None,
            serial: (0..n).map(|_| vm::SerialWatch::default()).collect(),
        }
    }

    /// Note that machine `i` was powered on at `at` (watching its serial log from the current end).
    pub fn powered_on(&mut self, i: usize, at: Instant) {
        self.powered[i] = Some(at);
        self.milestones[i] = Milestones::default();
        self.serial[i] = vm::SerialWatch::from_end(&self.state.machines[i].files);
    }

    fn since(&self, i: usize) -> f64 {
        self.powered[i]
            .map(|t| t.elapsed().as_secs_f64())
            .unwrap_or(0.0)
    }

    fn reached(&self, m: &Machine, what: &str, s: f64) {
        eprintln!("cluster: {:<8} {what} after {s:.1} s", m.hostname);
    }

    /// Make the pending cut if a machine's console shows its line.
    fn maybe_cut(&mut self) -> Result<()> {
        let Some(cut) = self.cut.clone() else {
            return Ok(());
        };
        for i in 0..self.state.machines.len() {
            if self.powered[i].is_none() {
                continue;
            }
            let m = &self.state.machines[i];
            let Some(line) = self.serial[i].find(&m.files, &cut.needle) else {
                continue;
            };
            let after = self.since(i);
            self.cut = None;
            vm::power_off(&m.files)?;
            eprintln!(
                "cluster: {:<8} power cut {after:.1} s after power-on, on the console line: {}",
                m.hostname,
                line.trim()
            );
            std::thread::sleep(cut.off_for);
            super::fault::launch_paused(self.state, m)?;
            let (at, _) = vm::power_on(&[m.files.qmp.as_path()])?;
            eprintln!("cluster: {:<8} powered on again", m.hostname);
            self.powered_on(i, at);
            if self.master == Some(i) {
                self.master = None;
            }
            self.cut_made = Some(CutMade {
                hostname: m.hostname.clone(),
                line: line.trim().to_string(),
                after,
            });
            return Ok(());
        }
        Ok(())
    }

    /// Look at every powered machine once.
    pub fn poll(&mut self) {
        if let Err(e) = self.maybe_cut() {
            eprintln!("cluster: the power cut failed: {e:#}");
        }
        let netns = self.state.netns.clone();
        for i in 0..self.state.machines.len() {
            if self.powered[i].is_none() {
                continue;
            }
            let m = &self.state.machines[i];
            let t = self.since(i);
            if self.milestones[i].login_prompt.is_none()
                && self.serial[i].find(&m.files, " login:").is_some()
            {
                self.milestones[i].login_prompt = Some(t);
                self.reached(m, "login prompt", t);
            }
            if self.milestones[i].agent_done.is_none() {
                if let Some(line) = self.serial[i].find_by(&m.files, is_agent_done_line) {
                    self.milestones[i].agent_done = Some(t);
                    self.reached(m, &format!("agent done ({})", line.trim()), t);
                }
            }
            if self.milestones[i].consul_ui.is_none()
                && (self.master.is_none() || self.master == Some(i))
                && self.milestones[i].login_prompt.is_some()
            {
                let url = format!("http://{}:8500/ui/", m.lan_ip);
                if let Ok(r) = http::get(&netns, &url, Duration::from_secs(3)) {
                    if r.status == 200 && r.body.to_lowercase().contains("consul") {
                        self.milestones[i].consul_ui = Some(t);
                        self.master = Some(i);
                        self.reached(m, "Consul UI serving", t);
                    }
                }
            }
        }
        let Some(master) = self.master else {
            return;
        };
        let master_ip = self.state.machines[master].lan_ip.to_string();
        if let Ok(members) = http::consul_members(&netns, &master_ip) {
            for i in 0..self.state.machines.len() {
                let m = &self.state.machines[i];
                if self.powered[i].is_some()
                    && self.milestones[i].consul_alive.is_none()
                    && members.iter().any(|x| x.name == m.hostname && x.alive())
                {
                    let t = self.since(i);
                    self.milestones[i].consul_alive = Some(t);
                    self.reached(m, "alive in Consul", t);
                }
            }
        }
        if self
            .milestones
            .iter()
            .enumerate()
            .all(|(i, ms)| self.powered[i].is_none() || ms.swarm_ready.is_some())
        {
            return;
        }
        // As the master's own login user (`pi` on a card flashed the Imager way).
        let ssh = crate::ssh::Ssh {
            user: self.state.machines[master]
                .login_user(&self.ssh.user)
                .to_string(),
            ..self.ssh.clone()
        };
        match ssh.run(
            &master_ip,
            "docker node ls --format '{{.Hostname}} {{.Status}}'",
            Duration::from_secs(20),
        ) {
            Ok(out) => {
                self.ssh_error = None;
                for i in 0..self.state.machines.len() {
                    let m = &self.state.machines[i];
                    let ready = out.lines().any(|l| {
                        let mut f = l.split_whitespace();
                        f.next() == Some(m.hostname.as_str()) && f.next() == Some("Ready")
                    });
                    if self.powered[i].is_some()
                        && self.milestones[i].swarm_ready.is_none()
                        && ready
                    {
                        let t = self.since(i);
                        self.milestones[i].swarm_ready = Some(t);
                        self.reached(m, "Ready in Swarm", t);
                    }
                }
            }
            Err(e) => self.ssh_error = Some(format!("{e:#}")),
        }
    }

    /// Poll until `done` holds, or fail after `timeout` with the serial console tails of the machines
    /// `stuck` names.
    pub fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Watcher) -> bool,
        stuck: impl Fn(&Watcher, usize) -> bool,
    ) -> Result<()> {
        let start = Instant::now();
        let mut next_note = Duration::from_secs(60);
        loop {
            self.poll();
            if done(self) {
                return Ok(());
            }
            if let Some(e) = self
                .ssh_error
                .as_ref()
                .filter(|e| e.contains("Permission denied"))
            {
                if start.elapsed() > Duration::from_secs(120) {
                    bail!(
                        "waiting for {what}: SSH to the master with the test key flashed in cluster-lab.toml is refused \
                         ({e}); the image does not install [node] ssh_authorized_keys for the `cluster` user"
                    );
                }
            }
            if start.elapsed() > timeout {
                let mut msg = format!("timed out after {} s waiting for {what}", timeout.as_secs());
                for (i, m) in self.state.machines.iter().enumerate() {
                    if self.powered[i].is_some() && stuck(self, i) {
                        msg.push_str(&format!(
                            "\n--- {} ({}): milestones {:?}; last serial console lines ({}) ---\n{}",
                            m.hostname,
                            m.lan_ip,
                            self.milestones[i],
                            m.files.serial.display(),
                            vm::serial_tail(&m.files, 25)
                        ));
                    }
                }
                if let Some(e) = &self.ssh_error {
                    msg.push_str(&format!("\n--- last SSH error ---\n{e}"));
                }
                bail!(msg);
            }
            if start.elapsed() > next_note {
                eprintln!(
                    "cluster: still waiting for {what} ({} s)",
                    start.elapsed().as_secs()
                );
                next_note += Duration::from_secs(60);
            }
            self.pause(Duration::from_secs(2));
        }
    }

    /// Sleep between polls; while a cut is pending, watch for its line every 100 ms meanwhile, so the cut lands
    /// within a fraction of a second of it.
    fn pause(&mut self, d: Duration) {
        let until = Instant::now() + d;
        while self.cut.is_some() && Instant::now() < until {
            if let Err(e) = self.maybe_cut() {
                eprintln!("cluster: the power cut failed: {e:#}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_done_line() {
        assert!(is_agent_done_line(
            "[  61.2] cluster-lab[412]: cluster-lab: master ready — open http://192.0.2.11:8500"
        ));
        assert!(is_agent_done_line(
            "cluster-lab: node ready (master 192.168.200.1)"
        ));
        assert!(!is_agent_done_line("cluster-lab: waiting for docker"));
        assert!(!is_agent_done_line("cluster-lab: swarm not ready"));
    }
}
