//! `berth run` as the Docker tutorials use it, against the real services (root only).

mod run_env;

use run_env::{can_run, mounts_mentioning, processes_mentioning, Env};
use std::time::{Duration, Instant};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn run_echo_ps_stop_rm() {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox().await;
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
