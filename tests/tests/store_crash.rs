//! kill -9 of store-svc during 16 concurrent writes: after a restart every committed blob
//! verifies, nothing partial is visible, and unfinished ingests resume from their offsets.

mod store_util;

use berth_common::Digest;
use berth_proto::store::v1 as pb;
use berth_tests::stack::Service;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store_util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_16_concurrent_writes() {
    let mut svc = Service::builder("store-svc").sigkill_on_drop(true).start().await;
    let c = content(svc.channel().await);

    // Sizes 2..32 MiB, so the small ones commit while the big ones are still streaming.
    let blobs: Vec<_> = (0..16).map(|i| random_bytes((i + 1) * (2 << 20), 100 + i as u64)).collect();
    let by_digest: HashMap<String, bytes::Bytes> =
        blobs.iter().map(|b| (Digest::of(b).to_string(), b.clone())).collect();
    let committed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for (i, data) in blobs.iter().cloned().enumerate() {
        let mut c = c.clone();
        let committed = committed.clone();
        tasks.push(tokio::spawn(async move {
            if let Ok(r) = put(&mut c, &format!("crash-{i}"), &data, 256 << 10).await {
                committed.lock().unwrap().push(r.committed.unwrap().digest);
            }
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while committed.lock().unwrap().len() < 4 {
        assert!(std::time::Instant::now() < deadline, "no writes committed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    svc.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let committed = committed.lock().unwrap().clone();
    assert!(committed.len() < 16, "the kill should land while writes are in flight ({} committed)", committed.len());

    svc.restart().await;
    let mut c = content(svc.channel().await);

    // Every blob the client saw committed is there and verifies.
    for d in &committed {
        let d: Digest = d.parse().unwrap();
        let back = read(&mut c, &d, 0, 0).await.unwrap_or_else(|e| panic!("committed {d} lost: {e}"));
        assert_eq!(Digest::of(&back), d);
    }
    // Everything visible is one of ours and complete (it may include commits whose reply was lost).
    let listed = list(&mut c).await;
    assert!(listed.len() >= committed.len());
    for d in &listed {
        let want = by_digest.get(d).unwrap_or_else(|| panic!("unknown blob {d} visible after the crash"));
        let back = read(&mut c, &d.parse().unwrap(), 0, 0).await.unwrap();
        assert_eq!(back.len(), want.len(), "{d} is visible but partial");
        assert_eq!(Digest::of(&back).to_string(), *d);
    }
    // Unfinished ingests survive with sane offsets and resume to completion (re-hashing what
    // was staged before the crash).
    let ingests = c.list_writes(pb::ListWritesRequest {}).await.unwrap().into_inner().ingests;
    assert!(!ingests.is_empty(), "some ingests were in flight");
    for i in &ingests {
        assert!(!listed.contains(&i.expected), "ingest {} of a committed blob was kept", i.r#ref);
        let data = &by_digest[&i.expected];
        assert!(i.offset as usize <= data.len());
        assert_eq!(i.total as usize, data.len());
    }
    for i in &ingests {
        let data = by_digest[&i.expected].clone();
        let d: Digest = i.expected.parse().unwrap();
        let msgs = write_msgs(&i.r#ref, &data, &d, i.offset as usize, 1 << 20, true);
        let r = c.write(futures::stream::iter(msgs)).await.unwrap_or_else(|e| panic!("resuming {}: {e}", i.r#ref));
        assert_eq!(r.into_inner().committed.unwrap().digest, i.expected);
    }
    let after = list(&mut c).await;
    assert_eq!(after.len(), listed.len() + ingests.len());
    assert!(c.list_writes(pb::ListWritesRequest {}).await.unwrap().into_inner().ingests.is_empty());
    assert_eq!(std::fs::read_dir(svc.root().join("tmp")).unwrap().count(), 0, "no temp files left");
}
