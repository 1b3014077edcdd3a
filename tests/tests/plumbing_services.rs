//! Every real service binary obeys the shared plumbing, checked from the outside: it becomes
//! SERVING, says who it is through ServiceInfo, lists its own services (and only those) through
//! reflection, exits cleanly on SIGTERM removing its socket, and refuses plain http on a
//! non-loopback address.

use berth_common::probe::{self, Health};
use berth_tests::stack::{bin_path, free_port, Service};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `name` (with a store-svc for the services that need one) and checks the plumbing.
async fn check(name: &str, own: &[&str], foreign: &[&str]) {
    let store = Service::start("store-svc").await;
    if name == "store-svc" {
        return check_running(name, store, own, foreign).await;
    }
    let svc = Service::builder(name).arg("--store").arg(store.endpoint().to_string()).start().await;
    check_running(name, svc, own, foreign).await;
    drop(store);
}

async fn check_running(name: &str, mut svc: Service, own: &[&str], foreign: &[&str]) {
    let ch = svc.channel().await;
    assert_eq!(probe::health(ch.clone(), "").await.unwrap(), Health::Serving);
    for s in own {
        assert_eq!(probe::health(ch.clone(), s).await.unwrap(), Health::Serving, "health of {s}");
    }
    let info = probe::info(ch.clone()).await.unwrap();
    assert_eq!(info.service, name);
    assert_eq!(info.version, berth_common::VERSION);
    assert_eq!(Some(info.pid), svc.pid());

    let listed = probe::list_services(ch).await.unwrap();
    for s in own.iter().chain(&["grpc.health.v1.Health", "berth.types.v1.ServiceInfo"]) {
        assert!(listed.iter().any(|l| l == s), "{name}: reflection does not list {s}: {listed:?}");
    }
    for s in foreign {
        assert!(!listed.iter().any(|l| l == s), "{name}: reflection lists {s}, which it does not serve");
    }

    // terminate() blocks this thread; the multi-thread runtime keeps our client connections
    // answering the server's graceful GOAWAY/PING while it drains.
    let socket = svc.endpoint().unix_path().unwrap().to_path_buf();
    let t = Instant::now();
    let status = svc.terminate().expect("the service did not exit after SIGTERM");
    assert!(status.success(), "{name} exited with {status} after SIGTERM:\n{}", svc.log());
    assert!(t.elapsed() < Duration::from_secs(15), "{name} took {:?} to stop", t.elapsed());
    assert!(!socket.exists(), "{name} left its socket behind");
}

/// `name --listen http://0.0.0.0:PORT` must refuse to start, saying why.
fn refuses_plain_http_off_loopback(name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = Command::new(bin_path(name));
    cmd.arg("--listen")
        .arg(format!("http://0.0.0.0:{port}"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if name != "store-svc" {
        cmd.arg("--store").arg(format!("unix://{}/store.sock", dir.path().display()));
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{name} served plain http on 0.0.0.0:{port} instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{name} exited 0 on an insecure listener");
    assert!(err.contains("refusing to serve plain http"), "{name} did not say why:\n{err}");
}

const STORE: &[&str] = &[
    "berth.store.v1.Content",
    "berth.store.v1.Images",
    "berth.store.v1.BuildCache",
    "berth.store.v1.Leases",
    "berth.store.v1.Gc",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_svc_plumbing() {
    check("store-svc", STORE, &["berth.registry.v1.Registry", "berth.runtime.v1.Runtime"]).await;
    refuses_plain_http_off_loopback("store-svc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_svc_plumbing() {
    check("registry-svc", &["berth.registry.v1.Registry"], &["berth.store.v1.Content", "berth.runtime.v1.Runtime"])
        .await;
    refuses_plain_http_off_loopback("registry-svc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_svc_plumbing() {
    check("runtime-svc", &["berth.runtime.v1.Runtime"], &["berth.store.v1.Content", "berth.registry.v1.Registry"])
        .await;
    refuses_plain_http_off_loopback("runtime-svc");
}
