//! The local filesystem backend (the embedded default).
//!
//! Layout under the root: objects at `<root>/<key>` (so blobs are `blobs/sha256/<hex>`), staged
//! ingests at `<root>/staging/<id>`, temp files of in-flight puts at `<root>/tmp/`.
//!
//! Crash safety: an object only ever appears under its key by `rename` of a complete file that was
//! `fsync`ed first, so after a crash (kill -9 or power loss) a key holds either nothing, the old
//! object or the complete new one. Records ([`Backend::put`]) `fsync` their directory right after
//! the rename. Blobs ([`Backend::stage_commit`], [`Backend::put_new`]) do not: their directories
//! are remembered and `fsync`ed once by the next [`Backend::barrier`], which the store calls
//! before it writes a record that points at blobs (so a pull of N blobs pays one directory sync
//! instead of N, and a crash can lose a fresh blob's name only while nothing points at it). Blobs are published with
//! `renameat2(RENAME_NOREPLACE)` (falling back to `link` + `unlink` where unsupported), so two
//! writers of the same blob both succeed and exactly one copy is kept. Leftovers in `tmp/` are
//! removed by [`Backend::recover`].

use super::{validate_key, Backend, BackendError, ByteStream, CommitOutcome, ObjectMeta, StageWriter};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::collections::HashSet;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const TMP: &str = "tmp";
const STAGING: &str = "staging";

/// Objects as files under a root directory.
#[derive(Clone, Debug)]
pub struct FsBackend {
    root: PathBuf,
    published: Arc<Published>,
}

/// Directories that gained blobs whose names are not yet durable (see [`Backend::barrier`]).
#[derive(Debug, Default)]
struct Published {
    dirty: std::sync::Mutex<HashSet<PathBuf>>,
    /// Held by the barrier in flight, so a concurrent one returns only after that sync is done.
    syncing: tokio::sync::Mutex<()>,
}

impl Published {
    fn mark(&self, dir: PathBuf) {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).insert(dir);
    }
}

type Result<T> = std::result::Result<T, BackendError>;

impl FsBackend {
    /// Opens (creating if needed) a backend rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in [root.clone(), root.join(TMP), root.join(STAGING)] {
            ensure_dir(&d)?;
        }
        let root = root.canonicalize().map_err(|e| BackendError::io("canonicalize", root.display().to_string(), e))?;
        let published = Arc::<Published>::default();
        // Blobs published by an earlier process (which may have been killed before its barrier)
        // are made durable by this process's first barrier too.
        let blobs = root.join("blobs").join("sha256");
        if blobs.is_dir() {
            published.mark(blobs);
        }
        Ok(Self { root, published })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn object_path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        let first = key.split('/').next().unwrap_or_default();
        if first == TMP || first == STAGING {
            return Err(BackendError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }

    fn stage_path(&self, id: &str) -> Result<PathBuf> {
        validate_key(id)?;
        if id.contains('/') {
            return Err(BackendError::InvalidKey(id.to_string()));
        }
        Ok(self.root.join(STAGING).join(id))
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(BackendError::io("blocking task", "", std::io::Error::other(e.to_string()))),
    }
}

/// Runs a metadata-sized operation (a stat, a sub-page write and rename, an unlink, an open) on
/// the calling thread: on a local filesystem it takes microseconds, less than the hand-off to a
/// blocking thread and back, which costs milliseconds when the CPUs are busy. Anything that
/// moves data or waits for the disk (reads, appends, fsync) goes through [`blocking`].
async fn inline<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    f()
}

/// Creates `dir` and any missing parents, fsyncing each parent that gained an entry.
fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(BackendError::io("mkdir", dir.display().to_string(), e)),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| BackendError::io("open dir", dir.display().to_string(), e))?;
    f.sync_all().map_err(|e| BackendError::io("fsync dir", dir.display().to_string(), e))
}

fn meta_of(key: String, m: &std::fs::Metadata) -> ObjectMeta {
    ObjectMeta { key, size: m.len(), modified: m.modified().unwrap_or(std::time::UNIX_EPOCH) }
}

/// `renameat2(from, to, RENAME_NOREPLACE)`; `Ok(false)` when `to` exists.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<bool> {
    let f = CString::new(from.as_os_str().as_bytes())?;
    let t = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both arguments are valid NUL-terminated paths that live across the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EEXIST) => Ok(false),
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            // The filesystem cannot do RENAME_NOREPLACE: link(2) is just as exclusive.
            match std::fs::hard_link(from, to) {
                Ok(()) => {
                    std::fs::remove_file(from)?;
                    Ok(true)
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        }
        _ => Err(err),
    }
}

/// Streams `[offset, offset+len)` of `file` from a blocking thread with `pread`.
fn stream_file(file: File, key: String, offset: u64, len: Option<u64>, chunk: usize) -> ByteStream {
    let chunk = chunk.clamp(4096, 16 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        // SAFETY: advisory call on a valid descriptor.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), offset as i64, 0, libc::POSIX_FADV_SEQUENTIAL) };
        let end = len.map(|l| offset.saturating_add(l)).unwrap_or(u64::MAX);
        let mut pos = offset;
        while pos < end {
            let want = chunk.min((end - pos).min(usize::MAX as u64) as usize);
            let mut buf = BytesMut::with_capacity(want);
            let spare = buf.spare_capacity_mut();
            // SAFETY: pread writes at most `want` bytes into the spare capacity, which is at least
            // `want` bytes long; we only expose the `n` bytes it reports as written.
            let n = unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), want, pos as libc::off_t) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                let _ = tx.blocking_send(Err(BackendError::io("read", key.clone(), e)));
                return;
            }
            if n == 0 {
                break;
            }
            // SAFETY: the kernel initialised the first `n` bytes.
            unsafe { buf.set_len(n as usize) };
            pos += n as u64;
            if tx.blocking_send(Ok(buf.freeze())).is_err() {
                return; // reader went away
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
}

fn walk(dir: &Path, rel: &str, out: &mut Vec<ObjectMeta>) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BackendError::io("list", dir.display().to_string(), e)),
    };
    for ent in rd {
        let ent = ent.map_err(|e| BackendError::io("list", dir.display().to_string(), e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let key = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        if rel.is_empty() && (name == TMP || name == STAGING) {
            continue;
        }
        let ft = ent.file_type().map_err(|e| BackendError::io("list", key.clone(), e))?;
        if ft.is_dir() {
            walk(&ent.path(), &key, out)?;
        } else if ft.is_file() {
            match ent.metadata() {
                Ok(m) => out.push(meta_of(key, &m)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(BackendError::io("stat", key, e)),
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Backend for FsBackend {
    fn describe(&self) -> String {
        format!("filesystem:{}", self.root.display())
    }

    async fn recover(&self) -> Result<()> {
        let tmp = self.root.join(TMP);
        blocking(move || {
            let rd = std::fs::read_dir(&tmp).map_err(|e| BackendError::io("list", tmp.display().to_string(), e))?;
            for ent in rd.flatten() {
                let p = ent.path();
                let r = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                if let Err(e) = r {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove leftover temp file");
                }
            }
            Ok(())
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let p = self.object_path(key)?;
        let key = key.to_string();
        inline(move || match std::fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(meta_of(key, &m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::io("stat", key, e)),
        })
        .await
    }

    async fn get(&self, key: &str, offset: u64, len: Option<u64>, chunk: usize) -> Result<ByteStream> {
        let p = self.object_path(key)?;
        let k = key.to_string();
        let file = blocking(move || match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(BackendError::NotFound(k)),
            Err(e) => Err(BackendError::io("open", k, e)),
        })
        .await?;
        Ok(stream_file(file, key.to_string(), offset, len, chunk))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let target = self.object_path(key)?;
        let tmp = self.root.join(TMP).join(uuid::Uuid::new_v4().simple().to_string());
        let key = key.to_string();
        blocking(move || {
            let parent = target.parent().expect("object path has a parent").to_path_buf();
            ensure_dir(&parent)?;
            let write = || -> std::io::Result<()> {
                let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                f.write_all(&data)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &target)
            };
            if let Err(e) = write() {
                let _ = std::fs::remove_file(&tmp);
                return Err(BackendError::io("put", key, e));
            }
            sync_dir(&parent)
        })
        .await
    }

    async fn put_volatile(&self, key: &str, data: Bytes) -> Result<()> {
        let target = self.object_path(key)?;
        let tmp = self.root.join(TMP).join(uuid::Uuid::new_v4().simple().to_string());
        let key = key.to_string();
        inline(move || {
            let parent = target.parent().expect("object path has a parent").to_path_buf();
            ensure_dir(&parent)?;
            // Temp file + rename (readers never see a partial object), no fsync.
            let write = || -> std::io::Result<()> {
                let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                f.write_all(&data)?;
                std::fs::rename(&tmp, &target)
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                BackendError::io("put", key, e)
            })
        })
        .await
    }

    async fn delete_volatile(&self, key: &str) -> Result<bool> {
        let p = self.object_path(key)?;
        let key = key.to_string();
        inline(move || match std::fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BackendError::io("delete", key, e)),
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let p = self.object_path(key)?;
        let key = key.to_string();
        blocking(move || match std::fs::remove_file(&p) {
            Ok(()) => {
                sync_dir(p.parent().expect("object path has a parent"))?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BackendError::io("delete", key, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let base = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        if !base.is_empty() {
            validate_key(base)?;
        }
        let dir = if base.is_empty() { self.root.clone() } else { self.root.join(base) };
        let base = base.to_string();
        let prefix = prefix.to_string();
        blocking(move || {
            let mut out = Vec::new();
            walk(&dir, &base, &mut out)?;
            out.retain(|m| m.key.starts_with(&prefix));
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn stage_open(&self, id: &str) -> Result<Box<dyn StageWriter>> {
        let p = self.stage_path(id)?;
        let id = id.to_string();
        inline(move || {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&p)
                .map_err(|e| BackendError::io("open staging", id.clone(), e))?;
            let len = f.metadata().map_err(|e| BackendError::io("stat staging", id.clone(), e))?.len();
            Ok(Box::new(FsStage { file: Arc::new(f), len, writeback_from: len, id }) as Box<dyn StageWriter>)
        })
        .await
    }

    async fn stage_read(&self, id: &str, chunk: usize) -> Result<ByteStream> {
        let p = self.stage_path(id)?;
        let k = id.to_string();
        let file = blocking(move || match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(BackendError::NotFound(k)),
            Err(e) => Err(BackendError::io("open staging", k, e)),
        })
        .await?;
        Ok(stream_file(file, id.to_string(), 0, None, chunk))
    }

    async fn stage_list(&self) -> Result<Vec<ObjectMeta>> {
        let dir = self.root.join(STAGING);
        blocking(move || {
            let mut out = Vec::new();
            walk(&dir, "", &mut out)?;
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
    }

    async fn stage_delete(&self, id: &str) -> Result<bool> {
        let p = self.stage_path(id)?;
        let id = id.to_string();
        inline(move || match std::fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(BackendError::io("delete staging", id, e)),
        })
        .await
    }

    async fn stage_commit(&self, id: &str, key: &str) -> Result<CommitOutcome> {
        let staged = self.stage_path(id)?;
        let target = self.object_path(key)?;
        let key = key.to_string();
        let id = id.to_string();
        let published = self.published.clone();
        blocking(move || {
            let f = match File::open(&staged) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => return Err(BackendError::NotFound(id)),
                Err(e) => return Err(BackendError::io("open staging", id, e)),
            };
            // Read-only first, so the one fsync covers the mode too.
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o444));
            f.sync_all().map_err(|e| BackendError::io("fsync staging", id.clone(), e))?;
            drop(f);
            let parent = target.parent().expect("object path has a parent").to_path_buf();
            ensure_dir(&parent)?;
            let created = rename_noreplace(&staged, &target).map_err(|e| BackendError::io("commit", key.clone(), e))?;
            if created {
                // The name becomes durable at the next barrier.
                published.mark(parent);
                Ok(CommitOutcome::Created)
            } else {
                std::fs::remove_file(&staged).map_err(|e| BackendError::io("delete staging", id, e))?;
                Ok(CommitOutcome::AlreadyExists)
            }
        })
        .await
    }

    async fn put_new(&self, items: Vec<(String, Bytes)>) -> Result<Vec<CommitOutcome>> {
        // One blocking task per object, so their fsyncs run (and are journaled) together.
        let mut jobs = Vec::with_capacity(items.len());
        for (key, data) in items {
            let target = self.object_path(&key)?;
            let tmp = self.root.join(TMP).join(uuid::Uuid::new_v4().simple().to_string());
            let published = self.published.clone();
            jobs.push(blocking(move || {
                if target.is_file() {
                    return Ok(CommitOutcome::AlreadyExists);
                }
                let parent = target.parent().expect("object path has a parent").to_path_buf();
                ensure_dir(&parent)?;
                let write = || -> std::io::Result<bool> {
                    let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
                    f.write_all(&data)?;
                    f.set_permissions(std::fs::Permissions::from_mode(0o444))?;
                    f.sync_all()?;
                    drop(f);
                    rename_noreplace(&tmp, &target)
                };
                match write() {
                    Ok(true) => {
                        published.mark(parent);
                        Ok(CommitOutcome::Created)
                    }
                    Ok(false) => {
                        let _ = std::fs::remove_file(&tmp);
                        Ok(CommitOutcome::AlreadyExists)
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&tmp);
                        Err(BackendError::io("put", key, e))
                    }
                }
            }));
        }
        futures::future::try_join_all(jobs).await
    }

    async fn put_new_then_record(
        &self,
        items: Vec<(String, Bytes)>,
        key: &str,
        data: Bytes,
    ) -> Result<Vec<CommitOutcome>> {
        let target = self.object_path(key)?;
        let tmp = self.root.join(TMP).join(uuid::Uuid::new_v4().simple().to_string());
        let k = key.to_string();
        // The record's temp file is written and synced while the blobs are; it is renamed into
        // place only after the barrier.
        let (tmp2, k2) = (tmp.clone(), k.clone());
        let prepare = blocking(move || {
            let write = || -> std::io::Result<()> {
                let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp2)?;
                f.write_all(&data)?;
                f.sync_all()
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp2);
                BackendError::io("put", k2, e)
            })
        });
        let (published, prepared) = tokio::join!(self.put_new(items), prepare);
        let cleanup = |tmp: &Path| {
            let _ = std::fs::remove_file(tmp);
        };
        let out = match (published, prepared) {
            (Ok(out), Ok(())) => out,
            (Err(e), _) | (_, Err(e)) => {
                cleanup(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = self.barrier().await {
            cleanup(&tmp);
            return Err(e);
        }
        blocking(move || {
            let parent = target.parent().expect("object path has a parent").to_path_buf();
            ensure_dir(&parent)?;
            if let Err(e) = std::fs::rename(&tmp, &target) {
                let _ = std::fs::remove_file(&tmp);
                return Err(BackendError::io("put", k, e));
            }
            sync_dir(&parent)
        })
        .await?;
        Ok(out)
    }

    async fn barrier(&self) -> Result<()> {
        let _one = self.published.syncing.lock().await;
        let dirs: Vec<PathBuf> =
            std::mem::take(&mut *self.published.dirty.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
        if dirs.is_empty() {
            return Ok(());
        }
        let again = dirs.clone();
        let r = blocking(move || dirs.iter().try_for_each(|d| sync_dir(d))).await;
        if r.is_err() {
            // Not known to be durable: the next barrier tries again.
            for d in again {
                self.published.mark(d);
            }
        }
        r
    }
}

/// Writeback of staged data is started every this many bytes (small enough that a ~1 MiB
/// layer's data is on its way to disk before its commit asks for the fsync).
const WRITEBACK_BYTES: u64 = 1 << 20;

struct FsStage {
    file: Arc<File>,
    len: u64,
    /// Start of the range whose writeback has not been started yet.
    writeback_from: u64,
    id: String,
}

#[async_trait]
impl StageWriter for FsStage {
    fn len(&self) -> u64 {
        self.len
    }

    async fn append(&mut self, chunks: Vec<Bytes>) -> Result<()> {
        let file = self.file.clone();
        let start = self.len;
        let id = self.id.clone();
        let flushed = self.writeback_from;
        let (n, flushed) = blocking(move || {
            let mut pos = start;
            for c in &chunks {
                file.write_all_at(c, pos).map_err(|e| BackendError::io("write staging", id.clone(), e))?;
                pos += c.len() as u64;
            }
            // Start writeback of what has piled up (without waiting for it), so the fsync at
            // commit finds little left to write: disk writes overlap with receiving and hashing.
            let mut flushed = flushed;
            if pos - flushed >= WRITEBACK_BYTES {
                // SAFETY: plain syscall on a valid descriptor; failure only loses the hint.
                unsafe {
                    libc::sync_file_range(
                        file.as_raw_fd(),
                        flushed as libc::off64_t,
                        (pos - flushed) as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WRITE,
                    )
                };
                flushed = pos;
            }
            Ok((pos - start, flushed))
        })
        .await?;
        self.len += n;
        self.writeback_from = flushed;
        Ok(())
    }

    async fn sync(&mut self) -> Result<()> {
        let file = self.file.clone();
        let id = self.id.clone();
        blocking(move || file.sync_data().map_err(|e| BackendError::io("fsync staging", id, e))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path().join("store")).unwrap();
        super::super::testsuite::run(&b).await;
    }

    #[tokio::test]
    async fn recover_removes_temp_files_and_internal_dirs_are_not_keys() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path()).unwrap();
        std::fs::write(b.root().join(TMP).join("half"), b"x").unwrap();
        b.recover().await.unwrap();
        assert_eq!(std::fs::read_dir(b.root().join(TMP)).unwrap().count(), 0);
        assert!(matches!(b.put("tmp/x", Bytes::new()).await, Err(BackendError::InvalidKey(_))));
        assert!(matches!(b.head("staging/x").await, Err(BackendError::InvalidKey(_))));
        assert!(matches!(b.stage_open("a/b").await, Err(BackendError::InvalidKey(_))));
    }

    #[tokio::test]
    async fn committed_blobs_are_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path()).unwrap();
        let mut w = b.stage_open("i1").await.unwrap();
        w.append(vec![Bytes::from_static(b"hello")]).await.unwrap();
        w.sync().await.unwrap();
        drop(w);
        b.stage_commit("i1", "blobs/sha256/aa").await.unwrap();
        let mode = std::fs::metadata(b.root().join("blobs/sha256/aa")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
    }

    #[tokio::test]
    async fn blobs_then_record_and_the_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBackend::open(dir.path()).unwrap();
        let mut w = b.stage_open("i1").await.unwrap();
        w.append(vec![Bytes::from_static(b"layer")]).await.unwrap();
        drop(w);
        b.stage_commit("i1", "blobs/sha256/aa").await.unwrap();
        // The commit left its directory for the barrier.
        assert_eq!(b.published.dirty.lock().unwrap().len(), 1);
        let items = vec![
            ("blobs/sha256/bb".to_string(), Bytes::from_static(b"config")),
            ("blobs/sha256/aa".to_string(), Bytes::from_static(b"other")),
        ];
        let out = b.put_new_then_record(items, "meta/images/x.json", Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!(out, vec![CommitOutcome::Created, CommitOutcome::AlreadyExists]);
        assert!(b.published.dirty.lock().unwrap().is_empty(), "the barrier ran");
        assert_eq!(std::fs::read(b.root().join("blobs/sha256/aa")).unwrap(), b"layer");
        assert_eq!(std::fs::read(b.root().join("blobs/sha256/bb")).unwrap(), b"config");
        assert_eq!(std::fs::read(b.root().join("meta/images/x.json")).unwrap(), b"{}");
        let mode = std::fs::metadata(b.root().join("blobs/sha256/bb")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
        assert_eq!(std::fs::read_dir(b.root().join(TMP)).unwrap().count(), 0, "no temp files left");
        b.barrier().await.unwrap();
    }
}
