//! cargo xtask: the project's build, image and test tasks. `cargo xtask --help` lists them.

use anyhow::Result;
use clap::{Parser, Subcommand};
use xshell::Shell;

mod agent;
mod bench;
mod flash;
mod image;
mod test;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "cluster-lab build, image and test tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Run the whole test suite, tier by tier (fmt, clippy, plain, root in netns, image).
    Test(test::Test),
    /// Cross-compile the cluster-lab agent for a board (armhf, arm64, amd64) and check the binary.
    Agent(agent::Agent),
    /// Build a base image (Debian trixie, Docker, Consul, SSH, Avahi) for an architecture; cached by recipe hash.
    Base(base::Base),
    /// Make the flashable image: inject the agent, overlays and a cluster-lab.toml (fresh secret) into a base.
    Image(image::Image),
    /// Write an image to an SD card or file, verify it, and set the card's hostname and SSH keys.
    Flash(flash::Flash),
    /// Boot the image as a virtual cluster in QEMU (up, down, status, ssh) and run its acceptance test.
    Cluster(vmlab::Cluster),
    /// Benchmarks that print numbers and record them in docs/benchmarks.md (`bench dhcp`, `bench flash`, `bench election`).
    Bench(bench::Bench),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // The error chain, not a backtrace: these are messages for a person (what failed, on what, what to do).
            eprintln!("xtask: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    match cli.task {
        Task::Test(t) => t.run(&sh),
        Task::Agent(t) => t.run(&sh),
        Task::Base(t) => t.run(),
        Task::Image(t) => t.run(&sh),
        Task::Flash(t) => t.run(&sh),
        Task::Bench(t) => t.run(&sh),
        Task::Cluster(t) => t.run(),
    }
}

/// The workspace root (the parent of xtask/).
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
