//! Root tier: the swarm's routing mesh gets the overlay MTU that fits the VLAN, right after `swarm init`, every time.
//!
//! Each round starts a real dockerd with a fresh data root in its own network namespace, initialises a swarm and
//! calls `ingress::ensure_ingress_mtu` at once (as first boot does), then watches the engine for 10 s: exactly one
//! network named `ingress` must be listed, carrying the VLAN's MTU as driver option, and the interface of this
//! node's routing-mesh sandbox must really have MTU 1446. A second call must do nothing. The rounds are repeated
//! because the race this guards against (the engine listing two `ingress` networks) is timing-dependent: with a
//! plain remove-then-create, 7 of 8 rounds listed two for a moment and none got a routing-mesh sandbox on the
//! manager. Every round's result is printed before the assertion, so a failure shows how often it happened.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use cluster_lab::docker::ingress::{
    driver_mtu_option, ensure_ingress_mtu, overlay_mtu, MTU_OPTION,
};
use cluster_lab::docker::swarm::Outcome;
use cluster_lab::host::networkd::{vlan_mtu, PARENT_MTU};
use support::dockerd::{require_docker, Dockerd};
use support::{require_tool, Lab, Netns};

const ROUNDS: usize = 8;
/// How long each round watches the ingress network after `ensure_ingress_mtu` returned.
const WATCH: Duration = Duration::from_secs(10);

/// `id mtu-option` of every network `engine` lists under the name `ingress` (the name is compared here: the engine's
/// own name filter matches swarm networks and its local copies differently).
fn ingress(engine: &Dockerd) -> Vec<String> {
    let listed = engine.docker(&[
        "network",
        "ls",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Name}}",
    ]);
    listed
        .lines()
        .filter_map(|l| l.strip_suffix(" ingress"))
        .map(|id| {
            let option = engine
                .cli()
                .args([
                    "network",
                    "inspect",
                    id,
                    "--format",
                    &format!("{{{{index .Options \"{MTU_OPTION}\"}}}}"),
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            let option = if option.is_empty() {
                "default"
            } else {
                &option
            };
            format!("{id} {MTU_OPTION}={option}")
        })
        .collect()
}

/// What one round saw.
#[derive(Debug)]
struct Round {
    first: Result<Outcome, String>,
    took: Duration,
    /// Most `ingress` networks listed at once while watching.
    most: usize,
    /// Listed at the end of the watch.
    last: Vec<String>,
    /// MTU of the routing-mesh interface at the end of the watch.
    sandbox_mtu: Option<u32>,
    second: Result<Outcome, String>,
}

impl Round {
    fn ok(&self) -> bool {
        let option = driver_mtu_option(vlan_mtu(PARENT_MTU));
        self.first == Ok(Outcome::Done)
            && self.most == 1
            && self.last.len() == 1
            && self.last[0].ends_with(&format!("{MTU_OPTION}={option}"))
            && self.sandbox_mtu == Some(overlay_mtu(vlan_mtu(PARENT_MTU)))
            && self.second == Ok(Outcome::AlreadyDone)
    }
}

fn round(ns: &Netns, dir: &Path, name: &str) -> Round {
    let option = driver_mtu_option(vlan_mtu(PARENT_MTU));
    let engine = Dockerd::start(ns, dir, name);
    let swarm = engine.connect();
    engine
        .block_on(&swarm, |s| async move {
            s.init("192.0.2.1".parse().unwrap(), None).await
        })
        .unwrap_or_else(|e| panic!("swarm init: {e}\n{}", engine.report()));

    // Immediately, as first boot does.
    let started = Instant::now();
    let first = engine
        .block_on(
            &swarm,
            |s| async move { ensure_ingress_mtu(&s, option).await },
        )
        .map_err(|e| e.to_string());
    let took = started.elapsed();

    let mut most = 0;
    let watch = Instant::now();
    while watch.elapsed() < WATCH {
        most = most.max(ingress(&engine).len());
        std::thread::sleep(Duration::from_millis(500));
    }
    let last = ingress(&engine);
    most = most.max(last.len());
    let sandbox_mtu = engine.routing_mesh_mtu();

    let second = engine
        .block_on(
            &swarm,
            |s| async move { ensure_ingress_mtu(&s, option).await },
        )
        .map_err(|e| e.to_string());
    let r = Round {
        first,
        took,
        most,
        last,
        sandbox_mtu,
        second,
    };
    eprintln!(
        "{name}: first call {:?} in {:.1} s; at most {} `ingress` listed; at the end {:?}, routing-mesh interface \
         MTU {:?}; second call {:?}",
        r.first,
        r.took.as_secs_f64(),
        r.most,
        r.last,
        r.sandbox_mtu,
        r.second
    );
    if !r.ok() {
        eprintln!("{name} FAILED; its dockerd:\n{}", engine.report());
    }
    r
}

#[test]
fn ingress_gets_the_vlan_overlay_mtu_right_after_swarm_init_every_time() {
    // What `ensure_ingress_mtu` decided, on stderr beside each round's result.
    cluster_lab::logging::init(0);
    let mut lab = Lab::new("ingress");
    require_docker();
    require_tool("nsenter", "install util-linux");
    let ns = lab.netns("engine");
    // An address for swarm to advertise.
    ns.veth_within("clingr0", "clingr1", "192.0.2.1/24");

    let rounds: Vec<Round> = (0..ROUNDS)
        .map(|i| round(&ns, lab.dir(), &format!("round{i}")))
        .collect();
    let failed: Vec<usize> = (0..ROUNDS).filter(|&i| !rounds[i].ok()).collect();
    let duplicates = rounds.iter().filter(|r| r.most > 1).count();
    eprintln!(
        "{ROUNDS} rounds: {} failed, {duplicates} listed two `ingress` networks at some point",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "rounds {failed:?} of {ROUNDS} did not end with exactly one ingress network of the VLAN's MTU, set up on \
         this node, and a no-op second call (each round's result and a failed round's dockerd log are above)"
    );
}
