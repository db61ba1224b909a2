//! Logging setup: one line per step on stderr, no timestamps (journald adds them), structured fields.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Initialise logging. `verbose` raises the default level (0 = info, 1 = debug, 2+ = trace);
/// `CLUSTER_LAB_LOG` (an `EnvFilter` directive) overrides it.
pub fn init(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("CLUSTER_LAB_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: journald and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .try_init();
}
