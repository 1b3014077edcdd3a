//! `berth` and its local stack, used as a person would: with nothing configured the CLI starts
//! the services it needs in the background (once, even with several CLIs at once), says so, and
//! reports services that cannot start; configured endpoints are never started; `system info`,
//! `df`, `prune`, `stop` and `version` do what they say.

use berth_proto::store::v1 as st;
use berth_tests::stack::bin_path;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A state directory for one test and the `berth` commands run against it. Dropping it stops
/// whatever the CLI started there.
struct Berth {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

impl Berth {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), exe: bin_path("berth") }
    }

    /// Like `new`, but `berth` runs from a directory of its own, next to the given fake
    /// service scripts (name, shell body) instead of the real binaries.
    fn with_fake_services(fakes: &[(&str, &str)]) -> Self {
        let mut b = Self::new();
        let bin = b.dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("berth");
        std::fs::copy(bin_path("berth"), &exe).unwrap();
        for (name, body) in fakes {
            let p = bin.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        b.exe = exe;
        b
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args)
            .env("BERTH_ROOT", self.root())
            .env("BERTH_CONFIG", self.dir.path().join("config.toml"))
            .env("BERTH_START_TIMEOUT", "60")
            .env_remove("BERTH_STORE")
            .env_remove("BERTH_REGISTRY")
            .env_remove("BERTH_RUNTIME")
            .env_remove("BERTH_CONTEXT")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        retry_busy(|| self.command(args).output())
    }

    fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = retry_busy(|| {
            self.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()
        });
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> (String, String) {
        let o = self.run(args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "berth {args:?} failed ({}):\nstdout:\n{out}\nstderr:\n{err}", o.status);
        (out, err)
    }

    fn info(&self) -> (Value, String) {
        let (out, err) = self.ok(&["system", "info", "--format", "json"]);
        (serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}")), err)
    }

    fn pid(&self, svc: &str) -> Option<i32> {
        std::fs::read_to_string(self.root().join(format!("run/{svc}.pid"))).ok()?.trim().parse().ok()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.run(&["system", "stop"]);
        // Anything still alive that the stack recorded (only our own binaries' pids).
        for svc in ["runtime", "registry", "store"] {
            if let Some(pid) = self.pid(svc) {
                if alive(pid) {
                    // SAFETY: killing a service this test's CLI started, by its recorded pid.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Runs `f` again while it fails with ETXTBSY: a freshly copied executable can be "busy" for a
/// moment when another test thread forks while the copy's file descriptor is still open.
fn retry_busy<T>(mut f: impl FnMut() -> std::io::Result<T>) -> T {
    for _ in 0..100 {
        match f() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(20)),
            r => return r.unwrap(),
        }
    }
    f().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

fn service<'a>(info: &'a Value, name: &str) -> &'a Value {
    info["services"].as_array().unwrap().iter().find(|s| s["service"] == name).unwrap()
}

/// registry-svc and runtime-svc are either up or reported down with a pointer to their log.
fn assert_up_or_explained(info: &Value, name: &str, root: &Path) {
    let s = service(info, name);
    if s["status"] == "SERVING" {
        return;
    }
    let short = name.trim_end_matches("-svc");
    let err = s["error"].as_str().unwrap_or_default();
    assert_eq!(s["status"], "DOWN", "{s}");
    assert!(err.contains(&format!("{}/logs/{short}.log", root.display())), "no log pointer: {s}");
}

#[test]
fn info_starts_the_local_stack_once_and_says_so() {
    let b = Berth::new();
    let (info, err) = b.info();
    assert!(err.contains(&format!("Starting the local Berth stack in {}", b.root().display())), "{err}");
    let store = service(&info, "store-svc");
    assert_eq!(store["status"], "SERVING", "{info}");
    assert_eq!(store["source"], "local stack");
    assert_eq!(store["endpoint"], format!("unix://{}/run/store.sock", b.root().display()));
    let pid = b.pid("store").expect("store.pid");
    assert_eq!(store["pid"], pid);
    assert!(alive(pid));
    // Detached: the service leads its own session, so the terminal's Ctrl-C does not reach it.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let session: i32 = stat.rsplit_once(')').unwrap().1.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(session, pid, "store-svc is not in a session of its own");
    assert!(b.root().join("logs/store.log").is_file());
    assert_up_or_explained(&info, "registry-svc", &b.root());
    assert_up_or_explained(&info, "runtime-svc", &b.root());

    // Second time: the running store is used, not started again.
    let (again, err2) = b.info();
    assert_eq!(service(&again, "store-svc")["pid"], pid);
    assert!(!err2.contains("store-svc is ready"), "store-svc started twice: {err2}");

    // The table form shows the same facts.
    let (table, _) = b.ok(&["system", "info"]);
    assert!(table.contains("store-svc:") && table.contains("SERVING") && table.contains(&pid.to_string()), "{table}");
    assert!(table.contains("registry-svc:") && table.contains("runtime-svc:"), "{table}");
}

#[test]
fn concurrent_clis_start_one_store() {
    let b = Berth::new();
    let children: Vec<_> = (0..4)
        .map(|_| retry_busy(|| b.command(&["system", "df"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()))
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "df failed: {out}\n{err}");
        assert!(out.contains("RECLAIMABLE"), "{out}");
    }
    let log = std::fs::read_to_string(b.root().join("logs/store.log")).unwrap();
    assert_eq!(log.matches("--- berth").count(), 1, "store-svc was started more than once:\n{log}");
    assert!(alive(b.pid("store").unwrap()));
}

#[test]
fn configured_endpoints_are_never_started() {
    let b = Berth::new();
    let elsewhere = format!("unix://{}/elsewhere.sock", b.dir.path().display());
    let o = b.run(&["--store", &elsewhere, "system", "df"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("not reachable") && err.contains(&elsewhere), "{err}");
    assert!(!b.root().join("run/store.pid").exists(), "a store was started for a configured endpoint");
    assert!(!b.root().join("logs").exists());

    // The same through the environment.
    let o = retry_busy(|| b.command(&["system", "df"]).env("BERTH_STORE", &elsewhere).output());
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o).1.contains("from env BERTH_STORE"), "{}", text(&o).1);
    assert!(!b.root().join("run/store.pid").exists());
}

#[test]
fn a_service_that_cannot_start_is_explained() {
    let b = Berth::with_fake_services(&[("store-svc", "echo 'store: disk on fire' >&2; exit 3")]);
    let o = b.run(&["system", "df"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("store-svc exited") && err.contains("exit status: 3"), "{err}");
    assert!(err.contains("disk on fire") && err.contains("logs/store.log"), "{err}");
    // `system info` shows it as down instead of failing.
    let (info, _) = b.info();
    assert_eq!(service(&info, "store-svc")["status"], "DOWN");
    assert!(service(&info, "store-svc")["error"].as_str().unwrap().contains("disk on fire"));
}

#[test]
fn a_service_that_never_gets_healthy_times_out_and_is_stopped() {
    let marker = "echo $$ > \"$(dirname \"$0\")/fake.pid\"; exec sleep 60";
    let b = Berth::with_fake_services(&[("store-svc", marker)]);
    let t = Instant::now();
    let o = retry_busy(|| b.command(&["system", "df"]).env("BERTH_START_TIMEOUT", "1").output());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(err.contains("did not become healthy within 1s") && err.contains("logs/store.log"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    let pid: i32 = std::fs::read_to_string(b.dir.path().join("bin/fake.pid")).unwrap().trim().parse().unwrap();
    assert!(!alive(pid), "the service that timed out was left running");
}

async fn write_blob(sock: &Path, data: Vec<u8>) -> String {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let ch = berth_common::endpoint::connect(&berth_common::Endpoint::unix(sock), None).await.unwrap();
    let mut c = st::content_client::ContentClient::new(ch);
    let req = st::WriteRequest {
        r#ref: "cli-test".into(),
        expected: digest.clone(),
        total: data.len() as i64,
        offset: 0,
        data: data.into(),
        commit: true,
        lease: String::new(),
    };
    c.write(tokio_stream::once(req)).await.unwrap();
    digest
}

#[tokio::test]
async fn df_and_prune_reclaim_unreferenced_blobs() {
    let b = Berth::new();
    let (df, _) = b.ok(&["system", "df"]);
    assert!(df.starts_with("TYPE"), "{df}");
    let digest = write_blob(&b.root().join("run/store.sock"), vec![7u8; 10_000]).await;

    let (df, _) = b.ok(&["system", "df"]);
    let blobs = df.lines().find(|l| l.starts_with("Blobs")).unwrap();
    let cols: Vec<&str> = blobs.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["1", "10kB", "10kB"], "{df}");

    let (dry, _) = b.ok(&["system", "prune", "--dry-run"]);
    assert!(dry.contains(&digest) && dry.contains("Total reclaimable space: 10kB"), "{dry}");
    // Declining the prompt deletes nothing.
    let o = b.run_with_stdin(&["system", "prune"], "n\n");
    let (out, _) = text(&o);
    assert!(o.status.success() && out.contains("Are you sure") && !out.contains(&digest), "{out}");
    let (df, _) = b.ok(&["system", "df"]);
    assert!(df.lines().any(|l| l.starts_with("Blobs") && l.split_whitespace().nth(1) == Some("1")), "{df}");

    let o = b.run_with_stdin(&["system", "prune"], "y\n");
    let (out, _) = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains(&format!("deleted: {digest}")) && out.contains("Total reclaimed space: 10kB"), "{out}");
    let (df, _) = b.ok(&["system", "df"]);
    assert!(df.lines().any(|l| l.starts_with("Blobs") && l.split_whitespace().nth(1) == Some("0")), "{df}");
    let (again, _) = b.ok(&["system", "prune", "-f"]);
    assert!(again.contains("Total reclaimed space: 0B"), "{again}");
}

#[test]
fn stop_stops_and_the_next_command_starts_again() {
    let b = Berth::new();
    b.ok(&["system", "df"]);
    let pid = b.pid("store").unwrap();
    let (out, _) = b.ok(&["system", "stop"]);
    assert!(out.contains(&format!("Stopped store-svc (pid {pid})")), "{out}");
    assert!(!alive(pid));
    assert!(!b.root().join("run/store.sock").exists(), "the socket outlived its service");
    let (out, _) = b.ok(&["system", "stop"]);
    assert!(out.contains("is not running"), "{out}");
    let (_, err) = b.ok(&["system", "df"]);
    assert!(err.contains("store-svc is ready"), "{err}");
    assert_ne!(b.pid("store").unwrap(), pid);
}

#[test]
fn version_does_not_start_anything() {
    let b = Berth::new();
    let (out, _) = b.ok(&["version"]);
    assert!(out.contains("Client:") && out.contains(berth_common::VERSION), "{out}");
    assert!(out.contains("not running"), "{out}");
    assert!(!b.root().exists(), "version created the state directory");
    let (v, _) = b.ok(&["--version"]);
    assert!(v.starts_with("berth "), "{v}");
}
