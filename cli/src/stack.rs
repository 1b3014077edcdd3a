//! The local stack: store-svc, registry-svc and runtime-svc on unix sockets under one state
//! directory, started in the background on first use (the way sccache starts its server).
//!
//! Layout under the root (`$BERTH_ROOT`, default `/var/lib/berth`):
//! `run/<svc>.sock` (sockets), `run/<svc>.pid` (pid files), `run/start.lock` (held while a CLI
//! starts services, so two CLIs never start the same one twice), `<svc>/` (each service's state),
//! `logs/<svc>.log` (each service's stdout and stderr), `config/<svc>.toml` (optional config file
//! passed to the service).
//!
//! Services are found next to the `berth` executable, then in `PATH`. They run in their own
//! session (setsid), detached from the terminal, and outlive the CLI that started them.

use anyhow::{anyhow, bail, Context as _, Result};
use berth_common::probe::{self, Health};
use berth_common::Endpoint;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// The three services of Berth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// The content store.
    Store,
    /// The registry client.
    Registry,
    /// The container runtime.
    Runtime,
}

impl Service {
    /// All services, in start order.
    pub const ALL: [Service; 3] = [Service::Store, Service::Registry, Service::Runtime];

    /// Short name: "store", "registry", "runtime" (socket, log and state names).
    pub fn short(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Registry => "registry",
            Self::Runtime => "runtime",
        }
    }

    /// Binary name: "store-svc" etc.
    pub fn binary(self) -> &'static str {
        match self {
            Self::Store => "store-svc",
            Self::Registry => "registry-svc",
            Self::Runtime => "runtime-svc",
        }
    }

    /// The services this one needs running first.
    fn needs(self) -> &'static [Service] {
        match self {
            Self::Store => &[],
            Self::Registry | Self::Runtime => &[Service::Store],
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.binary())
    }
}

/// The default state directory of the local stack.
pub const DEFAULT_ROOT: &str = "/var/lib/berth";

/// Set once this process said "Starting the local Berth stack", so it says it once.
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// A local stack rooted at one state directory.
#[derive(Clone, Debug)]
pub struct LocalStack {
    root: PathBuf,
}

impl LocalStack {
    /// The stack under `root` (nothing is created until a service is started).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The state directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/run/<svc>.sock`.
    pub fn socket(&self, svc: Service) -> PathBuf {
        self.root.join("run").join(format!("{}.sock", svc.short()))
    }

    /// `unix://<root>/run/<svc>.sock`.
    pub fn endpoint(&self, svc: Service) -> Endpoint {
        Endpoint::unix(self.socket(svc))
    }

    /// `<root>/logs/<svc>.log`.
    pub fn log(&self, svc: Service) -> PathBuf {
        self.root.join("logs").join(format!("{}.log", svc.short()))
    }

    /// `<root>/config/<svc>.toml`: passed as `--config` when it exists (flags still win for
    /// `--listen`, `--root` and `--store`).
    pub fn config(&self, svc: Service) -> PathBuf {
        self.root.join("config").join(format!("{}.toml", svc.short()))
    }

    /// `<root>/run/<svc>.pid`.
    pub fn pid_file(&self, svc: Service) -> PathBuf {
        self.root.join("run").join(format!("{}.pid", svc.short()))
    }

    /// The pid recorded for `svc` when that process is still alive.
    pub fn running_pid(&self, svc: Service) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.pid_file(svc)).ok()?.trim().parse().ok()?;
        // SAFETY: kill with signal 0 only checks that the process exists.
        (pid > 0 && unsafe { libc::kill(pid, 0) } == 0).then_some(pid)
    }

    /// A channel to `svc` when it is up and SERVING; `None` otherwise.
    pub async fn probe(&self, svc: Service) -> Option<Channel> {
        let ch = berth_common::endpoint::connect(&self.endpoint(svc), None).await.ok()?;
        matches!(probe::health(ch.clone(), "").await, Ok(Health::Serving)).then_some(ch)
    }

    /// A channel to `svc`, starting it (and what it needs) in the background when it is not
    /// running. Says so on stderr.
    pub async fn ensure(&self, svc: Service) -> Result<Channel> {
        if let Some(ch) = self.probe(svc).await {
            return Ok(ch);
        }
        let mut order: Vec<Service> = svc.needs().to_vec();
        order.push(svc);
        let _lock = self.lock().await?;
        for s in order {
            // Another CLI may have started it while we waited for the lock.
            if self.probe(s).await.is_some() {
                continue;
            }
            self.start(s).await?;
        }
        self.probe(svc)
            .await
            .ok_or_else(|| anyhow!("{svc} stopped right after it became ready; see {}", self.log(svc).display()))
    }

    /// Stops the services of this stack (SIGTERM, then waits for them to drain and exit).
    /// Returns what was stopped, with pids.
    pub async fn stop(&self, timeout: Duration) -> Result<Vec<(Service, i32)>> {
        let _lock = self.lock().await?;
        let mut stopped = Vec::new();
        // Dependents first, the store last.
        for svc in Service::ALL.iter().rev().copied() {
            let Some(pid) = self.running_pid(svc) else { continue };
            if !is_binary_of(pid, svc) {
                continue;
            }
            // SAFETY: sending SIGTERM to a pid we recorded and checked is the stack's service.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + timeout;
            while unsafe { libc::kill(pid, 0) } == 0 && !is_zombie(pid) {
                if Instant::now() > deadline {
                    bail!("{svc} (pid {pid}) did not stop within {timeout:?} after SIGTERM");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = std::fs::remove_file(self.pid_file(svc));
            stopped.push((svc, pid));
        }
        Ok(stopped)
    }

    /// Holds `<root>/run/start.lock` (flock) until dropped.
    async fn lock(&self) -> Result<File> {
        let run = self.root.join("run");
        std::fs::create_dir_all(&run).map_err(|e| {
            anyhow!(
                "cannot create the local stack's state directory {}: {e}; run as root or set BERTH_ROOT to a directory you own",
                self.root.display()
            )
        })?;
        let path = run.join("start.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(file);
            }
            if Instant::now() > deadline {
                bail!("another berth has been starting the local stack for 2 minutes (lock {})", path.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts `svc` detached and waits until it is SERVING. Caller holds the lock.
    async fn start(&self, svc: Service) -> Result<()> {
        if !ANNOUNCED.swap(true, Ordering::Relaxed) {
            eprintln!("Starting the local Berth stack in {} ...", self.root.display());
        }
        // A previous start may still be coming up (e.g. its CLI was interrupted): wait for it.
        if let Some(pid) = self.running_pid(svc).filter(|p| is_binary_of(*p, svc)) {
            return self.wait_healthy(svc, None, pid).await;
        }
        let bin = find_binary(svc.binary())?;
        for dir in [self.root.join("logs"), self.root.join(svc.short())] {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log_path = self.log(svc);
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let _ = writeln!(log, "--- berth {}: starting {} ---", berth_common::VERSION, bin.display());
        let mut cmd = Command::new(&bin);
        cmd.arg("--listen").arg(self.endpoint(svc).to_string()).arg("--root").arg(self.root.join(svc.short()));
        if svc != Service::Store {
            cmd.arg("--store").arg(self.endpoint(Service::Store).to_string());
        }
        let config = self.config(svc);
        if config.is_file() {
            cmd.arg("--config").arg(config);
        }
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        // SAFETY: setsid is async-signal-safe; it detaches the service from our terminal and
        // process group so that Ctrl-C on this CLI does not reach it.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        // ETXTBSY: the binary was just written (installed or copied) and a descriptor to it is
        // still open somewhere for a moment; try again briefly.
        let mut tries = 0;
        let child = loop {
            match cmd.spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => break r.with_context(|| format!("starting {}", bin.display()))?,
            }
        };
        let pid = child.id() as i32;
        std::fs::write(self.pid_file(svc), format!("{pid}\n"))
            .with_context(|| format!("writing {}", self.pid_file(svc).display()))?;
        self.wait_healthy(svc, Some(child), pid).await?;
        eprintln!("  {svc} is ready (pid {pid}, log {})", log_path.display());
        Ok(())
    }

    async fn wait_healthy(&self, svc: Service, mut child: Option<Child>, pid: i32) -> Result<()> {
        let timeout = start_timeout();
        let deadline = Instant::now() + timeout;
        let log = self.log(svc);
        loop {
            if let Some(c) = child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    let _ = std::fs::remove_file(self.pid_file(svc));
                    bail!("{svc} exited ({status}) while starting; {}", log_hint(&log));
                }
            } else if unsafe { libc::kill(pid, 0) } != 0 {
                bail!("{svc} (pid {pid}) exited while starting; {}", log_hint(&log));
            }
            if self.probe(svc).await.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                if let Some(mut c) = child {
                    let _ = c.kill();
                    let _ = c.wait();
                    let _ = std::fs::remove_file(self.pid_file(svc));
                }
                bail!(
                    "{svc} did not become healthy within {}s (set BERTH_START_TIMEOUT to wait longer); {}",
                    timeout.as_secs(),
                    log_hint(&log)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn start_timeout() -> Duration {
    let secs = std::env::var("BERTH_START_TIMEOUT").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(30);
    Duration::from_secs(secs.max(1))
}

/// "see <log>; it ends with: ..." with the last lines of the log.
fn log_hint(log: &Path) -> String {
    let tail = tail(log, 10).unwrap_or_default();
    if tail.trim().is_empty() {
        format!("see {}", log.display())
    } else {
        format!("see {}; it ends with:\n{}", log.display(), crate::output::indent(tail.trim_end(), 2).trim_end())
    }
}

fn tail(path: &Path, lines: usize) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(8192)))?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    Ok(all[all.len().saturating_sub(lines)..].join("\n"))
}

/// True when `pid` runs the binary of `svc` (guards against pid reuse).
fn is_binary_of(pid: i32, svc: Service) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.file_name().is_some_and(|n| n.to_string_lossy().trim_end_matches(" (deleted)") == svc.binary()))
        .unwrap_or(false)
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// Finds a service binary next to the running `berth`, then in `PATH`.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the berth executable")?;
    if let Some(dir) = exe.parent() {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "cannot find {name} next to {} or in PATH; build it (cargo build --workspace --bins) or install it beside berth",
        exe.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_under_root() {
        let s = LocalStack::new("/x");
        assert_eq!(s.socket(Service::Store), Path::new("/x/run/store.sock"));
        assert_eq!(s.endpoint(Service::Registry).to_string(), "unix:///x/run/registry.sock");
        assert_eq!(s.log(Service::Runtime), Path::new("/x/logs/runtime.log"));
        assert_eq!(s.pid_file(Service::Store), Path::new("/x/run/store.pid"));
    }

    #[test]
    fn log_tail_shows_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        std::fs::write(&p, (0..30).map(|i| format!("line {i}\n")).collect::<String>()).unwrap();
        let h = log_hint(&p);
        assert!(h.contains("line 29") && h.contains("line 20") && !h.contains("line 19"), "{h}");
        assert!(log_hint(&dir.path().join("none")).starts_with("see "));
    }

    #[tokio::test]
    async fn missing_binary_is_explained() {
        let e = find_binary("no-such-berth-service").unwrap_err().to_string();
        assert!(e.contains("no-such-berth-service") && e.contains("PATH"), "{e}");
    }
}
