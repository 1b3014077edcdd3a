//! Bad upstreams: a small hostile HTTP server speaks the registry API and serves what a real
//! registry would refuse to store. Each case must fail with a clear error and leave no image
//! record, no visible blob of the bad content and no ingest behind; the resume cases must
//! succeed.

use berth_tests::fixtures::{self, Fixture};
use berth_tests::registry::{MiniHttp, PullStack, Request, Response};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    WrongDigest,
    Truncated,
    NoManifest,
    NoConfig,
    IndexWithoutHostPlatform,
    ResumeWithRange,
    RangeAnsweredWithFullBody,
    RateLimited,
    /// Ranges are ignored: every answer is 200 with the whole body.
    RangesIgnored,
    /// Ranges are honoured, but the first request for a later range breaks off half-way.
    RangeDropsOnce,
}

/// registry-svc settings that make the busybox layer (~1.3 MB) take the parallel-range path.
const RANGES_CONFIG: &str = "parallel_range_threshold = 524288\nrange_segment_bytes = 131072\nparallel_ranges = 4\n";

struct Layout {
    dir: PathBuf,
    manifest: String,
    config: String,
    layer: String,
}

fn layout() -> Layout {
    let b = fixtures::cached(Fixture::Busybox).unwrap();
    let blob = |d: &str| std::fs::read(b.dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&blob(&b.digest)).unwrap();
    Layout {
        dir: b.dir.clone(),
        manifest: b.digest.clone(),
        config: m["config"]["digest"].as_str().unwrap().to_string(),
        layer: m["layers"][0]["digest"].as_str().unwrap().to_string(),
    }
}

fn serve(case: Case) -> (MiniHttp, Layout, Arc<AtomicUsize>) {
    let l = layout();
    let (dir, manifest, config, layer) = (l.dir.clone(), l.manifest.clone(), l.config.clone(), l.layer.clone());
    let layer_gets = Arc::new(AtomicUsize::new(0));
    let gets = layer_gets.clone();
    let dropped = std::sync::atomic::AtomicBool::new(false);
    let read = move |d: &str| std::fs::read(dir.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    let server = MiniHttp::start(move |req: &Request| {
        let p = req.path().to_string();
        if p == "/v2/" {
            return Response::new(200, "{}");
        }
        let Some(rest) = p.strip_prefix("/v2/hostile/") else { return Response::new(404, "no") };
        if let Some(r) = rest.strip_prefix("manifests/") {
            if case == Case::RateLimited {
                return Response::new(429, r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit"}]}"#)
                    .header("ratelimit-limit", "100;w=21600")
                    .header("ratelimit-remaining", "0;w=21600")
                    .header("retry-after", "3600");
            }
            if case == Case::NoManifest {
                return Response::new(404, r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#);
            }
            if case == Case::IndexWithoutHostPlatform && r == "latest" {
                let m = read(&manifest);
                let idx = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": m.len(),
                                   "platform": {"os": "linux", "architecture": "s390x"}},
                                  {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest, "size": m.len(),
                                   "platform": {"os": "windows", "architecture": "amd64"}}]});
                return Response::new(200, idx.to_string()).header("Content-Type", "application/vnd.oci.image.index.v1+json");
            }
            let body = read(&manifest);
            return Response::new(200, body)
                .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                .header("Docker-Content-Digest", manifest.clone());
        }
        if let Some(d) = rest.strip_prefix("blobs/") {
            if d == config {
                if case == Case::NoConfig {
                    return Response::new(404, r#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#);
                }
                return Response::new(200, read(d));
            }
            if d == layer {
                let n = gets.fetch_add(1, Ordering::SeqCst);
                let mut body = read(d);
                let full = body.len() as u64;
                match case {
                    Case::WrongDigest => {
                        let mid = body.len() / 2;
                        body[mid] ^= 0xff;
                        return Response::new(200, body);
                    }
                    Case::Truncated => {
                        let start = req.range_start().unwrap_or(0) as usize;
                        let part = body[start..start + (body.len() - start) / 3].to_vec();
                        let mut r = Response::new(if start > 0 { 206 } else { 200 }, part);
                        r.content_length = Some(full - start as u64);
                        if start > 0 {
                            r = r.header("Content-Range", format!("bytes {start}-{}/{full}", full - 1));
                        }
                        return r;
                    }
                    Case::ResumeWithRange | Case::RangeAnsweredWithFullBody if n == 0 => {
                        // The first answer breaks off half-way.
                        let mut r = Response::new(200, body[..body.len() / 2].to_vec());
                        r.content_length = Some(full);
                        return r;
                    }
                    Case::ResumeWithRange => {
                        let start = req.range_start().expect("the resumed request has a Range header") as usize;
                        return Response::new(206, body[start..].to_vec())
                            .header("Content-Range", format!("bytes {start}-{}/{full}", full - 1));
                    }
                    Case::RangeDropsOnce => {
                        let Some((a, b)) = req.range() else { return Response::new(200, body) };
                        let e = b.unwrap_or(full - 1).min(full - 1);
                        let part = body[a as usize..=e as usize].to_vec();
                        let len = part.len() as u64;
                        let mut r = Response::new(206, part)
                            .header("Content-Range", format!("bytes {a}-{e}/{full}"))
                            .header("Accept-Ranges", "bytes");
                        if a > 0 && !dropped.swap(true, Ordering::SeqCst) {
                            r.body.truncate(r.body.len() / 2);
                            r.content_length = Some(len);
                        }
                        return r;
                    }
                    _ => return Response::new(200, body),
                }
            }
        }
        Response::new(404, "no such thing")
    })
    .unwrap();
    (server, l, layer_gets)
}

async fn assert_nothing_left(stack: &PullStack, bad: &[&str]) {
    assert!(stack.image_names().await.is_empty(), "an image record was left: {:?}", stack.image_names().await);
    let blobs = stack.blob_digests().await;
    for b in bad {
        assert!(!blobs.contains(&b.to_string()), "blob {b} became visible");
    }
    use berth_proto::store::v1 as spb;
    let mut c = spb::content_client::ContentClient::new(stack.store.channel().await);
    let w = c.list_writes(spb::ListWritesRequest {}).await.unwrap().into_inner();
    assert!(w.ingests.is_empty(), "ingests left behind: {:?}", w.ingests);
}

async fn failing(case: Case) -> (tonic::Status, Layout, PullStack) {
    let (server, l, _) = serve(case);
    let stack = PullStack::start("").await;
    let err = stack.pull(&format!("{}/hostile:latest", server.addr()), None).await.unwrap_err();
    (err, l, stack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_with_wrong_digest() {
    let (err, l, stack) = failing(Case::WrongDigest).await;
    assert_eq!(err.code(), tonic::Code::DataLoss, "{}", err.message());
    assert!(err.message().contains(&l.layer) && err.message().contains("digest"), "{}", err.message());
    assert_nothing_left(&stack, &[&l.layer, &l.manifest, &l.config]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_blob() {
    let (err, l, stack) = failing(Case::Truncated).await;
    assert_eq!(err.code(), tonic::Code::DataLoss, "{}", err.message());
    assert!(err.message().contains("truncated"), "{}", err.message());
    assert_nothing_left(&stack, &[&l.layer, &l.manifest, &l.config]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_not_found() {
    let (err, _l, stack) = failing(Case::NoManifest).await;
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    assert!(err.message().contains("manifest") && err.message().contains("not found"), "{}", err.message());
    assert_nothing_left(&stack, &[]).await;
    assert!(stack.blob_digests().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_whose_config_is_missing() {
    let (err, l, stack) = failing(Case::NoConfig).await;
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    assert!(err.message().contains("config") && err.message().contains(&l.config), "{}", err.message());
    assert_nothing_left(&stack, &[&l.layer, &l.manifest]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_without_a_matching_platform() {
    let (err, _l, stack) = failing(Case::IndexWithoutHostPlatform).await;
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("linux/s390x") && err.message().contains("windows/amd64"), "{}", err.message());
    assert_nothing_left(&stack, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connection_resumes_with_range() {
    for case in [Case::ResumeWithRange, Case::RangeAnsweredWithFullBody] {
        let (server, l, gets) = serve(case);
        let stack = PullStack::start("").await;
        let out = stack
            .pull(&format!("{}/hostile:latest", server.addr()), None)
            .await
            .unwrap_or_else(|e| panic!("{case:?}: {e}"));
        assert!(out.done.is_some());
        assert!(gets.load(Ordering::SeqCst) >= 2, "{case:?}: no second request");
        let ranged =
            server.requests().iter().filter(|r| r.path().ends_with(&l.layer) && r.header("range").is_some()).count();
        assert!(ranged >= 1, "{case:?}: the resume did not use a Range request");
        assert!(stack.blob_digests().await.contains(&l.layer));
        assert_eq!(stack.image_names().await.len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_reported() {
    let (err, _l, stack) = failing(Case::RateLimited).await;
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{}", err.message());
    assert!(
        err.message().contains("ratelimit-remaining: 0;w=21600") && err.message().contains("429"),
        "{}",
        err.message()
    );
    assert_nothing_left(&stack, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_ignoring_range_gets_one_stream() {
    let (server, l, gets) = serve(Case::RangesIgnored);
    let stack = PullStack::start(RANGES_CONFIG).await;
    let out = stack.pull(&format!("{}/hostile:latest", server.addr()), None).await.unwrap();
    assert!(out.done.is_some());
    // The probe (a Range request answered with the whole body) was streamed as the blob: one GET.
    assert_eq!(gets.load(Ordering::SeqCst), 1, "{:?}", server.requests());
    let probe = server.requests().into_iter().find(|r| r.path().ends_with(&l.layer)).unwrap();
    assert!(probe.range().is_some(), "the first request did not probe with a Range");
    assert!(stack.blob_digests().await.contains(&l.layer));
    assert_eq!(stack.image_names().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_ranges_resume_a_dropped_range() {
    let (server, l, _gets) = serve(Case::RangeDropsOnce);
    let stack = PullStack::start(RANGES_CONFIG).await;
    let out = stack.pull(&format!("{}/hostile:latest", server.addr()), None).await.unwrap();
    assert!(out.done.is_some());
    let ranges: Vec<(u64, Option<u64>)> =
        server.requests().iter().filter(|r| r.path().ends_with(&l.layer)).filter_map(|r| r.range()).collect();
    let size = std::fs::metadata(l.dir.join("blobs/sha256").join(l.layer.trim_start_matches("sha256:"))).unwrap().len();
    let segments = size.div_ceil(131072);
    // Every segment was asked for as a bounded range, plus one resume that starts inside one.
    let bounded: Vec<_> = ranges.iter().filter(|(a, b)| a % 131072 == 0 && b.is_some()).collect();
    assert_eq!(bounded.len() as u64, segments, "{ranges:?}");
    assert!(ranges.iter().any(|(a, _)| a % 131072 != 0), "no resume inside a range: {ranges:?}");
    // Verified over the whole blob: it is in the store under its digest, and the record exists.
    assert!(stack.blob_digests().await.contains(&l.layer));
    assert_eq!(stack.image_names().await.len(), 1);
}
