//! The serving plumbing every Berth service shares (`berth_common::server`), checked from the
//! outside as a client sees it: health is NOT_SERVING until the service is ready, reflection lists
//! what is served, SIGTERM lets an in-flight streaming call finish and then the process exits,
//! plain http on a non-loopback address is refused, and https with client certificates works.
//!
//! The SIGTERM checks need a process of their own: the test re-runs this test executable with
//! `--exact sigterm_child_server` and an environment variable that turns that "test" into a
//! server (it returns at once in a normal run).

use berth_common::probe::{self, Health};
use berth_common::server::{serve, serve_until, ServeOptions, ServerTls, ServiceMeta};
use berth_common::{ClientTls, Endpoint};
use berth_proto::store::v1 as st;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

const CHILD_SOCK: &str = "BERTH_PLUMBING_CHILD_SOCK";
const CHILD_DRAIN_MS: &str = "BERTH_PLUMBING_CHILD_DRAIN_MS";

/// A Content service whose `Read` streams `n` one-kilobyte chunks (n = `length`), one every
/// `offset` milliseconds: a slow streaming call under the test's control. Everything else is
/// unimplemented.
struct SlowContent;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[allow(clippy::result_large_err)] // the shape tonic's traits ask for
fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not part of this test service"))
}

#[tonic::async_trait]
impl st::content_server::Content for SlowContent {
    /// Answers NotFound with the trace context the handler runs in, for the trace test.
    async fn stat(&self, _: Request<st::StatRequest>) -> Result<Response<st::StatResponse>, Status> {
        let ctx = berth_common::telemetry::current_trace().map(|c| c.to_string()).unwrap_or_default();
        Err(Status::not_found(format!("trace={ctx}")))
    }
    async fn stat_many(&self, _: Request<st::StatManyRequest>) -> Result<Response<st::StatManyResponse>, Status> {
        unimplemented()
    }
    type ReadStream = BoxStream<st::ReadResponse>;
    async fn read(&self, req: Request<st::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        let r = req.into_inner();
        let (n, every) = (r.length.max(0), Duration::from_millis(r.offset.max(0) as u64));
        let s = tokio_stream::iter(0..n).then(move |i| async move {
            tokio::time::sleep(every).await;
            Ok(st::ReadResponse { offset: i * 1024, data: vec![i as u8; 1024].into() })
        });
        Ok(Response::new(Box::pin(s)))
    }
    async fn write(
        &self,
        _: Request<tonic::Streaming<st::WriteRequest>>,
    ) -> Result<Response<st::WriteResponse>, Status> {
        unimplemented()
    }
    async fn write_status(
        &self,
        _: Request<st::WriteStatusRequest>,
    ) -> Result<Response<st::WriteStatusResponse>, Status> {
        unimplemented()
    }
    async fn list_writes(&self, _: Request<st::ListWritesRequest>) -> Result<Response<st::ListWritesResponse>, Status> {
        unimplemented()
    }
    async fn abort_write(&self, _: Request<st::AbortWriteRequest>) -> Result<Response<st::AbortWriteResponse>, Status> {
        unimplemented()
    }
    async fn delete(&self, _: Request<st::DeleteRequest>) -> Result<Response<st::DeleteResponse>, Status> {
        unimplemented()
    }
    type ListStream = BoxStream<st::ListResponse>;
    async fn list(&self, _: Request<st::ListRequest>) -> Result<Response<Self::ListStream>, Status> {
        unimplemented()
    }
}

fn meta() -> ServiceMeta {
    ServiceMeta {
        name: "plumbing-test",
        grpc_services: vec!["berth.store.v1.Content"],
        details: BTreeMap::from([("purpose".to_string(), "test".to_string())]),
    }
}

fn routes() -> tonic::service::Routes {
    tonic::service::Routes::new(st::content_server::ContentServer::new(SlowContent))
}

fn opts(ep: Endpoint) -> ServeOptions {
    let mut o = ServeOptions::new(ep);
    o.drain_timeout = Duration::from_secs(30);
    o
}

/// Connects to `ep` until it answers health, within 10 s.
async fn wait_for(ep: &Endpoint, tls: Option<&ClientTls>) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(ch) = berth_common::endpoint::connect(ep, tls).await {
            if probe::health(ch.clone(), "").await.is_ok() {
                return ch;
            }
        }
        assert!(Instant::now() < deadline, "{ep} did not come up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn health_is_not_serving_until_ready() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::unix(dir.path().join("s.sock"));
    let (ready_tx, ready_rx) = oneshot::channel::<()>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(
        opts(ep.clone()),
        meta(),
        routes(),
        async move {
            let _ = ready_rx.await;
            Ok(())
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    let ch = wait_for(&ep, None).await;
    // Up and answering, but not ready: both the server and its service say NOT_SERVING, and
    // keep saying it.
    for _ in 0..5 {
        assert_eq!(probe::health(ch.clone(), "").await.unwrap(), Health::NotServing);
        assert_eq!(probe::health(ch.clone(), "berth.store.v1.Content").await.unwrap(), Health::NotServing);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ready_tx.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while probe::health(ch.clone(), "").await.unwrap() != Health::Serving {
        assert!(Instant::now() < deadline, "health never turned SERVING after ready");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(probe::health(ch.clone(), "berth.store.v1.Content").await.unwrap(), Health::Serving);
    let info = probe::info(ch.clone()).await.unwrap();
    assert_eq!(info.service, "plumbing-test");
    assert_eq!(info.pid, std::process::id());
    assert_eq!(info.details.get("purpose").map(String::as_str), Some("test"));

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert!(!dir.path().join("s.sock").exists(), "the socket file is removed after a clean stop");
}

#[tokio::test]
async fn a_service_that_fails_to_get_ready_stops_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::unix(dir.path().join("s.sock"));
    let r =
        serve_until(opts(ep), meta(), routes(), async { anyhow::bail!("disk on fire") }, std::future::pending()).await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("disk on fire") && e.contains("ready"), "{e}");
}

#[tokio::test]
async fn reflection_lists_what_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::unix(dir.path().join("s.sock"));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(opts(ep.clone()), meta(), routes(), async { Ok(()) }, async move {
        let _ = stop_rx.await;
    }));
    let ch = wait_for(&ep, None).await;
    let services = probe::list_services(ch).await.unwrap();
    for want in [
        "berth.store.v1.Content",
        "grpc.health.v1.Health",
        "berth.types.v1.ServiceInfo",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(services.iter().any(|s| s == want), "{want} missing from {services:?}");
    }
    // Only what this server offers: not the other services of the same proto package or crate.
    for unwanted in ["berth.store.v1.Images", "berth.runtime.v1.Runtime"] {
        assert!(!services.iter().any(|s| s == unwanted), "{unwanted} listed but not served: {services:?}");
    }
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn plain_http_is_refused_off_loopback() {
    let port = free_port();
    let ep: Endpoint = format!("http://0.0.0.0:{port}").parse().unwrap();
    let r = serve_until(opts(ep), meta(), routes(), async { Ok(()) }, std::future::pending()).await;
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("refusing to serve plain http") && e.contains("https://"), "{e}");

    // https without certificates is an error too, not a silent downgrade.
    let ep: Endpoint = format!("https://127.0.0.1:{port}").parse().unwrap();
    let r = serve_until(opts(ep), meta(), routes(), async { Ok(()) }, std::future::pending()).await;
    assert!(format!("{:#}", r.unwrap_err()).contains("tls"));

    // Loopback plain http is fine and reachable.
    let ep: Endpoint = format!("http://127.0.0.1:{}", free_port()).parse().unwrap();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(opts(ep.clone()), meta(), routes(), async { Ok(()) }, async move {
        let _ = stop_rx.await;
    }));
    let ch = wait_for(&ep, None).await;
    assert_eq!(probe::info(ch).await.unwrap().service, "plumbing-test");
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn https_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    if !berth_tests::certs::make_certs(dir.path(), "server") {
        eprintln!("SKIPPED: openssl is not installed (apt-get install openssl)");
        return;
    }
    let d = dir.path();
    let ep: Endpoint = format!("https://127.0.0.1:{}", free_port()).parse().unwrap();
    let mut o = opts(ep.clone());
    o.tls = Some(ServerTls {
        cert: d.join("server.pem"),
        key: d.join("server-key.pem"),
        client_ca: Some(d.join("ca.pem")),
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(o, meta(), routes(), async { Ok(()) }, async move {
        let _ = stop_rx.await;
    }));
    let with_cert = ClientTls {
        ca: Some(d.join("ca.pem")),
        cert: Some(d.join("client.pem")),
        key: Some(d.join("client-key.pem")),
        domain: None,
    };
    let ch = wait_for(&ep, Some(&with_cert)).await;
    assert_eq!(probe::health(ch, "").await.unwrap(), Health::Serving);

    // Without a client certificate the server does not talk to us.
    let without = ClientTls { ca: Some(d.join("ca.pem")), ..Default::default() };
    let refused = match berth_common::endpoint::connect(&ep, Some(&without)).await {
        Err(_) => true,
        Ok(ch) => probe::health(ch, "").await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Not a test of its own: the server process of the SIGTERM tests (see the module doc).
#[test]
fn sigterm_child_server() {
    let Some(sock) = std::env::var_os(CHILD_SOCK) else { return };
    let drain = std::env::var(CHILD_DRAIN_MS).ok().and_then(|s| s.parse().ok()).unwrap_or(30_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut o = opts(Endpoint::unix(PathBuf::from(sock)));
        o.drain_timeout = Duration::from_millis(drain);
        serve(o, meta(), routes(), async { Ok(()) }).await.unwrap();
    });
    eprintln!("child: serve returned");
}

struct ChildServer {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildServer {
    fn start(drain_ms: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("child.sock");
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigterm_child_server", "--nocapture", "--test-threads=1"])
            .env(CHILD_SOCK, &sock)
            .env(CHILD_DRAIN_MS, drain_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, sock, _dir: dir }
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::unix(&self.sock)
    }

    fn sigterm(&self) {
        // SAFETY: signalling the child this test started, by its pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0);
    }

    /// Waits up to `limit` for the child to exit.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn sigterm_drains_an_in_flight_stream_then_exits() {
    let mut server = ChildServer::start(30_000);
    let ep = server.endpoint();
    let ch = wait_for(&ep, None).await;
    let mut client = st::content_client::ContentClient::new(ch.clone());
    // 30 chunks, one every 50 ms: about 1.5 s of streaming.
    let mut stream =
        client.read(st::ReadRequest { digest: String::new(), offset: 50, length: 30 }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("first chunk");
    assert_eq!(first.offset, 0);

    server.sigterm();
    // The server stops taking new work at once...
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = match berth_common::endpoint::connect(&ep, None).await {
        Err(_) => None,
        Ok(c) => probe::health(c, "").await.ok(),
    };
    assert_ne!(fresh, Some(Health::Serving), "a draining server still reports SERVING to new clients");
    assert!(server.child.try_wait().unwrap().is_none(), "the server exited with a call in flight");

    // ...while the call in flight streams to its end, complete and in order.
    let mut got = 1;
    while let Some(m) = stream.message().await.expect("the in-flight stream was cut by SIGTERM") {
        assert_eq!(m.offset, got * 1024);
        assert_eq!(m.data.len(), 1024);
        got += 1;
    }
    assert_eq!(got, 30, "every chunk of the in-flight call arrived");

    // Then the process exits cleanly.
    let status = server.wait_exit(Duration::from_secs(10)).expect("the server did not exit after draining");
    assert!(status.success(), "server exited with {status}");
}

#[tokio::test]
async fn sigterm_drain_is_bounded_by_the_drain_timeout() {
    let mut server = ChildServer::start(500);
    let ch = wait_for(&server.endpoint(), None).await;
    let mut client = st::content_client::ContentClient::new(ch);
    // A call that would take 60 s.
    let mut stream =
        client.read(st::ReadRequest { digest: String::new(), offset: 1000, length: 60 }).await.unwrap().into_inner();
    stream.message().await.unwrap().expect("first chunk");
    let t = Instant::now();
    server.sigterm();
    let status = server.wait_exit(Duration::from_secs(10)).expect("the server hung on a call longer than its drain");
    assert!(status.success(), "server exited with {status}");
    assert!(t.elapsed() < Duration::from_secs(8), "took {:?}", t.elapsed());
}

#[tokio::test]
async fn trace_context_is_propagated() {
    use berth_common::telemetry::{inject_trace, with_trace, TraceContext};
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::unix(dir.path().join("s.sock"));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve_until(opts(ep.clone()), meta(), routes(), async { Ok(()) }, async move {
        let _ = stop_rx.await;
    }));
    let ch = wait_for(&ep, None).await;
    let seen =
        |e: Status| TraceContext::parse(e.message().strip_prefix("trace=").unwrap()).expect("handler had a trace");

    // A caller inside a trace: the handler continues that trace in a span of its own.
    let parent = TraceContext::new_root();
    let mut client = st::content_client::ContentClient::with_interceptor(ch.clone(), inject_trace);
    let e = with_trace(parent, client.stat(st::StatRequest::default())).await.unwrap_err();
    let got = seen(e);
    assert_eq!(got.trace_id, parent.trace_id, "the trace id did not cross the call");
    assert_ne!(got.span_id, parent.span_id);

    // A caller without trace context still gets a trace on the server.
    let mut plain = st::content_client::ContentClient::new(ch);
    let e = plain.stat(st::StatRequest::default()).await.unwrap_err();
    assert_ne!(seen(e).trace_id, parent.trace_id);

    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
