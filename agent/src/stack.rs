//! Stacks: whole cluster scenarios deployed with one command (`cluster-lab stack deploy NAME` on the master).
//!
//! A stack is a directory holding `stack.yml` (a compose file for `docker stack deploy`) and, in `images/`, the
//! `docker save` archives of the images it needs. cluster-lab's own live in [`BUILTIN_DIR`] (put there by the image
//! builder); users add theirs in [`USER_DIR`], where a stack of the same name takes the place of the built-in one.
//! That directory is the plugin mechanism: nothing else needs registering.
//!
//! In `stack.yml`, `${REGISTRY}` stands for the cluster registry on the master (`192.168.200.1:5000`), so an image
//! written `${REGISTRY}/cluster-lab/busybox:latest` is the archive's `cluster-lab/busybox:latest` once `deploy` has
//! pushed it there; every machine then pulls it from the master. Swarm places a service only on machines whose
//! architecture its image was built for (the platform recorded in the registry), so a stack of arm64 images on a
//! mixed cluster runs on the arm64 machines.
//!
//! `deploy` checks everything before it changes anything: the stack exists, Docker's own compose loader accepts the
//! file (`docker stack config`), and every image named under `${REGISTRY}` is in one of the stack's archives. Then it
//! loads and pushes the archives, runs `docker stack deploy`, and waits until every service has all its tasks
//! running; if one does not, the error names the service, the machine and what Docker says.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::command::{self, CommandError};
use crate::docker::swarm::{Swarm, SwarmError};
use crate::docker::{images, registry};

/// cluster-lab's own stacks, from the image.
pub const BUILTIN_DIR: &str = "/usr/lib/cluster-lab/stacks";
/// The user's stacks; one here takes the place of a built-in stack of the same name.
pub const USER_DIR: &str = "/etc/cluster-lab/stacks";
/// The compose file in a stack's directory.
pub const COMPOSE_FILE: &str = "stack.yml";
/// The directory of image archives in a stack's directory.
pub const IMAGES_DIR: &str = "images";
/// The variable `stack.yml` names the cluster registry with.
pub const REGISTRY_VAR: &str = "REGISTRY";

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("no stack named {name:?}; there are: {}", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    Unknown {
        name: String,
        available: Vec<String>,
    },
    #[error("{path}: reading: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: docker's compose loader refuses it (nothing was deployed):\n{message}")]
    Compose { path: PathBuf, message: String },
    #[error("{path}: {} (nothing was deployed)", missing.iter().map(|(s, i)| format!("service {s} needs image {i}, which no archive in {} holds", images_dir.display())).collect::<Vec<_>>().join("; "))]
    MissingImages {
        path: PathBuf,
        images_dir: PathBuf,
        missing: Vec<(String, String)>,
    },
    #[error("this machine is not a Swarm manager: run `sudo cluster-lab stack deploy NAME` on the master (from the laptop: `ssh cluster@<master-lan-ip> sudo cluster-lab stack deploy NAME`)")]
    NotManager,
    #[error("{path}: docker stack config lists services but this reader found no image for them; nothing was deployed")]
    NoImages { path: PathBuf },
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    #[error(transparent)]
    Images(#[from] images::ImagesError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("stack {stack}: not every task running after {}s:\n{}", waited.as_secs(), problems.join("\n"))]
    NotRunning {
        stack: String,
        waited: Duration,
        problems: Vec<String>,
    },
}

/// Where a stack comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Builtin,
    User,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Builtin => "built-in",
            Origin::User => "user",
        })
    }
}

/// A stack's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    pub name: String,
    pub dir: PathBuf,
    pub origin: Origin,
}

impl Stack {
    pub fn compose_file(&self) -> PathBuf {
        self.dir.join(COMPOSE_FILE)
    }
    pub fn images_dir(&self) -> PathBuf {
        self.dir.join(IMAGES_DIR)
    }
    /// The compose file's leading `#` comment, as one line.
    pub fn description(&self) -> String {
        let text = std::fs::read_to_string(self.compose_file()).unwrap_or_default();
        description(&text)
    }
}

/// The leading `#` comment lines of a compose file, joined.
pub fn description(compose: &str) -> String {
    compose
        .lines()
        .map_while(|l| l.strip_prefix('#'))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A stack name Docker accepts and that is safe as a directory name: lowercase letters, digits and `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The stacks under `roots` (built-in first, then the user's, which replace built-in ones of the same name), by
/// name. A directory without `stack.yml`, or whose name is not a valid stack name, is not a stack.
pub fn discover(roots: &[(Origin, &Path)]) -> BTreeMap<String, Stack> {
    let mut found = BTreeMap::new();
    for (origin, root) in roots {
        let Ok(entries) = std::fs::read_dir(root) else {
            continue;
        };
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if !valid_name(&name) || !dir.join(COMPOSE_FILE).is_file() {
                continue;
            }
            found.insert(
                name.clone(),
                Stack {
                    name,
                    dir,
                    origin: *origin,
                },
            );
        }
    }
    found
}

/// The stacks on this machine.
pub fn installed() -> BTreeMap<String, Stack> {
    discover(&[
        (Origin::Builtin, Path::new(BUILTIN_DIR)),
        (Origin::User, Path::new(USER_DIR)),
    ])
}

/// The stack `name` among `stacks`.
pub fn find(stacks: &BTreeMap<String, Stack>, name: &str) -> Result<Stack, StackError> {
    stacks
        .get(name)
        .cloned()
        .ok_or_else(|| StackError::Unknown {
            name: name.into(),
            available: stacks.keys().cloned().collect(),
        })
}

/// `(service, image)` of every service in a compose file as `docker stack config` prints it (two-space indents,
/// services under `services:`).
pub fn service_images(config: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut in_services = false;
    let mut service: Option<String> = None;
    for line in config.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_services = line.trim_end() == "services:";
            service = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line
            .strip_prefix("  ")
            .filter(|l| !l.starts_with(' '))
            .and_then(|l| l.trim_end().strip_suffix(':'))
        {
            service = Some(name.trim_matches('"').to_string());
        } else if let (Some(s), Some(image)) = (
            &service,
            line.strip_prefix("    image: ")
                .map(|i| i.trim().trim_matches('"').to_string()),
        ) {
            out.push((s.clone(), image));
        }
    }
    out
}

/// The `(service, image)` pairs naming an image in the cluster registry (`registry/…`) that none of the archives'
/// tags provides once pushed there.
pub fn missing_images(
    images: &[(String, String)],
    archive_tags: &[String],
    registry: &str,
) -> Vec<(String, String)> {
    let provided: Vec<String> = archive_tags
        .iter()
        .map(|t| registry::name_in(registry, t))
        .collect();
    images
        .iter()
        .filter(|(_, image)| image.starts_with(&format!("{registry}/")))
        .filter(|(_, image)| !provided.contains(&registry::name_in(registry, image)))
        .cloned()
        .collect()
}

/// The tags of every `*.tar` archive in `dir` (none when it does not exist).
fn archive_tags(dir: &Path) -> Result<Vec<String>, StackError> {
    let mut tags = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(tags);
    };
    let mut archives: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file())
        .collect();
    archives.sort();
    for path in archives {
        let data = std::fs::read(&path).map_err(|source| StackError::Read {
            path: path.clone(),
            source,
        })?;
        tags.extend(images::repo_tags(&path, &data)?);
    }
    Ok(tags)
}

/// What `deploy` checked before deploying: the compose file as Docker reads it and the images the archives hold.
#[derive(Debug)]
pub struct Checked {
    pub images: Vec<(String, String)>,
    pub archive_tags: Vec<String>,
}

/// Every check `deploy` makes before it changes anything.
pub async fn check(stack: &Stack, registry: &str) -> Result<Checked, StackError> {
    let file = stack.compose_file();
    let file_arg = file.to_string_lossy().into_owned();
    let (_, out) = command::output_with_env(
        "docker",
        ["stack", "config", "-c", &file_arg],
        &[(REGISTRY_VAR, registry)],
    )
    .await?;
    if !out.status.success() {
        return Err(StackError::Compose {
            path: file,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let config = String::from_utf8_lossy(&out.stdout);
    let images = service_images(&config);
    // Every service has an image (Docker's loader insists): none read means this reader missed them, and the check
    // below would pass for nothing.
    if images.is_empty() && config.lines().any(|l| l.trim_end() == "services:") {
        return Err(StackError::NoImages { path: file });
    }
    let archive_tags = archive_tags(&stack.images_dir())?;
    let missing = missing_images(&images, &archive_tags, registry);
    if !missing.is_empty() {
        return Err(StackError::MissingImages {
            path: file,
            images_dir: stack.images_dir(),
            missing,
        });
    }
    Ok(Checked {
        images,
        archive_tags,
    })
}

/// One line per service of a deployed stack: `name replicas` (`web-demo_web 1/1`).
async fn services(stack: &str) -> Result<Vec<(String, String)>, StackError> {
    let out = command::run(
        "docker",
        [
            "stack",
            "services",
            stack,
            "--format",
            "{{.Name}} {{.Replicas}}",
        ],
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, r)| (n.to_string(), r.trim().to_string()))
        .collect())
}

/// The state of each service's rolling update (`updating`, `completed`, `paused`, …; empty when it never had one),
/// by service name.
async fn update_states(
    services: &[(String, String)],
) -> Result<BTreeMap<String, String>, StackError> {
    if services.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut args = vec![
        "service".to_string(),
        "inspect".into(),
        "--format".into(),
        "{{.Spec.Name}} {{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}".into(),
    ];
    args.extend(services.iter().map(|(n, _)| n.clone()));
    let out = command::run("docker", &args).await?;
    Ok(out
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((n, st)) => (n.to_string(), st.trim().to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect())
}

/// A service is in step when all its tasks run and no rolling update is under way (right after a redeploy the old
/// tasks still count as running).
pub fn in_step(replicas: &str, update_state: &str) -> bool {
    replicas_running(replicas) && matches!(update_state, "" | "completed")
}

/// `k/k` with k > 0 (a replicated or global service with every task running); Docker may append `(max n per node)`.
pub fn replicas_running(replicas: &str) -> bool {
    let counts = replicas.split_whitespace().next().unwrap_or("");
    match counts.split_once('/') {
        Some((running, wanted)) => running == wanted && wanted != "0",
        None => false,
    }
}

/// Why the tasks of `service` do not run: its latest tasks' machine, state and Docker's error.
async fn task_problems(service: &str) -> Vec<String> {
    let out = command::run(
        "docker",
        [
            "service",
            "ps",
            service,
            "--no-trunc",
            "--format",
            "{{.Node}}|{{.DesiredState}}|{{.CurrentState}}|{{.Error}}",
        ],
    )
    .await;
    match out {
        Ok(out) => out
            .lines()
            .take(3)
            .map(|l| {
                let f: Vec<&str> = l.splitn(4, '|').collect();
                let node = f
                    .first()
                    .filter(|n| !n.is_empty())
                    .copied()
                    .unwrap_or("no machine yet");
                format!(
                    "  service {service} on {node}: {} (desired {}){}",
                    f.get(2).copied().unwrap_or(""),
                    f.get(1).copied().unwrap_or(""),
                    f.get(3)
                        .filter(|e| !e.is_empty())
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                )
            })
            .collect(),
        Err(e) => vec![format!("  service {service}: {e}")],
    }
}

/// What `deploy` reports as it goes.
pub trait Progress: Send + Sync {
    fn step(&self, what: &str);
}

/// Deploy `stack` through this machine's engine (a Swarm manager): check, load and push its images, `docker stack
/// deploy`, and wait up to `timeout` until every service has all its tasks running.
pub async fn deploy(
    swarm: &Swarm,
    stack: &Stack,
    registry: &str,
    timeout: Duration,
    progress: &dyn Progress,
) -> Result<Vec<(String, String)>, StackError> {
    let checked = check(stack, registry).await?;
    if !swarm.local_state().await?.manager {
        return Err(StackError::NotManager);
    }
    let docker = swarm.docker();
    progress.step(&format!(
        "{}: compose file accepted, {} service(s), {} image(s) in its archives",
        stack.compose_file().display(),
        checked.images.len(),
        checked.archive_tags.len()
    ));
    // Always loaded: an archive may hold a rebuilt image under a tag the engine already has.
    let loaded = images::load_dir(docker, &stack.images_dir(), images::Reload::Always).await?;
    for tag in &loaded.tags {
        let name = registry::push(docker, registry, tag).await?;
        progress.step(&format!("pushed {name}"));
    }
    let file = stack.compose_file().to_string_lossy().into_owned();
    command::run_with_env(
        "docker",
        ["stack", "deploy", "-c", &file, &stack.name],
        &[(REGISTRY_VAR, registry)],
    )
    .await?;
    progress.step(&format!(
        "deployed; waiting until every task of {} runs",
        stack.name
    ));
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let listed = services(&stack.name).await?;
        let updates = update_states(&listed).await?;
        let update = |name: &str| updates.get(name).map(String::as_str).unwrap_or("");
        let ready = listed.iter().filter(|(n, r)| in_step(r, update(n))).count();
        let now = format!("{ready}/{} services running", listed.len());
        if now != last {
            progress.step(&now);
            last = now;
        }
        if !listed.is_empty() && ready == listed.len() {
            return Ok(listed);
        }
        if tokio::time::Instant::now() >= deadline {
            let mut problems = Vec::new();
            for (service, replicas) in listed.iter().filter(|(n, r)| !in_step(r, update(n))) {
                let state = update(service);
                problems.push(format!(
                    "  service {service}: {replicas} tasks running{}",
                    if state.is_empty() {
                        String::new()
                    } else {
                        format!(", update {state}")
                    }
                ));
                problems.extend(task_problems(service).await);
            }
            return Err(StackError::NotRunning {
                stack: stack.name.clone(),
                waited: timeout,
                problems,
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Names of the stacks deployed in the Swarm.
pub async fn deployed() -> Result<Vec<String>, StackError> {
    let out = command::run("docker", ["stack", "ls", "--format", "{{.Name}}"]).await?;
    Ok(out.lines().map(str::to_string).collect())
}

/// Remove a deployed stack (`docker stack rm`) and wait (up to a minute) until its networks are gone too, so it can
/// be deployed again at once; a stack not deployed is not an error.
pub async fn remove(stack: &Stack) -> Result<bool, StackError> {
    if !deployed().await?.contains(&stack.name) {
        return Ok(false);
    }
    command::run("docker", ["stack", "rm", &stack.name]).await?;
    let label = format!("label=com.docker.stack.namespace={}", stack.name);
    for _ in 0..60 {
        let left = command::run("docker", ["network", "ls", "-q", "--filter", &label]).await?;
        if left.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "version: \"3.8\"\nservices:\n  client:\n    command:\n    - busybox\n    image: 192.168.200.1:5000/cluster-lab/busybox:latest\n    networks:\n      demo: null\n  web:\n    image: 192.168.200.1:5000/cluster-lab/busybox:latest\n    ports:\n    - mode: ingress\n      target: 80\n  other:\n    image: debian:trixie\nnetworks:\n  demo:\n    attachable: true\n    driver: overlay\n";

    #[test]
    fn images_are_read_per_service_from_dockers_canonical_config() {
        assert_eq!(
            service_images(CONFIG),
            vec![
                (
                    "client".into(),
                    "192.168.200.1:5000/cluster-lab/busybox:latest".into()
                ),
                (
                    "web".into(),
                    "192.168.200.1:5000/cluster-lab/busybox:latest".into()
                ),
                ("other".into(), "debian:trixie".into()),
            ]
        );
    }

    #[test]
    fn the_built_in_web_demo_as_docker_cli_28_prints_it() {
        // `REGISTRY=192.168.200.1:5000 docker stack config -c overlays/usr/lib/cluster-lab/stacks/web-demo/stack.yml`
        let config = include_str!("../tests/data/web-demo.config.yml");
        let image = "192.168.200.1:5000/cluster-lab/busybox:latest".to_string();
        assert_eq!(
            service_images(config),
            vec![
                ("client".to_string(), image.clone()),
                ("mesh".to_string(), image.clone()),
                ("web".to_string(), image),
            ]
        );
    }

    #[test]
    fn a_registry_image_no_archive_holds_is_missing_and_others_are_not_asked_for() {
        let images = service_images(CONFIG);
        let at = "192.168.200.1:5000";
        assert!(missing_images(&images, &["cluster-lab/busybox:latest".into()], at).is_empty());
        assert_eq!(
            missing_images(&images, &["cluster-lab/other:1".into()], at),
            vec![
                (
                    "client".to_string(),
                    format!("{at}/cluster-lab/busybox:latest")
                ),
                (
                    "web".to_string(),
                    format!("{at}/cluster-lab/busybox:latest")
                ),
            ]
        );
    }

    #[test]
    fn user_stacks_replace_built_in_ones_and_directories_without_a_compose_file_are_not_stacks() {
        let dir = tempfile::tempdir().unwrap();
        let builtin = dir.path().join("usr");
        let user = dir.path().join("etc");
        for (root, name) in [
            (&builtin, "web-demo"),
            (&builtin, "monitoring"),
            (&user, "web-demo"),
            (&user, "mine"),
        ] {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(
                root.join(name).join(COMPOSE_FILE),
                "# A stack.\n# Two lines.\nservices: {}\n",
            )
            .unwrap();
        }
        std::fs::create_dir_all(user.join("empty")).unwrap();
        std::fs::create_dir_all(user.join("Bad_Name")).unwrap();
        std::fs::write(user.join("Bad_Name").join(COMPOSE_FILE), "services: {}\n").unwrap();
        let found = discover(&[(Origin::Builtin, &builtin), (Origin::User, &user)]);
        assert_eq!(
            found.keys().cloned().collect::<Vec<_>>(),
            vec!["mine", "monitoring", "web-demo"]
        );
        assert_eq!(found["web-demo"].origin, Origin::User);
        assert_eq!(found["monitoring"].origin, Origin::Builtin);
        assert_eq!(found["mine"].description(), "A stack. Two lines.");
        let err = find(&found, "nosuch").unwrap_err().to_string();
        assert_eq!(
            err,
            "no stack named \"nosuch\"; there are: mine, monitoring, web-demo"
        );
    }

    #[test]
    fn a_service_is_in_step_only_once_its_update_completed() {
        assert!(in_step("2/2", ""));
        assert!(in_step("2/2", "completed"));
        assert!(!in_step("2/2", "updating"));
        assert!(!in_step("2/2", "paused"));
        assert!(!in_step("1/2", "completed"));
    }

    #[test]
    fn replicas_count_as_running_only_when_all_are() {
        assert!(replicas_running("1/1"));
        assert!(replicas_running("3/3 (max 1 per node)"));
        assert!(!replicas_running("2/3"));
        assert!(!replicas_running("0/0"));
        assert!(!replicas_running(""));
    }

    #[test]
    fn missing_images_name_the_service_the_image_and_the_directory() {
        let e = StackError::MissingImages {
            path: "/etc/cluster-lab/stacks/mine/stack.yml".into(),
            images_dir: "/etc/cluster-lab/stacks/mine/images".into(),
            missing: vec![("app".into(), "192.168.200.1:5000/me/app:1".into())],
        };
        assert_eq!(
            e.to_string(),
            "/etc/cluster-lab/stacks/mine/stack.yml: service app needs image 192.168.200.1:5000/me/app:1, which no \
             archive in /etc/cluster-lab/stacks/mine/images holds (nothing was deployed)"
        );
    }
}
