//! The effective settings written back as `cluster-lab.toml` (what `cluster-lab config check` prints).
//!
//! The output is a valid file that parses back to the same settings, except that the secret is never
//! printed: it appears as a comment saying `<set>`.

use std::fmt::Write;

use super::duration::format_duration;
use super::{Role, Settings};

/// Quote `s` as a TOML basic string.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn role(r: Role) -> &'static str {
    match r {
        Role::Auto => "auto",
        Role::Master => "master",
        Role::Node => "node",
    }
}

fn string_array(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().map(|s| quote(&s)).collect();
    if items.is_empty() {
        "[]".to_owned()
    } else if items.iter().map(String::len).sum::<usize>() < 60 {
        format!("[{}]", items.join(", "))
    } else {
        let mut out = String::from("[\n");
        for item in items {
            let _ = writeln!(out, "    {item},");
        }
        out.push(']');
        out
    }
}

impl Settings {
    /// Every setting as TOML, defaults filled in, the secret redacted; unset optional keys appear as comments.
    pub fn to_toml(&self) -> String {
        let mut o = String::new();
        let (c, n, net, d) = (&self.cluster, &self.node, &self.network, &self.dhcp);
        // `write!` into a String cannot fail.
        let _ = writeln!(o, "version = 1");
        let _ = writeln!(o, "\n[cluster]");
        let _ = writeln!(o, "name = {}", quote(&c.name));
        match &c.secret {
            Some(_) => {
                let _ = writeln!(o, "# secret = \"<set>\"  (redacted)");
            }
            None => {
                let _ = writeln!(o, "# secret: not set");
            }
        }
        let _ = writeln!(o, "\n[node]");
        match &n.hostname {
            Some(h) => {
                let _ = writeln!(o, "hostname = {}", quote(h.as_str()));
            }
            None => {
                let _ = writeln!(o, "# hostname: not set (the system's hostname is kept)");
            }
        }
        let _ = writeln!(o, "role = {}", quote(role(n.role)));
        let _ = writeln!(
            o,
            "ssh_authorized_keys = {}",
            string_array(n.ssh_authorized_keys.iter().map(|k| k.as_str().to_owned()))
        );
        match &n.password_hash {
            Some(h) => {
                let _ = writeln!(o, "password_hash = {}", quote(h));
            }
            None => {
                let _ = writeln!(o, "# password_hash: not set (no password login)");
            }
        }
        let _ = writeln!(o, "\n[network]");
        let _ = writeln!(o, "interface = {}", quote(&net.interface));
        let _ = writeln!(o, "vlan = {}", net.vlan);
        let _ = writeln!(o, "subnet = {}", quote(&net.subnet.to_string()));
        let _ = writeln!(o, "master = {}", quote(&net.master.to_string()));
        let _ = writeln!(o, "\n[dhcp]");
        let _ = writeln!(
            o,
            "range = {}",
            quote(&format!("{}-{}", d.range_start, d.range_end))
        );
        let _ = writeln!(o, "lease_time = {}", quote(&format_duration(d.lease_time)));
        match d.router {
            Some(r) => {
                let _ = writeln!(o, "router = {}", quote(&r.to_string()));
            }
            None => {
                let _ = writeln!(o, "# router: not set (no router option is sent)");
            }
        }
        let _ = writeln!(
            o,
            "dns = {}",
            string_array(d.dns.iter().map(|a| a.to_string()))
        );
        let _ = writeln!(o, "lease_file = {}", quote(&d.lease_file.to_string_lossy()));
        let _ = writeln!(
            o,
            "decline_quarantine = {}",
            quote(&format_duration(d.decline_quarantine))
        );
        o
    }
}
