//! The store's domain errors. `grpc::status` maps them to gRPC codes in one place.

use crate::backend::BackendError;
use berth_common::{Digest, DigestError};

/// Everything that can go wrong in the store, with messages a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A digest string is malformed.
    #[error(transparent)]
    InvalidDigest(#[from] DigestError),
    /// A request field is missing or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A requested byte range lies outside the blob.
    #[error("offset {offset} is past the end of {digest} ({size} bytes)")]
    OutOfRange {
        /// The blob.
        digest: Digest,
        /// Requested offset.
        offset: u64,
        /// Blob size.
        size: u64,
    },
    /// No committed blob with this digest.
    #[error("blob {0} not found")]
    BlobNotFound(Digest),
    /// No ingest with this ref.
    #[error("no ingest with ref {0:?}")]
    IngestNotFound(String),
    /// No image record with this name.
    #[error("image {0:?} not found")]
    ImageNotFound(String),
    /// No build-cache entry with this key.
    #[error("build-cache entry {0:?} not found")]
    CacheNotFound(String),
    /// No live lease with this id.
    #[error("lease {0:?} not found (or expired)")]
    LeaseNotFound(String),
    /// A lease with this id exists already.
    #[error("lease {0:?} already exists")]
    LeaseExists(String),
    /// A record's target is not in the content store.
    #[error("{what} target {digest} is not in the content store: write the blob first")]
    MissingTarget {
        /// What was being recorded (e.g. "image docker.io/library/busybox:latest").
        what: String,
        /// The missing digest.
        digest: Digest,
    },
    /// A descriptor's size disagrees with the stored blob.
    #[error("{what} target {digest} has size {actual} in the store, but the descriptor says {claimed}")]
    TargetSizeMismatch {
        /// What was being recorded.
        what: String,
        /// The digest.
        digest: Digest,
        /// Size in the descriptor.
        claimed: u64,
        /// Size of the stored blob.
        actual: u64,
    },
    /// The written data does not hash to the expected digest; the ingest was discarded.
    #[error("digest mismatch for ingest {ref_:?}: expected {expected}, the data hashes to {actual}; the ingest was discarded")]
    DigestMismatch {
        /// The ingest ref.
        ref_: String,
        /// Expected digest.
        expected: Digest,
        /// Digest of what was written.
        actual: Digest,
    },
    /// The written data has the wrong size.
    #[error("size mismatch for ingest {ref_:?}: expected {expected} bytes, {detail}")]
    SizeMismatch {
        /// The ingest ref.
        ref_: String,
        /// Expected size.
        expected: u64,
        /// What happened.
        detail: String,
    },
    /// A write message's offset is not where the ingest is.
    #[error("write to ingest {ref_:?} at offset {got}, but the ingest is at offset {current}: resume from {current}")]
    OffsetMismatch {
        /// The ingest ref.
        ref_: String,
        /// Offset in the message.
        got: u64,
        /// The ingest's offset.
        current: u64,
    },
    /// Another stream is writing this ingest.
    #[error("ingest {0:?} is busy: another writer holds it; retry later or use another ref")]
    IngestBusy(String),
    /// The ingest exists with a different expected digest or size.
    #[error("ingest {ref_:?} already exists for {existing}; abort it or use another ref")]
    IngestConflict {
        /// The ingest ref.
        ref_: String,
        /// What the existing ingest expects.
        existing: String,
    },
    /// A stored record cannot be decoded.
    #[error("corrupt record {key}: {detail}")]
    CorruptRecord {
        /// The object key.
        key: String,
        /// Why.
        detail: String,
    },
    /// The client's stream broke off.
    #[error("write stream of ingest {ref_:?} broke off at offset {offset}: {detail}; resume from WriteStatus")]
    StreamBroken {
        /// The ingest ref.
        ref_: String,
        /// The ingest's offset now.
        offset: u64,
        /// Transport detail.
        detail: String,
    },
    /// The storage backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A background task died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
