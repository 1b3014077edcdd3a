//! The gRPC face of the store: thin tonic services over [`Store`], conversions between the
//! generated types and the domain's, and the one mapping of [`StoreError`] to gRPC status codes.

use crate::backend::BackendError;
use crate::error::StoreError;
use crate::ingest::WriteChunk;
use crate::model::{self, parse_digest, size_from_wire, BlobInfo, Descriptor, IngestStatus};
use crate::store::Store;
use berth_proto::store::v1 as pb;
use berth_proto::types::v1 as types;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status, Streaming};

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        use StoreError as E;
        let msg = e.to_string();
        match e {
            E::InvalidDigest(_) | E::InvalidArgument(_) | E::DigestMismatch { .. } | E::TargetSizeMismatch { .. } => {
                Status::invalid_argument(msg)
            }
            E::OutOfRange { .. } => Status::out_of_range(msg),
            E::BlobNotFound(_)
            | E::IngestNotFound(_)
            | E::ImageNotFound(_)
            | E::CacheNotFound(_)
            | E::LeaseNotFound(_) => Status::not_found(msg),
            E::LeaseExists(_) => Status::already_exists(msg),
            E::MissingTarget { .. } | E::SizeMismatch { .. } | E::OffsetMismatch { .. } | E::IngestConflict { .. } => {
                Status::failed_precondition(msg)
            }
            E::IngestBusy(_) => Status::unavailable(msg),
            E::StreamBroken { .. } => Status::aborted(msg),
            E::Backend(BackendError::NotFound(_)) => Status::not_found(msg),
            E::Backend(BackendError::InvalidKey(_)) => Status::invalid_argument(msg),
            E::Backend(BackendError::Io { ref source, .. })
                if source.raw_os_error() == Some(libc::ENOSPC) || source.raw_os_error() == Some(libc::EDQUOT) =>
            {
                Status::resource_exhausted(msg)
            }
            E::Backend(_) | E::CorruptRecord { .. } | E::Internal(_) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal(msg)
            }
        }
    }
}

type Res<T> = Result<Response<T>, Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn ts(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn blob_info(i: BlobInfo) -> pb::BlobInfo {
    pb::BlobInfo { digest: i.digest.to_string(), size: i.size as i64, created_at: Some(ts(i.created_at)) }
}

fn ingest_status(s: IngestStatus) -> pb::IngestStatus {
    pb::IngestStatus {
        r#ref: s.ref_,
        expected: s.expected.to_string(),
        total: s.total as i64,
        offset: s.offset as i64,
        started_at: Some(ts(s.started_at)),
        updated_at: Some(ts(s.updated_at)),
    }
}

fn descriptor_in(field: &str, d: Option<types::Descriptor>) -> Result<Descriptor, StoreError> {
    let d = d.ok_or_else(|| StoreError::InvalidArgument(format!("{field} is required")))?;
    Ok(Descriptor {
        media_type: d.media_type,
        digest: parse_digest(&format!("{field}.digest"), &d.digest)?,
        size: size_from_wire(&format!("{field}.size"), d.size)?,
        annotations: d.annotations.into_iter().collect(),
        platform: d.platform.map(|p| model::Platform {
            os: p.os,
            architecture: p.architecture,
            variant: p.variant,
            os_version: p.os_version,
        }),
    })
}

fn descriptor_out(d: Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type,
        digest: d.digest.to_string(),
        size: d.size as i64,
        annotations: d.annotations.into_iter().collect(),
        platform: d.platform.map(|p| types::Platform {
            os: p.os,
            architecture: p.architecture,
            variant: p.variant,
            os_version: p.os_version,
        }),
    }
}

fn image_out(r: model::ImageRecord) -> pb::Image {
    pb::Image {
        name: r.name,
        target: Some(descriptor_out(r.target)),
        created_at: Some(ts(r.created_at)),
        updated_at: Some(ts(r.updated_at)),
        labels: r.labels.into_iter().collect(),
    }
}

fn cache_out(e: model::CacheEntry) -> pb::CacheEntry {
    pb::CacheEntry {
        key: e.key,
        target: Some(descriptor_out(e.target)),
        created_at: Some(ts(e.created_at)),
        last_used_at: Some(ts(e.last_used_at)),
    }
}

fn lease_out(l: model::Lease) -> pb::Lease {
    pb::Lease {
        id: l.id,
        created_at: Some(ts(l.created_at)),
        expires_at: l.expires_at.map(ts),
        labels: l.labels.into_iter().collect(),
        digests: l.digests.into_iter().map(|d| d.to_string()).collect(),
        ingests: l.ingests.into_iter().collect(),
    }
}

/// The `berth.store.v1.Content` service.
#[derive(Clone, Debug)]
pub struct ContentService(pub Arc<Store>);

#[tonic::async_trait]
impl pb::content_server::Content for ContentService {
    async fn stat(&self, req: Request<pb::StatRequest>) -> Res<pb::StatResponse> {
        let d = parse_digest("digest", &req.into_inner().digest)?;
        let info = self.0.stat(&d).await?;
        Ok(Response::new(pb::StatResponse { info: Some(blob_info(info)) }))
    }

    async fn stat_many(&self, req: Request<pb::StatManyRequest>) -> Res<pb::StatManyResponse> {
        let digests =
            req.into_inner().digests.iter().map(|d| parse_digest("digests[]", d)).collect::<Result<Vec<_>, _>>()?;
        let (present, missing) = self.0.stat_many(&digests).await?;
        Ok(Response::new(pb::StatManyResponse {
            present: present.into_iter().map(blob_info).collect(),
            missing: missing.into_iter().map(|d| d.to_string()).collect(),
        }))
    }

    type ReadStream = BoxStream<pb::ReadResponse>;

    async fn read(&self, req: Request<pb::ReadRequest>) -> Res<Self::ReadStream> {
        let r = req.into_inner();
        let d = parse_digest("digest", &r.digest)?;
        let offset = size_from_wire("offset", r.offset)?;
        let length = size_from_wire("length", r.length)?;
        let stream = self.0.read(&d, offset, length).await?;
        let out = stream.scan(offset, |pos, chunk| {
            let item = match chunk {
                Ok(data) => {
                    let at = *pos;
                    *pos += data.len() as u64;
                    Ok(pb::ReadResponse { offset: at as i64, data })
                }
                Err(e) => Err(Status::from(StoreError::from(e))),
            };
            futures::future::ready(Some(item))
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn write(&self, req: Request<Streaming<pb::WriteRequest>>) -> Res<pb::WriteResponse> {
        let input = req.into_inner().map(|m| match m {
            Ok(m) => Ok(WriteChunk {
                ref_: m.r#ref,
                expected: m.expected,
                total: m.total,
                offset: m.offset,
                data: m.data,
                commit: m.commit,
                lease: m.lease,
            }),
            Err(status) => {
                Err(StoreError::StreamBroken { ref_: String::new(), offset: 0, detail: status.message().to_string() })
            }
        });
        let out = self.0.write(input).await?;
        Ok(Response::new(pb::WriteResponse {
            offset: out.offset as i64,
            committed: out.committed.map(blob_info),
            already_exists: out.already_exists,
        }))
    }

    async fn write_status(&self, req: Request<pb::WriteStatusRequest>) -> Res<pb::WriteStatusResponse> {
        let s = self.0.write_status(&req.into_inner().r#ref)?;
        Ok(Response::new(pb::WriteStatusResponse { status: Some(ingest_status(s)) }))
    }

    async fn list_writes(&self, _req: Request<pb::ListWritesRequest>) -> Res<pb::ListWritesResponse> {
        Ok(Response::new(pb::ListWritesResponse {
            ingests: self.0.list_writes().into_iter().map(ingest_status).collect(),
        }))
    }

    async fn abort_write(&self, req: Request<pb::AbortWriteRequest>) -> Res<pb::AbortWriteResponse> {
        self.0.abort_write(&req.into_inner().r#ref).await?;
        Ok(Response::new(pb::AbortWriteResponse {}))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Res<pb::DeleteResponse> {
        let d = parse_digest("digest", &req.into_inner().digest)?;
        self.0.delete(&d).await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    type ListStream = BoxStream<pb::ListResponse>;

    async fn list(&self, _req: Request<pb::ListRequest>) -> Res<Self::ListStream> {
        let blobs = self.0.list().await?;
        let batches: Vec<pb::ListResponse> = blobs
            .chunks(1000)
            .map(|c| pb::ListResponse { blobs: c.iter().cloned().map(blob_info).collect() })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(batches).map(Ok))))
    }
}

/// The `berth.store.v1.Images` service.
#[derive(Clone, Debug)]
pub struct ImagesService(pub Arc<Store>);

#[tonic::async_trait]
impl pb::images_server::Images for ImagesService {
    async fn get(&self, req: Request<pb::GetImageRequest>) -> Res<pb::GetImageResponse> {
        let r = self.0.image_get(&req.into_inner().name).await?;
        Ok(Response::new(pb::GetImageResponse { image: Some(image_out(r)) }))
    }

    async fn list(&self, req: Request<pb::ListImagesRequest>) -> Res<pb::ListImagesResponse> {
        let images = self.0.image_list(&req.into_inner().prefix).await;
        Ok(Response::new(pb::ListImagesResponse { images: images.into_iter().map(image_out).collect() }))
    }

    async fn put(&self, req: Request<pb::PutImageRequest>) -> Res<pb::PutImageResponse> {
        let image = req.into_inner().image.ok_or_else(|| StoreError::InvalidArgument("image is required".into()))?;
        let target = descriptor_in("image.target", image.target)?;
        let r = self.0.image_put(&image.name, target, image.labels.into_iter().collect()).await?;
        Ok(Response::new(pb::PutImageResponse { image: Some(image_out(r)) }))
    }

    async fn commit(&self, req: Request<pb::CommitImageRequest>) -> Res<pb::CommitImageResponse> {
        let r = req.into_inner();
        let image = r.image.ok_or_else(|| StoreError::InvalidArgument("image is required".into()))?;
        let target = descriptor_in("image.target", image.target)?;
        let blobs = r
            .blobs
            .into_iter()
            .map(|b| Ok((parse_digest("blobs[].digest", &b.digest)?, bytes::Bytes::from(b.data))))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let lease = (!r.release_lease.is_empty()).then_some(r.release_lease.as_str());
        let (rec, previous) =
            self.0.image_commit(&image.name, target, image.labels.into_iter().collect(), blobs, lease).await?;
        Ok(Response::new(pb::CommitImageResponse {
            image: Some(image_out(rec)),
            previous_target: previous.map(|d| d.to_string()).unwrap_or_default(),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteImageRequest>) -> Res<pb::DeleteImageResponse> {
        self.0.image_delete(&req.into_inner().name).await?;
        Ok(Response::new(pb::DeleteImageResponse {}))
    }
}

/// The `berth.store.v1.BuildCache` service.
#[derive(Clone, Debug)]
pub struct BuildCacheService(pub Arc<Store>);

#[tonic::async_trait]
impl pb::build_cache_server::BuildCache for BuildCacheService {
    async fn get(&self, req: Request<pb::GetCacheRequest>) -> Res<pb::GetCacheResponse> {
        let e = self.0.cache_get(&req.into_inner().key).await?;
        Ok(Response::new(pb::GetCacheResponse { entry: Some(cache_out(e)) }))
    }

    async fn put(&self, req: Request<pb::PutCacheRequest>) -> Res<pb::PutCacheResponse> {
        let r = req.into_inner();
        let target = descriptor_in("target", r.target)?;
        let e = self.0.cache_put(&r.key, target).await?;
        Ok(Response::new(pb::PutCacheResponse { entry: Some(cache_out(e)) }))
    }

    async fn delete(&self, req: Request<pb::DeleteCacheRequest>) -> Res<pb::DeleteCacheResponse> {
        self.0.cache_delete(&req.into_inner().key).await?;
        Ok(Response::new(pb::DeleteCacheResponse {}))
    }

    async fn list(&self, _req: Request<pb::ListCacheRequest>) -> Res<pb::ListCacheResponse> {
        let entries = self.0.cache_list().await;
        Ok(Response::new(pb::ListCacheResponse { entries: entries.into_iter().map(cache_out).collect() }))
    }
}

/// The `berth.store.v1.Leases` service.
#[derive(Clone, Debug)]
pub struct LeasesService(pub Arc<Store>);

#[tonic::async_trait]
impl pb::leases_server::Leases for LeasesService {
    async fn create(&self, req: Request<pb::CreateLeaseRequest>) -> Res<pb::CreateLeaseResponse> {
        let r = req.into_inner();
        let ttl = size_from_wire("ttl_seconds", r.ttl_seconds)?;
        let ttl = (ttl > 0).then(|| Duration::from_secs(ttl));
        let l = self.0.lease_create(&r.id, ttl, r.labels.into_iter().collect()).await?;
        Ok(Response::new(pb::CreateLeaseResponse { lease: Some(lease_out(l)) }))
    }

    async fn delete(&self, req: Request<pb::DeleteLeaseRequest>) -> Res<pb::DeleteLeaseResponse> {
        self.0.lease_delete(&req.into_inner().id).await?;
        Ok(Response::new(pb::DeleteLeaseResponse {}))
    }

    async fn list(&self, _req: Request<pb::ListLeasesRequest>) -> Res<pb::ListLeasesResponse> {
        let leases = self.0.lease_list().await;
        Ok(Response::new(pb::ListLeasesResponse { leases: leases.into_iter().map(lease_out).collect() }))
    }

    async fn add_resource(&self, req: Request<pb::AddLeaseResourceRequest>) -> Res<pb::AddLeaseResourceResponse> {
        let r = req.into_inner();
        if !r.digest.is_empty() && !r.ingest.is_empty() {
            return Err(StoreError::InvalidArgument("set either `digest` or `ingest`, not both".into()).into());
        }
        let digest = if r.digest.is_empty() { None } else { Some(parse_digest("digest", &r.digest)?) };
        let ingest = (!r.ingest.is_empty()).then_some(r.ingest.as_str());
        self.0.lease_add(&r.id, digest.as_ref(), ingest).await?;
        Ok(Response::new(pb::AddLeaseResourceResponse {}))
    }

    async fn add_present(&self, req: Request<pb::AddPresentRequest>) -> Res<pb::AddPresentResponse> {
        let r = req.into_inner();
        let digests = r.digests.iter().map(|d| parse_digest("digests[]", d)).collect::<Result<Vec<_>, _>>()?;
        let (present, missing) = self.0.lease_add_present(&r.id, &digests).await?;
        Ok(Response::new(pb::AddPresentResponse {
            present: present.into_iter().map(blob_info).collect(),
            missing: missing.into_iter().map(|d| d.to_string()).collect(),
        }))
    }
}

/// The `berth.store.v1.Gc` service.
#[derive(Clone, Debug)]
pub struct GcService(pub Arc<Store>);

#[tonic::async_trait]
impl pb::gc_server::Gc for GcService {
    async fn collect(&self, req: Request<pb::CollectRequest>) -> Res<pb::CollectResponse> {
        let r = self.0.collect(req.into_inner().dry_run).await?;
        Ok(Response::new(pb::CollectResponse {
            removed: r.removed.into_iter().map(blob_info).collect(),
            removed_ingests: r.removed_ingests,
            bytes_freed: r.bytes_freed as i64,
            kept: r.kept as i64,
            dry_run: r.dry_run,
        }))
    }

    async fn usage(&self, _req: Request<pb::UsageRequest>) -> Res<pb::UsageResponse> {
        let u = self.0.usage().await?;
        Ok(Response::new(pb::UsageResponse {
            blobs: u.blobs as i64,
            blob_bytes: u.blob_bytes as i64,
            images: u.images as i64,
            cache_entries: u.cache_entries as i64,
            ingests: u.ingests as i64,
            ingest_bytes: u.ingest_bytes as i64,
            reclaimable_bytes: u.reclaimable_bytes as i64,
            backend: u.backend,
        }))
    }
}

/// Fully qualified names of the services served (for per-service health).
pub const SERVICE_NAMES: &[&str] = &[
    "berth.store.v1.Content",
    "berth.store.v1.Images",
    "berth.store.v1.BuildCache",
    "berth.store.v1.Leases",
    "berth.store.v1.Gc",
];

/// The store's gRPC routes, with per-message limits of `max_message_bytes`.
pub fn routes(store: Arc<Store>, max_message_bytes: usize) -> tonic::service::Routes {
    let m = max_message_bytes;
    tonic::service::Routes::new(
        pb::content_server::ContentServer::new(ContentService(store.clone()))
            .max_decoding_message_size(m)
            .max_encoding_message_size(m),
    )
    .add_service(
        pb::images_server::ImagesServer::new(ImagesService(store.clone()))
            .max_decoding_message_size(m)
            .max_encoding_message_size(m),
    )
    .add_service(
        pb::build_cache_server::BuildCacheServer::new(BuildCacheService(store.clone()))
            .max_decoding_message_size(m)
            .max_encoding_message_size(m),
    )
    .add_service(
        pb::leases_server::LeasesServer::new(LeasesService(store.clone()))
            .max_decoding_message_size(m)
            .max_encoding_message_size(m),
    )
    .add_service(
        pb::gc_server::GcServer::new(GcService(store)).max_decoding_message_size(m).max_encoding_message_size(m),
    )
}
