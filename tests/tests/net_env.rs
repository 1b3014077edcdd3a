//! Shared setup of the `net_*` tests (included with `mod net_env;`): a registry with the busybox
//! fixture (which EXPOSEs 8080/tcp), the three services (runtime-svc on runc, or on the built-in
//! runtime with `BERTH_NET_TEST_RUNTIME=builtin`), the `berth` CLI,
//! and helpers to look at what a container's network left on the host. Traffic goes only to
//! loopback and to addresses of namespaces these tests make.
#![allow(dead_code)]

use berth_proto::registry::v1 as rpb;
use berth_tests::fixtures::Fixture;
use berth_tests::registry::Registry;
use berth_tests::stack::{bin_path, Service};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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

/// One test's services.
pub struct Env {
    pub registry: Registry,
    pub store: Service,
    pub registry_svc: Service,
    pub runtime: Service,
    pub busybox: String,
    pub home: tempfile::TempDir,
}

impl Env {
    /// Everything started, busybox pulled.
    pub async fn start() -> Env {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("runtime-svc.toml");
        // runc by default; BERTH_NET_TEST_RUNTIME=builtin runs the same tests on berth-runc.
        let kind = std::env::var("BERTH_NET_TEST_RUNTIME").unwrap_or_else(|_| "runc".into());
        std::fs::write(&config, format!("runtime = \"{kind}\"\n")).unwrap();
        let registry = Registry::start().expect("starting docker-registry");
        let busybox = registry.push_fixture(Fixture::Busybox, "busybox").expect("pushing busybox");
        let store = Service::start("store-svc").await;
        let registry_svc =
            Service::builder("registry-svc").arg("--store").arg(store.endpoint().to_string()).start().await;
        let runtime = Service::builder("runtime-svc")
            .arg("--store")
            .arg(store.endpoint().to_string())
            .arg("--config")
            .arg(config.to_string_lossy())
            .sigkill_on_drop(false)
            .start()
            .await;
        let env = Env { registry, store, registry_svc, runtime, busybox, home };
        let mut c = rpb::registry_client::RegistryClient::new(env.registry_svc.channel().await);
        let mut s = c
            .pull(rpb::PullRequest { reference: env.busybox.clone(), platform: None })
            .await
            .expect("pull")
            .into_inner();
        while let Some(_ev) = s.message().await.expect("pull stream") {}
        env
    }

    /// A `berth` command aimed at this stack.
    pub fn berth_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_path("berth"));
        c.args(args)
            .env("BERTH_STORE", self.store.endpoint().to_string())
            .env("BERTH_REGISTRY", self.registry_svc.endpoint().to_string())
            .env("BERTH_RUNTIME", self.runtime.endpoint().to_string())
            .env("BERTH_ROOT", self.home.path())
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        c
    }

    /// Runs `berth ARGS` to completion.
    pub async fn berth(&self, args: &[&str]) -> Output {
        let mut c = self.berth_cmd(args);
        tokio::task::spawn_blocking(move || c.output().expect("running berth")).await.unwrap()
    }

    /// Runs `berth ARGS`, asserting success; returns stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let o = self.berth(args).await;
        assert!(
            o.status.success(),
            "berth {args:?} failed ({}):\nstdout: {}\nstderr: {}\nruntime-svc log:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.runtime.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `berth ps -a` JSON entry of a container.
    pub async fn ps_entry(&self, name: &str) -> Option<serde_json::Value> {
        self.ok(&["ps", "-a", "--no-trunc", "--format", "json"])
            .await
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("ps json"))
            .find(|v| v["Names"] == name)
    }

    /// Runs a detached busybox httpd serving `body` on container port `port`; extra args go
    /// before the image. Returns the container ID.
    pub async fn httpd(&self, name: &str, port: u16, body: &str, extra: &[&str]) -> String {
        let script = format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p {port} -h /www");
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        let bb = self.busybox.clone();
        args.extend_from_slice(&[&bb, "sh", "-c", &script]);
        self.ok(&args).await.trim().to_string()
    }
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
