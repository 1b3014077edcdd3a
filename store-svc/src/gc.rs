//! Garbage collection: mark from the roots (image records, build-cache entries and live leases)
//! through manifests, indexes and configs; sweep every other blob and every stale, unleased
//! ingest. The model is containerd's `docs/garbage-collection.md`, without its label-based
//! references: children are found by parsing the JSON of manifests and indexes.
//!
//! GC holds the GC lock exclusively from mark to sweep, while every operation that makes a blob
//! referenced (commit with a lease, image/cache put, lease resources) holds it shared; so a
//! reference is either seen by the mark or made after the sweep.

use crate::error::{Result, StoreError};
use crate::model::{blob_key, BlobInfo, GcReport, Usage};
use crate::store::{Store, LEASES};
use berth_common::Digest;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

/// Media types of documents whose children GC follows.
const MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.oci.artifact.manifest.v1+json",
];

#[derive(Deserialize)]
struct ChildDesc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

#[derive(Deserialize)]
struct FsLayer {
    #[serde(rename = "blobSum")]
    blob_sum: String,
}

/// The parts of a manifest or index that reference other blobs.
#[derive(Deserialize)]
struct Doc {
    config: Option<ChildDesc>,
    #[serde(default)]
    layers: Vec<ChildDesc>,
    #[serde(default)]
    manifests: Vec<ChildDesc>,
    #[serde(default)]
    blobs: Vec<ChildDesc>,
    subject: Option<ChildDesc>,
    #[serde(rename = "fsLayers", default)]
    fs_layers: Vec<FsLayer>,
}

/// Whether a blob of this media type may reference others (`None`: unknown, sniff it).
fn may_reference(media_type: &str) -> Option<bool> {
    let mt = media_type.split(';').next().unwrap_or("").trim();
    if MANIFESTS.contains(&mt) {
        Some(true)
    } else if mt.is_empty() || mt == "application/json" {
        None
    } else {
        Some(false)
    }
}

struct Plan {
    removed: Vec<BlobInfo>,
    removed_ingests: Vec<(String, u64)>,
    kept: u64,
    expired_leases: Vec<String>,
}

impl Store {
    /// The blobs `d` references (with their media types), if it is a manifest or index.
    async fn children(&self, d: &Digest, media_type: &str) -> Result<Vec<(Digest, String)>> {
        let Some(info) = self.stat_opt(d).await? else { return Ok(Vec::new()) };
        let parse = match may_reference(media_type) {
            Some(p) => p,
            None => info.size <= self.cfg.max_manifest_bytes,
        };
        if !parse {
            return Ok(Vec::new());
        }
        if info.size > self.cfg.max_manifest_bytes {
            tracing::warn!(digest = %d, size = info.size, "manifest too large to follow; its children are not protected");
            return Ok(Vec::new());
        }
        let data = self.read_small(d, self.cfg.max_manifest_bytes).await?;
        let first = data.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Ok(Vec::new());
        }
        let doc: Doc = match serde_json::from_slice(&data) {
            Ok(doc) => doc,
            Err(e) => {
                if may_reference(media_type) == Some(true) {
                    tracing::warn!(digest = %d, error = %e, "cannot parse manifest; its children are not protected");
                }
                return Ok(Vec::new());
            }
        };
        let mut out = Vec::new();
        let descs = doc.config.into_iter().chain(doc.layers).chain(doc.manifests).chain(doc.blobs).chain(doc.subject);
        for c in descs {
            match c.digest.parse::<Digest>() {
                Ok(cd) => out.push((cd, c.media_type)),
                Err(e) => tracing::warn!(parent = %d, error = %e, "skipping a child with an invalid digest"),
            }
        }
        for l in doc.fs_layers {
            if let Ok(cd) = l.blob_sum.parse::<Digest>() {
                out.push((cd, String::new()));
            }
        }
        Ok(out)
    }

    async fn plan(&self) -> Result<Plan> {
        let now = SystemTime::now();
        let mut roots: Vec<(Digest, String)> = Vec::new();
        roots.extend(self.images.lock().await.values().map(|r| (r.target.digest.clone(), r.target.media_type.clone())));
        roots.extend(self.cache.lock().await.values().map(|e| (e.target.digest.clone(), e.target.media_type.clone())));
        let mut leased_ingests = HashSet::new();
        let mut expired_leases = Vec::new();
        for l in self.leases.lock().await.values() {
            if l.expired(now) {
                expired_leases.push(l.id.clone());
                continue;
            }
            roots.extend(l.digests.iter().map(|d| (d.clone(), String::new())));
            leased_ingests.extend(l.ingests.iter().cloned());
        }

        // Mark.
        let mut marked: HashSet<Digest> = HashSet::new();
        let mut queue = roots;
        while let Some((d, mt)) = queue.pop() {
            if !marked.insert(d.clone()) {
                continue;
            }
            queue.extend(self.children(&d, &mt).await?);
        }

        // Sweep candidates.
        let blobs = self.list().await?;
        let mut removed = Vec::new();
        let mut kept = 0;
        for b in blobs {
            let young = now.duration_since(b.created_at).map(|age| age < self.cfg.gc_grace).unwrap_or(true);
            if marked.contains(&b.digest) || (young && !self.cfg.gc_grace.is_zero()) {
                kept += 1;
            } else {
                removed.push(b);
            }
        }
        let mut removed_ingests = Vec::new();
        for s in self.list_writes() {
            let idle = now.duration_since(s.updated_at).unwrap_or_default();
            if !leased_ingests.contains(&s.ref_) && idle >= self.cfg.stale_ingest_after {
                removed_ingests.push((s.ref_, s.offset));
            }
        }
        Ok(Plan { removed, removed_ingests, kept, expired_leases })
    }

    /// Runs a GC; with `dry_run` only reports what it would remove.
    pub async fn collect(&self, dry_run: bool) -> Result<GcReport> {
        let _gc = self.gc_lock.write().await;
        let plan = self.plan().await?;
        let mut report = GcReport { kept: plan.kept, dry_run, ..Default::default() };
        if dry_run {
            report.bytes_freed = plan.removed.iter().map(|b| b.size).sum::<u64>()
                + plan.removed_ingests.iter().map(|(_, n)| n).sum::<u64>();
            report.removed = plan.removed;
            report.removed_ingests = plan.removed_ingests.into_iter().map(|(r, _)| r).collect();
            return Ok(report);
        }
        for b in plan.removed {
            match self.backend.delete(&blob_key(&b.digest)).await {
                Ok(true) => {
                    report.bytes_freed += b.size;
                    report.removed.push(b);
                }
                Ok(false) => {}
                Err(e) => return Err(StoreError::from(e)),
            }
        }
        for (r, n) in plan.removed_ingests {
            let entry = self.ingests.lock().expect("ingest map").get(&r).cloned();
            let Some(entry) = entry else { continue };
            // An ingest someone is writing right now is not stale.
            let Ok(mut io) = entry.io.clone().try_lock_owned() else { continue };
            if io.gone {
                continue;
            }
            self.discard(&entry, &mut io).await?;
            report.bytes_freed += n;
            report.removed_ingests.push(r);
        }
        let mut leases = self.leases.lock().await;
        for id in plan.expired_leases {
            self.backend.delete(&format!("{LEASES}{}.json", crate::model::name_id(&id))).await?;
            leases.remove(&id);
        }
        tracing::info!(
            removed = report.removed.len(),
            removed_ingests = report.removed_ingests.len(),
            bytes_freed = report.bytes_freed,
            kept = report.kept,
            "garbage collected"
        );
        Ok(report)
    }

    /// What the store holds, and what GC would free now.
    pub async fn usage(self: &Arc<Self>) -> Result<Usage> {
        let blobs = self.list().await?;
        let ingests = self.list_writes();
        let plan = {
            let _gc = self.gc_lock.read().await;
            self.plan().await?
        };
        let reclaimable =
            plan.removed.iter().map(|b| b.size).sum::<u64>() + plan.removed_ingests.iter().map(|(_, n)| n).sum::<u64>();
        Ok(Usage {
            blobs: blobs.len() as u64,
            blob_bytes: blobs.iter().map(|b| b.size).sum(),
            images: self.images.lock().await.len() as u64,
            cache_entries: self.cache.lock().await.len() as u64,
            ingests: ingests.len() as u64,
            ingest_bytes: ingests.iter().map(|s| s.offset).sum(),
            reclaimable_bytes: reclaimable,
            backend: self.backend.describe(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(may_reference("application/vnd.oci.image.index.v1+json"), Some(true));
        assert_eq!(may_reference("application/vnd.docker.distribution.manifest.v2+json"), Some(true));
        assert_eq!(may_reference("application/vnd.oci.image.layer.v1.tar+gzip"), Some(false));
        assert_eq!(may_reference("application/vnd.oci.image.config.v1+json"), Some(false));
        assert_eq!(may_reference(""), None);
    }
}
