//! Root tier: `cluster-lab dhcpd` against real DHCP clients in network namespaces.
//!
//! Topology of every test: a bridge (`sw`) joins the server namespace (`lab0`, 192.168.200.1/24, playing the
//! cluster VLAN interface) and the client namespaces (`eth0`). The server namespace has a second interface,
//! `home0` (198.51.100.1/24), playing the home LAN, with one client namespace (`home`) on it.

mod support;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use support::clients::{dhclient, dhcpcd, udhcpc, Client};
use support::servers::{probe, Dhcpd, LeaseState, MASTER, RANGE};
use support::{wait_for, Lab, Netns, LEASE_TIMEOUT};

const CLUSTER: &str = "lab";

/// The lab of one test. Fields drop in order: the server first, then the lab.
struct Topo {
    dhcpd: Dhcpd,
    clients: Vec<Netns>,
    home: Netns,
    sw: Netns,
    lab: Lab,
}

fn topo(id: &str, clients: usize) -> Topo {
    let mut lab = Lab::new(id);
    let sw = lab.switch("sw");
    let srv = lab.netns("srv");
    lab.plug(&sw, "p-srv", &srv, "lab0");
    srv.add_addr("lab0", MASTER);
    let home = lab.netns("home");
    lab.veth(&srv, "home0", &home, "eth0");
    srv.add_addr("home0", "198.51.100.1/24");
    let clients = (1..=clients)
        .map(|i| {
            let c = lab.netns(&format!("c{i}"));
            lab.plug(&sw, &format!("p-c{i}"), &c, "eth0");
            c
        })
        .collect();
    let dhcpd = Dhcpd::start(&lab, "dhcpd", &srv, "lab0", CLUSTER);
    Topo {
        dhcpd,
        clients,
        home,
        sw,
        lab,
    }
}

/// Wait until `client` has an address from the server's range on its interface.
fn wait_address(client: &Client, dhcpd: &Dhcpd) -> Ipv4Addr {
    wait_for(
        LEASE_TIMEOUT,
        &format!("{} to have an address in {RANGE:?}", client.name),
        || client.ns.addr_in(&client.interface, RANGE.0, RANGE.1),
        || format!("{}\n{}", client.report(), dhcpd.report()),
    )
}

/// Wait until the lease file holds a lease of `ip` to `mac` expiring after `after` (Unix seconds); return
/// its expiry.
fn wait_lease(dhcpd: &Dhcpd, ip: Ipv4Addr, mac: &str, after: u64, client: &Client) -> u64 {
    wait_for(
        LEASE_TIMEOUT,
        &format!("a lease of {ip} to {mac} expiring after {after} in the lease file"),
        || match dhcpd.leases().state(ip) {
            Some(LeaseState::Leased { hw, expires }) if hw == mac && expires > after => {
                Some(expires)
            }
            _ => None,
        },
        || format!("{}\n{}", client.report(), dhcpd.report()),
    )
}

/// Wait until the lease file records `ip` as released.
fn wait_released(dhcpd: &Dhcpd, ip: Ipv4Addr, client: &Client) {
    wait_for(
        LEASE_TIMEOUT,
        &format!("the release of {ip} in the lease file"),
        || (dhcpd.leases().state(ip) == Some(LeaseState::Released)).then_some(()),
        || format!("{}\n{}", client.report(), dhcpd.report()),
    );
}

/// Wait until `client` has no address from the range left.
fn wait_unconfigured(client: &Client, dhcpd: &Dhcpd) {
    wait_for(
        LEASE_TIMEOUT,
        &format!("{} to drop its address", client.name),
        || {
            client
                .ns
                .addr_in(&client.interface, RANGE.0, RANGE.1)
                .is_none()
                .then_some(())
        },
        || format!("{}\n{}", client.report(), dhcpd.report()),
    );
}

/// Let the clock pass a second boundary so a renewed lease has a later expiry than the first.
fn next_second() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// A one-client lab whose client has been given a lease. Fields drop in order: the client first, then the lab.
struct Bound {
    c: Client,
    t: Topo,
    mac: String,
    ip: Ipv4Addr,
    /// Expiry of the first lease in the lease file (Unix seconds).
    expires: u64,
}

impl Bound {
    /// Build the lab `id`, start a client with `start` on `eth0` of its one client namespace and wait until the
    /// client reports `event`, has an address from the range and the lease file holds its lease.
    fn new(
        id: &str,
        start: fn(&Lab, &str, &Netns, &str) -> Client,
        name: &str,
        event: &str,
    ) -> Bound {
        let t = topo(id, 1);
        let ns = &t.clients[0];
        let mac = ns.mac("eth0");
        let c = start(&t.lab, name, ns, "eth0");
        c.wait_event(LEASE_TIMEOUT, 0, &[event], || t.dhcpd.report());
        let ip = wait_address(&c, &t.dhcpd);
        let expires = wait_lease(&t.dhcpd, ip, &mac, 0, &c);
        Bound {
            c,
            t,
            mac,
            ip,
            expires,
        }
    }

    /// Do `act`, then wait up to `timeout` for the client to report one of `kinds`; returns that event.
    fn after(&self, timeout: Duration, act: impl FnOnce(&Client), kinds: &[&str]) -> String {
        let seen = self.c.events().len();
        act(&self.c);
        self.c
            .wait_event(timeout, seen, kinds, || self.t.dhcpd.report())
    }

    /// The lease file holds a lease of the same address expiring later than the first, and the client still
    /// has the address.
    fn assert_renewed(&self) {
        wait_lease(&self.t.dhcpd, self.ip, &self.mac, self.expires, &self.c);
        assert_eq!(
            self.t.clients[0].addr_in("eth0", RANGE.0, RANGE.1),
            Some(self.ip),
            "{}",
            self.c.report()
        );
    }

    /// `release` the lease; the client reports one of `kinds`, the lease file records the release and the
    /// address goes.
    fn assert_released(&self, release: impl FnOnce(&Client), kinds: &[&str]) {
        self.after(LEASE_TIMEOUT, release, kinds);
        wait_released(&self.t.dhcpd, self.ip, &self.c);
        wait_unconfigured(&self.c, &self.t.dhcpd);
    }
}

#[test]
fn dhclient_obtains_renews_and_releases_a_lease() {
    let b = Bound::new("dhcl", dhclient::start, "dhclient", "BOUND");

    // dhclient renews by itself at T1 (half the one-minute lease) with a unicast REQUEST.
    let ev = b.after(Duration::from_secs(90), |_| {}, &["RENEW", "REBIND"]);
    assert!(
        ev.starts_with(&format!("RENEW {}", b.ip)),
        "dhclient should renew {} at T1, got {ev:?}\n{}\n{}",
        b.ip,
        b.c.report(),
        b.t.dhcpd.report()
    );
    b.assert_renewed();

    // dhclient -r: RELEASE.
    b.assert_released(
        |c| {
            if let Err(e) = dhclient::release(c) {
                panic!("{e}\n{}\n{}", c.report(), b.t.dhcpd.report());
            }
        },
        &["RELEASE"],
    );
}

#[test]
fn udhcpc_obtains_renews_and_releases_a_lease() {
    let b = Bound::new("udhc", udhcpc::start, "udhcpc", "bound");

    // SIGUSR1: renew now (unicast REQUEST to the server).
    next_second();
    let ev = b.after(LEASE_TIMEOUT, udhcpc::renew, &["renew", "bound"]);
    assert_eq!(ev, format!("renew {}", b.ip), "{}", b.c.report());
    b.assert_renewed();

    // SIGUSR2: release.
    b.assert_released(udhcpc::release, &["deconfig"]);
}

#[test]
fn dhcpcd_obtains_rebinds_and_releases_a_lease() {
    let b = Bound::new("dcpd", dhcpcd::start, "dhcpcd", "BOUND");

    // dhcpcd -n: rebind now (broadcast REQUEST without server id).
    next_second();
    let ev = b.after(
        LEASE_TIMEOUT,
        |c| {
            dhcpcd::rebind(c);
        },
        &["REBIND", "RENEW", "BOUND"],
    );
    assert!(ev.ends_with(&b.ip.to_string()), "{ev:?}\n{}", b.c.report());
    b.assert_renewed();

    // dhcpcd -k: release; the daemon exits (its script sees STOP, dhcpcd 9's reason for a release).
    b.assert_released(
        |c| {
            dhcpcd::release(c);
        },
        &["RELEASE", "STOP"],
    );
}

#[test]
fn a_client_on_the_home_lan_gets_no_answer() {
    let t = topo("home", 1);

    // Control: the server is up and answers on the cluster segment.
    let lab_side = probe(&t.clients[0], "eth0", CLUSTER, 3);
    assert_eq!(lab_side.code, Some(0), "{lab_side}\n{}", t.dhcpd.report());

    // udhcpc on the home LAN: three DISCOVERs, no answer, no address.
    let (c, out) = udhcpc::once(&t.lab, "home-udhcpc", &t.home, "eth0", 3, &[]);
    assert!(
        !out.status.success(),
        "udhcpc on the home LAN got a lease: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.report(),
        t.dhcpd.report()
    );
    assert_eq!(
        t.home.addr_in("eth0", RANGE.0, RANGE.1),
        None,
        "{}",
        c.report()
    );
    assert!(
        !c.events().iter().any(|e| e.starts_with("bound")),
        "{}",
        c.report()
    );

    // The probe on the home LAN hears nothing either.
    let home_side = probe(&t.home, "eth0", CLUSTER, 3);
    assert_eq!(home_side.code, Some(1), "{home_side}\n{}", t.dhcpd.report());
    assert_eq!(
        home_side.json()["servers"],
        serde_json::json!([]),
        "{home_side}"
    );

    let home_mac = t.home.mac("eth0");
    assert_eq!(
        t.dhcpd.leases().address_of(&home_mac),
        None,
        "{}",
        t.dhcpd.report()
    );
    assert!(t.dhcpd.daemon.is_running(), "{}", t.dhcpd.report());
}

/// `udhcpc -q` once as `name` on `eth0` of `ns` (DISCOVER from scratch, up to 20 tries): it must get a lease
/// and the address must be on the interface. `what` says which run failed.
fn lease_once(t: &Topo, name: &str, ns: &Netns, what: &str) -> (Client, Ipv4Addr) {
    let (c, out) = udhcpc::once(&t.lab, name, ns, "eth0", 20, &[]);
    assert!(
        out.status.success(),
        "{what}: no lease: {}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.report(),
        t.dhcpd.report()
    );
    let ip = ns
        .addr_in("eth0", RANGE.0, RANGE.1)
        .unwrap_or_else(|| panic!("{what}: no address\n{}", c.report()));
    (c, ip)
}

/// Every client runs `udhcpc -q` once (DISCOVER from scratch, no requested address); returns the addresses.
fn lease_all(t: &Topo, round: &str, order: &[usize]) -> Vec<(usize, Ipv4Addr)> {
    order
        .iter()
        .map(|&i| {
            let ns = &t.clients[i];
            ns.ip(["-4", "addr", "flush", "dev", "eth0"]);
            let name = format!("{round}-c{i}");
            let (_, ip) = lease_once(t, &name, ns, &format!("{round}: client {i}"));
            (i, ip)
        })
        .collect()
}

#[test]
fn a_restarted_server_gives_every_known_client_its_old_address() {
    let mut t = topo("rest", 4);
    // Client 4 is dhclient, which keeps its lease across its own restarts and comes back with INIT-REBOOT.
    let mut dhc = dhclient::start(&t.lab, "dhclient", &t.clients[3], "eth0");
    dhc.wait_event(LEASE_TIMEOUT, 0, &["BOUND"], || t.dhcpd.report());
    let dhc_ip = wait_address(&dhc, &t.dhcpd);
    // Clients 1-3 run udhcpc once each (DISCOVER from scratch, no requested address).
    let mut first = lease_all(&t, "first", &[0, 1, 2]);
    first.sort();
    let distinct: std::collections::BTreeSet<_> =
        first.iter().map(|(_, ip)| *ip).chain([dhc_ip]).collect();
    assert_eq!(
        distinct.len(),
        4,
        "four clients, four addresses: {first:?} and {dhc_ip}"
    );

    // kill -9 right after the ACKs: the leases must already be on disk. Clients come back in reverse order, so
    // a server that lost its state would hand out the addresses differently.
    t.dhcpd.daemon.kill9();
    dhclient::stop(&mut dhc);
    t.dhcpd.restart(&t.lab, "dhcpd");
    let seen = dhc.events().len();
    dhclient::restart(&mut dhc);
    let ev = dhc.wait_event(LEASE_TIMEOUT, seen, &["REBOOT", "BOUND"], || {
        t.dhcpd.report()
    });
    assert_eq!(
        ev.split_whitespace().take(2).collect::<Vec<_>>(),
        ["REBOOT", &dhc_ip.to_string()],
        "dhclient's INIT-REBOOT for {dhc_ip} should be ACKed after kill -9\n{}\n{}",
        dhc.report(),
        t.dhcpd.report()
    );
    let mut after_kill = lease_all(&t, "after-kill", &[2, 1, 0]);
    after_kill.sort();
    assert_eq!(
        after_kill,
        first,
        "addresses changed after kill -9\n{}",
        t.dhcpd.report()
    );

    // A clean stop and start.
    t.dhcpd.daemon.stop();
    t.dhcpd.restart(&t.lab, "dhcpd");
    let mut after_stop = lease_all(&t, "after-stop", &[1, 2, 0]);
    after_stop.sort();
    assert_eq!(
        after_stop,
        first,
        "addresses changed after a restart\n{}",
        t.dhcpd.report()
    );
}

/// Kinds of hostile datagrams the burst cycles through.
fn malformed(i: usize, rng: &mut impl rand::Rng) -> Vec<u8> {
    use dhcproto::v4::{DhcpOption, Encodable, Encoder, Flags, Message, MessageType, OptionCode};
    // All packets that carry a hardware address use this one, so at most one address is ever involved.
    let mac = [0x02, 0, 0, 0, 0xfa, 0x11];
    let blank = || {
        let any = Ipv4Addr::UNSPECIFIED;
        Message::new(any, any, any, any, &mac)
    };
    let valid = |mtype: MessageType| {
        let mut m = blank();
        m.set_flags(Flags::default().set_broadcast());
        m.opts_mut().insert(DhcpOption::MessageType(mtype));
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
        ]));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        b
    };
    let mut p = match i % 10 {
        // random bytes, any length up to a full frame
        0 => (0..rng.random_range(0..1400))
            .map(|_| rng.random())
            .collect(),
        // a DISCOVER cut short anywhere, header included
        1 => {
            let mut b = valid(MessageType::Discover);
            b.truncate(rng.random_range(0..b.len()));
            b
        }
        // bad magic cookie
        2 => {
            let mut b = valid(MessageType::Discover);
            b[236..240].copy_from_slice(&rng.random::<[u8; 4]>());
            b
        }
        // an option whose length runs past the end of the packet
        3 => {
            let mut b = valid(MessageType::Discover);
            b.truncate(240);
            b.extend_from_slice(&[53, 255, 1]);
            b
        }
        // option overload into sname/file full of garbage
        4 => {
            let mut b = valid(MessageType::Request);
            for x in &mut b[44..236] {
                *x = rng.random();
            }
            b.truncate(b.len() - 1);
            b.extend_from_slice(&[52, 1, 3, 255]);
            b
        }
        // impossible header fields: hlen 255, unknown htype, BOOTREPLY from a client
        5 => {
            let mut b = valid(MessageType::Discover);
            b[0] = 2;
            b[1] = rng.random();
            b[2] = 255;
            b
        }
        // message types that do not exist
        6 => {
            let mut b = valid(MessageType::Discover);
            let pos = b[240..].iter().position(|&x| x == 53).unwrap() + 240;
            b[pos + 2] = [0u8, 9, 18, 200, 255][rng.random_range(0..5)];
            b
        }
        // zero-length and oversized option values everywhere, no END
        7 => {
            let mut b = valid(MessageType::Discover);
            b.truncate(240);
            for _ in 0..rng.random_range(1..60) {
                b.push(rng.random_range(1..255));
                b.push(if rng.random_bool(0.5) { 0 } else { 255 });
            }
            b
        }
        // a well-formed REQUEST for an address outside the subnet, naming another server
        8 => {
            let mut m = blank();
            m.opts_mut()
                .insert(DhcpOption::MessageType(MessageType::Request));
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 9, 8, 7)));
            m.opts_mut()
                .insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(192, 0, 2, 1)));
            let mut b = Vec::new();
            m.encode(&mut Encoder::new(&mut b)).unwrap();
            b
        }
        // a giant packet: valid header, then a wall of PAD and unknown options
        _ => {
            let mut b = valid(MessageType::Inform);
            b.truncate(b.len() - 1);
            while b.len() < 1400 {
                b.extend_from_slice(&[0, 0, 224, 4, 1, 2, 3, 4]);
            }
            b
        }
    };
    p.truncate(1472);
    p
}

#[test]
fn a_burst_of_malformed_packets_leaves_the_server_serving() {
    const PACKETS: usize = 3000;
    const TIME_LIMIT: Duration = Duration::from_secs(30);
    let mut t = topo("fuzz", 1);
    let fz = t.lab.netns("fz");
    // The attacker sits on the cluster segment with a static address outside the range.
    t.lab.plug(&t.sw, "p-fz", &fz, "eth0");
    fz.add_addr("eth0", "192.168.200.250/24");

    let seed: u64 = rand::random();
    let (sent, elapsed) = fz.within(move || {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let sock = UdpSocket::bind("192.168.200.250:0").expect("binding the sender socket");
        sock.set_broadcast(true).expect("SO_BROADCAST");
        let targets = [
            SocketAddrV4::new(Ipv4Addr::BROADCAST, 67),
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 200, 1), 67),
        ];
        let start = Instant::now();
        let mut sent = 0;
        for i in 0..PACKETS {
            if start.elapsed() > TIME_LIMIT {
                break;
            }
            let p = malformed(i, &mut rng);
            // ENOBUFS and the like only mean the burst outran the link; keep going.
            if sock.send_to(&p, targets[i % 2]).is_ok() {
                sent += 1;
            }
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        (sent, start.elapsed())
    });
    eprintln!(
        "sent {sent} malformed datagrams in {:.2} s (seed {seed})",
        elapsed.as_secs_f64()
    );
    assert!(
        sent >= PACKETS / 2,
        "only {sent} of {PACKETS} datagrams went out"
    );

    // Alive, and still serving a real client.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        t.dhcpd.daemon.is_running(),
        "cluster-lab dhcpd died under the burst (seed {seed})\n{}",
        t.dhcpd.report()
    );
    let what = format!("after the burst (seed {seed})");
    let (c, ip) = lease_once(&t, "after-burst", &t.clients[0], &what);
    let mac = t.clients[0].mac("eth0");
    wait_lease(&t.dhcpd, ip, &mac, 0, &c);

    // The burst reached the server (it was not all lost in socket buffers): it logged dropping them.
    let log = t.dhcpd.daemon.log();
    let dropped = log
        .lines()
        .filter(|l| l.contains("dropped") || l.contains("ignored"))
        .count();
    eprintln!("cluster-lab dhcpd logged {dropped} dropped or ignored datagrams");
    assert!(
        dropped >= sent / 10,
        "the server logged only {dropped} dropped packets of {sent} sent\n{}",
        t.dhcpd.report()
    );
    assert!(!log.contains("panicked"), "{}", t.dhcpd.report());
    assert!(t.dhcpd.daemon.is_running(), "{}", t.dhcpd.report());
}
