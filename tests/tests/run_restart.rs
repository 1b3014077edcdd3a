//! Containers survive runtime-svc being killed -9 (root only), with each OCI runtime.

mod run_env;

use run_env::{can_run, processes_mentioning, Env, Runtime};

crate::per_runtime!(containers_survive_runtime_svc_kill9);
use std::time::Duration;

async fn containers_survive_runtime_svc_kill9(rt: Runtime) {
    if !can_run() {
        return;
    }
    let mut env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();
    let mut ids = vec![];
    for i in 0..10 {
        let name = format!("survivor{i}");
        ids.push(env.ok(&["run", "-d", "--name", &name, &bb, "sleep", "1000"]).await.trim().to_string());
    }
    // One that exits on its own while runtime-svc is down.
    let quitter = env.ok(&["run", "-d", "--name", "quitter", &bb, "sh", "-c", "sleep 2; exit 42"]).await;
    let quitter = quitter.trim().to_string();
    assert_eq!(env.ok(&["ps", "-q"]).await.lines().count(), 11);

    env.runtime.kill9();
    // Nothing of the containers died with it.
    for id in &ids {
        assert!(!processes_mentioning(id).is_empty(), "shim of {id} died with runtime-svc");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.runtime.restart().await;

    let all = env.ps_all().await;
    for i in 0..10 {
        let e = all.iter().find(|v| v["Names"] == format!("survivor{i}")).expect("survivor listed");
        assert_eq!(e["State"], "running", "{e}");
    }
    let q = all.iter().find(|v| v["Names"] == "quitter").expect("quitter listed");
    assert!(q["Status"].as_str().unwrap().starts_with("Exited (42)"), "{q}");

    // stop and rm still work on the recovered containers.
    env.ok(&["stop", "-t", "1", "survivor0", "survivor1"]).await;
    let e = env.ps_entry("survivor0").await.unwrap();
    assert!(e["Status"].as_str().unwrap().starts_with("Exited (137)"), "{e}");
    let mut args = vec!["rm", "-f"];
    let names: Vec<String> = (0..10).map(|i| format!("survivor{i}")).collect();
    args.extend(names.iter().map(String::as_str));
    args.push("quitter");
    env.ok(&args).await;
    assert!(env.ps_all().await.is_empty());
    for id in ids.iter().chain([&quitter]) {
        assert!(processes_mentioning(id).is_empty(), "processes of {id} are left");
    }
}
