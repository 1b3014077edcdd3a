//! Fixture images, made locally and written as OCI image layouts (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) that skopeo can push (`oci:DIR:TAG`).
//!
//! - [`Fixture::Busybox`]: one gzip layer with Debian's static `/bin/busybox` and a symlink per
//!   applet (`/bin/sh`, `/bin/echo`, `/bin/date`, `/bin/sleep`, `/bin/httpd`, …), `/etc/passwd`,
//!   `/etc/group`, `/tmp`, `/root`; `Cmd ["sh"]`.
//! - [`Fixture::Layered`]: busybox plus two more layers: the second adds files, the third deletes
//!   some with OCI whiteouts (`/etc/.wh.removed`, `/opt/.wh.gone`, `/data/.wh.b`) and makes
//!   `/cache` opaque (`/cache/.wh..wh..opq`) while adding `/cache/new`.
//! - [`Fixture::MultiArch`]: an index with a linux/amd64 (busybox) and a linux/arm64 entry
//!   (`/arch` says which).
//! - [`Fixture::Zstd`]: busybox with its layer zstd-compressed (`…tar+zstd`).
//! - [`Fixture::Big`]: several layers of generated files for benchmarks.
//!
//! The layout's single tag is `latest`. [`build`] writes a fixture into a directory;
//! [`cached`] builds each fixture once per process.

use anyhow::{Context, Result};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// A fixture image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fixture {
    /// Single-layer busybox.
    Busybox,
    /// Three layers with whiteouts and an opaque directory.
    Layered,
    /// Index with linux/amd64 and linux/arm64.
    MultiArch,
    /// Busybox with a zstd layer.
    Zstd,
    /// Generated files for benchmarks: `layers` layers of `files_per_layer` files each, about
    /// `mb` MB uncompressed in total.
    Big {
        /// Number of layers.
        layers: usize,
        /// Files per layer.
        files_per_layer: usize,
        /// Total uncompressed megabytes (approximate).
        mb: usize,
    },
}

/// The tag a built layout carries.
pub const TAG: &str = "latest";

/// Files every busybox image has besides the applets.
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// What [`build`] made.
#[derive(Clone, Debug)]
pub struct Built {
    /// The layout directory.
    pub dir: PathBuf,
    /// Digest of the top-level manifest or index (what `index.json` points at).
    pub digest: String,
    /// Media type of the top-level document.
    pub media_type: String,
    /// Sum of the compressed layer sizes of every platform.
    pub layer_bytes: u64,
}

impl Built {
    /// `oci:DIR:latest`, skopeo's name for the layout.
    pub fn skopeo_ref(&self) -> String {
        format!("oci:{}:{TAG}", self.dir.display())
    }
}

/// Where [`cached`] builds its fixtures; removed at process exit.
static FIXTURE_ROOT: OnceLock<PathBuf> = OnceLock::new();

/// Builds each fixture once per process (in a temp dir that lives as long as the process).
pub fn cached(f: Fixture) -> Result<Built> {
    static CACHE: OnceLock<Mutex<HashMap<Fixture, Built>>> = OnceLock::new();
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(b) = guard.get(&f) {
        return Ok(b.clone());
    }
    let root = ROOT.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("berth-fixtures").tempdir().expect("tempdir");
        // Statics are never dropped: remove the directory when the process exits instead.
        let _ = FIXTURE_ROOT.set(dir.path().to_path_buf());
        extern "C" fn remove_root() {
            if let Some(p) = FIXTURE_ROOT.get() {
                let _ = std::fs::remove_dir_all(p);
            }
        }
        // SAFETY: registers a plain `extern "C" fn` without arguments, as atexit(3) requires.
        unsafe { libc::atexit(remove_root) };
        dir
    });
    let dir = root.path().join(format!("{f:?}").replace([' ', '{', '}', ':', ','], "_"));
    let b = build(f, &dir)?;
    guard.insert(f, b.clone());
    Ok(b)
}

/// Writes fixture `f` as an OCI layout into `dir` (created if needed).
pub fn build(f: Fixture, dir: &Path) -> Result<Built> {
    let mut l = LayoutWriter::new(dir)?;
    let (digest, media_type) = match f {
        Fixture::Busybox => {
            let layer = l.layer(Compression::Gzip, |t| busybox_tree(t, None))?;
            l.image("amd64", vec![layer], &["sh"])?
        }
        Fixture::Zstd => {
            let layer = l.layer(Compression::Zstd, |t| busybox_tree(t, None))?;
            l.image("amd64", vec![layer], &["sh"])?
        }
        Fixture::Layered => {
            let base = l.layer(Compression::Gzip, |t| busybox_tree(t, None))?;
            let add = l.layer(Compression::Gzip, |t| {
                dir_entry(t, "data")?;
                for n in ["a", "b", "c"] {
                    file(t, &format!("data/{n}"), format!("file {n}\n").as_bytes(), 0o644)?;
                }
                file(t, "etc/removed", b"this file is deleted by the next layer\n", 0o644)?;
                dir_entry(t, "opt")?;
                dir_entry(t, "opt/gone")?;
                file(t, "opt/gone/x", b"x\n", 0o644)?;
                dir_entry(t, "cache")?;
                file(t, "cache/old", b"old\n", 0o644)?;
                file(t, "etc/motd", b"layer two\n", 0o644)
            })?;
            let del = l.layer(Compression::Gzip, |t| {
                file(t, "etc/.wh.removed", b"", 0o644)?;
                file(t, "opt/.wh.gone", b"", 0o644)?;
                file(t, "data/.wh.b", b"", 0o644)?;
                dir_entry(t, "cache")?;
                file(t, "cache/.wh..wh..opq", b"", 0o644)?;
                file(t, "cache/new", b"new\n", 0o644)?;
                file(t, "etc/motd", b"layer three\n", 0o644)
            })?;
            l.image("amd64", vec![base, add, del], &["sh"])?
        }
        Fixture::MultiArch => {
            let amd = l.layer(Compression::Gzip, |t| busybox_tree(t, Some("amd64")))?;
            let arm = l.layer(Compression::Gzip, |t| {
                dir_entry(t, "bin")?;
                file(t, "arch", b"arm64\n", 0o644)?;
                file(t, "bin/sh", b"#!/not-runnable-here\n", 0o755)
            })?;
            let m_amd = l.manifest("amd64", vec![amd], &["sh"])?;
            let m_arm = l.manifest("arm64", vec![arm], &["sh"])?;
            l.index(vec![(m_amd, "amd64", ""), (m_arm, "arm64", "v8")])?
        }
        Fixture::Big { layers, files_per_layer, mb } => {
            let mut ls = Vec::new();
            let per_layer = (mb as u64 * 1_000_000) / layers.max(1) as u64;
            for i in 0..layers {
                ls.push(l.layer(Compression::Gzip, |t| generated_tree(t, i, files_per_layer, per_layer))?);
            }
            l.image("amd64", ls, &["sh"])?
        }
    };
    l.finish(&digest, &media_type)?;
    Ok(Built { dir: dir.to_path_buf(), digest, media_type, layer_bytes: l.layer_bytes })
}

/// Layer compression.
#[derive(Clone, Copy, Debug)]
enum Compression {
    Gzip,
    Zstd,
}

/// A written layer.
#[derive(Clone, Debug)]
struct Layer {
    digest: String,
    size: u64,
    diff_id: String,
    media_type: &'static str,
}

/// Hashes and counts what passes through.
struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hash.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

type Tar<'a> = tar::Builder<Box<dyn Write + 'a>>;

struct LayoutWriter {
    dir: PathBuf,
    layer_bytes: u64,
}

impl LayoutWriter {
    fn new(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Self { dir: dir.to_path_buf(), layer_bytes: 0 })
    }

    fn blob(&self, data: &[u8]) -> Result<(String, u64)> {
        let hex = hex::encode(Sha256::digest(data));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), data)?;
        Ok((format!("sha256:{hex}"), data.len() as u64))
    }

    /// Streams a tar through the compressor into a blob file, hashing both sides.
    fn layer(&mut self, c: Compression, fill: impl FnOnce(&mut Tar<'_>) -> Result<()>) -> Result<Layer> {
        let tmp = self.dir.join("blobs/sha256/.tmp-layer");
        let f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        let outer = HashWriter { inner: f, hash: Sha256::new(), n: 0 };
        let (outer, diff_id) = match c {
            Compression::Gzip => {
                let enc = flate2::write::GzEncoder::new(outer, flate2::Compression::fast());
                let inner = HashWriter { inner: enc, hash: Sha256::new(), n: 0 };
                let (inner, diff) = tar_into(inner, fill)?;
                (inner.finish()?, diff)
            }
            Compression::Zstd => {
                let enc = zstd::Encoder::new(outer, 3)?;
                let inner = HashWriter { inner: enc, hash: Sha256::new(), n: 0 };
                let (inner, diff) = tar_into(inner, fill)?;
                (inner.finish()?, diff)
            }
        };
        let mut outer = outer;
        outer.flush()?;
        let hex = hex::encode(outer.hash.finalize());
        let size = outer.n;
        drop(outer.inner);
        std::fs::rename(&tmp, self.dir.join("blobs/sha256").join(&hex))?;
        self.layer_bytes += size;
        let media_type = match c {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        Ok(Layer { digest: format!("sha256:{hex}"), size, diff_id, media_type })
    }

    /// Writes config + manifest; returns the manifest descriptor parts.
    fn manifest(&self, arch: &str, layers: Vec<Layer>, cmd: &[&str]) -> Result<(String, u64)> {
        let config = serde_json::json!({
            "created": "2026-11-22T00:00:00Z",
            "architecture": arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": cmd,
                "WorkingDir": "/",
                "Labels": {"org.berth.fixture": "true"},
                "ExposedPorts": {"8080/tcp": {}},
                "StopSignal": "SIGTERM"
            },
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
            "history": layers.iter().map(|_| serde_json::json!({"created": "2026-11-22T00:00:00Z", "created_by": "berth-tests fixture"})).collect::<Vec<_>>()
        });
        let (cd, cs) = self.blob(&serde_json::to_vec(&config)?)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>()
        });
        self.blob(&serde_json::to_vec(&manifest)?)
    }

    fn image(&self, arch: &str, layers: Vec<Layer>, cmd: &[&str]) -> Result<(String, String)> {
        let (d, _) = self.manifest(arch, layers, cmd)?;
        Ok((d, "application/vnd.oci.image.manifest.v1+json".into()))
    }

    fn index(&self, entries: Vec<((String, u64), &str, &str)>) -> Result<(String, String)> {
        let manifests: Vec<_> = entries
            .into_iter()
            .map(|((d, s), arch, variant)| {
                let mut p = serde_json::json!({"architecture": arch, "os": "linux"});
                if !variant.is_empty() {
                    p["variant"] = variant.into();
                }
                serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": s, "platform": p})
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests
        });
        let (d, _) = self.blob(&serde_json::to_vec(&index)?)?;
        Ok((d, "application/vnd.oci.image.index.v1+json".into()))
    }

    fn finish(&self, digest: &str, media_type: &str) -> Result<()> {
        let size = std::fs::metadata(self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:")))?.len();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": media_type, "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": TAG}
            }]
        });
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index)?)?;
        Ok(())
    }
}

/// Runs `fill` on a tar writing into `w`, returns `w` and the diff ID.
fn tar_into<W: Write>(w: HashWriter<W>, fill: impl FnOnce(&mut Tar<'_>) -> Result<()>) -> Result<(W, String)> {
    // The tar builder needs ownership; share the HashWriter through a RefCell-free trick: write
    // the tar into the HashWriter by value, then take it back with into_inner.
    struct Owned<W: Write>(Option<HashWriter<W>>);
    impl<W: Write> Write for &mut Owned<W> {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.as_mut().expect("writer").write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.as_mut().expect("writer").flush()
        }
    }
    let mut owned = Owned(Some(w));
    {
        let boxed: Box<dyn Write + '_> = Box::new(&mut owned);
        let mut t = tar::Builder::new(boxed);
        t.mode(tar::HeaderMode::Deterministic);
        fill(&mut t)?;
        t.finish()?;
    }
    let hw = owned.0.take().expect("writer");
    Ok((hw.inner, format!("sha256:{}", hex::encode(hw.hash.finalize()))))
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

fn dir_entry(t: &mut Tar<'_>, path: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    t.append_data(&mut h, format!("{path}/"), std::io::empty())?;
    Ok(())
}

fn file(t: &mut Tar<'_>, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    t.append_data(&mut h, path, data)?;
    Ok(())
}

fn symlink(t: &mut Tar<'_>, path: &str, target: &str) -> Result<()> {
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    t.append_link(&mut h, path, target)?;
    Ok(())
}

/// The applets busybox offers (`busybox --list`), or a fixed set if that fails.
fn applets() -> Vec<String> {
    let out = std::process::Command::new("/bin/busybox").arg("--list").output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty() && *l != "busybox" && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.[".contains(&b))
            })
            .map(str::to_string)
            .collect(),
        _ => ["sh", "echo", "date", "sleep", "httpd", "ls", "cat", "true", "false", "env", "id", "wget", "ps"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

/// `/bin/busybox` + applet symlinks + minimal /etc; with `arch`, also `/arch`.
fn busybox_tree(t: &mut Tar<'_>, arch: Option<&str>) -> Result<()> {
    let bb = std::fs::read("/bin/busybox").context("reading /bin/busybox (install busybox-static)")?;
    for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev", "var", "var/www"] {
        dir_entry(t, d)?;
    }
    file(t, "bin/busybox", &bb, 0o755)?;
    for a in applets() {
        symlink(t, &format!("bin/{a}"), "busybox")?;
    }
    file(t, "etc/passwd", PASSWD.as_bytes(), 0o644)?;
    file(t, "etc/group", GROUP.as_bytes(), 0o644)?;
    file(t, "etc/hostname", b"berth\n", 0o644)?;
    file(t, "var/www/index.html", b"hello from berth fixture\n", 0o644)?;
    if let Some(a) = arch {
        file(t, "arch", format!("{a}\n").as_bytes(), 0o644)?;
    }
    Ok(())
}

/// A deterministic pseudo-random generator (xorshift64*), to make compressible-but-not-trivial
/// file contents quickly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// `files` files spread over directories, `bytes` in total: half random bytes, half text, so it
/// compresses about like real binaries and text do.
fn generated_tree(t: &mut Tar<'_>, layer: usize, files: usize, bytes: u64) -> Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (layer as u64 + 1).wrapping_mul(0x1234_5678_9abc_def1));
    let avg = (bytes / files.max(1) as u64).max(1);
    let top = format!("layer{layer}");
    dir_entry(t, &top)?;
    let dirs = files.div_ceil(200);
    for d in 0..dirs {
        dir_entry(t, &format!("{top}/d{d:03}"))?;
    }
    let mut buf = Vec::new();
    for i in 0..files {
        // Sizes from avg/8 to ~2*avg, skewed small like real trees.
        let size = (avg / 8 + rng.next() % (avg * 2)) as usize;
        buf.clear();
        buf.reserve(size);
        while buf.len() < size {
            let r = rng.next();
            if r.is_multiple_of(2) {
                buf.extend_from_slice(&r.to_le_bytes());
                buf.extend_from_slice(&rng.next().to_le_bytes());
            } else {
                buf.extend_from_slice(b"lorem ipsum berth ");
            }
        }
        buf.truncate(size);
        file(t, &format!("{top}/d{:03}/f{i:06}", i / 200), &buf, 0o644)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_layouts() {
        let dir = tempfile::tempdir().unwrap();
        for f in [Fixture::Busybox, Fixture::Layered, Fixture::MultiArch, Fixture::Zstd] {
            let d = dir.path().join(format!("{f:?}"));
            let b = build(f, &d).unwrap();
            let hex = b.digest.trim_start_matches("sha256:");
            let data = std::fs::read(d.join("blobs/sha256").join(hex)).unwrap();
            assert_eq!(hex::encode(Sha256::digest(&data)), hex);
            assert!(b.layer_bytes > 0);
        }
    }
}
