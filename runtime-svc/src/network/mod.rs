//! Container networking: `--network bridge|host|none|<user network>`, published ports,
//! user-defined bridge networks, and the container's /etc/hosts and /etc/resolv.conf.
//!
//! - A bridge-mode container gets a network namespace of its own made by runtime-svc
//!   (bind-mounted at `<root>/netns/<id>`, its path put in the OCI spec so the runtime joins
//!   it), a veth pair (host end `veth<id[..11]>` in the network's bridge, the other end `eth0`),
//!   an address from the network's subnet, a default route via the bridge and DNAT rules for its
//!   published ports ([`nft`]). Netlink work runs on dedicated threads ([`netlink`]).
//! - Host-wide state (shared by every runtime-svc of the host, since bridges, addresses and
//!   ports are host resources) lives under `state_dir` (default `/run/berth/net`): one file per
//!   leased address (`ipam/<bridge>/<ip>`), per published port (`ports/<proto>-<port>`), per
//!   claimed subnet (`subnets/<net>-<len>`) and per attached container (`leases/<id>.json`),
//!   each created with O_EXCL (no duplicates, no lock) and naming its owner (runtime root and
//!   container). It survives runtime-svc restarts; it is gone after a reboot, as are the bridges
//!   and namespaces it describes.
//! - A container's network is set up at start and released when it exits (as docker does); on
//!   `rm` everything is released again (idempotent). On start, runtime-svc re-applies the rules
//!   of its running containers (idempotent) and releases whatever it owns that no running
//!   container uses (and whatever belongs to a runtime root that no longer exists).
//! - Name resolution on user-defined networks: /etc/hosts entries, rewritten in place in every
//!   running container of the network when a peer starts or stops.

pub mod grpc;
pub mod netlink;
pub mod nft;

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// `[network]` section of runtime-svc's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetConfig {
    /// Bridge of the default "bridge" network.
    pub bridge: String,
    /// Subnet of the default network.
    pub subnet: String,
    /// First subnet tried for user-defined networks without --subnet (then the next /16s up
    /// to 172.31.0.0/16, then 192.168.0.0/20 blocks).
    pub user_subnet_base: String,
    /// nftables table (family ip) owned by berth.
    pub nft_table: String,
    /// Host-wide network state (address and port leases).
    pub state_dir: PathBuf,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            bridge: "berth0".into(),
            subnet: "172.17.0.0/16".into(),
            user_subnet_base: "172.18.0.0/16".into(),
            nft_table: "berth".into(),
            state_dir: PathBuf::from("/run/berth/net"),
        }
    }
}

/// A published port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    /// Host address ("" = all).
    pub host_ip: String,
    /// Host port (0 = random, before start).
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// "tcp" or "udp".
    pub protocol: String,
    /// Last port of a host range to choose the first free port from (0 = no range).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_port_end: u16,
}

fn is_zero(n: &u16) -> bool {
    *n == 0
}

/// What the user asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetRequest {
    /// "bridge", "host", "none" or a user network's name.
    pub mode: String,
    /// `-p`.
    pub ports: Vec<PortBinding>,
    /// `-P`.
    pub publish_all: bool,
    /// `--expose` ("80/tcp"), added to the image's EXPOSE.
    pub expose: Vec<String>,
}

/// A container's attachment while it runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// Network name.
    pub network: String,
    /// Bridge.
    pub bridge: String,
    /// Address.
    pub ip: String,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway.
    pub gateway: String,
    /// eth0's MAC.
    pub mac: String,
    /// Published ports, host ports resolved.
    pub ports: Vec<PortBinding>,
    /// Namespace bind mount.
    pub netns: PathBuf,
}

/// The network part of a container's record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerNet {
    /// Requested.
    pub request: NetRequest,
    /// The image's EXPOSE ("80/tcp").
    pub exposed: Vec<String>,
    /// While running (bridge modes).
    pub endpoint: Option<Endpoint>,
}

impl ContainerNet {
    /// The network name shown by inspect/ps.
    pub fn network_name(&self) -> String {
        if self.request.mode.is_empty() {
            "bridge".into()
        } else {
            self.request.mode.clone()
        }
    }
}

/// A network definition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDef {
    /// 64 hex.
    pub id: String,
    /// Name.
    pub name: String,
    /// "bridge", "host" or "null".
    pub driver: String,
    /// CIDR.
    pub subnet: String,
    /// Gateway.
    pub gateway: String,
    /// Linux bridge.
    pub bridge: String,
    /// ns since epoch.
    pub created_at: i64,
}

impl NetworkDef {
    /// User-defined (not one of bridge/host/none).
    pub fn user_defined(&self) -> bool {
        !matches!(self.name.as_str(), "bridge" | "host" | "none")
    }
}

/// A running container on a network.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Lease {
    /// Runtime root that owns it.
    pub root: PathBuf,
    /// Container ID.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Container hostname.
    pub hostname: String,
    /// The container's hosts file (rewritten when peers come and go).
    pub hosts_file: PathBuf,
    /// The attachment.
    pub endpoint: Endpoint,
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// No such network.
    #[error("network {0} not found")]
    NotFound(String),
    /// Name taken.
    #[error("network with name {0} already exists")]
    Exists(String),
    /// Not allowed now.
    #[error("{0}")]
    State(String),
    /// Port in use.
    #[error("{0}")]
    PortInUse(String),
    /// Setting up failed.
    #[error("network setup failed: {0}")]
    Setup(String),
}

/// How the OCI spec should give the container its network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecNet {
    /// A new empty namespace (only lo): `none`.
    Empty,
    /// Join this namespace: bridge modes.
    Path(PathBuf),
    /// The host's namespace: `host`.
    Host,
}

/// What [`Networks::attach`] made.
#[derive(Clone, Debug)]
pub struct Attached {
    /// For the spec.
    pub spec: SpecNet,
    /// The endpoint (bridge modes).
    pub endpoint: Option<Endpoint>,
}

fn now_nanos() -> i64 {
    crate::container::now_nanos()
}

/// Parses "a.b.c.d/len" to (network address, len).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), NetError> {
    let bad = || NetError::Invalid(format!("invalid subnet {s:?}: want IPv4 CIDR like 172.20.0.0/16"));
    let (a, l) = s.split_once('/').ok_or_else(bad)?;
    let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let l: u8 = l.parse().map_err(|_| bad())?;
    if !(8..=30).contains(&l) {
        return Err(NetError::Invalid(format!("invalid subnet {s}: prefix length must be 8..30")));
    }
    let mask = mask(l);
    Ok((Ipv4Addr::from(u32::from(a) & mask), l))
}

fn mask(l: u8) -> u32 {
    if l == 0 {
        0
    } else {
        u32::MAX << (32 - l)
    }
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let l = a.1.min(b.1);
    (u32::from(a.0) & mask(l)) == (u32::from(b.0) & mask(l))
}

/// The host's IPv4 routes (destination, prefix) from /proc/net/route, default route excluded.
fn host_routes() -> Vec<(Ipv4Addr, u8)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let mut out = vec![];
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(d), Ok(m)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16)) else { continue };
        if m == 0 {
            continue;
        }
        out.push((Ipv4Addr::from(d.swap_bytes()), m.count_ones() as u8));
    }
    out
}

/// MAC from an address, as docker: 02:42 + the 4 address bytes.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

fn write_new(path: &Path, content: &str) -> std::io::Result<bool> {
    use std::io::Write;
    match std::fs::OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(mut f) => {
            f.write_all(content.as_bytes())?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// Rewrites a file in place (same inode: it is bind-mounted into a container).
fn rewrite_in_place(path: &Path, data: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().write(true).truncate(true).create(true).open(path)?;
    f.write_all(data.as_bytes())
}

/// Owner line of a claim file: "<root>\n<container or network>\n".
fn owner(root: &Path, what: &str) -> String {
    format!("{}\n{what}\n", root.display())
}

fn read_owner(path: &Path) -> Option<(PathBuf, String)> {
    let t = std::fs::read_to_string(path).ok()?;
    let mut l = t.lines();
    Some((PathBuf::from(l.next()?), l.next().unwrap_or("").to_string()))
}

/// /etc/resolv.conf for a container: the host's, without loopback nameservers (they would
/// point at the container itself); docker's fallback 8.8.8.8 and 8.8.4.4 when none is left.
pub fn resolv_conf(host: &str, keep_loopback: bool) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let t = line.trim();
        if let Some(ns) = t.strip_prefix("nameserver") {
            let ns = ns.trim();
            let lo = ns.starts_with("127.") || ns == "::1";
            if lo && !keep_loopback {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// /etc/hosts: localhost lines, then `ip name...` entries.
pub fn hosts_file(entries: &[(String, Vec<String>)]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for (ip, names) in entries {
        s.push_str(&format!("{ip}\t{}\n", names.join(" ")));
    }
    s
}

/// The networks of one runtime root, and the containers' attachments.
pub struct Networks {
    root: PathBuf,
    cfg: NetConfig,
    lock: tokio::sync::Mutex<()>,
    /// Bridges (name → ifindex) whose base nft rules this process has applied. An nft
    /// transaction costs ~30 ms (the kernel waits for an RCU grace period on commit), so it runs
    /// once per bridge instead of on every container start; a bridge re-created (new ifindex)
    /// or removed with its network is applied again.
    based: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Networks {
    /// Opens (creating the state directories).
    pub fn open(root: &Path, cfg: NetConfig) -> Result<Networks, NetError> {
        let n =
            Networks { root: root.to_path_buf(), cfg, lock: tokio::sync::Mutex::new(()), based: Default::default() };
        for d in
            [n.defs_dir(), n.netns_dir(), n.global("ipam"), n.global("ports"), n.global("leases"), n.global("subnets")]
        {
            std::fs::create_dir_all(&d).map_err(|e| NetError::Setup(format!("creating {}: {e}", d.display())))?;
        }
        parse_cidr(&n.cfg.subnet)?;
        Ok(n)
    }

    fn defs_dir(&self) -> PathBuf {
        self.root.join("networks")
    }
    fn netns_dir(&self) -> PathBuf {
        self.root.join("netns")
    }
    fn global(&self, sub: &str) -> PathBuf {
        self.cfg.state_dir.join(sub)
    }

    /// The default bridge network.
    pub fn default_bridge(&self) -> NetworkDef {
        let (net, len) = parse_cidr(&self.cfg.subnet).unwrap_or((Ipv4Addr::new(172, 17, 0, 0), 16));
        let gw = Ipv4Addr::from(u32::from(net) + 1);
        NetworkDef {
            id: id_of("bridge", &self.cfg.bridge),
            name: "bridge".into(),
            driver: "bridge".into(),
            subnet: format!("{net}/{len}"),
            gateway: gw.to_string(),
            bridge: self.cfg.bridge.clone(),
            created_at: 0,
        }
    }

    /// Every network: bridge, host, none, then user-defined ones by name.
    pub fn list(&self) -> Vec<NetworkDef> {
        let mut v = vec![
            self.default_bridge(),
            NetworkDef { id: id_of("host", ""), name: "host".into(), driver: "host".into(), ..Default::default() },
            NetworkDef { id: id_of("none", ""), name: "none".into(), driver: "null".into(), ..Default::default() },
        ];
        let mut user: Vec<NetworkDef> = std::fs::read_dir(self.defs_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        user.sort_by(|a: &NetworkDef, b| a.name.cmp(&b.name));
        v.extend(user);
        v
    }

    /// By name, ID or unique ID prefix.
    pub fn get(&self, what: &str) -> Result<NetworkDef, NetError> {
        let all = self.list();
        if let Some(n) = all.iter().find(|n| n.name == what || n.id == what) {
            return Ok(n.clone());
        }
        let m: Vec<&NetworkDef> = all.iter().filter(|n| !what.is_empty() && n.id.starts_with(what)).collect();
        match m.len() {
            1 => Ok(m[0].clone()),
            0 => Err(NetError::NotFound(what.to_string())),
            _ => Err(NetError::Invalid(format!(
                "network {what} is ambiguous ({} matches found based on ID prefix)",
                m.len()
            ))),
        }
    }

    /// Checks `--network` at create time; returns the canonical mode ("bridge", "host", "none"
    /// or the network's name).
    pub fn resolve_mode(&self, mode: &str) -> Result<String, NetError> {
        match mode {
            "" | "bridge" | "default" => Ok("bridge".into()),
            "host" | "none" => Ok(mode.into()),
            m if m.starts_with("container:") => {
                Err(NetError::Invalid("--network container:<name> is not supported".into()))
            }
            m => Ok(self.get(m)?.name),
        }
    }

    /// `network create`.
    pub async fn create(&self, name: &str, subnet: &str, gateway: &str, driver: &str) -> Result<NetworkDef, NetError> {
        if !crate::container::valid_name(name) {
            return Err(NetError::Invalid(format!(
                "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        if !(driver.is_empty() || driver == "bridge") {
            return Err(NetError::Invalid(format!("driver {driver:?} is not supported: only \"bridge\"")));
        }
        let _g = self.lock.lock().await;
        if self.list().iter().any(|n| n.name == name) {
            return Err(NetError::Exists(name.to_string()));
        }
        let routes = host_routes();
        let claim = |net: Ipv4Addr, len: u8| -> Result<bool, NetError> {
            let p = self.global("subnets").join(format!("{net}-{len}"));
            write_new(&p, &owner(&self.root, name)).map_err(|e| NetError::Setup(format!("{}: {e}", p.display())))
        };
        let claimed: Vec<(Ipv4Addr, u8)> = std::fs::read_dir(self.global("subnets"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let (a, l) = n.split_once('-')?;
                Some((a.parse().ok()?, l.parse().ok()?))
            })
            .collect();
        let default = parse_cidr(&self.cfg.subnet)?;
        let busy = |c: (Ipv4Addr, u8)| {
            overlaps(c, default) || routes.iter().any(|r| overlaps(c, *r)) || claimed.iter().any(|r| overlaps(c, *r))
        };
        let (net, len) = if subnet.is_empty() {
            let (base, _) = parse_cidr(&self.cfg.user_subnet_base)?;
            let mut cands: Vec<(Ipv4Addr, u8)> = vec![];
            let b = base.octets();
            for second in b[1]..=31u8 {
                cands.push((Ipv4Addr::new(b[0], second, 0, 0), 16));
            }
            for third in (0..=240u8).step_by(16) {
                cands.push((Ipv4Addr::new(192, 168, third, 0), 20));
            }
            let mut found = None;
            for c in cands {
                if !busy(c) && claim(c.0, c.1)? {
                    found = Some(c);
                    break;
                }
            }
            found.ok_or_else(|| NetError::State("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into()))?
        } else {
            let c = parse_cidr(subnet)?;
            if busy(c) || !claim(c.0, c.1)? {
                return Err(NetError::Invalid(format!(
                    "invalid pool request: Pool overlaps with other one on this address space ({subnet})"
                )));
            }
            c
        };
        let release = || {
            let _ = std::fs::remove_file(self.global("subnets").join(format!("{net}-{len}")));
        };
        let gw = if gateway.is_empty() {
            Ipv4Addr::from(u32::from(net) + 1)
        } else {
            match gateway.parse::<Ipv4Addr>() {
                Ok(g) if overlaps((g, 32), (net, len)) && g != net => g,
                _ => {
                    release();
                    return Err(NetError::Invalid(format!("gateway {gateway} is not an address inside {net}/{len}")));
                }
            }
        };
        let id = crate::container::new_id();
        let def = NetworkDef {
            bridge: format!("br-{}", &id[..12]),
            id,
            name: name.to_string(),
            driver: "bridge".into(),
            subnet: format!("{net}/{len}"),
            gateway: gw.to_string(),
            created_at: now_nanos(),
        };
        let p = self.defs_dir().join(format!("{name}.json"));
        if let Err(e) = atomic_write(&p, &serde_json::to_vec_pretty(&def).unwrap_or_default()) {
            release();
            return Err(NetError::Setup(format!("saving {}: {e}", p.display())));
        }
        Ok(def)
    }

    /// Running containers attached to `bridge` (of any runtime root).
    pub fn endpoints(&self, bridge: &str) -> Vec<Lease> {
        self.leases().into_iter().filter(|l| l.endpoint.bridge == bridge).collect()
    }

    fn leases(&self) -> Vec<Lease> {
        std::fs::read_dir(self.global("leases"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect()
    }

    /// `network rm`. `used_by` lists containers (even stopped) configured with it.
    pub async fn remove(&self, what: &str, used_by: &[String]) -> Result<String, NetError> {
        let def = self.get(what)?;
        if !def.user_defined() {
            return Err(NetError::State(format!("{} is a pre-defined network and cannot be removed", def.name)));
        }
        let _g = self.lock.lock().await;
        let active = self.endpoints(&def.bridge);
        if !active.is_empty() || !used_by.is_empty() {
            let names: Vec<String> = active.iter().map(|l| l.name.clone()).chain(used_by.iter().cloned()).collect();
            return Err(NetError::State(format!(
                "error while removing network: network {} id {} has active endpoints ({})",
                def.name,
                def.id,
                names.join(", ")
            )));
        }
        self.destroy(&def).await;
        Ok(def.name)
    }

    async fn destroy(&self, def: &NetworkDef) {
        self.based.lock().unwrap().remove(&def.bridge);
        if let Err(e) = netlink::delete_link(def.bridge.clone()).await {
            tracing::warn!(bridge = %def.bridge, error = %e, "could not delete the bridge");
        }
        let table = self.cfg.nft_table.clone();
        let br = def.bridge.clone();
        let _ = tokio::task::spawn_blocking(move || nft::forget_bridge(&table, &br)).await;
        if let Ok((net, len)) = parse_cidr(&def.subnet) {
            let _ = std::fs::remove_file(self.global("subnets").join(format!("{net}-{len}")));
        }
        let _ = std::fs::remove_dir_all(self.global("ipam").join(&def.bridge));
        let _ = std::fs::remove_file(self.defs_dir().join(format!("{}.json", def.name)));
    }

    /// `network prune`: user networks that no container uses; `in_use` are the network names
    /// containers are configured with.
    pub async fn prune(&self, in_use: &HashSet<String>) -> Vec<String> {
        let mut out = vec![];
        for def in self.list().into_iter().filter(|d| d.user_defined()) {
            if in_use.contains(&def.name) || !self.endpoints(&def.bridge).is_empty() {
                continue;
            }
            let _g = self.lock.lock().await;
            self.destroy(&def).await;
            out.push(def.name);
        }
        out
    }

    fn ipam_dir(&self, bridge: &str) -> PathBuf {
        self.global("ipam").join(bridge)
    }

    fn lease_path(&self, id: &str) -> PathBuf {
        self.global("leases").join(format!("{id}.json"))
    }

    /// Path of a container's netns bind mount.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir().join(id)
    }

    fn allocate_ip(&self, def: &NetworkDef, id: &str) -> Result<(Ipv4Addr, u8), NetError> {
        let (net, len) = parse_cidr(&def.subnet)?;
        let gw: Ipv4Addr = def.gateway.parse().map_err(|_| NetError::Invalid("bad gateway".into()))?;
        let dir = self.ipam_dir(&def.bridge);
        std::fs::create_dir_all(&dir).map_err(|e| NetError::Setup(format!("{}: {e}", dir.display())))?;
        let size = 1u32 << (32 - len);
        for i in 1..size - 1 {
            let ip = Ipv4Addr::from(u32::from(net) + i);
            if ip == gw {
                continue;
            }
            if write_new(&dir.join(ip.to_string()), &owner(&self.root, id))
                .map_err(|e| NetError::Setup(format!("{}: {e}", dir.display())))?
            {
                return Ok((ip, len));
            }
        }
        Err(NetError::State(format!("no available IPv4 addresses on network {}", def.name)))
    }

    fn port_claim(&self, proto: &str, port: u16) -> PathBuf {
        self.global("ports").join(format!("{proto}-{port}"))
    }

    /// Claims the host ports (random ones chosen now); checks each is free on the host by
    /// binding it. Returns the bindings with ports resolved.
    fn claim_ports(&self, id: &str, wanted: &[PortBinding]) -> Result<Vec<PortBinding>, NetError> {
        let mut done: Vec<PortBinding> = vec![];
        let fail = |done: &[PortBinding], e: NetError| {
            for p in done {
                let _ = std::fs::remove_file(self.port_claim(&p.protocol, p.host_port));
            }
            Err(e)
        };
        for w in wanted {
            let proto = if w.protocol.is_empty() { "tcp".to_string() } else { w.protocol.clone() };
            let ip: Ipv4Addr = if w.host_ip.is_empty() {
                Ipv4Addr::UNSPECIFIED
            } else {
                match w.host_ip.parse() {
                    Ok(ip) => ip,
                    Err(_) => return fail(&done, NetError::Invalid(format!("invalid host IP {:?}", w.host_ip))),
                }
            };
            let shown = if w.host_ip.is_empty() { "0.0.0.0".to_string() } else { w.host_ip.clone() };
            if w.host_port_end > w.host_port && w.host_port != 0 {
                match self.claim_from_range(id, &proto, ip, w) {
                    Ok(port) => {
                        done.push(PortBinding { host_port: port, host_port_end: 0, protocol: proto, ..w.clone() });
                        continue;
                    }
                    Err(e) => return fail(&done, e),
                }
            }
            let mut tries = 0;
            let port = loop {
                tries += 1;
                let port = match probe_bind(&proto, ip, w.host_port) {
                    Ok(p) => p,
                    Err(e) => {
                        return fail(
                            &done,
                            NetError::PortInUse(format!(
                                "driver failed programming external connectivity on endpoint: Bind for {shown}:{} failed: port is already allocated ({e})",
                                w.host_port
                            )),
                        )
                    }
                };
                match write_new(&self.port_claim(&proto, port), &owner(&self.root, id)) {
                    Ok(true) => break port,
                    Ok(false) if w.host_port == 0 && tries < 50 => continue,
                    Ok(false) => {
                        return fail(
                            &done,
                            NetError::PortInUse(format!(
                                "driver failed programming external connectivity on endpoint: Bind for {shown}:{port} failed: port is already allocated"
                            )),
                        )
                    }
                    Err(e) => return fail(&done, NetError::Setup(e.to_string())),
                }
            };
            done.push(PortBinding {
                host_ip: w.host_ip.clone(),
                host_port: port,
                container_port: w.container_port,
                protocol: proto,
                host_port_end: 0,
            });
        }
        Ok(done)
    }

    /// The first port of `w.host_port..=w.host_port_end` that is free on the host and not
    /// claimed by another container, claimed for `id`.
    fn claim_from_range(&self, id: &str, proto: &str, ip: Ipv4Addr, w: &PortBinding) -> Result<u16, NetError> {
        for candidate in w.host_port..=w.host_port_end {
            if probe_bind(proto, ip, candidate).is_err() {
                continue;
            }
            match write_new(&self.port_claim(proto, candidate), &owner(&self.root, id)) {
                Ok(true) => return Ok(candidate),
                Ok(false) => continue,
                Err(e) => return Err(NetError::Setup(e.to_string())),
            }
        }
        let shown = if w.host_ip.is_empty() { "0.0.0.0" } else { &w.host_ip };
        Err(NetError::PortInUse(format!(
            "driver failed programming external connectivity on endpoint: Bind for {shown}:{}-{} failed: all ports are allocated",
            w.host_port, w.host_port_end
        )))
    }

    fn ensure_base(&self, bridges: &[&str]) -> Result<(), NetError> {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
        nft::ensure_base(&self.cfg.nft_table, bridges).map_err(NetError::Setup)
    }

    /// Sets up the network of a container about to start, writes its /etc/hosts and
    /// /etc/resolv.conf into `dir`. On error nothing is left behind.
    pub async fn attach(
        &self,
        id: &str,
        name: &str,
        hostname: &str,
        net: &ContainerNet,
        dir: &Path,
    ) -> Result<Attached, NetError> {
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let mode = net.network_name();
        let write =
            |p: &Path, s: &str| rewrite_in_place(p, s).map_err(|e| NetError::Setup(format!("{}: {e}", p.display())));
        match mode.as_str() {
            "host" => {
                let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts_file(&[]));
                write(&dir.join("hosts"), &hosts)?;
                write(&dir.join("resolv.conf"), &resolv_conf(&host_resolv, true))?;
                return Ok(Attached { spec: SpecNet::Host, endpoint: None });
            }
            "none" => {
                write(&dir.join("hosts"), &hosts_file(&[]))?;
                write(&dir.join("resolv.conf"), &resolv_conf(&host_resolv, false))?;
                return Ok(Attached { spec: SpecNet::Empty, endpoint: None });
            }
            _ => {}
        }
        let def = self.get(&mode)?;
        // A leftover of an earlier run (e.g. runtime-svc died during a start): release first.
        self.detach(id).await;
        let r = self.attach_bridge(id, name, hostname, net, dir, &def, &host_resolv).await;
        if r.is_err() {
            self.detach(id).await;
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    async fn attach_bridge(
        &self,
        id: &str,
        name: &str,
        hostname: &str,
        net: &ContainerNet,
        dir: &Path,
        def: &NetworkDef,
        host_resolv: &str,
    ) -> Result<Attached, NetError> {
        let (_, len) = parse_cidr(&def.subnet)?;
        let gw: Ipv4Addr = def.gateway.parse().map_err(|_| NetError::Invalid("bad gateway".into()))?;
        let bridge_idx = netlink::ensure_bridge(def.bridge.clone(), gw, len).await.map_err(NetError::Setup)?;
        if self.based.lock().unwrap().get(&def.bridge) != Some(&bridge_idx) {
            let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{}/route_localnet", def.bridge), "1");
            let table = self.cfg.nft_table.clone();
            let br = def.bridge.clone();
            tokio::task::spawn_blocking(move || {
                let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
                nft::ensure_base(&table, &[&br])
            })
            .await
            .map_err(|e| NetError::Setup(e.to_string()))?
            .map_err(NetError::Setup)?;
            self.based.lock().unwrap().insert(def.bridge.clone(), bridge_idx);
        }
        let (ip, prefix) = self.allocate_ip(def, id)?;
        let mut wanted = net.request.ports.clone();
        if net.request.publish_all {
            for e in &net.exposed {
                let (p, proto) = e.split_once('/').unwrap_or((e, "tcp"));
                let Ok(p) = p.parse::<u16>() else { continue };
                if !wanted.iter().any(|w| w.container_port == p && w.protocol == proto) {
                    wanted.push(PortBinding {
                        host_ip: String::new(),
                        host_port: 0,
                        container_port: p,
                        protocol: proto.into(),
                        host_port_end: 0,
                    });
                }
            }
        }
        let ports = self.claim_ports(id, &wanted)?;
        let netns = self.netns_path(id);
        let mut ep = Endpoint {
            network: def.name.clone(),
            bridge: def.bridge.clone(),
            ip: ip.to_string(),
            prefix,
            gateway: def.gateway.clone(),
            mac: String::new(),
            ports: ports.clone(),
            netns: netns.clone(),
        };
        // The lease first, so that a failure from here on is released by detach.
        let lease = Lease {
            root: self.root.clone(),
            id: id.to_string(),
            name: name.to_string(),
            hostname: hostname.to_string(),
            hosts_file: dir.join("hosts"),
            endpoint: ep.clone(),
        };
        self.save_lease(&lease)?;
        netlink::create_netns(netns.clone()).await.map_err(NetError::Setup)?;
        let mac = netlink::plug_veth(
            def.bridge.clone(),
            veth_name(id),
            netns.clone(),
            netlink::Iface { ip, prefix, gateway: gw, mac: mac_for(ip) },
        )
        .await
        .map_err(NetError::Setup)?;
        ep.mac = mac;
        // No published ports, no rules: and none of an earlier start are left (`attach`
        // detached first), so nft is not run at all.
        let rules = dnat_rules(&ep);
        if !rules.is_empty() {
            let table = self.cfg.nft_table.clone();
            let cid = id.to_string();
            tokio::task::spawn_blocking(move || nft::set_rules(&table, &cid, &rules))
                .await
                .map_err(|e| NetError::Setup(e.to_string()))?
                .map_err(NetError::Setup)?;
        }
        let lease = Lease { endpoint: ep.clone(), ..lease };
        self.save_lease(&lease)?;
        rewrite_in_place(&dir.join("resolv.conf"), &resolv_conf(host_resolv, false))
            .map_err(|e| NetError::Setup(format!("resolv.conf: {e}")))?;
        self.refresh_hosts(&def.bridge, def.user_defined());
        Ok(Attached { spec: SpecNet::Path(netns), endpoint: Some(ep) })
    }

    fn save_lease(&self, l: &Lease) -> Result<(), NetError> {
        let p = self.lease_path(&l.id);
        atomic_write(&p, &serde_json::to_vec_pretty(l).unwrap_or_default())
            .map_err(|e| NetError::Setup(format!("saving {}: {e}", p.display())))
    }

    /// Rewrites /etc/hosts of every running container on `bridge` of this root: itself, plus
    /// (user networks) every peer by name.
    fn refresh_hosts(&self, bridge: &str, with_peers: bool) {
        let eps: Vec<Lease> = self.endpoints(bridge).into_iter().filter(|l| l.root == self.root).collect();
        for l in &eps {
            let mut entries = vec![];
            let mut own = vec![l.hostname.clone()];
            if l.name != l.hostname {
                own.push(l.name.clone());
            }
            entries.push((l.endpoint.ip.clone(), own));
            if with_peers {
                for p in eps.iter().filter(|p| p.id != l.id) {
                    entries.push((p.endpoint.ip.clone(), vec![p.name.clone(), p.id[..12].to_string()]));
                }
            }
            if let Err(e) = rewrite_in_place(&l.hosts_file, &hosts_file(&entries)) {
                tracing::debug!(id = %l.id, error = %e, "could not rewrite hosts");
            }
        }
    }

    /// Releases everything of a container's network (idempotent; no error).
    pub async fn detach(&self, id: &str) {
        let lease: Option<Lease> =
            std::fs::read(self.lease_path(id)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        // Rules are only ever set after the lease that lists their ports is saved (and stale
        // ones are swept by cleanup_stale), so without a lease, or with one without ports, there
        // is nothing to delete: skip the nft exec.
        if lease.as_ref().is_some_and(|l| !l.endpoint.ports.is_empty()) {
            let table = self.cfg.nft_table.clone();
            let cid = id.to_string();
            let _ = tokio::task::spawn_blocking(move || nft::delete_rules(&table, &cid)).await;
        }
        let veth = veth_name(id);
        if netlink::link_exists(veth.clone()).await.unwrap_or(false) {
            let _ = netlink::delete_link(veth).await;
        }
        let ns = self.netns_path(id);
        if ns.exists() {
            netlink::remove_netns(&ns);
        }
        // Address and port claims of this container (found by owner, lease or not).
        let me = owner(&self.root, id);
        for d in [self.global("ports")]
            .into_iter()
            .chain(std::fs::read_dir(self.global("ipam")).into_iter().flatten().flatten().map(|e| e.path()))
        {
            for f in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if std::fs::read_to_string(f.path()).is_ok_and(|c| c == me) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        let _ = std::fs::remove_file(self.lease_path(id));
        if let Some(l) = lease {
            let user = self.list().iter().any(|d| d.bridge == l.endpoint.bridge && d.user_defined());
            self.refresh_hosts(&l.endpoint.bridge, user);
        }
    }

    /// After a runtime-svc restart: re-applies the rules of a running container (idempotent).
    pub async fn restore(&self, id: &str) {
        let Some(lease) =
            std::fs::read(self.lease_path(id)).ok().and_then(|b| serde_json::from_slice::<Lease>(&b).ok())
        else {
            return;
        };
        let table = self.cfg.nft_table.clone();
        let cid = id.to_string();
        let br = lease.endpoint.bridge.clone();
        let rules = dnat_rules(&lease.endpoint);
        let r = tokio::task::spawn_blocking(move || {
            nft::ensure_base(&table, &[&br])?;
            nft::set_rules(&table, &cid, &rules)
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!(id, error = %e, "could not restore the container's port rules");
        }
    }

    /// On runtime-svc start: releases what this root (or a root that no longer exists) holds for
    /// containers that are not running.
    pub async fn cleanup_stale(&self, running: &HashSet<String>) {
        let mut stale: HashSet<String> = HashSet::new();
        let is_stale = |root: &Path, id: &str| (root == self.root && !running.contains(id)) || !root.exists();
        for l in self.leases() {
            if is_stale(&l.root, &l.id) {
                stale.insert(l.id.clone());
            }
        }
        let mut claim_files = vec![];
        for d in [self.global("ports")]
            .into_iter()
            .chain(std::fs::read_dir(self.global("ipam")).into_iter().flatten().flatten().map(|e| e.path()))
        {
            for f in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if let Some((root, id)) = read_owner(&f.path()) {
                    if is_stale(&root, &id) {
                        claim_files.push(f.path());
                        stale.insert(id);
                    }
                }
            }
        }
        // Rules whose container has no lease, or a stale one.
        let table = self.cfg.nft_table.clone();
        let rules = tokio::task::spawn_blocking(move || nft::rules_of(&table, None)).await.ok().and_then(|r| r.ok());
        for (id, _) in rules.unwrap_or_default() {
            if !self.lease_path(&id).exists() && !running.contains(&id) {
                stale.insert(id);
            }
        }
        for de in std::fs::read_dir(self.netns_dir()).into_iter().flatten().flatten() {
            let id = de.file_name().to_string_lossy().into_owned();
            if !running.contains(&id) {
                stale.insert(id);
            }
        }
        for id in &stale {
            if self.lease_path(id).exists() {
                if let Some(l) =
                    std::fs::read(self.lease_path(id)).ok().and_then(|b| serde_json::from_slice::<Lease>(&b).ok())
                {
                    if l.root != self.root && l.root.exists() {
                        continue;
                    }
                }
            }
            tracing::info!(id = %id, "releasing the network of a container that is gone");
            // detach skips nft without a lease; a stale rule may have none.
            let (table, cid) = (self.cfg.nft_table.clone(), id.clone());
            let _ = tokio::task::spawn_blocking(move || nft::delete_rules(&table, &cid)).await;
            self.detach(id).await;
        }
        for f in claim_files {
            let _ = std::fs::remove_file(f);
        }
        // Subnets of networks whose runtime root is gone.
        for de in std::fs::read_dir(self.global("subnets")).into_iter().flatten().flatten() {
            if let Some((root, _)) = read_owner(&de.path()) {
                if !root.exists() {
                    let _ = std::fs::remove_file(de.path());
                }
            }
        }
        // The base rules, and the bridges of this root's networks.
        let bridges: Vec<String> = self.list().into_iter().filter(|d| d.driver == "bridge").map(|d| d.bridge).collect();
        let table = self.cfg.nft_table.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let b: Vec<&str> = bridges.iter().map(String::as_str).collect();
            nft::ensure_base(&table, &b)
        })
        .await;
    }

    /// The user networks' bridges of this root (for cleanup when the last one is used).
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// The lease of a running container, if any.
    pub fn lease(&self, id: &str) -> Option<Lease> {
        std::fs::read(self.lease_path(id)).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Base rules on demand (used by tests).
    pub fn ensure_base_rules(&self) -> Result<(), NetError> {
        self.ensure_base(&[&self.cfg.bridge])
    }
}

/// Host-side veth name of a container (15 characters at most).
pub fn veth_name(id: &str) -> String {
    format!("veth{}", &id[..11.min(id.len())])
}

fn dnat_rules(ep: &Endpoint) -> Vec<nft::Dnat> {
    ep.ports
        .iter()
        .map(|p| nft::Dnat {
            proto: p.protocol.clone(),
            host_ip: p.host_ip.clone(),
            host_port: p.host_port,
            ip: ep.ip.clone(),
            port: p.container_port,
        })
        .collect()
}

/// Binds the port to see that it is free (0: lets the kernel pick one); returns the port.
fn probe_bind(proto: &str, ip: Ipv4Addr, port: u16) -> std::io::Result<u16> {
    let addr = std::net::SocketAddr::from((ip, port));
    if proto == "udp" {
        Ok(std::net::UdpSocket::bind(addr)?.local_addr()?.port())
    } else {
        Ok(std::net::TcpListener::bind(addr)?.local_addr()?.port())
    }
}

/// A stable ID for the default networks.
fn id_of(name: &str, extra: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("berth-network:{name}:{extra}").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_drops_loopback_and_falls_back() {
        let host = "# x\nnameserver 127.0.0.53\noptions edns0\nsearch example.org\n";
        let r = resolv_conf(host, false);
        assert!(!r.contains("127.0.0.53"));
        assert!(r.contains("nameserver 8.8.8.8\nnameserver 8.8.4.4\n"));
        assert!(r.contains("search example.org"));
        let r = resolv_conf("nameserver 192.0.2.53\n", false);
        assert_eq!(r, "nameserver 192.0.2.53\n");
    }

    #[test]
    fn cidr_and_overlap() {
        assert_eq!(parse_cidr("172.18.3.4/16").unwrap(), (Ipv4Addr::new(172, 18, 0, 0), 16));
        assert!(parse_cidr("172.18.0.0").is_err());
        assert!(overlaps((Ipv4Addr::new(172, 18, 0, 0), 16), (Ipv4Addr::new(172, 18, 5, 0), 24)));
        assert!(!overlaps((Ipv4Addr::new(172, 18, 0, 0), 16), (Ipv4Addr::new(172, 19, 0, 0), 16)));
        assert_eq!(mac_for(Ipv4Addr::new(172, 17, 0, 2)), [2, 0x42, 172, 17, 0, 2]);
    }

    #[tokio::test]
    async fn user_networks_get_distinct_subnets() {
        let d = tempfile::tempdir().unwrap();
        let cfg = NetConfig { state_dir: d.path().join("state"), ..Default::default() };
        let n = Networks::open(&d.path().join("root"), cfg).unwrap();
        let a = n.create("a", "", "", "").await.unwrap();
        let b = n.create("b", "", "", "").await.unwrap();
        assert_ne!(a.subnet, b.subnet);
        assert!(n.create("a", "", "", "").await.is_err());
        assert!(n.create("c", &a.subnet, "", "").await.is_err(), "overlapping subnet accepted");
        let c = n.create("c", "10.99.0.0/24", "10.99.0.254", "").await.unwrap();
        assert_eq!(c.gateway, "10.99.0.254");
        assert_eq!(n.get(&c.id[..10]).unwrap().name, "c");
        assert_eq!(n.list().len(), 6);
        let (ip1, _) = n.allocate_ip(&c, "x").unwrap();
        let (ip2, _) = n.allocate_ip(&c, "y").unwrap();
        assert_eq!((ip1.to_string().as_str(), ip2.to_string().as_str()), ("10.99.0.1", "10.99.0.2"));
    }

    #[test]
    fn hosts_lists_entries() {
        let h = hosts_file(&[("172.18.0.2".into(), vec!["abc".into(), "web".into()])]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("172.18.0.2\tabc web\n"));
    }
}
