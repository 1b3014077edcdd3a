//! `cargo run --release -p berth-tests --bin bench_run`: `berth run` beside podman and bare runc.
//!
//! Measured side by side in one run, all storage on a freshly made loop-mounted ext4 (see
//! shared/PEERS.md):
//! 1. warm `berth run --rm --network none busybox true` (CLI → gRPC → runtime-svc → shim → OCI
//!    runtime) vs `podman run --rm --network none busybox true` vs `runc run` (and the built-in
//!    `berth-runc run`) of an equivalent bundle;
//! 2. first run of a not-yet-pulled multi-layer image (pull + unpack + start) vs podman, median
//!    of 5 interleaved rounds, each engine forgetting the image (blobs and snapshots) in between;
//! 3. 50 detached containers started, listed and removed, vs podman (the time of `run -d` ×50 +
//!    `ps`, plus that of one `rm -f` of all; the memory sampling between them is not timed);
//! 4. RSS of an idle container's shim (vs conmon) and of runtime-svc.
//!
//! Berth is measured twice, as two separate stacks (store, registry and runtime services each,
//! so that both pull from scratch): with the built-in runtime (berth-runc, the default) and with
//! `runtime = "runc"`. Every container, berth's and podman's, runs with `--network none`.
//!
//! Needs root. Prints a markdown table with the ratios against the targets.
//!
//! `--only warm,first,fifty,rss` (comma-separated or repeated) measures only those parts:
//! `warm` (1, with the create/start/rm phases), `first` (2), `fifty` (3, which also gives the
//! RSS rows of 4), `rss` (4 alone, on a few idle containers). Default: all.

use anyhow::{bail, Context, Result};
use berth_tests::fixtures::Fixture;
use berth_tests::podman::Podman;
use berth_tests::registry::Registry;
use berth_tests::stack::{bin_path, Service};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WARM_RUNS: usize = 15;
const MANY: usize = 50;
/// Rounds of the first-run comparison (each engine pulls and unpacks from scratch each round).
const FIRST_RUNS: usize = 5;

fn main() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench_run needs root");
    }
    let only = Only::parse(std::env::args().skip(1))?;
    let rt = tokio::runtime::Runtime::new()?;
    let work = tempfile::Builder::new().prefix("berth-bench-run").tempdir()?;
    let fs = LoopFs::new(work.path())?;
    let result = rt.block_on(bench(&fs.mnt, &only));
    drop(fs);
    let rows = result?;
    println!("\n| measurement | berth | peer | ratio | target |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    Ok(())
}

/// Which parts to measure (`--only`).
struct Only(Vec<String>);

impl Only {
    const PARTS: [&'static str; 4] = ["warm", "first", "fifty", "rss"];

    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self> {
        let mut parts = vec![];
        while let Some(a) = args.next() {
            let v = match a.strip_prefix("--only=") {
                Some(v) => v.to_string(),
                None if a == "--only" => args.next().context("--only needs a value")?,
                None => bail!("unknown argument {a:?} (usage: bench_run [--only warm,first,fifty,rss])"),
            };
            for p in v.split(',').filter(|p| !p.is_empty()) {
                if !Self::PARTS.contains(&p) {
                    bail!("--only {p:?}: expected one of {:?}", Self::PARTS);
                }
                parts.push(p.to_string());
            }
        }
        Ok(Only(if parts.is_empty() { Self::PARTS.iter().map(|p| p.to_string()).collect() } else { parts }))
    }

    fn has(&self, part: &str) -> bool {
        self.0.iter().any(|p| p == part)
    }
}

struct Row {
    what: String,
    berth: String,
    peer: String,
    ratio: String,
    target: String,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "| {} | {} | {} | {} | {} |", self.what, self.berth, self.peer, self.ratio, self.target)
    }
}

/// Prints the rows measured so far (in case a later step fails).
fn show(rows: &[Row]) {
    for r in rows {
        eprintln!("{r}");
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(a: Duration, b: Duration, target: f64) -> String {
    let r = a.as_secs_f64() / b.as_secs_f64();
    format!("{r:.3}× {}", if r <= target { "✅" } else { "❌" })
}

/// A fresh ext4 on a loop device, mounted under `dir/mnt`; unmounted on drop.
struct LoopFs {
    mnt: PathBuf,
    img: PathBuf,
}

impl LoopFs {
    fn new(dir: &Path) -> Result<Self> {
        let img = dir.join("fs.img");
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt)?;
        sh(Command::new("truncate").arg("-s").arg("6G").arg(&img))?;
        sh(Command::new("mkfs.ext4").arg("-q").arg("-F").arg(&img))?;
        sh(Command::new("mount").arg("-o").arg("loop").arg(&img).arg(&mnt))?;
        Ok(LoopFs { mnt, img })
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Overlay mounts podman may have left inside first, then the filesystem itself.
        let _ = Command::new("umount").arg("-R").arg(&self.mnt).status();
        if Command::new("umount").arg(&self.mnt).stderr(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_file(&self.img);
    }
}

fn sh(c: &mut Command) -> Result<String> {
    let o = c.stdin(Stdio::null()).output().with_context(|| format!("running {c:?}"))?;
    if !o.status.success() {
        bail!("{c:?} failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn timed(c: &mut Command) -> Result<Duration> {
    let t0 = Instant::now();
    sh(c)?;
    Ok(t0.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Berth {
    /// "built-in" or "runc".
    label: &'static str,
    _store: Service,
    _registry: Service,
    runtime: Service,
    env: Vec<(String, String)>,
}

impl Berth {
    /// A complete stack under `root`; `runc` selects `runtime = "runc"` in runtime-svc's config.
    async fn start(root: &Path, runc: bool) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let conf = root.join("runtime.toml");
        std::fs::write(&conf, if runc { "runtime = \"runc\"\n" } else { "" })?;
        let store = Service::builder("store-svc").root(root.join("store")).start().await;
        let registry = Service::builder("registry-svc")
            .root(root.join("registry"))
            .arg("--store")
            .arg(store.endpoint().to_string())
            .start()
            .await;
        let runtime = Service::builder("runtime-svc")
            .root(root.join("runtime"))
            .arg("--store")
            .arg(store.endpoint().to_string())
            .arg("--config")
            .arg(conf.display().to_string())
            .start()
            .await;
        let env = vec![
            ("BERTH_STORE".into(), store.endpoint().to_string()),
            ("BERTH_REGISTRY".into(), registry.endpoint().to_string()),
            ("BERTH_RUNTIME".into(), runtime.endpoint().to_string()),
            ("BERTH_ROOT".into(), root.join("cli").display().to_string()),
        ];
        Ok(Berth { label: if runc { "runc" } else { "built-in" }, _store: store, _registry: registry, runtime, env })
    }

    /// User + system CPU time used so far by store-svc, registry-svc and runtime-svc (the
    /// runtime's own children, shims and OCI runtime, are not counted).
    fn cpu(&self) -> [Duration; 3] {
        [&self._store, &self._registry, &self.runtime].map(|s| s.pid().and_then(cpu_time).unwrap_or_default())
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_path("berth"));
        c.args(args).envs(self.env.iter().cloned()).stdout(Stdio::piped());
        c
    }
}

/// The Big fixture (5 layers of generated files) with the busybox layer on top, as an OCI
/// layout, so that it can run `true`.
fn runnable_big(out: &Path) -> Result<PathBuf> {
    use sha2::Digest as _;
    let big = berth_tests::fixtures::cached(Fixture::Big { layers: 5, files_per_layer: 2000, mb: 100 })?;
    let bb = berth_tests::fixtures::cached(Fixture::Busybox)?;
    let blobs = out.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    for src in [&big.dir, &bb.dir] {
        for de in std::fs::read_dir(src.join("blobs/sha256"))?.flatten() {
            let dst = blobs.join(de.file_name());
            if !dst.exists() {
                std::fs::copy(de.path(), dst)?;
            }
        }
    }
    let read = |dir: &Path, digest: &str| -> Result<serde_json::Value> {
        let hex = digest.trim_start_matches("sha256:");
        Ok(serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(hex))?)?)
    };
    let top = |dir: &Path| -> Result<serde_json::Value> {
        let idx: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json"))?)?;
        read(dir, idx["manifests"][0]["digest"].as_str().context("index without manifests")?)
    };
    let (mut m, bm) = (top(&big.dir)?, top(&bb.dir)?);
    let mut cfg = read(&big.dir, m["config"]["digest"].as_str().context("config")?)?;
    let bcfg = read(&bb.dir, bm["config"]["digest"].as_str().context("config")?)?;
    m["layers"].as_array_mut().context("layers")?.push(bm["layers"][0].clone());
    cfg["rootfs"]["diff_ids"].as_array_mut().context("diff_ids")?.push(bcfg["rootfs"]["diff_ids"][0].clone());
    let put = |v: &serde_json::Value| -> Result<(String, usize)> {
        let data = serde_json::to_vec(v)?;
        let hex = hex::encode(sha2::Sha256::digest(&data));
        std::fs::write(blobs.join(&hex), &data)?;
        Ok((format!("sha256:{hex}"), data.len()))
    };
    let (cd, cs) = put(&cfg)?;
    m["config"]["digest"] = cd.into();
    m["config"]["size"] = cs.into();
    let (md, ms) = put(&m)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": m["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json"),
            "digest": md, "size": ms,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(out.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(out.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(out.to_path_buf())
}

/// VmRSS in KiB of the first process whose command line contains all of `needles`.
fn rss_of(needles: &[&str]) -> Option<(u32, u64)> {
    for de in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = de.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let c = String::from_utf8_lossy(&c);
        if needles.iter().all(|n| c.contains(n)) {
            return Some((pid, rss_kib(pid)?));
        }
    }
    None
}

/// (Pss, Private) in KiB from smaps_rollup: what one more process really costs, shared
/// library pages excluded.
fn pss_private_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some((field("Pss:"), field("Private_Clean:") + field("Private_Dirty:")))
}

/// utime + stime of a process (all its threads), from /proc/PID/stat.
fn cpu_time(pid: u32) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Some(Duration::from_millis(ticks * 1000 / hz.max(1)))
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `run --rm --network none IMAGE true` (every berth and podman container has no network).
const RUN_TRUE: [&str; 4] = ["run", "--rm", "--network", "none"];

fn run_true(img: &str) -> Vec<String> {
    RUN_TRUE.iter().map(|s| s.to_string()).chain([img.to_string(), "true".to_string()]).collect()
}

async fn bench(mnt: &Path, only: &Only) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    eprintln!("starting registry and pushing fixtures…");
    let registry = Registry::start()?;
    let bb = registry.push_fixture(Fixture::Busybox, "busybox")?;
    let big = if only.has("first") {
        let big_layout = runnable_big(&mnt.join("big-layout"))?;
        registry.push_layout(&big_layout, "big")?
    } else {
        String::new()
    };
    let berths = [Berth::start(&mnt.join("berth"), false).await?, Berth::start(&mnt.join("berth-runc"), true).await?];
    let podman = Podman::new(&mnt.join("podman"))?;
    let bb_true = run_true(&bb);

    // Warm-up: all pull busybox and run it once.
    for b in &berths {
        sh(&mut b.cmd(&args(&bb_true)))?;
    }
    sh(&mut podman.cmd(&["pull", "-q", "--tls-verify=false", &bb]))?;
    sh(&mut podman.cmd(&args(&bb_true)))?;

    if only.has("warm") {
        warm(mnt, &berths, &podman, &bb, &mut rows)?;
    }
    if only.has("first") {
        first(&berths, &podman, &big, &mut rows)?;
    }
    if only.has("fifty") {
        fifty(&berths, &podman, &bb, &mut rows)?;
    } else if only.has("rss") {
        idle_rss(&berths, &podman, &bb, &mut rows)?;
    }
    // Podman's leftovers.
    let _ = podman.cmd(&["rm", "-a", "-f"]).stderr(Stdio::null()).status();
    let _ = podman.cmd(&["system", "prune", "-a", "-f"]).stderr(Stdio::null()).stdout(Stdio::null()).status();
    Ok(rows)
}

/// Warm `run --rm` of busybox: berth (both runtimes), podman, bare runc and bare berth-runc,
/// interleaved; then berth's create / start -a / rm phases.
fn warm(mnt: &Path, berths: &[Berth; 2], podman: &Podman, bb: &str, rows: &mut Vec<Row>) -> Result<()> {
    let bb_true = run_true(bb);
    // A bundle of the same busybox for bare `runc run` / `berth-runc run`.
    let bundle = mnt.join("runc-bundle");
    std::fs::create_dir_all(bundle.join("rootfs/bin"))?;
    std::fs::copy("/bin/busybox", bundle.join("rootfs/bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", bundle.join("rootfs/bin/true"))?;
    sh(Command::new("runc").arg("spec").current_dir(&bundle))?;
    let mut spec: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle.join("config.json"))?)?;
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    spec["root"]["readonly"] = false.into();
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let runc_root = mnt.join("runc-state");
    let berth_runc = bin_path("berth-runc");
    let berth_runc_root = mnt.join("berth-runc-state");

    eprintln!("warm runs ({WARM_RUNS} each, interleaved)…");
    let (mut b, mut p, mut r, mut br) = ([vec![], vec![]], vec![], vec![], vec![]);
    for i in 0..WARM_RUNS {
        for (k, berth) in berths.iter().enumerate() {
            b[k].push(timed(&mut berth.cmd(&args(&bb_true)))?);
        }
        p.push(timed(&mut podman.cmd(&args(&bb_true)))?);
        let id = format!("bench{i}");
        r.push(timed(Command::new("runc").arg("--root").arg(&runc_root).args(["run", "-b"]).arg(&bundle).arg(&id))?);
        br.push(timed(
            Command::new(&berth_runc).arg("--root").arg(&berth_runc_root).args(["run", "-b"]).arg(&bundle).arg(&id),
        )?);
    }
    let (p, r, br) = (median(p), median(r), median(br));
    for (k, berth) in berths.iter().enumerate() {
        let bm = median(std::mem::take(&mut b[k]));
        rows.push(Row {
            what: format!("`run --rm busybox true` (median of {WARM_RUNS}), berth {} vs podman", berth.label),
            berth: ms(bm),
            peer: ms(p),
            ratio: ratio(bm, p, 0.25),
            target: "≤ 0.25×".into(),
        });
        rows.push(Row {
            what: format!("same, berth {} vs bare `runc run` of an equivalent bundle", berth.label),
            berth: ms(bm),
            peer: ms(r),
            ratio: ratio(bm, r, 2.0),
            target: "≤ 2×".into(),
        });
    }
    rows.push(Row {
        what: "bare `berth-runc run` vs bare `runc run` of the same bundle".into(),
        berth: ms(br),
        peer: ms(r),
        ratio: format!("{:.3}×", br.as_secs_f64() / r.as_secs_f64()),
        target: "-".into(),
    });

    // Where berth's time goes: create, attach+start+exit, rm (medians of 5).
    let create_true: Vec<String> = ["create", "--network", "none", bb, "true"].iter().map(|s| s.to_string()).collect();
    for berth in berths {
        let (mut c, mut st, mut rmv) = (vec![], vec![], vec![]);
        for _ in 0..5 {
            let t0 = Instant::now();
            let id = sh(&mut berth.cmd(&args(&create_true)))?.trim().to_string();
            c.push(t0.elapsed());
            st.push(timed(&mut berth.cmd(&["start", "-a", &id]))?);
            rmv.push(timed(&mut berth.cmd(&["rm", &id]))?);
        }
        eprintln!(
            "berth {} phases (median): create {}, start -a (attach+start+exit) {}, rm {}",
            berth.label,
            ms(median(c)),
            ms(median(st)),
            ms(median(rmv))
        );
    }
    show(rows);
    Ok(())
}

/// First run of the not-yet-pulled 6-layer image, berth (both runtimes) vs podman.
fn first(berths: &[Berth; 2], podman: &Podman, big: &str, rows: &mut Vec<Row>) -> Result<()> {
    eprintln!("first run of a 6-layer image not yet pulled ({FIRST_RUNS} rounds)…");
    let big_true = run_true(big);
    // Per round, interleaved: each berth stack, then podman. Between rounds every engine
    // forgets the image: podman `rmi -f`, berth `rmi` + `system prune -f` (which removes the
    // blobs from store-svc and the unused snapshots from runtime-svc, so the next round pulls
    // and unpacks everything again).
    let mut times: [Vec<Duration>; 2] = [vec![], vec![]];
    let mut peer = vec![];
    for round in 0..FIRST_RUNS {
        for (k, berth) in berths.iter().enumerate() {
            let cpu0 = berth.cpu();
            // The second stack pulls and runs in two commands to show where the time goes
            // (the sum is what one `run` does, plus one more CLI start).
            let bt = if k == 0 {
                timed(&mut berth.cmd(&args(&big_true)))?
            } else {
                let pull = timed(&mut berth.cmd(&["pull", "-q", big]))?;
                let run = timed(&mut berth.cmd(&args(&big_true)))?;
                eprintln!("berth {}: pull {}, then run (unpack + start) {}", berth.label, ms(pull), ms(run));
                pull + run
            };
            let cpu1 = berth.cpu();
            eprintln!(
                "round {round}, berth {}: {}; CPU time of the services: store-svc {}, registry-svc {}, runtime-svc {}",
                berth.label,
                ms(bt),
                ms(cpu1[0].saturating_sub(cpu0[0])),
                ms(cpu1[1].saturating_sub(cpu0[1])),
                ms(cpu1[2].saturating_sub(cpu0[2]))
            );
            times[k].push(bt);
        }
        let _ = podman.cmd(&["rmi", "-f", big]).stderr(Stdio::null()).status();
        let mut pargs = args(&big_true);
        pargs.insert(1, "--tls-verify=false");
        let pt = timed(&mut podman.cmd(&pargs))?;
        eprintln!("round {round}, podman: {}", ms(pt));
        peer.push(pt);
        let _ = podman.cmd(&["rmi", "-f", big]).stderr(Stdio::null()).status();
        for berth in berths {
            sh(&mut berth.cmd(&["rmi", big]))?;
            sh(&mut berth.cmd(&["system", "prune", "-f"]))?;
        }
    }
    let list =
        |v: &[Duration]| v.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0)).collect::<Vec<_>>().join(", ");
    let pt = median(peer.clone());
    for (k, berth) in berths.iter().enumerate() {
        let bt = median(times[k].clone());
        rows.push(Row {
            what: format!(
                "first run, 6 layers / 100 MB / 10k files (pull+unpack+start), median of {FIRST_RUNS}, berth {}{}",
                berth.label,
                if k == 0 { "" } else { " (pull, then run)" }
            ),
            berth: format!("{} ({} ms)", ms(bt), list(&times[k])),
            peer: format!("{} ({} ms)", ms(pt), list(&peer)),
            ratio: ratio(bt, pt, 0.3),
            target: "≤ 0.3×".into(),
        });
    }
    show(rows);
    Ok(())
}

/// 50 detached containers started, listed and removed, berth (both runtimes) vs podman, with
/// the idle supervisors' RSS measured while they run.
fn fifty(berths: &[Berth; 2], podman: &Podman, bb: &str, rows: &mut Vec<Row>) -> Result<()> {
    many(berths, podman, bb, MANY, true, rows)
}

/// RSS of a few idle containers' supervisors alone (`--only rss`).
fn idle_rss(berths: &[Berth; 2], podman: &Podman, bb: &str, rows: &mut Vec<Row>) -> Result<()> {
    many(berths, podman, bb, 5, false, rows)
}

/// `n` detached containers started, listed and removed, berth (both runtimes) vs podman, with
/// the idle supervisors' RSS measured while they run; `timing` adds the time rows.
fn many(berths: &[Berth; 2], podman: &Podman, bb: &str, n: usize, timing: bool, rows: &mut Vec<Row>) -> Result<()> {
    eprintln!("{n} detached containers…");
    let t0 = Instant::now();
    let mut pids = vec![];
    for _ in 0..n {
        pids.push(sh(&mut podman.cmd(&["run", "-d", "--network", "none", bb, "sleep", "1000"]))?.trim().to_string());
    }
    sh(&mut podman.cmd(&["ps", "-q"]))?;
    let p_start_list = t0.elapsed();
    // Memory is sampled between the timed phases, outside the time of either engine.
    let conmon = rss_of(&["conmon", &pids[0]]);
    let conmon_detail = conmon.and_then(|(pid, _)| pss_private_kib(pid));
    let mut rm = vec!["rm", "-f", "-t", "0"];
    rm.extend(pids.iter().map(String::as_str));
    let t1 = Instant::now();
    if let Err(e) = sh(&mut podman.cmd(&rm)) {
        // Under load podman sometimes fails to unmount a container's shm; retry once so
        // nothing is left running, and say so.
        eprintln!("podman rm -f reported errors (timed anyway): {e:#}");
        let _ = podman.cmd(&rm).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
    let p_rm = t1.elapsed();
    let pt = p_start_list + p_rm;
    let detail =
        |d: Option<(u64, u64)>| d.map(|(pss, private)| format!(" (PSS {pss}, private {private})")).unwrap_or_default();

    for berth in berths {
        let t0 = Instant::now();
        let mut ids = vec![];
        for _ in 0..n {
            ids.push(sh(&mut berth.cmd(&["run", "-d", "--network", "none", bb, "sleep", "1000"]))?.trim().to_string());
        }
        let listed = sh(&mut berth.cmd(&["ps", "-q"]))?.lines().count();
        let b_start_list = t0.elapsed();
        // Idle memory while they run: every shim's RSS (the target holds for each), and the
        // PSS / private memory of the first.
        std::thread::sleep(Duration::from_millis(300));
        let shims: Vec<(u32, u64)> = ids.iter().filter_map(|id| rss_of(&["berth-shim", id])).collect();
        let shim_detail = shims.first().and_then(|(pid, _)| pss_private_kib(*pid));
        let svc = berth.runtime.pid().and_then(rss_kib);
        let mut rm = vec!["rm", "-f"];
        rm.extend(ids.iter().map(String::as_str));
        let t1 = Instant::now();
        sh(&mut berth.cmd(&rm))?;
        let b_rm = t1.elapsed();
        let bt = b_start_list + b_rm;
        if listed != n {
            bail!("berth ps listed {listed} containers, expected {n}");
        }
        if timing {
            rows.push(Row {
                what: format!("{n} × `run -d` + `ps` + one `rm -f` of all, berth {}", berth.label),
                berth: format!("{} (start+list {}, rm {})", ms(bt), ms(b_start_list), ms(b_rm)),
                peer: format!("{} (start+list {}, rm {})", ms(pt), ms(p_start_list), ms(p_rm)),
                ratio: ratio(bt, pt, 0.25),
                target: "≤ 0.25×".into(),
            });
        }
        let (lo, hi) = (shims.iter().map(|s| s.1).min().unwrap_or(0), shims.iter().map(|s| s.1).max().unwrap_or(0));
        rows.push(Row {
            what: format!(
                "RSS of idle containers' supervisors (berth-shim min–max of {} vs conmon), KiB, berth {}",
                shims.len(),
                berth.label
            ),
            berth: format!("{lo}–{hi}{}", detail(shim_detail)),
            peer: format!("{}{}", conmon.map(|c| c.1).unwrap_or(0), detail(conmon_detail)),
            ratio: format!("{} ", if shims.len() == n && lo > 0 && hi <= 2048 { "✅" } else { "❌" }),
            target: "≤ 2 MB".into(),
        });
        rows.push(Row {
            what: format!("RSS of runtime-svc (with {n} containers running), berth {}", berth.label),
            berth: format!("{} KiB", svc.unwrap_or(0)),
            peer: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
        });
        show(rows);
    }
    Ok(())
}
