//! `berth run` as the Docker tutorials use it, against the real services (root only). The
//! lifecycle scenarios run once per OCI runtime (`builtin::…` and `runc::…`).

mod run_env;

use run_env::{can_run, mounts_mentioning, processes_mentioning, Env, Runtime};
use std::time::{Duration, Instant};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

crate::per_runtime!(
    run_echo_ps_stop_rm,
    run_isolation_env_cmd_names_limits,
    run_pulls_a_missing_image_first,
    containers_that_exit_at_once
);

async fn run_echo_ps_stop_rm(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();

    // Foreground: output streamed, stdout and stderr kept apart, exit code passed through.
    let o = env.berth(&["run", "--name", "hello", &bb, "sh", "-c", "echo hi; echo oops >&2; exit 3"]).await;
    assert_eq!(o.status.code(), Some(3), "stderr: {}\n{}", err(&o), env.runtime.log());
    assert_eq!(out(&o), "hi\n");
    assert!(err(&o).contains("oops"), "stderr: {}", err(&o));

    // `run busybox` with no command: sh reads EOF from stdin and exits at once.
    let t0 = Instant::now();
    env.ok(&["run", "--name", "plain", &bb]).await;
    assert!(t0.elapsed() < Duration::from_secs(10));
    let ps = env.ok(&["ps"]).await;
    assert!(!ps.contains("plain"), "ps shows an exited container:\n{ps}");
    let psa = env.ok(&["ps", "-a"]).await;
    let line = psa.lines().find(|l| l.ends_with("plain")).unwrap_or_else(|| panic!("ps -a lacks it:\n{psa}"));
    assert!(line.contains("Exited (0)"), "{line}");
    assert!(psa.lines().next().unwrap().starts_with("CONTAINER ID"), "{psa}");
    assert!(psa.lines().any(|l| l.ends_with("hello") && l.contains("Exited (3)")), "{psa}");

    // `run busybox date` prints the date.
    let o = env.berth(&["run", "--rm", &bb, "date", "+%Y"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let year: i32 = out(&o).trim().parse().expect("a year");
    assert!(year >= 2024);

    // A missing command is 127, as docker.
    let o = env.berth(&["run", "--rm", &bb, "no-such-command"]).await;
    assert_eq!(o.status.code(), Some(127), "stdout: {}\nstderr: {}", out(&o), err(&o));

    // Detached: prints the full ID; ps shows it Up; stop; rm; nothing left behind.
    let id = env.ok(&["run", "-d", "--name", "sleeper", &bb, "sleep", "1000"]).await.trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    let ps = env.ok(&["ps"]).await;
    let line = ps.lines().find(|l| l.ends_with("sleeper")).unwrap_or_else(|| panic!("{ps}"));
    assert!(line.starts_with(&id[..12]) && line.contains("Up "), "{line}");
    assert!(line.contains("\"sleep 1000\""), "{line}");
    // docker's `table` formats: a header row, columns aligned; `\t` in the format is a tab.
    let t = env.ok(&["ps", "--format", "table {{.Names}}\\t{{.Status}}"]).await;
    let mut lines = t.lines();
    assert_eq!(lines.next().map(|l| l.split_whitespace().collect::<Vec<_>>()), Some(vec!["NAMES", "STATUS"]), "{t}");
    assert!(t.lines().any(|l| l.starts_with("sleeper   ") && l.contains("Up ")), "{t}");
    let plain = env.ok(&["ps", "--format", "{{.Names}}\\t{{.State}}"]).await;
    assert!(plain.lines().any(|l| l == "sleeper\trunning"), "{plain:?}");
    // rm without -f is refused.
    let o = env.berth(&["rm", "sleeper"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(err(&o).contains("container is running"), "{}", err(&o));
    // sleep as PID 1 ignores SIGTERM: stop -t 1 kills it after the timeout.
    let t0 = Instant::now();
    env.ok(&["stop", "-t", "1", &id[..10]]).await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(8), "{took:?}");
    let e = env.ps_entry("sleeper").await.unwrap();
    assert!(e["Status"].as_str().unwrap().starts_with("Exited (137)"), "{e}");
    assert_eq!(env.ok(&["rm", "sleeper", "hello", "plain"]).await, "sleeper\nhello\nplain\n");
    assert!(env.ps_all().await.is_empty());
    assert!(processes_mentioning(&id).is_empty(), "processes of {id} are left");
    assert!(mounts_mentioning(&id).is_empty(), "mounts of {id} are left");
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory/berth/{id}")).exists());
    assert!(!env.runtime.root().join("containers").join(&id).exists());
}

/// Containers that end before the runtime has returned from starting them: every run reports
/// its exit code, never an engine error. (The shim used to exit before writing its reply to
/// START when the container was already gone: "shim closed the connection", 1 run in ~30 under
/// load.) The shims here hold their START reply back 300 ms (a test-only fault injection), so
/// every one of these containers has exited and its shim finished before the reply is written.
async fn containers_that_exit_at_once(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::start_on_with(rt, &[("BERTH_SHIM_TEST_START_REPLY_DELAY_MS", "300")]).await;
    let bb = env.busybox.clone();
    env.pull(&bb).await;
    for i in 0..6 {
        let code = i % 3;
        let script = format!("exit {code}");
        let o = env.berth(&["run", "--rm", "--network", "none", &bb, "sh", "-c", &script]).await;
        assert_eq!(o.status.code(), Some(code), "run {i}: stderr: {}\n{}", err(&o), env.runtime.log());
        // (The first run unpacks the image and says so on stderr.)
        assert!(i == 0 || err(&o).is_empty(), "run {i}: {}", err(&o));
    }
    // Detached too: the container is reported started, then exited with its code.
    let id = env.ok(&["run", "-d", "--network", "none", &bb, "sh", "-c", "exit 4"]).await.trim().to_string();
    assert_eq!(env.ok(&["wait", &id]).await.trim(), "4");
    env.ok(&["rm", &id]).await;
    let psa = env.ok(&["ps", "-aq"]).await;
    assert!(psa.trim().is_empty(), "--rm containers left behind:\n{psa}");
}

async fn run_isolation_env_cmd_names_limits(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();

    // Two containers from one image write different files; neither sees the other's, and a
    // third container sees the image unchanged.
    env.ok(&["run", "--name", "a", &bb, "sh", "-c", "echo a > /only-a && test ! -e /only-b"]).await;
    env.ok(&["run", "--name", "b", &bb, "sh", "-c", "echo b > /only-b && test ! -e /only-a"]).await;
    let o = env.berth(&["run", "--rm", &bb, "sh", "-c", "ls /only-a /only-b"]).await;
    assert_ne!(o.status.code(), Some(0), "a fresh container sees another's files: {}", out(&o));
    // The writes survive a restart of their own container.
    env.ok(&["start", "a"]).await;
    assert_eq!(env.ok(&["wait", "a"]).await.trim(), "0");

    // --env overrides the image's ENV; a trailing command replaces CMD; -w, -u, --hostname.
    let o = env
        .ok(&[
            "run",
            "--rm",
            "-e",
            "PATH=/bin:/custom",
            "-e",
            "GREETING=hello",
            &bb,
            "sh",
            "-c",
            "echo $PATH $GREETING",
        ])
        .await;
    assert_eq!(o, "/bin:/custom hello\n");
    let envfile = env.home.path().join("env.list");
    std::fs::write(&envfile, "# comment\nFROM_FILE=yes\n").unwrap();
    let o = env.ok(&["run", "--rm", "--env-file", envfile.to_str().unwrap(), &bb, "sh", "-c", "echo $FROM_FILE"]).await;
    assert_eq!(o, "yes\n");
    let o = env
        .ok(&[
            "run",
            "--rm",
            "-w",
            "/tmp",
            "-u",
            "nobody",
            "--hostname",
            "box1",
            &bb,
            "sh",
            "-c",
            "pwd; id -u; hostname",
        ])
        .await;
    assert_eq!(o, "/tmp\n65534\nbox1\n");
    let o = env.ok(&["run", "--rm", "--entrypoint", "echo", &bb, "from", "entrypoint"]).await;
    assert_eq!(o, "from entrypoint\n");

    // Isolation: own PID namespace (the command is PID 1), only loopback with --network none
    // (the runtime brings lo up), read-only /sys.
    let o = env
        .ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            &bb,
            "sh",
            "-c",
            "echo $$; ls /sys/class/net; cat /sys/class/net/lo/operstate; touch /sys/x 2>/dev/null || echo ro",
        ])
        .await;
    assert_eq!(o, "1\nlo\nunknown\nro\n");

    // Names are unique, with docker's conflict message and exit code 125.
    let o = env.berth(&["run", "--name", "a", &bb, "true"]).await;
    assert_eq!(o.status.code(), Some(125));
    assert!(err(&o).contains("is already in use"), "{}", err(&o));
    // Random names look like docker's.
    env.ok(&["create", &bb]).await;
    let all = env.ps_all().await;
    let created = all.iter().find(|v| v["State"] == "created").expect("a created container");
    let name = created["Names"].as_str().unwrap();
    assert!(name.contains('_') && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
    assert_eq!(created["Status"], "Created");

    // SIGTERM honoured: a process that traps TERM exits at once with its own code.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        &bb,
        "sh",
        "-c",
        "trap 'exit 7' TERM; echo armed; while true; do sleep 0.1; done",
    ])
    .await;
    wait_armed(&env, "polite").await;
    let t0 = Instant::now();
    env.ok(&["stop", "polite"]).await;
    assert!(t0.elapsed() < Duration::from_secs(5), "stop took {:?}", t0.elapsed());
    let e = env.ps_entry("polite").await.unwrap();
    assert!(e["Status"].as_str().unwrap().starts_with("Exited (7)"), "{e}");

    // kill -s, restart, rm -f of a running container.
    env.ok(&[
        "run",
        "-d",
        "--name",
        "victim",
        &bb,
        "sh",
        "-c",
        "trap 'exit 9' USR1; echo armed; while true; do sleep 0.1; done",
    ])
    .await;
    wait_armed(&env, "victim").await;
    env.ok(&["kill", "-s", "USR1", "victim"]).await;
    assert_eq!(env.ok(&["wait", "victim"]).await.trim(), "9");
    env.ok(&["restart", "-t", "1", "victim"]).await;
    let e = env.ps_entry("victim").await.unwrap();
    assert_eq!(e["State"], "running", "{e}");
    let id = e["ID"].as_str().unwrap().to_string();
    env.ok(&["rm", "-f", "victim"]).await;
    assert!(env.ps_entry("victim").await.is_none());
    assert!(processes_mentioning(&id).is_empty(), "processes of {id} are left");
    assert!(mounts_mentioning(&id).is_empty(), "mounts of {id} are left");

    // A memory limit kills a hog (exit 137, as docker's OOM kill).
    let o = env.berth(&["run", "--rm", "-m", "16m", &bb, "sh", "-c", "tail /dev/zero"]).await;
    assert_eq!(o.status.code(), Some(137), "stderr: {}", err(&o));
    // --pids-limit caps forks; --cpus is accepted and applied.
    let o = env
        .berth(&[
            "run",
            "--rm",
            "--pids-limit",
            "5",
            "--cpus",
            "0.5",
            &bb,
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 5 & done; wait",
        ])
        .await;
    assert!(err(&o).contains("fork") || err(&o).contains("resource"), "pids limit not applied: {}", err(&o));
    // The container's processes are in its own cgroup in every hierarchy the host has (v1
    // controllers here; the runtime joins them by itself), and --cpus reached the cpu one.
    let id = env.ok(&["run", "-d", "--cpus", "0.5", &bb, "sleep", "1000"]).await.trim().to_string();
    let pid = env.ok(&["inspect", "-f", "{{.State.Pid}}", &id]).await.trim().to_string();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        if ctrl.is_empty() || ctrl.starts_with("name=") {
            continue; // the v2 hierarchy without controllers, named hierarchies: not the runtime's
        }
        assert_eq!(path, format!("/berth/{id}"), "cgroup of {ctrl}:\n{cgroups}");
    }
    let quota = ["/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"]
        .iter()
        .find_map(|d| std::fs::read_to_string(format!("{d}/berth/{id}/cpu.cfs_quota_us")).ok());
    if let Some(q) = quota {
        assert_eq!(q.trim(), "50000", "--cpus 0.5 with the default 100 ms period");
    }
    env.ok(&["rm", "-f", &id]).await;

    // container prune removes every stopped container.
    let pruned = env.ok(&["container", "prune", "-f"]).await;
    assert!(pruned.contains("Deleted Containers:"), "{pruned}");
    assert!(env.ps_all().await.is_empty());
}

async fn run_pulls_a_missing_image_first(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::start_on(rt).await;
    let bb = env.busybox.clone();
    let o = env.berth(&["run", "--rm", &bb, "echo", "pulled"]).await;
    assert_eq!(o.status.code(), Some(0), "stderr: {}", err(&o));
    assert_eq!(out(&o), "pulled\n");
    assert!(err(&o).contains("Unable to find image"), "{}", err(&o));
    // -i pipes stdin into the container.
    let mut c = env.berth_cmd(&["run", "--rm", "-i", &bb, "sh", "-c", "tr a-z A-Z; exit 5"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let o = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(5));
    assert_eq!(out(&o), "SHOUT\n");
    // An unknown image is a clear error with docker's exit code 125.
    let o = env.berth(&["run", "--rm", &format!("{}/nope:1", env.registry.addr()), "true"]).await;
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
}

#[tokio::test(flavor = "multi_thread")]
async fn prune_removes_snapshots_no_image_or_container_uses() {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox().await;
    let bb = env.busybox.clone();
    let snaps = env.runtime.root().join("snapshots").join("snapshots");
    let count = || std::fs::read_dir(&snaps).map(|d| d.count()).unwrap_or(0);

    env.ok(&["run", "--name", "once", &bb, "true"]).await;
    assert_eq!(count(), 1, "busybox's one layer is unpacked once");
    // The image is still in the store: its snapshot stays (the next run needs no unpack).
    env.ok(&["system", "prune", "-f"]).await;
    assert!(env.ps_entry("once").await.is_none(), "system prune removes stopped containers");
    assert_eq!(count(), 1, "a snapshot of an image still present was pruned");
    // Neither an image nor a container uses it any more: prune removes it.
    env.ok(&["rmi", &bb]).await;
    env.ok(&["system", "prune", "-f"]).await;
    assert_eq!(count(), 0, "an unused snapshot survived prune:\n{}", env.runtime.log());
}

/// PID 1 of a PID namespace drops the signals it has no handler for (as in docker), so a test
/// that signals a trapping shell waits until it printed "armed" after setting its trap.
async fn wait_armed(env: &Env, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.ok(&["logs", name]).await.contains("armed") {
        assert!(Instant::now() < deadline, "{name} never printed 'armed'");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
