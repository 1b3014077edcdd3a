//! `cargo run --release -p berth-tests --bin bench_unpack -- [DIR]`: where the time of a layer
//! unpack goes, on the first-run fixture of `bench_run` (5 generated layers, ~100 MB, 10k files).
//!
//! Prints, per layer: the time to read + sha256 + gunzip + sha256 only (the CPU floor), then the
//! snapshotter's whole prepare of all layers (parallel as configured, then one at a time).
//! DIR (default: a temp dir) holds the snapshot roots; put it on a fresh loop-mounted ext4 (see
//! shared/PEERS.md) to measure what the benchmark sees.

use anyhow::{Context, Result};
use berth_common::Digest;
use berth_tests::fixtures::Fixture;
use runtime_svc::snapshot::{FileLayerSource, Layer, SnapshotConfig, Snapshotter};
use sha2::Digest as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() -> Result<()> {
    let dir = std::env::args().nth(1).map(PathBuf::from);
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let big = berth_tests::fixtures::cached(Fixture::Big { layers: 5, files_per_layer: 2000, mb: 100 })?;
    let layers = layers_of(&big.dir)?;
    let blobs = big.dir.join("blobs/sha256");

    for l in &layers {
        let t = Instant::now();
        let f = std::fs::File::open(blobs.join(l.digest.hex()))?;
        let mut dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::with_capacity(256 << 10, f));
        let mut buf = vec![0u8; 128 << 10];
        let (mut h, mut n) = (sha2::Sha256::new(), 0u64);
        loop {
            let k = dec.read(&mut buf)?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        let raw = std::fs::read(blobs.join(l.digest.hex()))?;
        let t_all = t.elapsed();
        let t2 = Instant::now();
        let _ = sha2::Sha256::digest(&raw);
        eprintln!(
            "layer {}: {} MB gz -> {} MB tar: gunzip+sha256 {:?} (sha256 of the gz alone {:?})",
            &l.digest.hex()[..12],
            raw.len() >> 20,
            n >> 20,
            t_all,
            t2.elapsed()
        );
    }

    let rt = tokio::runtime::Runtime::new()?;
    let default = SnapshotConfig::default();
    for (name, par) in
        [("parallel", default.max_parallel), ("one at a time", 1), ("parallel again", default.max_parallel)]
    {
        let root = dir.join(format!("snap-{}", uuid::Uuid::new_v4().simple()));
        let snap = Snapshotter::open_with(root.clone(), SnapshotConfig { max_parallel: par, ..default })?;
        let src = FileLayerSource::new(&blobs);
        let t = Instant::now();
        rt.block_on(snap.prepare(&src, &layers, None))?;
        eprintln!("prepare of {} layers, {name} (max {par}): {:?}", layers.len(), t.elapsed());
        let t = Instant::now();
        std::fs::remove_dir_all(&root)?;
        eprintln!("  (removing it: {:?})", t.elapsed());
    }
    Ok(())
}

/// The layers of the layout's single manifest, with the config's diff_ids.
fn layers_of(dir: &Path) -> Result<Vec<Layer>> {
    let read = |digest: &str| -> Result<serde_json::Value> {
        let hex = digest.trim_start_matches("sha256:");
        Ok(serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex))?)?)
    };
    let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
    let m = read(idx["manifests"][0]["digest"].as_str().context("index without manifests")?)?;
    let cfg = read(m["config"]["digest"].as_str().context("config")?)?;
    let diffs = cfg["rootfs"]["diff_ids"].as_array().context("diff_ids")?;
    let ls = m["layers"].as_array().context("layers")?;
    ls.iter()
        .zip(diffs)
        .map(|(l, d)| {
            Ok(Layer {
                digest: l["digest"].as_str().context("digest")?.parse::<Digest>()?,
                media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
                size: l["size"].as_i64().unwrap_or(0),
                diff_id: d.as_str().context("diff_id")?.parse::<Digest>()?,
            })
        })
        .collect()
}
