//! The gRPC face of registry-svc: converts between the generated types and the domain, and maps
//! [`RegistryError`] to status codes (the one `From<RegistryError> for Status`).

use crate::error::RegistryError;
use crate::pull::{BlobKind, BlobState, Event, Puller};
use berth_common::image::Platform;
use berth_common::reference::Reference;
use berth_proto::registry::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// Fully qualified names of the gRPC services served (for health).
pub const SERVICE_NAMES: &[&str] = &["berth.registry.v1.Registry"];

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::InvalidReference(_) | RegistryError::InvalidPlatform(_) => Status::invalid_argument(msg),
            RegistryError::ManifestNotFound { .. } | RegistryError::BlobNotFound { .. } => Status::not_found(msg),
            RegistryError::Unauthorized { .. } => Status::unauthenticated(msg),
            RegistryError::RateLimited { .. } => Status::resource_exhausted(msg),
            RegistryError::Unreachable { .. } => Status::unavailable(msg),
            RegistryError::Upstream { status, .. } if status >= 500 => Status::unavailable(msg),
            RegistryError::Upstream { .. } => Status::failed_precondition(msg),
            RegistryError::BadContent { .. } => Status::data_loss(msg),
            RegistryError::NoMatchingPlatform(_) | RegistryError::Unsupported(_) => Status::failed_precondition(msg),
            RegistryError::Store { unavailable: true, .. } => Status::unavailable(msg),
            RegistryError::Store { .. } | RegistryError::Config(_) => Status::internal(msg),
            RegistryError::Abandoned(_) => Status::aborted(msg),
        }
    }
}

/// The Registry service.
pub struct RegistryService {
    puller: Arc<Puller>,
}

impl RegistryService {
    /// Serves pulls through `puller`.
    pub fn new(puller: Arc<Puller>) -> Self {
        Self { puller }
    }
}

fn platform_of(p: Option<berth_proto::types::v1::Platform>) -> Result<Option<Platform>, RegistryError> {
    match p {
        None => Ok(None),
        Some(p) if p.os.is_empty() && p.architecture.is_empty() => Ok(None),
        Some(p) => {
            let s = if p.variant.is_empty() {
                format!("{}/{}", p.os, p.architecture)
            } else {
                format!("{}/{}/{}", p.os, p.architecture, p.variant)
            };
            Platform::parse(&s).map(Some).map_err(RegistryError::InvalidPlatform)
        }
    }
}

fn event_to_proto(e: Event) -> pb::PullEvent {
    use pb::pull_event::Event as E;
    let ev = match e {
        Event::Started(s) => E::Started(pb::PullStarted {
            name: s.name,
            target: Some(s.target.to_proto()),
            manifest: Some(s.manifest.to_proto()),
            layers: s.layers.iter().map(|l| l.to_proto()).collect(),
            config: Some(s.config.to_proto()),
            endpoint: s.endpoint,
        }),
        Event::Blob(b) => E::Blob(pb::BlobProgress {
            digest: b.digest.to_string(),
            kind: match b.kind {
                BlobKind::Layer => pb::BlobKind::Layer,
                BlobKind::Config => pb::BlobKind::Config,
                BlobKind::Manifest => pb::BlobKind::Manifest,
            } as i32,
            state: match b.state {
                BlobState::Waiting => pb::BlobState::Waiting,
                BlobState::Downloading => pb::BlobState::Downloading,
                BlobState::Verifying => pb::BlobState::Verifying,
                BlobState::Done => pb::BlobState::Done,
                BlobState::AlreadyExists => pb::BlobState::AlreadyExists,
                BlobState::Retrying => pb::BlobState::Retrying,
                BlobState::Shared => pb::BlobState::Shared,
            } as i32,
            offset: b.offset as i64,
            total: b.total as i64,
            message: b.message,
        }),
        Event::Done(d) => E::Done(pb::PullDone {
            name: d.name,
            target: Some(d.target.to_proto()),
            image_id: d.image_id.to_string(),
            status: if d.updated { pb::PullStatus::DownloadedNewer } else { pb::PullStatus::UpToDate } as i32,
            bytes_downloaded: d.bytes_downloaded as i64,
            blobs_present: d.blobs_present as i32,
            blobs_fetched: d.blobs_fetched as i32,
        }),
    };
    pb::PullEvent { event: Some(ev) }
}

type PullStream = Pin<Box<dyn Stream<Item = Result<pb::PullEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::registry_server::Registry for RegistryService {
    async fn resolve(&self, req: Request<pb::ResolveRequest>) -> Result<Response<pb::ResolveResponse>, Status> {
        let req = req.into_inner();
        let r = Reference::parse(&req.reference)
            .map_err(|e| Status::from(RegistryError::InvalidReference(e.to_string())))?;
        let platform = platform_of(req.platform)?.unwrap_or_else(Platform::host);
        let res = self.puller.resolve(&r, &platform).await?;
        Ok(Response::new(pb::ResolveResponse {
            name: r.to_string(),
            target: Some(res.target.to_proto()),
            manifest: Some(res.manifest_desc.to_proto()),
            platforms: res.platforms.iter().map(|p| p.to_proto()).collect(),
        }))
    }

    type PullStream = PullStream;

    async fn pull(&self, req: Request<pb::PullRequest>) -> Result<Response<Self::PullStream>, Status> {
        let req = req.into_inner();
        let platform = platform_of(req.platform)?;
        let (tx, mut rx) = mpsc::channel::<Event>(256);
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::PullEvent, Status>>(256);
        let puller = self.puller.clone();
        let reference = req.reference.clone();
        tokio::spawn(async move {
            let fwd_tx = out_tx.clone();
            let forward = tokio::spawn(async move {
                while let Some(e) = rx.recv().await {
                    if fwd_tx.send(Ok(event_to_proto(e))).await.is_err() {
                        // The client went away; keep draining so the pull can finish.
                        continue;
                    }
                }
            });
            let result = puller.pull(&reference, platform, tx).await;
            let _ = forward.await;
            match result {
                Ok(done) => tracing::info!(name = %done.name, bytes = done.bytes_downloaded, "pulled"),
                Err(e) => {
                    tracing::warn!(reference = %reference, error = %e, "pull failed");
                    let _ = out_tx.send(Err(Status::from(e))).await;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out_rx))))
    }
}
