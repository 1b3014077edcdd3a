//! Shared setup of the `run_*` tests (included with `mod run_env;`): a local distribution
//! registry holding the busybox fixture, store-svc, registry-svc and runtime-svc on temp
//! sockets, and a way to run the `berth` CLI against them.
#![allow(dead_code)]

use berth_proto::registry::v1 as rpb;
use berth_tests::fixtures::Fixture;
use berth_tests::registry::Registry;
use berth_tests::stack::{bin_path, Service};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// True when these tests can run here (root); prints why not otherwise. Whether the OCI
/// runtime is there is [`Runtime::available`]'s business.
pub fn can_run() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the run tests need root (namespaces, mounts, cgroups)");
        return false;
    }
    true
}

/// The OCI runtime runtime-svc is configured with: the lifecycle tests run once per runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// `berth-runc` (libcontainer), runtime-svc's default.
    Builtin,
    /// `/usr/sbin/runc`.
    Runc,
}

impl Runtime {
    /// True when this runtime's binary is here; prints why not otherwise.
    pub fn available(self) -> bool {
        let bin = match self {
            Runtime::Builtin => bin_path("berth-runc"),
            Runtime::Runc => std::path::PathBuf::from("/usr/sbin/runc"),
        };
        if !bin.exists() {
            eprintln!("SKIPPED: {} is not there (cargo build --workspace --bins)", bin.display());
        }
        bin.exists()
    }
}

/// Defines, for each named `async fn NAME(rt: Runtime)` scenario, one test per runtime:
/// `builtin::NAME` and `runc::NAME`.
#[macro_export]
macro_rules! per_runtime {
    ($($name:ident),* $(,)?) => {
        mod builtin {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                if super::run_env::Runtime::Builtin.available() {
                    super::$name(super::run_env::Runtime::Builtin).await
                }
            })*
        }
        mod runc {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                if super::run_env::Runtime::Runc.available() {
                    super::$name(super::run_env::Runtime::Runc).await
                }
            })*
        }
    };
}

/// One test's services.
pub struct Env {
    pub registry: Registry,
    pub store: Service,
    pub registry_svc: Service,
    pub runtime: Service,
    /// `127.0.0.1:PORT/busybox:latest`.
    pub busybox: String,
    pub home: tempfile::TempDir,
}

impl Env {
    /// Starts everything; busybox pushed to the registry but not pulled.
    pub async fn start() -> Env {
        Env::start_on(Runtime::Builtin).await
    }

    /// Starts everything with runtime-svc using `rt`; busybox pushed but not pulled.
    pub async fn start_on(rt: Runtime) -> Env {
        Env::start_on_with(rt, &[]).await
    }

    /// As [`Env::start_on`], with these environment variables for runtime-svc (and so for the
    /// shims it spawns).
    pub async fn start_on_with(rt: Runtime, runtime_env: &[(&str, &str)]) -> Env {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("runtime-svc.toml");
        let kind = match rt {
            Runtime::Builtin => "builtin",
            Runtime::Runc => "runc",
        };
        std::fs::write(&config, format!("runtime = \"{kind}\"\n")).unwrap();
        let registry = Registry::start().expect("starting docker-registry");
        let busybox = registry.push_fixture(Fixture::Busybox, "busybox").expect("pushing busybox");
        let store = Service::start("store-svc").await;
        let registry_svc =
            Service::builder("registry-svc").arg("--store").arg(store.endpoint().to_string()).start().await;
        let mut runtime = Service::builder("runtime-svc")
            .arg("--store")
            .arg(store.endpoint().to_string())
            .arg("--config")
            .arg(config.to_string_lossy())
            .sigkill_on_drop(false);
        for (k, v) in runtime_env {
            runtime = runtime.env(*k, *v);
        }
        let runtime = runtime.start().await;
        Env { registry, store, registry_svc, runtime, busybox, home }
    }

    /// Starts everything and pulls busybox into the store.
    pub async fn with_busybox() -> Env {
        Env::with_busybox_on(Runtime::Builtin).await
    }

    /// Starts everything with runtime-svc using `rt` and pulls busybox into the store.
    pub async fn with_busybox_on(rt: Runtime) -> Env {
        let env = Env::start_on(rt).await;
        env.pull(&env.busybox.clone()).await;
        env
    }

    /// Pulls through registry-svc.
    pub async fn pull(&self, reference: &str) {
        let mut c = rpb::registry_client::RegistryClient::new(self.registry_svc.channel().await);
        let mut s = c
            .pull(rpb::PullRequest { reference: reference.to_string(), platform: None })
            .await
            .expect("pull")
            .into_inner();
        while let Some(_ev) = s.message().await.expect("pull stream") {}
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

    /// Runs `berth ARGS` to completion (in a blocking thread).
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

    /// `berth ps -a --no-trunc --format json`, parsed.
    pub async fn ps_all(&self) -> Vec<serde_json::Value> {
        self.ok(&["ps", "-a", "--no-trunc", "--format", "json"])
            .await
            .lines()
            .map(|l| serde_json::from_str(l).expect("ps json line"))
            .collect()
    }

    /// The ps entry of a container by name.
    pub async fn ps_entry(&self, name: &str) -> Option<serde_json::Value> {
        self.ps_all().await.into_iter().find(|v| v["Names"] == name)
    }

    /// Polls `f` until true or the timeout passes.
    pub async fn eventually<F, Fut>(&self, what: &str, timeout: Duration, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if f().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}\nruntime-svc log:\n{}", self.runtime.log());
    }
}

/// Processes whose command line mentions `needle` (to check nothing is left behind).
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = vec![];
    for de in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = de.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&c).contains(needle) {
                out.push(pid);
            }
        }
    }
    out
}

/// Mounts whose mount point mentions `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}
