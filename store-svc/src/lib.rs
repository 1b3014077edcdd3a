//! store-svc: Berth's content store. It owns blobs addressed by sha256 digest (written through
//! resumable, verified ingests; read as ranged streams), image records, build-cache entries,
//! leases and the garbage collector, over a pluggable storage [`backend`] (the local filesystem
//! by default; shaped for S3-compatible object storage).
//!
//! The domain ([`store::Store`] and the modules it spans: [`ingest`], [`records`], [`gc`]) speaks
//! its own types ([`model`]); only [`grpc`] names tonic or generated types. This crate knows
//! nothing of containers, registries or the CLI and must not depend on another service's crate.

pub mod backend;
pub mod config;
pub mod error;
pub mod gc;
pub mod grpc;
pub mod ingest;
pub mod model;
pub mod records;
pub mod store;

pub use error::{Result, StoreError};
pub use store::{Store, StoreConfig};
