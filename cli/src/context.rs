//! Where the services are. For each service, in order: the flag (`--store`, `--registry`,
//! `--runtime`), the environment (`BERTH_STORE`, `BERTH_REGISTRY`, `BERTH_RUNTIME`), the selected
//! context of the config file (`--context`/`BERTH_CONTEXT`, else its `current_context`), and
//! finally the local stack, which is started in the background when it is not running.
//!
//! `--root`/`BERTH_ROOT` picks the local stack's state directory and, unless a context is named
//! explicitly, means "use the local stack" (like `DOCKER_HOST` overriding the docker context).
//! Only the local stack is ever started; configured endpoints are only connected to.

use crate::config::{self, ConfigFile, DEFAULT_CONTEXT};
use crate::stack::{LocalStack, Service};
use anyhow::{Context as _, Result};
use berth_common::{ClientTls, Endpoint};
use std::path::PathBuf;
use tokio::sync::OnceCell;
use tonic::transport::Channel;

/// Options every command accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GlobalOpts {
    /// store-svc endpoint: unix:///path, http://host:port or https://host:port [env: BERTH_STORE]
    #[arg(long, global = true, value_name = "ENDPOINT")]
    pub store: Option<String>,
    /// registry-svc endpoint [env: BERTH_REGISTRY]
    #[arg(long, global = true, value_name = "ENDPOINT")]
    pub registry: Option<String>,
    /// runtime-svc endpoint [env: BERTH_RUNTIME]
    #[arg(long, global = true, value_name = "ENDPOINT")]
    pub runtime: Option<String>,
    /// Context of the config file to use [env: BERTH_CONTEXT]
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// State directory of the local stack [env: BERTH_ROOT] [default: /var/lib/berth]
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// Where an endpoint came from (shown by `berth system info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--store` etc.
    Flag,
    /// `BERTH_STORE` etc.
    Env(&'static str),
    /// A context of the config file.
    Context(String),
    /// The local stack (started on demand).
    LocalStack,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flag => f.write_str("flag"),
            Self::Env(v) => write!(f, "env {v}"),
            Self::Context(c) => write!(f, "context {c}"),
            Self::LocalStack => f.write_str("local stack"),
        }
    }
}

/// How to reach one service.
#[derive(Clone, Debug)]
pub struct Target {
    /// The service.
    pub service: Service,
    /// Its endpoint.
    pub endpoint: Endpoint,
    /// Where the endpoint came from.
    pub source: Source,
    /// TLS material for https endpoints.
    pub tls: Option<ClientTls>,
}

impl Target {
    /// True when the CLI may start this service itself.
    pub fn autostarts(&self) -> bool {
        self.source == Source::LocalStack
    }
}

/// Resolved endpoints and lazily opened channels.
pub struct Context {
    /// The name of the selected context ("default" for the built-in local stack).
    pub name: String,
    /// The local stack used for services without a configured endpoint.
    pub stack: LocalStack,
    /// The config file consulted, if any.
    pub config_path: Option<PathBuf>,
    targets: [Target; 3],
    channels: [OnceCell<Channel>; 3],
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Context {
    /// Resolves every endpoint (nothing is connected or started yet).
    pub fn load(opts: GlobalOpts) -> Result<Self> {
        let config_path = config::default_path();
        let cfg = match &config_path {
            Some(p) => ConfigFile::load(p)?,
            None => ConfigFile::default(),
        };
        let root_override = opts.root.clone().or_else(|| env("BERTH_ROOT").map(PathBuf::from));
        let named = opts.context.clone().or_else(|| env("BERTH_CONTEXT"));
        let name = match (&named, &root_override) {
            (Some(n), _) => n.clone(),
            (None, Some(_)) => DEFAULT_CONTEXT.to_string(),
            (None, None) => cfg.current_context.clone().unwrap_or_else(|| DEFAULT_CONTEXT.to_string()),
        };
        let ctx_cfg = if name == DEFAULT_CONTEXT {
            config::ContextConfig::default()
        } else {
            cfg.contexts.get(&name).cloned().with_context(|| {
                let known: Vec<&str> =
                    std::iter::once(DEFAULT_CONTEXT).chain(cfg.contexts.keys().map(String::as_str)).collect();
                format!("context {name:?} does not exist (known: {})", known.join(", "))
            })?
        };
        let root =
            root_override.or_else(|| ctx_cfg.root.clone()).unwrap_or_else(|| PathBuf::from(crate::stack::DEFAULT_ROOT));
        let stack = LocalStack::new(root);
        let tls = ctx_cfg.tls.as_ref().map(|t| t.client_tls());

        let resolve = |svc: Service, flag: &Option<String>, var: &'static str, cfg_ep: &Option<String>| {
            let (text, source) = if let Some(f) = flag {
                (f.clone(), Source::Flag)
            } else if let Some(e) = env(var) {
                (e, Source::Env(var))
            } else if let Some(c) = cfg_ep {
                (c.clone(), Source::Context(name.clone()))
            } else {
                return Ok(Target {
                    service: svc,
                    endpoint: stack.endpoint(svc),
                    source: Source::LocalStack,
                    tls: None,
                });
            };
            let endpoint: Endpoint = text.parse().with_context(|| format!("{svc} endpoint (from {source})"))?;
            let tls = if matches!(source, Source::Context(_)) { tls.clone() } else { None };
            Ok::<_, anyhow::Error>(Target { service: svc, endpoint, source, tls })
        };
        let targets = [
            resolve(Service::Store, &opts.store, "BERTH_STORE", &ctx_cfg.store)?,
            resolve(Service::Registry, &opts.registry, "BERTH_REGISTRY", &ctx_cfg.registry)?,
            resolve(Service::Runtime, &opts.runtime, "BERTH_RUNTIME", &ctx_cfg.runtime)?,
        ];
        Ok(Self { name, stack, config_path, targets, channels: [OnceCell::new(), OnceCell::new(), OnceCell::new()] })
    }

    /// How `svc` is reached.
    pub fn target(&self, svc: Service) -> &Target {
        &self.targets[svc as usize]
    }

    /// All three targets, store first.
    pub fn targets(&self) -> &[Target; 3] {
        &self.targets
    }

    /// A channel to `svc`: connects to a configured endpoint, or starts the local stack's
    /// service when it is not running. Channels are opened once per process and shared.
    pub async fn channel(&self, svc: Service) -> Result<Channel> {
        let ch = self.channels[svc as usize]
            .get_or_try_init(|| async {
                let t = self.target(svc);
                if t.autostarts() {
                    self.stack.ensure(svc).await
                } else {
                    let unreachable = || format!("{svc} is not reachable at {} (from {})", t.endpoint, t.source);
                    let ch =
                        berth_common::endpoint::connect(&t.endpoint, t.tls.as_ref()).await.with_context(unreachable)?;
                    // One health round trip surfaces TLS refusals (e.g. a missing client
                    // certificate, which TLS 1.3 reports only after the handshake) here, with the
                    // endpoint named, instead of in the first real call.
                    berth_common::probe::health(ch.clone(), "").await.with_context(unreachable)?;
                    Ok(ch)
                }
            })
            .await?;
        Ok(ch.clone())
    }

    /// A channel to store-svc (starting the local stack if needed).
    pub async fn store(&self) -> Result<Channel> {
        self.channel(Service::Store).await
    }

    /// A channel to registry-svc (starting the local stack if needed).
    #[allow(dead_code)] // for the pull/push commands
    pub async fn registry(&self) -> Result<Channel> {
        self.channel(Service::Registry).await
    }

    /// A channel to runtime-svc (starting the local stack if needed).
    pub async fn runtime(&self) -> Result<Channel> {
        self.channel(Service::Runtime).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test names its own config file and root through flags only, so they do not depend on
    // the environment of the test process beyond BERTH_* being unset or overridden by flags.
    #[test]
    fn flags_beat_the_local_stack() {
        let opts = GlobalOpts {
            store: Some("http://127.0.0.1:7001".into()),
            root: Some("/tmp/berth-test-root".into()),
            ..Default::default()
        };
        let ctx = Context::load(opts).unwrap();
        assert_eq!(ctx.target(Service::Store).source, Source::Flag);
        assert!(!ctx.target(Service::Store).autostarts());
        let reg = ctx.target(Service::Registry);
        assert_eq!(reg.endpoint.to_string(), "unix:///tmp/berth-test-root/run/registry.sock");
        assert!(reg.autostarts() || std::env::var("BERTH_REGISTRY").is_ok());
    }

    #[test]
    fn bad_flag_endpoint_is_explained() {
        let opts = GlobalOpts { runtime: Some("ftp://x:1".into()), root: Some("/tmp/x".into()), ..Default::default() };
        let e = format!("{:#}", Context::load(opts).err().unwrap());
        assert!(e.contains("runtime-svc") && e.contains("ftp://x:1"), "{e}");
    }
}
