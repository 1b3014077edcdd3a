//! The store: committed blobs, ingests, records and leases over one [`Backend`], and recovery of
//! that state when the service starts.
//!
//! Object layout (keys of the backend):
//! - `blobs/sha256/<hex>`: committed blobs;
//! - `meta/ingests/<id>.json`: an ingest's ref, expected digest and size (its bytes are staged in
//!   the backend under the same `<id>`, the sha256 of the ref);
//! - `meta/images/<id>.json`, `meta/cache/<id>.json`, `meta/leases/<id>.json`: records, one object
//!   each, replaced atomically.

use crate::backend::{Backend, ByteStream};
use crate::error::{Result, StoreError};
use crate::ingest::{IngestEntry, IngestMeta};
use crate::model::{blob_key, BlobInfo, CacheEntry, ImageRecord, Lease};
use berth_common::Digest;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Tunables of the store.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Size of the chunks `Read` streams.
    pub read_chunk: usize,
    /// An unleased ingest idle for longer than this is removed by GC.
    pub stale_ingest_after: Duration,
    /// GC spares blobs committed less than this long ago (0: none; leases are the real
    /// protection).
    pub gc_grace: Duration,
    /// Largest manifest/index GC parses to find children.
    pub max_manifest_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            read_chunk: 1 << 20,
            stale_ingest_after: Duration::from_secs(24 * 3600),
            gc_grace: Duration::ZERO,
            max_manifest_bytes: 4 << 20,
        }
    }
}

pub(crate) const INGESTS: &str = "meta/ingests/";
pub(crate) const IMAGES: &str = "meta/images/";
pub(crate) const CACHE: &str = "meta/cache/";
pub(crate) const LEASES: &str = "meta/leases/";
pub(crate) const BLOBS: &str = "blobs/sha256/";

/// The content store. Cheap to share as `Arc<Store>`.
pub struct Store {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) cfg: StoreConfig,
    pub(crate) ingests: std::sync::Mutex<HashMap<String, Arc<IngestEntry>>>,
    pub(crate) images: tokio::sync::Mutex<BTreeMap<String, ImageRecord>>,
    pub(crate) cache: tokio::sync::Mutex<BTreeMap<String, CacheEntry>>,
    pub(crate) leases: tokio::sync::Mutex<BTreeMap<String, Lease>>,
    /// Held for writing by GC; for reading by everything that makes a blob referenced (commit,
    /// records, lease resources), so GC never sweeps what is about to become reachable.
    pub(crate) gc_lock: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend.describe()).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store over `backend`, recovering after a crash: drops temp objects, reloads the
    /// records, re-registers ingests that were in progress (their hash state is rebuilt from the
    /// staged bytes on resume) and drops ingests whose blob was already committed.
    pub async fn open(backend: Arc<dyn Backend>, cfg: StoreConfig) -> Result<Arc<Self>> {
        backend.recover().await?;
        let store = Arc::new(Self {
            backend,
            cfg,
            ingests: Default::default(),
            images: Default::default(),
            cache: Default::default(),
            leases: Default::default(),
            gc_lock: Default::default(),
        });
        let images: Vec<ImageRecord> = store.load_records(IMAGES).await?;
        store.images.lock().await.extend(images.into_iter().map(|r| (r.name.clone(), r)));
        let cache: Vec<CacheEntry> = store.load_records(CACHE).await?;
        store.cache.lock().await.extend(cache.into_iter().map(|r| (r.key.clone(), r)));
        let leases: Vec<Lease> = store.load_records(LEASES).await?;
        store.leases.lock().await.extend(leases.into_iter().map(|r| (r.id.clone(), r)));
        store.recover_ingests().await?;
        Ok(store)
    }

    /// The backend's description, e.g. `filesystem:/var/lib/berth/store`.
    pub fn backend_description(&self) -> String {
        self.backend.describe()
    }

    pub(crate) async fn load_records<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for m in self.backend.list(prefix).await? {
            if !m.key.ends_with(".json") {
                continue;
            }
            let data = self.backend.get_bytes(&m.key, 16 << 20).await?;
            match serde_json::from_slice(&data) {
                Ok(r) => out.push(r),
                // Records are replaced atomically, so this is damage from outside: keep serving
                // and say which file it is.
                Err(e) => tracing::warn!(key = %m.key, error = %e, "skipping unreadable record"),
            }
        }
        Ok(out)
    }

    pub(crate) async fn put_record<T: serde::Serialize>(&self, key: &str, rec: &T) -> Result<()> {
        let data = serde_json::to_vec_pretty(rec)
            .map_err(|e| StoreError::CorruptRecord { key: key.to_string(), detail: e.to_string() })?;
        self.backend.put(key, Bytes::from(data)).await?;
        Ok(())
    }

    /// [`Store::put_record`] for in-progress state (ingest descriptors, leases): atomic, not
    /// fsynced (see `Backend::put_volatile`); an unreadable one is skipped at start.
    pub(crate) async fn put_volatile_record<T: serde::Serialize>(&self, key: &str, rec: &T) -> Result<()> {
        let data = serde_json::to_vec_pretty(rec)
            .map_err(|e| StoreError::CorruptRecord { key: key.to_string(), detail: e.to_string() })?;
        self.backend.put_volatile(key, Bytes::from(data)).await?;
        Ok(())
    }

    async fn recover_ingests(&self) -> Result<()> {
        let metas: Vec<IngestMeta> = self.load_records(INGESTS).await?;
        let staged: HashMap<String, crate::backend::ObjectMeta> =
            self.backend.stage_list().await?.into_iter().map(|m| (m.key.clone(), m)).collect();
        let mut known = std::collections::HashSet::new();
        for meta in metas {
            let id = crate::model::name_id(&meta.ref_);
            if self.backend.head(&blob_key(&meta.expected)).await?.is_some() {
                // Committed just before a crash (or a duplicate): the ingest is done.
                self.backend.stage_delete(&id).await?;
                self.backend.delete(&format!("{INGESTS}{id}.json")).await?;
                tracing::info!(r#ref = %meta.ref_, digest = %meta.expected, "dropped ingest of a committed blob");
                continue;
            }
            let offset = staged.get(&id).map(|m| m.size).unwrap_or(0);
            let modified = staged.get(&id).map(|m| m.modified).unwrap_or(meta.started_at);
            tracing::info!(r#ref = %meta.ref_, offset, total = meta.total, "recovered ingest");
            known.insert(id.clone());
            let entry = IngestEntry::recovered(meta, id, offset, modified);
            self.ingests.lock().expect("ingest map").insert(entry.ref_.clone(), Arc::new(entry));
        }
        for id in staged.keys() {
            if !known.contains(id) {
                // Data without a descriptor: the ingest was being created or discarded.
                self.backend.stage_delete(id).await?;
            }
        }
        Ok(())
    }

    // ---- blobs ----

    /// Information about a committed blob.
    pub async fn stat(&self, d: &Digest) -> Result<BlobInfo> {
        self.stat_opt(d).await?.ok_or_else(|| StoreError::BlobNotFound(d.clone()))
    }

    pub(crate) async fn stat_opt(&self, d: &Digest) -> Result<Option<BlobInfo>> {
        Ok(self.backend.head(&blob_key(d)).await?.map(|m| BlobInfo {
            digest: d.clone(),
            size: m.size,
            created_at: m.modified,
        }))
    }

    /// Which of `digests` are present (in order) and which are missing (in order).
    pub async fn stat_many(&self, digests: &[Digest]) -> Result<(Vec<BlobInfo>, Vec<Digest>)> {
        let mut results: Vec<Option<BlobInfo>> = Vec::with_capacity(digests.len());
        for batch in digests.chunks(32) {
            results.extend(futures::future::try_join_all(batch.iter().map(|d| self.stat_opt(d))).await?);
        }
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for (d, r) in digests.iter().zip(results) {
            match r {
                Some(i) => present.push(i),
                None => missing.push(d.clone()),
            }
        }
        Ok((present, missing))
    }

    /// Streams `length` bytes (0: to the end) of a blob from `offset`.
    pub async fn read(&self, d: &Digest, offset: u64, length: u64) -> Result<ByteStream> {
        let info = self.stat(d).await?;
        if offset > info.size {
            return Err(StoreError::OutOfRange { digest: d.clone(), offset, size: info.size });
        }
        let len = if length == 0 { info.size - offset } else { length.min(info.size - offset) };
        match self.backend.get(&blob_key(d), offset, Some(len), self.cfg.read_chunk).await {
            Ok(s) => Ok(s),
            Err(crate::backend::BackendError::NotFound(_)) => Err(StoreError::BlobNotFound(d.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a committed blob.
    pub async fn delete(&self, d: &Digest) -> Result<()> {
        if self.backend.delete(&blob_key(d)).await? {
            Ok(())
        } else {
            Err(StoreError::BlobNotFound(d.clone()))
        }
    }

    /// Every committed blob, sorted by digest.
    pub async fn list(&self) -> Result<Vec<BlobInfo>> {
        Ok(self
            .backend
            .list(BLOBS)
            .await?
            .into_iter()
            .filter_map(|m| {
                let d: Digest = format!("sha256:{}", m.key.strip_prefix(BLOBS)?).parse().ok()?;
                Some(BlobInfo { digest: d, size: m.size, created_at: m.modified })
            })
            .collect())
    }

    /// Reads a whole (small) blob.
    pub(crate) async fn read_small(&self, d: &Digest, max: u64) -> Result<Bytes> {
        Ok(self.backend.get_bytes(&blob_key(d), max).await?)
    }
}
