//! What first boot leaves in `/var/lib/cluster-lab/`: the role once decided (so a power cut after the election
//! never leads to a second election), on the master the swarm its completed `swarm init` made, and the stamp that
//! keeps `cluster-lab-firstboot.service` from running again.

use std::path::{Path, PathBuf};

use crate::election::ClusterRole;
use crate::host::render::{RenderError, RenderedFile};

/// State directory (the unit's `StateDirectory=cluster-lab`).
pub const STATE_DIR: &str = "/var/lib/cluster-lab";
/// The stamp named in the unit's `ConditionPathExists=!`.
pub const DONE: &str = "/var/lib/cluster-lab/firstboot.done";
/// The decided role.
pub const ROLE: &str = "/var/lib/cluster-lab/role";
/// The cluster ID of the swarm the master's `swarm init` made, written once the init returned: a swarm without it
/// is one a power cut interrupted.
pub const SWARM_MADE: &str = "/var/lib/cluster-lab/swarm-made";
/// Why first boot stopped for good (a reboot alone cannot fix it): read by `cluster-lab status`.
pub const STOPPED: &str = "/var/lib/cluster-lab/firstboot.stopped";

fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The role decided on an earlier (maybe interrupted) run.
pub fn read_role(root: &Path) -> Result<Option<ClusterRole>, RenderError> {
    let path = under(root, ROLE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim() {
            "master" => Ok(Some(ClusterRole::Master)),
            "node" => Ok(Some(ClusterRole::Node)),
            // A torn or foreign file: decide again rather than trust it.
            _ => Ok(None),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RenderError::Io {
            action: "reading",
            path,
            source,
        }),
    }
}

fn file(path: &str, contents: String) -> RenderedFile {
    RenderedFile {
        path: PathBuf::from(path),
        contents,
        mode: 0o644,
        group: None,
    }
}

/// Remember the decided role (atomically).
pub fn write_role(root: &Path, role: ClusterRole) -> Result<bool, RenderError> {
    let name = match role {
        ClusterRole::Master => "master",
        ClusterRole::Node => "node",
    };
    file(ROLE, format!("{name}\n")).install(root)
}

/// The swarm a completed `swarm init` on this machine made (its cluster ID).
pub fn read_swarm_made(root: &Path) -> Option<String> {
    std::fs::read_to_string(under(root, SWARM_MADE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Remember the swarm a completed `swarm init` made (atomically).
pub fn write_swarm_made(root: &Path, cluster_id: &str) -> Result<bool, RenderError> {
    file(SWARM_MADE, format!("{cluster_id}\n")).install(root)
}

pub fn is_done(root: &Path) -> bool {
    under(root, DONE).exists()
}

/// Write the stamp; `summary` (one line) says what first boot did.
pub fn mark_done(root: &Path, summary: &str) -> Result<bool, RenderError> {
    clear_stopped(root);
    file(DONE, format!("{summary}\n")).install(root)
}

/// Remember why first boot stopped (one line), for `cluster-lab status`.
pub fn mark_stopped(root: &Path, reason: &str) -> Result<bool, RenderError> {
    file(STOPPED, format!("{}\n", reason.trim())).install(root)
}

/// Why an earlier run of first boot stopped, if one did.
pub fn read_stopped(root: &Path) -> Option<String> {
    std::fs::read_to_string(under(root, STOPPED))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A new run starts: what stopped the last one is history.
pub fn clear_stopped(root: &Path) {
    let _ = std::fs::remove_file(under(root, STOPPED));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_and_stamp_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_role(dir.path()).unwrap(), None);
        assert!(write_role(dir.path(), ClusterRole::Node).unwrap());
        assert!(!write_role(dir.path(), ClusterRole::Node).unwrap());
        assert_eq!(read_role(dir.path()).unwrap(), Some(ClusterRole::Node));
        std::fs::write(dir.path().join("var/lib/cluster-lab/role"), "mas").unwrap();
        assert_eq!(read_role(dir.path()).unwrap(), None);
        assert!(!is_done(dir.path()));
        assert_eq!(read_swarm_made(dir.path()), None);
        assert!(write_swarm_made(dir.path(), "abc123").unwrap());
        assert_eq!(read_swarm_made(dir.path()).as_deref(), Some("abc123"));
        mark_stopped(dir.path(), "the switch drops tags\n").unwrap();
        assert_eq!(
            read_stopped(dir.path()).as_deref(),
            Some("the switch drops tags")
        );
        mark_done(dir.path(), "master ready").unwrap();
        assert!(is_done(dir.path()));
        assert_eq!(read_stopped(dir.path()), None);
    }

    #[test]
    fn stamp_path_is_the_units_condition() {
        let unit =
            include_str!("../../../overlays/usr/lib/systemd/system/cluster-lab-firstboot.service");
        assert!(unit.contains(&format!("ConditionPathExists=!{DONE}\n")));
        assert!(unit.contains("StateDirectory=cluster-lab\n"));
        assert_eq!(Path::new(DONE).parent(), Some(Path::new(STATE_DIR)));
    }
}
