//! Helpers shared by the store-svc integration tests (`tests/store_*.rs`).
#![allow(dead_code)]

use berth_common::Digest;
use berth_proto::store::v1 as pb;
use berth_proto::store::v1::content_client::ContentClient;
use bytes::Bytes;
use futures::StreamExt;
use tonic::transport::Channel;

/// A content client with message limits large enough for 4 MiB chunks.
pub fn content(ch: Channel) -> ContentClient<Channel> {
    ContentClient::new(ch).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

/// `n` pseudo-random bytes (xorshift; incompressible enough, fast to make).
pub fn random_bytes(n: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    Bytes::from(v)
}

/// The write messages for `data[from..]` in `chunk`-sized pieces; the first carries ref,
/// expected and total, the last commits when `commit`.
pub fn write_msgs(
    r: &str,
    data: &Bytes,
    expected: &Digest,
    from: usize,
    chunk: usize,
    commit: bool,
) -> Vec<pb::WriteRequest> {
    let mut out = Vec::new();
    let mut off = from;
    loop {
        let end = (off + chunk).min(data.len());
        out.push(pb::WriteRequest {
            r#ref: if out.is_empty() { r.to_string() } else { String::new() },
            expected: if out.is_empty() { expected.to_string() } else { String::new() },
            total: if out.is_empty() { data.len() as i64 } else { 0 },
            offset: off as i64,
            data: data.slice(off..end),
            commit: commit && end == data.len(),
            lease: String::new(),
        });
        off = end;
        if off >= data.len() {
            break;
        }
    }
    out
}

/// Writes `data` as one blob under `r` and commits it.
pub async fn put(
    c: &mut ContentClient<Channel>,
    r: &str,
    data: &Bytes,
    chunk: usize,
) -> Result<pb::WriteResponse, tonic::Status> {
    let d = Digest::of(data);
    let msgs = write_msgs(r, data, &d, 0, chunk, true);
    c.write(futures::stream::iter(msgs)).await.map(|r| r.into_inner())
}

/// Writes `data` as a blob (ref derived from the digest) and returns its digest.
pub async fn put_blob(c: &mut ContentClient<Channel>, data: &[u8]) -> Digest {
    let data = Bytes::copy_from_slice(data);
    let d = Digest::of(&data);
    put(c, &format!("t-{}", d.hex()), &data, 1 << 20).await.unwrap_or_else(|e| panic!("writing {d}: {e}"));
    d
}

/// Reads `length` bytes (0: to the end) from `offset`, checking the offsets of the responses.
pub async fn read(
    c: &mut ContentClient<Channel>,
    d: &Digest,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut s = c
        .read(pb::ReadRequest { digest: d.to_string(), offset: offset as i64, length: length as i64 })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        let m = m?;
        assert_eq!(m.offset as u64, offset + out.len() as u64, "ReadResponse.offset must follow the data");
        out.extend_from_slice(&m.data);
    }
    Ok(out)
}

/// Every committed blob's digest.
pub async fn list(c: &mut ContentClient<Channel>) -> Vec<String> {
    let mut s = c.list(pb::ListRequest {}).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.next().await {
        out.extend(m.unwrap().blobs.into_iter().map(|b| b.digest));
    }
    out
}
