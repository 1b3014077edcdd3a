//! The storage-backend trait: where blobs, records and in-progress ingests physically live.
//!
//! The trait is shaped after object storage so that an S3-compatible backend (the `object_store`
//! crate) can implement it without changes to the service:
//!
//! - objects are named by `/`-separated keys (`blobs/sha256/<hex>`, `meta/images/<id>.json`);
//! - [`Backend::put`] replaces a small object atomically (S3 PUT; a temp file + rename here);
//! - [`Backend::get`] streams an object or a byte range of it (S3 ranged GET);
//! - [`Backend::head`], [`Backend::delete`], [`Backend::list`] (S3 HEAD, DELETE, LIST by prefix);
//! - ingests are *staged* under an opaque id: [`Backend::stage_open`] creates or reopens one for
//!   appending (an S3 multipart upload, with parts buffered to the 5 MiB minimum), and
//!   [`Backend::stage_commit`] publishes it under a key atomically and without replacing an
//!   existing object (S3 CompleteMultipartUpload with `If-None-Match: *`; `renameat2` with
//!   `RENAME_NOREPLACE` here). Whatever the outcome, the staged data is consumed.
//!
//! Backends verify nothing about content; the content layer hashes every byte before it asks for
//! a commit. Every backend must pass [`testsuite::run`].

pub mod fs;
pub mod testsuite;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::time::SystemTime;

/// A stream of chunks of one object.
pub type ByteStream = BoxStream<'static, Result<Bytes, BackendError>>;

/// What a backend knows about one object or staged ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key (or the staged ingest's id).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written.
    pub modified: SystemTime,
}

/// Result of publishing staged data under a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The object was created from the staged data.
    Created,
    /// An object already existed under the key; it was kept and the staged data dropped.
    AlreadyExists,
}

/// Failures of a storage backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No object (or staged ingest) under this key.
    #[error("object {0:?} not found")]
    NotFound(String),
    /// The key is not a safe object name.
    #[error("invalid object key {0:?}: keys are /-separated segments of [A-Za-z0-9._-], without . or ..")]
    InvalidKey(String),
    /// The storage itself failed.
    #[error("storage i/o failed ({op} {key:?}): {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The object or path involved.
        key: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl BackendError {
    pub(crate) fn io(op: &'static str, key: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io { op, key: key.into(), source }
    }
}

/// Appends to one staged ingest. Dropping it without [`StageWriter::sync`] keeps what was
/// appended, but possibly not durably.
#[async_trait]
pub trait StageWriter: Send {
    /// Bytes staged so far.
    fn len(&self) -> u64;
    /// True when nothing is staged.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends `chunks` in order.
    async fn append(&mut self, chunks: Vec<Bytes>) -> Result<(), BackendError>;
    /// Makes everything appended so far durable.
    async fn sync(&mut self) -> Result<(), BackendError>;
}

/// Storage for the content store; see the module docs.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Human-readable description, e.g. `filesystem:/var/lib/berth/store`.
    fn describe(&self) -> String;

    /// Brings storage to a consistent state after a crash (drops half-written temp objects).
    /// Called once before serving.
    async fn recover(&self) -> Result<(), BackendError>;

    /// Metadata of one object, `None` if absent.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, BackendError>;

    /// Streams `len` bytes (or to the end with `None`) of an object from `offset`, in chunks of
    /// about `chunk` bytes. Reading past the end yields fewer bytes; the caller checks ranges.
    async fn get(&self, key: &str, offset: u64, len: Option<u64>, chunk: usize) -> Result<ByteStream, BackendError>;

    /// Reads a whole small object into memory, failing if it is larger than `max` bytes.
    async fn get_bytes(&self, key: &str, max: u64) -> Result<Bytes, BackendError> {
        use futures::TryStreamExt;
        let meta = self.head(key).await?.ok_or_else(|| BackendError::NotFound(key.to_string()))?;
        if meta.size > max {
            return Err(BackendError::io(
                "get",
                key,
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("object larger than {max} bytes")),
            ));
        }
        let mut out = bytes::BytesMut::with_capacity(meta.size as usize);
        let mut s = self.get(key, 0, Some(max), 1 << 20).await?;
        while let Some(c) = s.try_next().await? {
            out.extend_from_slice(&c);
        }
        Ok(out.freeze())
    }

    /// Creates or atomically replaces a small object (records, not blobs).
    async fn put(&self, key: &str, data: Bytes) -> Result<(), BackendError>;

    /// Deletes an object; `false` if it was absent.
    async fn delete(&self, key: &str) -> Result<bool, BackendError>;

    /// Like [`Backend::put`] (atomic replace), but not necessarily durable when it returns: after
    /// a power loss the key may hold the old version, the new one, or an unreadable object. For
    /// state that only matters while work is in progress (ingest descriptors, leases), where a
    /// lost update costs a re-download, not data. Defaults to `put`.
    async fn put_volatile(&self, key: &str, data: Bytes) -> Result<(), BackendError> {
        self.put(key, data).await
    }

    /// [`Backend::delete`] without the durability (see [`Backend::put_volatile`]).
    async fn delete_volatile(&self, key: &str) -> Result<bool, BackendError> {
        self.delete(key).await
    }

    /// Every object whose key starts with `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, BackendError>;

    /// Opens the staged ingest `id` for appending, creating it empty if absent.
    async fn stage_open(&self, id: &str) -> Result<Box<dyn StageWriter>, BackendError>;

    /// Streams what is staged under `id` (to re-hash it after a restart).
    async fn stage_read(&self, id: &str, chunk: usize) -> Result<ByteStream, BackendError>;

    /// Every staged ingest (`key` is the id).
    async fn stage_list(&self) -> Result<Vec<ObjectMeta>, BackendError>;

    /// Drops a staged ingest; `false` if it was absent.
    async fn stage_delete(&self, id: &str) -> Result<bool, BackendError>;

    /// Publishes the staged ingest `id` under `key`, atomically, never replacing an existing
    /// object. The content is durable before it becomes visible under `key`; the name itself is
    /// made durable by the next [`Backend::barrier`] (so many commits share one directory sync).
    /// The staged data is consumed either way.
    async fn stage_commit(&self, id: &str, key: &str) -> Result<CommitOutcome, BackendError>;

    /// Publishes several small immutable objects (e.g. manifests and configs) the way
    /// [`Backend::stage_commit`] does: each atomically, content durable before it is visible,
    /// never replacing an existing object; names durable at the next [`Backend::barrier`].
    async fn put_new(&self, items: Vec<(String, Bytes)>) -> Result<Vec<CommitOutcome>, BackendError> {
        let mut out = Vec::with_capacity(items.len());
        for (key, data) in items {
            if self.head(&key).await?.is_some() {
                out.push(CommitOutcome::AlreadyExists);
            } else {
                self.put(&key, data).await?;
                out.push(CommitOutcome::Created);
            }
        }
        Ok(out)
    }

    /// Publishes `items` (as [`Backend::put_new`]) and then creates or replaces the record `key`
    /// (as [`Backend::put`]) so that the record is durable only after every blob published so
    /// far is (a [`Backend::barrier`] in between). The filesystem backend writes and syncs the
    /// record's temp file while the blobs are synced, so the whole costs three fsync latencies.
    async fn put_new_then_record(
        &self,
        items: Vec<(String, Bytes)>,
        key: &str,
        data: Bytes,
    ) -> Result<Vec<CommitOutcome>, BackendError> {
        let out = self.put_new(items).await?;
        self.barrier().await?;
        self.put(key, data).await?;
        Ok(out)
    }

    /// Makes every object published so far by [`Backend::stage_commit`] and
    /// [`Backend::put_new`] durable under its key. Called before a record that points at blobs
    /// is written, so a crash can never leave a record whose blob is missing. Cheap when nothing
    /// was published since the last barrier.
    async fn barrier(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Checks that `key` is a safe object key: `/`-separated non-empty segments of
/// `[A-Za-z0-9._-]`, none of them `.` or `..`.
pub fn validate_key(key: &str) -> Result<(), BackendError> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(BackendError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(validate_key("blobs/sha256/abc").is_ok());
        assert!(validate_key("meta/images/x.json").is_ok());
        for bad in ["", "/abs", "a//b", "a/../b", "..", ".", "a/", "a b", "a\\b", "a\0b"] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
