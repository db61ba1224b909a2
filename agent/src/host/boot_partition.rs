//! The boot partition: the FAT partition labelled `CLBOOT`, mounted at /boot/firmware, that holds
//! cluster-lab.toml. On a slow SD card udev can create its device link minutes after userspace starts, so first
//! boot waits for it itself (bounded, saying so on the console) instead of failing with its mount.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The partition's FAT label, as `cargo xtask base` writes it and /etc/fstab mounts it.
pub const LABEL: &str = "CLBOOT";
/// Where /etc/fstab mounts it.
pub const MOUNT_POINT: &str = "/boot/firmware";
/// How long first boot waits for it: a slow card on a Pi Zero 2 W or Pi 3 can take minutes.
pub const WAIT: Duration = Duration::from_secs(10 * 60);

/// The device link udev creates for the partition.
pub fn device() -> PathBuf {
    Path::new("/dev/disk/by-label").join(LABEL)
}

/// Whether `mount_point` is a mount point, from a mountinfo text (`/proc/self/mountinfo`).
pub fn is_mounted(mountinfo: &str, mount_point: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == mount_point)
}

/// Whether the boot partition is mounted now.
fn mounted() -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|m| is_mounted(&m, MOUNT_POINT))
        .unwrap_or(false)
}

/// Wait until `find` finds cluster-lab.toml on the boot partition, up to `timeout`, while the partition is not
/// mounted yet: once it is mounted, a missing file is an answer, not a reason to wait. With `mount`, mounts the
/// partition as /etc/fstab says once its device exists (the mount unit may have given up on a slow card).
/// Prints one console line when it starts waiting and one when it is done.
pub fn wait_for(
    find: impl Fn() -> Option<PathBuf>,
    timeout: Duration,
    mount: bool,
) -> Option<PathBuf> {
    wait_while(find, timeout, mount, mounted)
}

fn wait_while(
    find: impl Fn() -> Option<PathBuf>,
    timeout: Duration,
    mount: bool,
    mounted: impl Fn() -> bool,
) -> Option<PathBuf> {
    if let Some(p) = find() {
        return Some(p);
    }
    if mounted() {
        return None;
    }
    let start = Instant::now();
    eprintln!(
        "cluster-lab: waiting for the boot partition ({} at {MOUNT_POINT}) to hold cluster-lab.toml, up to {} s",
        device().display(),
        timeout.as_secs()
    );
    // First boot reads its settings before its async runtime exists: this wait gets a small one of its own, so
    // it goes through the one bounded poll like every other wait.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cluster-lab: cannot wait for the boot partition: starting a runtime: {e}");
            return find();
        }
    };
    let mount_error = std::cell::RefCell::new(None::<String>);
    let (find, mounted, mount_error) = (&find, &mounted, &mount_error);
    let found = runtime.block_on(crate::wait::poll(
        timeout,
        Duration::from_secs(2),
        move || async move {
            if let Some(p) = find() {
                return Ok::<_, std::convert::Infallible>(Ok(Some(p)));
            }
            if mounted() {
                // Mounted (by systemd or by us) and still no file: there is none.
                return Ok(Ok(find()));
            }
            if mount && device().exists() {
                if let Err(e) = crate::command::run("mount", [MOUNT_POINT]).await {
                    let e = e.to_string();
                    if mount_error.borrow().as_ref() != Some(&e) {
                        eprintln!("cluster-lab: {e}");
                        *mount_error.borrow_mut() = Some(e);
                    }
                }
            }
            Ok(Err("not yet".to_string()))
        },
    ));
    match found {
        Ok(Some(p)) => {
            eprintln!(
                "cluster-lab: boot partition ready after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            Some(p)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:2 / / rw,noatime shared:1 - ext4 /dev/vda2 rw,errors=remount-ro
31 22 254:1 / /boot/firmware rw,relatime shared:14 - vfat /dev/vda1 rw,fmask=0077,dmask=0077
40 22 0:35 / /boot/firmware-old rw shared:20 - tmpfs tmpfs rw
";

    #[test]
    fn mount_point_from_mountinfo() {
        assert!(is_mounted(MOUNTINFO, "/boot/firmware"));
        assert!(is_mounted(MOUNTINFO, "/"));
        assert!(!is_mounted(MOUNTINFO, "/boot"));
        assert!(!is_mounted("", "/boot/firmware"));
    }

    #[test]
    fn found_at_once_does_not_wait() {
        let t = Instant::now();
        let p = wait_while(
            || Some(PathBuf::from("/x")),
            Duration::from_secs(60),
            false,
            || false,
        );
        assert_eq!(p, Some(PathBuf::from("/x")));
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn gives_up_after_the_timeout() {
        assert_eq!(
            wait_while(|| None, Duration::from_millis(10), false, || false),
            None
        );
    }

    #[test]
    fn finds_it_when_it_appears() {
        let n = std::cell::Cell::new(0);
        let p = wait_while(
            || {
                n.set(n.get() + 1);
                (n.get() > 1).then(|| PathBuf::from("/late"))
            },
            Duration::from_secs(30),
            false,
            || false,
        );
        assert_eq!(p, Some(PathBuf::from("/late")));
    }

    #[test]
    fn a_mounted_partition_without_the_file_is_an_answer_at_once() {
        let t = Instant::now();
        assert_eq!(
            wait_while(|| None, Duration::from_secs(60), false, || true),
            None
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
