//! Logging setup shared by the services (`tracing` to stderr, filtered by `BERTH_LOG` or
//! `RUST_LOG`, default `info`) and W3C trace-context propagation over gRPC metadata
//! (`traceparent`): [`TraceLayer`] on servers, [`inject_trace`] on clients.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service: &'static str) {
    let filter = std::env::var("BERTH_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colours only on a terminal: services started by the CLI log to a file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
    tracing::debug!(service, "logging initialised");
}

// ---- W3C trace context ----------------------------------------------------------------------
//
// Every gRPC call carries a `traceparent` header (https://www.w3.org/TR/trace-context/):
// `00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>`. Servers (through [`TraceLayer`],
// which `server::serve` installs) continue the caller's trace or start one, run the handler in a
// `grpc` span carrying `trace_id`, and make the context available to the handler
// ([`current_trace`]); clients add the header with [`inject_trace`] as a tonic interceptor, so
// one `trace_id` follows a request from the CLI through registry-svc into store-svc in every log.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use tonic::codegen::http;
use tracing::Instrument;

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A W3C trace context: which trace a piece of work belongs to and which span is its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id, never all zero.
    pub trace_id: [u8; 16],
    /// 8-byte id of the current span, never all zero.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// A new trace with a random id, sampled.
    pub fn new_root() -> Self {
        let a = random_u64().to_be_bytes();
        let b = random_u64().to_be_bytes();
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&a);
        trace_id[8..].copy_from_slice(&b);
        Self { trace_id, span_id: random_u64().to_be_bytes(), flags: 1 }
    }

    /// A child span in the same trace.
    pub fn child(&self) -> Self {
        Self { span_id: random_u64().to_be_bytes(), ..*self }
    }

    /// Parses a `traceparent` value; `None` when it is malformed (the caller then starts a new
    /// trace, as the spec asks).
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let lower_hex = |x: &str| x.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ![version, trace, span, flags].iter().all(|p| lower_hex(p)) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        hex::decode_to_slice(trace, &mut trace_id).ok()?;
        hex::decode_to_slice(span, &mut span_id).ok()?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, span_id, flags: u8::from_str_radix(flags, 16).ok()? })
    }

    /// The trace id in hex (what logs show as `trace_id`).
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

impl std::fmt::Display for TraceContext {
    /// The `traceparent` header value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.span_id), self.flags)
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
        h.write_u32(std::process::id());
        let v = h.finish();
        if v != 0 {
            return v;
        }
    }
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace context of the gRPC call being handled on this task, if any.
pub fn current_trace() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// Runs `fut` as part of trace `ctx` (so that [`inject_trace`] continues it).
pub async fn with_trace<F: Future>(ctx: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// A tonic interceptor that adds `traceparent` to outgoing calls: a child of the current call's
/// trace when there is one, else a new trace. Use as
/// `XClient::with_interceptor(channel, berth_common::telemetry::inject_trace)`.
#[allow(clippy::result_large_err)] // the signature tonic's interceptors have
pub fn inject_trace(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let ctx = current_trace().map(|c| c.child()).unwrap_or_else(TraceContext::new_root);
    if let Ok(v) = ctx.to_string().parse() {
        req.metadata_mut().insert(TRACEPARENT, v);
    }
    Ok(req)
}

/// Tower layer for gRPC servers: continues the caller's `traceparent` (or starts a trace), runs
/// the call in a `grpc` span with `method` and `trace_id`, and sets [`current_trace`].
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service [`TraceLayer`] wraps around a server's routes.
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let parent = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
        let ctx = parent.map(|p| p.child()).unwrap_or_else(TraceContext::new_root);
        let span = tracing::info_span!(
            "grpc",
            method = %req.uri().path(),
            trace_id = %ctx.trace_id_hex(),
        );
        let fut = self.inner.call(req);
        Box::pin(CURRENT.scope(ctx, fut.instrument(span)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_rejects_malformed() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(s).unwrap();
        assert_eq!(c.to_string(), s);
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let child = c.child();
        assert_eq!(child.trace_id, c.trace_id);
        assert_ne!(child.span_id, c.span_id);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad}");
        }
        let root = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&root.to_string()), Some(root));
        assert_ne!(TraceContext::new_root().trace_id, root.trace_id);
    }

    #[tokio::test]
    async fn inject_continues_the_current_trace() {
        let parent = TraceContext::new_root();
        let req = with_trace(parent, async { inject_trace(tonic::Request::new(())).unwrap() }).await;
        let sent = TraceContext::parse(req.metadata().get(TRACEPARENT).unwrap().to_str().unwrap()).unwrap();
        assert_eq!(sent.trace_id, parent.trace_id);
        assert_ne!(sent.span_id, parent.span_id);
        let fresh = inject_trace(tonic::Request::new(())).unwrap();
        let fresh = TraceContext::parse(fresh.metadata().get(TRACEPARENT).unwrap().to_str().unwrap()).unwrap();
        assert_ne!(fresh.trace_id, parent.trace_id);
    }
}
