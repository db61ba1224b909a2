//! Progress bars for long steps (decompressing, copying, compressing, flashing), on stderr.

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-count bar with `msg` in front; hidden automatically when stderr is not a terminal.
pub fn bytes(len: u64, msg: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar.set_message(msg.to_string());
    bar
}
