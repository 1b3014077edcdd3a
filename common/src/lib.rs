//! Plumbing shared by every Berth service and the CLI: where a service listens and how to reach it
//! ([`endpoint`]), serving gRPC with health, reflection, service info and a graceful drain on
//! SIGTERM ([`server`]), probing a running service ([`probe`]), logging ([`telemetry`]) and content
//! digests ([`digest`]).
//!
//! This crate holds no domain logic of any service and must not depend on any service crate.

pub mod alloc;
pub mod digest;
pub mod endpoint;
pub mod image;
pub mod probe;
pub mod reference;
pub mod server;
pub mod telemetry;

pub use digest::{Digest, DigestError};
pub use endpoint::{ClientTls, Endpoint};
pub use server::{ServeOptions, ServerTls, ServiceMeta};

/// Version of the Berth binaries, shared by every crate of the workspace.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
