//! `berth exec` into running containers, as `docker exec` (root only).

mod pty_env;
mod run_env;

use pty_env::PtyProc;
use run_env::{can_run, Env, Runtime};
use std::time::Duration;

crate::per_runtime!(exec_sees_the_container_and_passes_exit_codes);

const T: Duration = Duration::from_secs(20);

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn exec_sees_the_container_and_passes_exit_codes(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();
    env.ok(&[
        "run",
        "--network",
        "none",
        "-d",
        "--name",
        "box",
        "-e",
        "FOO=bar",
        &bb,
        "sh",
        "-c",
        "echo data > /file; exec sleep 1000",
    ])
    .await;
    // Its files, its environment plus -e, its PID namespace.
    env.eventually("the container to write /file", T, || async {
        env.berth(&["exec", "box", "cat", "/file"]).await.stdout == b"data\n"
    })
    .await;
    assert_eq!(env.ok(&["exec", "-e", "BAR=baz", "box", "sh", "-c", "echo $FOO $BAR"]).await, "bar baz\n");
    assert_eq!(env.ok(&["exec", "-e", "FOO=over", "box", "sh", "-c", "echo $FOO"]).await, "over\n");
    assert!(env.ok(&["exec", "box", "ps"]).await.contains("sleep 1000"));
    assert_eq!(env.ok(&["exec", "box", "hostname"]).await.trim().len(), 12);
    // -u, -w.
    assert_eq!(env.ok(&["exec", "-u", "nobody", "box", "id", "-u"]).await, "65534\n");
    assert_eq!(env.ok(&["exec", "-w", "/tmp", "box", "pwd"]).await, "/tmp\n");
    // stdout and stderr kept apart; exit codes passed through; 127 for a missing command.
    let o = env.berth(&["exec", "box", "sh", "-c", "echo o; echo e >&2; exit 4"]).await;
    assert_eq!((o.status.code(), out(&o).as_str(), err(&o).as_str()), (Some(4), "o\n", "e\n"));
    let o = env.berth(&["exec", "box", "no-such-command"]).await;
    assert_eq!(o.status.code(), Some(127), "{}", err(&o));
    assert!(err(&o).contains("no-such-command"), "{}", err(&o));
    let o = env.berth(&["exec", "box", "/etc/passwd"]).await;
    assert_eq!(o.status.code(), Some(126), "{}", err(&o));
    // -i relays stdin.
    let mut c = env.berth_cmd(&["exec", "-i", "box", "sh", "-c", "tr a-z A-Z"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out(&o), "SHOUT\n");
    // -t gives a terminal (TERM set), -d returns at once and the process runs on.
    assert_eq!(env.ok(&["exec", "-t", "box", "sh", "-c", "test -t 1 && echo $TERM"]).await, "xterm\r\n");
    env.ok(&["exec", "-d", "box", "sh", "-c", "sleep 1; echo later > /bg"]).await;
    env.eventually("the detached exec to write /bg", T, || async {
        env.berth(&["exec", "box", "cat", "/bg"]).await.stdout == b"later\n"
    })
    .await;
    // Exec output is not the container's log.
    assert!(!env.ok(&["logs", "box"]).await.contains("SHOUT"));

    // An interactive shell through a pty: what we type runs, exit code passes through.
    let mut p = PtyProc::spawn(env.berth_cmd(&["exec", "-it", "box", "sh"]), 77, 21);
    p.expect("# ", T);
    p.line("stty size; cat /file");
    p.expect("21 77", T);
    p.expect("data", T);
    p.line("exit 6");
    assert_eq!(p.wait(T), Some(6), "{}", p.text());
    assert!(p.cooked());

    // Into a stopped container: docker's error.
    env.ok(&["stop", "-t", "0", "box"]).await;
    let o = env.berth(&["exec", "box", "true"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(
        err(&o).contains("Error response from daemon: container") && err(&o).contains("is not running"),
        "{}",
        err(&o)
    );
    let o = env.berth(&["exec", "nope", "true"]).await;
    assert!(err(&o).contains("No such container: nope"), "{}", err(&o));
    env.ok(&["rm", "box"]).await;
}
