//! Errors of the snapshotter. Every variant names what it was working on (the layer, the tar entry,
//! the path) so that the message alone tells a user what went wrong.

use berth_common::Digest;
use std::io;
use std::path::PathBuf;

/// Why a snapshot operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A filesystem operation on the snapshotter's own state failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("creating directory", "renaming", ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The layer's bytes could not be fetched from its source (store-svc or a file).
    #[error("fetching layer {layer}: {reason}")]
    Fetch {
        /// Compressed digest of the layer.
        layer: Digest,
        /// What the source said.
        reason: String,
    },
    /// Reading or decompressing the layer stream failed part-way (truncated or corrupt data, a
    /// dropped connection).
    #[error("layer {layer}: reading the {what} stream failed: {source}")]
    Stream {
        /// Compressed digest of the layer.
        layer: Digest,
        /// "gzip", "zstd" or "tar".
        what: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The compression of the data does not match the media type, or the media type is not a layer.
    #[error("layer {layer}: {detail} (media type {media_type:?})")]
    MediaType {
        /// Compressed digest of the layer.
        layer: Digest,
        /// The declared media type.
        media_type: String,
        /// What does not fit.
        detail: String,
    },
    /// A tar entry is hostile or unusable (escapes the layer, bad link target, ...).
    #[error("layer {layer}: tar entry {entry:?}: {reason}")]
    BadEntry {
        /// Compressed digest of the layer.
        layer: Digest,
        /// The entry's path as written in the tar.
        entry: String,
        /// Why it was refused.
        reason: String,
    },
    /// Writing a tar entry to disk failed.
    #[error("layer {layer}: tar entry {entry:?}: {op}: {source}")]
    EntryIo {
        /// Compressed digest of the layer.
        layer: Digest,
        /// The entry's path as written in the tar.
        entry: String,
        /// The operation that failed ("creating file", "lchown", ...).
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A digest of the layer does not match what the manifest or image config says.
    #[error("layer {layer}: {what} mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Compressed digest of the layer (as the manifest names it).
        layer: Digest,
        /// "compressed digest" or "diff_id (uncompressed digest)".
        what: &'static str,
        /// What the manifest or config says.
        expected: Digest,
        /// What the data hashes to.
        actual: Digest,
    },
    /// The compressed size does not match the manifest's descriptor.
    #[error("layer {layer}: size mismatch: the manifest says {expected} bytes, the blob has {actual}")]
    SizeMismatch {
        /// Compressed digest of the layer.
        layer: Digest,
        /// Size from the descriptor.
        expected: i64,
        /// Bytes actually read.
        actual: u64,
    },
    /// The uncompressed layer exceeds the configured cap (decompression bomb guard).
    #[error("layer {layer}: uncompressed size exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Compressed digest of the layer.
        layer: Digest,
        /// The configured cap.
        limit: u64,
    },
    /// The layer has more tar entries than the configured cap.
    #[error("layer {layer}: more than {limit} tar entries")]
    TooManyEntries {
        /// Compressed digest of the layer.
        layer: Digest,
        /// The configured cap.
        limit: u64,
    },
    /// A layer list is malformed (e.g. empty digests, more layers than overlayfs can stack).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Mounting the overlay failed.
    #[error("mounting overlay at {target}: {source} (options: {options})")]
    Mount {
        /// Mount point.
        target: PathBuf,
        /// The option string passed to the kernel (paths may be relative to the snapshots dir).
        options: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Unmounting failed.
    #[error("unmounting {target}: {source}")]
    Unmount {
        /// Mount point.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An unpack task panicked or was cancelled by the runtime.
    #[error("layer {layer}: unpack task failed: {reason}")]
    Task {
        /// Compressed digest of the layer.
        layer: Digest,
        /// The join error.
        reason: String,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { op, path: path.into(), source }
    }
}
