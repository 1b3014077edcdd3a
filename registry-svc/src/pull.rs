//! Resolving and pulling: reference → manifest (platform chosen from an index) → config →
//! every missing layer streamed upstream → store-svc (several at once, each verified on the way,
//! resumed with Range when a connection drops) → config, manifest, index → image record.
//!
//! Concurrent pulls in this process share blob downloads: the first asks upstream, the others
//! follow its progress and wait for its result. A lease protects the pull's blobs and ingests
//! from GC until the image record holds them.

use crate::error::{RegistryError, Result};
use crate::store::{Ingest, Store};
use crate::upstream::{content_range_start, error_chain, read_limited, Endpoint, Upstream};
use berth_common::image::{
    Compression, Descriptor, ImageConfig, Manifest, ManifestOrIndex, Platform, MAX_DOCUMENT_BYTES, MT_OCI_INDEX,
    MT_OCI_MANIFEST,
};
use berth_common::reference::Reference;
use berth_common::Digest;
use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Resumes of one blob download before giving up.
const MAX_RESUMES: u32 = 4;
/// Bytes gathered before one write to the store.
const WRITE_CHUNK: usize = 1 << 20;

/// What a blob is within an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobKind {
    /// A layer.
    Layer,
    /// The config.
    Config,
    /// A manifest or index.
    Manifest,
}

/// Where a blob is in its transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// Queued.
    Waiting,
    /// Bytes arriving.
    Downloading,
    /// Checking and committing.
    Verifying,
    /// Committed.
    Done,
    /// Was already in the store.
    AlreadyExists,
    /// Resuming after a dropped connection.
    Retrying,
    /// Another pull is fetching it.
    Shared,
}

/// Progress of one blob.
#[derive(Clone, Debug)]
pub struct BlobEvent {
    /// Digest.
    pub digest: Digest,
    /// Kind.
    pub kind: BlobKind,
    /// State.
    pub state: BlobState,
    /// Bytes so far.
    pub offset: u64,
    /// Size.
    pub total: u64,
    /// Detail.
    pub message: String,
}

/// The manifest is resolved.
#[derive(Clone, Debug)]
pub struct Started {
    /// Normalized name.
    pub name: String,
    /// Manifest or index the reference points at.
    pub target: Descriptor,
    /// The platform's manifest.
    pub manifest: Descriptor,
    /// Layers.
    pub layers: Vec<Descriptor>,
    /// Config.
    pub config: Descriptor,
    /// Endpoint used.
    pub endpoint: String,
}

/// The pull finished.
#[derive(Clone, Debug)]
pub struct Done {
    /// Name of the record set.
    pub name: String,
    /// What it points at.
    pub target: Descriptor,
    /// Config digest.
    pub image_id: Digest,
    /// Whether the record changed.
    pub updated: bool,
    /// Bytes transferred.
    pub bytes_downloaded: u64,
    /// Blobs already present.
    pub blobs_present: u32,
    /// Blobs fetched.
    pub blobs_fetched: u32,
}

/// One event of a pull.
#[derive(Clone, Debug)]
pub enum Event {
    /// Resolved.
    Started(Box<Started>),
    /// Blob progress.
    Blob(BlobEvent),
    /// Finished.
    Done(Done),
}

/// A reference resolved to its manifest.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The parsed reference.
    pub reference: Reference,
    /// Manifest or index descriptor.
    pub target: Descriptor,
    /// Raw bytes of the target.
    pub target_bytes: Bytes,
    /// The platform's manifest descriptor.
    pub manifest_desc: Descriptor,
    /// Raw manifest bytes.
    pub manifest_bytes: Bytes,
    /// The manifest.
    pub manifest: Manifest,
    /// Platforms of the index (empty for a single manifest).
    pub platforms: Vec<Platform>,
    /// Endpoint that served it.
    pub endpoint: Endpoint,
}

#[derive(Clone, Debug)]
struct Progress {
    state: BlobState,
    offset: u64,
    message: String,
}

type SharedFetch = Shared<BoxFuture<'static, std::result::Result<u64, RegistryError>>>;

struct Inflight {
    progress: watch::Receiver<Progress>,
    done: SharedFetch,
}

/// Pulls images; one per registry-svc process.
pub struct Puller {
    upstream: Arc<Upstream>,
    store: Store,
    inflight: Mutex<HashMap<Digest, Inflight>>,
}

fn bad(what: &'static str, digest: impl ToString, ep: &Endpoint, why: impl Into<String>) -> RegistryError {
    RegistryError::BadContent { what, digest: digest.to_string(), registry: ep.base.clone(), why: why.into() }
}

/// 404 for a layer blob.
fn layer_not_found(ep: &Endpoint, r: &Reference, digest: &str) -> RegistryError {
    RegistryError::BlobNotFound {
        what: "layer",
        digest: digest.to_string(),
        reference: r.familiar(),
        registry: ep.base.clone(),
    }
}

/// How many leading bytes of `resp` to skip when bytes from `offset` were asked for: a server may
/// answer a Range request with the whole body (200) or an earlier start; a later start is an error.
fn range_skip(resp: &reqwest::Response, offset: u64, digest: &str, ep: &Endpoint) -> Result<u64, RegistryError> {
    let start = if resp.status() == reqwest::StatusCode::PARTIAL_CONTENT {
        content_range_start(resp).unwrap_or(offset)
    } else {
        0
    };
    if start > offset {
        return Err(bad("layer", digest, ep, format!("asked for bytes from {offset}, the registry sent from {start}")));
    }
    Ok(offset - start)
}

impl Puller {
    /// A puller over an upstream client and a store.
    pub fn new(upstream: Arc<Upstream>, store: Store) -> Arc<Self> {
        Arc::new(Self { upstream, store, inflight: Mutex::default() })
    }

    /// The upstream client (tests read its token counter).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Resolves a reference to its manifest for `platform`, trying mirrors first.
    pub async fn resolve(&self, reference: &Reference, platform: &Platform) -> Result<Resolved> {
        let mut last = None;
        for ep in self.upstream.endpoints(reference.domain()) {
            match self.resolve_at(&ep, reference, platform).await {
                Ok(r) => return Ok(r),
                Err(e) if ep.mirror => {
                    tracing::warn!(mirror = %ep.base, error = %e, "mirror failed; trying the next endpoint");
                    last = Some(e);
                }
                Err(e @ RegistryError::Unreachable { .. }) if ep.insecure_tls => {
                    tracing::info!(endpoint = %ep.base, error = %e, "no HTTPS at an insecure registry; using plain HTTP");
                    self.upstream.https_failed(&ep);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Config("no endpoint for the registry".into())))
    }

    async fn resolve_at(&self, ep: &Endpoint, r: &Reference, platform: &Platform) -> Result<Resolved> {
        let top = self.upstream.manifest(ep, r, &r.object(), MAX_DOCUMENT_BYTES).await?;
        let digest = Digest::of(&top.bytes);
        if let Some(want) = r.digest() {
            if want != &digest {
                return Err(bad("manifest", want, ep, format!("the registry sent content with digest {digest}")));
            }
        }
        let doc =
            ManifestOrIndex::parse(&top.media_type, &top.bytes).map_err(|why| bad("manifest", &digest, ep, why))?;
        let media_type = |declared: &str, fallback: &str| -> String {
            if declared.is_empty() {
                fallback.to_string()
            } else {
                declared.to_string()
            }
        };
        let target_bytes = Bytes::from(top.bytes);
        let (target, manifest_desc, manifest_bytes, manifest, platforms) = match doc {
            ManifestOrIndex::Manifest(m) => {
                let mt =
                    media_type(&top.media_type, if m.media_type.is_empty() { MT_OCI_MANIFEST } else { &m.media_type });
                let d = Descriptor {
                    media_type: mt,
                    digest,
                    size: target_bytes.len() as i64,
                    annotations: Default::default(),
                    platform: None,
                    urls: vec![],
                };
                (d.clone(), d, target_bytes.clone(), m, vec![])
            }
            ManifestOrIndex::Index(i) => {
                let mt =
                    media_type(&top.media_type, if i.media_type.is_empty() { MT_OCI_INDEX } else { &i.media_type });
                let target = Descriptor {
                    media_type: mt,
                    digest: digest.clone(),
                    size: target_bytes.len() as i64,
                    annotations: Default::default(),
                    platform: None,
                    urls: vec![],
                };
                let platforms: Vec<Platform> =
                    i.manifests.iter().filter_map(|d| d.platform.clone()).filter(|p| p.os != "unknown").collect();
                let chosen = i
                    .select(platform)
                    .map_err(|e| RegistryError::NoMatchingPlatform(format!("{}: {e}", r.familiar())))?;
                let chosen = chosen.clone();
                if chosen.size > MAX_DOCUMENT_BYTES as i64 || chosen.size < 0 {
                    return Err(bad(
                        "manifest",
                        &chosen.digest,
                        ep,
                        format!("its size {} is out of range", chosen.size),
                    ));
                }
                let m = self.upstream.manifest(ep, r, &chosen.digest.to_string(), MAX_DOCUMENT_BYTES).await?;
                let got = Digest::of(&m.bytes);
                if got != chosen.digest || m.bytes.len() as i64 != chosen.size {
                    return Err(bad(
                        "manifest",
                        &chosen.digest,
                        ep,
                        format!(
                            "the registry sent {} bytes with digest {got}; the index says {} bytes",
                            m.bytes.len(),
                            chosen.size
                        ),
                    ));
                }
                let manifest = match ManifestOrIndex::parse(&chosen.media_type, &m.bytes)
                    .map_err(|why| bad("manifest", &chosen.digest, ep, why))?
                {
                    ManifestOrIndex::Manifest(m) => m,
                    ManifestOrIndex::Index(_) => {
                        return Err(bad("index", &digest, ep, "an index entry points at another index"));
                    }
                };
                (target, chosen, Bytes::from(m.bytes), manifest, platforms)
            }
        };
        for l in &manifest.layers {
            if Compression::of_media_type(&l.media_type).is_none() {
                return Err(RegistryError::Unsupported(format!(
                    "layer {} of {} has media type {:?}, which berth cannot unpack (supported: tar, tar+gzip, tar+zstd)",
                    l.digest,
                    r.familiar(),
                    l.media_type
                )));
            }
            if l.size < 0 {
                return Err(bad(
                    "manifest",
                    &manifest_desc.digest,
                    ep,
                    format!("layer {} has a negative size", l.digest),
                ));
            }
        }
        Ok(Resolved {
            reference: r.clone(),
            target,
            target_bytes,
            manifest_desc,
            manifest_bytes,
            manifest,
            platforms,
            endpoint: ep.clone(),
        })
    }

    /// Pulls `reference` for `platform` (host's if `None`), sending events to `events`.
    pub async fn pull(
        self: &Arc<Self>,
        reference: &str,
        platform: Option<Platform>,
        events: mpsc::Sender<Event>,
    ) -> Result<Done> {
        let r = Reference::parse(reference).map_err(|e| RegistryError::InvalidReference(e.to_string()))?;
        let platform = platform.unwrap_or_else(Platform::host);
        let name = match r.digest() {
            Some(d) => r.with_digest(d.clone()).to_string(),
            None => r.to_string(),
        };
        let t0 = std::time::Instant::now();
        // The lease that protects the pull's blobs from GC is made while the manifest is
        // resolved: two round trips (to the store, to the registry) at once.
        let (res, lease) = tokio::join!(self.resolve(&r, &platform), self.store.create_lease(&name, 3600));
        let res = match res {
            Ok(res) => res,
            Err(e) => {
                if let Ok(l) = &lease {
                    self.store.delete_lease(l).await;
                }
                return Err(e);
            }
        };
        let lease = lease?;
        let t_resolved = t0.elapsed();
        let out = self.pull_resolved(&res, &name, &lease, &events, t0, t_resolved).await;
        if out.is_err() {
            // On success the store released it with the record.
            self.store.delete_lease(&lease).await;
        }
        let done = out?;
        let _ = events.send(Event::Done(done.clone())).await;
        Ok(done)
    }

    /// Fetches and checks the config (at most `MAX_DOCUMENT_BYTES`, digest and size as the
    /// manifest says, JSON with one diff_id per layer).
    async fn fetch_config(&self, res: &Resolved) -> Result<Bytes> {
        let (ep, r) = (&res.endpoint, &res.reference);
        let cfg_desc = &res.manifest.config;
        if cfg_desc.size > MAX_DOCUMENT_BYTES as i64 || cfg_desc.size < 0 {
            return Err(bad("config", &cfg_desc.digest, ep, format!("its size {} is out of range", cfg_desc.size)));
        }
        let cfg_resp = self.upstream.blob(ep, r, &cfg_desc.digest.to_string(), 0).await?.ok_or_else(|| {
            RegistryError::BlobNotFound {
                what: "config",
                digest: cfg_desc.digest.to_string(),
                reference: r.familiar(),
                registry: ep.base.clone(),
            }
        })?;
        let cfg_bytes =
            read_limited(cfg_resp, MAX_DOCUMENT_BYTES).await.map_err(|why| bad("config", &cfg_desc.digest, ep, why))?;
        let got = Digest::of(&cfg_bytes);
        if got != cfg_desc.digest || cfg_bytes.len() as i64 != cfg_desc.size {
            return Err(bad(
                "config",
                &cfg_desc.digest,
                ep,
                format!(
                    "the registry sent {} bytes with digest {got}; the manifest says {} bytes",
                    cfg_bytes.len(),
                    cfg_desc.size
                ),
            ));
        }
        let config: ImageConfig = serde_json::from_slice(&cfg_bytes)
            .map_err(|e| bad("config", &cfg_desc.digest, ep, format!("invalid JSON: {e}")))?;
        if config.rootfs.diff_ids.len() != res.manifest.layers.len() {
            return Err(bad(
                "config",
                &cfg_desc.digest,
                ep,
                format!("it lists {} diff_ids for {} layers", config.rootfs.diff_ids.len(), res.manifest.layers.len()),
            ));
        }
        Ok(Bytes::from(cfg_bytes))
    }

    async fn pull_resolved(
        self: &Arc<Self>,
        res: &Resolved,
        name: &str,
        lease: &str,
        events: &mpsc::Sender<Event>,
        t0: std::time::Instant,
        t_resolved: Duration,
    ) -> Result<Done> {
        let m = &res.manifest;
        let mut all: Vec<Digest> = m.layers.iter().map(|l| l.digest.clone()).collect();
        all.push(m.config.digest.clone());
        all.push(res.manifest_desc.digest.clone());
        all.push(res.target.digest.clone());
        // The config is fetched while the layers download (one upstream round trip less), but
        // no layer is committed before the config checked out (the gate): a manifest whose
        // config is missing or bad leaves nothing behind, and its layer downloads stop.
        let (gate_tx, gate) = watch::channel::<Option<bool>>(None);
        let config = async {
            let r = self.fetch_config(res).await;
            let _ = gate_tx.send(Some(r.is_ok()));
            r
        };
        let layers = async {
            let present = self.store.present_leased(lease, &all).await?;
            let _ = events
                .send(Event::Started(Box::new(Started {
                    name: name.to_string(),
                    target: res.target.clone(),
                    manifest: res.manifest_desc.clone(),
                    layers: m.layers.clone(),
                    config: m.config.clone(),
                    endpoint: res.endpoint.base.clone(),
                })))
                .await;
            let got = self.pull_layers(res, lease, &present, events, gate.clone()).await?;
            Ok::<_, RegistryError>((present, got))
        };
        let (cfg_bytes, layers) = tokio::join!(config, layers);
        let cfg_bytes = cfg_bytes?;
        let (present, (mut bytes_downloaded, blobs_present, blobs_fetched)) = layers?;
        let t_layers = t0.elapsed();

        // Config, manifest and index go with the record in one call, after the layers (so a
        // failed pull leaves none of them); the store makes every blob durable before the record
        // points at them, and releases the lease.
        let mut small = Vec::new();
        if !present.contains(&m.config.digest) {
            bytes_downloaded += cfg_bytes.len() as u64;
            small.push((m.config.digest.clone(), cfg_bytes));
        }
        if !present.contains(&res.manifest_desc.digest) {
            small.push((res.manifest_desc.digest.clone(), res.manifest_bytes.clone()));
        }
        if res.target.digest != res.manifest_desc.digest && !present.contains(&res.target.digest) {
            small.push((res.target.digest.clone(), res.target_bytes.clone()));
        }
        let prev = self.store.commit_image(name, &res.target, small, lease).await?;
        let updated = prev.as_deref() != Some(res.target.digest.to_string().as_str());
        let done = Done {
            name: name.to_string(),
            target: res.target.clone(),
            image_id: m.config.digest.clone(),
            updated,
            bytes_downloaded,
            blobs_present,
            blobs_fetched,
        };
        tracing::info!(
            %name,
            fetched = done.blobs_fetched,
            bytes = done.bytes_downloaded,
            resolve_ms = t_resolved.as_millis() as u64,
            config_and_layers_ms = (t_layers - t_resolved).as_millis() as u64,
            record_ms = (t0.elapsed() - t_layers).as_millis() as u64,
            "pulled"
        );
        Ok(done)
    }

    /// Fetches the layers the store lacks; returns (bytes downloaded, layers present, fetched).
    async fn pull_layers(
        self: &Arc<Self>,
        res: &Resolved,
        lease: &str,
        present: &std::collections::HashSet<Digest>,
        events: &mpsc::Sender<Event>,
        gate: watch::Receiver<Option<bool>>,
    ) -> Result<(u64, u32, u32)> {
        let m = &res.manifest;
        let mut missing = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut blobs_present = 0u32;
        for l in &m.layers {
            if !seen.insert(l.digest.clone()) {
                continue;
            }
            let (state, offset) = if present.contains(&l.digest) {
                blobs_present += 1;
                (BlobState::AlreadyExists, l.size as u64)
            } else {
                missing.push(l.clone());
                (BlobState::Waiting, 0)
            };
            let ev = BlobEvent {
                digest: l.digest.clone(),
                kind: BlobKind::Layer,
                state,
                offset,
                total: l.size as u64,
                message: String::new(),
            };
            let _ = events.send(Event::Blob(ev)).await;
        }
        let blobs_fetched = missing.len() as u32;
        let max = self.upstream.max_concurrent_downloads();
        let downloaded: Vec<u64> = futures::stream::iter(missing.into_iter().map(|l| {
            let this = self.clone();
            let ep = res.endpoint.clone();
            let r = res.reference.clone();
            let lease = lease.to_string();
            let events = events.clone();
            let gate = gate.clone();
            async move { this.fetch_shared(ep, r, l, lease, events, gate).await }
        }))
        .buffer_unordered(max)
        .try_collect()
        .await?;
        Ok((downloaded.iter().sum(), blobs_present, blobs_fetched))
    }

    /// Fetches a layer once for every concurrent pull that needs it, forwarding progress.
    async fn fetch_shared(
        self: Arc<Self>,
        ep: Endpoint,
        r: Reference,
        desc: Descriptor,
        lease: String,
        events: mpsc::Sender<Event>,
        gate: watch::Receiver<Option<bool>>,
    ) -> Result<u64> {
        loop {
            let (ep, r, desc, lease, events, gate) =
                (ep.clone(), r.clone(), desc.clone(), lease.clone(), events.clone(), gate.clone());
            match self.clone().fetch_shared_once(ep, r, desc, lease, events, gate).await {
                // The pull we followed failed (its config was bad): fetch the blob ourselves.
                (Err(RegistryError::Abandoned(_)), false) => continue,
                (out, _) => return out,
            }
        }
    }

    /// One attempt of [`Puller::fetch_shared`]; also says whether it led the download.
    async fn fetch_shared_once(
        self: Arc<Self>,
        ep: Endpoint,
        r: Reference,
        desc: Descriptor,
        lease: String,
        events: mpsc::Sender<Event>,
        gate: watch::Receiver<Option<bool>>,
    ) -> (Result<u64>, bool) {
        let digest = desc.digest.clone();
        let (mut rx, done, leader) = {
            let mut map = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = map.get(&digest) {
                (f.progress.clone(), f.done.clone(), false)
            } else {
                let (tx, rx) =
                    watch::channel(Progress { state: BlobState::Waiting, offset: 0, message: String::new() });
                let this = self.clone();
                let (d2, desc2, lease2) = (digest.clone(), desc.clone(), lease.clone());
                let handle = tokio::spawn(async move {
                    let out = this.fetch_blob(&ep, &r, &desc2, &lease2, &tx, gate).await;
                    this.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(&d2);
                    out
                });
                let fut: SharedFetch = async move {
                    handle.await.unwrap_or_else(|e| {
                        Err(RegistryError::Store { unavailable: false, message: format!("download task failed: {e}") })
                    })
                }
                .boxed()
                .shared();
                map.insert(digest.clone(), Inflight { progress: rx.clone(), done: fut.clone() });
                (rx, fut, true)
            }
        };
        let total = desc.size as u64;
        let send = |p: &Progress, state: Option<BlobState>| BlobEvent {
            digest: digest.clone(),
            kind: BlobKind::Layer,
            state: state.unwrap_or(p.state),
            offset: p.offset,
            total,
            message: p.message.clone(),
        };
        if !leader {
            let p = rx.borrow().clone();
            let _ = events.send(Event::Blob(send(&p, Some(BlobState::Shared)))).await;
        }
        let mut done = done;
        // At most ~10 progress events per second per blob, but every state change at once.
        let mut last_sent: Option<(std::time::Instant, BlobState, String)> = None;
        let result = loop {
            tokio::select! {
                r = &mut done => break r,
                changed = rx.changed() => {
                    if changed.is_err() {
                        break done.await;
                    }
                    let p = rx.borrow_and_update().clone();
                    let due = match &last_sent {
                        None => true,
                        Some((at, state, message)) => {
                            *state != p.state || *message != p.message || at.elapsed() >= Duration::from_millis(100)
                        }
                    };
                    if due {
                        last_sent = Some((std::time::Instant::now(), p.state, p.message.clone()));
                        let _ = events.send(Event::Blob(send(&p, None))).await;
                    }
                }
            }
        };
        let out = match result {
            Ok(n) => {
                if !leader {
                    // The leader's lease protects it until its pull ends; ours from now on.
                    if let Err(e) = self.store.lease_blob(&lease, &digest).await {
                        return (Err(e), leader);
                    }
                }
                let p = Progress { state: BlobState::Done, offset: total, message: String::new() };
                let _ = events.send(Event::Blob(send(&p, None))).await;
                Ok(if leader { n } else { 0 })
            }
            Err(e) => Err(e),
        };
        (out, leader)
    }

    /// Streams one blob from upstream into a store ingest; commits only when size and digest
    /// match. On failure the ingest is discarded.
    async fn fetch_blob(
        &self,
        ep: &Endpoint,
        r: &Reference,
        desc: &Descriptor,
        lease: &str,
        tx: &watch::Sender<Progress>,
        gate: watch::Receiver<Option<bool>>,
    ) -> Result<u64> {
        // Unique per attempt: no stale ingest of an earlier failed attempt to clear first.
        let ingest_ref = format!("pull-{}-{}", desc.digest.hex(), &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let mut ing = self.store.ingest(&ingest_ref, &desc.digest, desc.size, lease).await?;
        let abandoned = || RegistryError::Abandoned("the pull's config is missing or invalid".into());
        let downloaded = tokio::select! {
            r = self.download(ep, r, desc, &mut ing, tx) => r,
            _ = gate_failed(gate.clone()) => Err(abandoned()),
        };
        // Committed only once the pull's config checked out (see `pull_resolved`).
        let downloaded = match downloaded {
            Ok(n) if !gate_ok(gate).await => {
                let _ = n;
                Err(abandoned())
            }
            other => other,
        };
        match downloaded {
            Ok(n) => {
                tx.send_modify(|p| {
                    p.state = BlobState::Verifying;
                    p.message.clear();
                });
                if let Err(e) = ing.commit().await {
                    self.store.abort(&ingest_ref).await;
                    // store-svc hashes the stream as it arrives and refuses a mismatch at commit:
                    // that is corrupt upstream content, not a store failure.
                    return Err(match e {
                        RegistryError::Store { message, .. } if message.contains("digest mismatch") => {
                            bad("layer", &desc.digest, ep, format!("its content does not match its digest ({message})"))
                        }
                        other => other,
                    });
                }
                Ok(n)
            }
            Err(e) => {
                ing.close().await;
                self.store.abort(&ingest_ref).await;
                Err(e)
            }
        }
    }

    /// Streams a blob into `ing`: large blobs in parallel Range requests when the registry
    /// honours Range (probed with the first segment), everything else as one stream.
    async fn download(
        &self,
        ep: &Endpoint,
        r: &Reference,
        desc: &Descriptor,
        ing: &mut Ingest,
        tx: &watch::Sender<Progress>,
    ) -> Result<u64> {
        let size = desc.size as u64;
        let rc = self.upstream.ranges();
        let remote = !crate::upstream::is_loopback(&ep.host);
        if rc.threshold > 0 && rc.parallel > 1 && size >= rc.threshold && size > rc.segment && (remote || rc.loopback) {
            let digest = desc.digest.to_string();
            tx.send_modify(|p| {
                p.state = BlobState::Downloading;
                p.offset = 0;
            });
            let probe = self
                .upstream
                .blob_range(ep, r, &digest, 0, Some(rc.segment - 1))
                .await?
                .ok_or_else(|| layer_not_found(ep, r, &digest))?;
            if content_range_start(&probe) == Some(0) {
                return self.download_ranges(ep, r, desc, ing, tx, probe).await;
            }
            if probe.status() == reqwest::StatusCode::OK {
                tracing::info!(%digest, "the registry ignored the Range request; fetching the blob as one stream");
                return self.download_stream(ep, r, desc, ing, tx, Some(probe)).await;
            }
            tracing::info!(%digest, status = %probe.status(), "unexpected answer to a Range request; one stream");
        }
        self.download_stream(ep, r, desc, ing, tx, None).await
    }

    /// Fetches `desc` in segments of `range_segment_bytes`, `parallel_ranges` at a time (each in
    /// its own task, resumed on its own when its connection drops), and writes them to the
    /// ingest in order. At most `parallel_ranges` segments are buffered; store-svc hashes the
    /// whole stream and checks the digest at commit.
    async fn download_ranges(
        &self,
        ep: &Endpoint,
        r: &Reference,
        desc: &Descriptor,
        ing: &mut Ingest,
        tx: &watch::Sender<Progress>,
        probe: reqwest::Response,
    ) -> Result<u64> {
        let size = desc.size as u64;
        let rc = self.upstream.ranges();
        let segments = size.div_ceil(rc.segment);
        let received = Arc::new(AtomicU64::new(0));
        let ctx = RangeFetch {
            upstream: self.upstream.clone(),
            ep: ep.clone(),
            r: r.clone(),
            digest: desc.digest.to_string(),
            received: received.clone(),
        };
        tracing::debug!(digest = %ctx.digest, size, segments, parallel = rc.parallel, "fetching in parallel ranges");
        tx.send_modify(|p| {
            p.message = format!("{segments} ranges, {} in parallel", rc.parallel);
        });
        let mut probe = Some(probe);
        let fetches = futures::stream::iter((0..segments).map(move |i| {
            let start = i * rc.segment;
            let end = (start + rc.segment).min(size);
            let (ctx, first) = (ctx.clone(), probe.take());
            AbortOnDrop(tokio::spawn(async move { ctx.fetch(start, end, first).await }))
        }))
        .buffered(rc.parallel);
        futures::pin_mut!(fetches);
        let mut offset = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                next = fetches.next() => {
                    let Some(joined) = next else { break };
                    let mut data = joined.map_err(|e| RegistryError::Store {
                        unavailable: false,
                        message: format!("range download task failed: {e}"),
                    })??;
                    offset += data.len() as u64;
                    while !data.is_empty() {
                        let piece = data.split_to(data.len().min(WRITE_CHUNK));
                        ing.write(piece).await?;
                    }
                    let n = received.load(Ordering::Relaxed);
                    tx.send_modify(|p| p.offset = n);
                }
                _ = tick.tick() => {
                    let n = received.load(Ordering::Relaxed);
                    tx.send_modify(|p| p.offset = n);
                }
            }
        }
        if offset != size {
            return Err(bad("layer", &desc.digest, ep, format!("got {offset} of {size} bytes in ranges")));
        }
        Ok(size)
    }

    async fn download_stream(
        &self,
        ep: &Endpoint,
        r: &Reference,
        desc: &Descriptor,
        ing: &mut Ingest,
        tx: &watch::Sender<Progress>,
        mut first: Option<reqwest::Response>,
    ) -> Result<u64> {
        let size = desc.size as u64;
        let digest = desc.digest.to_string();
        let mut offset: u64 = 0;
        let mut resumes = 0u32;
        let mut buf = BytesMut::with_capacity(WRITE_CHUNK);
        loop {
            tx.send_modify(|p| {
                p.state = BlobState::Downloading;
                p.offset = offset;
            });
            let resp = match first.take() {
                Some(resp) => resp,
                None => {
                    self.upstream.blob(ep, r, &digest, offset).await?.ok_or_else(|| layer_not_found(ep, r, &digest))?
                }
            };
            // A server may answer a Range request with the whole body (200) or a different
            // start; skip what we already have.
            let mut skip: u64 = if offset > 0 { range_skip(&resp, offset, &digest, ep)? } else { 0 };
            let mut stream = resp.bytes_stream();
            let mut broke = None;
            while let Some(item) = stream.next().await {
                let mut chunk = match item {
                    Ok(c) => c,
                    Err(e) => {
                        broke = Some(error_chain(&e));
                        break;
                    }
                };
                if skip > 0 {
                    let n = (skip as usize).min(chunk.len());
                    chunk = chunk.slice(n..);
                    skip -= n as u64;
                }
                if chunk.is_empty() {
                    continue;
                }
                if offset + chunk.len() as u64 > size {
                    return Err(bad(
                        "layer",
                        &digest,
                        ep,
                        format!("the registry sent more than the {size} bytes the manifest says"),
                    ));
                }
                offset += chunk.len() as u64;
                // Send before the buffer would outgrow its capacity (growing it copies it), and
                // give each chunk one allocation of the full size (an empty `BytesMut` would
                // regrow, and copy, from a few KiB up).
                if !buf.is_empty() && buf.len() + chunk.len() > WRITE_CHUNK {
                    ing.write(buf.split().freeze()).await?;
                    buf.reserve(WRITE_CHUNK);
                }
                buf.extend_from_slice(&chunk);
                tx.send_modify(|p| p.offset = offset);
            }
            if offset == size {
                break;
            }
            let why = broke.unwrap_or_else(|| format!("the body ended after {offset} of {size} bytes"));
            resumes += 1;
            if resumes > MAX_RESUMES {
                return Err(bad(
                    "layer",
                    &digest,
                    ep,
                    format!("truncated: gave up after {MAX_RESUMES} resumes ({why})"),
                ));
            }
            tracing::warn!(%digest, offset, %why, "blob download broke; resuming with a Range request");
            tx.send_modify(|p| {
                p.state = BlobState::Retrying;
                p.message = why.clone();
            });
            tokio::time::sleep(Duration::from_millis(100 * u64::from(resumes))).await;
        }
        if !buf.is_empty() {
            ing.write(buf.split().freeze()).await?;
        }
        Ok(size)
    }
}

/// Waits for the pull's verdict on its config: true when it checked out, false when it failed or
/// the pull went away without one.
async fn gate_ok(mut gate: watch::Receiver<Option<bool>>) -> bool {
    loop {
        if let Some(v) = *gate.borrow_and_update() {
            return v;
        }
        if gate.changed().await.is_err() {
            return gate.borrow().unwrap_or(false);
        }
    }
}

/// Resolves when the config failed (never when it checked out).
async fn gate_failed(gate: watch::Receiver<Option<bool>>) {
    if gate_ok(gate).await {
        std::future::pending::<()>().await
    }
}

/// Aborts a spawned task when dropped (a failed range download stops its siblings).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// What one range task needs.
#[derive(Clone)]
struct RangeFetch {
    upstream: Arc<Upstream>,
    ep: Endpoint,
    r: Reference,
    digest: String,
    /// Bytes received by every range of the blob (progress).
    received: Arc<AtomicU64>,
}

impl RangeFetch {
    /// Bytes `start..end` of the blob, starting with `first` (the probe's answer) if given. A
    /// dropped connection is resumed from where it stopped (`MAX_RESUMES` times per range); a
    /// server that answers with the whole body (200) or an earlier start is handled by skipping.
    async fn fetch(&self, start: u64, end: u64, mut first: Option<reqwest::Response>) -> Result<Bytes> {
        let want = (end - start) as usize;
        let mut buf = BytesMut::with_capacity(want);
        let mut resumes = 0u32;
        loop {
            let pos = start + buf.len() as u64;
            let resp = match first.take() {
                Some(resp) => resp,
                None => self
                    .upstream
                    .blob_range(&self.ep, &self.r, &self.digest, pos, Some(end - 1))
                    .await?
                    .ok_or_else(|| layer_not_found(&self.ep, &self.r, &self.digest))?,
            };
            let mut skip = range_skip(&resp, pos, &self.digest, &self.ep)? as usize;
            let mut stream = resp.bytes_stream();
            let mut broke = None;
            while buf.len() < want {
                match stream.next().await {
                    None => break,
                    Some(Err(e)) => {
                        broke = Some(error_chain(&e));
                        break;
                    }
                    Some(Ok(chunk)) => {
                        let from = skip.min(chunk.len());
                        skip -= from;
                        let take = (chunk.len() - from).min(want - buf.len());
                        buf.extend_from_slice(&chunk[from..from + take]);
                        self.received.fetch_add(take as u64, Ordering::Relaxed);
                    }
                }
            }
            if buf.len() == want {
                return Ok(buf.freeze());
            }
            let got = start + buf.len() as u64;
            let why = broke.unwrap_or_else(|| format!("the body of range {start}-{} ended at {got}", end - 1));
            resumes += 1;
            if resumes > MAX_RESUMES {
                return Err(bad(
                    "layer",
                    &self.digest,
                    &self.ep,
                    format!("truncated: gave up after {MAX_RESUMES} resumes ({why})"),
                ));
            }
            tracing::warn!(digest = %self.digest, offset = got, %why, "range download broke; resuming it");
            tokio::time::sleep(Duration::from_millis(100 * u64::from(resumes))).await;
        }
    }
}
