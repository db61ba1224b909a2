//! Root tier: `cluster-lab stack deploy` against a real dockerd in swarm mode (its own namespace, data root and
//! socket, trusting the cluster registry through the daemon.json first boot writes), a real `docker-registry` serving
//! the configuration first boot renders, and the real docker CLI (pointed at that engine with DOCKER_HOST). The
//! refusals (unknown stack, a compose file Docker refuses, an image no archive holds) deploy nothing; a good stack is
//! pushed, deployed and waited for; a service that cannot be placed makes `deploy` fail naming it.

mod support;

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use cluster_lab::stack::{self, Origin, Progress, StackError};
use cluster_lab_image::container;
use support::dockerd::{require_docker, Dockerd};
use support::Lab;

#[derive(Default)]
struct Steps(Mutex<Vec<String>>);

impl Progress for Steps {
    fn step(&self, what: &str) {
        self.0.lock().unwrap().push(what.to_string());
    }
}

fn write_stack(root: &Path, name: &str, compose: &str, with_busybox: Option<&[u8]>) {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join(stack::IMAGES_DIR)).unwrap();
    std::fs::write(dir.join(stack::COMPOSE_FILE), compose).unwrap();
    if let Some(archive) = with_busybox {
        std::fs::write(
            dir.join(stack::IMAGES_DIR).join(container::ARCHIVE_NAME),
            archive,
        )
        .unwrap();
    }
}

#[test]
fn stacks_are_checked_before_anything_changes_then_pushed_deployed_and_waited_for() {
    let mut lab = Lab::new("stack");
    require_docker();
    let busybox =
        std::fs::read("/bin/busybox").expect("reading /bin/busybox: install busybox-static");
    let archive = container::busybox_image(&busybox).unwrap().archive;

    let ns = lab.netns("master");
    ns.veth_within("clstk0", "clstk1", "192.0.2.1/24");
    let master: std::net::Ipv4Addr = "192.0.2.1".parse().unwrap();
    let served = support::registry::serve(&lab, &ns, master);
    let at = served.address.clone();
    let engine = Dockerd::start_with(&ns, lab.dir(), "engine", Some(&served.daemon_json));
    let swarm = engine.connect();
    engine.docker(&["swarm", "init", "--advertise-addr", "192.0.2.1"]);
    // The docker CLI that `stack` runs talks to this engine (each test is its own process under nextest).
    std::env::set_var("DOCKER_HOST", format!("unix://{}", engine.socket.display()));

    // The built-in web-demo's compose file as the image carries it, and stacks of a user's.
    let builtin = lab.subdir("usr-stacks");
    let user = lab.subdir("etc-stacks");
    let web_demo = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../overlays/usr/lib/cluster-lab/stacks/web-demo/stack.yml"),
    )
    .unwrap();
    write_stack(&builtin, "web-demo", &web_demo, Some(&archive));
    write_stack(
        &user,
        "solo",
        "# Two sleepers.\nversion: \"3.8\"\nservices:\n  app:\n    image: ${REGISTRY}/cluster-lab/busybox:latest\n    command: [\"busybox\", \"sleep\", \"3600\"]\n    deploy:\n      replicas: 2\n",
        Some(&archive),
    );
    write_stack(
        &user,
        "broken",
        "services:\n  app:\n    image: x\n   bad: [\n",
        None,
    );
    write_stack(
        &user,
        "no-archive",
        "version: \"3.8\"\nservices:\n  app:\n    image: ${REGISTRY}/me/app:1\n",
        None,
    );
    write_stack(
        &user,
        "unplaceable",
        "version: \"3.8\"\nservices:\n  stuck:\n    image: ${REGISTRY}/cluster-lab/busybox:latest\n    command: [\"busybox\", \"sleep\", \"3600\"]\n    deploy:\n      placement:\n        constraints: [\"node.labels.nowhere == true\"]\n",
        Some(&archive),
    );
    let stacks = stack::discover(&[(Origin::Builtin, &builtin), (Origin::User, &user)]);
    assert_eq!(
        stacks.keys().cloned().collect::<Vec<_>>(),
        ["broken", "no-archive", "solo", "unplaceable", "web-demo"]
    );
    assert!(stacks["web-demo"]
        .description()
        .starts_with("The first thing to try:"));

    let deploy = |name: &str, timeout: u64| {
        let found = stack::find(&stacks, name)?;
        let swarm = swarm.clone();
        let at = at.clone();
        ns.block_on(async move {
            let steps = Steps::default();
            let r = stack::deploy(&swarm, &found, &at, Duration::from_secs(timeout), &steps).await;
            r.map(|services| (services, steps.0.into_inner().unwrap()))
        })
    };
    let deployed = || ns.block_on(async { stack::deployed().await }).unwrap();

    // Refused before anything changes.
    let unknown = deploy("nosuch", 60).unwrap_err().to_string();
    assert!(
        unknown.contains("no stack named \"nosuch\"; there are: broken, no-archive"),
        "{unknown}"
    );
    let broken = deploy("broken", 60).unwrap_err();
    assert!(matches!(broken, StackError::Compose { .. }), "{broken}");
    assert!(
        broken
            .to_string()
            .contains("broken/stack.yml: docker's compose loader refuses it"),
        "{broken}"
    );
    let missing = deploy("no-archive", 60).unwrap_err().to_string();
    assert!(
        missing.contains(&format!(
            "service app needs image {at}/me/app:1, which no archive in"
        )),
        "{missing}"
    );
    assert!(deployed().is_empty(), "{:?}", deployed());
    // ... and nothing was pushed either.
    let catalog =
        support::run(&mut ns.nsenter("curl", ["-sS", &format!("http://{at}/v2/_catalog")]));
    assert_eq!(catalog.trim(), r#"{"repositories":[]}"#);

    // A good stack: pushed, deployed, every task running when deploy returns.
    let (services, steps) = deploy("solo", 180)
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", served.daemon.report(), engine.report()));
    assert_eq!(services, [("solo_app".to_string(), "2/2".to_string())]);
    assert!(
        steps
            .iter()
            .any(|s| s == &format!("pushed {at}/cluster-lab/busybox:latest")),
        "{steps:?}"
    );
    let running = engine.docker(&[
        "service",
        "ps",
        "solo_app",
        "--filter",
        "desired-state=running",
        "--format",
        "{{.CurrentState}}",
    ]);
    assert_eq!(
        running.lines().filter(|l| l.starts_with("Running")).count(),
        2,
        "{running}"
    );
    assert_eq!(deployed(), ["solo"]);

    // Deployed again with a change: deploy returns once the rolling update completed, not while the old tasks run.
    let compose = user.join("solo").join(stack::COMPOSE_FILE);
    let changed = std::fs::read_to_string(&compose)
        .unwrap()
        .replace("\"3600\"", "\"3601\"");
    std::fs::write(&compose, changed).unwrap();
    let (services, _) = deploy("solo", 180).unwrap();
    assert_eq!(services, [("solo_app".to_string(), "2/2".to_string())]);
    let update = engine.docker(&[
        "service",
        "inspect",
        "--format",
        "{{.UpdateStatus.State}} {{index .Spec.TaskTemplate.ContainerSpec.Args 2}}",
        "solo_app",
    ]);
    assert_eq!(update.trim(), "completed 3601");

    // A service Swarm cannot place: deploy gives up naming it.
    let stuck = deploy("unplaceable", 8).unwrap_err().to_string();
    assert!(stuck.contains("not every task running after 8s"), "{stuck}");
    assert!(stuck.contains("service unplaceable_stuck"), "{stuck}");

    // rm removes; a second rm has nothing to do.
    let solo = stack::find(&stacks, "solo").unwrap();
    let again = solo.clone();
    assert!(ns
        .block_on(async move { stack::remove(&solo).await })
        .unwrap());
    assert!(!ns
        .block_on(async move { stack::remove(&again).await })
        .unwrap());
    assert_eq!(deployed(), ["unplaceable"]);
}
