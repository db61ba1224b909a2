//! Publishing a finished image: `OUT.img`, a compressed copy and `OUT.sha256`, each written under a
//! temporary name and renamed only when complete, so an interrupted build leaves nothing that looks done.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{IoContext, Result};
use crate::progress;

/// How the distributable copy is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `.img.zst`, multi-threaded zstd at this level (1–19).
    Zstd(i32),
    /// `.img.xz`, xz at this preset (0–9), multi-threaded.
    Xz(u32),
    /// No compressed copy.
    None,
}

impl Compression {
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::Zstd(_) => Some("img.zst"),
            Compression::Xz(_) => Some("img.xz"),
            Compression::None => None,
        }
    }
}

/// The files a build produced.
#[derive(Debug, Clone)]
pub struct Published {
    pub image: PathBuf,
    pub compressed: Option<PathBuf>,
    /// `OUT.img.bmap`: the blocks a card needs, in bmaptool's format.
    pub bmap: PathBuf,
    /// Bytes the block map says to write.
    pub mapped_bytes: u64,
    pub checksums: PathBuf,
    pub image_sha256: String,
    pub image_size: u64,
    pub compressed_size: Option<u64>,
    pub compressed_sha256: Option<String>,
}

/// `OUT` + `.ext`, keeping dots in OUT (e.g. `cluster-lab-arm64` → `cluster-lab-arm64.img`).
pub fn with_ext(out: &Path, ext: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn partial(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Remove the outputs of an earlier build at `out`, so a failing build cannot leave them looking like
/// its own result.
pub fn remove_previous(out: &Path) -> Result<()> {
    let mut stale = Vec::new();
    for ext in [
        "img",
        "img.zst",
        "img.xz",
        "img.bmap",
        "sha256",
        "rpi-imager.json",
    ] {
        let p = with_ext(out, ext);
        // Leftovers of an interrupted build, too.
        stale.push(partial(&p));
        stale.push(p);
    }
    stale.push(crate::inject::temp_path(out, "img"));
    for p in stale {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).at(&p, "removing previous output"),
        }
    }
    Ok(())
}

/// Hash the finished raw image `work` (and compress it, unless `Compression::None`), then rename
/// everything into place: `OUT.img`, `OUT.img.zst|xz`, `OUT.img.bmap` (its block map, for `cargo xtask flash` and
/// `bmaptool copy`), and last `OUT.sha256` (sha256sum format).
pub fn publish(work: &Path, out: &Path, compression: Compression) -> Result<Published> {
    let partials = [
        compression.extension().map(|e| partial(&with_ext(out, e))),
        Some(partial(&with_ext(out, "img.bmap"))),
        Some(partial(&with_ext(out, "sha256"))),
    ];
    let result = publish_inner(work, out, compression);
    if result.is_err() {
        for p in partials.iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
    }
    result
}

fn publish_inner(work: &Path, out: &Path, compression: Compression) -> Result<Published> {
    let image = with_ext(out, "img");
    let image_size = std::fs::metadata(work)
        .at(work, "reading image size")?
        .len();
    let compressed = compression.extension().map(|e| with_ext(out, e));
    let mut hasher = Sha256::new();
    let mut compressed_hash = None;
    let mut compressed_size = None;

    let input = File::open(work).at(work, "opening finished image")?;
    let bar = progress::bytes(
        image_size,
        match compression {
            Compression::None => "hashing",
            _ => "compressing",
        },
    );
    let mut reader = bar.wrap_read(input);
    let mut buf = vec![0u8; 1 << 20];
    match (compression, &compressed) {
        (Compression::None, _) | (_, None) => loop {
            let n = reader.read(&mut buf).at(work, "reading finished image")?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        },
        (c, Some(dest)) => {
            let tmp = partial(dest);
            // Owner only from the start: it holds the cluster secret.
            let file = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .at(&tmp, "creating compressed image")?
            };
            let hashing = HashingWriter::new(BufWriter::with_capacity(1 << 20, file));
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            let mut enc: Box<dyn FinishWrite<HashingWriter<BufWriter<File>>>> = match c {
                Compression::Zstd(level) => {
                    let mut e = zstd::Encoder::new(hashing, level).at(&tmp, "starting zstd")?;
                    e.multithread(threads).at(&tmp, "starting zstd workers")?;
                    e.include_checksum(true).at(&tmp, "starting zstd")?;
                    e.set_pledged_src_size(Some(image_size))
                        .at(&tmp, "starting zstd")?;
                    Box::new(e)
                }
                Compression::Xz(preset) => {
                    let stream = liblzma::stream::MtStreamBuilder::new()
                        .preset(preset)
                        .threads(threads)
                        .check(liblzma::stream::Check::Crc64)
                        .encoder()
                        .map_err(std::io::Error::other)
                        .at(&tmp, "starting xz")?;
                    Box::new(liblzma::write::XzEncoder::new_stream(hashing, stream))
                }
                Compression::None => unreachable!("handled above"),
            };
            loop {
                let n = reader.read(&mut buf).at(work, "reading finished image")?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                enc.write_all(&buf[..n])
                    .at(&tmp, "writing compressed image")?;
            }
            let mut hashing = enc.finish_box().at(&tmp, "finishing compressed image")?;
            hashing.flush().at(&tmp, "writing compressed image")?;
            let (writer, digest, size) = hashing.into_parts();
            writer
                .into_inner()
                .map_err(|e| e.into_error())
                .at(&tmp, "writing compressed image")?
                .sync_all()
                .at(&tmp, "syncing compressed image")?;
            compressed_hash = Some(digest);
            compressed_size = Some(size);
        }
    }
    bar.finish_and_clear();
    let image_sha256 = hex(&hasher.finalize());

    let checksums = with_ext(out, "sha256");
    let mut lines = format!("{image_sha256}  {}\n", file_name(&image));
    if let (Some(c), Some(h)) = (&compressed, &compressed_hash) {
        lines.push_str(&format!("{h}  {}\n", file_name(c)));
    }
    let bmap = with_ext(out, "img.bmap");
    let bmap_tmp = partial(&bmap);
    let map = crate::blockmap::BlockMap::of_image(work)?;
    std::fs::write(&bmap_tmp, map.to_bmap()).at(&bmap_tmp, "writing block map")?;
    let sums_tmp = partial(&checksums);
    std::fs::write(&sums_tmp, lines).at(&sums_tmp, "writing checksums")?;

    // The image carries the cluster secret in its cluster-lab.toml: readable by its owner only.
    set_private(work)?;
    if let Some(c) = &compressed {
        set_private(&partial(c))?;
    }
    std::fs::rename(work, &image).at(&image, "renaming finished image")?;
    if let Some(c) = &compressed {
        std::fs::rename(partial(c), c).at(c, "renaming compressed image")?;
    }
    std::fs::rename(&bmap_tmp, &bmap).at(&bmap, "renaming block map")?;
    std::fs::rename(&sums_tmp, &checksums).at(&checksums, "renaming checksums")?;
    Ok(Published {
        image,
        bmap,
        mapped_bytes: map.mapped_bytes(),
        compressed,
        checksums,
        image_sha256,
        image_size,
        compressed_size,
        compressed_sha256: compressed_hash,
    })
}

/// Mode 0600: the file holds the cluster secret.
fn set_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .at(path, "making private")
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A compressor that can be finished through a `Box`.
trait FinishWrite<W>: Write {
    fn finish_box(self: Box<Self>) -> std::io::Result<W>;
}

impl<W: Write> FinishWrite<W> for zstd::Encoder<'static, W> {
    fn finish_box(self: Box<Self>) -> std::io::Result<W> {
        (*self).finish()
    }
}

impl<W: Write> FinishWrite<W> for liblzma::write::XzEncoder<W> {
    fn finish_box(self: Box<Self>) -> std::io::Result<W> {
        (*self).finish()
    }
}

/// Counts and hashes what passes through, so the compressed file's checksum needs no second read.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    fn into_parts(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.size)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// sha256 of a whole file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).at(path, "opening file to hash")?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).at(path, "hashing file")?;
    Ok(hex(&h.finalize()))
}
