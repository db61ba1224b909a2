//! Fault controls for a running virtual cluster: `cluster power` pulls a machine's plug (or the power strip's) and
//! puts it back, `cluster cable` pulls its network cable from the switch. What a real cluster on one power strip
//! and one switch lives through, to try by hand and in the acceptance test.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use super::state::{self, rel, Machine, State};
use super::switch::Switch;
use super::vm;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PowerAction {
    /// Cut the power: QEMU stops at once, no shutdown; what the machine had not written to its card is lost.
    Off,
    /// Power on: the card boots again (a machine already on is left as it is).
    On,
    /// Off, then on after --wait seconds.
    Cycle,
}

/// `cargo xtask cluster power MACHINE|all off|on|cycle`.
#[derive(Debug, Clone, Args)]
pub struct Power {
    /// Name of the cluster.
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// Machine: hostname (master, node1, …) or index (0, 1, …); `all` is the power strip: every machine at the
    /// same instant.
    pub machine: String,
    pub action: PowerAction,
    /// Seconds without power in a cycle.
    #[arg(long, default_value_t = 2)]
    pub wait: u64,
}

impl Power {
    pub fn run(self) -> Result<()> {
        let mut st = State::require(&self.name)?;
        let which = select(&st, &self.machine)?;
        if matches!(self.action, PowerAction::Off | PowerAction::Cycle) {
            power_off(&st, &which)?;
        }
        if self.action == PowerAction::Cycle {
            std::thread::sleep(Duration::from_secs(self.wait));
        }
        if matches!(self.action, PowerAction::On | PowerAction::Cycle) {
            power_on(&mut st, &which)?;
        }
        Ok(())
    }
}

/// The machines `which` names: one, or `all`.
pub fn select(st: &State, which: &str) -> Result<Vec<usize>> {
    if which == "all" {
        return Ok((0..st.machines.len()).collect());
    }
    Ok(vec![st.machine(which)?.index])
}

/// Cut the power of `which`, all at once.
pub fn power_off(st: &State, which: &[usize]) -> Result<()> {
    let mut names = Vec::new();
    std::thread::scope(|s| {
        let handles: Vec<_> = which
            .iter()
            .map(|&i| {
                let m = &st.machines[i];
                s.spawn(move || (m.hostname.clone(), vm::power_off(&m.files)))
            })
            .collect();
        for h in handles {
            let (name, r) = h.join().expect("power-off thread");
            r.map_err(|e| e.context(format!("cutting the power of {name}")))?;
            names.push(name);
        }
        Ok::<_, anyhow::Error>(())
    })?;
    eprintln!("cluster: power cut: {}", names.join(", "));
    Ok(())
}

/// Power on the machines of `which` that are off, at one instant: each QEMU starts paused, its cable as the state
/// says, then all are let run together. Returns the wall-clock power-on instant.
pub fn power_on(st: &mut State, which: &[usize]) -> Result<Option<SystemTime>> {
    let off: Vec<usize> = which
        .iter()
        .copied()
        .filter(|&i| !st.machines[i].running())
        .collect();
    for &i in which {
        if !off.contains(&i) {
            eprintln!("cluster: {} is already on", st.machines[i].hostname);
        }
    }
    if off.is_empty() {
        return Ok(None);
    }
    let mut launched = Vec::new();
    for &i in &off {
        let m = &st.machines[i];
        // Counted before the launch: a QEMU that started but failed later is stopped too.
        launched.push(i);
        if let Err(e) = launch_paused(st, m) {
            // Not half on: the machines started paused so far are stopped again.
            let _ = power_off(st, &launched);
            return Err(e.context(format!("powering on {}", m.hostname)));
        }
    }
    let sockets: Vec<&std::path::Path> = off
        .iter()
        .map(|&i| st.machines[i].files.qmp.as_path())
        .collect();
    let (_, wall) = vm::power_on(&sockets)?;
    for &i in &off {
        st.machines[i].powered_on_ms = Some(state::unix_ms(wall));
    }
    st.save()?;
    let names: Vec<&str> = off
        .iter()
        .map(|&i| st.machines[i].hostname.as_str())
        .collect();
    eprintln!("cluster: powered on {}", names.join(", "));
    Ok(Some(wall))
}

/// Start machine `m`'s QEMU paused, its cable as the state says; `vm::power_on` lets it run.
pub fn launch_paused(st: &State, m: &Machine) -> Result<()> {
    let spec = st.spec(m)?;
    vm::launch(&st.netns, &spec)?;
    if m.cable_unplugged {
        vm::set_link(&m.files, false)?;
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CableAction {
    /// Pull the cable: the machine's link goes down on both sides, as a cable pulled from the switch.
    Unplug,
    /// Plug it back in.
    Plug,
    /// Its switch port drops 802.1Q-tagged frames from now on (a managed switch without the VLAN on that port): the
    /// home LAN works, the cluster VLAN does not.
    DropTags,
    /// Its switch port carries tagged frames again.
    PassTags,
}

/// `cargo xtask cluster cable MACHINE unplug|plug|drop-tags|pass-tags`.
#[derive(Debug, Clone, Args)]
pub struct Cable {
    /// Name of the cluster.
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// Machine: hostname (master, node1, …) or index (0, 1, …).
    pub machine: String,
    pub action: CableAction,
}

impl Cable {
    pub fn run(self) -> Result<()> {
        let mut st = State::require(&self.name)?;
        let i = st.machine(&self.machine)?.index;
        match self.action {
            CableAction::Plug | CableAction::Unplug => {
                set_cable(&mut st, i, self.action == CableAction::Plug)
            }
            CableAction::DropTags | CableAction::PassTags => {
                set_tags_dropped(&mut st, i, self.action == CableAction::DropTags)
            }
        }
    }
}

/// Make machine `i`'s switch port drop (`dropped`) or carry 802.1Q-tagged frames; remembered in the state.
pub fn set_tags_dropped(st: &mut State, i: usize, dropped: bool) -> Result<()> {
    st.machines[i].tags_dropped = dropped;
    let taps: Vec<String> = st
        .machines
        .iter()
        .filter(|m| m.tags_dropped)
        .map(|m| m.tap.clone())
        .collect();
    Switch::for_netns(&st.netns).drop_tags_on(&st.dir(), &taps)?;
    st.save()?;
    eprintln!(
        "cluster: {}'s switch port {} tagged frames (the cluster VLAN)",
        st.machines[i].hostname,
        if dropped { "drops" } else { "carries" }
    );
    Ok(())
}

/// Plug in (`plugged`) or pull machine `i`'s cable; remembered in the state, so a power-on keeps it.
pub fn set_cable(st: &mut State, i: usize, plugged: bool) -> Result<()> {
    let m = &st.machines[i];
    if m.running() {
        vm::set_link(&m.files, plugged)?;
    } else if plugged != m.cable_unplugged {
        bail!(
            "{} is off and its cable already {}",
            m.hostname,
            if plugged { "plugged in" } else { "pulled" }
        );
    }
    st.machines[i].cable_unplugged = !plugged;
    st.save()?;
    eprintln!(
        "cluster: {}'s cable {}",
        st.machines[i].hostname,
        if plugged { "plugged in" } else { "pulled" }
    );
    Ok(())
}

/// `on`/`off` and the cable, as `cluster status` shows them ("no tags": its switch port drops tagged frames).
pub fn describe(m: &Machine) -> (String, &'static str) {
    let power = match m.pid() {
        Some(p) if m.running() => format!("on ({p})"),
        _ => "off".to_string(),
    };
    let cable = match (m.cable_unplugged, m.tags_dropped) {
        (true, _) => "pulled",
        (false, true) => "in, no tags",
        (false, false) => "in",
    };
    (power, cable)
}

/// For messages: where a machine's console log of this boot is, and the earlier ones.
pub fn console_logs(m: &Machine) -> String {
    let earlier = (1..)
        .map(|n| format!("{}.{n}", m.files.serial.display()))
        .take_while(|p| std::path::Path::new(p).exists())
        .count();
    if earlier == 0 {
        rel(&m.files.serial).display().to_string()
    } else {
        format!(
            "{} (+{earlier} earlier boot(s): .1 …)",
            rel(&m.files.serial).display()
        )
    }
}

/// `cargo xtask cluster reflash MACHINE [--hostname H]`.
#[derive(Debug, Clone, Args)]
pub struct Reflash {
    /// Name of the cluster.
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// Machine: hostname (master, node1, …) or index (0, 1, …).
    pub machine: String,
    /// Hostname on the new card (default: the machine's current one, as when a card is re-flashed for the same
    /// board). Another machine's hostname is allowed: that is a mistake worth trying.
    #[arg(long)]
    pub hostname: Option<String>,
}

impl Reflash {
    pub fn run(self) -> Result<()> {
        let mut st = State::require(&self.name)?;
        let i = st.machine(&self.machine)?.index;
        let hostname = self
            .hostname
            .clone()
            .unwrap_or_else(|| st.machines[i].hostname.clone());
        cluster_lab_config::edit::validate_hostname(&hostname)?;
        if let Some(other) = st
            .machines
            .iter()
            .find(|m| m.index != i && m.hostname == hostname)
        {
            eprintln!(
                "cluster: note: machine {} already has hostname {hostname}; the new card claims it too",
                other.index
            );
        }
        reflash(&mut st, i, &hostname)
    }
}

/// Power machine `i` off, flash its card again from the cluster's image with `hostname` (a new card: nothing of the
/// old one is kept), and power it on.
pub fn reflash(st: &mut State, i: usize, hostname: &str) -> Result<()> {
    power_off(st, &[i])?;
    let m = st.machines[i].clone();
    let size = std::fs::metadata(&m.disk)
        .map(|d| d.len())
        .unwrap_or(4 << 30);
    let pubkey = super::ssh::public_key(&st.ssh_key)?;
    std::fs::remove_file(&m.disk).ok();
    if m.imager {
        super::disk::prepare_imager(&st.image, &m.disk, hostname, &pubkey, size)?;
    } else {
        super::disk::prepare(&st.image, &m.disk, hostname, &pubkey, size)?;
    }
    eprintln!(
        "cluster: {} re-flashed from {} as {hostname}",
        m.hostname,
        rel(&st.image).display()
    );
    st.machines[i].hostname = hostname.to_string();
    st.save()?;
    power_on(st, &[i])?;
    Ok(())
}

/// `cargo xtask cluster add HOSTNAME [--drop-tags]`.
#[derive(Debug, Clone, Args)]
pub struct Add {
    /// Name of the cluster.
    #[arg(long, default_value = "lab")]
    pub name: String,
    /// Hostname flashed onto the new card.
    pub hostname: String,
    /// Plug it into a switch port that drops 802.1Q-tagged frames (`cable HOSTNAME pass-tags` undoes it).
    #[arg(long)]
    pub drop_tags: bool,
}

impl Add {
    pub fn run(self) -> Result<()> {
        let mut st = State::require(&self.name)?;
        add(&mut st, &self.hostname, self.drop_tags)?;
        Ok(())
    }
}

/// One more machine into a running cluster: the next index's MAC, tap, fixed home-LAN lease and a card flashed from
/// the cluster's image with `hostname`, the size of the first machine's; its port drops tags if `drop_tags`; then
/// it is powered on. Returns its index.
pub fn add(st: &mut State, hostname: &str, drop_tags: bool) -> Result<usize> {
    cluster_lab_config::edit::validate_hostname(hostname)?;
    if st.machines.iter().any(|m| m.hostname == hostname) {
        bail!(
            "{hostname} is already a machine of cluster {}: choose another hostname",
            st.name
        );
    }
    let i = st.machines.len();
    if i >= state::MAX_MACHINES {
        bail!(
            "cluster {} already has {i} machines, the most the virtual switch holds",
            st.name
        );
    }
    let Some(router) = st.router_pid else {
        bail!(
            "cluster {} has no home router running: `cargo xtask cluster up` first",
            st.name
        );
    };
    let m = Machine::new(&st.dir(), i, hostname);
    std::fs::create_dir_all(&m.files.dir)?;
    vm::clear_serial_logs(&m.files);
    let size = st
        .machines
        .first()
        .and_then(|first| std::fs::metadata(&first.disk).ok())
        .map_or(4 << 30, |d| d.len());
    let pubkey = super::ssh::public_key(&st.ssh_key)?;
    super::disk::prepare(&st.image, &m.disk, hostname, &pubkey, size)?;
    let sw = Switch::for_netns(&st.netns);
    sw.add_tap(&m.tap)?;
    sw.add_router_lease(&st.dir(), router, &m.lease())?;
    eprintln!(
        "cluster: {hostname} added: card flashed from {}, MAC {}, LAN {}, console {}",
        rel(&st.image).display(),
        m.mac,
        m.lan_ip,
        rel(&m.files.serial).display()
    );
    st.machines.push(m);
    st.save()?;
    if drop_tags {
        set_tags_dropped(st, i, true)?;
    }
    power_on(st, &[i])?;
    Ok(i)
}
