//! runtime-svc: runs the containers of one host.
//!
//! - [`snapshot`]: layers fetched from store-svc and unpacked once per chain ID, overlayfs rootfs.
//! - [`manager`]: the containers (create/start/stop/kill/remove/wait/attach), their state on
//!   disk, and recovery of running containers when runtime-svc starts.
//! - [`shim`] and [`shim_proto`]: the per-container supervisor (`berth-shim`, a separate small
//!   binary) and the protocol runtime-svc speaks with it. Namespaces are created by the OCI
//!   runtime the shim runs, never inside this (multi-threaded, tokio) process.
//! - [`spec`]: the OCI runtime bundle (`config.json`) with Docker's isolation defaults.
//! - [`grpc`]: the `berth.runtime.v1.Runtime` service; the only module that names tonic types
//!   besides `main.rs`.
//!
//! Depends on berth-common (images, endpoints) and berth-proto; never on another service.

pub mod config;
pub mod container;
pub mod error;
pub mod grpc;
pub mod manager;
pub mod shim;
pub mod shim_proto;
pub mod snapshot;
pub mod spec;
