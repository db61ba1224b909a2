//! The base-image recipe under `image/recipe/`: package lists, apt sources and pin, boot files,
//! mmdebstrap hooks and the files copied into the root. Its hash is the cache key of a base build.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use cluster_lab_image::arch::Arch;

/// Bump when `cargo xtask base` changes what it builds from the same recipe (the cache key covers it).
pub const BASE_BUILDER_VERSION: u32 = 2;

#[derive(Debug, Clone)]
pub struct Recipe {
    pub dir: PathBuf,
}

impl Recipe {
    pub fn new(dir: PathBuf) -> Result<Recipe> {
        for needed in [
            "packages/common.txt",
            "apt/sources.list",
            "apt/preferences",
            "hooks/setup.sh",
        ] {
            if !dir.join(needed).is_file() {
                bail!(
                    "base recipe incomplete: {} is missing (is {} a cluster-lab checkout?)",
                    dir.join(needed).display(),
                    dir.display()
                );
            }
        }
        Ok(Recipe { dir })
    }

    /// Packages for `arch`: packages/common.txt then packages/<arch>.txt, comments and blanks dropped.
    pub fn packages(&self, arch: Arch) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for name in ["common".to_string(), arch.debian().to_string()] {
            let path = self.dir.join("packages").join(format!("{name}.txt"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading package list {}", path.display()))?;
            out.extend(parse_package_list(&text, &path)?);
        }
        Ok(out)
    }

    /// The apt sources for mmdebstrap, with `@MIRROR@` filled in.
    pub fn sources(&self, mirror: &str) -> Result<String> {
        let path = self.dir.join("apt/sources.list");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok(text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| l.replace("@MIRROR@", mirror.trim_end_matches('/')))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n")
    }

    /// Hash of every file in the recipe (relative path, executable bit, contents) plus `extra` inputs.
    pub fn hash(&self, extra: &[(&str, &str)]) -> Result<String> {
        let mut files = Vec::new();
        collect_files(&self.dir, &mut files)?;
        files.sort();
        let mut h = Sha256::new();
        h.update(format!("cluster-lab base v{BASE_BUILDER_VERSION}\n"));
        for f in &files {
            use std::os::unix::fs::PermissionsExt;
            let rel = f.strip_prefix(&self.dir).unwrap_or(f);
            let meta =
                std::fs::symlink_metadata(f).with_context(|| format!("reading {}", f.display()))?;
            let body = if meta.file_type().is_symlink() {
                std::fs::read_link(f)?
                    .to_string_lossy()
                    .into_owned()
                    .into_bytes()
            } else {
                std::fs::read(f).with_context(|| format!("reading {}", f.display()))?
            };
            h.update(format!(
                "file {} {:o} {}\n",
                rel.display(),
                meta.permissions().mode() & 0o111,
                body.len()
            ));
            h.update(&body);
        }
        for (k, v) in extra {
            h.update(format!("{k}={v}\n"));
        }
        Ok(hex(&h.finalize())[..16].to_string())
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// One Debian package name per line; `#` starts a comment. Names are checked so a typo fails here, with
/// file and line, rather than deep inside mmdebstrap.
pub fn parse_package_list(text: &str, path: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        let valid = name.len() >= 2
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !valid {
            bail!(
                "{}:{}: `{name}` is not a Debian package name (lowercase letters, digits, + - .; one per line)",
                path.display(),
                i + 1
            );
        }
        out.push(name.to_string());
    }
    Ok(out)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_comments_and_errors() {
        let p = Path::new("packages/common.txt");
        let got =
            parse_package_list("# head\nsystemd\n\n docker.io  # engine\nlibstdc++6\n", p).unwrap();
        assert_eq!(got, ["systemd", "docker.io", "libstdc++6"]);
        let err = parse_package_list("systemd\nDocker IO\n", p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("packages/common.txt:2"), "{err}");
    }

    #[test]
    fn shipped_recipe_loads_for_every_arch() {
        let r = Recipe::new(crate::project_root().join("image/recipe")).unwrap();
        for arch in [Arch::Amd64, Arch::Arm64, Arch::Armhf] {
            let pk = r.packages(arch).unwrap();
            assert!(pk.iter().any(|p| p == "docker.io"), "{arch}: {pk:?}");
            assert!(
                pk.iter().any(|p| p.starts_with("linux-image-")),
                "{arch}: {pk:?}"
            );
        }
        let s = r.sources("http://mirror.example/debian/").unwrap();
        assert!(
            s.contains("deb http://mirror.example/debian trixie main"),
            "{s}"
        );
        assert!(
            s.contains("deb http://mirror.example/debian trixie-updates main")
                && s.contains("deb http://mirror.example/debian-security trixie-security main"),
            "{s}"
        );
        assert!(s.contains("bullseye"), "{s}");
    }

    #[test]
    fn hash_changes_with_inputs() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "packages/common.txt",
            "apt/sources.list",
            "apt/preferences",
            "hooks/setup.sh",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "x\n").unwrap();
        }
        let r = Recipe::new(dir.path().into()).unwrap();
        let a = r.hash(&[("arch", "amd64")]).unwrap();
        assert_eq!(a, r.hash(&[("arch", "amd64")]).unwrap());
        assert_ne!(a, r.hash(&[("arch", "arm64")]).unwrap());
        std::fs::write(dir.path().join("packages/common.txt"), "y\n").unwrap();
        assert_ne!(a, r.hash(&[("arch", "amd64")]).unwrap());
    }
}
