//! Layers unpacked ahead of their image config, while the image is still being pulled (as
//! containerd's unpacker starts on each layer as its blob lands).
//!
//! A layer's snapshot is keyed by its chain ID, which needs the diff_ids of the config, and the
//! config reaches the store only at the end of a pull. But a layer directory holds that one
//! layer's tar whatever is below it, so it can be unpacked as soon as its blob is in the store:
//! into `tmp/`, checked against the blob's digest and size, its diff_id computed. It becomes a
//! snapshot only when a later [`Snapshotter::prepare`] of the image, which knows the config,
//! finds it: the diff_id is checked against the config and the directory is committed like any
//! other unpack. Until then it is invisible to everything else, and a [`Prefetch`] dropped before
//! that (a failed or interrupted pull) removes what it unpacked. A crash leaves only `tmp/`
//! debris, removed at the next start.

use super::{remove_any, Inner, Layer, LayerSource, SnapshotError, Snapshotter, UnpackProgress};
use berth_common::Digest;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One layer being (or done being) unpacked ahead of its config.
pub(crate) struct Slot {
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<bool>,
    /// How many [`Prefetch`]es hold it.
    holders: Mutex<usize>,
}

enum State {
    Running,
    /// Unpacked into `work` (`work/fs` holds the files); not yet a snapshot.
    Ready(Staged),
    /// Failed, taken by a commit, or abandoned: nothing to use.
    Gone,
}

pub(crate) struct Staged {
    pub work: PathBuf,
    pub stats: super::unpack::Unpacked,
}

impl Slot {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::Running),
            changed: tokio::sync::watch::channel(false).0,
            holders: Mutex::new(1),
        })
    }

    /// Waits until the unpack ends; then takes its result (once).
    pub(crate) async fn take(&self) -> Option<Staged> {
        let mut rx = self.changed.subscribe();
        let _ = rx.wait_for(|done| *done).await;
        match std::mem::replace(&mut *self.state.lock().unwrap(), State::Gone) {
            State::Ready(s) => Some(s),
            _ => None,
        }
    }

    fn finish(&self, result: Option<Staged>) {
        *self.state.lock().unwrap() = match result {
            Some(s) => State::Ready(s),
            None => State::Gone,
        };
        self.changed.send_replace(true);
    }
}

/// Layers unpacked ahead of the config for one pull. Dropping it removes what was not committed
/// by a `prepare` meanwhile (unpacks still running are removed when they end).
pub struct Prefetch {
    snap: Snapshotter,
    held: Vec<(Digest, Arc<Slot>)>,
}

/// A layer as the manifest describes it, before its diff_id is known.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Digest of the compressed blob.
    pub digest: Digest,
    /// The manifest's media type.
    pub media_type: String,
    /// Its size (checked when > 0).
    pub size: i64,
}

impl Snapshotter {
    /// Starts a group of layers unpacked ahead of their config.
    pub fn prefetch(&self) -> Prefetch {
        Prefetch { snap: self.clone(), held: Vec::new() }
    }

    /// The staged unpack of `digest`, if any (see [`Prefetch`]).
    pub(crate) fn staged_slot(&self, digest: &Digest) -> Option<Arc<Slot>> {
        self.inner.staged.lock().unwrap().get(digest).cloned()
    }
}

impl Prefetch {
    /// Starts unpacking `blob` (already in the store behind `src`) in the background, unless it
    /// is being unpacked already or a snapshot of it exists. `progress` gets the same updates as
    /// [`Snapshotter::prepare`]'s (compressed bytes, then `done`).
    pub fn stage(
        &mut self,
        src: Arc<dyn LayerSource>,
        blob: Blob,
        progress: Option<tokio::sync::mpsc::Sender<UnpackProgress>>,
    ) {
        if self.held.iter().any(|(d, _)| *d == blob.digest) {
            return;
        }
        let inner = self.snap.inner.clone();
        let exists = inner.index.lock().unwrap().by_chain.values().any(|(_, i)| i.layer_digest == blob.digest);
        let slot = {
            let mut staged = inner.staged.lock().unwrap();
            if let Some(slot) = staged.get(&blob.digest) {
                *slot.holders.lock().unwrap() += 1;
                self.held.push((blob.digest.clone(), slot.clone()));
                return;
            }
            if exists {
                return;
            }
            let slot = Slot::new();
            staged.insert(blob.digest.clone(), slot.clone());
            slot
        };
        self.held.push((blob.digest.clone(), slot.clone()));
        tokio::spawn(async move {
            let layer = Layer {
                digest: blob.digest.clone(),
                media_type: blob.media_type,
                size: blob.size,
                // Not known yet, and not used by the unpack: checked when committed.
                diff_id: blob.digest.clone(),
            };
            let res = run(inner.clone(), &*src, &layer, progress).await;
            // Decided under the holders lock, which a dropping Prefetch holds while it looks.
            let holders = slot.holders.lock().unwrap();
            let abandoned = *holders == 0;
            match res {
                Ok(staged) if abandoned => {
                    discard(staged.work);
                    slot.finish(None);
                }
                Ok(staged) => slot.finish(Some(staged)),
                Err(e) => {
                    tracing::info!(layer = %layer.digest, error = %e, "unpack ahead of the config failed; prepare tries again");
                    slot.finish(None);
                }
            }
            drop(holders);
        });
    }

    /// Waits until every layer staged so far is unpacked (or failed).
    pub async fn settle(&self) {
        for (_, slot) in &self.held {
            let mut rx = slot.changed.subscribe();
            let _ = rx.wait_for(|done| *done).await;
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        let inner = &self.snap.inner;
        for (digest, slot) in self.held.drain(..) {
            let mut holders = slot.holders.lock().unwrap();
            *holders -= 1;
            if *holders > 0 {
                continue;
            }
            {
                let mut staged = inner.staged.lock().unwrap();
                if staged.get(&digest).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    staged.remove(&digest);
                }
            }
            // A running unpack sees holders == 0 when it ends and removes its own directory.
            let mut state = slot.state.lock().unwrap();
            if let State::Ready(_) = &*state {
                if let State::Ready(s) = std::mem::replace(&mut *state, State::Gone) {
                    discard(s.work);
                }
            }
        }
    }
}

/// Removes an unused staged directory off the caller's thread.
fn discard(work: PathBuf) {
    let job = move || {
        if let Err(e) = remove_any(&work) {
            tracing::warn!(error = %e, "could not remove an unused unpack; it goes at the next start");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => drop(h.spawn_blocking(job)),
        Err(_) => job(),
    }
}

/// Unpacks `layer` into a fresh `tmp/<random>` directory; removes it on failure.
async fn run(
    inner: Arc<Inner>,
    src: &dyn LayerSource,
    layer: &Layer,
    progress: Option<tokio::sync::mpsc::Sender<UnpackProgress>>,
) -> Result<Staged, SnapshotError> {
    let permit = inner.permits.clone().acquire_owned().await.expect("semaphore never closed");
    let reader = src.open(layer).await?;
    let handle = tokio::runtime::Handle::current();
    let job_layer = layer.clone();
    let job = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let work = inner.tmp.join(uuid::Uuid::new_v4().simple().to_string());
        let fs = work.join("fs");
        std::fs::create_dir_all(&fs).map_err(|e| SnapshotError::io("creating directory", &fs, e))?;
        let limits = super::unpack::Limits {
            max_bytes: inner.config.max_layer_bytes,
            max_entries: inner.config.max_layer_entries,
        };
        match super::unpack::unpack_layer(handle, reader, &job_layer, &fs, limits, progress) {
            Ok(stats) => Ok(Staged { work, stats }),
            Err(e) => {
                let _ = remove_any(&work);
                Err(e)
            }
        }
    });
    job.await.map_err(|e| SnapshotError::Task { layer: layer.digest.clone(), reason: e.to_string() })?
}
