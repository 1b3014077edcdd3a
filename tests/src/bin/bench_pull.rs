//! Cold pull of each fixture image from a local distribution registry, side by side in one run:
//! `berth pull` (CLI → registry-svc → store-svc), `skopeo copy` to an oci: directory (no
//! unpack) and `podman pull` (private --root/--runroot; includes unpacking, which berth does at
//! run time). Prints seconds, MB/s (compressed bytes) and ratios.
//!
//! `cargo build --release --workspace --bins && cargo run --release -p berth-tests --bin bench_pull [-- --runs N] [--big-mb N] [--no-podman]`
//!
//! Storage of every tool lives on a freshly made loop-mounted ext4 (see PEERS.md) when that can
//! be set up, else in a temp dir (and says so).

use anyhow::{bail, Context, Result};
use berth_tests::fixtures::{self, Fixture};
use berth_tests::registry::Registry;
use berth_tests::stack::{bin_path, Service};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct LoopFs {
    mount: PathBuf,
    image: PathBuf,
    mounted: bool,
}

impl LoopFs {
    fn new(base: &Path, gb: u64) -> Self {
        let image = base.join("fs.img");
        let mount = base.join("mnt");
        std::fs::create_dir_all(&mount).expect("mkdir");
        let ok = (|| -> Result<()> {
            let f = std::fs::File::create(&image)?;
            f.set_len(gb << 30)?;
            run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
            run(Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount))?;
            Ok(())
        })();
        if let Err(e) = &ok {
            eprintln!("note: no loop-mounted ext4 ({e:#}); storage is a temp dir on the root filesystem");
        }
        Self { mount, image, mounted: ok.is_ok() }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount).status();
        }
        let _ = std::fs::remove_file(&self.image);
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    }
    Ok(())
}

fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    run(cmd)?;
    Ok(t.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Args {
    /// Timed runs of the big image per tool.
    runs: usize,
    /// Timed runs of each small image per tool (they take 50-150 ms: more runs for a stable median).
    small_runs: usize,
    big_mb: usize,
    podman: bool,
    /// Only images whose label contains this.
    only: Option<String>,
    /// Set up the registry and a berth stack, print how to reach them, wait for Enter (for
    /// profiling with strace or the services' logs).
    hold: bool,
}

fn args() -> Args {
    let mut a = Args { runs: 3, small_runs: 9, big_mb: 300, podman: true, only: None, hold: false };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(3).max(1),
            "--small-runs" => a.small_runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(9).max(1),
            "--big-mb" => a.big_mb = it.next().and_then(|v| v.parse().ok()).unwrap_or(300),
            "--no-podman" => a.podman = false,
            "--only" => a.only = it.next(),
            "--hold" => a.hold = true,
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    a
}

fn loadavg() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Flushes every filesystem (untimed, before each timed command), so no tool pays for the
/// writeback of the previous one's data.
fn settle() {
    let _ = Command::new("sync").status();
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args();
    let load_start = loadavg();
    let work = tempfile::Builder::new().prefix("berth-bench-pull").tempdir()?;
    let fs = LoopFs::new(work.path(), 6);
    let disk = fs.mount.clone();
    let reg = Registry::start()?;
    let big = Fixture::Big { layers: 5, files_per_layer: 4000, mb: a.big_mb };
    let images: Vec<(&str, Fixture)> = vec![
        ("busybox (1 layer)", Fixture::Busybox),
        ("layered (3 layers, whiteouts)", Fixture::Layered),
        ("multi-arch index", Fixture::MultiArch),
        ("zstd layer", Fixture::Zstd),
        ("big (5 layers, 20k files)", big),
    ];
    let images: Vec<_> =
        images.into_iter().filter(|(l, _)| a.only.as_ref().is_none_or(|o| l.contains(o.as_str()))).collect();
    eprintln!("building fixtures and pushing them to {} ...", reg.addr());
    let mut refs = Vec::new();
    for (i, (label, f)) in images.iter().enumerate() {
        let built = fixtures::cached(*f)?;
        let r = reg.push_layout(&built.dir, &format!("bench/img{i}:latest"))?;
        refs.push((label.to_string(), r, built.layer_bytes, matches!(f, Fixture::Big { .. })));
    }
    let berth = bin_path("berth");
    if a.hold {
        let store_root = disk.join("berth-store-hold");
        let store = Service::builder("store-svc").root(&store_root).start().await;
        let registry = Service::builder("registry-svc")
            .arg("--store")
            .arg(store.endpoint().to_string())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .start()
            .await;
        println!("store-svc {} (root {}, log in {})", store.endpoint(), store_root.display(), store.dir().display());
        println!("registry-svc {} (log in {})", registry.endpoint(), registry.dir().display());
        for (label, r, _, _) in &refs {
            println!(
                "{label}: {} --store {} --registry {} pull -q {r}",
                berth.display(),
                store.endpoint(),
                registry.endpoint()
            );
        }
        println!("loop fs at {}; press Enter to stop", disk.display());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        return Ok(());
    }
    let podman_conf = work.path().join("containers.conf");
    std::fs::write(
        &podman_conf,
        "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
    )?;
    let mut rows = Vec::new();
    let mut n = 0usize;
    for (label, r, bytes, is_big) in &refs {
        let runs = if *is_big { a.runs } else { a.small_runs };
        let (mut tb, mut ts, mut tp, mut tss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            n += 1;
            // The tools take turns going first, so neither always runs on a just-warmed machine.
            let berth_first = run % 2 == 0;
            for turn in 0..2 {
                if (turn == 0) == berth_first {
                    // berth: fresh store each run (cold), services already up (as a running
                    // stack; a fresh registry-svc, so no HTTP connection is reused either).
                    let store_root = disk.join(format!("berth-store-{n}"));
                    let store = Service::builder("store-svc").root(&store_root).start().await;
                    let registry =
                        Service::builder("registry-svc").arg("--store").arg(store.endpoint().to_string()).start().await;
                    settle();
                    tb.push(timed(
                        Command::new(&berth)
                            .arg("--store")
                            .arg(store.endpoint().to_string())
                            .arg("--registry")
                            .arg(registry.endpoint().to_string())
                            .args(["pull", "-q", r]),
                    )?);
                    drop(registry);
                    drop(store);
                    let _ = std::fs::remove_dir_all(&store_root);
                } else {
                    let dir = disk.join(format!("skopeo-{n}"));
                    settle();
                    let copy = timed(
                        Command::new("skopeo")
                            .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
                            .arg(format!("docker://{r}"))
                            .arg(format!("oci:{}:latest", dir.display())),
                    )?;
                    // What it takes to make skopeo's copy as durable as berth's store (berth
                    // fsyncs every blob before the image record points at it; skopeo fsyncs
                    // nothing).
                    let sync = timed(Command::new("sync").arg("-f").arg(&dir))?;
                    ts.push(copy);
                    tss.push(copy + sync);
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }

            if a.podman && (run < a.runs) {
                let root = disk.join(format!("podman-{n}"));
                settle();
                let t = timed(
                    Command::new("podman")
                        .env("CONTAINERS_CONF", &podman_conf)
                        .arg("--root")
                        .arg(root.join("root"))
                        .arg("--runroot")
                        .arg(root.join("run"))
                        .args(["--storage-driver", "overlay", "pull", "-q", "--tls-verify=false", r]),
                )?;
                tp.push(t);
                let _ = Command::new("podman")
                    .env("CONTAINERS_CONF", &podman_conf)
                    .arg("--root")
                    .arg(root.join("root"))
                    .arg("--runroot")
                    .arg(root.join("run"))
                    .args(["--storage-driver", "overlay", "system", "reset", "-f"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = std::fs::remove_dir_all(&root);
            }
        }
        let spread = |v: &[Duration]| {
            let min = v.iter().min().copied().unwrap_or_default();
            let max = v.iter().max().copied().unwrap_or_default();
            format!("{:.3}-{:.3}", min.as_secs_f64(), max.as_secs_f64())
        };
        eprintln!("{label}: berth {} s, skopeo {} s over {runs} runs", spread(&tb), spread(&ts));
        rows.push((
            label.clone(),
            *bytes,
            runs,
            median(tb),
            median(ts),
            median(tss),
            if a.podman { Some(median(tp)) } else { None },
        ));
    }
    let mbs = |b: u64, d: Duration| b as f64 / 1e6 / d.as_secs_f64();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "\nCold pull from a local distribution registry (medians: {} runs per small image, {} of the big one, podman {}; MB = compressed layer bytes{}).",
        a.small_runs,
        a.runs,
        a.runs.min(a.small_runs),
        if fs.mounted { "; storage on a fresh loop-mounted ext4" } else { "; storage on the root fs" }
    );
    println!(
        "{} UTC, {cpus} CPUs, load average at the start: {load_start}, at the end: {}",
        String::from_utf8_lossy(&Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"]).output()?.stdout).trim(),
        loadavg()
    );
    println!("berth and skopeo do not unpack; podman pull includes unpacking (berth unpacks at run).");
    println!("skopeo+sync: skopeo copy followed by `sync -f` of its output (as durable as berth's store).\n");
    println!(
        "| image | MB | berth s (MB/s) | skopeo copy s (MB/s) | skopeo+sync s | podman pull s (MB/s) | skopeo/berth | skopeo+sync/berth | podman/berth |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, bytes, _, b, s, ss, p) in &rows {
        let ps = p.map(|p| format!("{:.2} ({:.0})", p.as_secs_f64(), mbs(*bytes, p))).unwrap_or_else(|| "-".into());
        let pr = p.map(|p| format!("{:.2}×", p.as_secs_f64() / b.as_secs_f64())).unwrap_or_else(|| "-".into());
        println!(
            "| {label} | {:.1} | {:.3} ({:.0}) | {:.3} ({:.0}) | {:.3} | {ps} | {:.2}× | {:.2}× | {pr} |",
            *bytes as f64 / 1e6,
            b.as_secs_f64(),
            mbs(*bytes, *b),
            s.as_secs_f64(),
            mbs(*bytes, *s),
            ss.as_secs_f64(),
            s.as_secs_f64() / b.as_secs_f64(),
            ss.as_secs_f64() / b.as_secs_f64(),
        );
    }
    Ok(())
}
