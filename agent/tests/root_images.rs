//! Root tier: the preloaded busybox container image against a real dockerd (own network namespace, data root, exec
//! root and unix socket). The archive is built by the image crate from the host's busybox-static, exactly as
//! `cargo xtask image` builds it from the base's; first boot's loader puts it into dockerd, the docker CLI runs
//! a container from it, and a second load skips it.

mod support;

use cluster_lab::docker::images::{self, LoadReport};
use cluster_lab_image::container;
use support::dockerd::{require_docker, Dockerd};
use support::Lab;

const HOST_BUSYBOX: &str = "/bin/busybox";

/// First boot's loader on `dir`, against `engine`.
fn try_load(engine: &Dockerd, dir: &std::path::Path) -> Result<LoadReport, images::ImagesError> {
    let dir = dir.to_path_buf();
    engine.block_on(&engine.connect(), |docker| async move {
        images::load_preloaded(docker.docker(), &dir).await
    })
}

fn load(engine: &Dockerd, dir: &std::path::Path) -> LoadReport {
    try_load(engine, dir).unwrap_or_else(|e| panic!("{e}\n{}", engine.report()))
}

#[test]
fn busybox_archive_loads_runs_and_is_skipped_the_second_time() {
    let mut lab = Lab::new("images");
    require_docker();
    let busybox = std::fs::read(HOST_BUSYBOX).unwrap_or_else(|e| {
        panic!(
            "reading {HOST_BUSYBOX}: {e}: install busybox-static (listed in ci/apt-packages.txt)"
        )
    });
    let image = container::busybox_image(&busybox).unwrap();

    let images_dir = lab.dir().join("images");
    std::fs::create_dir_all(&images_dir).unwrap();
    let archive = images_dir.join(container::ARCHIVE_NAME);
    std::fs::write(&archive, &image.archive).unwrap();
    // Not an archive name: ignored.
    std::fs::write(images_dir.join("README"), "not an image\n").unwrap();

    let ns = lab.netns("engine");
    let engine = Dockerd::start(&ns, lab.dir(), "engine");

    let first = load(&engine, &images_dir);
    assert_eq!(
        first,
        LoadReport {
            loaded: vec![archive.clone()],
            skipped: vec![],
            tags: vec![container::REPO_TAG.to_string()],
        }
    );
    let id = engine.docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{.Os}}/{{.Architecture}}",
        container::REPO_TAG,
    ]);
    assert_eq!(
        id.trim(),
        format!("{} linux/{}", image.image_id, image.platform.architecture),
        "dockerd's image id is the config digest the archive was built with"
    );

    // A container of the loaded image, with no network but its own loopback.
    let run_in_image = |command: &[&str]| {
        let mut args = vec!["run", "--rm", "--network", "none", container::REPO_TAG];
        args.extend_from_slice(command);
        engine.docker(&args)
    };
    let out = run_in_image(&["busybox", "echo", "ok"]);
    assert_eq!(out, "ok\n");
    // The applet links and the web root are in the layer.
    let out = run_in_image(&[
        "sh",
        "-c",
        "test -d /www && test -d /tmp && readlink /bin/httpd && readlink /bin/wget",
    ]);
    assert_eq!(out, "busybox\nbusybox\n");
    // httpd serves /www and wget fetches it, over the container's own loopback.
    let out = run_in_image(&[
        "sh",
        "-c",
        "echo served > /www/index.html && busybox httpd -p 127.0.0.1:80 -h /www && \
         sleep 0.5 && wget -q -O - http://127.0.0.1/",
    ]);
    assert_eq!(out, "served\n");

    let second = load(&engine, &images_dir);
    assert_eq!(
        second,
        LoadReport {
            loaded: vec![],
            skipped: vec![archive.clone()],
            tags: vec![container::REPO_TAG.to_string()],
        }
    );

    // A directory that does not exist holds nothing to load.
    let none = load(&engine, &lab.dir().join("missing"));
    assert_eq!(none, LoadReport::default());

    // A broken archive is an error naming its path.
    std::fs::write(images_dir.join("broken.tar"), b"not a tar archive").unwrap();
    let err = try_load(&engine, &images_dir).unwrap_err().to_string();
    assert!(
        err.contains(&images_dir.join("broken.tar").display().to_string()),
        "{err}"
    );
    let listed = engine.docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(listed.trim(), container::REPO_TAG);
}

/// The cluster registry: a real `docker-registry` serving the configuration first boot renders (on an address
/// standing in for the master's VLAN address), a real dockerd trusting it through the daemon.json first boot
/// writes; the master's push of the preloaded image, then a pull by the registry's name once the local copy is gone.
#[test]
fn the_preloaded_image_is_pushed_into_the_cluster_registry_and_pulled_back() {
    use cluster_lab::docker::registry;
    let mut lab = Lab::new("registry");
    require_docker();
    let busybox =
        std::fs::read(HOST_BUSYBOX).expect("reading /bin/busybox: install busybox-static");
    let image = container::busybox_image(&busybox).unwrap();
    let images_dir = lab.dir().join("images");
    std::fs::create_dir_all(&images_dir).unwrap();
    std::fs::write(images_dir.join(container::ARCHIVE_NAME), &image.archive).unwrap();

    let ns = lab.netns("master");
    // The master's VLAN address stands in for the registry's.
    ns.veth_within("clreg0", "clreg1", "192.0.2.1/24");
    let master: std::net::Ipv4Addr = "192.0.2.1".parse().unwrap();
    let served = support::registry::serve(&lab, &ns, master);
    let (at, data) = (served.address.clone(), served.data.clone());
    let engine = Dockerd::start_with(&ns, lab.dir(), "engine", Some(&served.daemon_json));
    let tags = load(&engine, &images_dir).tags;
    assert_eq!(tags, [container::REPO_TAG]);

    let pushed = engine
        .block_on(&engine.connect(), move |docker| async move {
            registry::push(docker.docker(), &at, container::REPO_TAG).await
        })
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", served.daemon.report(), engine.report()));
    assert_eq!(pushed, format!("192.0.2.1:5000/{}", container::REPO_TAG));
    // Gone locally (both names), then pulled back by the registry's name, and it runs.
    engine.docker(&["image", "rm", &pushed, container::REPO_TAG]);
    engine.docker(&["pull", "-q", &pushed]);
    let out = engine.docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &pushed,
        "busybox",
        "echo",
        "pulled",
    ]);
    assert_eq!(out, "pulled\n");
    // The registry's own catalog lists it, and its data is where the configuration put it.
    let catalog =
        support::run(&mut ns.nsenter("curl", ["-sS", "http://192.0.2.1:5000/v2/_catalog"]));
    assert!(catalog.contains("\"cluster-lab/busybox\""), "{catalog}");
    assert!(data
        .join("docker/registry/v2/repositories/cluster-lab/busybox")
        .is_dir());
    served.daemon.assert_running();
}
