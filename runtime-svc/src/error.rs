//! runtime-svc's domain errors (mapped to gRPC codes in one place, `grpc`).

use crate::snapshot::SnapshotError;
use berth_common::image::ImageError;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No container by that ID, prefix or name.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// An ID prefix matched several containers.
    #[error("multiple containers match ID prefix {0:?}; give more characters")]
    Ambiguous(String),
    /// The name is taken.
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameConflict {
        /// The name asked for.
        name: String,
        /// The container that has it.
        id: String,
    },
    /// No volume by that name.
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    /// A request field is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The container is in the wrong state for the operation.
    #[error("{0}")]
    State(String),
    /// The image could not be read from store-svc.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// Preparing the root filesystem failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The OCI runtime could not start the container's process.
    #[error("failed to start container: {message}")]
    Start {
        /// Docker-style exit code: 126 not executable, 127 not found, 125 otherwise.
        code: i32,
        /// The runtime's message.
        message: String,
    },
    /// A file operation on the host failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The container's shim misbehaved or could not be reached.
    #[error("shim of container {id}: {reason}")]
    Shim {
        /// Container ID.
        id: String,
        /// What went wrong.
        reason: String,
    },
}

/// Adds context to io errors.
pub trait IoContext<T> {
    /// Wraps an io error with what was being done.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, RuntimeError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, RuntimeError> {
        self.map_err(|source| RuntimeError::Io { what: what(), source })
    }
}
