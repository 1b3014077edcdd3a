//! runtime-svc's configuration file (TOML, unknown keys refused).

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Which OCI runtime runs containers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// The built-in runtime: `berth-runc` (youki's libcontainer behind runc's command line),
    /// run by the shim. The default.
    #[default]
    Builtin,
    /// An external runc binary (`runc = "…"`), run by the shim.
    Runc,
}

/// `--config FILE` contents.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The OCI runtime.
    pub runtime: RuntimeKind,
    /// Path of the runc binary (used with `runtime = "runc"`).
    pub runc: PathBuf,
    /// Path of the built-in runtime's binary, `berth-runc` (default: beside runtime-svc).
    pub builtin: Option<PathBuf>,
    /// Path of the `berth-shim` binary (default: beside runtime-svc).
    pub shim: Option<PathBuf>,
    /// cgroup parent of every container (`/<parent>/<id>`).
    pub cgroup_parent: String,
    /// Default seconds between the stop signal and SIGKILL.
    pub stop_timeout_seconds: u32,
    /// TLS for https:// listeners (`cert`, `key`, and `client_ca` for mutual TLS).
    pub tls: Option<berth_common::ServerTls>,
    /// Allow plain http:// listeners on non-loopback addresses (unauthenticated).
    pub allow_insecure_tcp: bool,
    /// TLS to reach an https:// store-svc: `ca`, and `cert` + `key` for mutual TLS.
    pub store_tls: Option<berth_common::ClientTls>,
    /// `[network]`: default bridge, subnets, nftables table, host-wide network state.
    pub network: crate::network::NetConfig,
    /// `[log_opts]`: default json-file log options of every container, docker's names:
    /// `"max-size" = "10m"` (rotate at this size), `"max-file" = "3"` (files kept).
    pub log_opts: std::collections::BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            runtime: RuntimeKind::Builtin,
            runc: PathBuf::from("/usr/sbin/runc"),
            builtin: None,
            shim: None,
            cgroup_parent: "berth".into(),
            stop_timeout_seconds: 10,
            tls: None,
            allow_insecure_tcp: false,
            store_tls: None,
            network: Default::default(),
            log_opts: Default::default(),
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values.
    pub fn validate(&self) -> Result<(), String> {
        if self.cgroup_parent.is_empty() || self.cgroup_parent.contains("..") {
            return Err("cgroup_parent must be a non-empty relative cgroup name".into());
        }
        crate::logs::limits(&self.log_opts).map_err(|e| format!("log_opts: {e}"))?;
        Ok(())
    }

    /// The shim binary to use.
    pub fn shim_binary(&self) -> PathBuf {
        if let Some(p) = &self.shim {
            return p.clone();
        }
        beside_self("berth-shim")
    }

    /// The OCI runtime binary the shim runs (runc's command line either way).
    pub fn runtime_binary(&self) -> PathBuf {
        match self.runtime {
            RuntimeKind::Runc => self.runc.clone(),
            RuntimeKind::Builtin => self.builtin.clone().unwrap_or_else(|| beside_self("berth-runc")),
        }
    }

    /// Name of the runtime's state directory under runtime-svc's root (one per runtime, so
    /// switching runtimes never hands one runtime the other's state).
    pub fn runtime_state_dir(&self) -> &'static str {
        match self.runtime {
            RuntimeKind::Runc => "runc",
            RuntimeKind::Builtin => "berth-runc",
        }
    }
}

/// A binary in the same directory as the running one.
fn beside_self(name: &str) -> PathBuf {
    std::env::current_exe().ok().and_then(|p| p.parent().map(|d| d.join(name))).unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "runtime = \"runc\"\nbogus = 1\n").unwrap();
        assert!(Config::load(&p).unwrap_err().contains("bogus"));
        std::fs::write(&p, "runtime = \"runc\"\nrunc = \"/bin/runc\"\n").unwrap();
        assert_eq!(Config::load(&p).unwrap().runc, PathBuf::from("/bin/runc"));
        assert_eq!(Config::load(&p).unwrap().runtime_binary(), PathBuf::from("/bin/runc"));
        std::fs::write(&p, "builtin = \"/opt/berth-runc\"\n").unwrap();
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.runtime, RuntimeKind::Builtin, "the built-in runtime is the default");
        assert_eq!(cfg.runtime_binary(), PathBuf::from("/opt/berth-runc"));
        assert_eq!(cfg.runtime_state_dir(), "berth-runc");
    }
}
