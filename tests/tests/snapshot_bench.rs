//! Benchmark (ignored by default): unpacking a many-file multi-layer image with runtime-svc's
//! snapshotter beside GNU tar unpacking the same layers, on a freshly made loop-mounted ext4 (see
//! PEERS.md: the root filesystem here is slow at creating files soon after deleting many).
//!
//! ```sh
//! cargo test -p berth-tests --test snapshot_bench -- --ignored --nocapture
//! # size: BERTH_BENCH_LAYERS (5) BERTH_BENCH_FILES (5000 per layer) BERTH_BENCH_MB (400 in total)
//! ```
//!
//! Printed side by side, in one run: berth (all layers in parallel, digests checked, one syncfs per
//! layer), GNU tar one layer after another (as containerd unpacks), and GNU tar with every layer at
//! once; both tar runs end with `sync -f` so that both sides have the data on disk.

use berth_tests::fixtures::{self, Fixture};
use berth_tests::layers::layout_layers;
use runtime_svc::snapshot::{FileLayerSource, Layer, SnapshotConfig, Snapshotter};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A fresh ext4 filesystem in a loop device, unmounted on drop.
struct LoopFs {
    mnt: PathBuf,
}

impl LoopFs {
    fn new(dir: &Path, size_gb: u64) -> Self {
        let img = dir.join("fs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        run(Command::new("truncate").arg("-s").arg(format!("{size_gb}G")).arg(&img));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        run(Command::new("mount").args(["-o", "loop"]).arg(&img).arg(&mnt));
        Self { mnt }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn gnu_tar(blobs: &[PathBuf], dest: &Path, parallel: bool) -> Duration {
    let t = Instant::now();
    let mut children = Vec::new();
    for (i, b) in blobs.iter().enumerate() {
        let d = dest.join(i.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let mut c = Command::new("tar");
        c.arg("-xzpf").arg(b).arg("-C").arg(&d).arg("--same-owner").arg("--xattrs");
        if parallel {
            children.push(c.spawn().unwrap());
        } else {
            run(&mut c);
        }
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    run(Command::new("sync").arg("-f").arg(dest));
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn unpack_many_files_berth_vs_gnu_tar() {
    let layers_n = env_usize("BERTH_BENCH_LAYERS", 5);
    let files = env_usize("BERTH_BENCH_FILES", 5000);
    let mb = env_usize("BERTH_BENCH_MB", 400);
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Fixture::Big { layers: layers_n, files_per_layer: files, mb };
    let t = Instant::now();
    let built = fixtures::build(fixture, &tmp.path().join("layout")).unwrap();
    eprintln!("fixture built in {:.1?}: {layers_n} layers x {files} files, ~{mb} MB", t.elapsed());
    let layers = layout_layers(&built.dir);
    let blobs: Vec<PathBuf> = layers.iter().map(|(_, p)| p.clone()).collect();
    let layers: Vec<Layer> = layers.into_iter().map(|(l, _)| l).collect();
    let gz: i64 = layers.iter().map(|l| l.size).sum();

    let fs = LoopFs::new(tmp.path(), (mb as u64 * 4 / 1000).max(2) + 2);
    let blob_dir = built.dir.join("blobs/sha256");
    // Warm the page cache for everyone alike.
    for b in &blobs {
        std::fs::read(b).unwrap();
    }

    let gnu_seq = gnu_tar(&blobs, &fs.mnt.join("gnu-seq"), false);
    let gnu_par = gnu_tar(&blobs, &fs.mnt.join("gnu-par"), true);
    let snap = Snapshotter::open_with(fs.mnt.join("berth"), SnapshotConfig::default()).unwrap();
    let t = Instant::now();
    let dirs = snap.prepare(&FileLayerSource::new(blob_dir), &layers, None).await.unwrap();
    let berth = t.elapsed();
    assert_eq!(dirs.len(), layers.len());

    let total_files: usize = snap.list().unwrap().iter().map(|s| s.entries as usize).sum();
    println!();
    println!(
        "unpack of {} layers, {} entries, {:.0} MB gzip, fresh ext4 (loop)",
        layers.len(),
        total_files,
        gz as f64 / 1e6
    );
    println!("{:<46} {:>9}", "tool", "seconds");
    println!("{:<46} {:>9.2}", "berth snapshotter (parallel, verified, syncfs)", berth.as_secs_f64());
    println!("{:<46} {:>9.2}", "GNU tar -xzpf, layer after layer, + sync -f", gnu_seq.as_secs_f64());
    println!("{:<46} {:>9.2}", "GNU tar -xzpf, all layers at once, + sync -f", gnu_par.as_secs_f64());
    println!("berth / tar sequential = {:.2}x", berth.as_secs_f64() / gnu_seq.as_secs_f64());
    println!("berth / tar parallel   = {:.2}x", berth.as_secs_f64() / gnu_par.as_secs_f64());
}
