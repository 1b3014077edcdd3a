//! store-svc binary: parse flags, open the store (recovering after a crash), serve gRPC.

use anyhow::Context;
use berth_common::server::{serve, ServeOptions, ServerTls, ServiceMeta};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use store_svc::backend::fs::FsBackend;
use store_svc::config::{Overrides, Settings};

/// Berth's content store: blobs by sha256, image records, build cache, leases and GC.
#[derive(Parser, Debug)]
#[command(name = "store-svc", version)]
struct Args {
    /// Endpoint to listen on (repeatable): unix:///path, http://host:port or https://host:port.
    #[arg(long, env = "BERTH_STORE_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,
    /// State directory [default: $BERTH_ROOT/store or /var/lib/berth/store].
    #[arg(long, env = "BERTH_STORE_ROOT")]
    root: Option<PathBuf>,
    /// TOML config file.
    #[arg(long, env = "BERTH_STORE_CONFIG")]
    config: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads.
    berth_common::alloc::tune_for_streaming();
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    berth_common::telemetry::init("store-svc");
    let a = Args::parse();
    let s = Settings::resolve(Overrides { listen: a.listen, root: a.root, config: a.config })?;
    let backend = FsBackend::open(&s.root).with_context(|| format!("opening store at {}", s.root.display()))?;
    let store = store_svc::Store::open(Arc::new(backend), s.store.clone())
        .await
        .with_context(|| format!("recovering store at {}", s.root.display()))?;
    let meta = ServiceMeta {
        name: "store-svc",
        grpc_services: store_svc::grpc::SERVICE_NAMES.to_vec(),
        details: [("backend".to_string(), store.backend_description())].into_iter().collect(),
    };
    let opts = ServeOptions {
        listen: s.listen,
        tls: s.tls.map(|t| ServerTls { cert: t.cert, key: t.key, client_ca: t.client_ca }),
        allow_insecure_tcp: s.allow_insecure_tcp,
        drain_timeout: s.drain_timeout,
        max_message_bytes: s.max_message_bytes,
    };
    let routes = store_svc::grpc::routes(store, s.max_message_bytes);
    // Recovery is done by now (Store::open), so the service is ready as soon as it listens.
    serve(opts, meta, routes, async { Ok(()) }).await
}
