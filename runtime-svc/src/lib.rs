//! runtime-svc: runs containers on one host (skeleton; see issue 4).
//!
//! - [`snapshot`]: layers fetched from store-svc and unpacked once per chain ID, overlayfs rootfs.

pub mod snapshot;
