//! `cargo xtask test`: the whole suite, one visible step per tier.
//!
//! Tiers: `lint` (fmt, clippy), `plain` (no root), `root` (root, inside network namespaces the tests create).
//! Root-tier test binaries are named `root_*`; the plain tier runs everything else. A tier that cannot run
//! (root tier without root, no tests found) fails the run.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use xshell::{cmd, Shell};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    /// cargo fmt --check and cargo clippy -D warnings.
    Lint,
    /// Tests that need no privileges: parsing, rendering, allocators, disk-image code on fixtures.
    Plain,
    /// Tests that need root: network namespaces with real DHCP clients and servers.
    Root,
}

#[derive(Debug, Args)]
pub struct Test {
    /// Tiers to run, in order (default: all).
    #[arg(long = "tier", value_enum)]
    tiers: Vec<Tier>,
}

impl Test {
    pub fn run(self, sh: &Shell) -> Result<()> {
        let tiers = if self.tiers.is_empty() {
            vec![Tier::Lint, Tier::Plain, Tier::Root]
        } else {
            self.tiers
        };
        for tier in tiers {
            match tier {
                Tier::Lint => {
                    step("lint: cargo fmt --check");
                    cmd!(sh, "cargo fmt --all --check").run()?;
                    step("lint: cargo clippy -D warnings");
                    cmd!(sh, "cargo clippy --workspace --all-targets -- -D warnings").run()?;
                }
                Tier::Plain => {
                    step("tier 1: plain tests (no root)");
                    cmd!(
                        sh,
                        "cargo nextest run --workspace --no-fail-fast -E not(binary(/^root_/))"
                    )
                    .run()?;
                    cmd!(sh, "cargo test --workspace --doc").run()?;
                }
                Tier::Root => {
                    step("tier 2: root tests in network namespaces");
                    if !nix_is_root() {
                        bail!("the root tier needs root (network namespaces); run `sudo -E cargo xtask test --tier root`");
                    }
                    cmd!(
                        sh,
                        "cargo nextest run --workspace --no-fail-fast -E binary(/^root_/)"
                    )
                    .run()?;
                }
            }
        }
        Ok(())
    }
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

fn nix_is_root() -> bool {
    // SAFETY-free check: /proc/self/status holds the effective uid in the second field of `Uid:`.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}
