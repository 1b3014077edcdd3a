//! Test harness: starts the real Berth binaries and real peers (registry, skopeo) for the
//! integration tests and benchmarks.
//!
//! - [`stack`]: start store-svc / registry-svc / runtime-svc binaries on temp sockets, poll them
//!   until healthy, kill them by PID on drop.
//! - [`fixtures`]: build fixture images (OCI layouts) from Debian's busybox-static.
//! - [`registry`]: run the CNCF distribution registry (docker-registry) and push fixtures with
//!   skopeo.
//! - [`podman`]: podman as the benchmarks' peer, configured as shared/PEERS.md says.

pub mod certs;
pub mod fixtures;
pub mod layers;
pub mod podman;
pub mod registry;
pub mod stack;
