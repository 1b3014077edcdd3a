//! Settings of store-svc: built-in defaults, then the TOML config file, then environment
//! variables and flags (the binary passes those in as [`Overrides`]).

use crate::store::StoreConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Errors in the configuration, with the file or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid setting {field}: {detail}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// Why.
        detail: String,
    },
}

/// TLS material for `https://` listeners.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA bundle for client certificates (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// The config file (`--config`), every field optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Endpoints to listen on.
    pub listen: Option<Vec<String>>,
    /// State directory.
    pub root: Option<PathBuf>,
    /// Per-message limit of gRPC requests and responses.
    pub max_message_bytes: Option<usize>,
    /// Chunk size of `Read` streams.
    pub read_chunk_bytes: Option<usize>,
    /// Unleased ingests idle this long are removed by GC.
    pub stale_ingest_secs: Option<u64>,
    /// GC spares blobs younger than this.
    pub gc_grace_secs: Option<u64>,
    /// Largest manifest GC parses.
    pub max_manifest_bytes: Option<u64>,
    /// Allow plain http on non-loopback addresses.
    pub allow_insecure_tcp: Option<bool>,
    /// Seconds in-flight calls get after SIGTERM.
    pub drain_timeout_secs: Option<u64>,
    /// TLS for https listeners.
    pub tls: Option<TlsFile>,
}

/// Values from flags and environment, which beat the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen` / `BERTH_STORE_LISTEN`.
    pub listen: Vec<String>,
    /// `--root` / `BERTH_STORE_ROOT`.
    pub root: Option<PathBuf>,
    /// `--config` / `BERTH_STORE_CONFIG`.
    pub config: Option<PathBuf>,
}

/// Resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Endpoints to listen on.
    pub listen: Vec<berth_common::Endpoint>,
    /// State directory (the filesystem backend's root).
    pub root: PathBuf,
    /// Per-message limit.
    pub max_message_bytes: usize,
    /// Plain http beyond loopback.
    pub allow_insecure_tcp: bool,
    /// Drain time after SIGTERM.
    pub drain_timeout: Duration,
    /// TLS.
    pub tls: Option<TlsFile>,
    /// Store tunables.
    pub store: StoreConfig,
}

/// `$BERTH_ROOT` or `/var/lib/berth`: the local stack's state directory.
pub fn stack_root() -> PathBuf {
    std::env::var_os("BERTH_ROOT").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib/berth"))
}

impl Settings {
    /// Defaults, then the config file (if any), then the overrides.
    pub fn resolve(o: Overrides) -> Result<Self, ConfigError> {
        let file = match &o.config {
            Some(p) => load(p)?,
            None => ConfigFile::default(),
        };
        let listen = if !o.listen.is_empty() {
            o.listen
        } else if let Some(l) = file.listen.filter(|l| !l.is_empty()) {
            l
        } else {
            vec![format!("unix://{}", stack_root().join("run/store.sock").display())]
        };
        let listen = listen
            .iter()
            .map(|s| {
                s.parse().map_err(|e: anyhow::Error| ConfigError::Invalid { field: "listen", detail: format!("{e:#}") })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let root = o.root.or(file.root).unwrap_or_else(|| stack_root().join("store"));
        let d = StoreConfig::default();
        let max_message_bytes = file.max_message_bytes.unwrap_or(berth_common::server::DEFAULT_MAX_MESSAGE_BYTES);
        if max_message_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid { field: "max_message_bytes", detail: "must be at least 65536".into() });
        }
        let read_chunk = file.read_chunk_bytes.unwrap_or(d.read_chunk);
        if !(4096..=max_message_bytes / 2).contains(&read_chunk) {
            return Err(ConfigError::Invalid {
                field: "read_chunk_bytes",
                detail: format!("must be between 4096 and half of max_message_bytes ({max_message_bytes})"),
            });
        }
        Ok(Self {
            listen,
            root,
            max_message_bytes,
            allow_insecure_tcp: file.allow_insecure_tcp.unwrap_or(false),
            drain_timeout: Duration::from_secs(file.drain_timeout_secs.unwrap_or(10)),
            tls: file.tls,
            store: StoreConfig {
                read_chunk,
                stale_ingest_after: file.stale_ingest_secs.map(Duration::from_secs).unwrap_or(d.stale_ingest_after),
                gc_grace: file.gc_grace_secs.map(Duration::from_secs).unwrap_or(d.gc_grace),
                max_manifest_bytes: file.max_manifest_bytes.unwrap_or(d.max_manifest_bytes),
            },
        })
    }
}

fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path: path.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("store.toml");
        std::fs::write(&cfg, "root = \"/from/file\"\nlisten = [\"http://127.0.0.1:7000\"]\nstale_ingest_secs = 5\n")
            .unwrap();
        let s = Settings::resolve(Overrides { config: Some(cfg.clone()), ..Default::default() }).unwrap();
        assert_eq!(s.root, PathBuf::from("/from/file"));
        assert_eq!(s.listen[0].to_string(), "http://127.0.0.1:7000");
        assert_eq!(s.store.stale_ingest_after, Duration::from_secs(5));
        let s = Settings::resolve(Overrides {
            config: Some(cfg.clone()),
            root: Some("/flag".into()),
            listen: vec!["unix:///tmp/x.sock".into()],
        })
        .unwrap();
        assert_eq!(s.root, PathBuf::from("/flag"));
        assert_eq!(s.listen[0].to_string(), "unix:///tmp/x.sock");

        std::fs::write(&cfg, "rooot = \"/typo\"\n").unwrap();
        let e = Settings::resolve(Overrides { config: Some(cfg.clone()), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("rooot"), "{e}");
        let e = Settings::resolve(Overrides { listen: vec!["ftp://x".into()], ..Default::default() }).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid { field: "listen", .. }));
    }
}
