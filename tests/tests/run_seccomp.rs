//! The default seccomp profile (Docker's allowlist) with each OCI runtime (root only): calls
//! outside the allowlist fail with EPERM, ordinary tools work.

mod run_env;

use run_env::{can_run, Env, Runtime};

crate::per_runtime!(seccomp_allowlist_refuses_what_docker_refuses);

async fn seccomp_allowlist_refuses_what_docker_refuses(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();

    // The filter is installed on the container's process.
    let status = env.ok(&["run", "--rm", &bb, "cat", "/proc/self/status"]).await;
    let mode = status.lines().find(|l| l.starts_with("Seccomp:")).unwrap_or_default();
    assert!(mode.ends_with('2'), "no seccomp filter: {mode:?}");

    // Ordinary tools work: fork/exec (clone, with clone3 answered ENOSYS), files, pipes, time.
    let script =
        "sleep 0 & wait; echo x > /tmp/f && cat /tmp/f | wc -c; date >/dev/null && ls / >/dev/null && echo fine";
    let o = env.ok(&["run", "--rm", &bb, "sh", "-c", script]).await;
    assert_eq!(o, "2\nfine\n");

    // unshare(2) is outside the allowlist (Docker allows it only with CAP_SYS_ADMIN). A user
    // namespace needs no capability at all, so only the seccomp profile refuses this one.
    for cmd in ["unshare -U true", "unshare -n true", "mount -t tmpfs none /mnt", "nsenter -t 1 -n true"] {
        let o = env.berth(&["run", "--rm", &bb, "sh", "-c", cmd]).await;
        let e = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_ne!(o.status.code(), Some(0), "{cmd} succeeded in a container");
        // EPERM, as busybox words it ("mount: permission denied (are you root?)" for mount).
        let low = e.to_lowercase();
        assert!(low.contains("operation not permitted") || low.contains("permission denied"), "{cmd}: {e}");
    }

    // `exec` runs under the container's profile too (as runc does).
    let id = env.ok(&["run", "-d", &bb, "sleep", "60"]).await.trim().to_string();
    let status = env.ok(&["exec", &id, "cat", "/proc/self/status"]).await;
    let mode = status.lines().find(|l| l.starts_with("Seccomp:")).unwrap_or_default();
    assert!(mode.ends_with('2'), "exec runs without a seccomp filter: {mode:?}");
    let o = env.berth(&["exec", &id, "unshare", "-U", "true"]).await;
    assert_ne!(o.status.code(), Some(0), "unshare succeeded in an exec");
    env.ok(&["rm", "-f", &id]).await;
}
