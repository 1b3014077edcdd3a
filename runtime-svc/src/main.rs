//! `runtime-svc`: parse flags, open the container manager, serve `berth.runtime.v1.Runtime`.

use anyhow::{Context, Result};
use berth_common::{Endpoint, ServeOptions, ServiceMeta};
use clap::Parser;
use runtime_svc::config::Config;
use runtime_svc::grpc::RuntimeService;
use runtime_svc::manager::Manager;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Berth's runtime service: runs containers on this host.
#[derive(Parser, Debug)]
#[command(name = "runtime-svc", version)]
struct Args {
    /// Where to listen (repeatable): unix:///path, http://host:port, https://host:port.
    /// Default: unix://<root>/../run/runtime.sock.
    #[arg(long, env = "BERTH_RUNTIME_LISTEN", value_delimiter = ',')]
    listen: Vec<String>,
    /// State directory.
    #[arg(long, env = "BERTH_RUNTIME_ROOT", default_value = "/var/lib/berth/runtime")]
    root: PathBuf,
    /// Config file (TOML).
    #[arg(long, env = "BERTH_RUNTIME_CONFIG")]
    config: Option<PathBuf>,
    /// store-svc endpoint. Default: unix://<root>/../run/store.sock.
    #[arg(long, env = "BERTH_RUNTIME_STORE")]
    store: Option<String>,
}

#[tokio::main]
async fn main() -> Result<()> {
    berth_common::telemetry::init("runtime-svc");
    let args = Args::parse();
    let cfg = match &args.config {
        Some(p) => Config::load(p).map_err(anyhow::Error::msg)?,
        None => Config::default(),
    };
    let run_dir = args.root.parent().map(|p| p.join("run")).unwrap_or_else(|| PathBuf::from("/var/lib/berth/run"));
    let listen: Vec<Endpoint> = if args.listen.is_empty() {
        vec![Endpoint::unix(run_dir.join("runtime.sock"))]
    } else {
        args.listen.iter().map(|s| s.parse()).collect::<Result<_>>().context("--listen")?
    };
    let store: Endpoint = match &args.store {
        Some(s) => s.parse().context("--store")?,
        None => Endpoint::unix(run_dir.join("store.sock")),
    };
    let channel = berth_common::endpoint::connect_lazy(&store, cfg.store_tls.as_ref()).context("store endpoint")?;
    let mut opts = ServeOptions::new(listen[0].clone());
    opts.listen = listen;
    opts.tls = cfg.tls.clone();
    opts.allow_insecure_tcp = cfg.allow_insecure_tcp;
    let mut details = BTreeMap::new();
    details.insert("runtime".to_string(), format!("{:?}", cfg.runtime).to_lowercase());
    details.insert("root".to_string(), args.root.display().to_string());
    let meta = ServiceMeta {
        name: "runtime-svc",
        grpc_services: vec!["berth.runtime.v1.Runtime", "berth.runtime.v1.Networks"],
        details,
    };
    let manager = Manager::open(args.root.clone(), cfg, channel).await.context("opening runtime state")?;
    let routes = tonic::service::Routes::new(RuntimeService::new(manager.clone()).server())
        .add_service(runtime_svc::network::grpc::NetworkService::new(manager).server());
    berth_common::server::serve(opts, meta, routes, async { Ok(()) }).await
}
