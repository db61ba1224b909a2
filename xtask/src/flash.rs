//! `cargo xtask flash`: write an image to an SD card (or a file), verify it, and give the card its
//! hostname and SSH keys in the boot partition's `cluster-lab.toml`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use cluster_lab_config::edit;
use cluster_lab_image::flash;
use xshell::Shell;

#[derive(Debug, Args)]
pub struct Flash {
    /// Hostname of this card's machine: one RFC 1123 label (letters, digits, '-'), e.g. node1.
    #[arg(long)]
    pub hostname: String,
    /// OpenSSH public key file (e.g. ~/.ssh/id_ed25519.pub); its keys replace [node] ssh_authorized_keys.
    #[arg(long)]
    pub ssh_key: Option<PathBuf>,
    /// Do not ask for confirmation before overwriting TARGET.
    #[arg(long)]
    pub yes: bool,
    /// The image: OUT.img from `cargo xtask image` (or .img.xz / .img.zst, which need OUT.img.bmap beside them).
    /// Only the blocks its block map (OUT.img.bmap, or made from a raw image) names are written and read back.
    pub image: PathBuf,
    /// Block device of the SD card (e.g. /dev/sdb, /dev/mmcblk0) or a file to write.
    pub target: PathBuf,
}

impl Flash {
    pub fn run(self, _sh: &Shell) -> Result<()> {
        edit::validate_hostname(&self.hostname)?;
        let keys = match &self.ssh_key {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading SSH key file {}", p.display()))?;
                Some(
                    edit::parse_ssh_keys(&text)
                        .with_context(|| format!("reading SSH key file {}", p.display()))?,
                )
            }
            None => None,
        };
        if !self.image.is_file() {
            bail!(
                "image {} does not exist (build one with `cargo xtask image`)",
                self.image.display()
            );
        }
        let target =
            flash::check_target(&self.target, &self.image).context("checking the target")?;
        let what = match &target {
            flash::Target::BlockDevice { path, size } => {
                format!(
                    "block device {} ({:.1} GB)",
                    path.display(),
                    *size as f64 / 1e9
                )
            }
            flash::Target::File { path } => format!("file {}", path.display()),
        };
        if !self.yes {
            confirm(&what)?;
        }

        eprintln!("==> writing {} to {what}", self.image.display());
        let written = flash::write(&self.image, &target).context("writing the image")?;
        eprintln!(
            "    {} MiB of data in {} runs written, read back and verified (the image is {} MiB; block map {})",
            written.data_bytes >> 20,
            written.ranges,
            written.image_bytes >> 20,
            written.map_source
        );

        eprintln!(
            "==> setting hostname {:?} in cluster-lab.toml",
            self.hostname
        );
        flash::personalise(target.path(), &self.hostname, keys.as_deref())
            .context("editing cluster-lab.toml on the boot partition")?;
        if let Some(k) = &keys {
            eprintln!("    {} SSH key(s) set", k.len());
        }
        if let flash::Target::BlockDevice { path, .. } = &target {
            // Last, so nothing automounts the new partitions while they are being edited.
            if let Err(e) = flash::reread_partitions(path) {
                eprintln!("    note: the kernel did not re-read the partition table ({e}); replug the card");
            }
        }
        eprintln!("==> done: {} is ready", target.path().display());
        Ok(())
    }
}

/// Ask on the terminal; without one, refuse (use --yes in scripts).
fn confirm(what: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to overwrite {what} without confirmation: no terminal to ask on; pass --yes"
        );
    }
    eprint!("Everything on {what} will be overwritten. Type 'yes' to continue: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    if answer.trim() != "yes" {
        bail!("not confirmed; nothing was written");
    }
    Ok(())
}
