//! Conformance suite for [`Backend`] implementations, in the manner of containerd's
//! `core/content/testsuite`: one generic function that every backend must pass. The filesystem
//! backend runs it in its unit tests; an S3 backend would run it against a test bucket.
//!
//! The suite only uses keys under a fresh random prefix and staging ids with a random suffix,
//! so it can run against a shared bucket; it panics with a message on the first failure.

use super::{Backend, BackendError, CommitOutcome};
use bytes::Bytes;
use futures::TryStreamExt;

async fn read_all<B: Backend + ?Sized>(b: &B, key: &str, off: u64, len: Option<u64>, chunk: usize) -> Vec<u8> {
    let s = b.get(key, off, len, chunk).await.unwrap_or_else(|e| panic!("get {key}: {e}"));
    let chunks: Vec<Bytes> = s.try_collect().await.unwrap_or_else(|e| panic!("reading {key}: {e}"));
    chunks.concat()
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Runs every conformance check against `b`.
pub async fn run<B: Backend + ?Sized>(b: &B) {
    let p = format!("conf{}", uuid::Uuid::new_v4().simple());
    objects(b, &p).await;
    ranges(b, &p).await;
    listing(b, &p).await;
    invalid_keys(b).await;
    staging(b, &p).await;
    concurrent_commits(b, &p).await;
}

async fn objects<B: Backend + ?Sized>(b: &B, p: &str) {
    let key = format!("{p}/obj/a.json");
    assert!(b.head(&key).await.unwrap().is_none(), "head of a missing object must be None");
    assert!(matches!(b.get(&key, 0, None, 1024).await, Err(BackendError::NotFound(_))), "get of a missing object");
    b.put(&key, Bytes::from_static(b"first")).await.unwrap();
    let m = b.head(&key).await.unwrap().expect("object after put");
    assert_eq!(m.size, 5);
    assert_eq!(m.key, key);
    assert_eq!(read_all(b, &key, 0, None, 1024).await, b"first");
    b.put(&key, Bytes::from_static(b"second!")).await.unwrap();
    assert_eq!(read_all(b, &key, 0, None, 1024).await, b"second!", "put must replace");
    assert_eq!(&b.get_bytes(&key, 100).await.unwrap()[..], b"second!");
    assert!(b.get_bytes(&key, 3).await.is_err(), "get_bytes must enforce its limit");
    assert!(b.delete(&key).await.unwrap(), "delete of a present object returns true");
    assert!(!b.delete(&key).await.unwrap(), "delete of an absent object returns false");
    assert!(b.head(&key).await.unwrap().is_none());
    b.put(&format!("{p}/obj/empty"), Bytes::new()).await.unwrap();
    assert_eq!(b.head(&format!("{p}/obj/empty")).await.unwrap().unwrap().size, 0);
    assert!(read_all(b, &format!("{p}/obj/empty"), 0, None, 1024).await.is_empty());
}

async fn ranges<B: Backend + ?Sized>(b: &B, p: &str) {
    let key = format!("{p}/range/big");
    let data = pattern(3 * 1024 * 1024 + 17, 7);
    b.put(&key, Bytes::from(data.clone())).await.unwrap();
    assert_eq!(read_all(b, &key, 0, None, 1 << 20).await, data, "whole read in 1 MiB chunks");
    let chunks: Vec<Bytes> = b.get(&key, 0, None, 1 << 20).await.unwrap().try_collect().await.unwrap();
    assert!(chunks.len() >= 4 && chunks.iter().all(|c| c.len() <= 1 << 20), "reads come in bounded chunks");
    assert_eq!(read_all(b, &key, 1000, Some(5000), 4096).await, &data[1000..6000]);
    assert_eq!(read_all(b, &key, data.len() as u64 - 10, None, 4096).await, &data[data.len() - 10..]);
    assert_eq!(read_all(b, &key, data.len() as u64 - 10, Some(100), 4096).await, &data[data.len() - 10..]);
    assert!(read_all(b, &key, data.len() as u64, None, 4096).await.is_empty(), "read at end is empty");
    assert!(read_all(b, &key, 0, Some(0), 4096).await.is_empty(), "zero-length read is empty");
}

async fn listing<B: Backend + ?Sized>(b: &B, p: &str) {
    for k in ["l/b", "l/a", "l/sub/c", "m/x", "lx"] {
        b.put(&format!("{p}/{k}"), Bytes::from_static(b"1")).await.unwrap();
    }
    let keys: Vec<String> = b.list(&format!("{p}/l/")).await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(keys, [format!("{p}/l/a"), format!("{p}/l/b"), format!("{p}/l/sub/c")], "list is recursive and sorted");
    let keys: Vec<String> = b.list(&format!("{p}/l")).await.unwrap().into_iter().map(|m| m.key).collect();
    assert_eq!(keys.len(), 4, "a prefix need not end at a /: {keys:?}");
    assert!(b.list(&format!("{p}/nothing/")).await.unwrap().is_empty());
}

async fn invalid_keys<B: Backend + ?Sized>(b: &B) {
    for k in ["../escape", "/abs", "a/../../b", "a//b", "sp ace", ""] {
        assert!(matches!(b.put(k, Bytes::new()).await, Err(BackendError::InvalidKey(_))), "put {k:?}");
        assert!(matches!(b.head(k).await, Err(BackendError::InvalidKey(_))), "head {k:?}");
    }
    assert!(matches!(b.stage_open("../x").await, Err(BackendError::InvalidKey(_))));
}

async fn staging<B: Backend + ?Sized>(b: &B, p: &str) {
    let id = format!("st-{}", uuid::Uuid::new_v4().simple());
    let mut w = b.stage_open(&id).await.unwrap();
    assert_eq!(w.len(), 0);
    w.append(vec![Bytes::from_static(b"hello "), Bytes::from_static(b"wor")]).await.unwrap();
    assert_eq!(w.len(), 9);
    w.sync().await.unwrap();
    drop(w);
    let mut w = b.stage_open(&id).await.unwrap();
    assert_eq!(w.len(), 9, "reopening a staged ingest continues at its length");
    w.append(vec![Bytes::from_static(b"ld")]).await.unwrap();
    w.sync().await.unwrap();
    drop(w);
    let staged: Vec<Bytes> = b.stage_read(&id, 4).await.unwrap().try_collect().await.unwrap();
    assert_eq!(staged.concat(), b"hello world");
    let listed = b.stage_list().await.unwrap();
    assert!(listed.iter().any(|m| m.key == id && m.size == 11), "stage_list shows the ingest: {listed:?}");
    let key = format!("{p}/blobs/one");
    assert_eq!(b.stage_commit(&id, &key).await.unwrap(), CommitOutcome::Created);
    assert_eq!(read_all(b, &key, 0, None, 1024).await, b"hello world");
    assert!(!b.stage_list().await.unwrap().iter().any(|m| m.key == id), "commit consumes the staged data");
    assert!(matches!(b.stage_commit(&id, &key).await, Err(BackendError::NotFound(_))));

    // A second commit to the same key keeps the first object.
    let id2 = format!("st-{}", uuid::Uuid::new_v4().simple());
    let mut w = b.stage_open(&id2).await.unwrap();
    w.append(vec![Bytes::from_static(b"other")]).await.unwrap();
    w.sync().await.unwrap();
    drop(w);
    assert_eq!(b.stage_commit(&id2, &key).await.unwrap(), CommitOutcome::AlreadyExists);
    assert_eq!(read_all(b, &key, 0, None, 1024).await, b"hello world", "commit never replaces");
    assert!(!b.stage_list().await.unwrap().iter().any(|m| m.key == id2));

    // Delete.
    let id3 = format!("st-{}", uuid::Uuid::new_v4().simple());
    drop(b.stage_open(&id3).await.unwrap());
    assert!(b.stage_delete(&id3).await.unwrap());
    assert!(!b.stage_delete(&id3).await.unwrap());
    assert!(matches!(b.stage_read(&id3, 1024).await, Err(BackendError::NotFound(_))));
}

async fn concurrent_commits<B: Backend + ?Sized>(b: &B, p: &str) {
    let key = format!("{p}/blobs/race");
    let data = pattern(256 * 1024, 3);
    let mut ids = Vec::new();
    for _ in 0..8 {
        let id = format!("st-{}", uuid::Uuid::new_v4().simple());
        let mut w = b.stage_open(&id).await.unwrap();
        w.append(vec![Bytes::from(data.clone())]).await.unwrap();
        w.sync().await.unwrap();
        ids.push(id);
    }
    let outcomes = futures::future::join_all(ids.iter().map(|id| b.stage_commit(id, &key))).await;
    let created = outcomes.iter().filter(|o| matches!(o, Ok(CommitOutcome::Created))).count();
    let existed = outcomes.iter().filter(|o| matches!(o, Ok(CommitOutcome::AlreadyExists))).count();
    assert_eq!((created, existed), (1, 7), "exactly one of 8 racing commits creates: {outcomes:?}");
    assert_eq!(read_all(b, &key, 0, None, 1 << 20).await, data);
    assert_eq!(b.list(&format!("{p}/blobs/race")).await.unwrap().len(), 1);
}
