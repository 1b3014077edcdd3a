//! registry-svc: the only part of Berth that speaks HTTP to registries. It owns reference
//! resolution against upstream ([`upstream`]: endpoints, mirrors, credentials, bearer tokens,
//! basic auth), manifest/index handling and platform choice, and pulling ([`pull`]): every
//! missing blob streamed from upstream straight into store-svc, verified on the way, shared
//! between concurrent pulls, resumed with Range requests.
//!
//! It depends on store-svc only through its gRPC contract ([`store`]), and on nothing of
//! runtime-svc or the CLI. Only [`grpc`], [`store`] and main.rs name generated types.

pub mod config;
pub mod error;
pub mod grpc;
pub mod pull;
pub mod store;
pub mod upstream;

pub use error::RegistryError;
