//! Layer snapshots (to be written).
