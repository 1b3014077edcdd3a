//! Starts the real Berth service binaries for integration tests and benchmarks.
//!
//! ```ignore
//! use berth_tests::stack::Service;
//!
//! // store-svc on a temp unix socket, state in a temp dir, polled until grpc.health.v1 = SERVING.
//! let store = Service::start("store-svc").await;
//! let channel = store.channel().await;             // tonic Channel over the unix socket
//!
//! // More control: extra args, env, TCP as well, a given root, SIGKILL on drop.
//! let registry = Service::builder("registry-svc")
//!     .arg("--store").arg(store.endpoint().to_string())
//!     .tcp(true)                                    // also listen on http://127.0.0.1:<free port>
//!     .env("BERTH_LOG", "debug")
//!     .start()
//!     .await;
//! let tcp = registry.tcp_endpoint().unwrap();      // berth_common::Endpoint
//!
//! // Crash tests: kill -9 and start again on the same socket, port and root.
//! let mut store = store;
//! store.kill9();
//! store.restart().await;
//! ```
//!
//! API (kept small and stable):
//! - [`Service::start`]`(name)` / [`Service::builder`]`(name)` → [`ServiceBuilder`] with
//!   `arg`, `args`, `env`, `tcp`, `root`, `sigkill_on_drop`, `timeout`, `start` (async; panics with
//!   the service's stderr if it does not become SERVING in time — tests want a loud failure).
//!   [`ServiceBuilder::try_start`] returns a `Result` instead.
//! - [`Service`]: `endpoint()` (unix), `tcp_endpoint()`, `channel()`, `tcp_channel()`, `pid()`,
//!   `root()`, `dir()`, `log()` (stderr so far), `kill9()`, `terminate()` (SIGTERM + wait),
//!   `restart()`, `wait_ready()`.
//! - [`bin_path`]`(name)`: where a workspace binary is (next to the test executable's profile dir;
//!   override with `BERTH_BIN_DIR`).
//!
//! Each service gets its own temp dir holding `<name>.sock`, `root/` (passed as `--root`, unless
//! a root is given) and `<name>.log` (its stderr and stdout). The process is killed by PID when the
//! [`Service`] is dropped: SIGTERM and up to 3 s to drain, then SIGKILL (or SIGKILL at once with
//! `sigkill_on_drop(true)`). Only processes started here are ever signalled.

use anyhow::{bail, Context, Result};
use berth_common::Endpoint;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

/// Directory that holds the workspace's binaries for the profile this test was built with.
///
/// `current_exe()` of an integration test is `target/<profile>/deps/<test>-<hash>`; of a binary
/// (e.g. a benchmark) it is `target/<profile>/<bin>`. `BERTH_BIN_DIR` overrides.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe has a parent").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary, e.g. `bin_path("store-svc")`. Panics with instructions when it
/// has not been built.
pub fn bin_path(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    if !p.is_file() {
        panic!(
            "binary {name} not found at {}: run `cargo build --workspace --bins` (same profile and \
             CARGO_TARGET_DIR as the tests) first, or set BERTH_BIN_DIR",
            p.display()
        );
    }
    p
}

/// Picks a free TCP port on 127.0.0.1 (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// How to start a service; see the module docs.
#[derive(Debug)]
pub struct ServiceBuilder {
    name: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    tcp: bool,
    root: Option<PathBuf>,
    sigkill_on_drop: bool,
    timeout: Duration,
}

impl ServiceBuilder {
    /// Appends one argument (after `--listen`/`--root`, which the harness passes).
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, a: I) -> Self {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the service.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Also listen on `http://127.0.0.1:<free port>`.
    pub fn tcp(mut self, on: bool) -> Self {
        self.tcp = on;
        self
    }

    /// Use this state directory as `--root` instead of a fresh one.
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.root = Some(dir.into());
        self
    }

    /// Kill with SIGKILL (no drain) when dropped.
    pub fn sigkill_on_drop(mut self, on: bool) -> Self {
        self.sigkill_on_drop = on;
        self
    }

    /// How long to wait for SERVING (default 30 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Starts the service and waits until it is SERVING; panics (with its log) otherwise.
    pub async fn start(self) -> Service {
        let name = self.name.clone();
        match self.try_start().await {
            Ok(s) => s,
            Err(e) => panic!("starting {name}: {e:#}"),
        }
    }

    /// Starts the service and waits until it is SERVING.
    pub async fn try_start(self) -> Result<Service> {
        let bin = bin_path(&self.name);
        let dir = tempfile::Builder::new().prefix("berth-test-").tempdir().context("creating temp dir")?;
        let socket = dir.path().join(format!("{}.sock", short_name(&self.name)));
        let root = self.root.clone().unwrap_or_else(|| dir.path().join("root"));
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let tcp_port = self.tcp.then(free_port);
        let log = dir.path().join(format!("{}.log", self.name));
        let mut svc = Service {
            name: self.name,
            bin,
            args: self.args,
            envs: self.envs,
            socket,
            tcp_port,
            root,
            log,
            sigkill_on_drop: self.sigkill_on_drop,
            timeout: self.timeout,
            child: None,
            dir,
        };
        svc.spawn()?;
        svc.wait_ready().await?;
        Ok(svc)
    }
}

fn short_name(name: &str) -> &str {
    name.strip_suffix("-svc").unwrap_or(name)
}

/// A running service binary; killed by PID on drop.
#[derive(Debug)]
pub struct Service {
    name: String,
    bin: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    socket: PathBuf,
    tcp_port: Option<u16>,
    root: PathBuf,
    log: PathBuf,
    sigkill_on_drop: bool,
    timeout: Duration,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Service {
    /// A builder for `name` (`store-svc`, `registry-svc`, `runtime-svc`).
    pub fn builder(name: &str) -> ServiceBuilder {
        ServiceBuilder {
            name: name.to_string(),
            args: Vec::new(),
            envs: Vec::new(),
            tcp: false,
            root: None,
            sigkill_on_drop: false,
            timeout: Duration::from_secs(30),
        }
    }

    /// Starts `name` with defaults (unix socket only, fresh root) and waits until SERVING.
    pub async fn start(name: &str) -> Service {
        Self::builder(name).start().await
    }

    /// The unix socket endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.socket.clone())
    }

    /// The TCP endpoint, if started with `tcp(true)`.
    pub fn tcp_endpoint(&self) -> Option<Endpoint> {
        self.tcp_port.map(|p| Endpoint::Tcp { authority: format!("127.0.0.1:{p}"), tls: false })
    }

    /// A connected channel over the unix socket.
    pub async fn channel(&self) -> Channel {
        berth_common::endpoint::connect(&self.endpoint(), None)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e:#}\n{}", self.name, self.log_tail()))
    }

    /// A connected channel over TCP (panics if the service has no TCP listener).
    pub async fn tcp_channel(&self) -> Channel {
        let ep = self.tcp_endpoint().expect("service was started without tcp(true)");
        berth_common::endpoint::connect(&ep, None)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e:#}\n{}", self.name, self.log_tail()))
    }

    /// PID of the running process (None after `kill9`/`terminate`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The service's `--root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The service's temp dir (socket, log, default root).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the service wrote to stderr/stdout so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let start = log.len().saturating_sub(4000);
        let start = (start..log.len()).find(|i| log.is_char_boundary(*i)).unwrap_or(log.len());
        format!("--- {} log ({}) ---\n{}", self.name, self.log.display(), &log[start..])
    }

    fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--listen").arg(format!("unix://{}", self.socket.display()));
        if let Some(p) = self.tcp_port {
            cmd.arg("--listen").arg(format!("http://127.0.0.1:{p}"));
        }
        cmd.arg("--root").arg(&self.root);
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let child = cmd.spawn().with_context(|| format!("spawning {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls grpc.health.v1 until SERVING; errors (with the log) on timeout or early exit.
    pub async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let ep = self.endpoint();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("{} exited before becoming ready ({status})\n{}", self.name, self.log_tail());
                }
            } else {
                bail!("{} is not running", self.name);
            }
            if let Ok(ch) = berth_common::endpoint::connect(&ep, None).await {
                let r = HealthClient::new(ch).check(HealthCheckRequest { service: String::new() }).await;
                if let Ok(r) = r {
                    if r.into_inner().status == ServingStatus::Serving as i32 {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("{} did not become SERVING within {:?}\n{}", self.name, self.timeout, self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL the process and reap it (a crash).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, wait up to 10 s for it to drain and exit, then SIGKILL. Returns the exit status
    /// when it exited on its own.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: plain kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the service again with the same arguments, socket, port and root (after `kill9`
    /// or `terminate`; kills a running one first) and waits until SERVING.
    pub async fn restart(&mut self) {
        self.kill9();
        if let Err(e) = self.spawn() {
            panic!("restarting {}: {e:#}", self.name);
        }
        if let Err(e) = self.wait_ready().await {
            panic!("restarting {}: {e:#}", self.name);
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.sigkill_on_drop {
            self.kill9();
        } else if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_dir_strips_deps() {
        let d = bin_dir();
        assert_ne!(d.file_name().unwrap(), "deps");
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port(), 0);
    }
}
