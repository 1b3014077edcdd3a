//! GC keeps exactly what is reachable from image records (through manifests, indexes and
//! configs), build-cache entries and leases; dry runs remove nothing and report the same set;
//! stale unleased ingests go, leased ones stay; records refuse targets that are not stored.

mod store_util;

use berth_common::Digest;
use berth_proto::store::v1 as pb;
use berth_proto::store::v1::{
    build_cache_client::BuildCacheClient, gc_client::GcClient, images_client::ImagesClient, leases_client::LeasesClient,
};
use berth_proto::types::v1::Descriptor;
use berth_tests::stack::Service;
use bytes::Bytes;
use serde_json::json;
use std::collections::BTreeSet;
use store_util::*;
use tonic::Code;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn desc(media_type: &str, d: &Digest, size: usize) -> Descriptor {
    Descriptor { media_type: media_type.into(), digest: d.to_string(), size: size as i64, ..Default::default() }
}

fn jdesc(media_type: &str, data: &[u8]) -> serde_json::Value {
    json!({"mediaType": media_type, "digest": Digest::of(data).to_string(), "size": data.len()})
}

/// Writes a config and layers plus a manifest over them; returns (manifest bytes, all digests).
async fn image(
    c: &mut pb::content_client::ContentClient<tonic::transport::Channel>,
    seed: u64,
    mt: &str,
) -> (Vec<u8>, Vec<Digest>) {
    let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "seed": seed})).unwrap();
    let l1 = random_bytes(10_000 + seed as usize, seed);
    let l2 = random_bytes(20_000, seed + 1000);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": mt,
        "config": jdesc(CONFIG, &config),
        "layers": [jdesc(LAYER, &l1), jdesc(LAYER, &l2)],
    }))
    .unwrap();
    let mut all = Vec::new();
    for b in [&config[..], &l1[..], &l2[..], &manifest[..]] {
        all.push(put_blob(c, b).await);
    }
    (manifest, all)
}

async fn blobs(c: &mut pb::content_client::ContentClient<tonic::transport::Channel>) -> BTreeSet<String> {
    list(c).await.into_iter().collect()
}

#[tokio::test]
async fn gc_keeps_exactly_what_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("store.toml");
    std::fs::write(&cfg, "stale_ingest_secs = 0\n").unwrap();
    let svc = Service::builder("store-svc").arg("--config").arg(cfg.display().to_string()).start().await;
    let ch = svc.channel().await;
    let mut c = content(ch.clone());
    let mut images = ImagesClient::new(ch.clone());
    let mut cache = BuildCacheClient::new(ch.clone());
    let mut leases = LeasesClient::new(ch.clone());
    let mut gc = GcClient::new(ch);

    let mut keep = BTreeSet::new();
    // 1. An image record → OCI manifest → config + layers.
    let (m1, all1) = image(&mut c, 1, MANIFEST).await;
    keep.extend(all1.iter().map(|d| d.to_string()));
    images
        .put(pb::PutImageRequest {
            image: Some(pb::Image {
                name: "example.com/app:1".into(),
                target: Some(desc(MANIFEST, &Digest::of(&m1), m1.len())),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // 2. An image record → index → two manifests (one Docker) → their configs and layers.
    let (m2, all2) = image(&mut c, 2, MANIFEST).await;
    let (m3, all3) = image(&mut c, 3, DOCKER_MANIFEST).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [jdesc(MANIFEST, &m2), jdesc(DOCKER_MANIFEST, &m3)],
    }))
    .unwrap();
    let di = put_blob(&mut c, &index).await;
    keep.extend(all2.iter().chain(&all3).chain([&di]).map(|d| d.to_string()));
    images
        .put(pb::PutImageRequest {
            image: Some(pb::Image {
                name: "example.com/multi:latest".into(),
                target: Some(desc(INDEX, &di, index.len())),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    // 3. A build-cache entry → a layer.
    let cached = random_bytes(5000, 77);
    let dc = put_blob(&mut c, &cached).await;
    keep.insert(dc.to_string());
    cache
        .put(pb::PutCacheRequest { key: "step-key-1".into(), target: Some(desc(LAYER, &dc, cached.len())) })
        .await
        .unwrap();
    // 4. A leased blob (a manifest, so its children are protected too) and a leased ingest.
    let lease = leases
        .create(pb::CreateLeaseRequest { id: "pull-1".into(), ttl_seconds: 3600, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    let (m4, all4) = image(&mut c, 4, MANIFEST).await;
    keep.extend(all4.iter().map(|d| d.to_string()));
    leases
        .add_resource(pb::AddLeaseResourceRequest {
            id: lease.id.clone(),
            digest: Digest::of(&m4).to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let partial = random_bytes(100_000, 5);
    let dp = Digest::of(&partial);
    let mut msgs = write_msgs("leased-ingest", &partial, &dp, 0, 10_000, false);
    msgs.truncate(3);
    msgs[0].lease = lease.id.clone();
    c.write(futures::stream::iter(msgs)).await.unwrap();
    // An unleased ingest (stale at once with stale_ingest_secs = 0).
    let mut msgs = write_msgs("unleased-ingest", &partial, &dp, 0, 10_000, false);
    msgs.truncate(2);
    c.write(futures::stream::iter(msgs)).await.unwrap();

    // Garbage: loose blobs, and an unreferenced manifest with its own config and layers.
    let mut garbage = BTreeSet::new();
    for i in 0..3 {
        garbage.insert(put_blob(&mut c, &random_bytes(3000 + i, 500 + i as u64)).await.to_string());
    }
    let (_m5, all5) = image(&mut c, 5, MANIFEST).await;
    garbage.extend(all5.iter().map(|d| d.to_string()));
    // Not JSON at all, with a manifest media type nowhere: a loose blob.
    garbage.insert(put_blob(&mut c, b"{not json").await.to_string());

    let before = blobs(&mut c).await;
    assert_eq!(before, keep.union(&garbage).cloned().collect(), "test setup");

    // A record whose target is not stored is refused.
    let ghost = Digest::of(b"ghost");
    let e = images
        .put(pb::PutImageRequest {
            image: Some(pb::Image {
                name: "example.com/ghost:1".into(),
                target: Some(desc(MANIFEST, &ghost, 5)),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    // Dry run: reports the garbage, removes nothing.
    let dry = gc.collect(pb::CollectRequest { dry_run: true }).await.unwrap().into_inner();
    assert!(dry.dry_run);
    let would: BTreeSet<String> = dry.removed.iter().map(|b| b.digest.clone()).collect();
    assert_eq!(would, garbage, "dry run reports exactly the unreachable blobs");
    assert_eq!(dry.removed_ingests, ["unleased-ingest"]);
    assert_eq!(dry.kept as usize, keep.len());
    assert_eq!(blobs(&mut c).await, before, "dry run removes nothing");
    assert_eq!(c.list_writes(pb::ListWritesRequest {}).await.unwrap().into_inner().ingests.len(), 2);
    let usage = gc.usage(pb::UsageRequest {}).await.unwrap().into_inner();
    assert_eq!(usage.reclaimable_bytes, dry.bytes_freed);
    assert_eq!(usage.blobs as usize, before.len());
    assert!(usage.backend.starts_with("filesystem:"), "{}", usage.backend);

    // The real thing removes the same set.
    let real = gc.collect(pb::CollectRequest { dry_run: false }).await.unwrap().into_inner();
    let removed: BTreeSet<String> = real.removed.iter().map(|b| b.digest.clone()).collect();
    assert_eq!(removed, would, "GC removes what the dry run reported");
    assert_eq!(real.bytes_freed, dry.bytes_freed);
    assert_eq!(blobs(&mut c).await, keep, "GC keeps exactly what is reachable");
    let ingests: Vec<String> = c
        .list_writes(pb::ListWritesRequest {})
        .await
        .unwrap()
        .into_inner()
        .ingests
        .into_iter()
        .map(|i| i.r#ref)
        .collect();
    assert_eq!(ingests, ["leased-ingest"]);
    let again = gc.collect(pb::CollectRequest { dry_run: false }).await.unwrap().into_inner();
    assert!(again.removed.is_empty() && again.removed_ingests.is_empty(), "a second GC finds nothing");

    // Releasing the lease lets its blobs and ingest go; deleting a record lets its image go.
    leases.delete(pb::DeleteLeaseRequest { id: lease.id.clone() }).await.unwrap();
    images.delete(pb::DeleteImageRequest { name: "example.com/app:1".into() }).await.unwrap();
    cache.delete(pb::DeleteCacheRequest { key: "step-key-1".into() }).await.unwrap();
    let r = gc.collect(pb::CollectRequest { dry_run: false }).await.unwrap().into_inner();
    let removed: BTreeSet<String> = r.removed.iter().map(|b| b.digest.clone()).collect();
    let expect: BTreeSet<String> = all1.iter().chain(&all4).chain([&dc]).map(|d| d.to_string()).collect();
    assert_eq!(removed, expect);
    assert_eq!(r.removed_ingests, ["leased-ingest"]);
    let left: BTreeSet<String> = all2.iter().chain(&all3).chain([&di]).map(|d| d.to_string()).collect();
    assert_eq!(blobs(&mut c).await, left);
}

#[tokio::test]
async fn records_and_leases_behave() {
    let svc = Service::start("store-svc").await;
    let ch = svc.channel().await;
    let mut c = content(ch.clone());
    let mut images = ImagesClient::new(ch.clone());
    let data = Bytes::from_static(b"{\"schemaVersion\":2}");
    let d = put_blob(&mut c, &data).await;

    let mut img = pb::Image {
        name: "docker.io/library/busybox:latest".into(),
        target: Some(desc(MANIFEST, &d, data.len())),
        labels: [("a".to_string(), "b".to_string())].into(),
        ..Default::default()
    };
    let first = images.put(pb::PutImageRequest { image: Some(img.clone()) }).await.unwrap().into_inner().image.unwrap();
    img.labels.insert("c".into(), "d".into());
    let second =
        images.put(pb::PutImageRequest { image: Some(img.clone()) }).await.unwrap().into_inner().image.unwrap();
    assert_eq!(first.created_at, second.created_at, "replacing keeps created_at");
    assert_eq!(second.labels.len(), 2);
    let got = images.get(pb::GetImageRequest { name: img.name.clone() }).await.unwrap().into_inner().image.unwrap();
    assert_eq!(got.target.unwrap().digest, d.to_string());
    let listed = images.list(pb::ListImagesRequest { prefix: "docker.io/library/".into() }).await.unwrap().into_inner();
    assert_eq!(listed.images.len(), 1);
    assert!(images
        .list(pb::ListImagesRequest { prefix: "ghcr.io/".into() })
        .await
        .unwrap()
        .into_inner()
        .images
        .is_empty());
    // A wrong size in the target is refused.
    let mut bad = img.clone();
    bad.target.as_mut().unwrap().size = 1;
    assert_eq!(images.put(pb::PutImageRequest { image: Some(bad) }).await.unwrap_err().code(), Code::InvalidArgument);

    // Records survive a restart.
    let mut svc = svc;
    drop((c, images, ch));
    // Let the connections close first: common's drain waits for open connections.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = svc.terminate();
    assert!(status.is_some_and(|s| s.success()), "store-svc exits cleanly on SIGTERM: {status:?}\n{}", svc.log());
    svc.restart().await;
    let ch = svc.channel().await;
    let mut images = ImagesClient::new(ch.clone());
    let got = images.get(pb::GetImageRequest { name: img.name.clone() }).await.unwrap().into_inner().image.unwrap();
    assert_eq!(got.labels, img.labels);
    images.delete(pb::DeleteImageRequest { name: img.name.clone() }).await.unwrap();
    assert_eq!(images.get(pb::GetImageRequest { name: img.name }).await.unwrap_err().code(), Code::NotFound);

    let mut cache = BuildCacheClient::new(ch.clone());
    assert_eq!(cache.get(pb::GetCacheRequest { key: "k".into() }).await.unwrap_err().code(), Code::NotFound);
    cache.put(pb::PutCacheRequest { key: "k".into(), target: Some(desc(LAYER, &d, data.len())) }).await.unwrap();
    assert_eq!(cache.get(pb::GetCacheRequest { key: "k".into() }).await.unwrap().into_inner().entry.unwrap().key, "k");
    assert_eq!(cache.list(pb::ListCacheRequest {}).await.unwrap().into_inner().entries.len(), 1);

    let mut leases = LeasesClient::new(ch);
    let l = leases.create(pb::CreateLeaseRequest::default()).await.unwrap().into_inner().lease.unwrap();
    assert!(!l.id.is_empty() && l.expires_at.is_none());
    let e = leases.create(pb::CreateLeaseRequest { id: l.id.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    let e = leases.create(pb::CreateLeaseRequest { id: "../x".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = leases
        .add_resource(pb::AddLeaseResourceRequest { id: "nope".into(), digest: d.to_string(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    leases.create(pb::CreateLeaseRequest { id: "short".into(), ttl_seconds: 1, ..Default::default() }).await.unwrap();
    assert_eq!(leases.list(pb::ListLeasesRequest {}).await.unwrap().into_inner().leases.len(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let live: Vec<String> =
        leases.list(pb::ListLeasesRequest {}).await.unwrap().into_inner().leases.into_iter().map(|l| l.id).collect();
    assert_eq!(live, std::slice::from_ref(&l.id), "an expired lease is gone");
    leases.delete(pb::DeleteLeaseRequest { id: l.id.clone() }).await.unwrap();
    assert_eq!(leases.delete(pb::DeleteLeaseRequest { id: l.id }).await.unwrap_err().code(), Code::NotFound);
    drop(cache);
}
