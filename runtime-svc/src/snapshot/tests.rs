//! Unit tests of the snapshotter (hostile tars, overlay results, concurrency, crash safety).
