//! runtime-svc: runs the containers of one host.
//!
//! - [`snapshot`]: layers fetched from store-svc and unpacked once per chain ID, overlayfs rootfs.
//! - [`manager`]: the containers (create/start/stop/kill/remove/wait/attach), their state on
//!   disk, and recovery of running containers when runtime-svc starts.
//! - [`shim`] and [`shim_proto`]: the per-container supervisor (`berth-shim`, a separate small
//!   binary) and the protocol runtime-svc speaks with it. Namespaces are created by the OCI
//!   runtime the shim runs, never inside this (multi-threaded, tokio) process.
//! - [`network`]: container networking (bridge/host/none/user networks, published ports,
//!   /etc/hosts and resolv.conf); netlink on dedicated threads, nftables rules of its own.
//! - [`mounts`], [`volume`]: binds, volumes (copy-up), tmpfs and --read-only; mount points made
//!   inside the rootfs with openat2(RESOLVE_IN_ROOT). [`restart`]: restart policies with
//!   docker's backoff. [`stats`]: top and stats from the container's cgroup.
//! - [`prefetch`]: layers unpacked while their image is still being pulled (`Prefetch` RPC).
//! - [`rootfs`]: the `volatile` overlay of a `--rm` container (no sync of the disk at exit).
//! - [`spec`]: the OCI runtime bundle (`config.json`) with Docker's isolation defaults.
//! - [`seccomp`]: the default seccomp profile (Docker's allowlist, embedded as data).
//! - [`grpc`]: the `berth.runtime.v1.Runtime` service; the only module that names tonic types
//!   besides `main.rs`.
//!
//! Depends on berth-common (images, endpoints) and berth-proto; never on another service.

pub mod config;
pub mod container;
pub mod error;
pub mod exec;
pub mod grpc;
pub mod logs;
pub mod manager;
pub mod mounts;
pub mod network;
pub mod prefetch;
pub mod restart;
pub mod rootfs;
pub mod seccomp;
pub mod shim;
pub mod shim_proto;
pub mod snapshot;
pub mod spec;
pub mod stats;
pub mod volume;
