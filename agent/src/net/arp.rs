//! ARP probe (RFC 5227 style, sender address 0.0.0.0) for the master address before a candidate claims it.
//!
//! Done by iputils `arping -D`, which sends the probes from a raw socket and exits 0 when nobody answered for the
//! address and 1 when someone holds it.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::command::{output, CommandError};

/// Result of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpProbe {
    Free,
    Taken,
}

#[derive(Debug, thiserror::Error)]
pub enum ArpError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(
        "{command} exited {code:?}: {stderr} (is iputils-arping installed and {interface} up?)"
    )]
    Unexpected {
        command: String,
        interface: String,
        code: Option<i32>,
        stderr: String,
    },
}

/// Probe `address` on `interface`, sending `count` probes one second apart.
pub async fn probe(interface: &str, address: Ipv4Addr, count: u32) -> Result<ArpProbe, ArpError> {
    let count = count.max(1).to_string();
    let wait = (count.parse::<u64>().unwrap_or(1) + 1).to_string();
    let addr = address.to_string();
    let args = [
        "-D", "-q", "-c", &count, "-w", &wait, "-I", interface, &addr,
    ];
    let (command, out) = output("arping", args).await?;
    match out.status.code() {
        Some(0) => Ok(ArpProbe::Free),
        Some(1) if out.stderr.is_empty() => Ok(ArpProbe::Taken),
        code => Err(ArpError::Unexpected {
            command,
            interface: interface.into(),
            code,
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        }),
    }
}

/// How long [`probe`] takes at most for `count` probes.
pub fn probe_time(count: u32) -> Duration {
    Duration::from_secs(u64::from(count.max(1)) + 1)
}
