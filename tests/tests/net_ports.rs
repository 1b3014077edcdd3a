//! Published ports: `-p` serves on the host's loopback, `berth port`, `ps` PORTS, `-P`, port
//! conflicts, the container's own address, and nothing left after `rm` (root only).

mod net_env;

use net_env::{assert_network_released, can_run, free_port, http_get_eventually, httpd, nft_table, Env};
use std::net::SocketAddr;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_serves_on_loopback_and_rm_releases_everything() {
    if !can_run() {
        return;
    }
    let env = net_env::start().await;
    let port = free_port();
    let publish = format!("{port}:80");
    let id = httpd(&env, "web", 80, "hello-from-berth", &["-p", &publish]).await;

    // A client on the host reaches the container through 127.0.0.1:<port>.
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let body = http_get_eventually(addr).await;
    assert_eq!(body.as_deref(), Some("hello-from-berth\n"), "runtime-svc log:\n{}", env.runtime.log());

    // berth port / ps / inspect-facing fields.
    assert_eq!(env.ok(&["port", "web"]).await, format!("80/tcp -> 0.0.0.0:{port}\n"));
    assert_eq!(env.ok(&["port", "web", "80/tcp"]).await, format!("0.0.0.0:{port}\n"));
    let ps = env.ok(&["ps"]).await;
    let line = ps.lines().find(|l| l.ends_with("web")).unwrap_or_else(|| panic!("{ps}"));
    assert!(line.contains(&format!("0.0.0.0:{port}->80/tcp")), "{line}");
    let e = env.ps_entry("web").await.unwrap();
    assert_eq!(e["Networks"], "bridge");

    // The container has an address on the default bridge, reachable from the host directly,
    // and its /etc/hosts names it.
    let hosts = env.ok(&["run", "--rm", &env.busybox, "cat", "/etc/hosts"]).await;
    assert!(hosts.contains("localhost"), "{hosts}");
    let ip = container_ip(&env, "web").await;
    assert!(ip.starts_with("172.17."), "{ip}");
    let direct = http_get_eventually(format!("{ip}:80").parse().unwrap()).await;
    assert_eq!(direct.as_deref(), Some("hello-from-berth\n"));
    let rc = env.ok(&["run", "--rm", &env.busybox, "cat", "/etc/resolv.conf"]).await;
    assert!(rc.contains("nameserver") && !rc.contains("nameserver 127."), "{rc}");

    // The same host port again: a clear error, and the container does not run.
    let o = env.berth(&["run", "-d", "--name", "clash", "-p", &publish, &env.busybox, "sleep", "100"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("port is already allocated"), "{}", stderr(&o));
    let clash = env.ps_entry("clash").await.unwrap();
    assert_ne!(clash["State"], "running", "{clash}");
    // A port a host process listens on: same error.
    let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let taken = l.local_addr().unwrap().port();
    let o =
        env.berth(&["run", "-d", "--name", "clash2", "-p", &format!("{taken}:80"), &env.busybox, "sleep", "100"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("port is already allocated"), "{}", stderr(&o));
    drop(l);

    // rm -f: no veth, netns, rule, address or port lease left; the port is free again.
    assert!(nft_table().contains(&id), "{}", nft_table());
    env.ok(&["rm", "-f", "web", "clash", "clash2"]).await;
    assert_network_released(&env, &id);
    assert!(std::net::TcpListener::bind(("0.0.0.0", port)).is_ok());
}

/// The container's address as `berth port`'s sibling data: read from its own eth0.
async fn container_ip(env: &Env, name: &str) -> String {
    let ps = env.ok(&["ps", "--no-trunc", "-q"]).await;
    assert!(!ps.is_empty());
    let root = env.runtime.root().to_path_buf();
    let e = env.ps_entry(name).await.unwrap();
    let id = e["ID"].as_str().unwrap().to_string();
    let rec = std::fs::read_to_string(root.join("containers").join(&id).join("container.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&rec).unwrap();
    v["net"]["endpoint"]["ip"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn publish_all_and_ranges() {
    if !can_run() {
        return;
    }
    let env = net_env::start().await;
    // The busybox fixture EXPOSEs 8080/tcp: -P publishes it on a random host port.
    let id = httpd(&env, "exposed", 8080, "exposed-page", &["-P"]).await;
    let out = env.ok(&["port", "exposed", "8080"]).await;
    let host_port: u16 = out.trim().rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("{out}"));
    let body = http_get_eventually(format!("127.0.0.1:{host_port}").parse().unwrap()).await;
    assert_eq!(body.as_deref(), Some("exposed-page\n"));
    // --expose adds to the image's EXPOSE: listed by ps (a run grouped as docker does) and
    // inspect, published by -P; a bad one is refused.
    env.ok(&["create", "--name", "more", "--expose", "7000-7001", "--expose", "53/udp", &env.busybox]).await;
    let e = env.ps_entry("more").await.unwrap();
    assert_eq!(e["Ports"], "7000-7001/tcp, 53/udp, 8080/tcp", "{e}"); // docker's own order
    let pid7000 =
        env.ok(&["run", "-d", "--name", "more-p", "-P", "--expose", "7000", &env.busybox, "sleep", "60"]).await;
    let out = env.ok(&["port", "more-p", "7000"]).await;
    assert!(out.trim().starts_with("0.0.0.0:"), "--expose + -P did not publish 7000: {out}");
    let o = env.berth(&["create", "--expose", "80/sctp", &env.busybox]).await;
    assert_ne!(o.status.code(), Some(0), "a bad --expose is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--expose"), "{}", String::from_utf8_lossy(&o.stderr));
    env.ok(&["rm", "-f", "more", "more-p"]).await;
    assert_network_released(&env, pid7000.trim());

    // A range on a given address, and a udp port: all listed by `berth port`.
    let a = free_port();
    let b = loop {
        let p = free_port();
        if p != a + 1 && p != a {
            break p;
        }
    };
    let range = format!("127.0.0.1:{}-{}:80-81", a, a);
    let o = env.berth(&["create", "--name", "badrange", "-p", &range, &env.busybox]).await;
    assert_ne!(o.status.code(), Some(0), "a host range shorter than the container range is refused");
    let udp = format!("{b}:53/udp");
    let lo = format!("127.0.0.1:{a}:80");
    let id2 = httpd(&env, "multi", 80, "multi-page", &["-p", &lo, "-p", &udp, "-p", "81"]).await;
    let ports = env.ok(&["port", "multi"]).await;
    assert!(ports.contains(&format!("80/tcp -> 127.0.0.1:{a}")), "{ports}");
    assert!(ports.contains(&format!("53/udp -> 0.0.0.0:{b}")), "{ports}");
    assert!(ports.contains("81/tcp -> 0.0.0.0:"), "{ports}");
    let body = http_get_eventually(format!("127.0.0.1:{a}").parse().unwrap()).await;
    assert_eq!(body.as_deref(), Some("multi-page\n"));

    // `-p LOW-HIGH:80`: the first free host port of the range; LOW is held by the test.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let low = held.local_addr().unwrap().port();
    let high = low.saturating_add(20);
    let spec = format!("{low}-{high}:80");
    let id3 = httpd(&env, "ranged", 80, "ranged-page", &["-p", &spec]).await;
    let out = env.ok(&["port", "ranged", "80"]).await;
    let got: u16 = out.trim().rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("{out}"));
    assert!(got > low && got <= high, "port {got} outside {low}-{high} or the held one");
    let body = http_get_eventually(format!("127.0.0.1:{got}").parse().unwrap()).await;
    assert_eq!(body.as_deref(), Some("ranged-page\n"));
    drop(held);

    env.ok(&["rm", "-f", "exposed", "multi", "ranged"]).await;
    assert_network_released(&env, &id);
    assert_network_released(&env, &id2);
    assert_network_released(&env, &id3);
}

#[tokio::test(flavor = "multi_thread")]
async fn published_container_survives_runtime_svc_restart() {
    if !can_run() {
        return;
    }
    let mut env = net_env::start().await;
    let port = free_port();
    let id = httpd(&env, "keeper", 80, "still-here", &["-p", &format!("{port}:80")]).await;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(http_get_eventually(addr).await.as_deref(), Some("still-here\n"));
    let rules_before = nft_table().matches(&id).count();
    assert_eq!(rules_before, 1, "{}", nft_table());

    env.runtime.kill9();
    assert_eq!(http_get_eventually(addr).await.as_deref(), Some("still-here\n"), "served while runtime-svc is down");
    env.runtime.restart().await;
    assert_eq!(http_get_eventually(addr).await.as_deref(), Some("still-here\n"));
    // Recovery re-applied the rules without duplicating them.
    assert_eq!(nft_table().matches(&id).count(), 1, "{}", nft_table());
    assert_eq!(env.ok(&["port", "keeper"]).await, format!("80/tcp -> 0.0.0.0:{port}\n"));
    env.ok(&["rm", "-f", "keeper"]).await;
    assert_network_released(&env, &id);

    // A rule and a port lease of a container that no longer exists (as a crash would leave them)
    // are cleaned when runtime-svc starts.
    let ghost = format!("{:064x}", std::process::id() as u128 * 7919 + 0xdead);
    let ghost_port = free_port();
    let rule =
        format!("add rule ip berth ports tcp dport {ghost_port} dnat to 172.17.255.254:80 comment \"berth {ghost}\"\n");
    let mut nft =
        std::process::Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(nft.stdin.as_mut().unwrap(), rule.as_bytes()).unwrap();
    assert!(nft.wait().unwrap().success());
    let claim = std::path::Path::new("/run/berth/net/ports").join(format!("tcp-{ghost_port}"));
    std::fs::write(&claim, format!("{}\n{ghost}\n", env.runtime.root().display())).unwrap();
    assert!(nft_table().contains(&ghost));
    env.runtime.kill9();
    env.runtime.restart().await;
    assert!(!nft_table().contains(&ghost), "stale rule survived a restart:\n{}", nft_table());
    assert!(!claim.exists(), "stale port lease survived a restart");
}
