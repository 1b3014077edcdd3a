//! `berth logs` of the json-file log the shim keeps: -f through rotations, --tail, -t,
//! --since/--until, after the exit and across a restart (root only).

mod run_env;

use run_env::{can_run, Env, Runtime};
use std::process::Stdio;
use std::time::Duration;

crate::per_runtime!(logs_follow_rotation_tail_timestamps_since);

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn logs_follow_rotation_tail_timestamps_since(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();
    // A line a second on stdout (and one on stderr), rotated every ~3 lines.
    let script = "i=0; while [ $i -lt 7 ]; do echo line$i; echo err$i >&2; i=$((i+1)); sleep 1; done";
    let id = env
        .ok(&[
            "run",
            "--network",
            "none",
            "-d",
            "--name",
            "ticker",
            "--log-opt",
            "max-size=300",
            "--log-opt",
            "max-file=10",
            &bb,
            "sh",
            "-c",
            script,
        ])
        .await
        .trim()
        .to_string();
    // Follow from the start: sees every line in order, stdout and stderr apart, and ends when
    // the container stops.
    let mut c = env.berth_cmd(&["logs", "-f", "ticker"]);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = c.spawn().unwrap();
    let t0 = std::time::Instant::now();
    let o = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("logs -f did not end when the container stopped")
    .unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(4), "logs -f returned before the container stopped");
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    let want: String = (0..7).map(|i| format!("line{i}\n")).collect();
    assert_eq!(out(&o), want);
    let want_err: String = (0..7).map(|i| format!("err{i}\n")).collect();
    assert_eq!(err(&o), want_err);
    // The log was rotated on the way.
    let dir = env.runtime.root().join("containers").join(&id);
    assert!(dir.join("log.json.1").exists() && dir.join("log.json.2").exists(), "no rotation in {}", dir.display());
    assert!(std::fs::metadata(dir.join("log.json")).unwrap().len() <= 300);

    // After the exit: all of it again (across the rotated files), --tail, -t, --since/--until.
    let o = env.berth(&["logs", "ticker"]).await;
    assert_eq!(out(&o), want);
    let o = env.berth(&["logs", "--tail", "2", "ticker"]).await;
    assert_eq!(out(&o), "line6\n");
    assert_eq!(err(&o), "err6\n");
    let stamped = env.ok(&["logs", "-t", "ticker"]).await;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 7);
    for (i, l) in lines.iter().enumerate() {
        let (ts, text) = l.split_once(' ').unwrap();
        assert_eq!(text, format!("line{i}"));
        // RFC 3339 with nanoseconds, UTC (docker's RFC3339NanoFixed).
        assert!(ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
    }
    let ts3 = lines[3].split_once(' ').unwrap().0;
    let o = env.ok(&["logs", "--since", ts3, "ticker"]).await;
    assert_eq!(o, "line3\nline4\nline5\nline6\n");
    let o = env.ok(&["logs", "--until", ts3, "ticker"]).await;
    assert_eq!(o, "line0\nline1\nline2\nline3\n");
    assert_eq!(env.ok(&["logs", "--since", "10m", "ticker"]).await, want);
    assert_eq!(env.ok(&["logs", "--since", "2000-01-01", "--until", "2000-01-02", "ticker"]).await, "");
    let o = env.berth(&["logs", "--since", "yesterday", "ticker"]).await;
    assert_ne!(o.status.code(), Some(0));

    // A restarted container appends to the same log; -f follows it until it stops again.
    env.ok(&["start", "ticker"]).await;
    let o = env.ok(&["logs", "-f", "ticker"]).await;
    assert_eq!(o, format!("{want}{want}"), "follow after a restart");

    // Restarts by the restart policy: -f follows every run and ends after the last one.
    env.ok(&[
        "run",
        "--network",
        "none",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        &bb,
        "sh",
        "-c",
        "echo run; sleep 1; exit 1",
    ])
    .await;
    let o = env.ok(&["logs", "-f", "flaky"]).await;
    assert_eq!(o, "run\nrun\nrun\n");
    let e = env.ps_entry("flaky").await.unwrap();
    assert!(e["Status"].as_str().unwrap().starts_with("Exited (1)"), "{e}");

    // Bad options are refused at create, with docker's option names.
    let o = env.berth(&["create", "--network", "none", "--log-opt", "max-file=3", &bb]).await;
    assert!(err(&o).contains("max-size"), "{}", err(&o));
    let o = env.berth(&["create", "--network", "none", "--log-opt", "color=blue", &bb]).await;
    assert!(err(&o).contains("unknown log opt 'color'"), "{}", err(&o));
    let o = env.berth(&["logs", "nope"]).await;
    assert!(err(&o).contains("No such container: nope"), "{}", err(&o));
}
