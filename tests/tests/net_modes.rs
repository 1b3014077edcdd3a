//! `--network none|host|<user network>` and `berth network create|ls|inspect|rm|prune`
//! (root only).

mod net_env;

use net_env::{assert_network_released, can_run, host_links, httpd};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn none_and_host_modes() {
    if !can_run() {
        return;
    }
    let env = net_env::start().await;
    let bb = env.busybox.clone();
    // none: only lo.
    let o = env.ok(&["run", "--rm", "--network", "none", &bb, "ls", "/sys/class/net"]).await;
    assert_eq!(o.split_whitespace().collect::<Vec<_>>(), vec!["lo"]);
    // bridge (default): lo and eth0 with an address and a default route.
    let o = env.ok(&["run", "--rm", &bb, "ls", "/sys/class/net"]).await;
    assert_eq!(o.split_whitespace().collect::<Vec<_>>(), vec!["eth0", "lo"]);
    let o = env.ok(&["run", "--rm", &bb, "ip", "route"]).await;
    assert!(o.contains("default via 172.17.0.1 dev eth0"), "{o}");
    // host: the host's interfaces.
    let o = env.ok(&["run", "--rm", "--network", "host", &bb, "hostname"]).await;
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(o.trim(), host_name.trim(), "host mode takes the host's name, as docker's");
    let o = env.ok(&["run", "--rm", "--network", "host", &bb, "ls", "/sys/class/net"]).await;
    let mut seen: Vec<String> = o.split_whitespace().map(String::from).collect();
    seen.sort();
    let host = host_links();
    for l in ["lo", "eth0"] {
        if host.contains(&l.to_string()) {
            assert!(seen.contains(&l.to_string()), "host mode lacks {l}: {seen:?}");
        }
    }
    assert!(seen.len() >= 2, "{seen:?}");
    // An unknown network is refused at create.
    let o = env.berth(&["run", "--rm", "--network", "nosuchnet", &bb, "true"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("network nosuchnet not found"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn user_network_name_resolution_and_lifecycle() {
    if !can_run() {
        return;
    }
    let env = net_env::start().await;
    let bb = env.busybox.clone();
    let net = format!("testnet{}", std::process::id());
    let id = env.ok(&["network", "create", &net]).await.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ls = env.ok(&["network", "ls"]).await;
    for n in ["bridge", "host", "none", net.as_str()] {
        assert!(ls.lines().any(|l| l.split_whitespace().nth(1) == Some(n)), "{n} missing:\n{ls}");
    }
    let names = env.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]).await;
    assert!(names.lines().any(|l| l == format!("{net} bridge")), "{names}");
    assert!(names.lines().any(|l| l == "none null"), "{names}");
    let o = env.berth(&["network", "create", &net]).await;
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));

    // Two containers on the network reach each other by name.
    let web = httpd(&env, "webpeer", 80, "peer-page", &["--network", &net]).await;
    let o = env
        .ok(&[
            "run",
            "--rm",
            "--name",
            "client",
            "--network",
            &net,
            &bb,
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://webpeer/ && exit 0; sleep 0.5; done; exit 1",
        ])
        .await;
    assert_eq!(o, "peer-page\n");
    // A container started before the peer learns its name too (hosts rewritten in place).
    let waiter = env
        .ok(&[
            "run",
            "-d",
            "--name",
            "early",
            "--network",
            &net,
            &bb,
            "sh",
            "-c",
            "while ! grep -q late /etc/hosts; do sleep 0.2; done; echo found; sleep 100",
        ])
        .await
        .trim()
        .to_string();
    env.ok(&["run", "-d", "--name", "late", "--network", &net, &bb, "sleep", "100"]).await;
    let mut found = false;
    for _ in 0..50 {
        let logs = std::fs::read_to_string(env.runtime.root().join("containers").join(&waiter).join("log.json"))
            .unwrap_or_default();
        if logs.contains("found") {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(found, "early never saw late in /etc/hosts");

    // inspect lists the attached containers; rm is refused while they exist.
    let v: serde_json::Value = serde_json::from_str(&env.ok(&["network", "inspect", &net]).await).unwrap();
    let subnet = v[0]["IPAM"]["Config"][0]["Subnet"].as_str().unwrap().to_string();
    assert!(!subnet.starts_with("172.17."), "{subnet}");
    assert!(v[0]["Containers"].as_object().unwrap().contains_key(&web), "{v}");
    let o = env.berth(&["network", "rm", &net]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("active endpoints"), "{}", stderr(&o));
    let o = env.berth(&["network", "rm", "bridge"]).await;
    assert!(stderr(&o).contains("pre-defined"), "{}", stderr(&o));

    env.ok(&["rm", "-f", "webpeer", "early", "late"]).await;
    assert_network_released(&env, &web);
    assert_network_released(&env, &waiter);
    let bridge = v[0]["Options"]["com.docker.network.bridge.name"].as_str().unwrap().to_string();
    assert!(host_links().contains(&bridge));
    assert_eq!(env.ok(&["network", "rm", &net]).await.trim(), net);
    assert!(!host_links().contains(&bridge), "bridge {bridge} left after network rm");
    // prune removes unused user networks only.
    let other = format!("prunable{}", std::process::id());
    env.ok(&["network", "create", "--subnet", "10.231.0.0/24", &other]).await;
    let o = env.ok(&["network", "prune", "-f"]).await;
    assert!(o.contains(&other), "{o}");
    assert!(!env.ok(&["network", "ls"]).await.contains(&other));
}
