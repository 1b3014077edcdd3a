//! The CLI's config file: named contexts (like `docker context`), each naming service endpoints,
//! the TLS material to reach them over https, or the state directory of a local stack.
//!
//! Location: `$BERTH_CONFIG`, else `$XDG_CONFIG_HOME/berth/config.toml`, else
//! `~/.config/berth/config.toml`. Unknown keys are refused so that typos do not pass silently.
//!
//! ```toml
//! current_context = "prod"
//!
//! [contexts.prod]
//! description = "split deployment"
//! store = "https://store.example.com:7443"
//! registry = "https://registry.example.com:7443"
//! runtime = "https://node1.example.com:7443"
//! tls = { ca = "/etc/berth/ca.pem", cert = "/etc/berth/client.pem", key = "/etc/berth/client-key.pem" }
//!
//! [contexts.scratch]
//! root = "/srv/berth-scratch"   # a second local stack
//! ```

use anyhow::{bail, Context as _, Result};
use berth_common::{ClientTls, Endpoint};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The name of the built-in context: the local stack in the default state directory.
pub const DEFAULT_CONTEXT: &str = "default";

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The context used when neither `--context` nor `BERTH_CONTEXT` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Named contexts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub contexts: BTreeMap<String, ContextConfig>,
}

/// One named context. A service without an endpoint here uses the local stack (in `root`, or the
/// default state directory).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// Free text shown by `berth context ls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// State directory of the local stack for services without an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// store-svc endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// registry-svc endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// runtime-svc endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// TLS material for the https endpoints of this context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// Client TLS material (PEM files).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA bundle that signed the services' certificates (default: the system roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Client key, for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Name to verify in the servers' certificates when it differs from the endpoint's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// The endpoint crate's form.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            domain: self.server_name.clone(),
        }
    }
}

impl ContextConfig {
    /// Checks endpoints and TLS settings; `name` is used in messages.
    pub fn validate(&self, name: &str) -> Result<()> {
        for (svc, ep) in [("store", &self.store), ("registry", &self.registry), ("runtime", &self.runtime)] {
            if let Some(ep) = ep {
                ep.parse::<Endpoint>().with_context(|| format!("context {name:?}: {svc}"))?;
            }
        }
        if let Some(t) = &self.tls {
            if t.cert.is_some() != t.key.is_some() {
                bail!("context {name:?}: tls.cert and tls.key go together (mutual TLS needs both)");
            }
        }
        Ok(())
    }
}

impl ConfigFile {
    /// Reads and validates the file at `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
        };
        let cfg: Self = toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
        cfg.validate().with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(cfg)
    }

    /// Checks every context and that the current context exists.
    pub fn validate(&self) -> Result<()> {
        for (name, c) in &self.contexts {
            if name == DEFAULT_CONTEXT {
                bail!("context name {DEFAULT_CONTEXT:?} is reserved for the built-in local stack");
            }
            c.validate(name)?;
        }
        if let Some(cur) = &self.current_context {
            if cur != DEFAULT_CONTEXT && !self.contexts.contains_key(cur) {
                bail!("current_context {cur:?} is not defined under [contexts]");
            }
        }
        Ok(())
    }

    /// Writes the file atomically (temp file + rename), creating its directory.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string_pretty(self).context("encoding the config file")?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// Where the config file is: `$BERTH_CONFIG`, `$XDG_CONFIG_HOME/berth/config.toml` or
/// `~/.config/berth/config.toml`. `None` when there is no home directory to look in.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(x).join("berth/config.toml"));
    }
    std::env::var_os("HOME").filter(|p| !p.is_empty()).map(|h| PathBuf::from(h).join(".config/berth/config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/config.toml");
        assert_eq!(ConfigFile::load(&path).unwrap(), ConfigFile::default());
        let mut cfg = ConfigFile::default();
        cfg.contexts.insert(
            "prod".into(),
            ContextConfig {
                store: Some("https://s.example:7443".into()),
                tls: Some(TlsConfig { ca: Some("/ca.pem".into()), ..Default::default() }),
                ..Default::default()
            },
        );
        cfg.current_context = Some("prod".into());
        cfg.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), cfg);

        std::fs::write(&path, "[contexts.x]\nstore = \"unix:///s\"\nstroe = \"x\"\n").unwrap();
        let e = format!("{:#}", ConfigFile::load(&path).unwrap_err());
        assert!(e.contains("stroe"), "{e}");
    }

    #[test]
    fn validates() {
        let bad_ep: ConfigFile = toml::from_str("[contexts.a]\nstore = \"ftp://x\"\n").unwrap();
        assert!(bad_ep.validate().is_err());
        let half_tls: ConfigFile = toml::from_str("[contexts.a]\ntls = { cert = \"/c\" }\n").unwrap();
        assert!(half_tls.validate().is_err());
        let missing: ConfigFile = toml::from_str("current_context = \"nope\"\n").unwrap();
        assert!(missing.validate().is_err());
        let reserved: ConfigFile = toml::from_str("[contexts.default]\n").unwrap();
        assert!(reserved.validate().is_err());
    }
}
