//! `run -it`, detach and attach, `start -ai`, `-t`/`-a` alone, and re-attach after runtime-svc
//! was killed -9, driven through a real pseudo-terminal (root only).

mod pty_env;
mod run_env;

use pty_env::PtyProc;
use run_env::{can_run, Env, Runtime};
use std::time::Duration;

crate::per_runtime!(
    run_it_shell_resize_exit_code_detach_and_attach,
    tty_alone_and_attach_flags_like_docker,
    reattach_after_runtime_svc_kill9
);

const T: Duration = Duration::from_secs(20);

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn on_pty(env: &Env, args: &[&str], cols: u16, rows: u16) -> PtyProc {
    PtyProc::spawn(env.berth_cmd(args), cols, rows)
}

async fn run_it_shell_resize_exit_code_detach_and_attach(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();

    // An interactive shell: what we type runs, the window size is the terminal's from the
    // start and follows resizes, `exit 3` ends it with code 3 and the terminal is restored.
    let mut p = on_pty(&env, &["run", "--network", "none", "-it", "--name", "shell", &bb, "sh"], 90, 30);
    p.expect("# ", T);
    p.line("echo hi");
    p.expect("\r\nhi\r\n", T);
    p.line("stty size");
    p.expect("30 90", T);
    p.resize(120, 40);
    std::thread::sleep(Duration::from_millis(300));
    p.line("stty size");
    p.expect("40 120", T);
    p.line("echo $TERM; test -t 0 && echo stdin-is-a-tty");
    p.expect("xterm", T);
    p.expect("stdin-is-a-tty", T);
    p.line("exit 3");
    assert_eq!(p.wait(T), Some(3), "{}", p.text());
    assert!(p.cooked(), "the terminal was left in raw mode");
    let e = env.ps_entry("shell").await.unwrap();
    assert!(e["Status"].as_str().unwrap().starts_with("Exited (3)"), "{e}");
    // Ctrl-D (EOF at the shell's prompt) ends it too.
    let mut p = on_pty(&env, &["run", "--network", "none", "-it", "--rm", &bb, "sh"], 80, 24);
    p.expect("# ", T);
    p.send(&[4]);
    assert_eq!(p.wait(T), Some(0), "{}", p.text());

    // Ctrl-P Ctrl-Q detaches: the CLI exits 0 and the container keeps running.
    let mut p = on_pty(&env, &["run", "--network", "none", "-it", "--name", "bg", &bb, "sh"], 80, 24);
    p.expect("# ", T);
    p.line("echo before > /mark");
    p.expect("# ", T);
    p.send(&[0x10, 0x11]);
    assert_eq!(p.wait(T), Some(0), "{}", p.text());
    assert!(p.cooked());
    let e = env.ps_entry("bg").await.unwrap();
    assert_eq!(e["State"], "running", "{e}");

    // attach joins it again: same shell (its files), then exit 5 is attach's exit code.
    let mut a = on_pty(&env, &["attach", "bg"], 80, 24);
    std::thread::sleep(Duration::from_millis(500));
    a.line("cat /mark");
    a.expect("before", T);
    // Custom detach keys.
    a.send(&[0x10, 0x11]);
    assert_eq!(a.wait(T), Some(0), "{}", a.text());
    let mut a = on_pty(&env, &["attach", "--detach-keys", "ctrl-x,x", "bg"], 80, 24);
    std::thread::sleep(Duration::from_millis(500));
    a.line("echo again");
    a.expect("\r\nagain\r\n", T);
    a.send(&[0x18, b'x']);
    assert_eq!(a.wait(T), Some(0), "{}", a.text());
    let mut a = on_pty(&env, &["attach", "bg"], 80, 24);
    std::thread::sleep(Duration::from_millis(500));
    a.line("exit 5");
    assert_eq!(a.wait(T), Some(5), "{}", a.text());
    let e = env.ps_entry("bg").await.unwrap();
    assert!(e["Status"].as_str().unwrap().starts_with("Exited (5)"), "{e}");

    // Attaching to a stopped container is refused, as docker.
    let o = env.berth(&["attach", "bg"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("You cannot attach to a stopped container"));

    // start -ai restarts it attached.
    let mut s = on_pty(&env, &["start", "-ai", "bg"], 80, 24);
    s.expect("# ", T);
    s.line("cat /mark; exit 7");
    s.expect("before", T);
    assert_eq!(s.wait(T), Some(7), "{}", s.text());
}

async fn tty_alone_and_attach_flags_like_docker(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();
    // -t without -i: output goes through a terminal (CR LF), stdin is not relayed.
    let o = env.berth(&["run", "--network", "none", "--rm", "-t", &bb, "sh", "-c", "test -t 1 && echo tty"]).await;
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(out(&o), "tty\r\n");
    // Without -t no terminal.
    let o = env.berth(&["run", "--network", "none", "--rm", &bb, "sh", "-c", "test -t 1 || echo notty"]).await;
    assert_eq!(out(&o), "notty\n");
    // -it needs a terminal on stdin.
    let o = env.berth(&["run", "--network", "none", "--rm", "-it", &bb, "true"]).await;
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("the input device is not a TTY"));
    // -a picks streams.
    let o = env
        .berth(&["run", "--network", "none", "--rm", "-a", "stderr", &bb, "sh", "-c", "echo out; echo err >&2"])
        .await;
    assert_eq!(out(&o), "");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    let o = env
        .berth(&["run", "--network", "none", "--rm", "-a", "STDOUT", &bb, "sh", "-c", "echo out; echo err >&2; exit 2"])
        .await;
    assert_eq!(out(&o), "out\n");
    assert_eq!(o.status.code(), Some(2));
    let o = env.berth(&["run", "--network", "none", "-d", "-a", "stdout", &bb, "true"]).await;
    assert!(String::from_utf8_lossy(&o.stderr).contains("Conflicting options: -a and -d"));
    // -i alone: stdin piped, no terminal.
    let mut c =
        env.berth_cmd(&["run", "--network", "none", "--rm", "-i", &bb, "sh", "-c", "cat; test -t 0 || echo piped"]);
    c.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"through stdin\n").unwrap();
    let o = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out(&o), "through stdin\npiped\n");
}

async fn reattach_after_runtime_svc_kill9(rt: Runtime) {
    if !can_run() {
        return;
    }
    let mut env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();
    let id = env.ok(&["run", "--network", "none", "-dit", "--name", "keeper", &bb, "sh"]).await.trim().to_string();
    assert_eq!(id.len(), 64);
    let mut a = on_pty(&env, &["attach", "keeper"], 80, 24);
    std::thread::sleep(Duration::from_millis(500));
    a.line("echo first > /f; echo one");
    a.expect("\r\none\r\n", T);
    a.send(&[0x10, 0x11]);
    assert_eq!(a.wait(T), Some(0));

    // The shim holds the pty: killing runtime-svc -9 and restarting it loses nothing.
    env.runtime.kill9();
    std::thread::sleep(Duration::from_millis(500));
    env.runtime.restart().await;
    let mut a = on_pty(&env, &["attach", "keeper"], 100, 30);
    std::thread::sleep(Duration::from_millis(500));
    a.line("cat /f; stty size");
    a.expect("first", T);
    a.expect("30 100", T);
    a.line("exit 9");
    assert_eq!(a.wait(T), Some(9), "{}", a.text());
    let e = env.ps_entry("keeper").await.unwrap();
    assert!(e["Status"].as_str().unwrap().starts_with("Exited (9)"), "{e}");
    env.ok(&["rm", "keeper"]).await;
}
