//! Layer helpers for the snapshot tests: hostile tars written with raw headers (names with `..`
//! or a leading `/` kept as they are) and the layers of a fixture OCI layout.

use runtime_svc::snapshot::Layer;
use std::path::{Path, PathBuf};

/// The layers of the single-platform image in an OCI layout, with diff_ids from its config.
pub fn layout_layers(dir: &Path) -> Vec<(Layer, PathBuf)> {
    let read_json = |p: PathBuf| -> serde_json::Value { serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap() };
    let blob = |d: &str| dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"));
    let index = read_json(dir.join("index.json"));
    let manifest = read_json(blob(index["manifests"][0]["digest"].as_str().unwrap()));
    let config = read_json(blob(manifest["config"]["digest"].as_str().unwrap()));
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(diff_ids)
        .map(|(l, diff)| {
            let digest = l["digest"].as_str().unwrap();
            let layer = Layer {
                digest: digest.parse().unwrap(),
                media_type: l["mediaType"].as_str().unwrap().to_string(),
                size: l["size"].as_i64().unwrap(),
                diff_id: diff.as_str().unwrap().parse().unwrap(),
            };
            (layer, blob(digest))
        })
        .collect()
}

/// A tar entry written with a raw header (names with `..` or `/` kept as they are).
pub struct Entry {
    /// Path as written in the header.
    pub name: String,
    /// Entry type.
    pub kind: tar::EntryType,
    /// Link target (symlinks, hardlinks).
    pub link: String,
    /// File contents.
    pub data: Vec<u8>,
}

/// A regular file.
pub fn file(name: &str, data: &[u8]) -> Entry {
    Entry { name: name.into(), kind: tar::EntryType::Regular, link: String::new(), data: data.to_vec() }
}

/// A directory.
pub fn dir(name: &str) -> Entry {
    Entry { name: name.into(), kind: tar::EntryType::Directory, link: String::new(), data: vec![] }
}

/// A symlink to `target`.
pub fn symlink(name: &str, target: &str) -> Entry {
    Entry { name: name.into(), kind: tar::EntryType::Symlink, link: target.into(), data: vec![] }
}

/// A hardlink to `target`.
pub fn hardlink(name: &str, target: &str) -> Entry {
    Entry { name: name.into(), kind: tar::EntryType::Link, link: target.into(), data: vec![] }
}

/// An uncompressed tar of `entries`, names and link targets written verbatim.
pub fn raw_tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let g = h.as_gnu_mut().unwrap();
        g.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        g.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(if e.kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append(&h, &e.data[..]).unwrap();
    }
    b.into_inner().unwrap()
}
