//! Ingests: resumable, verified writes of blobs.
//!
//! A write is a stream of [`WriteChunk`]s for one client-chosen ref. Its bytes are appended to
//! the backend's staging area and hashed on the way (hashing and writing of each ~1 MiB batch run
//! in parallel on blocking threads). The running SHA-256 state is kept in memory for as long as
//! the service runs, so a resumed write continues hashing where the dropped one stopped; after a
//! restart the staged bytes are hashed once again. On commit the size and digest are checked and
//! only then is the blob published (atomically, see the backend). A stream that ends or breaks
//! without commit leaves the ingest resumable from [`IngestStatus::offset`].
//!
//! Each write session runs in its own task, so a client that vanishes mid-stream (which cancels
//! the RPC handler) can never leave an ingest half-updated: the session sees the end of its input,
//! writes out what it received, syncs and releases the ingest.

use crate::backend::StageWriter;
use crate::error::{Result, StoreError};
use crate::model::{blob_key, name_id, parse_digest, size_from_wire, validate_name, BlobInfo, IngestStatus};
use crate::store::{Store, INGESTS};
use berth_common::Digest;
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::OwnedMutexGuard;

/// Batches of received data are hashed and written once they reach this size.
const FLUSH_BYTES: usize = 1 << 20;
/// How long a write waits for an ingest that another stream still holds (e.g. the handler of a
/// just-dropped stream finishing up) before failing with `IngestBusy`.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// One message of a write stream, as received (validated by the session).
#[derive(Clone, Debug, Default)]
pub struct WriteChunk {
    /// Ingest ref (required in the first message).
    pub ref_: String,
    /// Expected digest (required in the first message of a new ingest).
    pub expected: String,
    /// Expected total size (the first message of a new ingest).
    pub total: i64,
    /// Offset of `data`.
    pub offset: i64,
    /// Bytes.
    pub data: Bytes,
    /// Commit after this message.
    pub commit: bool,
    /// Lease to attach the ingest and the blob to.
    pub lease: String,
}

/// What a write achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Bytes in the ingest (or the blob's size once committed).
    pub offset: u64,
    /// The blob, when committed.
    pub committed: Option<BlobInfo>,
    /// The blob existed already; this ingest was dropped as a duplicate.
    pub already_exists: bool,
}

/// A flush in progress (see [`Store::start_flush`]).
type Flight = tokio::task::JoinHandle<FlushDone>;

/// What a flush task hands back.
struct FlushDone {
    hasher: Option<Sha256>,
    writer: Box<dyn StageWriter>,
    written: Result<()>,
    n: u64,
}

/// The persisted descriptor of an ingest (`meta/ingests/<id>.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct IngestMeta {
    #[serde(rename = "ref")]
    pub ref_: String,
    pub expected: Digest,
    pub total: u64,
    pub started_at: SystemTime,
}

#[derive(Debug)]
struct Progress {
    offset: u64,
    updated_at: SystemTime,
}

/// An ingest known to the store.
pub(crate) struct IngestEntry {
    pub ref_: String,
    pub id: String,
    pub expected: Digest,
    pub total: u64,
    pub started_at: SystemTime,
    progress: std::sync::Mutex<Progress>,
    pub io: Arc<tokio::sync::Mutex<IngestIo>>,
}

/// The exclusive part of an ingest, held by the one stream writing it.
#[derive(Default)]
pub(crate) struct IngestIo {
    /// Hash of the bytes staged so far; `None` until rebuilt after a restart or failure.
    hasher: Option<Sha256>,
    writer: Option<Box<dyn StageWriter>>,
    /// Set when the ingest was committed or discarded; holders must look it up again.
    pub gone: bool,
}

impl IngestEntry {
    fn new(meta: IngestMeta, id: String, offset: u64, updated_at: SystemTime, io: IngestIo) -> Self {
        Self {
            ref_: meta.ref_,
            id,
            expected: meta.expected,
            total: meta.total,
            started_at: meta.started_at,
            progress: std::sync::Mutex::new(Progress { offset, updated_at }),
            io: Arc::new(tokio::sync::Mutex::new(io)),
        }
    }

    pub(crate) fn recovered(meta: IngestMeta, id: String, offset: u64, updated_at: SystemTime) -> Self {
        Self::new(meta, id, offset, updated_at, IngestIo::default())
    }

    pub(crate) fn status(&self) -> IngestStatus {
        let p = self.progress.lock().expect("ingest progress");
        IngestStatus {
            ref_: self.ref_.clone(),
            expected: self.expected.clone(),
            total: self.total,
            offset: p.offset,
            started_at: self.started_at,
            updated_at: p.updated_at,
        }
    }

    fn offset(&self) -> u64 {
        self.progress.lock().expect("ingest progress").offset
    }

    fn set_offset(&self, offset: u64) {
        let mut p = self.progress.lock().expect("ingest progress");
        p.offset = offset;
        p.updated_at = SystemTime::now();
    }

    fn meta_key(&self) -> String {
        format!("{INGESTS}{}.json", self.id)
    }
}

fn join_err(e: tokio::task::JoinError) -> StoreError {
    StoreError::Internal(format!("background task failed: {e}"))
}

impl Store {
    /// Runs one write stream to its end (see the module docs). The session runs in its own task.
    pub async fn write<S>(self: &Arc<Self>, input: S) -> Result<WriteOutcome>
    where
        S: Stream<Item = Result<WriteChunk>> + Send + Unpin + 'static,
    {
        let this = self.clone();
        tokio::spawn(async move { this.write_session(input).await }).await.map_err(join_err)?
    }

    /// State of one ingest.
    pub fn write_status(&self, ref_: &str) -> Result<IngestStatus> {
        validate_name("ref", ref_)?;
        let entry = self.ingests.lock().expect("ingest map").get(ref_).cloned();
        entry.map(|e| e.status()).ok_or_else(|| StoreError::IngestNotFound(ref_.to_string()))
    }

    /// Every ingest in progress, sorted by ref.
    pub fn list_writes(&self) -> Vec<IngestStatus> {
        let mut v: Vec<IngestStatus> = self.ingests.lock().expect("ingest map").values().map(|e| e.status()).collect();
        v.sort_by(|a, b| a.ref_.cmp(&b.ref_));
        v
    }

    /// Discards an ingest and its data.
    pub async fn abort_write(&self, ref_: &str) -> Result<()> {
        validate_name("ref", ref_)?;
        let entry = self.ingests.lock().expect("ingest map").get(ref_).cloned();
        let entry = entry.ok_or_else(|| StoreError::IngestNotFound(ref_.to_string()))?;
        let mut io = tokio::time::timeout(LOCK_WAIT, entry.io.clone().lock_owned())
            .await
            .map_err(|_| StoreError::IngestBusy(ref_.to_string()))?;
        if io.gone {
            return Err(StoreError::IngestNotFound(ref_.to_string()));
        }
        self.discard(&entry, &mut io).await
    }

    /// Removes an ingest's data and descriptor and forgets it. The caller holds its io lock.
    pub(crate) async fn discard(&self, entry: &Arc<IngestEntry>, io: &mut IngestIo) -> Result<()> {
        io.gone = true;
        io.writer = None;
        io.hasher = None;
        {
            let mut map = self.ingests.lock().expect("ingest map");
            if map.get(&entry.ref_).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                map.remove(&entry.ref_);
            }
        }
        // Descriptor first: staged data without a descriptor is dropped at recovery.
        self.backend.delete_volatile(&entry.meta_key()).await?;
        self.backend.stage_delete(&entry.id).await?;
        Ok(())
    }

    /// Finds or creates the ingest for `ref_` and takes its io lock.
    async fn open_ingest(
        &self,
        ref_: &str,
        expected: Option<Digest>,
        total: Option<u64>,
    ) -> Result<(Arc<IngestEntry>, OwnedMutexGuard<IngestIo>)> {
        loop {
            let existing = self.ingests.lock().expect("ingest map").get(ref_).cloned();
            if let Some(entry) = existing {
                let io = tokio::time::timeout(LOCK_WAIT, entry.io.clone().lock_owned())
                    .await
                    .map_err(|_| StoreError::IngestBusy(ref_.to_string()))?;
                if io.gone {
                    continue;
                }
                let mismatch =
                    expected.as_ref().is_some_and(|d| *d != entry.expected) || total.is_some_and(|t| t != entry.total);
                if mismatch {
                    return Err(StoreError::IngestConflict {
                        ref_: ref_.to_string(),
                        existing: format!("{} ({} bytes)", entry.expected, entry.total),
                    });
                }
                return Ok((entry, io));
            }
            let expected = expected.clone().ok_or_else(|| {
                StoreError::InvalidArgument(format!(
                    "no ingest with ref {ref_:?}: the first message of a new ingest must carry `expected` and `total`"
                ))
            })?;
            let meta = IngestMeta {
                ref_: ref_.to_string(),
                expected,
                total: total.unwrap_or(0),
                started_at: SystemTime::now(),
            };
            let id = name_id(ref_);
            let entry = Arc::new(IngestEntry::new(meta.clone(), id, 0, meta.started_at, IngestIo::default()));
            let io = entry.io.clone().try_lock_owned().expect("a new ingest is unlocked");
            {
                let mut map = self.ingests.lock().expect("ingest map");
                if map.contains_key(ref_) {
                    continue; // created concurrently: use that one
                }
                map.insert(ref_.to_string(), entry.clone());
            }
            // Descriptor before data, so recovery never finds data it cannot attribute.
            if let Err(e) = self.put_volatile_record(&entry.meta_key(), &meta).await {
                self.ingests.lock().expect("ingest map").remove(ref_);
                return Err(e);
            }
            return Ok((entry, io));
        }
    }

    /// Makes sure the writer is open and the hash covers every staged byte.
    async fn prepare(&self, entry: &IngestEntry, io: &mut IngestIo) -> Result<()> {
        if io.writer.is_none() {
            io.writer = Some(self.backend.stage_open(&entry.id).await?);
            io.hasher = None;
        }
        if io.hasher.is_none() && io.writer.as_ref().is_some_and(|w| w.is_empty()) {
            // Nothing staged (a new ingest): nothing to re-hash.
            io.hasher = Some(Sha256::new());
            entry.set_offset(0);
        }
        if io.hasher.is_none() {
            // After a restart (or a failed write): hash what is staged, once.
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            let mut s = self.backend.stage_read(&entry.id, 4 << 20).await?;
            while let Some(chunk) = s.try_next().await? {
                n += chunk.len() as u64;
                hasher = tokio::task::spawn_blocking(move || {
                    hasher.update(&chunk);
                    hasher
                })
                .await
                .map_err(join_err)?;
            }
            let staged = io.writer.as_ref().map(|w| w.len()).unwrap_or(0);
            if n != staged {
                io.writer = None;
                return Err(StoreError::Internal(format!(
                    "ingest {:?}: staged {staged} bytes but read back {n}",
                    entry.ref_
                )));
            }
            tracing::debug!(r#ref = %entry.ref_, bytes = n, "re-hashed staged data");
            io.hasher = Some(hasher);
            entry.set_offset(n);
        }
        Ok(())
    }

    /// Starts hashing and appending `batch` (in parallel, on blocking threads) in a task that
    /// owns the hasher and the writer until [`Store::finish_flush`] takes them back, so the
    /// session can receive the next batch meanwhile.
    fn start_flush(&self, io: &mut IngestIo, batch: Vec<Bytes>) -> Flight {
        let n: u64 = batch.iter().map(|c| c.len() as u64).sum();
        let mut hasher = io.hasher.take().expect("prepared ingest has a hasher");
        let mut writer = io.writer.take().expect("prepared ingest has a writer");
        tokio::spawn(async move {
            let for_hash = batch.clone();
            let hashing = tokio::task::spawn_blocking(move || {
                for c in &for_hash {
                    hasher.update(c);
                }
                hasher
            });
            let (hashed, written) = tokio::join!(hashing, writer.append(batch));
            FlushDone { hasher: hashed.ok(), writer, written: written.map_err(StoreError::from), n }
        })
    }

    /// Waits for a flush started by [`Store::start_flush`] and advances the ingest's offset.
    async fn finish_flush(&self, entry: &IngestEntry, io: &mut IngestIo, flight: Flight) -> Result<()> {
        let done = flight.await.map_err(join_err)?;
        match (done.hasher, done.written) {
            (Some(h), Ok(())) => {
                io.hasher = Some(h);
                io.writer = Some(done.writer);
                entry.set_offset(entry.offset() + done.n);
                Ok(())
            }
            (h, w) => {
                // Unknown how much reached storage: rebuild from what is staged next time.
                io.writer = None;
                io.hasher = None;
                w?;
                h.ok_or_else(|| StoreError::Internal("hashing task failed".into()))?;
                unreachable!("one of the two failed")
            }
        }
    }

    /// Finishes the flush in flight (if any), then writes out `batch`.
    async fn drain(
        &self,
        entry: &IngestEntry,
        io: &mut IngestIo,
        inflight: &mut Option<Flight>,
        batch: &mut Vec<Bytes>,
    ) -> Result<()> {
        if let Some(f) = inflight.take() {
            self.finish_flush(entry, io, f).await?;
        }
        if !batch.is_empty() {
            let f = self.start_flush(io, std::mem::take(batch));
            self.finish_flush(entry, io, f).await?;
        }
        Ok(())
    }

    async fn sync(&self, entry: &IngestEntry, io: &mut IngestIo) -> Result<()> {
        if let Some(w) = io.writer.as_mut() {
            if let Err(e) = w.sync().await {
                io.writer = None;
                io.hasher = None;
                tracing::warn!(r#ref = %entry.ref_, error = %e, "syncing ingest failed");
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn write_session<S>(self: Arc<Self>, mut input: S) -> Result<WriteOutcome>
    where
        S: Stream<Item = Result<WriteChunk>> + Send + Unpin,
    {
        let first = match input.next().await {
            None => {
                return Err(StoreError::InvalidArgument(
                    "empty write stream: the first message must carry `ref`".into(),
                ))
            }
            Some(r) => r?,
        };
        let ref_ = first.ref_.clone();
        validate_name("ref", &ref_)?;
        let expected = if first.expected.is_empty() { None } else { Some(parse_digest("expected", &first.expected)?) };
        let total = size_from_wire("total", first.total)?;
        let total = if expected.is_some() || total > 0 { Some(total) } else { None };
        let lease = if first.lease.is_empty() {
            None
        } else {
            validate_name("lease", &first.lease)?;
            self.live_lease(&first.lease).await?;
            Some(first.lease.clone())
        };

        let (entry, mut io) = self.open_ingest(&ref_, expected, total).await?;
        if let Some(l) = &lease {
            self.lease_add(l, None, Some(&ref_)).await?;
        }
        // A blob that exists already needs no data: drop the ingest and say so.
        if let Some(info) = self.stat_opt(&entry.expected).await? {
            self.discard(&entry, &mut io).await?;
            if let Some(l) = &lease {
                self.lease_add(l, Some(&info.digest), None).await?;
            }
            return Ok(WriteOutcome { offset: info.size, committed: Some(info), already_exists: true });
        }
        self.prepare(&entry, &mut io).await?;

        let mut received = entry.offset();
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batch_bytes = 0usize;
        // At most one batch is being hashed and written while the next one is received. Every
        // way out of the loop drains it first, so nothing touches the ingest after we return.
        let mut inflight: Option<Flight> = None;
        let mut msg = first;
        loop {
            let result = self.accept(&entry, &msg, received);
            if let Err(e) = result {
                self.drain(&entry, &mut io, &mut inflight, &mut batch).await?;
                self.sync(&entry, &mut io).await?;
                return Err(e);
            }
            if !msg.data.is_empty() {
                received += msg.data.len() as u64;
                batch_bytes += msg.data.len();
                batch.push(std::mem::take(&mut msg.data));
                if batch_bytes >= FLUSH_BYTES {
                    if let Some(f) = inflight.take() {
                        self.finish_flush(&entry, &mut io, f).await?;
                    }
                    inflight = Some(self.start_flush(&mut io, std::mem::take(&mut batch)));
                    batch_bytes = 0;
                }
            }
            if msg.commit {
                self.drain(&entry, &mut io, &mut inflight, &mut batch).await?;
                return self.commit(&entry, &mut io, lease.as_deref()).await;
            }
            match input.next().await {
                Some(Ok(next)) => msg = next,
                end => {
                    self.drain(&entry, &mut io, &mut inflight, &mut batch).await?;
                    self.sync(&entry, &mut io).await?;
                    return match end {
                        Some(Err(e)) => Err(match e {
                            StoreError::StreamBroken { detail, .. } => {
                                StoreError::StreamBroken { ref_: entry.ref_.clone(), offset: entry.offset(), detail }
                            }
                            other => other,
                        }),
                        _ => Ok(WriteOutcome { offset: entry.offset(), committed: None, already_exists: false }),
                    };
                }
            }
        }
    }

    /// Checks one message against the ingest before its data is taken.
    fn accept(&self, entry: &IngestEntry, msg: &WriteChunk, received: u64) -> Result<()> {
        if !msg.ref_.is_empty() && msg.ref_ != entry.ref_ {
            return Err(StoreError::InvalidArgument(format!(
                "a write stream is for one ingest: got ref {:?} in a stream for {:?}",
                msg.ref_, entry.ref_
            )));
        }
        let offset = size_from_wire("offset", msg.offset)?;
        if offset != received {
            return Err(StoreError::OffsetMismatch { ref_: entry.ref_.clone(), got: offset, current: received });
        }
        let end = received + msg.data.len() as u64;
        if end > entry.total {
            return Err(StoreError::SizeMismatch {
                ref_: entry.ref_.clone(),
                expected: entry.total,
                detail: format!("this message would bring it to {end}; the data was not taken"),
            });
        }
        Ok(())
    }

    async fn commit(&self, entry: &Arc<IngestEntry>, io: &mut IngestIo, lease: Option<&str>) -> Result<WriteOutcome> {
        let size = entry.offset();
        if size != entry.total {
            self.discard(entry, io).await?;
            return Err(StoreError::SizeMismatch {
                ref_: entry.ref_.clone(),
                expected: entry.total,
                detail: format!("got {size} at commit; the ingest was discarded"),
            });
        }
        let hasher = io.hasher.take().expect("prepared ingest has a hasher");
        let actual = Digest::from_sha256(hasher.finalize().into());
        if actual != entry.expected {
            self.discard(entry, io).await?;
            return Err(StoreError::DigestMismatch {
                ref_: entry.ref_.clone(),
                expected: entry.expected.clone(),
                actual,
            });
        }
        // `stage_commit` fsyncs the staged data before the rename that makes it visible.
        io.writer = None;
        let outcome = {
            // Commit and lease update happen while GC cannot run, so a leased blob is never
            // swept between the two.
            let _gc = self.gc_lock.read().await;
            let outcome = self.backend.stage_commit(&entry.id, &blob_key(&actual)).await?;
            if let Some(l) = lease {
                self.lease_add_locked(l, Some(&actual), None).await?;
            }
            outcome
        };
        io.gone = true;
        {
            let mut map = self.ingests.lock().expect("ingest map");
            if map.get(&entry.ref_).is_some_and(|e| Arc::ptr_eq(e, entry)) {
                map.remove(&entry.ref_);
            }
        }
        self.backend.delete_volatile(&entry.meta_key()).await?;
        let info = BlobInfo { digest: actual.clone(), size, created_at: SystemTime::now() };
        tracing::debug!(digest = %actual, size, already_exists = outcome == crate::backend::CommitOutcome::AlreadyExists, "committed");
        Ok(WriteOutcome {
            offset: size,
            committed: Some(info),
            already_exists: outcome == crate::backend::CommitOutcome::AlreadyExists,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fs::FsBackend;
    use crate::store::StoreConfig;

    async fn open(dir: &std::path::Path) -> Arc<Store> {
        Store::open(Arc::new(FsBackend::open(dir).unwrap()), StoreConfig::default()).await.unwrap()
    }

    fn chunks(
        r: &str,
        data: &[u8],
        expected: &Digest,
        from: usize,
        step: usize,
        commit: bool,
    ) -> Vec<Result<WriteChunk>> {
        let mut out = Vec::new();
        let mut off = from;
        loop {
            let end = (off + step).min(data.len());
            out.push(Ok(WriteChunk {
                ref_: r.to_string(),
                expected: expected.to_string(),
                total: data.len() as i64,
                offset: off as i64,
                data: Bytes::copy_from_slice(&data[off..end]),
                commit: commit && end == data.len(),
                lease: String::new(),
            }));
            off = end;
            if off >= data.len() {
                return out;
            }
        }
    }

    async fn read_back(store: &Store, d: &Digest) -> Vec<u8> {
        let s = store.read(d, 0, 0).await.unwrap();
        let v: Vec<Bytes> = s.try_collect().await.unwrap();
        v.concat()
    }

    #[tokio::test]
    async fn write_commit_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(&data);
        let out = store.write(futures::stream::iter(chunks("r1", &data, &d, 0, 100_000, true))).await.unwrap();
        assert_eq!(out.committed.unwrap().size, data.len() as u64);
        assert_eq!(read_back(&store, &d).await, data);
        assert!(store.list_writes().is_empty());
        // The same digest again short-circuits.
        let again = store.write(futures::stream::iter(chunks("r2", &data, &d, 0, 1 << 20, true))).await.unwrap();
        assert!(again.already_exists);
        // Empty blob.
        let e = Digest::of(b"");
        let out = store.write(futures::stream::iter(chunks("empty", b"", &e, 0, 10, true))).await.unwrap();
        assert_eq!(out.committed.unwrap().size, 0);
    }

    #[tokio::test]
    async fn mismatches_discard_the_ingest() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let data = vec![7u8; 10_000];
        let wrong = Digest::of(b"x");
        let e = store.write(futures::stream::iter(chunks("bad", &data, &wrong, 0, 4096, true))).await.unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
        assert!(matches!(store.stat(&wrong).await, Err(StoreError::BlobNotFound(_))));
        assert!(store.list_writes().is_empty());
        assert!(store.list().await.unwrap().is_empty());
        let d = Digest::of(&data);
        let mut msgs = chunks("short", &data, &d, 0, 4096, false);
        msgs.pop();
        if let Some(Ok(m)) = msgs.last_mut() {
            m.commit = true;
        }
        let e = store.write(futures::stream::iter(msgs)).await.unwrap_err();
        assert!(matches!(e, StoreError::SizeMismatch { .. }), "{e}");
        assert!(store.list_writes().is_empty());
    }

    #[tokio::test]
    async fn resume_in_process_and_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 253) as u8).collect();
        let d = Digest::of(&data);
        {
            let store = open(dir.path()).await;
            let mut first = chunks("res", &data, &d, 0, 500_000, false);
            first.truncate(3);
            let out = store.write(futures::stream::iter(first)).await.unwrap();
            assert_eq!(out.offset, 1_500_000);
            assert_eq!(store.write_status("res").unwrap().offset, 1_500_000);
            // Resume in process (hash state kept), stop again.
            let mut second = chunks("res", &data, &d, 1_500_000, 500_000, false);
            second.truncate(2);
            // A broken stream keeps what arrived.
            second.push(Err(StoreError::StreamBroken { ref_: String::new(), offset: 0, detail: "reset".into() }));
            let e = store.write(futures::stream::iter(second)).await.unwrap_err();
            assert!(matches!(e, StoreError::StreamBroken { offset: 2_500_000, .. }), "{e}");
        }
        // "Restart": a new Store on the same root re-hashes the staged bytes on resume.
        let store = open(dir.path()).await;
        let st = store.write_status("res").unwrap();
        assert_eq!((st.offset, st.total, st.expected.clone()), (2_500_000, data.len() as u64, d.clone()));
        let e = store.write(futures::stream::iter(chunks("res", &data, &d, 100, 500_000, true))).await.unwrap_err();
        assert!(matches!(e, StoreError::OffsetMismatch { current: 2_500_000, .. }), "{e}");
        let out = store.write(futures::stream::iter(chunks("res", &data, &d, 2_500_000, 500_000, true))).await.unwrap();
        assert_eq!(out.committed.unwrap().digest, d);
        assert_eq!(read_back(&store, &d).await, data);
        // Conflicting parameters for an existing ingest are refused.
        let other = vec![1u8; 10];
        let od = Digest::of(&other);
        let mut part = chunks("c", &other, &od, 0, 5, false);
        part.truncate(1);
        store.write(futures::stream::iter(part)).await.unwrap();
        let e = store.write(futures::stream::iter(chunks("c", &data, &d, 5, 5, true))).await.unwrap_err();
        assert!(matches!(e, StoreError::IngestConflict { .. }), "{e}");
        store.abort_write("c").await.unwrap();
        assert!(matches!(store.write_status("c"), Err(StoreError::IngestNotFound(_))));
    }

    #[tokio::test]
    async fn recovery_drops_ingests_of_committed_blobs_and_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let data = b"hello world".to_vec();
        let d = Digest::of(&data);
        {
            let store = open(dir.path()).await;
            store.write(futures::stream::iter(chunks("done", &data, &d, 0, 100, true))).await.unwrap();
            // Simulate a crash between publishing the blob and deleting the descriptor.
            let meta =
                IngestMeta { ref_: "done".into(), expected: d.clone(), total: 11, started_at: SystemTime::now() };
            store.put_record(&format!("{INGESTS}{}.json", name_id("done")), &meta).await.unwrap();
        }
        std::fs::write(dir.path().join("staging").join("orphan"), b"junk").unwrap();
        let store = open(dir.path()).await;
        assert!(store.list_writes().is_empty());
        assert!(!dir.path().join("staging").join("orphan").exists());
        assert_eq!(read_back(&store, &d).await, data);
    }
}
