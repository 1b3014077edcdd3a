//! Shared setup of the `net_*` tests (included with `mod net_env;`): a registry with the busybox
//! fixture (which EXPOSEs 8080/tcp), the three services (runtime-svc on runc, or on the built-in
//! runtime with `BERTH_NET_TEST_RUNTIME=builtin`), the `berth` CLI,
//! and helpers to look at what a container's network left on the host. Traffic goes only to
//! loopback and to addresses of namespaces these tests make.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

// The services and the `berth` helpers are the run tests' (one set-up for both).
#[path = "run_env.rs"]
mod run_env;
pub use run_env::Env;
use run_env::Runtime;

/// Root, nft and runc present; prints why not otherwise.
pub fn can_run() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the network tests need root");
        return false;
    }
    for b in ["/usr/sbin/runc", "/usr/sbin/nft"] {
        if !std::path::Path::new(b).exists() {
            eprintln!("SKIPPED: {b} is not installed");
            return false;
        }
    }
    true
}

/// Everything started, busybox pulled; runtime-svc on runc, or on the built-in runtime with
/// `BERTH_NET_TEST_RUNTIME=builtin`.
pub async fn start() -> Env {
    let rt = match std::env::var("BERTH_NET_TEST_RUNTIME").as_deref() {
        Ok("builtin") => Runtime::Builtin,
        _ => Runtime::Runc,
    };
    Env::with_busybox_on(rt).await
}

/// Runs a detached busybox httpd serving `body` on container port `port`; extra args go before
/// the image. Returns the container ID.
pub async fn httpd(env: &Env, name: &str, port: u16, body: &str, extra: &[&str]) -> String {
    let script = format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    let bb = env.busybox.clone();
    args.extend_from_slice(&[&bb, "sh", "-c", &script]);
    env.ok(&args).await.trim().to_string()
}

/// HTTP GET over a plain TcpStream; the body, or None when nothing answers.
pub fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    Some(body.to_string())
}

/// Polls `http_get` until it returns something (up to 15 s).
pub async fn http_get_eventually(addr: SocketAddr) -> Option<String> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        let r = tokio::task::spawn_blocking(move || http_get(addr)).await.unwrap();
        if r.is_some() {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// A host port nobody uses now.
pub fn free_port() -> u16 {
    berth_tests::stack::free_port()
}

/// The host's network interfaces.
pub fn host_links() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `nft list table ip berth` (empty when the table does not exist).
pub fn nft_table() -> String {
    let o = Command::new("nft").args(["list", "table", "ip", "berth"]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts that nothing of container `id`'s network is left on the host.
pub fn assert_network_released(env: &Env, id: &str) {
    let veth = format!("veth{}", &id[..11]);
    assert!(!host_links().contains(&veth), "veth {veth} is left");
    assert!(!env.runtime.root().join("netns").join(id).exists(), "netns of {id} is left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(id), "a mount of {id} is left");
    assert!(!nft_table().contains(id), "an nft rule of {id} is left:\n{}", nft_table());
    let state = std::path::Path::new("/run/berth/net");
    assert!(!state.join("leases").join(format!("{id}.json")).exists(), "lease of {id} is left");
    let owner_line = format!("\n{id}\n");
    for dir in walk(state) {
        let text = std::fs::read_to_string(&dir).unwrap_or_default();
        assert!(!text.contains(&owner_line), "{} still names {id}", dir.display());
    }
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
