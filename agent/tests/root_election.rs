//! Root tier: three candidates powered on at the same instant, each in its own network namespace on one bridge
//! (standing in for the VLAN), run the real election: DHCP probe, claims over UDP broadcast, `arping -D` for the
//! master address. Exactly one ends as master (the lowest MAC); the others hear its claim and become nodes.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use cluster_lab::election::socket::{ClaimSocket, PORT};
use cluster_lab::election::{Claim, ClusterRole, Mac, Timing};
use cluster_lab::firstboot::{announce_master, elect, ElectionSetup};
use support::{require_tool, Lab};

const MASTER: &str = "192.0.2.1";

#[test]
fn three_candidates_powered_on_together_end_with_exactly_one_master() {
    let mut lab = Lab::new("elect");
    require_tool(
        "arping",
        "install iputils-arping (listed in ci/apt-packages.txt)",
    );
    let sw = lab.switch("sw");
    // Listed highest MAC first: the winner must be chosen by MAC, not by start order.
    let candidates = [
        ("a", "02:00:00:00:00:0c"),
        ("b", "02:00:00:00:00:0b"),
        ("c", "02:00:00:00:00:0a"),
    ];
    let mut spaces = Vec::new();
    for (name, mac) in candidates {
        let ns = lab.netns(name);
        let inside = format!("clel{name}0");
        lab.plug(&sw, &format!("clel{name}1"), &ns, &inside);
        ns.ip(["link", "set", &inside, "address", mac]);
        spaces.push((ns, inside, mac.parse::<Mac>().unwrap()));
    }
    // Let the veth carriers come up and the bridge ports reach forwarding.
    std::thread::sleep(Duration::from_secs(1));

    // All candidates at once, each on a thread of its own inside its namespace.
    let roles: Vec<ClusterRole> = std::thread::scope(|s| {
        let threads: Vec<_> = spaces
            .iter()
            .map(|(ns, interface, mac)| {
                let future = candidate(ns.name.clone(), interface.clone(), *mac);
                s.spawn(move || ns.block_on(future))
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });

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

/// One machine: elect; a master takes the address and announces itself for a while, as firstboot does until its
/// DHCP service answers.
async fn candidate(ns: String, interface: String, mac: Mac) -> ClusterRole {
    let setup = ElectionSetup {
        interface: interface.clone(),
        cluster: "root-test".into(),
        mac,
        master: MASTER.parse::<Ipv4Addr>().unwrap(),
        timing: Timing::default(),
        arp_count: 2,
        give_up_after: Duration::from_secs(90),
    };
    let socket = ClaimSocket::bind(&interface, PORT).unwrap();
    let probe_ns = ns.clone();
    let probe_if = interface.clone();
    let role = elect(&setup, &socket, move || {
        let (ns, interface) = (probe_ns.clone(), probe_if.clone());
        async move {
            // The real probe, as the `cluster-lab probe` binary (run through `ip netns exec`, which also gives it the
            // namespace's /sys). No DHCP server runs here, so no master answers: exit status 1.
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
    .unwrap_or_else(|e| panic!("{ns}: {e}"));
    if role == ClusterRole::Master {
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
