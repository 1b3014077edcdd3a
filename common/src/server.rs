//! Serving a Berth gRPC service: listeners (unix socket, TCP with optional mutual TLS), the
//! standard side services (grpc.health.v1, server reflection, `berth.types.v1.ServiceInfo`),
//! W3C trace context (`traceparent`, see [`crate::telemetry`]), message-size limits and a graceful
//! drain on SIGTERM/SIGINT.
//!
//! Health answers NOT_SERVING until the service's `ready` future resolves, and again from the
//! moment a shutdown signal arrives; in-flight calls then get `drain_timeout` to finish.

use crate::endpoint::Endpoint;
use crate::telemetry::TraceLayer;
use anyhow::{bail, Context, Result};
use berth_proto::types::v1 as pb;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::service::Routes;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

/// Default per-message limit (requests and responses).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// What a service says about itself through `ServiceInfo.GetInfo`.
#[derive(Clone, Debug)]
pub struct ServiceMeta {
    /// e.g. "store-svc".
    pub name: &'static str,
    /// Fully qualified gRPC service names served (for per-service health), e.g.
    /// "berth.store.v1.Content".
    pub grpc_services: Vec<&'static str>,
    /// Facts shown by `berth system info`.
    pub details: BTreeMap<String, String>,
}

/// Server-side TLS for TCP listeners (also the `tls` table of the services' config files).
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// How and where to serve.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Where to listen; several are allowed (e.g. a unix socket and a TCP port).
    pub listen: Vec<Endpoint>,
    /// TLS for `https://` listeners.
    pub tls: Option<ServerTls>,
    /// Allow plain `http://` listeners on non-loopback addresses (unauthenticated!).
    pub allow_insecure_tcp: bool,
    /// How long in-flight calls get after SIGTERM before the process stops anyway.
    pub drain_timeout: Duration,
    /// Per-message size limit.
    pub max_message_bytes: usize,
}

impl ServeOptions {
    /// Options to listen on one endpoint with defaults for the rest.
    pub fn new(listen: Endpoint) -> Self {
        Self {
            listen: vec![listen],
            tls: None,
            allow_insecure_tcp: false,
            drain_timeout: Duration::from_secs(10),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

/// Serves `routes` plus the standard side services until SIGTERM/SIGINT, then drains.
///
/// `ready` runs concurrently with serving; health flips to SERVING when it resolves `Ok`. If it
/// fails, the server stops and the error is returned.
/// HTTP/2 flow-control window per stream on both ends of every berth channel (8 MiB: several
/// 1 MiB blob messages in flight without waiting for WINDOW_UPDATE frames).
pub const HTTP2_STREAM_WINDOW: u32 = 8 << 20;
/// HTTP/2 flow-control window per connection (16 MiB: two blob streams at full speed).
pub const HTTP2_CONNECTION_WINDOW: u32 = 16 << 20;

pub async fn serve(
    opts: ServeOptions,
    meta: ServiceMeta,
    routes: Routes,
    ready: impl Future<Output = Result<()>> + Send,
) -> Result<()> {
    serve_until(opts, meta, routes, ready, shutdown_signal()).await
}

/// Like [`serve`], but stops when `shutdown` resolves instead of on a signal (for tests and
/// embedding).
pub async fn serve_until(
    opts: ServeOptions,
    meta: ServiceMeta,
    routes: Routes,
    ready: impl Future<Output = Result<()>> + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_service_status("", ServingStatus::NotServing).await;
    for name in &meta.grpc_services {
        health.set_service_status(*name, ServingStatus::NotServing).await;
    }
    let reflection_v1 = reflection_builder(&meta, "grpc.reflection.v1.ServerReflection")
        .build_v1()
        .context("building reflection service")?;
    let reflection_v1alpha = reflection_builder(&meta, "grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()
        .context("building reflection service")?;
    let info = pb::service_info_server::ServiceInfoServer::new(InfoService::new(&meta));

    let routes =
        routes.add_service(health_svc).add_service(reflection_v1).add_service(reflection_v1alpha).add_service(info);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = tokio::task::JoinSet::new();
    for ep in &opts.listen {
        let mut server = Server::builder()
            .tcp_nodelay(true)
            .http2_adaptive_window(Some(false))
            .initial_stream_window_size(Some(HTTP2_STREAM_WINDOW))
            .initial_connection_window_size(Some(HTTP2_CONNECTION_WINDOW))
            .max_frame_size(Some(1024 * 1024 - 1));
        let mut stop = stop_rx.clone();
        let wait_stop = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match ep {
            Endpoint::Unix(path) => {
                let listener = bind_unix(path)?;
                tracing::info!(service = meta.name, endpoint = %ep, "listening");
                let r = routes.clone();
                servers.spawn(async move {
                    server
                        .layer(TraceLayer)
                        .add_routes(r)
                        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), wait_stop)
                        .await
                });
            }
            Endpoint::Tcp { authority, tls } => {
                if *tls {
                    let t = opts.tls.as_ref().with_context(|| format!("{ep} needs tls.cert and tls.key"))?;
                    server = server.tls_config(server_tls(t)?)?;
                } else if !ep.is_local() && !opts.allow_insecure_tcp {
                    bail!("refusing to serve plain http on {ep}: peers would not be authenticated; use https:// with tls.cert/tls.key/tls.client_ca, or allow_insecure_tcp");
                }
                let listener = tokio::net::TcpListener::bind(authority.as_str())
                    .await
                    .with_context(|| format!("cannot listen on {authority}"))?;
                tracing::info!(service = meta.name, endpoint = %ep, local = %listener.local_addr()?, "listening");
                let r = routes.clone();
                servers.spawn(async move {
                    // Server::tcp_nodelay only applies to listeners tonic makes itself: without
                    // this, Nagle delays small frames (window updates) and stalls streams.
                    let incoming = tokio_stream::StreamExt::map(TcpListenerStream::new(listener), |s| {
                        s.and_then(|s| s.set_nodelay(true).map(|()| s))
                    });
                    server.layer(TraceLayer).add_routes(r).serve_with_incoming_shutdown(incoming, wait_stop).await
                });
            }
        }
    }

    tokio::pin!(shutdown);
    tokio::select! {
        r = ready => {
            r.context("service failed to become ready")?;
            health.set_service_status("", ServingStatus::Serving).await;
            for name in &meta.grpc_services {
                health.set_service_status(*name, ServingStatus::Serving).await;
            }
            tracing::info!(service = meta.name, version = crate::VERSION, "ready");
        }
        _ = &mut shutdown => {
            tracing::info!(service = meta.name, "shutdown requested before ready");
            return Ok(());
        }
    }

    tokio::select! {
        _ = &mut shutdown => {}
        Some(r) = servers.join_next() => {
            r.context("server task panicked")?.context("server failed")?;
        }
    }
    tracing::info!(service = meta.name, "draining in-flight calls");
    health.set_service_status("", ServingStatus::NotServing).await;
    for name in &meta.grpc_services {
        health.set_service_status(*name, ServingStatus::NotServing).await;
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(opts.drain_timeout, async {
        while let Some(r) = servers.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(error = %e, "server ended with an error while draining");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(service = meta.name, timeout = ?opts.drain_timeout, "drain timed out; stopping anyway");
    }
    for ep in &opts.listen {
        if let Endpoint::Unix(p) = ep {
            let _ = std::fs::remove_file(p);
        }
    }
    tracing::info!(service = meta.name, "stopped");
    Ok(())
}

/// Reflection over every Berth proto, advertising only the services this server offers (all of
/// them when `meta.grpc_services` is empty).
fn reflection_builder(meta: &ServiceMeta, itself: &'static str) -> tonic_reflection::server::Builder<'static> {
    let mut b = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
    if !meta.grpc_services.is_empty() {
        for name in
            meta.grpc_services.iter().copied().chain(["grpc.health.v1.Health", "berth.types.v1.ServiceInfo", itself])
        {
            b = b.with_service_name(name);
        }
    }
    b
}

/// Binds a unix socket, replacing a stale socket file but refusing to steal a live one.
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by another running service", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path).with_context(|| format!("cannot listen on {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

fn server_tls(t: &ServerTls) -> Result<ServerTlsConfig> {
    let cert = std::fs::read(&t.cert).with_context(|| format!("reading {}", t.cert.display()))?;
    let key = std::fs::read(&t.key).with_context(|| format!("reading {}", t.key.display()))?;
    let mut cfg = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &t.client_ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        cfg = cfg.client_ca_root(Certificate::from_pem(pem)).client_auth_optional(false);
    }
    Ok(cfg)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

struct InfoService {
    reply: pb::GetInfoResponse,
}

impl InfoService {
    fn new(meta: &ServiceMeta) -> Self {
        let hostname = nix_hostname();
        let started = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
        Self {
            reply: pb::GetInfoResponse {
                service: meta.name.to_string(),
                version: crate::VERSION.to_string(),
                hostname,
                pid: std::process::id(),
                started_at_unix: started,
                details: meta.details.clone().into_iter().collect(),
            },
        }
    }
}

fn nix_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[tonic::async_trait]
impl pb::service_info_server::ServiceInfo for InfoService {
    async fn get_info(
        &self,
        _req: tonic::Request<pb::GetInfoRequest>,
    ) -> Result<tonic::Response<pb::GetInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.reply.clone()))
    }
}
