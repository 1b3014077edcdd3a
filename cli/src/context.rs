//! Where the services are: flags, then environment, then the config file, then the local stack
//! (started in the background when it is not running).

use anyhow::Result;
use berth_common::Endpoint;
use std::path::PathBuf;
use tonic::transport::Channel;

/// Options every command accepts.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalOpts {
    /// store-svc endpoint (unix:///path, http://host:port, https://host:port).
    #[arg(long, global = true, env = "BERTH_STORE")]
    pub store: Option<String>,
    /// registry-svc endpoint.
    #[arg(long, global = true, env = "BERTH_REGISTRY")]
    pub registry: Option<String>,
    /// runtime-svc endpoint.
    #[arg(long, global = true, env = "BERTH_RUNTIME")]
    pub runtime: Option<String>,
    /// State directory of the local stack.
    #[arg(long, global = true, env = "BERTH_ROOT")]
    pub root: Option<PathBuf>,
}

/// Resolved endpoints and lazily opened channels.
pub struct Context {
    pub store: Endpoint,
    pub registry: Endpoint,
    pub runtime: Endpoint,
}

impl Context {
    pub fn load(opts: GlobalOpts) -> Result<Self> {
        let root = opts.root.unwrap_or_else(|| PathBuf::from("/var/lib/berth"));
        let ep = |v: Option<String>, sock: &str| -> Result<Endpoint> {
            Ok(match v {
                Some(s) => s.parse()?,
                None => Endpoint::unix(root.join("run").join(sock)),
            })
        };
        Ok(Self {
            store: ep(opts.store, "store.sock")?,
            registry: ep(opts.registry, "registry.sock")?,
            runtime: ep(opts.runtime, "runtime.sock")?,
        })
    }

    /// A channel to store-svc.
    pub async fn store(&self) -> Result<Channel> {
        berth_common::endpoint::connect(&self.store, None).await
    }

    /// A channel to registry-svc.
    pub async fn registry(&self) -> Result<Channel> {
        berth_common::endpoint::connect(&self.registry, None).await
    }

    /// A channel to runtime-svc.
    pub async fn runtime(&self) -> Result<Channel> {
        berth_common::endpoint::connect(&self.runtime, None).await
    }
}
