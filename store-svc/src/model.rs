//! The store's own vocabulary (no generated types): descriptors, blob and ingest information,
//! image records, build-cache entries and leases, plus the input checks shared by every RPC.

use crate::error::{Result, StoreError};
use berth_common::Digest;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// An OS/architecture pair, as in an OCI index entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// e.g. "linux".
    pub os: String,
    /// e.g. "amd64".
    pub architecture: String,
    /// e.g. "v8".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
    /// Windows only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub os_version: String,
}

/// A content descriptor (OCI): what a blob is and where to find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// Media type; may be empty when unknown.
    #[serde(default)]
    pub media_type: String,
    /// Content address.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Platform, for index entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// A committed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// When it was committed.
    pub created_at: SystemTime,
}

/// An ingest in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestStatus {
    /// Client-chosen ref.
    pub ref_: String,
    /// Expected digest.
    pub expected: Digest,
    /// Expected size.
    pub total: u64,
    /// Bytes received so far (resume from here).
    pub offset: u64,
    /// When it began.
    pub started_at: SystemTime,
    /// When data last arrived.
    pub updated_at: SystemTime,
}

/// A name pointing at a manifest or index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Normalized name.
    pub name: String,
    /// The manifest or index.
    pub target: Descriptor,
    /// First created.
    pub created_at: SystemTime,
    /// Last changed.
    pub updated_at: SystemTime,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A build-cache entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Cache key.
    pub key: String,
    /// What the step produced.
    pub target: Descriptor,
    /// When recorded.
    pub created_at: SystemTime,
    /// When last looked up.
    pub last_used_at: SystemTime,
}

/// A lease protecting blobs and ingests from GC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Lease id.
    pub id: String,
    /// When created.
    pub created_at: SystemTime,
    /// When it expires on its own.
    pub expires_at: Option<SystemTime>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Protected blobs (and everything they reference).
    #[serde(default)]
    pub digests: BTreeSet<Digest>,
    /// Protected ingest refs.
    #[serde(default)]
    pub ingests: BTreeSet<String>,
}

impl Lease {
    /// True once `expires_at` has passed.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// What a GC run removed (or would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs removed.
    pub removed: Vec<BlobInfo>,
    /// Ingest refs removed.
    pub removed_ingests: Vec<String>,
    /// Bytes freed (blobs and ingests).
    pub bytes_freed: u64,
    /// Blobs kept.
    pub kept: u64,
    /// Whether nothing was actually removed.
    pub dry_run: bool,
}

/// What the store holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Committed blobs.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Image records.
    pub images: u64,
    /// Cache entries.
    pub cache_entries: u64,
    /// Ingests in progress.
    pub ingests: u64,
    /// Their bytes.
    pub ingest_bytes: u64,
    /// What GC would free now.
    pub reclaimable_bytes: u64,
    /// Backend description.
    pub backend: String,
}

/// Checks an ingest ref or lease id: 1..=256 characters of `[A-Za-z0-9._:@/+=-]`, not starting
/// with `/` or `.`, and no `..`. (Refs never become paths — ingests are stored under a hash of the
/// ref — but a strict charset keeps logs and tools sane.)
pub fn validate_name(kind: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && !s.starts_with('/')
        && !s.starts_with('.')
        && !s.contains("..")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@/+=-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidArgument(format!(
            "{kind} {s:?} is not a safe name: use 1 to 256 characters of A-Z a-z 0-9 . _ : @ / + = -, \
             not starting with / or . and without .."
        )))
    }
}

/// Checks an image name or cache key: 1..=1024 printable ASCII characters without whitespace.
pub fn validate_label_like(kind: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > 1024 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(StoreError::InvalidArgument(format!(
            "{kind} {s:?} must be 1 to 1024 printable ASCII characters without spaces"
        )));
    }
    Ok(())
}

/// Converts a wire size (int64) into a size, rejecting negatives.
pub fn size_from_wire(field: &str, v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|_| StoreError::InvalidArgument(format!("{field} must not be negative (got {v})")))
}

/// Parses a digest field, naming the field in the error.
pub fn parse_digest(field: &str, s: &str) -> Result<Digest> {
    if s.is_empty() {
        return Err(StoreError::InvalidArgument(format!("{field} is required (sha256:<64 hex>)")));
    }
    Ok(s.parse()?)
}

/// The object key of a blob: `blobs/sha256/<hex>`.
pub fn blob_key(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// The file-safe id under which a name (ingest ref, image name, key, lease id) is stored.
pub fn name_id(name: &str) -> String {
    Digest::of(name.as_bytes()).hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["layer-sha256:abc", "pull/docker.io/library/busybox@sha256:1", "a", "x=y+z"] {
            validate_name("ref", ok).unwrap();
        }
        for bad in ["", "../etc/passwd", "/abs", ".hidden", "a/../b", "sp ace", "tab\t", "é", &"a".repeat(257)] {
            assert!(validate_name("ref", bad).is_err(), "{bad:?}");
        }
        validate_label_like("image name", "docker.io/library/busybox:latest").unwrap();
        assert!(validate_label_like("image name", "a b").is_err());
        assert!(validate_label_like("image name", "").is_err());
    }

    #[test]
    fn wire_values() {
        assert_eq!(size_from_wire("total", 5).unwrap(), 5);
        assert!(size_from_wire("total", -1).is_err());
        assert!(parse_digest("expected", "").is_err());
        assert!(matches!(parse_digest("d", "md5:x"), Err(StoreError::InvalidDigest(_))));
        let d = Digest::of(b"x");
        assert_eq!(blob_key(&d), format!("blobs/sha256/{}", d.hex()));
        assert_eq!(name_id("a").len(), 64);
    }

    #[test]
    fn lease_expiry() {
        let now = SystemTime::now();
        let mut l = Lease {
            id: "l".into(),
            created_at: now,
            expires_at: None,
            labels: Default::default(),
            digests: Default::default(),
            ingests: Default::default(),
        };
        assert!(!l.expired(now));
        l.expires_at = Some(now - std::time::Duration::from_secs(1));
        assert!(l.expired(now));
    }
}
