//! runtime-svc's configuration file (TOML, unknown keys refused).

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Which OCI runtime runs containers.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// An external runc binary, run by the shim (the default; the built-in runtime is not
    /// available yet).
    #[default]
    Runc,
}

/// `--config FILE` contents.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The OCI runtime.
    pub runtime: RuntimeKind,
    /// Path of the runc binary.
    pub runc: PathBuf,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            runtime: RuntimeKind::Runc,
            runc: PathBuf::from("/usr/sbin/runc"),
            shim: None,
            cgroup_parent: "berth".into(),
            stop_timeout_seconds: 10,
            tls: None,
            allow_insecure_tcp: false,
            store_tls: None,
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
        Ok(())
    }

    /// The shim binary to use.
    pub fn shim_binary(&self) -> PathBuf {
        if let Some(p) = &self.shim {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("berth-shim")))
            .unwrap_or_else(|| PathBuf::from("berth-shim"))
    }
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
    }
}
