//! The loopback interface of a container's new network namespace, brought up as runc does.

use anyhow::{Context, Result};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Brings `lo` up in the network namespace of `pid` when the bundle's spec gives the container
/// a new one (a `network` namespace without `path`). Done from a short-lived thread, so only
/// that thread ever enters the namespace.
pub fn loopback_up(bundle: &Path, pid: i32) -> Result<()> {
    let text = std::fs::read(bundle.join("config.json")).context("reading config.json")?;
    let spec: serde_json::Value = serde_json::from_slice(&text).context("parsing config.json")?;
    let new_netns = spec["linux"]["namespaces"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["type"] == "network" && n.get("path").is_none_or(|p| p.is_null())));
    if !new_netns {
        return Ok(());
    }
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).context("opening the network namespace")?;
    std::thread::spawn(move || -> Result<()> {
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns");
        }
        set_up("lo")
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the namespace thread panicked"))?
}

fn set_up(name: &str) -> Result<()> {
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    let r = (|| {
        if unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) } != 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS");
        }
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        if unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) } != 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS");
        }
        Ok(())
    })();
    unsafe { libc::close(sock) };
    r
}
