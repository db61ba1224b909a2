//! Build a disk image from two directory trees with `assemble::build_disk`:
//! `cargo run -p cluster-lab-image --example build_disk -- OUT.img BOOT_DIR BOOT_MIB ROOT_DIR [ROOT_MIB]`
//! (no root needed; run as root to keep the owners of ROOT_DIR). Used for benchmarks and fixtures.

use std::path::PathBuf;

use cluster_lab_image::assemble::{build_disk, Labels};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: build_disk OUT.img BOOT_DIR BOOT_MIB ROOT_DIR [ROOT_MIB]");
        std::process::exit(2);
    }
    let mib = |s: &str| s.parse::<u64>().expect("size in MiB") << 20;
    let started = std::time::Instant::now();
    match build_disk(
        &PathBuf::from(&args[0]),
        &PathBuf::from(&args[1]),
        mib(&args[2]),
        &PathBuf::from(&args[3]),
        args.get(4).map(|s| mib(s)),
        &Labels::default(),
    ) {
        Ok(layout) => eprintln!(
            "built {} ({} MiB) in {:.1} s: boot {}, root {}",
            args[0],
            layout.size >> 20,
            started.elapsed().as_secs_f64(),
            layout.boot,
            layout.root
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
