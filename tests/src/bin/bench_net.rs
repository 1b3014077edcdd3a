//! `cargo run --release -p berth-tests --bin bench_net`: a published port vs the container's own
//! address, berth beside podman, for the same busybox image and server.
//!
//! Each engine runs `busybox httpd` serving a 256 MiB file and a small page, published on a free
//! loopback port. Measured from the host (traffic only to 127.0.0.1 and to the containers'
//! addresses, inside namespaces the engines made):
//! - throughput: GET of the big file (best of 5), through 127.0.0.1:<published> and straight to
//!   <container ip>:80;
//! - connection rate: 4 threads × sequential short GETs of the small page for 3 s.
//!
//! Needs root. Prints a markdown table with the published/direct ratios (target ≥ 0.8).

use anyhow::{bail, Context, Result};
use berth_tests::fixtures::Fixture;
use berth_tests::podman::Podman;
use berth_tests::registry::Registry;
use berth_tests::stack::{bin_path, free_port, Service};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIG_MIB: u64 = 256;
const SCRIPT: &str = "mkdir -p /www && echo small > /www/index.html && \
    dd if=/dev/zero of=/www/big bs=1M count=256 2>/dev/null && exec httpd -f -p 80 -h /www";

fn main() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("bench_net needs root");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let work = tempfile::Builder::new().prefix("berth-bench-net").tempdir()?;
    let rows = rt.block_on(bench(work.path()))?;
    println!("\n| path | throughput (MiB/s) | ratio to direct | connections/s | ratio to direct |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    Ok(())
}

struct Row {
    what: String,
    mibs: f64,
    mibs_direct: f64,
    conns: f64,
    conns_direct: f64,
}

impl std::fmt::Display for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = |r: f64, direct: bool| {
            if direct {
                String::new()
            } else if r >= 0.8 {
                " ✅".into()
            } else {
                " ❌".into()
            }
        };
        let direct = self.mibs == self.mibs_direct && self.conns == self.conns_direct;
        let r1 = self.mibs / self.mibs_direct;
        let r2 = self.conns / self.conns_direct;
        write!(
            f,
            "| {} | {:.0} | {:.2}×{} | {:.0} | {:.2}×{} |",
            self.what,
            self.mibs,
            r1,
            mark(r1, direct),
            self.conns,
            r2,
            mark(r2, direct)
        )
    }
}

fn sh(c: &mut Command) -> Result<String> {
    let o = c.stdin(Stdio::null()).output().with_context(|| format!("running {c:?}"))?;
    if !o.status.success() {
        bail!("{c:?} failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// GET `path` and count the body bytes.
fn get(addr: SocketAddr, path: &str, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut n = 0u64;
    loop {
        let k = s.read(buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    Ok(n)
}

fn wait_serving(addr: SocketAddr) -> Result<()> {
    let t0 = Instant::now();
    let mut buf = vec![0u8; 4096];
    while t0.elapsed() < Duration::from_secs(60) {
        // httpd starts only after the big file is written (the script's `&& exec`).
        if get(addr, "/index.html", &mut buf).map(|n| n > 0).unwrap_or(false) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{addr} never served the big file")
}

/// Best of 5 downloads of the big file, MiB/s.
fn throughput(addr: SocketAddr) -> Result<f64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut best: f64 = 0.0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let n = get(addr, "/big", &mut buf)?;
        if n < BIG_MIB << 20 {
            bail!("{addr}: short download ({n} bytes)");
        }
        let mibs = n as f64 / (1 << 20) as f64 / t0.elapsed().as_secs_f64();
        best = best.max(mibs);
    }
    Ok(best)
}

/// 4 threads doing sequential short GETs for 3 s; connections per second.
fn conn_rate(addr: SocketAddr) -> Result<f64> {
    let t0 = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 4096];
                let mut n = 0u64;
                while t0.elapsed() < Duration::from_secs(3) {
                    if get(addr, "/index.html", &mut buf).is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

fn measure(what: &str, published: SocketAddr, direct: SocketAddr) -> Result<Vec<Row>> {
    wait_serving(published)?;
    wait_serving(direct)?;
    // Interleave to share the machine's noise.
    let d1 = throughput(direct)?;
    let p1 = throughput(published)?;
    let dc = conn_rate(direct)?;
    let pc = conn_rate(published)?;
    let d2 = throughput(direct)?;
    let p2 = throughput(published)?;
    let (d, p) = (d1.max(d2), p1.max(p2));
    eprintln!("{what}: direct {d:.0} MiB/s {dc:.0} conn/s, published {p:.0} MiB/s {pc:.0} conn/s");
    Ok(vec![
        Row {
            what: format!("{what}: container address :80 (direct)"),
            mibs: d,
            mibs_direct: d,
            conns: dc,
            conns_direct: dc,
        },
        Row { what: format!("{what}: published 127.0.0.1:port"), mibs: p, mibs_direct: d, conns: pc, conns_direct: dc },
    ])
}

async fn bench(dir: &Path) -> Result<Vec<Row>> {
    let registry = Registry::start()?;
    let bb = registry.push_fixture(Fixture::Busybox, "busybox")?;
    let mut rows = vec![];

    // berth (runc, as podman).
    let conf = dir.join("runtime-svc.toml");
    std::fs::write(&conf, "runtime = \"runc\"\n")?;
    let store = Service::builder("store-svc").root(dir.join("store")).start().await;
    let registry_svc = Service::builder("registry-svc")
        .root(dir.join("registry"))
        .arg("--store")
        .arg(store.endpoint().to_string())
        .start()
        .await;
    let runtime = Service::builder("runtime-svc")
        .root(dir.join("runtime"))
        .arg("--store")
        .arg(store.endpoint().to_string())
        .arg("--config")
        .arg(conf.display().to_string())
        .start()
        .await;
    let berth = |args: &[&str]| {
        let mut c = Command::new(bin_path("berth"));
        c.args(args)
            .env("BERTH_STORE", store.endpoint().to_string())
            .env("BERTH_REGISTRY", registry_svc.endpoint().to_string())
            .env("BERTH_RUNTIME", runtime.endpoint().to_string())
            .env("BERTH_ROOT", dir.join("cli"));
        c
    };
    let port = free_port();
    let id = sh(&mut berth(&["run", "-d", "-p", &format!("{port}:80"), &bb, "sh", "-c", SCRIPT]))?.trim().to_string();
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(
        dir.join("runtime").join("containers").join(&id).join("container.json"),
    )?)?;
    let ip = rec["net"]["endpoint"]["ip"].as_str().context("berth container has no address")?.to_string();
    let r = measure("berth", format!("127.0.0.1:{port}").parse()?, format!("{ip}:80").parse()?);
    let _ = sh(&mut berth(&["rm", "-f", &id]));
    rows.extend(r?);

    // podman (PEERS.md configuration), its default bridge network and published port.
    let podman = Podman::new(&dir.join("podman"))?;
    sh(&mut podman.cmd(&["pull", "-q", "--tls-verify=false", &bb]))?;
    let pport = free_port();
    let pid = sh(&mut podman.cmd(&["run", "-d", "-p", &format!("127.0.0.1:{pport}:80"), &bb, "sh", "-c", SCRIPT]))?
        .trim()
        .to_string();
    let pip = sh(&mut podman.cmd(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &pid]))?.trim().to_string();
    let r = measure("podman", format!("127.0.0.1:{pport}").parse()?, format!("{pip}:80").parse()?);
    let _ = podman.cmd(&["rm", "-f", &pid]).stderr(Stdio::null()).status();
    rows.extend(r?);
    Ok(rows)
}
