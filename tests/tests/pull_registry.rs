//! Pulls from a real CNCF distribution registry filled with skopeo: every fixture, idempotence,
//! platform choice, zstd, basic auth and token auth.

use berth_proto::registry::v1::BlobState;
use berth_tests::fixtures::Fixture;
use berth_tests::registry::{Auth, PullStack, Registry};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_each_fixture_and_second_pull_transfers_nothing() {
    let reg = Registry::start().unwrap();
    let stack = PullStack::start("").await;
    for (f, name) in [(Fixture::Busybox, "busybox"), (Fixture::Layered, "layered:v1"), (Fixture::Zstd, "zstd")] {
        let r = reg.push_fixture(f, name).unwrap();
        let first = stack.pull(&r, None).await.unwrap_or_else(|e| panic!("pull {r}: {e}"));
        let done = first.done.expect("done event");
        assert_eq!(done.status, berth_proto::registry::v1::PullStatus::DownloadedNewer as i32, "{r}");
        assert!(done.bytes_downloaded > 0);
        assert!(done.blobs_fetched > 0);
        assert!(stack.image_names().await.contains(&r.to_string()), "{r} not in {:?}", stack.image_names().await);
        let second = stack.pull(&r, None).await.unwrap();
        let d2 = second.done.clone().expect("done");
        assert_eq!(d2.blobs_fetched, 0, "second pull of {r} fetched layers");
        assert_eq!(d2.bytes_downloaded, 0);
        assert_eq!(d2.status, berth_proto::registry::v1::PullStatus::UpToDate as i32);
        assert!(second.blobs_in(BlobState::Downloading).is_empty());
        assert!(!second.blobs_in(BlobState::AlreadyExists).is_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_chooses_host_or_requested_platform() {
    let reg = Registry::start().unwrap();
    let stack = PullStack::start("").await;
    let r = reg.push_fixture(Fixture::MultiArch, "multi").unwrap();
    let host = stack.pull(&r, None).await.unwrap().done.unwrap();
    let arm = stack.pull(&r, Some("linux/arm64")).await.unwrap().done.unwrap();
    assert_ne!(host.image_id, arm.image_id, "arm64 and host platform images are the same");
    assert_eq!(host.target.as_ref().unwrap().digest, arm.target.as_ref().unwrap().digest, "both point at the index");
    let err = stack.pull(&r, Some("linux/s390x")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("linux/amd64") && err.message().contains("linux/arm64"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_fetch_each_blob_once() {
    let reg = Registry::start().unwrap();
    let stack = PullStack::start("").await;
    let r = reg.push_fixture(Fixture::Layered, "layered").unwrap();
    let (a, b) = tokio::join!(stack.pull(&r, None), stack.pull(&r, None));
    let (a, b) = (a.unwrap().done.unwrap(), b.unwrap().done.unwrap());
    // Each layer was fetched by exactly one of them (or found present by the later one).
    assert_eq!(a.bytes_downloaded.min(b.bytes_downloaded), 0.max(a.bytes_downloaded.min(b.bytes_downloaded)));
    let total_layers = 3;
    assert!(a.blobs_fetched + b.blobs_fetched + a.blobs_present + b.blobs_present >= total_layers);
    let fetched_bytes = a.bytes_downloaded + b.bytes_downloaded;
    let one = stack.pull(&r, None).await.unwrap().done.unwrap();
    assert_eq!(one.bytes_downloaded, 0);
    let sizes: i64 = berth_tests::fixtures::cached(Fixture::Layered).unwrap().layer_bytes as i64;
    assert!(fetched_bytes < 2 * sizes, "both pulls downloaded the layers: {fetched_bytes} bytes for {sizes} of layers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry_needs_credentials() {
    let reg = Registry::start_with(Auth::Htpasswd { user: "alice".into(), password: "s3cret".into() }).unwrap();
    let r = reg.push_fixture(Fixture::Busybox, "private/busybox").unwrap();
    let anon = PullStack::start("").await;
    let err = anon.pull(&r, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{}", err.message());
    assert!(err.message().contains("authentication") && err.message().contains("credentials"), "{}", err.message());
    assert!(anon.image_names().await.is_empty());
    let cfg = format!("[auths.\"{}\"]\nusername = \"alice\"\npassword = \"s3cret\"\n", reg.addr());
    let authed = PullStack::start(&cfg).await;
    authed.pull(&r, None).await.unwrap().done.unwrap();
    // Credentials from ~/.docker/config.json work too (HOME is the stack's temp dir).
    let docker = PullStack::start("").await;
    let home = docker.store.dir().join(".docker");
    std::fs::create_dir_all(&home).unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    std::fs::write(home.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr()))
        .unwrap();
    docker.pull(&r, None).await.unwrap().done.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_registry_reuses_tokens() {
    let reg = Registry::start_with(Auth::Token { user: "bob".into(), password: "pw".into() }).unwrap();
    let r = reg.push_fixture(Fixture::Layered, "team/app:1").unwrap();
    let anon = PullStack::start("").await;
    let err = anon.pull(&r, None).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{}", err.message());
    let cfg = format!("[auths.\"{}\"]\nusername = \"bob\"\npassword = \"pw\"\n", reg.addr());
    let stack = PullStack::start(&cfg).await;
    let before = reg.token_requests();
    stack.pull(&r, None).await.unwrap().done.unwrap();
    let used = reg.token_requests() - before;
    // One token for the repository, reused for the manifest, config and all three layers.
    assert_eq!(used, 1, "expected the token to be reused, the issuer handed out {used}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_first_and_fall_through() {
    let mirror = Registry::start().unwrap();
    mirror.push_fixture(Fixture::Busybox, "library/busybox").unwrap();
    // A registry that is not running: only the mirror can serve it.
    let dead = berth_tests::stack::free_port();
    let cfg = format!("[mirrors]\n\"127.0.0.1:{dead}\" = [\"http://{}\"]\n", mirror.addr());
    let stack = PullStack::start(&cfg).await;
    let out = stack.pull(&format!("127.0.0.1:{dead}/library/busybox"), None).await.unwrap();
    assert!(out.done.is_some());
    let started = out.events.iter().find_map(|e| match &e.event {
        Some(berth_proto::registry::v1::pull_event::Event::Started(s)) => Some(s.endpoint.clone()),
        _ => None,
    });
    assert_eq!(started, Some(format!("http://{}", mirror.addr())));
    // A mirror that is down falls through to the registry itself.
    let real = Registry::start().unwrap();
    let r = real.push_fixture(Fixture::Busybox, "busybox").unwrap();
    let cfg = format!("[mirrors]\n\"{}\" = [\"http://127.0.0.1:{dead}\"]\n", real.addr());
    let stack = PullStack::start(&cfg).await;
    assert!(stack.pull(&r, None).await.unwrap().done.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_registry_on_loopback() {
    let reg = Registry::start_tls().unwrap();
    let r = reg.push_fixture(Fixture::Busybox, "secure/busybox").unwrap();
    let stack = PullStack::start("").await;
    let out = stack.pull(&r, None).await.unwrap();
    let endpoint = out.events.iter().find_map(|e| match &e.event {
        Some(berth_proto::registry::v1::pull_event::Event::Started(s)) => Some(s.endpoint.clone()),
        _ => None,
    });
    assert_eq!(endpoint, Some(format!("https://{}", reg.addr())));
    assert!(out.done.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_layers_come_in_parallel_ranges_from_a_real_registry() {
    let reg = Registry::start().unwrap();
    // Small threshold and segments so the busybox layer (~1.3 MB) takes the parallel path.
    let stack =
        PullStack::start("parallel_range_threshold = 524288\nrange_segment_bytes = 131072\nparallel_ranges = 4\n")
            .await;
    let r = reg.push_fixture(Fixture::Busybox, "busybox").unwrap();
    let out = stack.pull(&r, None).await.unwrap();
    let done = out.done.clone().expect("done");
    assert_eq!(done.blobs_fetched, 1);
    use berth_proto::registry::v1::pull_event::Event;
    let ranged = out.events.iter().any(|e| {
        matches!(&e.event, Some(Event::Blob(b)) if b.state == BlobState::Downloading as i32 && b.message.contains("ranges, 4 in parallel"))
    });
    assert!(ranged, "no layer reported parallel ranges: {:?}", out.events);
    // The registry served several partial answers for the layer (its access log).
    let layer = stack.blob_digests().await;
    let log = reg.log();
    let partial = log.lines().filter(|l| l.contains("/blobs/sha256:") && l.contains("\" 206 ")).count();
    assert!(partial >= 5, "expected several 206 answers in the registry log:\n{log}");
    // The store verified the whole blob against its digest; read it back and check again.
    use berth_proto::store::v1 as spb;
    let mut c = spb::content_client::ContentClient::new(stack.store.channel().await);
    let m = berth_tests::fixtures::cached(Fixture::Busybox).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(m.dir.join("blobs/sha256").join(m.digest.trim_start_matches("sha256:"))).unwrap(),
    )
    .unwrap();
    let digest = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    assert!(layer.contains(&digest));
    let mut s = c.read(spb::ReadRequest { digest: digest.clone(), offset: 0, length: 0 }).await.unwrap().into_inner();
    let mut data = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        data.extend_from_slice(&m.data);
    }
    assert_eq!(berth_common::Digest::of(&data).to_string(), digest);
}
