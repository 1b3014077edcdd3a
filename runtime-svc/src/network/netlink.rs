//! Netlink work (rtnetlink), always on a dedicated OS thread with its own current-thread tokio
//! runtime: entering a network namespace (`setns`) changes only the calling thread, so it must
//! never happen on a worker of runtime-svc's multi-threaded runtime.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

type NlResult<T> = Result<T, String>;

/// Runs `f` with a netlink handle on a new OS thread, inside the network namespace at `netns`
/// (the host's when `None`).
pub async fn on_thread<T, F, Fut>(netns: Option<PathBuf>, what: &'static str, f: F) -> NlResult<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: Future<Output = NlResult<T>> + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("netlink-{what}"))
        .spawn(move || {
            let r = (|| {
                if let Some(p) = &netns {
                    enter_netns(p)?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("netlink runtime: {e}"))?;
                rt.block_on(async move {
                    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| format!("netlink socket: {e}"))?;
                    tokio::spawn(conn);
                    f(handle).await
                })
            })();
            let _ = tx.send(r);
        })
        .map_err(|e| format!("spawning a netlink thread: {e}"))?;
    rx.await.map_err(|_| format!("netlink thread for {what} died"))?.map_err(|e| format!("{what}: {e}"))
}

fn enter_netns(p: &Path) -> NlResult<()> {
    let f = std::fs::File::open(p).map_err(|e| format!("opening {}: {e}", p.display()))?;
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("entering {}: {}", p.display(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes a new network namespace bind-mounted at `path` (as `ip netns add` does), on a thread
/// of its own that ends right after.
pub async fn create_netns(path: PathBuf) -> NlResult<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-create".into())
        .spawn(move || {
            let r = (|| {
                if let Some(d) = path.parent() {
                    std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
                }
                std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
                }
                nix::mount::mount(
                    Some("/proc/thread-self/ns/net"),
                    &path,
                    None::<&str>,
                    nix::mount::MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| format!("bind-mounting the netns at {}: {e}", path.display()))
            })();
            let _ = tx.send(r);
        })
        .map_err(|e| format!("spawning a netns thread: {e}"))?;
    rx.await.map_err(|_| "netns thread died".to_string())?
}

/// Unmounts and removes a netns bind mount (no error when it is not there).
pub fn remove_netns(path: &Path) {
    let _ = nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

fn err(e: rtnetlink::Error) -> String {
    e.to_string()
}

fn exists_err(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code() == -libc::EEXIST)
}

/// Index of the link called `name`, if any.
pub async fn link_index(h: &Handle, name: &str) -> NlResult<Option<u32>> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => Ok(None),
        Err(e) => Err(err(e)),
    }
}

fn mac_of(m: &LinkMessage) -> String {
    m.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(b) => Some(b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(":")),
            _ => None,
        })
        .unwrap_or_default()
}

/// Creates the bridge `name` with address `gw/prefix` when missing, and brings it up.
pub async fn ensure_bridge(name: String, gw: Ipv4Addr, prefix: u8) -> NlResult<u32> {
    on_thread(None, "creating the bridge", move |h| async move {
        let idx = match link_index(&h, &name).await? {
            Some(i) => i,
            None => {
                if let Err(e) = h.link().add(LinkBridge::new(&name).build()).execute().await {
                    if !exists_err(&e) {
                        return Err(err(e));
                    }
                }
                link_index(&h, &name).await?.ok_or_else(|| format!("bridge {name} vanished"))?
            }
        };
        if let Err(e) = h.address().add(idx, IpAddr::V4(gw), prefix).execute().await {
            if !exists_err(&e) {
                return Err(err(e));
            }
        }
        h.link().change(LinkUnspec::new_with_index(idx).up().build()).execute().await.map_err(err)?;
        Ok(idx)
    })
    .await
}

/// Deletes a link by name (nothing when it does not exist).
pub async fn delete_link(name: String) -> NlResult<()> {
    on_thread(None, "deleting a link", move |h| async move {
        if let Some(idx) = link_index(&h, &name).await? {
            match h.link().del(idx).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code() == -libc::ENODEV => {}
                Err(e) => return Err(err(e)),
            }
        }
        Ok(())
    })
    .await
}

/// True when a link of that name exists in the host's namespace.
pub async fn link_exists(name: String) -> NlResult<bool> {
    on_thread(None, "looking up a link", move |h| async move { Ok(link_index(&h, &name).await?.is_some()) }).await
}

/// What the container side of a veth pair gets.
pub struct Iface {
    /// The container's address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Ipv4Addr,
    /// MAC address (6 bytes).
    pub mac: [u8; 6],
}

/// Creates the veth pair `host_if`/`eth0`: the host end in `bridge` and up, the other end moved
/// into the namespace at `netns`, renamed eth0, addressed, up, with the default route via the
/// gateway; `lo` is brought up too. Returns eth0's MAC address.
pub async fn plug_veth(bridge: String, host_if: String, netns: PathBuf, iface: Iface) -> NlResult<String> {
    // IFNAMSIZ: at most 15 characters ("veth" + 11 → "vp" + 11).
    let peer = format!("vp{}", host_if.trim_start_matches("veth"));
    let peer_tmp = peer.clone();
    let ns = netns.clone();
    on_thread(None, "creating the veth pair", move |h| async move {
        let br = link_index(&h, &bridge).await?.ok_or_else(|| format!("bridge {bridge} does not exist"))?;
        let nsf = std::fs::File::open(&ns).map_err(|e| format!("opening {}: {e}", ns.display()))?;
        // The peer is created inside the namespace (IFLA_NET_NS_FD on the peer, as `ip link add
        // … peer … netns …` does) rather than moved there afterwards: a move waits for an RCU
        // grace period (synchronize_net), ~10-20 ms per container start here.
        let mut veth = LinkVeth::new(&host_if, &peer).build();
        peer_in_netns(&mut veth, nsf.as_raw_fd());
        h.link().add(veth).execute().await.map_err(err)?;
        let hidx = link_index(&h, &host_if).await?.ok_or("veth vanished")?;
        h.link().change(LinkUnspec::new_with_index(hidx).controller(br).up().build()).execute().await.map_err(err)?;
        Ok(())
    })
    .await?;
    on_thread(Some(netns), "configuring the container's interface", move |h| async move {
        let lo = link_index(&h, "lo").await?.ok_or("no lo")?;
        h.link().change(LinkUnspec::new_with_index(lo).up().build()).execute().await.map_err(err)?;
        let idx = link_index(&h, &peer_tmp).await?.ok_or("veth peer not in the namespace")?;
        h.link()
            .change(LinkUnspec::new_with_index(idx).name("eth0".to_string()).address(iface.mac.to_vec()).build())
            .execute()
            .await
            .map_err(err)?;
        h.address().add(idx, IpAddr::V4(iface.ip), iface.prefix).execute().await.map_err(err)?;
        h.link().change(LinkUnspec::new_with_index(idx).up().build()).execute().await.map_err(err)?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(iface.gateway).output_interface(idx).build();
        h.route().add(route).execute().await.map_err(err)?;
        let mut links = h.link().get().match_index(idx).execute();
        let m = links.try_next().await.map_err(err)?.ok_or("eth0 vanished")?;
        Ok(mac_of(&m))
    })
    .await
}

/// Puts the peer of a veth creation message into the namespace open at `fd`.
fn peer_in_netns(veth: &mut LinkMessage, fd: std::os::fd::RawFd) {
    for a in veth.attributes.iter_mut() {
        if let LinkAttribute::LinkInfo(infos) = a {
            for i in infos.iter_mut() {
                if let LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = i {
                    p.attributes.push(LinkAttribute::NetNsFd(fd));
                }
            }
        }
    }
}

/// Names of the links in the namespace at `netns` (the host's when `None`).
pub async fn link_names(netns: Option<PathBuf>) -> NlResult<Vec<String>> {
    on_thread(netns, "listing links", move |h| async move {
        let mut out = vec![];
        let mut links = h.link().get().execute();
        while let Some(m) = links.try_next().await.map_err(err)? {
            for a in &m.attributes {
                if let LinkAttribute::IfName(n) = a {
                    out.push(n.clone());
                }
            }
        }
        Ok(out)
    })
    .await
}
