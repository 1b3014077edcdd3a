//! Image records, build-cache entries and leases: small JSON records, one backend object each
//! (replaced atomically), cached in memory and written through.
//!
//! Everything that makes a blob referenced (an image or cache target, a lease resource) is done
//! under the GC lock (shared), after checking that the blob exists, so a concurrent GC either
//! ran before (and the check fails loudly) or runs after (and sees the reference).

use crate::error::{Result, StoreError};
use crate::model::{
    blob_key, name_id, validate_label_like, validate_name, BlobInfo, CacheEntry, Descriptor, ImageRecord, Lease,
};
use crate::store::{Store, CACHE, IMAGES, LEASES};
use berth_common::Digest;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

impl Store {
    async fn check_target(&self, what: &str, target: &Descriptor) -> Result<()> {
        let info = self
            .stat_opt(&target.digest)
            .await?
            .ok_or_else(|| StoreError::MissingTarget { what: what.to_string(), digest: target.digest.clone() })?;
        if info.size != target.size {
            return Err(StoreError::TargetSizeMismatch {
                what: what.to_string(),
                digest: target.digest.clone(),
                claimed: target.size,
                actual: info.size,
            });
        }
        Ok(())
    }

    // ---- images ----

    /// The record for `name`.
    pub async fn image_get(&self, name: &str) -> Result<ImageRecord> {
        validate_label_like("image name", name)?;
        self.images.lock().await.get(name).cloned().ok_or_else(|| StoreError::ImageNotFound(name.to_string()))
    }

    /// Records whose name starts with `prefix`, sorted by name.
    pub async fn image_list(&self, prefix: &str) -> Vec<ImageRecord> {
        self.images
            .lock()
            .await
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Creates or replaces the record for `name`; the target must be in the store.
    pub async fn image_put(
        &self,
        name: &str,
        target: Descriptor,
        labels: BTreeMap<String, String>,
    ) -> Result<ImageRecord> {
        validate_label_like("image name", name)?;
        let _gc = self.gc_lock.read().await;
        self.check_target(&format!("image {name}"), &target).await?;
        // Blobs committed so far become durable under their names before a record points at them.
        self.backend.barrier().await?;
        let mut images = self.images.lock().await;
        let now = SystemTime::now();
        let created_at = images.get(name).map(|r| r.created_at).unwrap_or(now);
        let rec = ImageRecord { name: name.to_string(), target, created_at, updated_at: now, labels };
        self.put_record(&format!("{IMAGES}{}.json", name_id(name)), &rec).await?;
        images.insert(name.to_string(), rec.clone());
        Ok(rec)
    }

    /// Finishes an image in one step: stores the small `blobs` (each checked against its
    /// digest), makes every blob committed so far durable, creates or replaces the record for
    /// `name` and releases `release_lease`. Returns the record and the target it had before.
    pub async fn image_commit(
        &self,
        name: &str,
        target: Descriptor,
        labels: BTreeMap<String, String>,
        blobs: Vec<(Digest, Bytes)>,
        release_lease: Option<&str>,
    ) -> Result<(ImageRecord, Option<Digest>)> {
        validate_label_like("image name", name)?;
        if let Some(l) = release_lease {
            validate_name("lease id", l)?;
        }
        let inline_bytes: usize = blobs.iter().map(|(_, b)| b.len()).sum();
        let check = move || {
            for (d, data) in &blobs {
                let actual = Digest::of(data);
                if actual != *d {
                    return Err(StoreError::InvalidArgument(format!(
                        "inline blob {d}: its {} bytes hash to {actual}; nothing was stored",
                        data.len()
                    )));
                }
            }
            Ok(blobs)
        };
        // Manifests and configs are a few KiB (microseconds to hash): only large ones are worth
        // the hand-off to a blocking thread.
        let blobs = if inline_bytes <= 256 << 10 {
            check()?
        } else {
            tokio::task::spawn_blocking(check)
                .await
                .map_err(|e| StoreError::Internal(format!("hashing task failed: {e}")))??
        };
        let rec;
        let previous;
        {
            let _gc = self.gc_lock.read().await;
            // The target is either among `blobs` or must be in the store already.
            let inline_target = blobs.iter().find(|(d, _)| *d == target.digest).map(|(_, b)| b.len() as u64);
            match inline_target {
                Some(size) if size != target.size => {
                    return Err(StoreError::TargetSizeMismatch {
                        what: format!("image {name}"),
                        digest: target.digest.clone(),
                        claimed: target.size,
                        actual: size,
                    })
                }
                Some(_) => {}
                None => self.check_target(&format!("image {name}"), &target).await?,
            }
            let mut images = self.images.lock().await;
            let now = SystemTime::now();
            previous = images.get(name).map(|r| r.target.digest.clone());
            let created_at = images.get(name).map(|r| r.created_at).unwrap_or(now);
            rec = ImageRecord { name: name.to_string(), target, created_at, updated_at: now, labels };
            let key = format!("{IMAGES}{}.json", name_id(name));
            let data = serde_json::to_vec_pretty(&rec)
                .map_err(|e| StoreError::CorruptRecord { key: key.clone(), detail: e.to_string() })?;
            let items = blobs.into_iter().map(|(d, b)| (blob_key(&d), b)).collect();
            self.backend.put_new_then_record(items, &key, Bytes::from(data)).await?;
            images.insert(name.to_string(), rec.clone());
        }
        if let Some(l) = release_lease {
            match self.lease_delete(l).await {
                Ok(()) | Err(StoreError::LeaseNotFound(_)) => {}
                Err(e) => tracing::warn!(lease = l, error = %e, "cannot release the lease after committing the image"),
            }
        }
        Ok((rec, previous))
    }

    /// Removes the record for `name` (its blobs stay until GC).
    pub async fn image_delete(&self, name: &str) -> Result<()> {
        validate_label_like("image name", name)?;
        let mut images = self.images.lock().await;
        if !images.contains_key(name) {
            return Err(StoreError::ImageNotFound(name.to_string()));
        }
        self.backend.delete(&format!("{IMAGES}{}.json", name_id(name))).await?;
        images.remove(name);
        Ok(())
    }

    // ---- build cache ----

    /// Looks up `key` and marks it used.
    pub async fn cache_get(&self, key: &str) -> Result<CacheEntry> {
        validate_label_like("cache key", key)?;
        let mut cache = self.cache.lock().await;
        let entry = cache.get_mut(key).ok_or_else(|| StoreError::CacheNotFound(key.to_string()))?;
        entry.last_used_at = SystemTime::now();
        let entry = entry.clone();
        // Recording the use is best effort: a hit must not fail because of it.
        if let Err(e) = self.put_record(&format!("{CACHE}{}.json", name_id(key)), &entry).await {
            tracing::warn!(key, error = %e, "cannot record cache use");
        }
        Ok(entry)
    }

    /// Records `key → target`; the target must be in the store.
    pub async fn cache_put(&self, key: &str, target: Descriptor) -> Result<CacheEntry> {
        validate_label_like("cache key", key)?;
        let _gc = self.gc_lock.read().await;
        self.check_target(&format!("cache entry {key}"), &target).await?;
        self.backend.barrier().await?;
        let mut cache = self.cache.lock().await;
        let now = SystemTime::now();
        let created_at = cache.get(key).map(|e| e.created_at).unwrap_or(now);
        let entry = CacheEntry { key: key.to_string(), target, created_at, last_used_at: now };
        self.put_record(&format!("{CACHE}{}.json", name_id(key)), &entry).await?;
        cache.insert(key.to_string(), entry.clone());
        Ok(entry)
    }

    /// Removes one entry.
    pub async fn cache_delete(&self, key: &str) -> Result<()> {
        validate_label_like("cache key", key)?;
        let mut cache = self.cache.lock().await;
        if !cache.contains_key(key) {
            return Err(StoreError::CacheNotFound(key.to_string()));
        }
        self.backend.delete(&format!("{CACHE}{}.json", name_id(key))).await?;
        cache.remove(key);
        Ok(())
    }

    /// Every entry, sorted by key.
    pub async fn cache_list(&self) -> Vec<CacheEntry> {
        self.cache.lock().await.values().cloned().collect()
    }

    // ---- leases ----

    /// Creates a lease (`id` empty: a fresh one), expiring after `ttl` if given.
    pub async fn lease_create(
        &self,
        id: &str,
        ttl: Option<Duration>,
        labels: BTreeMap<String, String>,
    ) -> Result<Lease> {
        let id = if id.is_empty() { format!("lease-{}", uuid::Uuid::new_v4().simple()) } else { id.to_string() };
        validate_name("lease id", &id)?;
        let now = SystemTime::now();
        let mut leases = self.leases.lock().await;
        if leases.get(&id).is_some_and(|l| !l.expired(now)) {
            return Err(StoreError::LeaseExists(id));
        }
        let lease = Lease {
            id: id.clone(),
            created_at: now,
            expires_at: ttl.map(|t| now + t),
            labels,
            digests: Default::default(),
            ingests: Default::default(),
        };
        self.put_volatile_record(&format!("{LEASES}{}.json", name_id(&id)), &lease).await?;
        leases.insert(id, lease.clone());
        Ok(lease)
    }

    /// Releases a lease.
    pub async fn lease_delete(&self, id: &str) -> Result<()> {
        validate_name("lease id", id)?;
        let mut leases = self.leases.lock().await;
        if leases.get(id).is_none_or(|l| l.expired(SystemTime::now())) {
            return Err(StoreError::LeaseNotFound(id.to_string()));
        }
        self.backend.delete_volatile(&format!("{LEASES}{}.json", name_id(id))).await?;
        leases.remove(id);
        Ok(())
    }

    /// Live (unexpired) leases, sorted by id.
    pub async fn lease_list(&self) -> Vec<Lease> {
        let now = SystemTime::now();
        self.leases.lock().await.values().filter(|l| !l.expired(now)).cloned().collect()
    }

    /// The live lease `id`.
    pub(crate) async fn live_lease(&self, id: &str) -> Result<Lease> {
        let now = SystemTime::now();
        self.leases
            .lock()
            .await
            .get(id)
            .filter(|l| !l.expired(now))
            .cloned()
            .ok_or_else(|| StoreError::LeaseNotFound(id.to_string()))
    }

    /// Attaches a digest or an ingest ref to a lease (the digest need not exist yet: that is the
    /// point of leasing it).
    pub async fn lease_add(&self, id: &str, digest: Option<&Digest>, ingest: Option<&str>) -> Result<()> {
        let _gc = self.gc_lock.read().await;
        self.lease_add_locked(id, digest, ingest).await
    }

    /// Which of `digests` are present (in order) and which are missing; the present ones are
    /// attached to lease `id` in the same step (under the GC lock, so none is swept in between).
    pub async fn lease_add_present(&self, id: &str, digests: &[Digest]) -> Result<(Vec<BlobInfo>, Vec<Digest>)> {
        validate_name("lease id", id)?;
        let _gc = self.gc_lock.read().await;
        self.live_lease(id).await?;
        let (present, missing) = self.stat_many(digests).await?;
        if !present.is_empty() {
            self.update_lease(id, |l| present.iter().fold(false, |c, b| l.digests.insert(b.digest.clone()) | c))
                .await?;
        }
        Ok((present, missing))
    }

    /// Applies `change` to live lease `id` (which says whether it changed anything) and saves it
    /// when it did.
    async fn update_lease(&self, id: &str, change: impl FnOnce(&mut Lease) -> bool) -> Result<()> {
        let now = SystemTime::now();
        let mut leases = self.leases.lock().await;
        let lease =
            leases.get(id).filter(|l| !l.expired(now)).ok_or_else(|| StoreError::LeaseNotFound(id.to_string()))?;
        let mut updated = lease.clone();
        if change(&mut updated) {
            self.put_volatile_record(&format!("{LEASES}{}.json", name_id(id)), &updated).await?;
            leases.insert(id.to_string(), updated);
        }
        Ok(())
    }

    /// [`Store::lease_add`] for a caller that holds the GC lock already.
    pub(crate) async fn lease_add_locked(&self, id: &str, digest: Option<&Digest>, ingest: Option<&str>) -> Result<()> {
        validate_name("lease id", id)?;
        if let Some(r) = ingest {
            validate_name("ingest ref", r)?;
        }
        if digest.is_none() && ingest.is_none() {
            return Err(StoreError::InvalidArgument("set either `digest` or `ingest` to add to a lease".into()));
        }
        self.update_lease(id, |l| {
            let mut changed = false;
            if let Some(d) = digest {
                changed |= l.digests.insert(d.clone());
            }
            if let Some(r) = ingest {
                changed |= l.ingests.insert(r.to_string());
            }
            changed
        })
        .await
    }
}
