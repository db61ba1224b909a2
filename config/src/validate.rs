//! Steps 2 and 3: fill in defaults, then check the rules that involve several keys, producing [`Settings`].

use std::net::Ipv4Addr;
use std::ops::Range;
use std::time::Duration;

use ipnetwork::Ipv4Network;
use toml::Spanned;

use super::duration::format_duration;
use super::types::AddrRange;
use super::wire::{WireCluster, WireDhcp, WireFile, WireNetwork, WireNode};
use super::{ClusterSettings, DhcpSettings, NetworkSettings, NodeSettings, Settings};

/// Shortest lease accepted: clients renew at half the lease time, so shorter leases only make noise.
pub const LEASE_TIME_MIN: Duration = Duration::from_secs(60);
/// Longest lease accepted.
pub const LEASE_TIME_MAX: Duration = Duration::from_secs(30 * 86_400);
/// Longest time a DECLINEd address may stay out of the pool.
pub const DECLINE_QUARANTINE_MAX: Duration = Duration::from_secs(86_400);
/// Most DNS servers handed out.
pub const DNS_MAX: usize = 8;

/// A rule broken by a value (or by a default that a value conflicts with).
#[derive(Debug)]
pub struct Problem {
    /// Where in the file; `None` only if no key involved was written in the file.
    pub span: Option<Range<usize>>,
    pub key: String,
    pub message: String,
}

fn problem(span: Option<Range<usize>>, key: impl Into<String>, message: String) -> Problem {
    Problem {
        span,
        key: key.into(),
        message,
    }
}

fn span<T>(v: &Option<Spanned<T>>) -> Option<Range<usize>> {
    v.as_ref().map(Spanned::span)
}

fn value<T: Clone, U>(v: &Option<Spanned<T>>, f: impl FnOnce(T) -> U, default: U) -> U {
    v.as_ref().map_or(default, |s| f(s.get_ref().clone()))
}

/// Build validated settings from the file as written, defaults filled in.
pub fn settings(wire: WireFile) -> Result<Settings, Problem> {
    let defaults = Settings::default();
    let cluster = cluster(wire.cluster.unwrap_or_default(), defaults.cluster);
    let node = node(wire.node.unwrap_or_default(), defaults.node);
    let wire_net = wire.network.unwrap_or_default();
    let network = network(&wire_net, defaults.network)?;
    let dhcp = dhcp(
        &wire.dhcp.unwrap_or_default(),
        &wire_net,
        &network,
        defaults.dhcp,
    )?;
    Ok(Settings {
        cluster,
        node,
        network,
        dhcp,
    })
}

fn cluster(w: WireCluster, d: ClusterSettings) -> ClusterSettings {
    ClusterSettings {
        name: value(&w.name, |n| n.0, d.name),
        secret: value(&w.secret, Some, d.secret),
    }
}

fn node(w: WireNode, d: NodeSettings) -> NodeSettings {
    NodeSettings {
        hostname: value(&w.hostname, Some, d.hostname),
        role: value(&w.role, |r| r, d.role),
        ssh_authorized_keys: value(&w.ssh_authorized_keys, |keys| keys, d.ssh_authorized_keys),
        password_hash: value(&w.password_hash, |p| Some(p.0), d.password_hash),
    }
}

/// The first usable host of `net` (the default master address).
pub fn first_host(net: Ipv4Network) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// The DHCP range used when `dhcp.range` is not set: hosts 101–200 when the subnet is a /24 or larger,
/// otherwise every host after the first (which is the default master address).
pub fn default_range(net: Ipv4Network) -> AddrRange {
    let base = u32::from(net.network());
    if net.prefix() <= 24 {
        AddrRange {
            start: Ipv4Addr::from(base + 101),
            end: Ipv4Addr::from(base + 200),
        }
    } else {
        AddrRange {
            start: Ipv4Addr::from(base + 2),
            end: Ipv4Addr::from(u32::from(net.broadcast()) - 1),
        }
    }
}

/// Inside the subnet and neither its network nor its broadcast address.
fn usable_host(net: Ipv4Network, ip: Ipv4Addr, subnet_is_default: bool) -> Result<(), String> {
    if !net.contains(ip) {
        let note = if subnet_is_default {
            " (the default network.subnet)"
        } else {
            ""
        };
        Err(format!("{ip} is outside the subnet {net}{note}"))
    } else if ip == net.network() {
        Err(format!("{ip} is the network address of {net}, not a host"))
    } else if ip == net.broadcast() {
        Err(format!(
            "{ip} is the broadcast address of {net}, not a host"
        ))
    } else {
        Ok(())
    }
}

fn network(w: &WireNetwork, d: NetworkSettings) -> Result<NetworkSettings, Problem> {
    let interface = value(&w.interface, |i| i.0, d.interface);
    let vlan = value(&w.vlan, |v| v.0, d.vlan);
    let subnet = value(&w.subnet, |s| s.0, d.subnet);
    let master = value(&w.master, |m| m.0, first_host(subnet));

    if let Err(why) = usable_host(subnet, master, w.subnet.is_none()) {
        return Err(problem(
            span(&w.master),
            "network.master",
            format!(
                "{why}; give a host address inside {subnet}, e.g. {}",
                first_host(subnet)
            ),
        ));
    }

    Ok(NetworkSettings {
        interface,
        vlan,
        subnet,
        master,
    })
}

fn dhcp(
    w: &WireDhcp,
    wn: &WireNetwork,
    net: &NetworkSettings,
    d: DhcpSettings,
) -> Result<DhcpSettings, Problem> {
    let range = value(&w.range, |r| r, default_range(net.subnet));
    range_in_subnet(w, wn, net, range)?;
    range_leaves_out_the_master(w, wn, net, range)?;
    let router = router_outside_the_range(w, wn, net, range)?;
    let dns = dns_servers(w, d.dns)?;
    let lease_time = lease_time(w, d.lease_time)?;
    let decline_quarantine = decline_quarantine(w, d.decline_quarantine)?;
    Ok(DhcpSettings {
        range_start: range.start,
        range_end: range.end,
        lease_time,
        router,
        dns,
        lease_file: value(&w.lease_file, |p| p.0, d.lease_file),
        decline_quarantine,
    })
}

/// `dhcp.range`: both ends usable host addresses of the subnet.
fn range_in_subnet(
    w: &WireDhcp,
    wn: &WireNetwork,
    net: &NetworkSettings,
    range: AddrRange,
) -> Result<(), Problem> {
    let subnet = net.subnet;
    let Some(r) = &w.range else {
        return Ok(());
    };
    for ip in [range.start, range.end] {
        if let Err(why) = usable_host(subnet, ip, wn.subnet.is_none()) {
            let msg = if subnet.contains(ip) {
                format!("{range}: {why}; give a range of host addresses inside {subnet}")
            } else {
                format!(
                    "{range} is outside the subnet {subnet}{}; give a range inside it",
                    if wn.subnet.is_none() {
                        " (the default network.subnet)"
                    } else {
                        ""
                    }
                )
            };
            return Err(problem(Some(r.span()), "dhcp.range", msg));
        }
    }
    Ok(())
}

/// The master's address stays outside the DHCP range (blamed on whichever of the two was set).
fn range_leaves_out_the_master(
    w: &WireDhcp,
    wn: &WireNetwork,
    net: &NetworkSettings,
    range: AddrRange,
) -> Result<(), Problem> {
    if !range.contains(net.master) {
        return Ok(());
    }
    Err(match (&w.range, &wn.master) {
        (Some(r), _) => problem(
            Some(r.span()),
            "dhcp.range",
            format!(
                "{range} contains the master address {}; the master's address must stay \
                 outside the DHCP range: move the range or network.master",
                net.master
            ),
        ),
        (None, m) => problem(
            span(m),
            "network.master",
            format!(
                "{} is inside the default DHCP range {range}; choose another master address \
                 or set dhcp.range so it leaves the master out",
                net.master
            ),
        ),
    })
}

/// `dhcp.router`: a host of the subnet outside the DHCP range, if set.
fn router_outside_the_range(
    w: &WireDhcp,
    wn: &WireNetwork,
    net: &NetworkSettings,
    range: AddrRange,
) -> Result<Option<Ipv4Addr>, Problem> {
    let Some(at) = &w.router else {
        return Ok(None);
    };
    let ip = at.get_ref().0;
    let why = usable_host(net.subnet, ip, wn.subnet.is_none())
        .err()
        .or_else(|| {
            range
                .contains(ip)
                .then(|| format!("{ip} is inside the DHCP range {range}"))
        });
    match why {
        None => Ok(Some(ip)),
        Some(why) => Err(problem(
            Some(at.span()),
            "dhcp.router",
            format!(
                "{why}; the router must be a host in {} outside the DHCP range \
                 (often the master, {}), or leave the key out for no router option",
                net.subnet, net.master
            ),
        )),
    }
}

/// `dhcp.dns`: at most [`DNS_MAX`] unicast addresses.
fn dns_servers(w: &WireDhcp, default: Vec<Ipv4Addr>) -> Result<Vec<Ipv4Addr>, Problem> {
    let dns: Vec<Ipv4Addr> = value(
        &w.dns,
        |v| v.into_iter().map(|a| a.into_inner().0).collect(),
        default,
    );
    if dns.len() > DNS_MAX {
        return Err(problem(
            span(&w.dns),
            "dhcp.dns",
            format!("{} DNS servers given; give at most {DNS_MAX}", dns.len()),
        ));
    }
    for (i, entry) in w.dns.iter().flat_map(|l| l.get_ref().iter()).enumerate() {
        let ip = entry.get_ref().0;
        if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
            return Err(problem(
                Some(entry.span()),
                format!("dhcp.dns[{i}]"),
                format!(
                    "{ip} cannot be a DNS server; give unicast addresses such as \"192.168.200.1\""
                ),
            ));
        }
    }
    Ok(dns)
}

/// `dhcp.lease_time`: between [`LEASE_TIME_MIN`] and [`LEASE_TIME_MAX`].
fn lease_time(w: &WireDhcp, default: Duration) -> Result<Duration, Problem> {
    let lease_time = value(&w.lease_time, |t| t.0, default);
    if !(LEASE_TIME_MIN..=LEASE_TIME_MAX).contains(&lease_time) {
        return Err(problem(
            span(&w.lease_time),
            "dhcp.lease_time",
            format!(
                "{} is not a sensible lease time; give {} to {}, e.g. \"1h\"",
                format_duration(lease_time),
                format_duration(LEASE_TIME_MIN),
                format_duration(LEASE_TIME_MAX)
            ),
        ));
    }
    Ok(lease_time)
}

/// `dhcp.decline_quarantine`: at most [`DECLINE_QUARANTINE_MAX`].
fn decline_quarantine(w: &WireDhcp, default: Duration) -> Result<Duration, Problem> {
    let quarantine = value(&w.decline_quarantine, |t| t.0, default);
    if quarantine > DECLINE_QUARANTINE_MAX {
        return Err(problem(
            span(&w.decline_quarantine),
            "dhcp.decline_quarantine",
            format!(
                "{} is too long; give 0s to {}, e.g. \"10m\"",
                format_duration(quarantine),
                format_duration(DECLINE_QUARANTINE_MAX)
            ),
        ));
    }
    Ok(quarantine)
}
