//! Layer snapshots: each image layer unpacked once into its own directory, keyed by chain ID and
//! shared by every container that uses it; container root filesystems are overlayfs mounts of
//! those directories plus the container's own upper and work dirs.
//!
//! On disk (under the snapshotter's root):
//!
//! ```text
//! snapshots/<n>/fs          the layer's files (short paths: overlayfs options fit in one page)
//! snapshots/<n>/meta.json   chain ID, diff_id, layer digest, sizes (the index is rebuilt from these)
//! tmp/                      unpacks in progress; whatever is here at `open` is a crash leftover
//! empty/                    an empty lower for images without layers
//! ```
//!
//! A layer is unpacked into `tmp/<random>/fs`, checked (compressed digest, size, diff_id), synced
//! with one `syncfs`, given its `meta.json`, and renamed to `snapshots/<n>` in one step: a snapshot
//! directory either is complete or does not exist. See `docs/snapshots.md`.

mod error;
mod mount;
mod source;
mod staged;
mod unpack;

#[cfg(test)]
mod tests;

pub use error::SnapshotError;
pub use source::{FileLayerSource, LayerReader, LayerSource, StoreLayerSource};
pub use staged::{Blob, Prefetch};

use berth_common::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// One layer of an image, as the manifest (digest, media type, size) and the image config
/// (diff_id) describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Digest of the blob as stored (compressed).
    pub digest: Digest,
    /// The manifest's media type (decides, with the magic bytes, how to decompress).
    pub media_type: String,
    /// Size of the blob in bytes (checked when > 0).
    pub size: i64,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
}

impl Layer {
    /// The layers of `img`, bottom first, each with its diff_id from the config.
    pub fn of_image(img: &berth_common::image::Image) -> Vec<Layer> {
        img.layers
            .iter()
            .zip(img.diff_ids.iter())
            .map(|(d, diff)| Layer {
                digest: d.digest.clone(),
                media_type: d.media_type.clone(),
                size: d.size,
                diff_id: diff.clone(),
            })
            .collect()
    }
}

/// Progress of one layer's unpack, in compressed bytes read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackProgress {
    /// The layer's (compressed) digest.
    pub layer: Digest,
    /// Compressed bytes read so far.
    pub bytes_done: u64,
    /// The layer's size from its descriptor (0 when unknown).
    pub bytes_total: u64,
    /// The layer is unpacked (or was already there).
    pub done: bool,
}

/// A snapshot on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// The chain ID this snapshot is keyed by.
    pub chain_id: Digest,
    /// Digest of the layer's uncompressed tar.
    pub diff_id: Digest,
    /// Digest of the compressed blob it was unpacked from.
    pub layer_digest: Digest,
    /// The directory holding the layer's files (a lower dir for overlayfs).
    #[serde(skip)]
    pub path: PathBuf,
    /// Bytes of uncompressed tar.
    pub uncompressed_size: u64,
    /// Tar entries unpacked.
    pub entries: u64,
    /// When it was unpacked, seconds since the Unix epoch.
    pub created_unix: i64,
    /// The kernel's boot ID when it was unpacked (empty: written by an older version, which
    /// synced every snapshot before committing it). See [`Snapshotter::open_with`].
    #[serde(default)]
    pub boot_id: String,
}

/// Limits and parallelism of the snapshotter.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotConfig {
    /// Cap on one layer's uncompressed size (decompression bomb guard). Default 20 GiB.
    pub max_layer_bytes: u64,
    /// Cap on one layer's tar entries. Default 2 million.
    pub max_layer_entries: u64,
    /// Layers unpacked at the same time across all callers. Default: CPUs + 1, at least 2.
    pub max_parallel: usize,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self { max_layer_bytes: 20 << 30, max_layer_entries: 2_000_000, max_parallel: (cpus + 1).max(2) }
    }
}

/// The OCI chain IDs of a stack of layers, bottom-most first (one rule for the whole engine:
/// `berth_common::image::chain_ids`).
pub use berth_common::image::chain_ids;

/// Unpacks layers into snapshots and mounts container root filesystems. Cheap to clone; clones
/// share state, so concurrent `prepare` calls of any clones coordinate.
#[derive(Clone)]
pub struct Snapshotter {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    snapshots: PathBuf,
    tmp: PathBuf,
    empty: PathBuf,
    config: SnapshotConfig,
    index: Mutex<Index>,
    /// One async lock per chain ID being prepared: the first caller unpacks, the others wait.
    locks: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    permits: Arc<tokio::sync::Semaphore>,
    /// This boot's ID, written into every snapshot's metadata.
    boot_id: String,
    /// Wakes the background sync after a commit.
    sync_tx: Mutex<std::sync::mpsc::Sender<()>>,
    /// Layers unpacked ahead of their image config (see [`staged`]).
    staged: Mutex<HashMap<Digest, Arc<staged::Slot>>>,
}

/// Waits for commits, lets them settle, then syncs and records the durable mark; ends when the
/// snapshotter is dropped.
fn background_sync(inner: std::sync::Weak<Inner>, rx: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError;
    while rx.recv().is_ok() {
        let first = std::time::Instant::now();
        loop {
            match rx.recv_timeout(SYNC_QUIET) {
                Ok(()) if first.elapsed() < SYNC_MAX_DELAY => continue,
                Ok(()) | Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Err(e) = inner.sync_durable() {
            tracing::warn!(error = %e, "syncing the snapshots failed; they are unpacked again after a crash of the machine");
        }
    }
}

#[derive(Default)]
struct Index {
    by_chain: HashMap<Digest, (u64, SnapshotInfo)>,
    next_id: u64,
}

const META: &str = "meta.json";
/// Holds N: every snapshot with an ID up to N is on disk (a `syncfs` finished after it was
/// committed).
const DURABLE: &str = "durable";
/// How long the background sync waits for unpacks to stop coming before it syncs (and at most).
const SYNC_QUIET: std::time::Duration = std::time::Duration::from_secs(2);
const SYNC_MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(15);

/// This boot of the kernel (a new value after every reboot, so after every power loss).
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

impl Snapshotter {
    /// Opens (creating if needed) the snapshotter at `root` with default limits.
    pub fn open(root: PathBuf) -> Result<Self, SnapshotError> {
        Self::open_with(root, SnapshotConfig::default())
    }

    /// Opens with explicit limits. Removes what a crash left in `tmp/` (half-unpacked layers) and
    /// snapshot directories without valid metadata, and rebuilds the index from `meta.json` files.
    ///
    /// Layers are committed without waiting for their data to reach the disk: a background
    /// `syncfs` follows the commits and then records the highest snapshot ID it covered in
    /// `durable`. A snapshot unpacked during an earlier boot of the kernel whose ID is above that
    /// mark may have lost data in a crash of the machine (the page cache is gone), so it is removed
    /// here and unpacked again from the store when needed. A crash of this process alone loses
    /// nothing: the kernel still has the data.
    pub fn open_with(root: PathBuf, config: SnapshotConfig) -> Result<Self, SnapshotError> {
        let snapshots = root.join("snapshots");
        let tmp = root.join("tmp");
        let empty = root.join("empty");
        for d in [&root, &snapshots, &tmp, &empty] {
            std::fs::create_dir_all(d).map_err(|e| SnapshotError::io("creating directory", d, e))?;
        }
        for entry in std::fs::read_dir(&tmp).map_err(|e| SnapshotError::io("reading", &tmp, e))? {
            let entry = entry.map_err(|e| SnapshotError::io("reading", &tmp, e))?;
            let p = entry.path();
            tracing::info!(path = %p.display(), "removing an unfinished unpack left by an earlier run");
            remove_any(&p)?;
        }
        let boot = boot_id();
        let durable: u64 =
            std::fs::read_to_string(root.join(DURABLE)).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        // IDs are never reused below the mark, even when the snapshots that had them are gone.
        let mut index = Index { by_chain: HashMap::new(), next_id: durable + 1 };
        for entry in std::fs::read_dir(&snapshots).map_err(|e| SnapshotError::io("reading", &snapshots, e))? {
            let entry = entry.map_err(|e| SnapshotError::io("reading", &snapshots, e))?;
            let p = entry.path();
            let id = entry.file_name().to_str().and_then(|s| s.parse::<u64>().ok());
            let meta = std::fs::read(p.join(META)).ok().and_then(|b| serde_json::from_slice::<SnapshotInfo>(&b).ok());
            let meta = match (id, meta) {
                (Some(id), Some(info)) if !info.boot_id.is_empty() && info.boot_id != boot && id > durable => {
                    tracing::warn!(path = %p.display(), "removing a snapshot unpacked before the machine restarted and never synced to disk");
                    index.next_id = index.next_id.max(id + 1);
                    remove_any(&p)?;
                    continue;
                }
                (_, meta) => meta,
            };
            match (id, meta) {
                (Some(id), Some(mut info)) if !index.by_chain.contains_key(&info.chain_id) => {
                    info.path = p.join("fs");
                    index.next_id = index.next_id.max(id + 1);
                    index.by_chain.insert(info.chain_id.clone(), (id, info));
                }
                _ => {
                    tracing::warn!(path = %p.display(), "removing a snapshot directory without valid metadata");
                    remove_any(&p)?;
                }
            }
        }
        let permits = Arc::new(tokio::sync::Semaphore::new(config.max_parallel.max(1)));
        let (sync_tx, sync_rx) = std::sync::mpsc::channel();
        let inner = Arc::new(Inner {
            root,
            snapshots,
            tmp,
            empty,
            config,
            index: Mutex::new(index),
            locks: Mutex::new(HashMap::new()),
            permits,
            boot_id: boot,
            sync_tx: Mutex::new(sync_tx),
            staged: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("snapshot-sync".into())
            .spawn(move || background_sync(weak, sync_rx))
            .map_err(|e| SnapshotError::io("spawning the sync thread for", &inner.root, e))?;
        Ok(Self { inner })
    }

    /// Syncs every committed snapshot to disk now and records it in `durable` (the background
    /// sync does the same a moment after unpacks stop).
    pub fn sync(&self) -> Result<(), SnapshotError> {
        self.inner.sync_durable()
    }

    /// The snapshotter's root directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The layer directory of `chain_id`, if it is unpacked.
    pub fn path_of(&self, chain_id: &Digest) -> Option<PathBuf> {
        self.inner.index.lock().unwrap().by_chain.get(chain_id).map(|(_, i)| i.path.clone())
    }

    /// An empty directory, usable as the only lower of an image without layers.
    pub fn empty_lower(&self) -> PathBuf {
        self.inner.empty.clone()
    }

    /// Ensures every layer is unpacked (each once, concurrent callers wait for the same work,
    /// layers of one image unpacked in parallel); returns the layer dirs, BOTTOM-most first.
    ///
    /// `progress` gets compressed-bytes updates (dropped when the channel is full) and one
    /// `done: true` per layer (awaited: drain the channel while `prepare` runs).
    pub async fn prepare(
        &self,
        src: &dyn LayerSource,
        layers: &[Layer],
        progress: Option<tokio::sync::mpsc::Sender<UnpackProgress>>,
    ) -> Result<Vec<PathBuf>, SnapshotError> {
        if layers.len() > mount::MAX_LOWERS {
            return Err(SnapshotError::Invalid(format!(
                "the image has {} layers; overlayfs stacks at most {}",
                layers.len(),
                mount::MAX_LOWERS
            )));
        }
        let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id.clone()).collect();
        let chains = chain_ids(&diff_ids);
        let unpacks = chains.iter().any(|c| self.path_of(c).is_none());
        let jobs = layers.iter().zip(chains).map(|(layer, chain)| self.ensure(src, layer, chain, progress.clone()));
        let dirs = futures::future::try_join_all(jobs).await;
        if unpacks {
            // The decode threads' buffers are freed but stay resident in their malloc arenas.
            drop(tokio::task::spawn_blocking(berth_common::alloc::release_free_memory));
        }
        dirs
    }

    async fn ensure(
        &self,
        src: &dyn LayerSource,
        layer: &Layer,
        chain: Digest,
        progress: Option<tokio::sync::mpsc::Sender<UnpackProgress>>,
    ) -> Result<PathBuf, SnapshotError> {
        let done = |p: &Option<tokio::sync::mpsc::Sender<UnpackProgress>>| {
            let p = p.clone();
            let msg = UnpackProgress {
                layer: layer.digest.clone(),
                bytes_done: layer.size.max(0) as u64,
                bytes_total: layer.size.max(0) as u64,
                done: true,
            };
            async move {
                if let Some(p) = p {
                    let _ = p.send(msg).await;
                }
            }
        };
        if let Some(path) = self.path_of(&chain) {
            done(&progress).await;
            return Ok(path);
        }
        let lock = {
            let mut locks = self.inner.locks.lock().unwrap();
            locks.entry(chain.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        if let Some(path) = self.path_of(&chain) {
            done(&progress).await;
            return Ok(path);
        }
        // Unpacked ahead of the config while the image was pulled (see `staged`): check the
        // diff_id now that it is known, and commit it like any other unpack.
        if let Some(slot) = self.staged_slot(&layer.digest) {
            if let Some(staged) = slot.take().await {
                tracing::info!(layer = %layer.digest, %chain, "committing a layer unpacked while the image was pulled");
                let inner = self.inner.clone();
                let job_layer = layer.clone();
                let job = tokio::task::spawn_blocking(move || {
                    let _guard = guard;
                    let r = unpack::check_diff_id(&job_layer.digest, &job_layer.diff_id, &staged.stats.diff_id)
                        .and_then(|()| inner.commit(&staged.work, &job_layer, chain, staged.stats));
                    if r.is_err() {
                        let _ = remove_any(&staged.work);
                    }
                    r
                });
                let path = job
                    .await
                    .map_err(|e| SnapshotError::Task { layer: layer.digest.clone(), reason: e.to_string() })??;
                done(&progress).await;
                return Ok(path);
            }
        }
        let permit = self.inner.permits.clone().acquire_owned().await.expect("semaphore never closed");
        let reader = src.open(layer).await?;
        let inner = self.inner.clone();
        let handle = tokio::runtime::Handle::current();
        let job_layer = layer.clone();
        let job_progress = progress.clone();
        // The blocking task owns the lock guard: if this caller goes away, the unpack still
        // finishes (or fails) before anyone else tries the same chain ID.
        let job = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let _permit = permit;
            inner.unpack_and_commit(handle, reader, &job_layer, chain, job_progress)
        });
        let path =
            job.await.map_err(|e| SnapshotError::Task { layer: layer.digest.clone(), reason: e.to_string() })??;
        done(&progress).await;
        Ok(path)
    }

    /// Mounts overlayfs at `target` from `lowers` (bottom-most first) + `upper` + `work`.
    /// With no lowers, an empty directory serves as the only lower.
    pub fn mount_rootfs(
        &self,
        lowers: &[PathBuf],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), SnapshotError> {
        if lowers.is_empty() {
            return mount::mount_overlay(
                &self.inner.snapshots,
                std::slice::from_ref(&self.inner.empty),
                upper,
                work,
                target,
            );
        }
        mount::mount_overlay(&self.inner.snapshots, lowers, upper, work, target)
    }

    /// Unmounts a rootfs; succeeds when nothing is mounted there.
    pub fn unmount_rootfs(target: &Path) -> Result<(), SnapshotError> {
        mount::unmount(target)
    }

    /// Removes snapshots whose chain ID is not in `keep`; returns what was removed. Snapshots being
    /// prepared right now are kept, but a snapshot that a `prepare` has already returned is not
    /// protected: `keep` must hold the chain IDs of every container, including those being
    /// created (serialize GC with container creation).
    pub fn prune(&self, keep: &HashSet<Digest>) -> Result<Vec<Digest>, SnapshotError> {
        let mut removed = Vec::new();
        let victims: Vec<(Digest, u64)> = {
            let locks = self.inner.locks.lock().unwrap();
            let mut index = self.inner.index.lock().unwrap();
            let ids: Vec<(Digest, u64)> = index
                .by_chain
                .iter()
                .filter(|(chain, _)| !keep.contains(*chain))
                .filter(|(chain, _)| locks.get(*chain).is_none_or(|l| l.try_lock().is_ok()))
                .map(|(chain, (id, _))| (chain.clone(), *id))
                .collect();
            for (chain, _) in &ids {
                index.by_chain.remove(chain);
            }
            ids
        };
        for (chain, id) in victims {
            let dir = self.inner.snapshots.join(id.to_string());
            // Rename first so a crash mid-removal leaves only tmp/ debris, never a half snapshot.
            let doomed = self.inner.tmp.join(format!("prune-{id}-{}", uuid::Uuid::new_v4().simple()));
            std::fs::rename(&dir, &doomed).map_err(|e| SnapshotError::io("renaming", &dir, e))?;
            remove_any(&doomed)?;
            removed.push(chain);
        }
        Ok(removed)
    }

    /// Every snapshot on disk.
    pub fn list(&self) -> Result<Vec<SnapshotInfo>, SnapshotError> {
        let index = self.inner.index.lock().unwrap();
        let mut out: Vec<(u64, SnapshotInfo)> = index.by_chain.values().cloned().collect();
        out.sort_by_key(|(id, _)| *id);
        Ok(out.into_iter().map(|(_, i)| i).collect())
    }
}

impl Inner {
    fn unpack_and_commit(
        &self,
        handle: tokio::runtime::Handle,
        reader: LayerReader,
        layer: &Layer,
        chain: Digest,
        progress: Option<tokio::sync::mpsc::Sender<UnpackProgress>>,
    ) -> Result<PathBuf, SnapshotError> {
        let work = self.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let fs = work.join("fs");
        std::fs::create_dir_all(&fs).map_err(|e| SnapshotError::io("creating directory", &fs, e))?;
        let limits =
            unpack::Limits { max_bytes: self.config.max_layer_bytes, max_entries: self.config.max_layer_entries };
        let started = std::time::Instant::now();
        let result = unpack::unpack_layer(handle, reader, layer, &fs, limits, progress).and_then(|stats| {
            unpack::check_diff_id(&layer.digest, &layer.diff_id, &stats.diff_id)?;
            self.commit(&work, layer, chain, stats)
        });
        match result {
            Ok(path) => {
                tracing::debug!(layer = %layer.digest, path = %path.display(), elapsed = ?started.elapsed(), "layer unpacked");
                Ok(path)
            }
            Err(e) => {
                if let Err(cleanup) = remove_any(&work) {
                    tracing::warn!(error = %cleanup, "could not remove a failed unpack; it goes at the next start");
                }
                Err(e)
            }
        }
    }

    fn commit(
        &self,
        work: &Path,
        layer: &Layer,
        chain: Digest,
        stats: unpack::Unpacked,
    ) -> Result<PathBuf, SnapshotError> {
        let created_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        let mut info = SnapshotInfo {
            chain_id: chain.clone(),
            diff_id: layer.diff_id.clone(),
            layer_digest: layer.digest.clone(),
            path: PathBuf::new(),
            uncompressed_size: stats.uncompressed,
            entries: stats.entries,
            created_unix,
            boot_id: self.boot_id.clone(),
        };
        let meta_path = work.join(META);
        let json = serde_json::to_vec_pretty(&info).expect("SnapshotInfo serializes");
        // Not synced: see `open_with` for what a crash of the machine does to it.
        std::fs::write(&meta_path, &json).map_err(|e| SnapshotError::io("writing", &meta_path, e))?;
        let mut index = self.index.lock().unwrap();
        if let Some((_, existing)) = index.by_chain.get(&chain) {
            // Cannot happen while the per-chain lock is held, but never keep two copies.
            let path = existing.path.clone();
            drop(index);
            remove_any(work)?;
            return Ok(path);
        }
        let id = index.next_id;
        index.next_id += 1;
        let dest = self.snapshots.join(id.to_string());
        std::fs::rename(work, &dest).map_err(|e| SnapshotError::io("renaming unpacked layer to", &dest, e))?;
        info.path = dest.join("fs");
        index.by_chain.insert(chain, (id, info.clone()));
        drop(index);
        let _ = self.sync_tx.lock().unwrap().send(());
        Ok(info.path)
    }

    /// One `syncfs` of the snapshot filesystem, then `durable` := the highest ID committed before it.
    fn sync_durable(&self) -> Result<(), SnapshotError> {
        // Every ID below next_id is renamed into place (commit holds the index lock across both).
        let mark = self.index.lock().unwrap().next_id - 1;
        let dir = std::fs::File::open(&self.snapshots).map_err(|e| SnapshotError::io("opening", &self.snapshots, e))?;
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(SnapshotError::io("syncfs", &self.snapshots, std::io::Error::last_os_error()));
        }
        let path = self.root.join(DURABLE);
        let tmp = self.root.join(format!("{DURABLE}.tmp"));
        write_synced(&tmp, mark.to_string().as_bytes()).map_err(|e| SnapshotError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| SnapshotError::io("renaming", &path, e))?;
        if let Ok(d) = std::fs::File::open(&self.root) {
            let _ = d.sync_all();
        }
        tracing::debug!(mark, "snapshots synced to disk");
        Ok(())
    }
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Removes a file or a directory tree (without following symlinks).
fn remove_any(p: &Path) -> Result<(), SnapshotError> {
    let res = match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(|e| SnapshotError::io("removing", p, e))
}
