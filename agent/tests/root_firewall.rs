//! Root tier: the firewall ruleset first boot renders, loaded by `firewall::load` with the real `nft` into a
//! machine's network namespace, against real sockets. The machine has a home-LAN link (`clfw0`) and a VLAN link
//! named as the VLAN would be (`clfw0.200`, a veth: this host has no 802.1Q). A laptop on the home LAN has a static
//! route to the VLAN's subnet through the machine; a peer sits on the VLAN.
//!
//! Every reachability is measured first without the firewall, so each "refused" below is the firewall's doing:
//! from the home LAN only SSH and Consul's HTTP port answer, nothing addressed to a VLAN address does, VXLAN and
//! claims are not delivered, and the machine routes nothing into the VLAN; from the VLAN the cluster's ports
//! answer. Loading again replaces the table and leaves another table (as Docker's would be) alone.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use cluster_lab::config::Settings;
use cluster_lab::host::firewall;
use support::{require_tool, Lab, Netns};

const MACHINE_LAN: &str = "10.99.0.1";
const LAPTOP_LAN: &str = "10.99.0.2";
const MACHINE_VLAN: &str = "192.168.200.1";
const PEER_VLAN: &str = "192.168.200.101";
/// How long a connection attempt may take before it counts as refused (dropped packets time out).
const PATIENCE: Duration = Duration::from_millis(800);

/// TCP ports the test listens on in the machine: SSH, Consul HTTP, Consul RPC, Swarm management and gossip.
const TCP: [u16; 5] = [22, 8500, 8300, 2377, 7946];
/// UDP ports: VXLAN and election claims.
const UDP: [u16; 2] = [4789, 6247];

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}").parse().unwrap()
}

/// Whether a TCP connection from `from` to `to` is accepted.
fn connects(from: &Netns, to: SocketAddr) -> bool {
    from.within(move || TcpStream::connect_timeout(&to, PATIENCE).is_ok())
}

/// Whether a datagram from `from` to `to` is delivered to `socket` (the machine's listener on that port).
fn delivered(from: &Netns, to: SocketAddr, socket: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    // What earlier checks left.
    socket.set_nonblocking(true).unwrap();
    while socket.recv(&mut buf).is_ok() {}
    socket.set_nonblocking(false).unwrap();
    let payload = format!("to {to}");
    from.within(move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(payload.as_bytes(), to).unwrap();
    });
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    matches!(socket.recv(&mut buf), Ok(n) if buf[..n] == *format!("to {to}").as_bytes())
}

/// Everything the laptop and the peer can reach, one line each: `who → address:port proto yes|no`.
fn reach(laptop: &Netns, peer: &Netns, udp: &[UdpSocket]) -> Vec<String> {
    let mut seen = Vec::new();
    for (who, ns, targets) in [
        ("laptop", laptop, vec![MACHINE_LAN, MACHINE_VLAN, PEER_VLAN]),
        ("peer", peer, vec![MACHINE_VLAN]),
    ] {
        for ip in targets {
            for port in TCP {
                // The peer is reached through the machine (forwarding) on one port only.
                if ip == PEER_VLAN && port != 2377 {
                    continue;
                }
                let yes = connects(ns, addr(ip, port));
                seen.push(format!(
                    "{who} → {ip}:{port}/tcp {}",
                    if yes { "yes" } else { "no" }
                ));
            }
            if ip == PEER_VLAN {
                continue;
            }
            for (port, socket) in UDP.iter().zip(udp) {
                let yes = delivered(ns, addr(ip, *port), socket);
                seen.push(format!(
                    "{who} → {ip}:{port}/udp {}",
                    if yes { "yes" } else { "no" }
                ));
            }
        }
    }
    seen
}

fn nft(ns: &Netns, args: &[&str]) -> String {
    support::run(&mut ns.nsenter(firewall::NFT, args))
}

#[test]
fn from_the_home_lan_only_ssh_and_consul_http_answer_and_the_vlan_keeps_its_ports() {
    require_tool(firewall::NFT, "install the Debian package nftables");
    let mut lab = Lab::new("fw");
    let (machine, laptop, peer) = (lab.netns("machine"), lab.netns("laptop"), lab.netns("peer"));
    lab.veth(&machine, "clfw0", &laptop, "lap0");
    lab.veth(&machine, "clfw0.200", &peer, "peer0");
    machine.add_addr("clfw0", &format!("{MACHINE_LAN}/24"));
    machine.add_addr("clfw0.200", &format!("{MACHINE_VLAN}/24"));
    laptop.add_addr("lap0", &format!("{LAPTOP_LAN}/24"));
    peer.add_addr("peer0", &format!("{PEER_VLAN}/24"));
    // The laptop's static route into the VLAN, and the machine routing (Docker turns forwarding on).
    laptop.ip(["route", "add", "192.168.200.0/24", "via", MACHINE_LAN]);
    peer.ip(["route", "add", "10.99.0.0/24", "via", MACHINE_VLAN]);
    support::run(&mut machine.nsenter("sysctl", ["-q", "-w", "net.ipv4.ip_forward=1"]));

    let _tcp: Vec<TcpListener> = machine.within(|| {
        TCP.iter()
            .map(|p| TcpListener::bind(addr("0.0.0.0", *p)).unwrap())
            .collect()
    });
    let udp: Vec<UdpSocket> = machine.within(|| {
        UDP.iter()
            .map(|p| UdpSocket::bind(addr("0.0.0.0", *p)).unwrap())
            .collect()
    });
    let _peer_swarm = peer.within(|| TcpListener::bind(addr("0.0.0.0", 2377)).unwrap());

    // Without the firewall everything answers: the checks below can fail.
    let open = reach(&laptop, &peer, &udp);
    let closed: Vec<&String> = open.iter().filter(|l| l.ends_with(" no")).collect();
    assert!(
        closed.is_empty(),
        "without a firewall, unreachable: {closed:#?}"
    );

    // Another table with a base chain on the same hook, as Docker's iptables-nft rules are.
    nft(
        &machine,
        &["add table ip other; add chain ip other input { type filter hook input priority 0; policy accept; }"],
    );

    let mut net = Settings::default().network;
    net.interface = "clfw0".into();
    assert_eq!(net.vlan_interface(), "clfw0.200");
    let file = firewall::render(&net).unwrap();
    let dir = lab.subdir("root");
    file.install(&dir).unwrap();
    let path = file.target(&dir);
    machine
        .block_on({
            let path = path.clone();
            async move { firewall::load(&path).await }
        })
        .unwrap_or_else(|e| panic!("{e}"));

    let expected: Vec<String> = [
        // The home LAN: SSH and Consul's HTTP port on the LAN address, nothing else.
        "laptop → 10.99.0.1:22/tcp yes",
        "laptop → 10.99.0.1:8500/tcp yes",
        "laptop → 10.99.0.1:8300/tcp no",
        "laptop → 10.99.0.1:2377/tcp no",
        "laptop → 10.99.0.1:7946/tcp no",
        "laptop → 10.99.0.1:4789/udp no",
        "laptop → 10.99.0.1:6247/udp no",
        // Through the static route to the machine's VLAN address: nothing at all.
        "laptop → 192.168.200.1:22/tcp no",
        "laptop → 192.168.200.1:8500/tcp no",
        "laptop → 192.168.200.1:8300/tcp no",
        "laptop → 192.168.200.1:2377/tcp no",
        "laptop → 192.168.200.1:7946/tcp no",
        "laptop → 192.168.200.1:4789/udp no",
        "laptop → 192.168.200.1:6247/udp no",
        // Routed through the machine into the VLAN: dropped.
        "laptop → 192.168.200.101:2377/tcp no",
        // The VLAN: every cluster port.
        "peer → 192.168.200.1:22/tcp yes",
        "peer → 192.168.200.1:8500/tcp yes",
        "peer → 192.168.200.1:8300/tcp yes",
        "peer → 192.168.200.1:2377/tcp yes",
        "peer → 192.168.200.1:7946/tcp yes",
        "peer → 192.168.200.1:4789/udp yes",
        "peer → 192.168.200.1:6247/udp yes",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(reach(&laptop, &peer, &udp), expected);

    // Loaded again (a later boot, a first boot run again): the same one table, the other table still there.
    let before = nft(&machine, &["list", "table", "inet", firewall::TABLE]);
    machine
        .block_on(async move { firewall::load(&path).await })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        nft(&machine, &["list", "table", "inet", firewall::TABLE]),
        before
    );
    let tables = nft(&machine, &["list", "tables"]);
    assert_eq!(
        tables.lines().collect::<Vec<_>>(),
        ["table ip other", &format!("table inet {}", firewall::TABLE)],
        "{tables}"
    );
}
