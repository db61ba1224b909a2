//! `cluster-lab consul-token`: the owner's way to Consul's management token.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::config::Settings;

/// Print Consul's management token, derived from the cluster secret.
///
/// Consul's ACLs deny by default: without a token, anyone on the home LAN sees nodes and services in the UI at
/// :8500 and nothing else. With this token, log in to the UI (top right, "Log in") or use the consul CLI:
/// `export CONSUL_HTTP_TOKEN=$(sudo cluster-lab consul-token)`. It reads /etc/cluster-lab/cluster-lab.toml, which
/// only root can read. Treat the token like the secret: whoever has it controls Consul.
#[derive(Debug, Args)]
pub struct ConsulTokenArgs {
    /// cluster-lab.toml holding the secret [default: /etc/cluster-lab/cluster-lab.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
}

impl ConsulTokenArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let path = self
            .config
            .unwrap_or_else(|| PathBuf::from(crate::firstboot::ETC_CONFIG));
        let settings = Settings::load(&path).map_err(|e| match &e {
            crate::config::ConfigError::Read { .. } => {
                anyhow::anyhow!("{e} (it is root's only: run `sudo cluster-lab consul-token`)")
            }
            _ => e.into(),
        })?;
        let Some(secret) = settings.cluster.secret else {
            anyhow::bail!(
                "{}: [cluster] secret is not set, so there is no token to derive",
                path.display()
            );
        };
        println!(
            "{}",
            crate::secret::consul_management_token(secret.expose())
        );
        Ok(ExitCode::SUCCESS)
    }
}
