//! registry-svc binary: parse flags, connect to store-svc, serve gRPC.

use anyhow::Context;
use berth_common::server::{serve, ServeOptions, ServerTls, ServiceMeta};
use clap::Parser;
use registry_svc::config::{Overrides, Settings};
use std::path::PathBuf;
use std::sync::Arc;

/// Berth's registry service: pulls images from upstream registries into store-svc.
#[derive(Parser, Debug)]
#[command(name = "registry-svc", version)]
struct Args {
    /// Endpoint to listen on (repeatable): unix:///path, http://host:port or https://host:port.
    #[arg(long, env = "BERTH_REGISTRY_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,
    /// State directory [default: $BERTH_ROOT/registry or /var/lib/berth/registry].
    #[arg(long, env = "BERTH_REGISTRY_ROOT")]
    root: Option<PathBuf>,
    /// TOML config file.
    #[arg(long, env = "BERTH_REGISTRY_CONFIG")]
    config: Option<PathBuf>,
    /// store-svc endpoint [default: unix://$BERTH_ROOT/run/store.sock].
    #[arg(long, env = "BERTH_REGISTRY_STORE")]
    store: Option<String>,
}

fn main() -> anyhow::Result<()> {
    // Before the runtime starts its threads.
    berth_common::alloc::tune_for_streaming();
    run()
}

#[tokio::main]
async fn run() -> anyhow::Result<()> {
    berth_common::telemetry::init("registry-svc");
    let a = Args::parse();
    let s = Settings::resolve(Overrides { listen: a.listen, root: a.root, config: a.config, store: a.store })?;
    std::fs::create_dir_all(&s.root).with_context(|| format!("creating {}", s.root.display()))?;
    let channel = berth_common::endpoint::connect_lazy(&s.store, s.store_tls.as_ref())
        .with_context(|| format!("store-svc endpoint {}", s.store))?;
    let upstream = Arc::new(registry_svc::upstream::Upstream::new(s.upstream.clone())?);
    let puller = registry_svc::pull::Puller::new(upstream, registry_svc::store::Store::new(channel));
    let meta = ServiceMeta {
        name: "registry-svc",
        grpc_services: registry_svc::grpc::SERVICE_NAMES.to_vec(),
        details: [("store".to_string(), s.store.to_string())].into_iter().collect(),
    };
    let opts = ServeOptions {
        listen: s.listen,
        tls: s.tls.map(|t| ServerTls { cert: t.cert, key: t.key, client_ca: t.client_ca }),
        allow_insecure_tcp: s.allow_insecure_tcp,
        drain_timeout: std::time::Duration::from_secs(10),
        max_message_bytes: berth_common::server::DEFAULT_MAX_MESSAGE_BYTES,
    };
    let svc = berth_proto::registry::v1::registry_server::RegistryServer::new(
        registry_svc::grpc::RegistryService::new(puller),
    );
    let routes = tonic::service::Routes::new(svc);
    serve(opts, meta, routes, async { Ok(()) }).await
}
