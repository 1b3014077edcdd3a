//! Unpacking one layer into an empty directory. Blocking code: it runs on a `spawn_blocking`
//! thread (the tar walker) plus one scoped thread that reads, hashes and decompresses the stream,
//! so decompression and file creation overlap.
//!
//! The tar is hostile. Every entry is resolved from an fd of the layer root one component at a
//! time with `O_NOFOLLOW | O_DIRECTORY`, so no symlink (in the tar or planted by an earlier entry)
//! is ever followed; `..` components are refused, leading `/` is dropped (paths are relative to the
//! layer root), hard links must point at something already inside this layer, and files are
//! created with `O_EXCL | O_NOFOLLOW` after whatever was at that name is removed.

use super::{Layer, SnapshotError, UnpackProgress};
use berth_common::Digest;
use sha2::{Digest as _, Sha256};
use std::ffi::{CStr, CString};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use tokio::io::AsyncReadExt;
use tokio::runtime::Handle;

use super::source::LayerReader;

/// Limits applied while unpacking one layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// What an unpack produced.
#[derive(Clone, Debug)]
pub(crate) struct Unpacked {
    pub entries: u64,
    pub uncompressed: u64,
    /// Digest of the uncompressed tar, for the caller to check against the image config.
    pub diff_id: Digest,
}

/// The diff_id check, done by the caller once it knows the expected value.
pub(crate) fn check_diff_id(layer: &Digest, expected: &Digest, actual: &Digest) -> Result<(), SnapshotError> {
    if actual != expected {
        return Err(SnapshotError::DigestMismatch {
            layer: layer.clone(),
            what: "diff_id (digest of the uncompressed tar, from the image config)",
            expected: expected.clone(),
            actual: actual.clone(),
        });
    }
    Ok(())
}

/// How a layer's bytes are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed tar",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// The compression a media type declares: `Ok(None)` when the media type does not say (empty or
/// unknown), an error when it is not a layer media type at all.
pub(crate) fn declared_compression(layer: &Layer) -> Result<Option<Compression>, SnapshotError> {
    let mt = layer.media_type.trim();
    let base = mt.split(';').next().unwrap_or("").trim();
    if base.is_empty() {
        return Ok(None);
    }
    if base.ends_with("+gzip") || base.ends_with(".gzip") || base.ends_with("tar.gz") {
        return Ok(Some(Compression::Gzip));
    }
    if base.ends_with("+zstd") || base.ends_with(".zstd") {
        return Ok(Some(Compression::Zstd));
    }
    if base.ends_with(".tar") || base.ends_with("/tar") || base.ends_with(".diff.tar") {
        return Ok(Some(Compression::None));
    }
    if base.contains("json") || base.contains("manifest") {
        return Err(SnapshotError::MediaType {
            layer: layer.digest.clone(),
            media_type: layer.media_type.clone(),
            detail: "not a layer media type".into(),
        });
    }
    Ok(None)
}

fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// Unpacks `reader` (the layer's compressed blob) into the empty directory `dest`, checking the
/// compressed digest and size; returns the diff_id for the caller to check (`layer.diff_id` is not
/// used here). On error `dest` holds partial content that the caller must discard. Nothing is
/// synced: the snapshotter syncs committed snapshots in the background.
pub(crate) fn unpack_layer(
    handle: Handle,
    reader: LayerReader,
    layer: &Layer,
    dest: &Path,
    limits: Limits,
    progress: Option<tokio::sync::mpsc::Sender<UnpackProgress>>,
) -> Result<Unpacked, SnapshotError> {
    let declared = declared_compression(layer)?;
    let abort = AtomicBool::new(false);
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<u8>, String>>(16);

    let root = open_dir_path(dest).map_err(|e| SnapshotError::io("opening", dest, e))?;
    let mut walker = Walker::new(&layer.digest, root, dest.to_path_buf(), limits);

    let (decoded, walked) = std::thread::scope(|s| {
        let producer = std::thread::Builder::new()
            .name("layer-decode".into())
            .spawn_scoped(s, || decode(handle, reader, layer, declared, limits, &abort, tx, progress))
            .map_err(|e| SnapshotError::io("spawning decoder thread for", dest, e));
        let producer = match producer {
            Ok(p) => p,
            Err(e) => return (Err(DecodeError::Failed(e)), Ok(())),
        };
        let walked = walker.run(ChannelReader { rx, cur: Vec::new(), pos: 0 });
        if walked.is_err() {
            abort.store(true, Ordering::Relaxed);
        }
        let decoded = producer.join().unwrap_or_else(|_| {
            Err(DecodeError::Failed(SnapshotError::Task {
                layer: layer.digest.clone(),
                reason: "decoder thread panicked".into(),
            }))
        });
        (decoded, walked)
    });

    // The decoder's error is the root cause when there is one (a truncated gzip shows up in the tar
    // walker only as an early end of file).
    let outcome = match (decoded, walked) {
        (Err(DecodeError::Failed(e)), _) => return Err(e),
        (_, Err(e)) => return Err(e),
        (Err(DecodeError::Aborted), Ok(())) => {
            return Err(SnapshotError::Task { layer: layer.digest.clone(), reason: "decoder stopped early".into() })
        }
        (Ok(o), Ok(())) => o,
    };
    if layer.size > 0 && outcome.compressed_size != layer.size as u64 {
        return Err(SnapshotError::SizeMismatch {
            layer: layer.digest.clone(),
            expected: layer.size,
            actual: outcome.compressed_size,
        });
    }
    if outcome.digest != layer.digest {
        return Err(SnapshotError::DigestMismatch {
            layer: layer.digest.clone(),
            what: "compressed digest",
            expected: layer.digest.clone(),
            actual: outcome.digest,
        });
    }
    walker.finish()?;
    Ok(Unpacked { entries: walker.entries, uncompressed: outcome.uncompressed_size, diff_id: outcome.diff_id })
}

// ---------------------------------------------------------------------------------------------
// Reading, hashing and decompressing (the producer thread).

struct DecodeOutcome {
    digest: Digest,
    compressed_size: u64,
    diff_id: Digest,
    uncompressed_size: u64,
}

enum DecodeError {
    Failed(SnapshotError),
    Aborted,
}

impl From<SnapshotError> for DecodeError {
    fn from(e: SnapshotError) -> Self {
        DecodeError::Failed(e)
    }
}

/// Reads the async layer stream from a blocking thread, hashing and counting what passes.
struct SourceReader<'a> {
    handle: Handle,
    inner: LayerReader,
    hasher: Sha256,
    count: u64,
    failed: bool,
    layer: &'a Digest,
    total: u64,
    last_report: u64,
    progress: Option<tokio::sync::mpsc::Sender<UnpackProgress>>,
}

impl Read for SourceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.handle.block_on(self.inner.read(buf)) {
            Ok(n) => n,
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if let Some(p) = &self.progress {
            if self.count - self.last_report >= (1 << 20) {
                self.last_report = self.count;
                let _ = p.try_send(UnpackProgress {
                    layer: self.layer.clone(),
                    bytes_done: self.count,
                    bytes_total: self.total,
                    done: false,
                });
            }
        }
        Ok(n)
    }
}

enum Decoder<R: BufRead> {
    Plain(R),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

impl<R: BufRead> Decoder<R> {
    fn into_inner(self) -> R {
        match self {
            Decoder::Plain(r) => r,
            Decoder::Gzip(r) => (*r).into_inner(),
            Decoder::Zstd(r) => r.finish(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn decode(
    handle: Handle,
    reader: LayerReader,
    layer: &Layer,
    declared: Option<Compression>,
    limits: Limits,
    abort: &AtomicBool,
    tx: mpsc::SyncSender<Result<Vec<u8>, String>>,
    progress: Option<tokio::sync::mpsc::Sender<UnpackProgress>>,
) -> Result<DecodeOutcome, DecodeError> {
    let digest = &layer.digest;
    let src = SourceReader {
        handle,
        inner: reader,
        hasher: Sha256::new(),
        count: 0,
        failed: false,
        layer: digest,
        total: layer.size.max(0) as u64,
        last_report: 0,
        progress,
    };
    let mut buffered = BufReader::with_capacity(256 << 10, src);
    let head = buffered.fill_buf().map_err(|e| SnapshotError::Stream {
        layer: digest.clone(),
        what: "layer blob",
        source: e,
    })?;
    let detected = sniff(head);
    if let Some(declared) = declared {
        if declared != detected {
            return Err(SnapshotError::MediaType {
                layer: digest.clone(),
                media_type: layer.media_type.clone(),
                detail: format!(
                    "the media type says {} but the data is {}",
                    declared.name(),
                    if head.is_empty() { "empty" } else { detected.name() }
                ),
            }
            .into());
        }
    }
    let mut dec = match detected {
        Compression::None => Decoder::Plain(buffered),
        Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(buffered))),
        Compression::Zstd => {
            Decoder::Zstd(zstd::stream::read::Decoder::with_buffer(buffered).map_err(|e| SnapshotError::Stream {
                layer: digest.clone(),
                what: "zstd",
                source: e,
            })?)
        }
    };
    let what = match detected {
        Compression::None => "layer blob",
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    };
    let mut diff = Sha256::new();
    let mut total = 0u64;
    let mut sending = true;
    loop {
        if abort.load(Ordering::Relaxed) {
            return Err(DecodeError::Aborted);
        }
        let mut chunk = vec![0u8; 128 << 10];
        let mut filled = 0;
        while filled < chunk.len() {
            match dec.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let failed_src = match &dec {
                        Decoder::Plain(r) => r.get_ref().failed,
                        Decoder::Gzip(r) => r.get_ref().get_ref().failed,
                        Decoder::Zstd(r) => r.get_ref().get_ref().failed,
                    };
                    let what = if failed_src { "layer blob" } else { what };
                    let _ = tx.send(Err(format!("{what}: {e}")));
                    return Err(SnapshotError::Stream { layer: digest.clone(), what, source: e }.into());
                }
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        total += filled as u64;
        if total > limits.max_bytes {
            let _ = tx.send(Err("layer too large".into()));
            return Err(SnapshotError::TooLarge { layer: digest.clone(), limit: limits.max_bytes }.into());
        }
        diff.update(&chunk);
        if sending && tx.send(Ok(chunk)).is_err() {
            // The tar walker is done (the archive ended) or failed; keep hashing to the end.
            sending = false;
        }
    }
    drop(tx);
    // Trailing bytes after the compressed stream still belong to the blob's digest.
    let mut rest = dec.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| SnapshotError::Stream {
        layer: digest.clone(),
        what: "layer blob",
        source: e,
    })?;
    let src = rest.into_inner();
    Ok(DecodeOutcome {
        digest: Digest::from_sha256(src.hasher.finalize().into()),
        compressed_size: src.count,
        diff_id: Digest::from_sha256(diff.finalize().into()),
        uncompressed_size: total,
    })
}

/// The tar walker's view of the decoded stream.
struct ChannelReader {
    rx: mpsc::Receiver<Result<Vec<u8>, String>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.cur.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.cur = chunk;
                    self.pos = 0;
                }
                Ok(Err(msg)) => return Err(io::Error::other(msg)),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------------
// Writing entries (the walker).

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";

struct Walker<'a> {
    layer: &'a Digest,
    root: OwnedFd,
    root_path: PathBuf,
    limits: Limits,
    entries: u64,
    /// The last parent directory resolved: its components and an fd of it.
    cache: Option<(Vec<Vec<u8>>, OwnedFd)>,
    /// Directories whose mtime is set at the end (creating entries in them changes it).
    dir_times: Vec<(Vec<Vec<u8>>, libc::timespec)>,
    buf: Vec<u8>,
    /// Who owns a file this process creates, and with which mode bits (see [`Creds`]).
    creds: Creds,
    /// Whether the parent fd last asked about has the setgid bit (new files then take its group).
    parent_sgid: Option<(RawFd, bool)>,
}

/// The owner and mode a newly created file gets, so that the `fchown`/`fchmod` that would not
/// change anything can be skipped (three syscalls per file instead of five on a typical layer).
#[derive(Clone, Copy, Debug)]
struct Creds {
    uid: u32,
    gid: u32,
    umask: u32,
}

impl Creds {
    fn current() -> Self {
        // /proc/self/status has the umask without changing it (umask(2) would, process-wide).
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("Umask:")).and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o7777); // unknown: never skip the fchmod
        Self { uid: unsafe { libc::geteuid() }, gid: unsafe { libc::getegid() }, umask }
    }
}

/// Ownership, mode, time and xattrs of an entry.
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: libc::timespec,
    xattrs: Vec<(CString, Vec<u8>)>,
}

impl<'a> Walker<'a> {
    fn new(layer: &'a Digest, root: OwnedFd, root_path: PathBuf, limits: Limits) -> Self {
        Self {
            layer,
            root,
            root_path,
            limits,
            entries: 0,
            cache: None,
            dir_times: Vec::new(),
            buf: vec![0u8; 256 << 10],
            creds: Creds::current(),
            parent_sgid: None,
        }
    }

    fn bad(&self, entry: &str, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::BadEntry { layer: self.layer.clone(), entry: entry.to_string(), reason: reason.into() }
    }

    fn eio(&self, entry: &str, op: &'static str, source: io::Error) -> SnapshotError {
        SnapshotError::EntryIo { layer: self.layer.clone(), entry: entry.to_string(), op, source }
    }

    fn run<R: Read>(&mut self, reader: R) -> Result<(), SnapshotError> {
        let stream_err = |e| SnapshotError::Stream { layer: self.layer.clone(), what: "tar", source: e };
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(stream_err)?;
        for entry in entries {
            let mut entry = entry.map_err(stream_err)?;
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(SnapshotError::TooManyEntries {
                    layer: self.layer.clone(),
                    limit: self.limits.max_entries,
                });
            }
            self.entry(&mut entry)?;
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), SnapshotError> {
        use tar::EntryType as T;
        let raw_path = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if matches!(kind, T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink) {
            return Ok(());
        }
        let comps = split_path(&raw_path).map_err(|r| self.bad(&shown, r))?;
        let meta = self.meta(entry, &shown)?;

        let Some((name, parent)) = comps.split_last() else {
            // "./" or "/": the layer root itself.
            if kind != T::Directory {
                return Err(self.bad(&shown, "names the layer root but is not a directory"));
            }
            let fd = self.root.try_clone().map_err(|e| self.eio(&shown, "dup", e))?;
            self.apply_fd(&shown, fd.as_raw_fd(), &meta)?;
            self.parent_sgid = None;
            self.dir_times.push((Vec::new(), meta.mtime));
            return Ok(());
        };

        // OCI whiteouts.
        if name.starts_with(WHITEOUT_PREFIX) {
            let pfd = self.parent_fd(parent, &shown)?;
            if name.as_slice() == WHITEOUT_OPAQUE {
                return fsetxattr(pfd, c"trusted.overlay.opaque", b"y")
                    .map_err(|e| self.eio(&shown, "setting trusted.overlay.opaque on the directory", e));
            }
            if name.starts_with(WHITEOUT_META_PREFIX) {
                return Ok(()); // aufs bookkeeping (.wh..wh.plnk and the like): not content
            }
            let target = &name[WHITEOUT_PREFIX.len()..];
            if target.is_empty() || target == b"." || target == b".." {
                return Err(self.bad(&shown, "whiteout of an invalid name"));
            }
            let target = cstring(target).map_err(|r| self.bad(&shown, r))?;
            self.clear(pfd, &target, parent, false, &shown)?;
            mknodat(pfd, &target, libc::S_IFCHR, 0).map_err(|e| self.eio(&shown, "creating whiteout device", e))?;
            fchownat_nofollow(pfd, &target, meta.uid, meta.gid).map_err(|e| self.eio(&shown, "lchown", e))?;
            return Ok(());
        }

        let cname = cstring(name).map_err(|r| self.bad(&shown, r))?;
        let pfd = self.parent_fd(parent, &shown)?;
        match kind {
            T::Regular | T::Continuous | T::GNUSparse => {
                // Created with its final permission bits when the umask lets them through (the
                // fchmod is then skipped); never group/other-writable before the data is in.
                let create_mode = meta.mode & 0o755;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                // Create first; only when something is already at that name make room for it
                // (an existing entry of this layer, replaced as tar does) and create again.
                let fd = match openat(pfd, &cname, flags, create_mode) {
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                        self.clear(pfd, &cname, parent, false, &shown)?;
                        // clear() may have dropped the cached parent fd; resolve it again.
                        let pfd = self.parent_fd(parent, &shown)?;
                        openat(pfd, &cname, flags, create_mode)
                    }
                    r => r,
                }
                .map_err(|e| self.eio(&shown, "creating file", e))?;
                let pfd = self.parent_fd(parent, &shown)?;
                let owner_ok = meta.uid == self.creds.uid && meta.gid == self.creds.gid && !self.parent_sgid(pfd);
                let mode_ok = meta.mode == create_mode & !self.creds.umask;
                let mut file = std::fs::File::from(fd);
                let mut buf = std::mem::take(&mut self.buf);
                let copied = copy_entry(entry, &mut file, &mut buf);
                self.buf = buf;
                match copied {
                    Ok(()) => {}
                    Err((true, e)) => {
                        return Err(SnapshotError::Stream { layer: self.layer.clone(), what: "tar", source: e })
                    }
                    Err((false, e)) => return Err(self.eio(&shown, "writing file", e)),
                }
                self.apply_file(&shown, file.as_raw_fd(), &meta, owner_ok && mode_ok)?;
            }
            T::Directory => {
                let existing_dir = self.clear(pfd, &cname, parent, true, &shown)?;
                if !existing_dir {
                    mkdirat(pfd, &cname, 0o700).map_err(|e| self.eio(&shown, "creating directory", e))?;
                }
                let fd = open_dir_at(pfd, &cname).map_err(|e| self.eio(&shown, "opening directory", e))?;
                self.apply_fd(&shown, fd.as_raw_fd(), &meta)?;
                self.parent_sgid = None; // its mode may have changed
                self.dir_times.push((comps.clone(), meta.mtime));
            }
            T::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| self.bad(&shown, "symlink without a target"))?;
                let target = cstring(&target).map_err(|r| self.bad(&shown, r))?;
                self.clear(pfd, &cname, parent, false, &shown)?;
                symlinkat(&target, pfd, &cname).map_err(|e| self.eio(&shown, "creating symlink", e))?;
                self.apply_at(&shown, pfd, &cname, &meta, false)?;
            }
            T::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| self.bad(&shown, "hard link without a target"))?;
                let tcomps = split_path(&target).map_err(|r| self.bad(&shown, format!("hard link target: {r}")))?;
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(self.bad(&shown, "hard link to the layer root"));
                };
                if tcomps == comps {
                    return Err(self.bad(&shown, "hard link to itself"));
                }
                let tname = cstring(tname).map_err(|r| self.bad(&shown, r))?;
                let tparent_fd = self.walk(tparent, false).map_err(|r| {
                    self.bad(&shown, format!("hard link target {:?}: {r}", String::from_utf8_lossy(&target)))
                })?;
                match fstatat_nofollow(tparent_fd.as_raw_fd(), &tname) {
                    Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                        return Err(self.bad(&shown, "hard link to a directory"))
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(self.bad(
                            &shown,
                            format!(
                                "hard link target {:?} does not exist in this layer",
                                String::from_utf8_lossy(&target)
                            ),
                        ))
                    }
                    Err(e) => return Err(self.eio(&shown, "stat of hard link target", e)),
                }
                // parent_fd again: walking the target may not evict it, but be explicit.
                let pfd = self.parent_fd(parent, &shown)?;
                self.clear(pfd, &cname, parent, false, &shown)?;
                linkat(tparent_fd.as_raw_fd(), &tname, pfd, &cname)
                    .map_err(|e| self.eio(&shown, "creating hard link", e))?;
            }
            T::Char | T::Block | T::Fifo => {
                let fmt = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let dev = if fmt == libc::S_IFIFO { 0 } else { libc::makedev(major, minor) };
                self.clear(pfd, &cname, parent, false, &shown)?;
                mknodat(pfd, &cname, fmt, dev).map_err(|e| self.eio(&shown, "mknod", e))?;
                self.apply_at(&shown, pfd, &cname, &meta, true)?;
            }
            other => return Err(self.bad(&shown, format!("unsupported tar entry type {other:?}"))),
        }
        Ok(())
    }

    /// Reads ownership, mode, mtime and xattrs from the header and its PAX records.
    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta, SnapshotError> {
        let h = entry.header();
        let hdr_err = |e| SnapshotError::Stream { layer: self.layer.clone(), what: "tar", source: e };
        // An empty numeric field (all NULs or spaces, as some writers leave uid/gid) reads as 0.
        let blank = |raw: &[u8]| raw.iter().all(|b| *b == 0 || *b == b' ');
        let old = h.as_old();
        let mut meta = Meta {
            uid: if blank(&old.uid) { 0 } else { h.uid().map_err(hdr_err)? as u32 },
            gid: if blank(&old.gid) { 0 } else { h.gid().map_err(hdr_err)? as u32 },
            mode: if blank(&old.mode) { 0o644 } else { h.mode().map_err(hdr_err)? & 0o7777 },
            mtime: libc::timespec { tv_sec: h.mtime().unwrap_or(0) as libc::time_t, tv_nsec: 0 },
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(hdr_err)? {
            for ext in pax {
                let ext = ext.map_err(hdr_err)?;
                let key = ext.key_bytes();
                let value = ext.value_bytes();
                match key {
                    b"uid" => meta.uid = parse_num(value).ok_or_else(|| self.bad(shown, "bad PAX uid"))?,
                    b"gid" => meta.gid = parse_num(value).ok_or_else(|| self.bad(shown, "bad PAX gid"))?,
                    b"mtime" => {
                        if let Some(ts) = parse_pax_time(value) {
                            meta.mtime = ts;
                        }
                    }
                    _ => {
                        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                            // Never let a layer forge overlayfs metadata (opaque dirs, redirects,
                            // metacopy): only whiteout entries make those.
                            if name.starts_with(b"trusted.overlay") || name.is_empty() {
                                continue;
                            }
                            let cname = cstring(name).map_err(|r| self.bad(shown, format!("xattr name: {r}")))?;
                            meta.xattrs.push((cname, value.to_vec()));
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    /// Whether the directory `pfd` has the setgid bit (files created in it take its group).
    fn parent_sgid(&mut self, pfd: RawFd) -> bool {
        if let Some((fd, sgid)) = self.parent_sgid {
            if fd == pfd {
                return sgid;
            }
        }
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // Unknown counts as setgid: the fchown is then done.
        let sgid = unsafe { libc::fstat(pfd, &mut st) } != 0 || st.st_mode & libc::S_ISGID != 0;
        self.parent_sgid = Some((pfd, sgid));
        sgid
    }

    /// [`Self::apply_fd`] for a file this walker just created: `fchown`/`fchmod` skipped when
    /// `created_right` says creation already gave the entry's owner and mode.
    fn apply_file(&self, shown: &str, fd: RawFd, meta: &Meta, created_right: bool) -> Result<(), SnapshotError> {
        if !created_right {
            return self.apply_fd(shown, fd, meta);
        }
        self.set_xattrs(shown, fd, meta)?;
        let times = [meta.mtime, meta.mtime];
        if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
            return Err(self.eio(shown, "futimens", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn set_xattrs(&self, shown: &str, fd: RawFd, meta: &Meta) -> Result<(), SnapshotError> {
        for (name, value) in &meta.xattrs {
            if let Err(e) = fsetxattr(fd, name, value) {
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    tracing::debug!(entry = shown, xattr = ?name, "xattr not supported here; skipped");
                    continue;
                }
                return Err(self.eio(shown, "setting xattr", e));
            }
        }
        Ok(())
    }

    /// Ownership, mode, xattrs and times on an open fd (files and directories).
    fn apply_fd(&self, shown: &str, fd: RawFd, meta: &Meta) -> Result<(), SnapshotError> {
        if unsafe { libc::fchown(fd, meta.uid, meta.gid) } != 0 {
            return Err(self.eio(shown, "fchown", io::Error::last_os_error()));
        }
        // After chown, which clears setuid/setgid.
        if unsafe { libc::fchmod(fd, meta.mode) } != 0 {
            return Err(self.eio(shown, "fchmod", io::Error::last_os_error()));
        }
        self.set_xattrs(shown, fd, meta)?;
        let times = [meta.mtime, meta.mtime];
        if unsafe { libc::futimens(fd, times.as_ptr()) } != 0 {
            return Err(self.eio(shown, "futimens", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The same for entries that cannot be opened (symlinks, devices, fifos).
    fn apply_at(&self, shown: &str, pfd: RawFd, name: &CStr, meta: &Meta, chmod: bool) -> Result<(), SnapshotError> {
        fchownat_nofollow(pfd, name, meta.uid, meta.gid).map_err(|e| self.eio(shown, "lchown", e))?;
        if chmod && unsafe { libc::fchmodat(pfd, name.as_ptr(), meta.mode, 0) } != 0 {
            return Err(self.eio(shown, "chmod", io::Error::last_os_error()));
        }
        if !meta.xattrs.is_empty() {
            let mut p = format!("/proc/self/fd/{pfd}/").into_bytes();
            p.extend_from_slice(name.to_bytes());
            let p = CString::new(p).expect("no NUL");
            for (xname, value) in &meta.xattrs {
                let rc = unsafe { libc::lsetxattr(p.as_ptr(), xname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
                if rc != 0 {
                    let e = io::Error::last_os_error();
                    // user.* xattrs are not allowed on symlinks and devices; skip those.
                    if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM)) {
                        continue;
                    }
                    return Err(self.eio(shown, "setting xattr", e));
                }
            }
        }
        let times = [meta.mtime, meta.mtime];
        if unsafe { libc::utimensat(pfd, name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(self.eio(shown, "utimensat", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Makes room for a new entry at `parent/name`. Returns true when a directory is there and the
    /// new entry is a directory too (it is kept, as tar does).
    fn clear(
        &mut self,
        pfd: RawFd,
        name: &CStr,
        parent: &[Vec<u8>],
        new_is_dir: bool,
        shown: &str,
    ) -> Result<bool, SnapshotError> {
        let st = match fstatat_nofollow(pfd, name) {
            Ok(None) => return Ok(false),
            Ok(Some(st)) => st,
            Err(e) => return Err(self.eio(shown, "stat", e)),
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if new_is_dir {
                return Ok(true);
            }
            let mut comps = parent.to_vec();
            comps.push(name.to_bytes().to_vec());
            // Any cached fd inside the removed tree would point at a deleted directory.
            if let Some((cached, _)) = &self.cache {
                if cached.starts_with(&comps) {
                    self.cache = None;
                    self.parent_sgid = None;
                }
            }
            let mut path = self.root_path.clone();
            for c in &comps {
                path.push(std::ffi::OsStr::from_bytes(c));
            }
            std::fs::remove_dir_all(&path).map_err(|e| self.eio(shown, "removing existing directory", e))?;
        } else if unsafe { libc::unlinkat(pfd, name.as_ptr(), 0) } != 0 {
            return Err(self.eio(shown, "removing existing entry", io::Error::last_os_error()));
        }
        Ok(false)
    }

    /// An fd of the entry's parent directory (created when missing), cached for the next entry.
    fn parent_fd(&mut self, parent: &[Vec<u8>], shown: &str) -> Result<RawFd, SnapshotError> {
        if parent.is_empty() {
            return Ok(self.root.as_raw_fd());
        }
        if let Some((comps, fd)) = &self.cache {
            if comps.as_slice() == parent {
                return Ok(fd.as_raw_fd());
            }
        }
        let fd = self.walk(parent, true).map_err(|r| self.bad(shown, r))?;
        let raw = fd.as_raw_fd();
        self.cache = Some((parent.to_vec(), fd));
        self.parent_sgid = None;
        Ok(raw)
    }

    /// Opens `comps` below the layer root one component at a time without following symlinks.
    fn walk(&self, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd, String> {
        let mut cur = self.root.try_clone().map_err(|e| format!("dup: {e}"))?;
        for (i, c) in comps.iter().enumerate() {
            let name = cstring(c)?;
            let shown = || String::from_utf8_lossy(&comps[..=i].join(&b'/')).into_owned();
            let next = match open_dir_at(cur.as_raw_fd(), &name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && create => {
                    match mkdirat(cur.as_raw_fd(), &name, 0o755) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => return Err(format!("creating parent directory {:?}: {e}", shown())),
                    }
                    open_dir_at(cur.as_raw_fd(), &name).map_err(|e| format!("opening {:?}: {e}", shown()))?
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    return Err(format!("{:?} does not exist in this layer", shown()))
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) => {
                    let is_link = matches!(fstatat_nofollow(cur.as_raw_fd(), &name),
                        Ok(Some(st)) if st.st_mode & libc::S_IFMT == libc::S_IFLNK);
                    return Err(if is_link {
                        format!("path goes through the symlink {:?}; refusing to follow it", shown())
                    } else {
                        format!("path goes through {:?}, which is not a directory", shown())
                    });
                }
                Err(e) => return Err(format!("opening {:?}: {e}", shown())),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Sets the deferred directory mtimes.
    fn finish(&mut self) -> Result<(), SnapshotError> {
        self.cache = None;
        let times = std::mem::take(&mut self.dir_times);
        for (comps, ts) in times.iter().rev() {
            // A directory replaced by a later entry is simply gone; skip it.
            let Ok(fd) = self.walk(comps, false) else { continue };
            let t = [*ts, *ts];
            if unsafe { libc::futimens(fd.as_raw_fd(), t.as_ptr()) } != 0 {
                let shown = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
                return Err(self.eio(&shown, "futimens", io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

/// Copies an entry's data; the error's flag is true when reading (the stream) failed.
fn copy_entry<R: Read>(src: &mut R, dst: &mut std::fs::File, buf: &mut [u8]) -> Result<(), (bool, io::Error)> {
    use std::io::Write;
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((true, e)),
        };
        dst.write_all(&buf[..n]).map_err(|e| (false, e))?;
    }
}

/// Splits a tar path into components: empty and `.` components dropped (so a leading `/` makes
/// the path relative to the layer root), `..` refused.
pub(crate) fn split_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    // Nothing in a container can use a longer path, and it bounds the directory depth.
    if raw.len() >= libc::PATH_MAX as usize {
        return Err(format!("path is {} bytes long, longer than PATH_MAX", raw.len()));
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path contains \"..\" and would escape the layer".into()),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn cstring(b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| "name contains a NUL byte".to_string())
}

fn parse_num(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn parse_pax_time(v: &[u8]) -> Option<libc::timespec> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nsec = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let scale = 10i64.pow(9 - digits.len() as u32);
        nsec = digits.parse::<i64>().ok()? * scale;
        if secs < 0 {
            nsec = -nsec; // rare; keep it simple and in range below
        }
    }
    if nsec < 0 {
        return Some(libc::timespec { tv_sec: (secs - 1) as libc::time_t, tv_nsec: (1_000_000_000 + nsec) as _ });
    }
    Some(libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: nsec as _ })
}

// ---------------------------------------------------------------------------------------------
// Thin syscall wrappers.

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

pub(crate) fn open_dir_path(p: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn openat(dir: RawFd, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_at(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW, 0)
}

fn mkdirat(dir: RawFd, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) }).map(drop)
}

fn mknodat(dir: RawFd, name: &CStr, fmt: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    cvt(unsafe { libc::mknodat(dir, name.as_ptr(), fmt | 0o600, dev) }).map(drop)
}

fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

fn linkat(odir: RawFd, oname: &CStr, ndir: RawFd, nname: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::linkat(odir, oname.as_ptr(), ndir, nname.as_ptr(), 0) }).map(drop)
}

fn fchownat_nofollow(dir: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    cvt(unsafe { libc::fchownat(dir, name.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) }).map(drop)
}

fn fsetxattr(fd: RawFd, name: &CStr, value: &[u8]) -> io::Result<()> {
    cvt(unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) }).map(drop)
}

fn fstatat_nofollow(dir: RawFd, name: &CStr) -> io::Result<Option<libc::stat>> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    match cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) }) {
        Ok(_) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}
