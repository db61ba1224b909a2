//! Inject benchmark: time unpacking a base and injecting a payload (agent-sized file, overlays/,
//! cluster-lab.toml) into it, separately, several runs; compression is not part of it.
//!
//! `cargo run --release -p cluster-lab-image --example bench_inject -- BASE [RUNS] [AGENT_BYTES]`
//! Prints one line per run and the median; the working copy goes next to BASE and is removed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use cluster_lab_config::edit;
use cluster_lab_image::disk;
use cluster_lab_image::inject::{self, Payload};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(base) = args.first().map(PathBuf::from) else {
        eprintln!("usage: bench_inject BASE [RUNS] [AGENT_BYTES]");
        std::process::exit(2);
    };
    let runs: usize = args.get(1).map_or(3, |s| s.parse().expect("RUNS"));
    let agent_bytes: usize = args
        .get(2)
        .map_or(9_000_000, |s| s.parse().expect("AGENT_BYTES"));
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = dir.path().join("agent");
    // Pseudo-random content so nothing about the payload is special-cased.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..agent_bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&agent, data).expect("writing agent");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut payload = Payload::default();
    payload.add_agent(&agent).unwrap();
    payload.add_overlay(&root.join("overlays")).unwrap();
    let cfg = edit::set_secret(cluster_lab_config::DEFAULT_TOML, &edit::random_secret()).unwrap();
    payload.add_boot_file(cluster_lab_config::FILE_NAME, cfg.into_bytes());

    let work = base.with_file_name(".bench-inject.img");
    let (mut unpacks, mut injects) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let t = Instant::now();
        let size = disk::unpack(&base, &work).expect("unpacking");
        let u = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let done = inject::inject(&work, &payload).expect("injecting");
        let i = t.elapsed().as_secs_f64();
        println!(
            "run {run}: image {} MiB, unpack {u:.2} s, inject {i:.2} s ({} root entries, {} boot file, fsck included)",
            size >> 20,
            done.root_entries,
            done.boot_files
        );
        unpacks.push(u);
        injects.push(i);
    }
    let _ = std::fs::remove_file(&work);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!(
        "median of {runs}: unpack {:.2} s, inject {:.2} s, agent {agent_bytes} bytes",
        median(&mut unpacks),
        median(&mut injects)
    );
}
