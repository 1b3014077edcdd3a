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
    runs: usize,
    big_mb: usize,
    podman: bool,
}

fn args() -> Args {
    let mut a = Args { runs: 2, big_mb: 300, podman: true };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(2).max(1),
            "--big-mb" => a.big_mb = it.next().and_then(|v| v.parse().ok()).unwrap_or(300),
            "--no-podman" => a.podman = false,
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    a
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args();
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
    eprintln!("building fixtures and pushing them to {} ...", reg.addr());
    let mut refs = Vec::new();
    for (i, (label, f)) in images.iter().enumerate() {
        let built = fixtures::cached(*f)?;
        let r = reg.push_layout(&built.dir, &format!("bench/img{i}:latest"))?;
        refs.push((label.to_string(), r, built.layer_bytes));
    }
    let podman_conf = work.path().join("containers.conf");
    std::fs::write(
        &podman_conf,
        "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
    )?;
    let berth = bin_path("berth");
    let mut rows = Vec::new();
    let mut n = 0usize;
    for (label, r, bytes) in &refs {
        let (mut tb, mut ts, mut tp, mut tss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..a.runs {
            n += 1;
            // berth: fresh store each run (cold), services already up (as a running stack).
            let store_root = disk.join(format!("berth-store-{n}"));
            let store = Service::builder("store-svc").root(&store_root).start().await;
            let registry =
                Service::builder("registry-svc").arg("--store").arg(store.endpoint().to_string()).start().await;
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

            let dir = disk.join(format!("skopeo-{n}"));
            let copy = timed(
                Command::new("skopeo")
                    .args(["--insecure-policy", "copy", "-q", "--src-tls-verify=false"])
                    .arg(format!("docker://{r}"))
                    .arg(format!("oci:{}:latest", dir.display())),
            )?;
            // What it takes to make skopeo's copy as durable as berth's store (berth fsyncs
            // every blob before it becomes visible; skopeo fsyncs nothing).
            let sync = timed(Command::new("sync").arg("-f").arg(&dir))?;
            ts.push(copy);
            tss.push(copy + sync);
            let _ = std::fs::remove_dir_all(&dir);

            if a.podman {
                let root = disk.join(format!("podman-{n}"));
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
        rows.push((
            label.clone(),
            *bytes,
            median(tb),
            median(ts),
            median(tss),
            if a.podman { Some(median(tp)) } else { None },
        ));
    }
    let mbs = |b: u64, d: Duration| b as f64 / 1e6 / d.as_secs_f64();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "\nCold pull from a local distribution registry (median of {} runs; MB = compressed layer bytes{}).",
        a.runs,
        if fs.mounted { "; storage on a fresh loop-mounted ext4" } else { "; storage on the root fs" }
    );
    println!(
        "{} UTC, {cpus} CPUs, load average at the end: {}",
        String::from_utf8_lossy(&Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"]).output()?.stdout).trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!("berth and skopeo do not unpack; podman pull includes unpacking (berth unpacks at run).");
    println!("skopeo+sync: skopeo copy followed by `sync -f` of its output (as durable as berth's store).\n");
    println!(
        "| image | MB | berth s (MB/s) | skopeo copy s (MB/s) | skopeo+sync s | podman pull s (MB/s) | skopeo/berth | skopeo+sync/berth | podman/berth |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (label, bytes, b, s, ss, p) in &rows {
        let ps = p.map(|p| format!("{:.2} ({:.0})", p.as_secs_f64(), mbs(*bytes, p))).unwrap_or_else(|| "-".into());
        let pr = p.map(|p| format!("{:.2}×", p.as_secs_f64() / b.as_secs_f64())).unwrap_or_else(|| "-".into());
        println!(
            "| {label} | {:.1} | {:.2} ({:.0}) | {:.2} ({:.0}) | {:.2} | {ps} | {:.2}× | {:.2}× | {pr} |",
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
