//! Test harness: starts the real Berth binaries and real peers (registry, skopeo) for the
//! integration tests and benchmarks.
