//! store-svc over gRPC: round trip of a large blob with ranged reads, verification of digest and
//! size before anything becomes visible, resume after a dropped stream, racing writers of one
//! digest, and input validation.

mod store_util;

use berth_common::Digest;
use berth_proto::store::v1 as pb;
use berth_tests::stack::Service;
use bytes::Bytes;
use std::time::Duration;
use store_util::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_200mb_with_ranged_reads() {
    let svc = Service::start("store-svc").await;
    let mut c = content(svc.channel().await);
    let data = random_bytes(200 * 1000 * 1000, 1);
    let d = Digest::of(&data);

    let r = put(&mut c, "big-1", &data, 4 << 20).await.unwrap();
    let info = r.committed.expect("committed");
    assert_eq!(info.digest, d.to_string());
    assert_eq!(info.size, data.len() as i64);
    assert!(!r.already_exists);

    let st = c.stat(pb::StatRequest { digest: d.to_string() }).await.unwrap().into_inner();
    assert_eq!(st.info.unwrap().size, data.len() as i64);

    let back = read(&mut c, &d, 0, 0).await.unwrap();
    assert_eq!(back.len(), data.len());
    assert_eq!(Digest::of(&back), d, "what is read back hashes to the digest");
    drop(back);

    for (off, len) in
        [(0u64, 1u64), (1, 4096), (123_456_789, 10_000_000), (199_999_990, 10), (199_999_990, 0), (5_000_000, 1 << 20)]
    {
        let got = read(&mut c, &d, off, len).await.unwrap();
        let end = if len == 0 { data.len() } else { (off + len) as usize };
        assert_eq!(&got[..], &data[off as usize..end], "range {off}+{len}");
    }
    // Reading at the end gives nothing; past it is an error.
    assert!(read(&mut c, &d, data.len() as u64, 0).await.unwrap().is_empty());
    let e = read(&mut c, &d, data.len() as u64 + 1, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange, "{e}");

    let missing = Digest::of(b"not there");
    let sm = c
        .stat_many(pb::StatManyRequest { digests: vec![missing.to_string(), d.to_string()] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sm.present.iter().map(|b| b.digest.clone()).collect::<Vec<_>>(), [d.to_string()]);
    assert_eq!(sm.missing, [missing.to_string()]);
    assert_eq!(list(&mut c).await, [d.to_string()]);
    assert!(c.list_writes(pb::ListWritesRequest {}).await.unwrap().into_inner().ingests.is_empty());
}

#[tokio::test]
async fn digest_or_size_mismatch_is_rejected_and_never_visible() {
    let svc = Service::start("store-svc").await;
    let mut c = content(svc.channel().await);
    let data = random_bytes(3 << 20, 2);
    let real = Digest::of(&data);

    // Wrong digest.
    let wrong = Digest::of(b"something else");
    let msgs = write_msgs("bad-digest", &data, &wrong, 0, 1 << 20, true);
    let e = c.write(futures::stream::iter(msgs)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("digest mismatch"), "{e}");

    // Too few bytes at commit.
    let mut msgs = write_msgs("short", &data, &real, 0, 1 << 20, false);
    msgs.pop();
    msgs.last_mut().unwrap().commit = true;
    let e = c.write(futures::stream::iter(msgs)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("size mismatch"), "{e}");

    // Declared total smaller than the data.
    let mut msgs = write_msgs("long", &data, &real, 0, 1 << 20, true);
    msgs[0].total = 1000;
    let e = c.write(futures::stream::iter(msgs)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");

    for d in [&wrong, &real] {
        let e = c.stat(pb::StatRequest { digest: d.to_string() }).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{d} must not be visible");
        assert_eq!(read(&mut c, d, 0, 0).await.unwrap_err().code(), Code::NotFound);
    }
    assert!(list(&mut c).await.is_empty(), "nothing is listed");
    let ingests = c.list_writes(pb::ListWritesRequest {}).await.unwrap().into_inner().ingests;
    let refs: Vec<_> = ingests.iter().map(|i| i.r#ref.as_str()).collect();
    assert!(!refs.contains(&"bad-digest") && !refs.contains(&"short"), "mismatched ingests are discarded: {refs:?}");
    // The over-long one stays resumable (nothing past its total was taken).
    assert_eq!(refs, ["long"]);
    c.abort_write(pb::AbortWriteRequest { r#ref: "long".into() }).await.unwrap();
    assert!(c.list_writes(pb::ListWritesRequest {}).await.unwrap().into_inner().ingests.is_empty());
    let e = c.abort_write(pb::AbortWriteRequest { r#ref: "long".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // The right data still goes in afterwards.
    put(&mut c, "good", &data, 1 << 20).await.unwrap();
    assert_eq!(Digest::of(&read(&mut c, &real, 0, 0).await.unwrap()), real);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_dropped_stream() {
    let svc = Service::start("store-svc").await;
    let mut c = content(svc.channel().await);
    let data = random_bytes(64 << 20, 3);
    let d = Digest::of(&data);
    let half = data.len() / 2;

    // Send half, then drop the call mid-stream (the sender stays open, so only the drop ends it).
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::WriteRequest>(4);
    let mut c2 = c.clone();
    let call = tokio::spawn(async move { c2.write(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    for m in write_msgs("resume-1", &data.slice(..half), &d, 0, 1 << 20, false) {
        let mut m = m;
        if m.total != 0 {
            m.total = data.len() as i64;
        }
        tx.send(m).await.unwrap();
    }
    // Wait until the store has taken the half, then break the stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = c.write_status(pb::WriteStatusRequest { r#ref: "resume-1".into() }).await {
            if s.into_inner().status.unwrap().offset >= (half - (1 << 20)) as i64 {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "store never took the first half");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    drop(tx);

    // The ingest survives with its offset; resume from exactly there.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = c.write_status(pb::WriteStatusRequest { r#ref: "resume-1".into() }).await.unwrap().into_inner();
    let st = st.status.unwrap();
    assert_eq!(st.expected, d.to_string());
    assert_eq!(st.total, data.len() as i64);
    let off = st.offset as usize;
    assert!(off > 0 && off <= half, "offset {off} after sending {half}");
    assert!(c.stat(pb::StatRequest { digest: d.to_string() }).await.is_err(), "not visible before commit");

    // Resuming from a wrong offset is refused and says where to resume.
    let mut bad = write_msgs("resume-1", &data, &d, off + 1, 1 << 20, true);
    bad.truncate(1);
    let e = c.write(futures::stream::iter(bad)).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains(&format!("resume from {off}")), "{e}");

    let r = c.write(futures::stream::iter(write_msgs("resume-1", &data, &d, off, 1 << 20, true))).await.unwrap();
    assert_eq!(r.into_inner().committed.unwrap().size, data.len() as i64);
    assert_eq!(Digest::of(&read(&mut c, &d, 0, 0).await.unwrap()), d);
    let e = c.write_status(pb::WriteStatusRequest { r#ref: "resume-1".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "a committed ingest is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_digest_both_succeed_with_one_copy() {
    let svc = Service::start("store-svc").await;
    let c = content(svc.channel().await);
    let data = random_bytes(32 << 20, 4);
    let d = Digest::of(&data);
    let (mut a, mut b) = (c.clone(), c.clone());
    let (da, db) = (data.clone(), data.clone());
    let (ra, rb) = tokio::join!(
        tokio::spawn(async move { put(&mut a, "writer-a", &da, 256 << 10).await }),
        tokio::spawn(async move { put(&mut b, "writer-b", &db, 256 << 10).await }),
    );
    let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
    assert_eq!(ra.committed.unwrap().digest, d.to_string());
    assert_eq!(rb.committed.unwrap().digest, d.to_string());
    assert_eq!([ra.already_exists, rb.already_exists].iter().filter(|x| !**x).count(), 1, "exactly one created it");
    let mut c = c;
    assert_eq!(list(&mut c).await, [d.to_string()]);
    let files: Vec<_> = std::fs::read_dir(svc.root().join("blobs/sha256")).unwrap().collect();
    assert_eq!(files.len(), 1, "one copy on disk");
    assert!(c.list_writes(pb::ListWritesRequest {}).await.unwrap().into_inner().ingests.is_empty());
    // Writing it once more short-circuits.
    let again = put(&mut c, "writer-c", &data, 1 << 20).await.unwrap();
    assert!(again.already_exists);
}

#[tokio::test]
async fn hostile_input_gets_clear_errors() {
    let svc = Service::start("store-svc").await;
    let mut c = content(svc.channel().await);
    let e = c.stat(pb::StatRequest { digest: "sha256:../../etc/passwd".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = c.stat(pb::StatRequest { digest: "md5:abc".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let data = Bytes::from_static(b"hello");
    let d = Digest::of(&data);
    for r in ["../escape", "/abs", "a b", ""] {
        let e = c.write(futures::stream::iter(write_msgs(r, &data, &d, 0, 1024, true))).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "ref {r:?}: {e}");
    }
    let mut msgs = write_msgs("neg", &data, &d, 0, 1024, true);
    msgs[0].offset = -1;
    assert_eq!(c.write(futures::stream::iter(msgs)).await.unwrap_err().code(), Code::InvalidArgument);
    let mut msgs = write_msgs("neg", &data, &d, 0, 1024, true);
    msgs[0].total = -5;
    assert_eq!(c.write(futures::stream::iter(msgs)).await.unwrap_err().code(), Code::InvalidArgument);
    let e = c.read(pb::ReadRequest { digest: d.to_string(), offset: -1, length: 0 }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = c.write(futures::stream::iter(Vec::<pb::WriteRequest>::new())).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // A new ingest without an expected digest.
    let mut msgs = write_msgs("no-expected", &data, &d, 0, 1024, true);
    msgs[0].expected.clear();
    let e = c.write(futures::stream::iter(msgs)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(list(&mut c).await.is_empty());
    // The store was not escaped from.
    assert!(!svc.dir().join("escape").exists());
}
