//! podman as the benchmarks' peer, with the configuration of shared/PEERS.md: its own
//! `--root`/`--runroot` (so it never touches a system store), the overlay driver, cgroupfs,
//! runc, file events, and ulimits within this machine's hard limits.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A podman whose whole state lives under one directory.
pub struct Podman {
    root: PathBuf,
    runroot: PathBuf,
    conf: PathBuf,
}

impl Podman {
    /// podman with its storage, run state and `containers.conf` under `dir`.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n\n[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n",
        )?;
        Ok(Podman { root: dir.join("root"), runroot: dir.join("runroot"), conf })
    }

    /// `podman ARGS` on this state, stdout piped.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .arg("--storage-driver")
            .arg("overlay")
            .args(args)
            .env("CONTAINERS_CONF", &self.conf)
            .stdout(Stdio::piped());
        c
    }
}
