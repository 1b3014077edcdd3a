//! Benchmark of store-svc ingest and read throughput over gRPC, beside `sha256sum`, `openssl`
//! and a plain file copy of the same data, measured in the same run.
//!
//! ```text
//! cargo build --release --workspace --bins
//! cargo run --release -p berth-tests --bin bench_store -- [--size 1G] [--chunks 4M,64K] [--dir DIR]
//! ```
//!
//! Storage: as root it makes a fresh ext4 filesystem on a loop device (as PEERS.md asks) and
//! removes it afterwards; otherwise (or with `--no-loop`) it uses a temp dir (or `--dir`).
//! For every chunk size it starts store-svc (unix socket and TCP loopback, `read_chunk_bytes` set
//! to the chunk size), then per transport writes the data as one blob in chunks of that size
//! (commit included: fsync and rename), reads it back, and deletes it. Peak RSS (VmHWM) of
//! store-svc is sampled after start, after a small warm-up blob and after the big runs.

use anyhow::{bail, Context, Result};
use berth_common::Digest;
use berth_proto::store::v1 as pb;
use berth_proto::store::v1::content_client::ContentClient;
use berth_tests::stack::Service;
use bytes::Bytes;
use clap::Parser;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(about = "store-svc ingest/read throughput beside sha256sum and a plain file copy")]
struct Args {
    /// Blob size, e.g. 1G, 256M.
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    size: u64,
    /// Chunk sizes to write (and read) with, comma-separated.
    #[arg(long, default_value = "4M,64K", value_delimiter = ',', value_parser = parse_size)]
    chunks: Vec<u64>,
    /// Directory to put storage in (default: a fresh loop-mounted ext4 as root, else a temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Do not make a loop-mounted filesystem even when root.
    #[arg(long)]
    no_loop: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    num.parse::<u64>().map(|n| n * mult).map_err(|e| format!("{s:?}: {e}"))
}

fn human(n: u64) -> String {
    if n >= 1 << 30 && n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

/// A loop-mounted ext4 filesystem, unmounted on drop.
struct LoopFs {
    mnt: PathBuf,
}

impl LoopFs {
    fn make(work: &Path, bytes: u64) -> Result<Self> {
        let img = work.join("bench.img");
        let mnt = work.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        std::fs::File::create(&img)?.set_len(bytes)?;
        run("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()])?;
        run("mount", &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()])?;
        Ok(Self { mnt })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn timed(cmd: &str, args: &[&str]) -> Result<Duration> {
    let t = Instant::now();
    run(cmd, args)?;
    Ok(t.elapsed())
}

fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    Bytes::from(v)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn client(ch: Channel) -> ContentClient<Channel> {
    ContentClient::new(ch).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

async fn ingest(c: &mut ContentClient<Channel>, r: &str, data: &Bytes, chunk: usize) -> Result<Duration> {
    let d = Digest::of(data);
    let total = data.len();
    let n = total.div_ceil(chunk).max(1);
    let data = data.clone();
    let first =
        pb::WriteRequest { r#ref: r.to_string(), expected: d.to_string(), total: total as i64, ..Default::default() };
    let msgs = futures::stream::iter((0..n).map(move |i| {
        let off = i * chunk;
        let end = (off + chunk).min(total);
        let mut m = if i == 0 { first.clone() } else { pb::WriteRequest::default() };
        m.offset = off as i64;
        m.data = data.slice(off..end);
        m.commit = end == total;
        m
    }));
    let t = Instant::now();
    let resp = c.write(msgs).await.context("write")?.into_inner();
    let el = t.elapsed();
    if resp.already_exists || resp.committed.map(|b| b.digest) != Some(d.to_string()) {
        bail!("ingest did not commit a fresh blob");
    }
    Ok(el)
}

async fn read_all(c: &mut ContentClient<Channel>, d: &Digest, expect: u64) -> Result<Duration> {
    let t = Instant::now();
    let mut s = c.read(pb::ReadRequest { digest: d.to_string(), offset: 0, length: 0 }).await?.into_inner();
    let mut n = 0u64;
    while let Some(m) = s.next().await {
        n += m?.data.len() as u64;
    }
    let el = t.elapsed();
    if n != expect {
        bail!("read {n} bytes, expected {expect}");
    }
    Ok(el)
}

struct Row {
    what: String,
    transport: String,
    chunk: String,
    secs: f64,
    gbps: f64,
    note: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let size = a.size;
    let is_root = nix::unistd::geteuid().is_root();
    let work =
        tempfile::Builder::new().prefix("bench-store-").tempdir_in(a.dir.clone().unwrap_or(std::env::temp_dir()))?;
    let (storage, _loopfs, base) = if is_root && !a.no_loop {
        match LoopFs::make(work.path(), size * 3 + (512 << 20)) {
            Ok(l) => {
                let m = l.mnt.clone();
                ("fresh ext4 on a loop device".to_string(), Some(l), m)
            }
            Err(e) => {
                eprintln!("cannot make a loop filesystem ({e:#}); using {}", work.path().display());
                (format!("temp dir {}", work.path().display()), None, work.path().to_path_buf())
            }
        }
    } else {
        (format!("temp dir {}", work.path().display()), None, work.path().to_path_buf())
    };

    eprintln!("generating {} of pseudo-random data...", human(size));
    let data = random_bytes(size as usize, 42);
    let digest = Digest::of(&data);
    let src = base.join("src.bin");
    std::fs::write(&src, &data)?;
    run("sync", &[])?;
    let src_s = src.to_str().unwrap();
    let dst = base.join("copy.bin");
    let dst_s = dst.to_str().unwrap();
    let gb = size as f64 / 1e9;
    let mut rows = Vec::new();
    let mut peer = |what: &str, el: Duration, note: &str| {
        let secs = el.as_secs_f64();
        rows.push(Row {
            what: what.into(),
            transport: "-".into(),
            chunk: "-".into(),
            secs,
            gbps: gb / secs,
            note: note.into(),
        });
        gb / secs
    };

    // Peers, on the same (page-cached) data.
    eprintln!("measuring peers...");
    timed("cat", &[src_s])?; // warm the page cache
    let sha = peer("sha256sum", timed("sha256sum", &[src_s])?, "coreutils");
    let openssl = timed("openssl", &["dgst", "-sha256", src_s]).ok();
    if let Some(el) = openssl {
        peer("openssl dgst -sha256", el, "SHA-NI");
    }
    let copy = peer(
        "file copy (cp + sync)",
        timed("sh", &["-c", &format!("cp {src_s} {dst_s} && sync {dst_s}")])?,
        "disk write baseline",
    );
    let cat = timed("sh", &["-c", &format!("cat {dst_s} > /dev/null")])?;
    peer("file read (cat, cached)", cat, "");
    std::fs::remove_file(&dst)?;
    run("sync", &[])?;
    let ingest_base = sha.min(copy);

    let mut hwm = Vec::new();
    let warm = random_bytes(64 << 20, 7);
    for (ci, chunk) in a.chunks.iter().enumerate() {
        let chunk = *chunk as usize;
        let root = base.join(format!("store-{ci}"));
        let cfg = base.join(format!("store-{ci}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "read_chunk_bytes = {}\nmax_message_bytes = {}\n",
                chunk.max(4096),
                (chunk * 2 + (1 << 20)).max(16 << 20)
            ),
        )?;
        let svc = Service::builder("store-svc")
            .tcp(true)
            .root(&root)
            .arg("--config")
            .arg(cfg.display().to_string())
            .env("BERTH_LOG", "warn")
            .start()
            .await;
        let pid = svc.pid().expect("running");
        let h0 = vm_hwm_kib(pid);
        for (tname, ep) in [("unix", svc.endpoint()), ("tcp", svc.tcp_endpoint().unwrap())] {
            let ch = berth_common::endpoint::connect(&ep, None).await?;
            let mut c = client(ch);
            // Warm-up with a small blob (so peak RSS after it is the baseline).
            ingest(&mut c, "warmup", &warm, chunk).await?;
            read_all(&mut c, &Digest::of(&warm), warm.len() as u64).await?;
            c.delete(pb::DeleteRequest { digest: Digest::of(&warm).to_string() }).await?;
            let h_warm = vm_hwm_kib(pid);
            eprintln!("store-svc: {tname}, {} chunks...", human(chunk as u64));
            let w = ingest(&mut c, &format!("bench-{tname}"), &data, chunk).await?;
            let r = read_all(&mut c, &digest, size).await?;
            c.delete(pb::DeleteRequest { digest: digest.to_string() }).await?;
            run("sync", &[])?;
            let h_big = vm_hwm_kib(pid);
            hwm.push((tname, chunk, h0, h_warm, h_big));
            let ws = w.as_secs_f64();
            rows.push(Row {
                what: "store-svc ingest".into(),
                transport: tname.into(),
                chunk: human(chunk as u64),
                secs: ws,
                gbps: gb / ws,
                note: format!("{:.0}% of slower baseline", 100.0 * (gb / ws) / ingest_base),
            });
            let rs = r.as_secs_f64();
            rows.push(Row {
                what: "store-svc read".into(),
                transport: tname.into(),
                chunk: human(chunk as u64),
                secs: rs,
                gbps: gb / rs,
                note: format!("{:.2}x cat", (gb / rs) / (gb / cat.as_secs_f64())),
            });
        }
        drop(svc);
    }

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let now = std::process::Command::new("date").arg("-u").arg("+%Y-%m-%d %H:%M UTC").output()?;
    println!(
        "store-svc benchmark: {} blob, {} · {} · {} cores · storage: {}",
        human(size),
        String::from_utf8_lossy(&now.stdout).trim(),
        cpu,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        storage
    );
    println!();
    println!("| operation | transport | chunk | seconds | GB/s | note |");
    println!("|---|---|---|---:|---:|---|");
    for r in &rows {
        println!("| {} | {} | {} | {:.2} | {:.2} | {} |", r.what, r.transport, r.chunk, r.secs, r.gbps, r.note);
    }
    println!();
    println!("store-svc peak RSS (VmHWM): after start / after a 64 MiB blob / after the {} blob", human(size));
    for (t, c, h0, h1, h2) in &hwm {
        println!("- {t}, {} chunks: {} / {} / {} MiB", human(*c as u64), h0 / 1024, h1 / 1024, h2 / 1024);
    }
    let worst_ingest = rows.iter().filter(|r| r.what == "store-svc ingest").map(|r| r.gbps).fold(f64::MAX, f64::min);
    let reads: Vec<f64> = rows.iter().filter(|r| r.what == "store-svc read").map(|r| r.gbps).collect();
    let worst_read = reads.iter().copied().fold(f64::MAX, f64::min);
    let best_read = reads.iter().copied().fold(0.0, f64::max);
    let reads_met = reads.iter().filter(|g| **g >= 1.0).count();
    println!();
    println!(
        "ingest target (>= 70% of min(sha256sum, cp+sync) = {:.2} GB/s): slowest ingest {:.2} GB/s = {:.0}% -> {}",
        0.7 * ingest_base,
        worst_ingest,
        100.0 * worst_ingest / ingest_base,
        if worst_ingest >= 0.7 * ingest_base { "met" } else { "NOT met" }
    );
    println!(
        "read target (>= 1 GB/s): reads {:.2}..{:.2} GB/s -> met by {reads_met} of {} runs",
        worst_read,
        best_read,
        reads.len()
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the end: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    Ok(())
}
