//! Docker on this machine: the Swarm (init, join, the join token in Consul), the Swarm's ingress network,
//! `/etc/docker/daemon.json`, the container images the card carries, and the registry on the master.

pub mod daemon_json;
pub mod images;
pub mod ingress;
pub mod join_token;
pub mod registry;
pub mod swarm;

/// The command that lets a laptop on the home LAN drive this cluster's Docker through SSH (no TCP socket, no
/// TLS): the Docker CLI runs `docker system dial-stdio` on the master as the login `user` (`cluster`, or the name
/// the card's user-data gave it; a member of group docker).
pub fn laptop_context_command(user: &str, master_lan: &str) -> String {
    format!(
        "docker context create cluster-lab --docker host=ssh://{user}@{master_lan} && docker context use cluster-lab"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_laptop_command_uses_ssh_as_the_cluster_user() {
        assert_eq!(
            super::laptop_context_command("cluster", "192.0.2.11"),
            "docker context create cluster-lab --docker host=ssh://cluster@192.0.2.11 && docker context use cluster-lab"
        );
    }
}
