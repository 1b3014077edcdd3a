//! The store-svc client as registry-svc uses it: which blobs exist, streaming writes into
//! ingests, image records and leases. This is the one module besides `grpc` that names the
//! generated store types; the pull logic speaks the domain types below.

use crate::error::RegistryError;
use berth_common::image::Descriptor;
use berth_common::Digest;
use berth_proto::store::v1 as spb;
use bytes::Bytes;
use std::collections::HashSet;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

fn store_err(s: tonic::Status) -> RegistryError {
    RegistryError::Store {
        unavailable: s.code() == tonic::Code::Unavailable,
        message: if s.message().is_empty() { format!("{:?}", s.code()) } else { s.message().to_string() },
    }
}

/// A handle on store-svc.
#[derive(Clone)]
pub struct Store {
    channel: Channel,
}

/// An open ingest: send data in order, then [`Ingest::commit`] or drop (→ [`Store::abort`]).
pub struct Ingest {
    tx: Option<mpsc::Sender<spb::WriteRequest>>,
    done: tokio::task::JoinHandle<Result<spb::WriteResponse, tonic::Status>>,
    /// The ingest's ref.
    pub reference: String,
    offset: i64,
}

impl Ingest {
    /// Appends bytes.
    pub async fn write(&mut self, data: Bytes) -> Result<(), RegistryError> {
        let len = data.len() as i64;
        let msg = spb::WriteRequest { offset: self.offset, data, ..Default::default() };
        self.send(msg).await?;
        self.offset += len;
        Ok(())
    }

    async fn send(&mut self, msg: spb::WriteRequest) -> Result<(), RegistryError> {
        let Some(tx) = &self.tx else { return Err(store_err(tonic::Status::internal("ingest already closed"))) };
        if tx.send(msg).await.is_err() {
            // The call ended early: report why.
            self.tx = None;
            return Err(match (&mut self.done).await {
                Ok(Err(s)) => store_err(s),
                _ => store_err(tonic::Status::unavailable("the write stream to store-svc closed")),
            });
        }
        Ok(())
    }

    /// Commits: the store checks size and digest and makes the blob visible.
    pub async fn commit(mut self) -> Result<(), RegistryError> {
        let msg = spb::WriteRequest { offset: self.offset, commit: true, ..Default::default() };
        self.send(msg).await?;
        self.tx = None;
        match (&mut self.done).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(store_err(s)),
            Err(e) => Err(store_err(tonic::Status::internal(e.to_string()))),
        }
    }
}

impl Store {
    /// Wraps a channel to store-svc.
    pub fn new(channel: Channel) -> Self {
        Self { channel }
    }

    fn content(&self) -> spb::content_client::ContentClient<Channel> {
        spb::content_client::ContentClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// Which of `digests` the store has.
    pub async fn present(&self, digests: &[Digest]) -> Result<HashSet<Digest>, RegistryError> {
        let req = spb::StatManyRequest { digests: digests.iter().map(|d| d.to_string()).collect() };
        let resp = self.content().stat_many(req).await.map_err(store_err)?.into_inner();
        Ok(resp.present.iter().filter_map(|b| b.digest.parse().ok()).collect())
    }

    /// Opens (a fresh) ingest for `digest`, protected by `lease`.
    pub async fn ingest(
        &self,
        reference: &str,
        digest: &Digest,
        size: i64,
        lease: &str,
    ) -> Result<Ingest, RegistryError> {
        self.open_ingest(reference, digest, size, lease, true).await
    }

    async fn open_ingest(
        &self,
        reference: &str,
        digest: &Digest,
        size: i64,
        lease: &str,
        fresh_check: bool,
    ) -> Result<Ingest, RegistryError> {
        if fresh_check {
            // A stale ingest of the same ref (an earlier failed pull) would not match offset 0.
            let _ = self.content().abort_write(spb::AbortWriteRequest { r#ref: reference.to_string() }).await;
        }
        let (tx, rx) = mpsc::channel(4);
        let mut client = self.content();
        let done = tokio::spawn(async move { client.write(ReceiverStream::new(rx)).await.map(|r| r.into_inner()) });
        let mut ing = Ingest { tx: Some(tx), done, reference: reference.to_string(), offset: 0 };
        let first = spb::WriteRequest {
            r#ref: reference.to_string(),
            expected: digest.to_string(),
            total: size,
            offset: 0,
            lease: lease.to_string(),
            ..Default::default()
        };
        ing.send(first).await?;
        Ok(ing)
    }

    /// Discards an ingest (best effort).
    pub async fn abort(&self, reference: &str) {
        let _ = self.content().abort_write(spb::AbortWriteRequest { r#ref: reference.to_string() }).await;
    }

    /// Writes a small blob in one message and commits it.
    pub async fn put_blob(&self, digest: &Digest, data: Bytes, lease: &str) -> Result<(), RegistryError> {
        let reference = format!("pull-small-{}-{}", digest.hex(), uuid::Uuid::new_v4());
        // A unique ref: no stale ingest to clear. Data and commit in one message.
        let mut ing = self.open_ingest(&reference, digest, data.len() as i64, lease, false).await?;
        let msg = spb::WriteRequest { offset: 0, data, commit: true, ..Default::default() };
        ing.send(msg).await?;
        ing.tx = None;
        match (&mut ing.done).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(s)) => Err(store_err(s)),
            Err(e) => Err(store_err(tonic::Status::internal(e.to_string()))),
        }
    }

    /// The record's current target digest, if the record exists.
    pub async fn record_target(&self, name: &str) -> Result<Option<String>, RegistryError> {
        let mut c = spb::images_client::ImagesClient::new(self.channel.clone());
        match c.get(spb::GetImageRequest { name: name.to_string() }).await {
            Ok(r) => Ok(r.into_inner().image.and_then(|i| i.target).map(|t| t.digest)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(store_err(s)),
        }
    }

    /// Creates or replaces an image record.
    pub async fn put_record(&self, name: &str, target: &Descriptor) -> Result<(), RegistryError> {
        let mut c = spb::images_client::ImagesClient::new(self.channel.clone());
        let image = spb::Image { name: name.to_string(), target: Some(target.to_proto()), ..Default::default() };
        c.put(spb::PutImageRequest { image: Some(image) }).await.map_err(store_err)?;
        Ok(())
    }

    /// Creates a lease that expires on its own after `ttl_seconds`.
    pub async fn create_lease(&self, label: &str, ttl_seconds: i64) -> Result<String, RegistryError> {
        let mut c = spb::leases_client::LeasesClient::new(self.channel.clone());
        let req = spb::CreateLeaseRequest {
            id: String::new(),
            ttl_seconds,
            labels: [("berth.pull".to_string(), label.to_string())].into_iter().collect(),
        };
        let lease = c.create(req).await.map_err(store_err)?.into_inner().lease.unwrap_or_default();
        Ok(lease.id)
    }

    /// Protects an existing blob with a lease.
    pub async fn lease_blob(&self, lease: &str, digest: &Digest) -> Result<(), RegistryError> {
        let mut c = spb::leases_client::LeasesClient::new(self.channel.clone());
        let req =
            spb::AddLeaseResourceRequest { id: lease.to_string(), digest: digest.to_string(), ingest: String::new() };
        c.add_resource(req).await.map_err(store_err)?;
        Ok(())
    }

    /// Releases a lease (best effort).
    pub async fn delete_lease(&self, lease: &str) {
        let mut c = spb::leases_client::LeasesClient::new(self.channel.clone());
        let _ = c.delete(spb::DeleteLeaseRequest { id: lease.to_string() }).await;
    }
}
