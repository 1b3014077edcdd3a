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

    /// Ends the write stream without committing and waits until the store has finished with it
    /// (so an [`Store::abort`] after this finds the ingest, however early the stream ended).
    pub async fn close(mut self) {
        self.tx = None;
        let _ = (&mut self.done).await;
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

    /// Which of `digests` the store has; those present are attached to `lease` in the same step.
    pub async fn present_leased(&self, lease: &str, digests: &[Digest]) -> Result<HashSet<Digest>, RegistryError> {
        let mut c = spb::leases_client::LeasesClient::new(self.channel.clone());
        let req =
            spb::AddPresentRequest { id: lease.to_string(), digests: digests.iter().map(|d| d.to_string()).collect() };
        let resp = c.add_present(req).await.map_err(store_err)?.into_inner();
        Ok(resp.present.iter().filter_map(|b| b.digest.parse().ok()).collect())
    }

    /// Opens a new ingest for `digest` under `reference` (unique to this attempt, so there is no
    /// stale ingest to clear first), protected by `lease`. The data starts flowing at once; the
    /// store's answers come at commit.
    pub async fn ingest(
        &self,
        reference: &str,
        digest: &Digest,
        size: i64,
        lease: &str,
    ) -> Result<Ingest, RegistryError> {
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

    /// Stores the small `blobs` (manifests, config), makes every blob durable, sets the record
    /// `name` → `target` and releases `lease`, in one call. Returns the record's previous target.
    pub async fn commit_image(
        &self,
        name: &str,
        target: &Descriptor,
        blobs: Vec<(Digest, Bytes)>,
        lease: &str,
    ) -> Result<Option<String>, RegistryError> {
        let mut c = spb::images_client::ImagesClient::new(self.channel.clone()).max_encoding_message_size(64 << 20);
        let image = spb::Image { name: name.to_string(), target: Some(target.to_proto()), ..Default::default() };
        let req = spb::CommitImageRequest {
            image: Some(image),
            blobs: blobs
                .into_iter()
                .map(|(d, data)| spb::InlineBlob { digest: d.to_string(), data: data.to_vec() })
                .collect(),
            release_lease: lease.to_string(),
        };
        let resp = c.commit(req).await.map_err(store_err)?.into_inner();
        Ok(Some(resp.previous_target).filter(|p| !p.is_empty()))
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
