//! Restart policies: on-failure:N gives up after N restarts, `always` brings a container back
//! (also across a runtime-svc restart), `stop` stops the restarting, `unless-stopped` honours a
//! user stop, ps shows "Restarting (…)" during the backoff (root only; each scenario once per OCI runtime: builtin:: and runc::).

mod run_env;

crate::per_runtime!(restart_policies);

use run_env::{can_run, Env, Runtime};
use std::time::Duration;

async fn state(env: &Env, name: &str) -> String {
    env.ok(&["inspect", "-f", "{{.State.Status}} {{.RestartCount}}", name]).await.trim().to_string()
}

async fn pid(env: &Env, name: &str) -> i32 {
    env.ok(&["inspect", "-f", "{{.State.Pid}}", name]).await.trim().parse().unwrap()
}

async fn restart_policies(rt: Runtime) {
    if !can_run() {
        return;
    }
    let mut env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();
    let runs = tempfile::tempdir().unwrap();
    let rp = runs.path().to_str().unwrap().to_string();

    // on-failure:2 — three runs (the first and two restarts), then it stays exited.
    env.ok(&[
        "run",
        "--network",
        "none",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "-v",
        &format!("{rp}:/runs"),
        &bb,
        "sh",
        "-c",
        "echo run >> /runs/flaky; exit 3",
    ])
    .await;
    env.eventually("flaky to give up", Duration::from_secs(20), || async { state(&env, "flaky").await == "exited 2" })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state(&env, "flaky").await, "exited 2");
    assert_eq!(std::fs::read_to_string(runs.path().join("flaky")).unwrap().lines().count(), 3);
    assert_eq!(
        env.ok(&["inspect", "-f", "{{.State.ExitCode}} {{json .HostConfig.RestartPolicy}}", "flaky"]).await,
        "3 {\"MaximumRetryCount\":2,\"Name\":\"on-failure\"}\n"
    );
    // on-failure does not restart a clean exit.
    env.ok(&["run", "--network", "none", "-d", "--name", "clean", "--restart", "on-failure", &bb, "true"]).await;
    env.ok(&["wait", "clean"]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(state(&env, "clean").await, "exited 0");

    // always: a container that keeps exiting is brought back, with docker's growing delay;
    // ps shows it as Restarting while it waits; `stop` ends the cycle.
    env.ok(&["run", "--network", "none", "-d", "--name", "loop", "--restart", "always", &bb, "sh", "-c", "exit 1"])
        .await;
    env.eventually("ps to show Restarting (1)", Duration::from_secs(20), || async {
        env.ok(&["ps"]).await.lines().any(|l| l.ends_with("loop") && l.contains("Restarting (1)"))
    })
    .await;
    env.eventually("loop to be restarted three times", Duration::from_secs(20), || async {
        env.ok(&["inspect", "-f", "{{.RestartCount}}", "loop"]).await.trim().parse::<i32>().unwrap() >= 3
    })
    .await;
    env.ok(&["stop", "loop"]).await;
    let after_stop: i32 = env.ok(&["inspect", "-f", "{{.RestartCount}}", "loop"]).await.trim().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state(&env, "loop").await, format!("exited {after_stop}"));
    assert!(!env.ok(&["ps"]).await.contains("loop"));

    // Across runtime-svc restarts: an `always` container killed while runtime-svc was down is
    // restarted when it comes back; `no` stays exited.
    env.ok(&["run", "--network", "none", "-d", "--name", "forever", "--restart", "always", &bb, "sleep", "1000"]).await;
    env.ok(&["run", "--network", "none", "-d", "--name", "once", &bb, "sleep", "1000"]).await;
    env.ok(&[
        "run",
        "--network",
        "none",
        "-d",
        "--name",
        "polite",
        "--restart",
        "unless-stopped",
        &bb,
        "sleep",
        "1000",
    ])
    .await;
    let (p_forever, p_once) = (pid(&env, "forever").await, pid(&env, "once").await);
    env.runtime.kill9();
    unsafe {
        libc::kill(p_forever, libc::SIGKILL);
        libc::kill(p_once, libc::SIGKILL);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.runtime.restart().await;
    env.eventually("forever to run again", Duration::from_secs(15), || async {
        state(&env, "forever").await == "running 1"
    })
    .await;
    assert_ne!(pid(&env, "forever").await, p_forever);
    assert!(state(&env, "once").await.starts_with("exited"), "{}", state(&env, "once").await);
    assert_eq!(state(&env, "polite").await, "running 0");

    // A user stop is remembered: after another runtime-svc restart `always` comes back (as
    // docker's daemon does), `unless-stopped` does not.
    env.ok(&["stop", "-t", "1", "forever", "polite"]).await;
    env.runtime.terminate();
    env.runtime.restart().await;
    env.eventually("always to start with runtime-svc", Duration::from_secs(15), || async {
        state(&env, "forever").await.starts_with("running")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(state(&env, "polite").await.starts_with("exited"), "{}", state(&env, "polite").await);
    // `start` clears the user stop.
    env.ok(&["start", "polite"]).await;
    assert!(state(&env, "polite").await.starts_with("running"));

    // --restart with --rm is refused, as docker.
    let o = env.berth(&["run", "--network", "none", "--rm", "--restart", "always", &bb, "true"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--restart and --rm"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    env.ok(&["rm", "-f", "flaky", "clean", "loop", "forever", "once", "polite"]).await;
    assert!(env.ps_all().await.is_empty());
}
