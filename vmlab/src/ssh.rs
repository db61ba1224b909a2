//! SSH into the VMs from the home LAN side (inside the cluster's namespace), with the cluster's own
//! test key: generated once per cluster in its state directory and flashed onto every VM's card.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::host;

/// The key pair `name` in `dir` (created when missing); returns the private key's path.
pub fn keygen(dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let key = dir.join(name);
    if !key.exists() {
        host::run(&mut host::command(
            "ssh-keygen",
            &[
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "cluster-lab-vm-test",
                "-f",
                &key.display().to_string(),
            ],
        ))
        .context("generating the cluster's test SSH key")?;
    }
    Ok(key)
}

/// The public half of a key made by [`keygen`].
pub fn public_key(key: &Path) -> Result<String> {
    let p = key.with_extension("pub");
    std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
}

/// How to reach the VMs.
#[derive(Debug, Clone)]
pub struct Ssh {
    pub netns: String,
    /// Keys offered in order (the key flashed in cluster-lab.toml).
    pub keys: Vec<PathBuf>,
    pub user: String,
}

impl Ssh {
    /// `ssh … user@ip -- remote` inside the namespace; host keys are new on every first boot, so they
    /// are neither checked nor remembered.
    pub fn command(&self, ip: &str, remote: &str) -> Command {
        let mut args = self.options(true);
        args.extend([format!("{}@{ip}", self.user), "--".into(), remote.into()]);
        host::in_netns(&self.netns, "ssh", &args)
    }

    /// An interactive login shell on the VM at `ip` (for a person at a terminal).
    pub fn interactive(&self, ip: &str) -> Command {
        let mut args = vec!["-t".to_string()];
        args.extend(self.options(false));
        args.push(format!("{}@{ip}", self.user));
        host::in_netns(&self.netns, "ssh", &args)
    }

    fn options(&self, batch: bool) -> Vec<String> {
        let mut o = Vec::new();
        for k in &self.keys {
            o.extend(["-i".to_string(), k.display().to_string()]);
        }
        let mut opt = |v: &str| o.extend(["-o".to_string(), v.to_string()]);
        if batch {
            opt("BatchMode=yes");
        }
        for v in [
            "IdentitiesOnly=yes",
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
            "ConnectTimeout=5",
            "ServerAliveInterval=5",
            "ServerAliveCountMax=3",
        ] {
            opt(v);
        }
        o
    }

    /// Run `remote` on the VM at `ip`; its stdout, or an error with the command, exit status and stderr.
    pub fn run(&self, ip: &str, remote: &str, limit: Duration) -> Result<String> {
        let out = host::output_within(&mut self.command(ip, remote), limit)?;
        if !out.status.success() {
            bail!(
                "`{remote}` on {}@{ip} failed ({}): {}",
                self.user,
                out.status,
                host::failure_text(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run `remote` as root on the VM at `ip`: through `sudo -n sh -c` unless the login is root.
    pub fn run_as_root(&self, ip: &str, remote: &str, limit: Duration) -> Result<String> {
        self.run(ip, &as_root(&self.user, remote), limit)
    }
}

/// `remote` wrapped to run as root when logged in as `user` (sudo, never prompting for a password).
pub fn as_root(user: &str, remote: &str) -> String {
    if user == "root" {
        remote.to_string()
    } else {
        format!("sudo -n sh -c {}", shell_quote(remote))
    }
}

/// One POSIX shell word that stands for `s` exactly.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_runs_inside_the_namespace_with_the_test_key() {
        let ssh = Ssh {
            netns: "clvm-lab".into(),
            keys: vec!["/s/ssh/id_ed25519".into()],
            user: "root".into(),
        };
        let line = host::render(&ssh.command("192.0.2.11", "docker node ls"));
        assert!(
            line.starts_with("ip netns exec clvm-lab ssh -i /s/ssh/id_ed25519 "),
            "{line}"
        );
        assert!(
            line.ends_with(" root@192.0.2.11 -- 'docker node ls'"),
            "{line}"
        );
        assert!(line.contains("BatchMode=yes"), "{line}");
    }

    #[test]
    fn root_commands_go_through_sudo_unless_logged_in_as_root() {
        assert_eq!(as_root("root", "ss -lnp"), "ss -lnp");
        assert_eq!(
            as_root("cluster", "echo 'a b'"),
            r#"sudo -n sh -c 'echo '\''a b'\'''"#
        );
        // The quoted word reads back as the original through a real shell.
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("printf %s {}", shell_quote("it's a 'b' \\ $x")),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a 'b' \\ $x");
    }
}
