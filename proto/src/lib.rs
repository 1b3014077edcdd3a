//! The gRPC contracts of Berth: one versioned package per service (`berth.store.v1`,
//! `berth.registry.v1`, `berth.runtime.v1`) and the shared `berth.types.v1`.
//!
//! This crate holds generated code only: no domain logic, and it depends on nothing of Berth's.
//! The `.proto` files beside it are the source of truth; a breaking change means a new version
//! directory.

#![allow(clippy::all, missing_docs)]

/// Encoded `FileDescriptorSet` of every Berth proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor.bin"));

pub mod types {
    pub mod v1 {
        tonic::include_proto!("berth.types.v1");
    }
}

pub mod store {
    pub mod v1 {
        tonic::include_proto!("berth.store.v1");
    }
}

pub mod registry {
    pub mod v1 {
        tonic::include_proto!("berth.registry.v1");
    }
}

pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("berth.runtime.v1");
    }
}
