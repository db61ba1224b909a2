//! Where the image's Consul comes from: Debian bullseye's `consul` package (default, works offline), or an
//! official HashiCorp release archive verified against its SHA256SUMS.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::recipe::hex;
use cluster_lab_image::arch::Arch;
use cluster_lab_image::host_tools as tools;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsulSource {
    /// `consul` from Debian bullseye (pinned in the recipe's apt preferences).
    Debian,
    /// A HashiCorp release zip and its SHA256SUMS, both local files.
    Zip { zip: PathBuf, sums: PathBuf },
    /// A HashiCorp release version, downloaded from releases.hashicorp.com.
    Version(String),
}

/// A Consul binary taken out of a verified release archive.
#[derive(Debug, Clone)]
pub struct VerifiedConsul {
    pub sha256: String,
    pub binary: PathBuf,
}

impl ConsulSource {
    /// Download (for `Version`), verify and extract. `None` for the Debian package.
    pub fn prepare(&self, arch: Arch, work: &Path) -> Result<Option<VerifiedConsul>> {
        let (zip, sums) = match self {
            ConsulSource::Debian => return Ok(None),
            ConsulSource::Zip { zip, sums } => (zip.clone(), sums.clone()),
            ConsulSource::Version(v) => download(v, arch, work)?,
        };
        let sha256 = verify(&zip, &sums)?;
        let binary = work.join("consul");
        extract(&zip, &binary)?;
        cluster_lab_image::elf::require_machine(&binary, arch)
            .with_context(|| format!("{} does not hold a Consul for {arch}", zip.display()))?;
        Ok(Some(VerifiedConsul { sha256, binary }))
    }
}

/// Check `zip` against its line in `sums` (`<sha256>  <file name>`); returns the digest.
pub fn verify(zip: &Path, sums: &Path) -> Result<String> {
    let name = zip
        .file_name()
        .context("the consul zip path has no file name")?
        .to_string_lossy()
        .into_owned();
    let sums_text =
        std::fs::read_to_string(sums).with_context(|| format!("reading {}", sums.display()))?;
    let expected = sums_text
        .lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(_, f)| f.trim().trim_start_matches('*') == name)
        .map(|(h, _)| h.to_ascii_lowercase())
        .with_context(|| format!("{} has no line for {name}", sums.display()))?;
    let mut file =
        std::fs::File::open(zip).with_context(|| format!("opening {}", zip.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut file, &mut h).with_context(|| format!("reading {}", zip.display()))?;
    let actual = hex(&h.finalize());
    if actual != expected {
        bail!(
            "{} does not match {}: sha256 is {actual}, expected {expected} (corrupt or wrong download?)",
            zip.display(),
            sums.display()
        );
    }
    Ok(actual)
}

/// Take the `consul` executable out of a release zip.
fn extract(zip: &Path, out: &Path) -> Result<()> {
    let file = std::fs::File::open(zip).with_context(|| format!("opening {}", zip.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip archive", zip.display()))?;
    let mut entry = archive
        .by_name("consul")
        .with_context(|| format!("{} has no `consul` file at its top level", zip.display()))?;
    let mut data = Vec::new();
    entry
        .read_to_end(&mut data)
        .with_context(|| format!("unpacking consul from {}", zip.display()))?;
    std::fs::write(out, &data).with_context(|| format!("writing {}", out.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn download(version: &str, arch: Arch, work: &Path) -> Result<(PathBuf, PathBuf)> {
    if !version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        || !version.starts_with(|c: char| c.is_ascii_digit())
    {
        bail!("--consul-version {version}: expected a version like 1.20.1");
    }
    tools::require(&[tools::CURL])?;
    let base = format!("https://releases.hashicorp.com/consul/{version}");
    let zip_name = format!("consul_{version}_linux_{}.zip", arch.hashicorp());
    let sums_name = format!("consul_{version}_SHA256SUMS");
    let mut paths = Vec::new();
    for name in [&zip_name, &sums_name] {
        let url = format!("{base}/{name}");
        let path = work.join(name);
        eprintln!("base: downloading {url}");
        let out = std::process::Command::new("curl")
            .args([
                "--fail",
                "--location",
                "--silent",
                "--show-error",
                "--max-time",
                "300",
                "-o",
            ])
            .arg(&path)
            .arg(&url)
            .output()
            .context("running curl")?;
        if !out.status.success() {
            bail!(
                "downloading {url} failed: {}\n\
                 Without internet access, download {zip_name} and {sums_name} elsewhere and pass \
                 --consul-zip PATH --consul-sha256sums PATH, or drop the option to use Debian's consul.",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        paths.push(path);
    }
    Ok((paths.remove(0), paths.remove(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn make_zip(dir: &Path, name: &str, member: &str, body: &[u8]) -> PathBuf {
        let path = dir.join(name);
        let mut w = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        w.start_file(member, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(body).unwrap();
        w.finish().unwrap();
        path
    }

    fn sha(path: &Path) -> String {
        hex(&Sha256::digest(std::fs::read(path).unwrap()))
    }

    #[test]
    fn verify_accepts_matching_and_rejects_tampered() {
        let dir = tempfile::tempdir().unwrap();
        let zip = make_zip(
            dir.path(),
            "consul_1.0.0_linux_arm64.zip",
            "consul",
            b"binary",
        );
        let sums = dir.path().join("SHA256SUMS");
        std::fs::write(
            &sums,
            format!(
                "{}  consul_1.0.0_linux_amd64.zip\n{}  consul_1.0.0_linux_arm64.zip\n",
                "0".repeat(64),
                sha(&zip)
            ),
        )
        .unwrap();
        assert_eq!(verify(&zip, &sums).unwrap(), sha(&zip));

        std::fs::write(
            &sums,
            format!("{}  consul_1.0.0_linux_arm64.zip\n", "1".repeat(64)),
        )
        .unwrap();
        let err = verify(&zip, &sums).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");

        std::fs::write(&sums, "").unwrap();
        let err = verify(&zip, &sums).unwrap_err().to_string();
        assert!(
            err.contains("has no line for consul_1.0.0_linux_arm64.zip"),
            "{err}"
        );
    }

    #[test]
    fn prepare_checks_the_binary_architecture() {
        let dir = tempfile::tempdir().unwrap();
        // A real x86-64 ELF (this test binary) is accepted for amd64 and refused for arm64.
        let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let zip = make_zip(dir.path(), "consul_1.0.0_linux_amd64.zip", "consul", &elf);
        let sums = dir.path().join("SHA256SUMS");
        std::fs::write(
            &sums,
            format!("{}  consul_1.0.0_linux_amd64.zip\n", sha(&zip)),
        )
        .unwrap();
        let src = ConsulSource::Zip {
            zip: zip.clone(),
            sums: sums.clone(),
        };
        if cfg!(target_arch = "x86_64") {
            let got = src.prepare(Arch::Amd64, dir.path()).unwrap().unwrap();
            assert_eq!(got.sha256, sha(&zip));
            assert_eq!(std::fs::read(&got.binary).unwrap(), elf);
        }
        let err = format!("{:#}", src.prepare(Arch::Arm64, dir.path()).unwrap_err());
        assert!(err.contains("AArch64"), "{err}");

        let bad = make_zip(dir.path(), "other.zip", "README", b"x");
        std::fs::write(&sums, format!("{}  other.zip\n", sha(&bad))).unwrap();
        let src = ConsulSource::Zip { zip: bad, sums };
        let err = format!("{:#}", src.prepare(Arch::Amd64, dir.path()).unwrap_err());
        assert!(err.contains("no `consul` file"), "{err}");
    }

    #[test]
    fn version_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let err = ConsulSource::Version("../x".into())
            .prepare(Arch::Amd64, dir.path())
            .unwrap_err();
        assert!(err.to_string().contains("expected a version"), "{err}");
    }
}
