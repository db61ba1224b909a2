//! The machine's timezone, from the card's user-data (`timezone: Europe/Berlin`): `/etc/localtime` a link to the
//! zone in `/usr/share/zoneinfo` (tzdata), `/etc/timezone` its name, as Debian's tzdata configures them.

use std::path::{Path, PathBuf};

use super::render::RenderedFile;
use crate::plan::Plan;

/// Where tzdata keeps the zones.
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// A zone name such as `Europe/Berlin`, `UTC` or `America/Argentina/Buenos_Aires`: letters, digits, `_ + -`, parts
/// joined by `/`, nothing that leaves the zoneinfo directory.
pub fn check_name(tz: &str) -> Result<(), String> {
    let parts_ok = tz.split('/').all(|p| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'))
    });
    if tz.is_empty() || !parts_ok {
        return Err(format!(
            "timezone {tz:?} is not a zone name such as \"Europe/Berlin\" or \"UTC\""
        ));
    }
    Ok(())
}

/// Point `/etc/localtime` at `tz` and write `/etc/timezone` under `root` (or, with a `plan`, say so). Returns
/// whether anything changed, or why it cannot be done (an unknown zone: the caller warns and goes on).
pub fn apply(root: &Path, tz: &str, plan: Option<&Plan>) -> Result<bool, String> {
    check_name(tz)?;
    let zone = PathBuf::from(ZONEINFO).join(tz);
    if !root.join(zone.strip_prefix("/").unwrap_or(&zone)).is_file() {
        return Err(format!("timezone {tz:?}: no such zone in {ZONEINFO}"));
    }
    let localtime = root.join("etc/localtime");
    let linked = std::fs::read_link(&localtime).ok().as_deref() == Some(zone.as_path());
    let name_file = RenderedFile {
        path: PathBuf::from("/etc/timezone"),
        contents: format!("{tz}\n"),
        mode: 0o644,
        group: None,
    };
    let named = std::fs::read_to_string(name_file.target(root))
        .ok()
        .as_deref()
        == Some(name_file.contents.as_str());
    if linked && named {
        return Ok(false);
    }
    if let Some(plan) = plan {
        plan.note(format!(
            "would set the timezone to {tz} (/etc/localtime, /etc/timezone)"
        ));
        return Ok(true);
    }
    if !linked {
        // A new link beside the old one, renamed over it: never a moment without /etc/localtime.
        let tmp = root.join("etc/.localtime.cluster-lab-tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&zone, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &localtime))
            .map_err(|e| format!("linking {} to {}: {e}", localtime.display(), zone.display()))?;
    }
    name_file
        .install(root)
        .map_err(|e| format!("writing /etc/timezone: {e}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root_with_zone(tz: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let zone = root.path().join("usr/share/zoneinfo").join(tz);
        std::fs::create_dir_all(zone.parent().unwrap()).unwrap();
        std::fs::write(&zone, b"TZif2").unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(
            "/usr/share/zoneinfo/Etc/UTC",
            root.path().join("etc/localtime"),
        )
        .unwrap();
        root
    }

    #[test]
    fn sets_link_and_name_once() {
        let root = root_with_zone("Europe/Berlin");
        let r = root.path();
        assert_eq!(apply(r, "Europe/Berlin", None), Ok(true));
        assert_eq!(
            std::fs::read_link(r.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Europe/Berlin")
        );
        assert_eq!(
            std::fs::read_to_string(r.join("etc/timezone")).unwrap(),
            "Europe/Berlin\n"
        );
        assert_eq!(apply(r, "Europe/Berlin", None), Ok(false));
    }

    #[test]
    fn unknown_or_escaping_zones_are_refused_and_change_nothing() {
        let root = root_with_zone("Europe/Berlin");
        let r = root.path();
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "Europe//Berlin",
            "Europe/Berlin ",
            "",
        ] {
            let err = apply(r, bad, None).unwrap_err();
            assert!(err.contains("is not a zone name"), "{bad}: {err}");
        }
        let err = apply(r, "Mars/Olympus_Mons", None).unwrap_err();
        assert!(err.contains("no such zone"), "{err}");
        assert_eq!(
            std::fs::read_link(r.join("etc/localtime")).unwrap(),
            Path::new("/usr/share/zoneinfo/Etc/UTC")
        );
    }
}
