//! `cargo xtask bench flash`: the same image written to the same targets by `dd bs=4M conv=fsync`, by bmaptool
//! (with the map `bmaptool create` makes) and by cluster-lab's flash (with the image's own block map), each
//! followed by the same read-back check of what it wrote, timed apart.
//!
//! Targets: a file on this machine's disk, and a "card": a loop device over a file served through
//! qemu-storage-daemon's throttle filter (a FUSE export), so writes and reads run at an SD card's speed whoever
//! issues them, buffered or direct. The card is not cleared between tools: like a real card, it keeps whatever
//! the last one wrote where the next one writes nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use cluster_lab_image::blockmap::{BlockMap, MappedRange};
use cluster_lab_image::flash::{self, Target};
use cluster_lab_image::output::sha256_file;
use xshell::{cmd, Shell};

use super::{machine, report};

/// The section of docs/benchmarks.md this bench writes.
pub const HEADING: &str = "## Flashing (`cargo xtask bench flash`)";

#[derive(Debug, Args)]
pub struct Flash {
    /// Raw image to write (default: the newest build/image/cluster-lab-*.img).
    #[arg(long)]
    image: Option<PathBuf>,
    /// The card's write speed, MB/s (10^6 bytes).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=2000))]
    card_write_mbps: u64,
    /// The card's read speed, MB/s.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u64).range(1..=2000))]
    card_read_mbps: u64,
    /// Print the table only; leave docs/benchmarks.md alone.
    #[arg(long)]
    no_record: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    Dd,
    Bmaptool,
    ClusterLab,
}

impl Tool {
    fn label(self) -> &'static str {
        match self {
            Tool::Dd => "`dd bs=4M conv=fsync`",
            Tool::Bmaptool => "`bmaptool copy`",
            Tool::ClusterLab => "`cargo xtask flash`",
        }
    }
}

/// One tool on one target.
#[derive(Debug, Clone)]
pub struct Run {
    target: &'static str,
    tool: Tool,
    written: u64,
    write: Duration,
    verify: Duration,
}

impl Run {
    fn total(&self) -> Duration {
        self.write + self.verify
    }
}

impl Flash {
    pub fn run(self, sh: &Shell) -> Result<()> {
        if cmd!(sh, "id -u").quiet().read()? != "0" {
            bail!("bench flash needs root (loop devices, a FUSE export, dropping the page cache); run it with sudo");
        }
        for tool in ["bmaptool", "qemu-storage-daemon", "losetup", "dd"] {
            if cmd!(sh, "which {tool}")
                .quiet()
                .ignore_stdout()
                .run()
                .is_err()
            {
                bail!("{tool} is missing: install bmap-tools, qemu-utils and util-linux (bash ci/deps.sh does)");
            }
        }
        let image = match self.image {
            Some(i) => i,
            None => newest_image()?,
        };
        let image =
            std::fs::canonicalize(&image).with_context(|| format!("image {}", image.display()))?;
        let work = Path::new("build/bench-flash");
        std::fs::create_dir_all(work).context("creating build/bench-flash")?;
        let work = std::fs::canonicalize(work)?;

        eprintln!("==> block maps of {}", image.display());
        let ours = BlockMap::of_image(&image)?;
        let theirs_path = work.join("bmaptool.bmap");
        cmd!(sh, "bmaptool create -o {theirs_path} {image}")
            .quiet()
            .run()?;
        let theirs = BlockMap::parse_bmap(&std::fs::read_to_string(&theirs_path)?, &theirs_path)?;
        let whole = BlockMap {
            image_size: ours.image_size,
            block_size: ours.block_size,
            ranges: vec![MappedRange {
                first: 0,
                last: ours.image_size.div_ceil(ours.block_size) - 1,
                sha256: sha256_file(&image)?,
            }],
        };
        let compare = Compare::of(&ours, &theirs);
        let image_size = ours.image_size;
        let maps = Maps {
            ours,
            theirs,
            theirs_path,
            whole,
        };
        let m = machine::describe(sh, &work);
        let date = cmd!(sh, "date -u '+%Y-%m-%d %H:%M UTC'").quiet().read()?;

        let mut runs = Vec::new();
        let file = work.join("target.img");
        for tool in [Tool::Dd, Tool::Bmaptool, Tool::ClusterLab] {
            let _ = std::fs::remove_file(&file);
            eprintln!("==> {} to a file", tool.label());
            runs.push(one(sh, "file", tool, &image, &file, false, &maps)?);
        }
        let card = Card::start(&work, image_size, self.card_write_mbps, self.card_read_mbps)?;
        for tool in [Tool::Dd, Tool::Bmaptool, Tool::ClusterLab] {
            eprintln!("==> {} to the card ({})", tool.label(), card.dev.display());
            // What the tool before wrote must not pass this tool's check for it.
            let r = card
                .scrub()
                .and_then(|()| one(sh, "card", tool, &image, &card.dev, true, &maps));
            match r {
                Ok(r) => runs.push(r),
                Err(e) => {
                    card.stop();
                    return Err(e);
                }
            }
        }
        card.stop();

        let section = render(&Rendered {
            date: &date,
            machine: &m,
            image: &image,
            image_size,
            compare: &compare,
            runs: &runs,
            write_mbps: self.card_write_mbps,
            read_mbps: self.card_read_mbps,
        });
        report::publish(&section, !self.no_record)
    }
}

/// The three tools' maps: the image's own, bmaptool's (and its file), and the whole image (dd).
struct Maps {
    ours: BlockMap,
    theirs: BlockMap,
    theirs_path: PathBuf,
    whole: BlockMap,
}

fn one(
    sh: &Shell,
    target_name: &'static str,
    tool: Tool,
    image: &Path,
    target: &Path,
    card: bool,
    maps: &Maps,
) -> Result<Run> {
    let Maps {
        ours,
        theirs,
        whole,
        ..
    } = maps;
    drop_caches()?;
    let start = Instant::now();
    let (map, direct, written) = match tool {
        Tool::Dd => {
            let oflag = if card { vec!["oflag=direct"] } else { vec![] };
            cmd!(
                sh,
                "dd if={image} of={target} bs=4M conv=fsync {oflag...} status=none"
            )
            .quiet()
            .run()?;
            (whole, card, whole.mapped_bytes())
        }
        Tool::Bmaptool => {
            let bmap = &maps.theirs_path;
            cmd!(sh, "bmaptool -q copy --bmap {bmap} {image} {target}")
                .quiet()
                .run()?;
            (theirs, card, theirs.mapped_bytes())
        }
        Tool::ClusterLab => {
            let t = if card {
                flash::check_target(target, image)?
            } else {
                Target::File {
                    path: target.into(),
                }
            };
            let written = flash::write_blocks(image, ours, &t)?;
            (ours, flash::direct_io(ours, &t), written)
        }
    };
    let write = start.elapsed();
    drop_caches()?;
    let start = Instant::now();
    map.verify(target, direct, &|_| {})
        .with_context(|| format!("{} to the {target_name}: read-back", tool.label()))?;
    let verify = start.elapsed();
    let run = Run {
        target: target_name,
        tool,
        written,
        write,
        verify,
    };
    eprintln!(
        "    {} MiB in {:.1} s, read back in {:.1} s",
        run.written >> 20,
        run.write.as_secs_f64(),
        run.verify.as_secs_f64()
    );
    Ok(run)
}

fn drop_caches() -> Result<()> {
    Command::new("sync").status().context("sync")?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache")
}

fn newest_image() -> Result<PathBuf> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir("build/image")
        .context("no build/image: build an image first (cargo xtask image), or pass --image")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("cluster-lab-") && n.ends_with(".img")
        })
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, p)| p)
        .context("no build/image/cluster-lab-*.img: build one (cargo xtask image), or pass --image")
}

/// How the two block maps differ.
#[derive(Debug, Clone, Copy, Default)]
pub struct Compare {
    pub ours: u64,
    pub theirs: u64,
    /// Mapped by us only: a filesystem uses them but the image file holds a hole (zeros) there.
    pub ours_only: u64,
    /// Mapped by bmaptool only: data in the file where no filesystem uses it.
    pub theirs_only: u64,
}

impl Compare {
    pub fn of(ours: &BlockMap, theirs: &BlockMap) -> Compare {
        let blocks = |m: &BlockMap| -> Vec<bool> {
            let n = m.image_size.div_ceil(m.block_size) as usize;
            let mut v = vec![false; n];
            for r in &m.ranges {
                for b in r.first..=r.last {
                    // Both maps count in 4 KiB blocks here (bmaptool's default and ours).
                    if let Some(x) = v.get_mut(b as usize) {
                        *x = true;
                    }
                }
            }
            v
        };
        let (a, b) = (blocks(ours), blocks(theirs));
        let bs = ours.block_size;
        let count = |f: &dyn Fn(bool, bool) -> bool| {
            a.iter().zip(&b).filter(|(x, y)| f(**x, **y)).count() as u64 * bs
        };
        Compare {
            ours: ours.mapped_bytes(),
            theirs: theirs.mapped_bytes(),
            ours_only: count(&|x, y| x && !y),
            theirs_only: count(&|x, y| !x && y),
        }
    }
}

/// What the card holds before each tool writes it: neither zeros nor anything an image holds much of, so a block
/// a tool should have written but did not fails the read-back check.
const SCRUB: u8 = 0xA5;

/// A throttled block device: qemu-storage-daemon serves `card.img` through a throttle group as a FUSE file,
/// and a loop device makes that file a disk.
struct Card {
    daemon: Child,
    backing: PathBuf,
    size: u64,
    mountpoint: PathBuf,
    dev: PathBuf,
}

impl Card {
    fn start(work: &Path, size: u64, write_mbps: u64, read_mbps: u64) -> Result<Card> {
        let backing = work.join("card.img");
        let mountpoint = work.join("card-export.img");
        // Sized to this image every time (an earlier run's card may be another size); its contents are kept.
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&backing)?
            .set_len(size)?;
        std::fs::File::create(&mountpoint)?;
        let (w, r) = (write_mbps * 1_000_000, read_mbps * 1_000_000);
        let daemon = Command::new("qemu-storage-daemon")
            .args([
                "--object",
                &format!("throttle-group,id=card,x-bps-write={w},x-bps-read={r}"),
                "--blockdev",
                &format!(
                    "driver=file,node-name=disk,filename={},cache.direct=on,aio=native",
                    backing.display()
                ),
                "--blockdev",
                "driver=throttle,node-name=slow,throttle-group=card,file=disk",
                "--export",
                &format!(
                    "type=fuse,id=card,node-name=slow,mountpoint={},writable=on",
                    mountpoint.display()
                ),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-storage-daemon")?;
        let mut card = Card {
            daemon,
            backing,
            size,
            mountpoint,
            dev: PathBuf::new(),
        };
        // The export is up when the mount point has the disk's size.
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&card.mountpoint)
            .map(|m| m.len())
            .unwrap_or(0)
            != size
        {
            if Instant::now() > deadline {
                card.stop();
                bail!("qemu-storage-daemon did not export the card within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&card.mountpoint)
            .output()
            .context("losetup")?;
        if !out.status.success() {
            let e = String::from_utf8_lossy(&out.stderr).to_string();
            let at = card.mountpoint.display().to_string();
            card.stop();
            bail!("losetup --find --show {at}: {e}");
        }
        card.dev = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(card)
    }

    /// Fill the card with [`SCRUB`] bytes, written to its backing file directly (not at the card's speed) and
    /// synced; the loop device's cached pages are dropped before the next write anyway.
    fn scrub(&self) -> Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.backing)
            .with_context(|| format!("opening {}", self.backing.display()))?;
        let chunk = vec![SCRUB; 4 << 20];
        let mut left = self.size;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])
                .with_context(|| format!("scrubbing {}", self.backing.display()))?;
            left -= n as u64;
        }
        f.sync_all()
            .with_context(|| format!("syncing {}", self.backing.display()))?;
        Ok(())
    }

    fn stop(mut self) {
        if !self.dev.as_os_str().is_empty() {
            let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = Command::new("umount").arg(&self.mountpoint).status();
    }
}

pub struct Rendered<'a> {
    pub date: &'a str,
    pub machine: &'a machine::Machine,
    pub image: &'a Path,
    pub image_size: u64,
    pub compare: &'a Compare,
    runs: &'a [Run],
    pub write_mbps: u64,
    pub read_mbps: u64,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

fn render(r: &Rendered<'_>) -> String {
    use std::fmt::Write as _;
    let m = r.machine;
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "Measured {} with `cargo xtask bench flash` on {} cores ({}), {:.1} GiB, Linux {}; 1-minute load average {} \
         at the start. Image: `{}`, {}.\n",
        r.date,
        m.cores,
        m.cpu,
        m.mem_gib,
        m.kernel,
        m.load,
        r.image.file_name().unwrap_or_default().to_string_lossy(),
        mib(r.image_size)
    );
    let _ = writeln!(
        s,
        "| Target | Tool | Written | Write | Read-back check | Total | vs dd | vs bmaptool |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    for run in r.runs {
        let peer = |t: Tool| {
            r.runs
                .iter()
                .find(|x| x.target == run.target && x.tool == t)
                .map(|x| x.total().as_secs_f64() / run.total().as_secs_f64())
                .map_or("n/a".into(), |v| format!("{v:.2}×"))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} s | {:.1} s | {:.1} s | {} | {} |",
            run.target,
            run.tool.label(),
            mib(run.written),
            run.write.as_secs_f64(),
            run.verify.as_secs_f64(),
            run.total().as_secs_f64(),
            peer(Tool::Dd),
            peer(Tool::Bmaptool)
        );
    }
    let c = r.compare;
    let _ = writeln!(
        s,
        "\n\"vs dd\" and \"vs bmaptool\" are the peer's total time divided by this row's (above 1: this row is faster). \
         The card is a loop device over a file that qemu-storage-daemon serves through its throttle filter at {} MB/s \
         writing and {} MB/s reading, an SD card's speeds; the file target is a plain file on the host's disk. The card is \
         filled with 0xA5 bytes before each tool writes it, so what one tool wrote cannot pass the next one's check; \
         the file target is a new file for each tool. The page cache is dropped before every write and every check. dd writes the whole image (`oflag=direct` on the card); \
         bmaptool writes what `bmaptool create` maps; cluster-lab writes the image's block map (the file `cargo xtask \
         image` writes beside it), O_DIRECT on a card; to a new file it leaves runs of zeros as holes, and Written \
         counts what it really wrote. Each tool's write is then checked the same way: every byte it \
         wrote read back from the target past the page cache and hashed against the image (one SHA-256 for dd, one per \
         range for the other two). cluster-lab's flash does that check itself; for the peers the bench does it.\n",
        r.write_mbps, r.read_mbps
    );
    let _ = writeln!(
        s,
        "The two block maps: cluster-lab's maps {}, bmaptool's {}. cluster-lab's alone maps {}: blocks the image's \
         filesystems use but the image file holds as holes (the ext4 journal and inode tables, all zeros), which \
         must read as zeros on the card; bmaptool skips them, so a re-used card keeps its old bytes there. \
         bmaptool's alone maps {}: data in the image file where no filesystem uses it.",
        mib(c.ours),
        mib(c.theirs),
        mib(c.ours_only),
        mib(c.theirs_only)
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(size_blocks: u64, ranges: &[(u64, u64)]) -> BlockMap {
        BlockMap {
            image_size: size_blocks * 4096,
            block_size: 4096,
            ranges: ranges
                .iter()
                .map(|&(first, last)| MappedRange {
                    first,
                    last,
                    sha256: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_maps_are_compared_block_by_block() {
        let c = Compare::of(&map(10, &[(0, 0), (2, 5)]), &map(10, &[(0, 3), (8, 8)]));
        assert_eq!(c.ours, 5 * 4096);
        assert_eq!(c.theirs, 5 * 4096);
        assert_eq!(c.ours_only, 2 * 4096, "blocks 4 and 5");
        assert_eq!(c.theirs_only, 2 * 4096, "blocks 1 and 8");
    }

    #[test]
    fn the_table_has_ratios_to_both_peers() {
        let run = |target, tool, secs| Run {
            target,
            tool,
            written: 100 << 20,
            write: Duration::from_secs(secs),
            verify: Duration::from_secs(1),
        };
        let runs = [
            run("card", Tool::Dd, 39),
            run("card", Tool::Bmaptool, 19),
            run("card", Tool::ClusterLab, 9),
        ];
        let text = render(&Rendered {
            date: "2026-12-07 04:00 UTC",
            machine: &machine::Machine::default(),
            image: Path::new("/x/cluster-lab-arm64.img"),
            image_size: 1 << 30,
            compare: &Compare::default(),
            runs: &runs,
            write_mbps: 30,
            read_mbps: 80,
        });
        assert!(text.starts_with(HEADING), "{text}");
        assert!(
            text.contains("| card | `cargo xtask flash` | 100.0 MiB | 9.0 s | 1.0 s | 10.0 s | 4.00× | 2.00× |"),
            "{text}"
        );
        assert!(text.contains("| card | `dd bs=4M conv=fsync` | 100.0 MiB | 39.0 s | 1.0 s | 40.0 s | 1.00× | 0.50× |"), "{text}");
    }
}
