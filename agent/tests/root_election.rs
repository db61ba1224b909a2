//! Root tier: five candidates powered on at the same instant, each in its own network namespace on one bridge
//! (standing in for the VLAN), run the real election: DHCP probe, claims over UDP broadcast, `arping -D` for the
//! master address. Exactly one ends as master (the lowest MAC); the others hear its claim and become nodes.
//!
//! A rogue on the same bridge, with a lower MAC than any of them, keeps claiming to be the master — signed with
//! another cluster's secret, in the unsigned format of older agents — and replays every genuine claim it hears.
//! None of that counts: the genuine machines still elect exactly one master among themselves.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use cluster_lab::election::claim::ClaimKey;
use cluster_lab::election::socket::{ClaimSocket, PORT};
use cluster_lab::election::switch_check;
use cluster_lab::election::{Claim, ClusterRole, Mac, Timing};
use cluster_lab::firstboot::{announce_master, elect, ElectionError, ElectionSetup, HomeLan};
use support::{require_tool, Lab};

const MASTER: &str = "192.0.2.1";
const SECRET: &str = "root-election-secret-0123456789abcdef";

#[test]
fn five_candidates_powered_on_together_end_with_exactly_one_master() {
    let mut lab = Lab::new("elect");
    require_tool(
        "arping",
        "install iputils-arping (listed in ci/apt-packages.txt)",
    );
    let sw = lab.switch("sw");
    // The home LAN beside the VLAN: claims go there untagged too (the switch check), and with a switch that carries
    // both, that must not stop anyone.
    let home = lab.switch("home");
    // Five, as a rack powered from one strip; the lowest MAC in the middle of the start order: the winner must be
    // chosen by MAC, not by start order.
    let candidates = [
        ("a", "02:00:00:00:00:0c"),
        ("b", "02:00:00:00:00:0b"),
        ("c", "02:00:00:00:00:0a"),
        ("d", "02:00:00:00:00:0e"),
        ("e", "02:00:00:00:00:0d"),
    ];
    let mut spaces = Vec::new();
    for (name, mac) in candidates {
        let ns = lab.netns(name);
        let inside = format!("clel{name}0");
        lab.plug(&sw, &format!("clel{name}1"), &ns, &inside);
        lab.plug(&home, &format!("clel{name}3"), &ns, &format!("clel{name}2"));
        ns.ip(["link", "set", &inside, "address", mac]);
        spaces.push((ns, inside, mac.parse::<Mac>().unwrap()));
    }
    let rogue = lab.netns("rogue");
    lab.plug(&sw, "clelr1", &rogue, "clelr0");
    rogue.ip(["link", "set", "clelr0", "address", "02:00:00:00:00:01"]);
    // Let the veth carriers come up and the bridge ports reach forwarding.
    std::thread::sleep(Duration::from_secs(1));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rogue_thread = {
        let (ns, stop) = (rogue.clone(), stop.clone());
        std::thread::spawn(move || ns.block_on(forge_and_replay("clelr0".into(), stop)))
    };

    // All candidates at once, each on a thread of its own inside its namespace.
    let roles: Vec<ClusterRole> = std::thread::scope(|s| {
        let threads: Vec<_> = spaces
            .iter()
            .map(|(ns, interface, mac)| {
                let future = candidate(ns.name.clone(), interface.clone(), *mac, SECRET);
                s.spawn(move || ns.block_on(future))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (forged, replayed) = rogue_thread.join().unwrap();
    assert!(forged > 10, "the rogue sent {forged} forged claims");
    assert!(
        replayed > 0,
        "the rogue heard and replayed {replayed} genuine claims"
    );

    let masters: Vec<_> = roles
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == ClusterRole::Master)
        .collect();
    assert_eq!(masters.len(), 1, "roles {roles:?}");
    assert_eq!(
        masters[0].0, 2,
        "the lowest MAC (candidate c) wins: {roles:?}"
    );
}

/// One machine (its VLAN link `clel<x>0`, its home-LAN link `clel<x>2`): elect; a master takes the address and announces itself for a while, as firstboot does until its
/// DHCP service answers.
async fn candidate(ns: String, interface: String, mac: Mac, secret: &'static str) -> ClusterRole {
    let lan = format!("{}2", interface.trim_end_matches('0'));
    let role = elect_in(&ns, &interface, Some(&lan), mac, secret)
        .await
        .unwrap_or_else(|e| panic!("{ns}: {e}"));
    if role == ClusterRole::Master {
        let socket = ClaimSocket::bind(&interface, PORT, ClaimKey::from_secret(secret)).unwrap();
        cluster_lab::command::run(
            "ip",
            ["addr", "add", &format!("{MASTER}/24"), "dev", &interface],
        )
        .await
        .unwrap();
        let claim = Claim {
            cluster: "root-test".into(),
            mac,
            master: true,
        };
        let _ = tokio::time::timeout(
            Duration::from_secs(15),
            announce_master(&socket, &claim, Duration::from_millis(500)),
        )
        .await;
    }
    role
}

/// The election as first boot runs it, on `interface` in namespace `ns`, with the real DHCP probe, for cluster
/// `root-test` under `secret`; with `home_lan`, the claims also go untagged there (the switch check).
async fn elect_in(
    ns: &str,
    interface: &str,
    home_lan: Option<&str>,
    mac: Mac,
    secret: &'static str,
) -> Result<ClusterRole, ElectionError> {
    let setup = ElectionSetup {
        interface: interface.to_owned(),
        cluster: "root-test".into(),
        mac,
        master: MASTER.parse::<Ipv4Addr>().unwrap(),
        timing: Timing::default(),
        arp_count: 2,
        give_up_after: Duration::from_secs(90),
    };
    let socket = ClaimSocket::bind(interface, PORT, ClaimKey::from_secret(secret)).unwrap();
    let lan_socket = home_lan.map(|lan| {
        ClaimSocket::bind(lan, switch_check::PORT, ClaimKey::from_secret(secret)).unwrap()
    });
    let lan = lan_socket.as_ref().map(|socket| HomeLan {
        socket,
        vlan_id: 200,
    });
    let probe_ns = ns.to_owned();
    let probe_if = interface.to_owned();
    elect(&setup, &socket, lan, move || {
        let (ns, interface) = (probe_ns.clone(), probe_if.clone());
        async move {
            // The real probe, as the `cluster-lab probe` binary (run through `ip netns exec`, which also gives it the
            // namespace's /sys). A master's dhcpd answers with exit status 0; none: 1.
            let args = [
                "netns",
                "exec",
                &ns,
                env!("CARGO_BIN_EXE_cluster-lab"),
                "probe",
                "--interface",
                &interface,
                "--cluster",
                "root-test",
                "--timeout",
                "3",
            ];
            let (command, out) = cluster_lab::command::output("ip", args).await?;
            match out.status.code() {
                Some(0) => Ok(true),
                Some(1) => Ok(false),
                _ => anyhow::bail!("{command}: {}", String::from_utf8_lossy(&out.stderr)),
            }
        }
    })
    .await
}

/// Two clusters left at the same name, each with its own secret (flashed from two images), on one home LAN: each
/// has its own VLAN (a bridge each here), but their untagged claims meet on the home LAN. Each elects exactly one
/// master of its own, the lowest MAC among its own machines, although the other cluster's lowest MAC is lower still;
/// and the other cluster's claims heard untagged do not make anyone stop as if its switch dropped tags.
#[test]
fn two_clusters_with_the_same_name_on_one_home_lan_form_two_clusters() {
    let mut lab = Lab::new("twin");
    require_tool(
        "arping",
        "install iputils-arping (listed in ci/apt-packages.txt)",
    );
    const OTHER_SECRET: &str = "root-election-other-cluster-fedcba9876543210";
    let home = lab.switch("home");
    let clusters = [
        (
            lab.switch("vlana"),
            SECRET,
            [("a1", "02:00:00:00:01:0a"), ("a2", "02:00:00:00:01:0c")],
        ),
        (
            lab.switch("vlanb"),
            OTHER_SECRET,
            [("b1", "02:00:00:00:01:0b"), ("b2", "02:00:00:00:01:0d")],
        ),
    ];
    let mut machines = Vec::new();
    for (vlan, secret, members) in &clusters {
        for (name, mac) in members {
            let ns = lab.netns(name);
            let inside = format!("cltw{name}0");
            lab.plug(vlan, &format!("cltw{name}1"), &ns, &inside);
            lab.plug(&home, &format!("cltw{name}3"), &ns, &format!("cltw{name}2"));
            ns.ip(["link", "set", &inside, "address", mac]);
            machines.push((ns, inside, mac.parse::<Mac>().unwrap(), *secret));
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let roles: Vec<ClusterRole> = std::thread::scope(|s| {
        let threads: Vec<_> = machines
            .iter()
            .map(|(ns, interface, mac, secret)| {
                let future = candidate(ns.name.clone(), interface.clone(), *mac, secret);
                s.spawn(move || ns.block_on(future))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    // a1 and b1, the lowest MAC of each: one master per cluster.
    assert_eq!(
        roles,
        [
            ClusterRole::Master,
            ClusterRole::Node,
            ClusterRole::Master,
            ClusterRole::Node
        ],
        "a1 a2 b1 b2"
    );
}

/// A switch that drops tagged frames between the master and a new machine: the new machine's VLAN side reaches no
/// one, its home-LAN side does. The master's real `cluster-lab dhcpd` answers its untagged claims, and the new machine
/// stops with the switch named instead of becoming a second master. A machine behind a switch that carries the VLAN,
/// sending the same untagged claims, becomes a node as before.
#[test]
fn a_machine_that_hears_its_master_only_untagged_stops_instead_of_becoming_a_second_master() {
    let mut lab = Lab::new("tags");
    require_tool(
        "arping",
        "install iputils-arping (listed in ci/apt-packages.txt)",
    );
    // Each machine names its links as a Pi does: eth0 untagged on the home LAN, eth0.200 on the VLAN (a veth of that
    // name stands in for the VLAN link, which this host's kernel cannot make).
    let (home, vlan, cut) = (lab.switch("home"), lab.switch("vlan"), lab.switch("cut"));
    let master = lab.netns("m");
    lab.plug(&home, "cltgm0", &master, "eth0");
    lab.plug(&vlan, "cltgm1", &master, "eth0.200");
    master.add_addr("eth0.200", support::servers::MASTER);
    let good = lab.netns("g");
    lab.plug(&home, "cltgg0", &good, "eth0");
    lab.plug(&vlan, "cltgg1", &good, "eth0.200");
    let cut_off = lab.netns("c");
    lab.plug(&home, "cltgc0", &cut_off, "eth0");
    // Its VLAN link ends at a switch port that forwards to nobody: tagged frames dropped.
    lab.plug(&cut, "cltgc1", &cut_off, "eth0.200");
    std::thread::sleep(Duration::from_secs(1));
    let dhcpd = master_dhcpd(&lab, &master);
    let master_mac = master.mac("eth0");

    let mac = |ns: &support::Netns| ns.mac("eth0").parse::<Mac>().unwrap();
    let (good_mac, cut_mac) = (mac(&good), mac(&cut_off));
    let good_name = good.name.clone();
    let role = good.block_on(async move {
        elect_in(&good_name, "eth0.200", Some("eth0"), good_mac, SECRET).await
    });
    assert!(
        matches!(role, Ok(ClusterRole::Node)),
        "behind a switch that carries the VLAN: {role:?}\n{}",
        dhcpd.report()
    );

    let cut_name = cut_off.name.clone();
    let started = std::time::Instant::now();
    let stopped = cut_off.block_on(async move {
        elect_in(&cut_name, "eth0.200", Some("eth0"), cut_mac, SECRET).await
    });
    let text = match stopped {
        Err(ElectionError::TagsDropped(e)) => e.to_string(),
        other => panic!(
            "behind a switch that drops tags: expected the switch check to stop the machine, got {other:?}\n{}",
            dhcpd.report()
        ),
    };
    assert!(
        text.contains(&format!("its master ({master_mac})")),
        "{text}"
    );
    assert!(text.contains("untagged on eth0"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped after {:?}",
        started.elapsed()
    );
    let log = dhcpd.daemon.log();
    assert!(
        log.contains("answering that this machine is the master"),
        "the master's dhcpd answered on the home LAN:\n{log}"
    );
}

/// A machine that remembers being the master (its first boot cut short by a power cut) or is configured as one looks
/// before it takes the master address: on a VLAN where another master was elected meanwhile, both its DHCP server
/// (with the cluster's secret) and the address in ARP answer; on a VLAN of its own, nothing does; a server of
/// another cluster on the same wire does not count.
#[test]
fn a_remembered_master_finds_a_master_elected_meanwhile_and_nothing_on_a_wire_of_its_own() {
    let mut lab = Lab::new("rmbr");
    require_tool(
        "arping",
        "install iputils-arping (listed in ci/apt-packages.txt)",
    );
    let (vlan, alone) = (lab.switch("vlan"), lab.switch("alone"));
    let master = lab.netns("m");
    lab.plug(&vlan, "clrmm1", &master, "eth0.200");
    master.add_addr("eth0.200", support::servers::MASTER);
    let back = lab.netns("b");
    lab.plug(&vlan, "clrmb1", &back, "eth0.200");
    let lone = lab.netns("l");
    lab.plug(&alone, "clrml1", &lone, "eth0.200");
    std::thread::sleep(Duration::from_secs(1));
    let dhcpd = master_dhcpd(&lab, &master);
    let master_ip: Ipv4Addr = support::servers::MASTER
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let probe = |ns: &support::Netns, cluster: &'static str, secret: &'static str| {
        ns.block_on(async move {
            cluster_lab::firstboot::master::probe_other_master(
                "eth0.200", cluster, secret, master_ip,
            )
            .await
        })
        .unwrap()
    };
    let found = probe(&back, "root-test", SECRET);
    assert_eq!(
        found,
        [
            "its DHCP server, marked with the cluster's secret".to_string(),
            format!("{master_ip} is taken (ARP)")
        ],
        "{}",
        dhcpd.report()
    );
    assert!(probe(&lone, "root-test", SECRET).is_empty());
    // Another cluster's master on the wire is not this cluster's master (its address still answers ARP).
    let other = probe(&back, "another-cluster", "another-secret-0123456789abcdef0");
    assert_eq!(other, [format!("{master_ip} is taken (ARP)")], "{other:?}");
}

/// The master's real `cluster-lab dhcpd` on its `eth0.200`, with this cluster's name and secret.
fn master_dhcpd(lab: &Lab, master: &support::Netns) -> support::servers::Dhcpd {
    support::servers::Dhcpd::start_with_secret(
        lab,
        "master",
        master,
        "eth0.200",
        "root-test",
        Some(SECRET),
    )
}

/// The rogue: every 100 ms a master claim from MAC 02:00:00:00:00:01 signed with another cluster's secret and one in
/// the old unsigned format; and every datagram it hears on the claim port, sent again. Returns how many forged
/// claims and replays it sent.
async fn forge_and_replay(
    interface: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (u32, u32) {
    use std::net::SocketAddrV4;
    let raw = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    raw.set_reuse_address(true).unwrap();
    raw.set_broadcast(true).unwrap();
    raw.bind_device(Some(interface.as_bytes())).unwrap();
    raw.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT).into())
        .unwrap();
    raw.set_nonblocking(true).unwrap();
    let socket = tokio::net::UdpSocket::from_std(raw.into()).unwrap();
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, PORT);
    let fake = Claim {
        cluster: "root-test".into(),
        mac: "02:00:00:00:00:01".parse().unwrap(),
        master: true,
    };
    let other_key = ClaimKey::from_secret("another-cluster-same-name-0123456789");
    let mut unsigned = b"CLAIM1\x01".to_vec();
    unsigned.extend_from_slice(&fake.mac.0);
    unsigned.push(9);
    unsigned.extend_from_slice(b"root-test");
    let (mut forged, mut replayed, mut counter) = (0u32, 0u32, u64::MAX / 2);
    let mut buf = [0u8; 512];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::select! {
            _ = tick.tick() => {
                counter += 1;
                socket.send_to(&fake.encode(&other_key, counter), to).await.unwrap();
                socket.send_to(&unsigned, to).await.unwrap();
                forged += 2;
            }
            got = socket.recv_from(&mut buf) => {
                let (n, from) = got.unwrap();
                // Not its own datagrams: only what the genuine candidates sent.
                let own = buf[..n] == unsigned[..] || buf[..n].starts_with(b"CLAIM2\x01\x02\x00\x00\x00\x00\x01");
                if !own && from.port() == PORT {
                    socket.send_to(&buf[..n], to).await.unwrap();
                    replayed += 1;
                }
            }
        }
    }
    (forged, replayed)
}
