//! `cluster-lab probe --interface IF [--timeout SECS] [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use crate::config::{self, Settings};
use crate::dhcp::marker::MarkerKey;
use crate::dhcp::probe::{self, Kind, Report};

/// Broadcast DHCPDISCOVER (never REQUEST: no lease is taken) and list the servers that offer.
///
/// Exit status: 0 a cluster-lab master of this cluster answered, 1 none did, 2 error.
#[derive(Debug, Args)]
#[command(
    after_help = "Only DHCPDISCOVER is sent (never DHCPREQUEST), so no lease is taken.\n\
Exit status: 0 a cluster-lab master of this cluster answered, 1 none did, 2 error."
)]
pub struct ProbeArgs {
    /// Interface to send DHCPDISCOVER on.
    #[arg(long, short)]
    pub interface: String,
    /// Seconds to collect offers (the DISCOVER is repeated every second).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// cluster-lab.toml naming this node's cluster
    /// [default: /boot/firmware/cluster-lab.toml, else /boot/cluster-lab.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Cluster name to look for (overrides the configuration file).
    #[arg(long)]
    pub cluster: Option<String>,
}

impl ProbeArgs {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let (cluster, key) = self.cluster()?;
        let check = key.map(|k| (cluster.clone(), k));
        let timeout = Duration::from_secs(self.timeout);
        tracing::info!(interface = %self.interface, %cluster, timeout_secs = self.timeout,
            "probing for DHCP servers");
        let offers = probe::collect_offers(&self.interface, timeout, check.as_ref())
            .with_context(|| format!("probing for DHCP servers on {}", self.interface))?;
        let report = Report::new(&self.interface, &cluster, timeout, &offers);
        if self.json {
            print!("{}", json(&report));
        } else {
            print!("{}", text(&report));
        }
        if report.servers.is_empty() {
            tracing::info!(interface = %self.interface, "no DHCP server answered");
        } else if !report.master_found {
            tracing::info!(interface = %self.interface, %cluster,
                "no cluster-lab master of this cluster answered");
        }
        Ok(ExitCode::from(exit_code(&report)))
    }

    /// `--cluster`, else the name from `--config`, else from the first default configuration file found; with the
    /// marker key when the file holds the cluster secret (the probe then tells the master from a copy).
    fn cluster(&self) -> anyhow::Result<(String, Option<MarkerKey>)> {
        if let Some(name) = &self.cluster {
            anyhow::ensure!(
                !name.is_empty(),
                "--cluster: the cluster name must not be empty"
            );
            return Ok((name.clone(), None));
        }
        let path = match &self.config {
            Some(p) => p.clone(),
            None => config::find_on_boot_partition().with_context(|| {
                format!(
                    "no configuration found at {}; pass --config FILE or --cluster NAME",
                    config::BOOT_PATHS.join(" or ")
                )
            })?,
        };
        let settings = Settings::load(&path)?;
        let key = settings
            .cluster
            .secret
            .as_ref()
            .map(|s| MarkerKey::from_secret(s.expose()));
        Ok((settings.cluster.name, key))
    }
}

/// Exit status of `cluster-lab probe`: 0 a master of this cluster answered, 1 none did.
pub fn exit_code(report: &Report) -> u8 {
    if report.master_found {
        0
    } else {
        1
    }
}

/// One line per server, for people.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for s in &report.servers {
        let what = match (&s.kind, &s.cluster) {
            (Kind::ThisCluster, Some(c)) => format!("cluster-lab master of this cluster ({c})"),
            (Kind::OtherCluster, Some(c)) => {
                format!("cluster-lab master of another cluster ({c})")
            }
            (Kind::Foreign, _) => "foreign DHCP server".to_owned(),
            (Kind::Impostor, Some(c)) => format!(
                "claims to be the master of this cluster ({c}) but its marker does not verify with this \
                 cluster's secret: not the master"
            ),
            (_, None) => "cluster-lab master".to_owned(),
        };
        out.push_str(&format!("{} offered {}: {what}\n", s.server_id, s.offered));
    }
    out
}

/// A stable JSON document (keys in a fixed order, servers sorted by id), newline-terminated.
pub fn json(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("report serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::marker::Sender;
    use crate::dhcp::probe::tests::{offer, ours};

    #[test]
    fn exit_status_says_whether_a_master_of_this_cluster_answered() {
        let found = Report::new(
            "eth0.200",
            "lab",
            Duration::from_secs(3),
            &[offer(1, 101, ours("lab"))],
        );
        assert_eq!(exit_code(&found), 0);
        let other = Report::new(
            "eth0.200",
            "lab",
            Duration::from_secs(3),
            &[offer(1, 101, ours("x"))],
        );
        assert_eq!(exit_code(&other), 1);
        assert_eq!(
            exit_code(&Report::new("eth0.200", "lab", Duration::from_secs(3), &[])),
            1
        );
    }

    fn sample() -> Report {
        let offers = [
            offer(3, 60, ours("other")),
            offer(2, 50, Sender::Foreign),
            offer(1, 101, ours("lab")),
        ];
        Report::new("eth0.200", "lab", Duration::from_secs(3), &offers)
    }

    #[test]
    fn text_output_is_one_line_per_server() {
        assert_eq!(
            text(&sample()),
            "192.168.200.1 offered 192.168.200.101: cluster-lab master of this cluster (lab)\n\
             192.168.200.2 offered 192.168.200.50: foreign DHCP server\n\
             192.168.200.3 offered 192.168.200.60: cluster-lab master of another cluster (other)\n"
        );
        let empty = Report::new("eth0.200", "lab", Duration::from_secs(3), &[]);
        assert_eq!(text(&empty), "");
    }

    #[test]
    fn json_output_is_stable() {
        let golden = include_str!("../../test_data/probe/report.json");
        assert_eq!(
            json(&sample()),
            golden,
            "regenerate agent/test_data/probe/report.json if the change is intended"
        );
        let v: serde_json::Value = serde_json::from_str(golden).unwrap();
        assert_eq!(v["master_found"], true);
    }

    #[test]
    fn cluster_flag_overrides_the_config() {
        let args = ProbeArgs {
            interface: "eth0".into(),
            timeout: 1,
            json: false,
            config: Some("/nonexistent/cluster-lab.toml".into()),
            cluster: Some("lab".into()),
        };
        let (name, key) = args.cluster().unwrap();
        assert_eq!(name, "lab");
        assert!(key.is_none(), "--cluster alone knows no secret");
    }

    #[test]
    fn a_config_with_the_secret_gives_the_marker_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster-lab.toml");
        std::fs::write(
            &path,
            "[cluster]\nname = \"lab\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        let args = ProbeArgs {
            interface: "eth0".into(),
            timeout: 1,
            json: false,
            config: Some(path),
            cluster: None,
        };
        let (name, key) = args.cluster().unwrap();
        assert_eq!(name, "lab");
        assert!(key.is_some());
    }

    #[test]
    fn a_marker_that_does_not_verify_is_an_impostor_not_the_master() {
        let mut forged = offer(1, 101, ours("lab"));
        forged.verified = Some(false);
        let report = Report::new("eth0.200", "lab", Duration::from_secs(3), &[forged]);
        assert!(!report.master_found);
        assert_eq!(exit_code(&report), 1);
        assert!(
            text(&report).contains("does not verify"),
            "{}",
            text(&report)
        );
        assert!(json(&report).contains("\"impostor\""), "{}", json(&report));
        let mut genuine = offer(1, 101, ours("lab"));
        genuine.verified = Some(true);
        let report = Report::new("eth0.200", "lab", Duration::from_secs(3), &[genuine]);
        assert!(report.master_found);
    }

    #[test]
    fn missing_explicit_config_is_an_error_naming_the_file() {
        let args = ProbeArgs {
            interface: "eth0".into(),
            timeout: 1,
            json: false,
            config: Some("/nonexistent/cluster-lab.toml".into()),
            cluster: None,
        };
        let err = format!("{:#}", args.cluster().unwrap_err());
        assert!(err.contains("/nonexistent/cluster-lab.toml"), "{err}");
    }
}
