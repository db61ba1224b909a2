//! `cluster-lab firstboot`: from a freshly flashed card to a machine that is master or node of the cluster.
//!
//! Each step checks the current state before acting, so the agent can be run again after a power cut at any point
//! and finishes the job; once the role is decided it is remembered and never re-elected. The steps, in order:
//! login (SSH keys, password) → hostname → effective config in /etc → VLAN → firewall → role → networkd files →
//! (master | node) → stamp. Login comes first so a person can get in to look at a first boot that is stuck.

pub mod master;
pub mod node;
mod services;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::config::{Role, Settings};
use crate::election::{ClusterRole, Mac, Timing};
use crate::host::hostname::{self, Hostname};
use crate::host::render::RenderedFile;
use crate::host::{clock, ntp};
use crate::plan::Plan;
use crate::{
    election::socket, host::firewall, host::login, host::login_user, host::networkd, host::stamp,
    host::systemd, net::vlan,
};

pub use crate::election::runner::{announce_master, elect, ElectionError, ElectionSetup, HomeLan};
pub use services::{Clock, Environment, Services, Systemd};

/// Where the agent keeps the effective configuration for services that run after first boot (dhcpd).
pub const ETC_CONFIG: &str = "/etc/cluster-lab/cluster-lab.toml";
/// How long a node waits for the master's DHCP server before it hands the VLAN to networkd anyway.
const MASTER_DHCP_WAIT: Duration = Duration::from_secs(120);

/// How a run of first boot ended.
#[derive(Debug)]
pub enum Finished {
    /// This machine is master or node now; the summary gives its console line.
    Done(Summary),
    /// A dry run: what would have been done, one line per action.
    Planned(Vec<String>),
}

/// Everything first boot works from; built by the CLI after the configuration validated.
#[derive(Debug, Clone)]
pub struct Firstboot {
    pub settings: Settings,
    /// The cluster-lab.toml text, copied to [`ETC_CONFIG`].
    pub config_text: String,
    /// What the card's cloud-init `user-data` asks for (Raspberry Pi Imager): login user, keys, timezone.
    pub user_data: crate::host::user_data::UserData,
    /// The card's own cluster-lab.toml (on the boot partition) when first boot read it from there: the secret is
    /// taken off it once the machine keeps its copy in [`ETC_CONFIG`].
    pub boot_config: Option<PathBuf>,
    pub hostname: Hostname,
    pub secret: crate::config::Secret,
    /// `/` on the target; a scratch directory for file-level checks.
    pub root: PathBuf,
    /// Only report what would change.
    /// Set for a dry run: the steps record what they would do here instead of acting.
    pub plan: Option<std::sync::Arc<Plan>>,
    /// The services first boot configures and how to reach them.
    pub env: Environment,
}

/// What first boot ended with.
#[derive(Debug, Clone)]
pub struct Summary {
    pub role: ClusterRole,
    pub vlan_address: Ipv4Addr,
    pub lan_address: Option<Ipv4Addr>,
    /// The login user (`cluster`, or as user-data named it).
    pub login_user: String,
}

impl Summary {
    /// What is printed on the console at the end: one line, and on the master a second with the command that
    /// lets a laptop drive the cluster's Docker.
    pub fn console_line(&self) -> String {
        let lan = self
            .lan_address
            .map_or_else(|| "<lan-ip>".to_string(), |a| a.to_string());
        match self.role {
            ClusterRole::Master => format!(
                "cluster-lab: master ready — open http://{lan}:8500\n\
                 cluster-lab: from your laptop: {}",
                crate::docker::laptop_context_command(&self.login_user, &lan)
            ),
            ClusterRole::Node => format!(
                "cluster-lab: node ready at {} — cluster UI on the master, port 8500",
                self.vlan_address
            ),
        }
    }
}

impl Firstboot {
    /// What this machine's Consul configuration is made from: its name and stable ID, the gossip key and the ACL
    /// management token from the secret; `bind` and `master` say where it gossips and whom it joins.
    fn consul_params(
        &self,
        bind: crate::consul::BindAddr,
        master: std::net::Ipv4Addr,
    ) -> crate::consul::ConsulParams {
        let secret = self.secret.expose();
        crate::consul::ConsulParams {
            datacenter: crate::consul::config::datacenter_name(&self.settings.cluster.name),
            node_name: self.hostname.to_string(),
            node_id: crate::secret::consul_node_id(secret, self.hostname.as_str()),
            data_dir: self.env.consul_data_dir.clone(),
            bind,
            master,
            gossip_key: crate::secret::gossip_key(secret),
            management_token: crate::secret::consul_management_token(secret),
        }
    }

    /// Write Consul's configuration (server or client) and start Consul, restarting it when the configuration
    /// changed; without waiting for it. Before the start, a gossip keyring a power cut left torn is removed (see
    /// [`crate::consul::data_dir`]): it would keep Consul from ever starting. Consul may already be failing on it in
    /// its restart loop; it starts on its next try.
    async fn start_consul(&self, config: &RenderedFile) -> anyhow::Result<()> {
        let changed = self.install(config)?;
        let dir = Path::new(&self.env.consul_data_dir);
        let removed = crate::consul::data_dir::remove_torn_keyrings(dir)
            .with_context(|| format!("checking consul's keyring in {}", dir.display()))?;
        for path in removed {
            tracing::warn!(
                path = %path.display(),
                "consul's keyring was cut short (a power cut as it was written); removed, consul writes it again"
            );
        }
        self.env
            .services
            .enable_and_start(systemd::CONSUL_UNIT, changed)
            .await
    }

    /// A client for the Consul HTTP API at `addr`, presenting the management token.
    fn consul_client(&self, addr: std::net::SocketAddr) -> crate::consul::ConsulClient {
        crate::consul::ConsulClient::new(addr)
            .with_token(crate::secret::consul_management_token(self.secret.expose()))
    }

    /// Install chrony's drop-in rendered by `render`. Returns whether it changed, or `None` when there is nothing to
    /// run here: a shared clock, or a dry run (which only notes the file).
    fn write_chrony(
        &self,
        render: impl FnOnce() -> Result<RenderedFile, crate::host::render::RenderError>,
    ) -> anyhow::Result<Option<bool>> {
        if self.env.clock == Clock::Shared {
            return Ok(None);
        }
        let file = render().context("rendering chrony's configuration")?;
        let changed = self.install(&file)?;
        Ok(self.planning().is_none().then_some(changed))
    }

    /// Enable chrony and (re)start it without waiting: on a busy first boot systemd may run the job only after the
    /// units it is starting meanwhile (dockerd), and nothing here needs chronyd running yet.
    async fn start_chrony(&self, changed: bool) -> anyhow::Result<()> {
        self.env
            .services
            .enable_and_start(clock::UNIT, changed)
            .await
            .with_context(|| format!("starting {}", clock::UNIT))
    }

    /// The master: chrony serves the cluster's subnet (see [`crate::host::clock`]).
    async fn serve_clock(&self) -> anyhow::Result<()> {
        let subnet = self.settings.network.subnet;
        if let Some(changed) = self.write_chrony(|| clock::render_master(subnet))? {
            self.start_chrony(changed).await?;
            tracing::info!(%subnet, "serving the cluster's clock (chrony)");
        }
        Ok(())
    }

    /// A node: set the clock from the master before Consul starts and the Swarm is joined: a node whose clock is far
    /// behind (a Pi has no battery-backed clock) cannot validate the Swarm's certificates. One NTP exchange with the
    /// master's chronyd, asked again every second (bounded) until it answers as synchronised; the clock is stepped
    /// when it is off by [`clock::STEP_THRESHOLD`] or more. Then chronyd, its source the master, keeps it in step.
    async fn set_clock_from(&self, master: Ipv4Addr) -> anyhow::Result<()> {
        let Some(changed) = self.write_chrony(|| clock::render_node(master))? else {
            return Ok(());
        };
        let timeout = Duration::from_secs(120);
        tracing::info!(%master, "setting the clock from the master (NTP)");
        let sample = crate::wait::until(
            "the master's clock (NTP)",
            timeout,
            Duration::from_secs(1),
            || async move {
                let asked = ntp::query(master, clock::NTP_PORT, Duration::from_secs(1));
                Ok(Some(asked.await?))
            },
        )
        .await
        .with_context(|| {
            format!(
                "the clock could not be set from the master ({master}, NTP port {}) within {}s; is chrony \
                 running on the master?",
                clock::NTP_PORT,
                timeout.as_secs()
            )
        })?;
        let stepped = sample.offset.abs() >= clock::STEP_THRESHOLD;
        if stepped {
            ntp::step(sample.offset)?;
        }
        tracing::info!(
            source = %master,
            offset_s = sample.offset,
            delay_s = sample.delay,
            stepped,
            "clock set"
        );
        self.start_chrony(changed).await
    }

    /// Install `file` (or, in a dry run, say whether it would change). Returns whether it changed.
    fn install(&self, file: &RenderedFile) -> anyhow::Result<bool> {
        let target = file.target(&self.root);
        if let Some(plan) = self.planning() {
            let same =
                std::fs::read_to_string(&target).ok().as_deref() == Some(file.contents.as_str());
            if !same {
                plan.note(format!("would write {}", file.path.display()));
            }
            return Ok(!same);
        }
        let changed = file
            .install(&self.root)
            .with_context(|| format!("writing {}", file.path.display()))?;
        if changed {
            tracing::info!(path = %file.path.display(), "wrote");
        }
        Ok(changed)
    }

    /// The dry run's plan, if this is one.
    fn planning(&self) -> Option<&Plan> {
        self.plan.as_deref()
    }

    /// Run every step. Returns the summary, or in a dry run the plan; the caller prints them.
    pub async fn run(&self) -> anyhow::Result<Finished> {
        let net = &self.settings.network;
        let vlan_if = net.vlan_interface();
        self.step_login()?;
        self.step_timezone();
        if self.step_hostname()? {
            // dockerd (the Swarm node name) and avahi (<hostname>.local) read the hostname when they start; they may
            // have started before this step on first boot.
            self.env
                .services
                .try_restart(&[systemd::DOCKER_UNIT, "avahi-daemon.service"])
                .await
                .context("restarting services that read the hostname")?;
        }
        self.install(&RenderedFile {
            path: ETC_CONFIG.into(),
            contents: self.config_text.clone(),
            mode: 0o600,
            group: None,
        })?;

        if let Some(plan) = self.planning() {
            plan.note(format!(
                "would create VLAN {vlan_if} (id {}) on {} and bring it up",
                net.vlan, net.interface
            ));
        } else {
            let mtu = networkd::vlan_mtu(networkd::PARENT_MTU);
            let created = vlan::ensure(&net.interface, &vlan_if, net.vlan, mtu)
                .await
                .context("creating the cluster VLAN")?;
            tracing::info!(interface = %vlan_if, created, "vlan up");
        }
        self.step_firewall().await?;

        let (role, claim_socket) = self.step_role().await?;
        if role == ClusterRole::Node && self.plan.is_none() {
            self.wait_for_master_dhcp(&vlan_if).await;
        }
        let mut changed = false;
        for file in networkd::render(net, role).context("rendering networkd files")? {
            changed |= self.install(&file)?;
        }
        if changed && self.plan.is_none() {
            self.env
                .services
                .networkd_reload()
                .await
                .context("reloading networkd")?;
        }
        if let Some(plan) = self.planning() {
            plan.note(format!(
                "then, as {role:?}: VLAN address, Consul, Swarm, stamp; dry run, nothing was changed"
            ));
            return Ok(Finished::Planned(plan.lines()));
        }
        let vlan_address = match role {
            ClusterRole::Master => master::run(self, claim_socket).await?,
            ClusterRole::Node => node::run(self).await?,
        };
        // Consul and dockerd run: from now on the machine's Swarm tasks are kept in Consul's catalog.
        self.env
            .services
            .enable_and_start(crate::catalog::UNIT, false)
            .await
            .with_context(|| format!("starting {}", crate::catalog::UNIT))?;
        let summary = Summary {
            role,
            vlan_address,
            lan_address: first_address(&net.interface),
            login_user: login_user::current(&self.root),
        };
        self.step_secret_off_the_card()?;
        stamp::mark_done(&self.root, &summary.console_line())
            .context("writing the firstboot stamp")?;
        for unit in [systemd::EARLY_UNIT, systemd::FIRSTBOOT_UNIT] {
            self.env
                .services
                .disable(unit)
                .await
                .with_context(|| format!("disabling {unit}"))?;
        }
        Ok(Finished::Done(summary))
    }

    /// Write the firewall between the home LAN and the VLAN, load it now (before this run starts Consul or joins
    /// the Swarm), and enable the unit that loads it on every later boot. Loading replaces the table, so a run
    /// after a power cut loads it again whether or not the file changed.
    async fn step_firewall(&self) -> anyhow::Result<()> {
        let file = firewall::render(&self.settings.network).context("rendering the firewall")?;
        let changed = self.install(&file)?;
        if let Some(plan) = self.planning() {
            plan.note(format!(
                "would load the firewall {} (nftables table inet {}) and enable {}",
                file.path.display(),
                firewall::TABLE,
                firewall::UNIT
            ));
            return Ok(());
        }
        firewall::load(&file.target(&self.root))
            .await
            .context("loading the firewall")?;
        self.env
            .services
            .enable_and_start(firewall::UNIT, changed)
            .await
            .with_context(|| format!("enabling {}", firewall::UNIT))?;
        tracing::info!(path = %file.path.display(), changed, "firewall loaded");
        Ok(())
    }

    /// Take the secret off the card's boot partition: a card that is lent, shown or lost should not carry the
    /// cluster. The machine keeps it in [`ETC_CONFIG`] (0600, root only; written earlier in this run), and a first
    /// boot run again reads it from there. Safe to run twice: a file without a secret is left alone. Returns whether
    /// the file changed.
    pub fn step_secret_off_the_card(&self) -> anyhow::Result<bool> {
        let Some(path) = &self.boot_config else {
            return Ok(false);
        };
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let note =
            format!("secret: kept in {ETC_CONFIG} (root only) since first boot; not on the card");
        let Some(without) = crate::config::edit::remove_secret(&text, &note)
            .with_context(|| format!("taking the secret off {}", path.display()))?
        else {
            return Ok(false);
        };
        if let Some(plan) = self.planning() {
            plan.note(format!(
                "would take the secret off {} (kept in {ETC_CONFIG})",
                path.display()
            ));
            return Ok(true);
        }
        crate::host::atomic::write(path, without.as_bytes(), 0o600, None, None)
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(path = %path.display(), kept = ETC_CONFIG, "secret taken off the card");
        Ok(true)
    }

    /// The early part, run by cluster-lab-early.service before dockerd, sshd and avahi start: SSH keys and hostname.
    /// dockerd names its Swarm node after the hostname it starts with, so setting it here spares the full run a
    /// restart of dockerd (the slowest thing on first boot). Nothing is restarted here.
    /// Also gives overlay networks the VLAN's MTU by default and trusts the cluster registry (daemon.json), which
    /// dockerd only reads when it starts.
    pub async fn run_early(&self) -> anyhow::Result<()> {
        self.step_login()?;
        self.step_timezone();
        self.step_hostname()?;
        self.step_daemon_json().await?;
        Ok(())
    }

    /// `default-network-opts` in daemon.json, so overlay networks users create fit the VLAN, the cluster
    /// registry on the master among `insecure-registries`, so every engine pulls from it, and the machine's resolver
    /// as the containers' DNS server (`dns`), so containers resolve `.consul` names. Only when the installed
    /// dockerd accepts the file: known when dpkg has Docker 24 or later installed (the option needs 24), else asked
    /// with `dockerd --validate` (Docker 23 and later): a dockerd that rejected its configuration would not start at
    /// all. When it rejects both, the registry alone is tried.
    /// Returns whether daemon.json changed.
    async fn step_daemon_json(&self) -> anyhow::Result<bool> {
        use crate::docker::daemon_json::{
            render_container_dns, render_insecure_registry, render_overlay_default,
        };
        let current = crate::docker::daemon_json::read(&self.root);
        let mtu = crate::docker::ingress::vlan_driver_mtu_option();
        let registry = crate::docker::registry::address(self.settings.network.master);
        // The cluster registry trusted, and containers asking the machine's resolver (`dns`, which every dockerd
        // takes).
        let trusting = |text: &str| {
            render_insecure_registry(text, &registry)
                .and_then(|f| render_container_dns(&f.contents))
        };
        let engine = crate::docker::daemon_json::packaged_engine_major(&self.root);
        let known_good =
            engine.is_some_and(|v| v >= crate::docker::daemon_json::DEFAULT_NETWORK_OPTS_SINCE);
        tracing::debug!(?engine, known_good, "docker engine package");
        // All; or, from a dockerd that rejects default-network-opts (older than 24), the registry and the
        // containers' DNS alone.
        let candidates = [
            (
                "the overlay MTU default, the cluster registry and the containers' DNS",
                render_overlay_default(&current, mtu).and_then(|f| trusting(&f.contents)),
            ),
            (
                "the cluster registry and the containers' DNS",
                trusting(&current),
            ),
        ];
        for (what, rendered) in candidates {
            let file = match rendered {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, what, "daemon.json cannot take it");
                    continue;
                }
            };
            if file.contents == current {
                return Ok(false);
            }
            // `dockerd --validate` costs seconds on a Pi, on the way to dockerd's start: skipped when the engine
            // package says it is recent enough for both settings.
            if !known_good {
                if let Err(e) = self.dockerd_accepts(&file.contents).await? {
                    tracing::warn!(error = %e, what, "dockerd rejects daemon.json with it");
                    continue;
                }
            }
            let changed = self.install(&file)?;
            tracing::info!(option = mtu, %registry, changed, what, "daemon.json");
            return Ok(changed);
        }
        tracing::warn!(
            "daemon.json left as it is: overlay networks keep Docker's default MTU, the cluster registry is not trusted and containers do not resolve .consul names"
        );
        Ok(false)
    }

    /// Whether the installed dockerd accepts `contents` as its daemon.json (`dockerd --validate`); the outer error is
    /// about the candidate file, the inner one is dockerd's refusal.
    async fn dockerd_accepts(
        &self,
        contents: &str,
    ) -> anyhow::Result<Result<(), crate::command::CommandError>> {
        let path = crate::docker::daemon_json::path(&self.root);
        let candidate = path.with_file_name(".daemon.json.cluster-lab");
        if let Some(dir) = candidate.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&candidate, contents)
            .with_context(|| format!("writing {}", candidate.display()))?;
        let checked = crate::command::run(
            "dockerd",
            [
                "--validate".as_ref(),
                "--config-file".as_ref(),
                candidate.as_os_str(),
            ],
        )
        .await;
        std::fs::remove_file(&candidate).ok();
        Ok(checked.map(drop))
    }

    /// Load the container images shipped in the image into dockerd. A failure is logged, not returned: the cluster
    /// forms without them.
    /// Load the images the card carries into dockerd; returns their tags (none when loading failed: the cluster
    /// forms without them).
    async fn load_images(&self, docker: &crate::docker::swarm::Swarm) -> Vec<String> {
        let dir = &self.env.images_dir;
        match crate::docker::images::load_preloaded(docker.docker(), dir).await {
            Ok(r) => {
                tracing::info!(
                    dir = %dir.display(),
                    loaded = r.loaded.len(),
                    skipped = r.skipped.len(),
                    "preloaded images"
                );
                r.tags
            }
            Err(e) => {
                tracing::warn!(error = %e, "preloaded images not loaded; the cluster forms without them");
                Vec::new()
            }
        }
    }

    /// The login user: named as user-data says (the image's `cluster` renamed), with the SSH keys of `[node]` and
    /// user-data, and the password hash of `[node]` or user-data. Returns whether anything changed.
    pub fn step_login(&self) -> anyhow::Result<bool> {
        let node = &self.settings.node;
        let mut keys: Vec<String> = node
            .ssh_authorized_keys
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect();
        for k in self.user_data.login_keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let wanted = self.user_data.user.as_ref();
        let renamed = match wanted {
            Some(u) => login_user::rename(&self.root, &u.name, self.planning())
                .with_context(|| format!("naming the login user {} (user-data)", u.name))?,
            None => false,
        };
        // In a dry run nothing was renamed: the rest is planned for the user as it is now.
        let user = match wanted {
            Some(u) if !(renamed && self.plan.is_some()) => u.name.as_str(),
            _ => login::USER,
        };
        let login = login::Login {
            user,
            keys: &keys,
            password_hash: node
                .password_hash
                .as_deref()
                .or_else(|| wanted.and_then(|u| u.password_hash())),
        };
        let outcome = login
            .apply(&self.root, self.planning())
            .context("setting up login")?;
        if let Some(plan) = self.planning() {
            if !outcome.changed() && !renamed {
                let password = match login.password_hash {
                    Some(_) => "password hash",
                    None => "no password",
                };
                plan.note(format!(
                    "login of {user}: nothing to change ({} keys, {password})",
                    login.keys.len(),
                ));
            }
            return Ok(renamed || outcome.changed());
        }
        tracing::info!(
            user,
            renamed,
            keys = login.keys.len(),
            password = login.password_hash.is_some(),
            changed = outcome.changed(),
            "login set"
        );
        Ok(renamed || outcome.changed())
    }

    /// The timezone user-data names, if any. A zone the image does not have is a warning, not a stop: the cluster
    /// works in UTC.
    pub fn step_timezone(&self) -> bool {
        let Some(tz) = &self.user_data.timezone else {
            return false;
        };
        match crate::host::timezone::apply(&self.root, tz, self.planning()) {
            Ok(changed) => {
                if changed && self.plan.is_none() {
                    tracing::info!(timezone = %tz, "timezone set");
                }
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "timezone left as it is");
                false
            }
        }
    }

    /// Returns whether the kernel hostname changed.
    fn step_hostname(&self) -> anyhow::Result<bool> {
        self.install(&hostname::render_hostname_file(&self.hostname))?;
        let hosts_path = self.root.join("etc/hosts");
        let current = std::fs::read_to_string(&hosts_path).unwrap_or_default();
        self.install(&hostname::render_hosts_file(&current, &self.hostname))?;
        if self.plan.is_some() || self.root != Path::new("/") {
            return Ok(false);
        }
        let changed =
            hostname::set_kernel_hostname(&self.hostname).context("setting the hostname")?;
        tracing::info!(hostname = %self.hostname, changed, "hostname set");
        Ok(changed)
    }

    /// The role: remembered from an earlier run, else configured, else elected on the VLAN. An elected master
    /// also gets the claim socket back, to keep announcing itself until its DHCP service answers.
    async fn step_role(&self) -> anyhow::Result<(ClusterRole, Option<socket::ClaimSocket>)> {
        if let Some(role) = stamp::read_role(&self.root)? {
            tracing::info!(?role, "role decided on an earlier boot");
            return Ok((role, None));
        }
        let (role, socket) = match self.settings.node.role {
            Role::Master => (ClusterRole::Master, None),
            Role::Node => (ClusterRole::Node, None),
            Role::Auto if self.plan.is_some() => {
                if let Some(plan) = self.planning() {
                    plan.note(format!(
                        "would elect the role on {}",
                        self.settings.network.vlan_interface()
                    ));
                }
                return Ok((ClusterRole::Node, None));
            }
            Role::Auto => {
                let (role, socket) = self.run_election().await?;
                (role, Some(socket))
            }
        };
        if self.plan.is_none() {
            stamp::write_role(&self.root, role).context("remembering the role")?;
        }
        Ok((role, socket))
    }

    /// A node that decided the moment it heard the master's claim may be ready before the master's DHCP server
    /// is. networkd's DHCP client, once it asks and hears nothing, asks again only after growing pauses (1, 3, 7,
    /// 15, 31 s…), so a node would sit out most of a pause after the master began to answer. Hand the VLAN to
    /// networkd only once the master answers (a probe each second, for at most [`MASTER_DHCP_WAIT`]); if it never
    /// does, networkd keeps asking on its own.
    async fn wait_for_master_dhcp(&self, vlan_if: &str) {
        let probe = MasterProbe::new(vlan_if, &self.settings.cluster.name, self.secret.expose());
        let started = std::time::Instant::now();
        while started.elapsed() < MASTER_DHCP_WAIT {
            match probe.answers(Duration::from_secs(1)).await {
                Ok(true) => {
                    tracing::info!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "the master's DHCP server answers"
                    );
                    return;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "probing for the master's DHCP server");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        tracing::warn!(
            waited_s = MASTER_DHCP_WAIT.as_secs(),
            "the master's DHCP server does not answer yet; networkd keeps asking"
        );
    }

    async fn run_election(&self) -> anyhow::Result<(ClusterRole, socket::ClaimSocket)> {
        let net = &self.settings.network;
        let vlan_if = net.vlan_interface();
        let mac = crate::net::link::mac(&net.interface)
            .context("reading the MAC address")?
            .0;
        let setup = ElectionSetup {
            interface: vlan_if.clone(),
            cluster: self.settings.cluster.name.clone(),
            mac: Mac(mac),
            master: net.master,
            timing: Timing::default(),
            arp_count: 2,
            give_up_after: Duration::from_secs(600),
        };
        let home_lan = Some((net.interface.as_str(), net.vlan));
        elect_on_vlan(&setup, home_lan, self.secret.expose()).await
    }
}

/// The election as first boot runs it on the VLAN: the claim socket keyed by the secret, and a DHCP probe that counts
/// only a master holding this cluster's secret. With `home_lan` (the untagged interface and the VLAN id) the claims
/// go there too, for the switch check ([`crate::election::switch_check`]). Returns the role and the socket (a
/// master keeps announcing on it).
pub async fn elect_on_vlan(
    setup: &ElectionSetup,
    home_lan: Option<(&str, u16)>,
    secret: &str,
) -> anyhow::Result<(ClusterRole, socket::ClaimSocket)> {
    let vlan_if = setup.interface.clone();
    let key = crate::election::claim::ClaimKey::from_secret(secret);
    let socket = socket::ClaimSocket::bind(&vlan_if, socket::PORT, key.clone())
        .context("opening the claim socket")?;
    let lan_socket = match home_lan {
        Some((lan, _)) => Some(
            socket::ClaimSocket::bind(lan, crate::election::switch_check::PORT, key)
                .context("opening the claim socket on the home LAN")?,
        ),
        None => None,
    };
    let lan = lan_socket
        .as_ref()
        .zip(home_lan)
        .map(|(socket, (_, vlan_id))| HomeLan { socket, vlan_id });
    let probe = MasterProbe::new(&vlan_if, &setup.cluster, secret);
    let role = elect(setup, &socket, lan, move || {
        let probe = probe.clone();
        async move { probe.answers(Duration::from_secs(3)).await }
    })
    .await?;
    Ok((role, socket))
}

/// Asks on the VLAN whether this cluster's master answers DHCP: one DISCOVER, offers collected for a while, and
/// only a server marking its offers with this cluster's secret counts (not one copying the marker).
#[derive(Clone)]
pub struct MasterProbe {
    interface: String,
    check: (String, crate::dhcp::marker::MarkerKey),
}

impl MasterProbe {
    pub fn new(interface: &str, cluster: &str, secret: &str) -> MasterProbe {
        MasterProbe {
            interface: interface.to_owned(),
            check: (
                cluster.to_owned(),
                crate::dhcp::marker::MarkerKey::from_secret(secret),
            ),
        }
    }

    /// Whether the master offered an address within `listen`.
    pub async fn answers(&self, listen: Duration) -> anyhow::Result<bool> {
        let probe = self.clone();
        tokio::task::spawn_blocking(move || {
            let offers =
                crate::dhcp::probe::collect_offers(&probe.interface, listen, Some(&probe.check))?;
            Ok(
                crate::dhcp::probe::Report::new(&probe.interface, &probe.check.0, listen, &offers)
                    .master_found,
            )
        })
        .await?
    }
}

/// The first IPv4 address of `interface`, if any.
pub fn first_address(interface: &str) -> Option<Ipv4Addr> {
    crate::net::link::addresses(interface)
        .ok()?
        .into_iter()
        .next()
}

/// Wait until `interface` holds an address that satisfies `want`.
pub async fn wait_for_address(
    interface: &str,
    timeout: Duration,
    want: impl Fn(Ipv4Addr) -> bool,
) -> anyhow::Result<Ipv4Addr> {
    let waited = crate::wait::poll(timeout, Duration::from_millis(500), || {
        let addrs = crate::net::link::addresses(interface).unwrap_or_default();
        let found = addrs.into_iter().find(|a| want(*a));
        async move { Ok::<_, std::convert::Infallible>(found.ok_or_else(String::new)) }
    })
    .await;
    waited.map_err(|_| {
        anyhow::anyhow!(
            "{interface}: no cluster address after {timeout:?} (check `networkctl status {interface}`)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_says_where_the_ui_is_and_how_a_laptop_drives_docker() {
        let master = Summary {
            role: ClusterRole::Master,
            vlan_address: "192.168.200.1".parse().unwrap(),
            lan_address: Some("192.0.2.11".parse().unwrap()),
            login_user: "alice".into(),
        };
        let lines: Vec<String> = master.console_line().lines().map(String::from).collect();
        assert_eq!(
            lines,
            [
                "cluster-lab: master ready — open http://192.0.2.11:8500",
                "cluster-lab: from your laptop: docker context create cluster-lab --docker host=ssh://alice@192.0.2.11 && docker context use cluster-lab",
            ]
        );
        let node = Summary {
            role: ClusterRole::Node,
            vlan_address: "192.168.200.101".parse().unwrap(),
            lan_address: None,
            login_user: "cluster".into(),
        };
        assert_eq!(node.console_line().lines().count(), 1);
    }
}
