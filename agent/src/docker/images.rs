//! Container images that ship inside the cluster-lab image (`docker save` archives in
//! `/usr/lib/cluster-lab/images`, put there by `cargo xtask image`), loaded into dockerd on first boot so services
//! can run without a registry. An archive whose tags dockerd already has is skipped, so loading is safe to repeat.

use std::path::{Path, PathBuf};

use bollard::query_parameters::ImportImageOptions;
use bollard::Docker;
use futures_util::TryStreamExt;

/// Where the image builder puts the archives.
pub const DIR: &str = "/usr/lib/cluster-lab/images";

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("{path}: listing preloaded images: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: reading the image archive: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a `docker save` archive: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: asking dockerd about {tag}: {source}")]
    Inspect {
        path: PathBuf,
        tag: String,
        source: bollard::errors::Error,
    },
    #[error("{path}: loading into dockerd (docker load): {source}")]
    Load {
        path: PathBuf,
        source: bollard::errors::Error,
    },
    #[error("{path}: dockerd loaded the archive but has no {tag} afterwards")]
    Missing { path: PathBuf, tag: String },
}

/// What [`load_preloaded`] did, archive by archive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Archives loaded into dockerd.
    pub loaded: Vec<PathBuf>,
    /// Archives whose tags dockerd already had.
    pub skipped: Vec<PathBuf>,
    /// Every tag of every archive, loaded or skipped: what the engine now has from the card.
    pub tags: Vec<String>,
}

/// One entry of `manifest.json`.
#[derive(Debug, serde::Deserialize)]
struct ManifestEntry {
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
}

/// The repository tags named by the archive's `manifest.json`.
pub fn repo_tags(path: &Path, archive: &[u8]) -> Result<Vec<String>, ImagesError> {
    let format = |reason: String| ImagesError::Format {
        path: path.into(),
        reason,
    };
    let mut tar = tar::Archive::new(archive);
    let entries = tar.entries().map_err(|e| format(e.to_string()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format(e.to_string()))?;
        let is_manifest = entry
            .path()
            .map(|p| p.as_os_str() == "manifest.json")
            .unwrap_or(false);
        if !is_manifest {
            continue;
        }
        let manifest: Vec<ManifestEntry> =
            serde_json::from_reader(entry).map_err(|e| format(format!("manifest.json: {e}")))?;
        let tags: Vec<String> = manifest
            .into_iter()
            .flat_map(|m| m.repo_tags.unwrap_or_default())
            .collect();
        if tags.is_empty() {
            return Err(format(
                "manifest.json names no RepoTags (untagged images cannot be found after loading)"
                    .into(),
            ));
        }
        return Ok(tags);
    }
    Err(format("no manifest.json".into()))
}

/// Whether dockerd has `tag`.
async fn has_image(docker: &Docker, path: &Path, tag: &str) -> Result<bool, ImagesError> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(source) => Err(ImagesError::Inspect {
            path: path.into(),
            tag: tag.into(),
            source,
        }),
    }
}

/// Whether an archive whose tags dockerd already has is loaded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Skip it: the card's archives never change under a tag (first boot).
    IfMissing,
    /// Load it anyway: a user's archive may hold a rebuilt image under the same tag (stacks).
    Always,
}

/// Load every `*.tar` in `dir` (in name order) into dockerd, skipping archives whose tags it already has, and check
/// the tags exist afterwards. A missing directory holds nothing to load.
pub async fn load_preloaded(docker: &Docker, dir: &Path) -> Result<LoadReport, ImagesError> {
    load_dir(docker, dir, Reload::IfMissing).await
}

/// Load every `*.tar` in `dir` (in name order) into dockerd as `reload` says, and check the tags exist afterwards.
/// A missing directory holds nothing to load.
pub async fn load_dir(
    docker: &Docker,
    dir: &Path,
    reload: Reload,
) -> Result<LoadReport, ImagesError> {
    let list_err = |source| ImagesError::List {
        path: dir.into(),
        source,
    };
    let mut archives: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(read) => read
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(list_err)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(list_err(e)),
    };
    archives.retain(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file());
    archives.sort();

    let mut report = LoadReport::default();
    for path in archives {
        let data = tokio::fs::read(&path)
            .await
            .map_err(|source| ImagesError::Read {
                path: path.clone(),
                source,
            })?;
        let tags = repo_tags(&path, &data)?;
        let mut all_present = true;
        for tag in &tags {
            all_present &= has_image(docker, &path, tag).await?;
        }
        report.tags.extend(tags.iter().cloned());
        if all_present && reload == Reload::IfMissing {
            tracing::info!(archive = %path.display(), ?tags, "image already loaded");
            report.skipped.push(path);
            continue;
        }
        let size = data.len();
        docker
            .import_image(
                ImportImageOptions {
                    quiet: true,
                    ..Default::default()
                },
                bollard::body_full(data.into()),
                None,
            )
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| ImagesError::Load {
                path: path.clone(),
                source,
            })?;
        for tag in &tags {
            if !has_image(docker, &path, tag).await? {
                return Err(ImagesError::Missing {
                    path: path.clone(),
                    tag: tag.clone(),
                });
            }
        }
        tracing::info!(archive = %path.display(), ?tags, bytes = size, "image loaded");
        report.loaded.push(path);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn tags_come_from_the_manifest() {
        let a = archive(&[
            ("abc.json", b"{}"),
            (
                "manifest.json",
                br#"[{"Config":"abc.json","RepoTags":["cluster-lab/busybox:latest"],"Layers":["x/layer.tar"]}]"#,
            ),
        ]);
        assert_eq!(
            repo_tags(Path::new("b.tar"), &a).unwrap(),
            vec!["cluster-lab/busybox:latest".to_string()]
        );
    }

    #[test]
    fn archives_without_manifest_or_tags_are_refused_with_their_path() {
        let none = archive(&[("abc.json", b"{}")]);
        let err = repo_tags(Path::new("/x/none.tar"), &none)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/x/none.tar: ") && err.contains("no manifest.json"),
            "{err}"
        );

        let untagged = archive(&[("manifest.json", br#"[{"Config":"a.json","RepoTags":null}]"#)]);
        let err = repo_tags(Path::new("/x/untagged.tar"), &untagged)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no RepoTags"), "{err}");

        let bad = archive(&[("manifest.json", b"{not json")]);
        let err = repo_tags(Path::new("/x/bad.tar"), &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("manifest.json:"), "{err}");
    }
}
