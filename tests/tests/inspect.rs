//! `inspect` (docker's JSON and --format templates), `top` and `stats` on real containers
//! (root only; each scenario once per OCI runtime: builtin:: and runc::).

mod run_env;

crate::per_runtime!(inspect_format_top_stats);

use run_env::{can_run, Env, Runtime};
use serde_json::Value;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn is_rfc3339(s: &str) -> bool {
    s.len() >= 20 && s.ends_with('Z') && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && !s.starts_with("0001")
}

async fn inspect_format_top_stats(rt: Runtime) {
    if !can_run() {
        return;
    }
    let env = Env::with_busybox_on(rt).await;
    let bb = env.busybox.clone();
    let id = env
        .ok(&[
            "run",
            "--network",
            "none",
            "-d",
            "--name",
            "web",
            "-e",
            "GREETING=hi",
            "-l",
            "tier=front",
            "-m",
            "64m",
            &bb,
            "sleep",
            "1000",
        ])
        .await
        .trim()
        .to_string();

    // The JSON array docker prints, with the fields scripts read.
    let v: Value = serde_json::from_str(&env.ok(&["inspect", "web"]).await).expect("inspect prints JSON");
    let c = &v.as_array().expect("an array")[0];
    assert_eq!(c["Id"], id.as_str());
    assert_eq!(c["Name"], "/web");
    assert_eq!(c["Path"], "sleep");
    assert_eq!(c["Args"], serde_json::json!(["1000"]));
    assert_eq!(c["State"]["Status"], "running");
    assert_eq!(c["State"]["Running"], true);
    assert_eq!(c["State"]["Restarting"], false);
    assert_eq!(c["State"]["OOMKilled"], false);
    assert_eq!(c["State"]["FinishedAt"], "0001-01-01T00:00:00Z");
    assert!(is_rfc3339(c["State"]["StartedAt"].as_str().unwrap()), "{}", c["State"]);
    assert!(is_rfc3339(c["Created"].as_str().unwrap()), "{}", c["Created"]);
    let pid = c["State"]["Pid"].as_i64().unwrap();
    assert!(pid > 1, "{}", c["State"]);
    // (The runtime may still be between its init and the exec of `sleep` for a moment.)
    env.eventually("State.Pid to be the container's sleep", std::time::Duration::from_secs(5), || async {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("sleep"))
    })
    .await;
    assert_eq!(c["RestartCount"], 0);
    assert!(std::path::Path::new(c["LogPath"].as_str().unwrap()).is_file(), "{}", c["LogPath"]);
    assert!(c["Config"]["Env"].as_array().unwrap().iter().any(|e| e == "GREETING=hi"), "{}", c["Config"]);
    assert_eq!(c["Config"]["Labels"]["tier"], "front");
    assert_eq!(c["Config"]["Image"], bb.as_str());
    assert_eq!(c["HostConfig"]["Memory"], 64 << 20);
    assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "no");
    assert!(c["Mounts"].as_array().unwrap().is_empty());
    assert!(c["NetworkSettings"].is_object());
    // Image is the image ID (config digest), the same `image inspect` gives.
    let image_id = env.ok(&["image", "inspect", "--format", "{{.Id}}", &bb]).await;
    assert!(image_id.starts_with("sha256:"), "{image_id}");
    assert_eq!(c["Image"], image_id.trim());

    // --format with Go template paths, on both inspect commands.
    assert_eq!(env.ok(&["inspect", "-f", "{{.State.Status}}", "web"]).await, "running\n");
    assert_eq!(env.ok(&["container", "inspect", "--format", "{{.Name}}", &id[..12]]).await, "/web\n");
    let cfg: Value = serde_json::from_str(&env.ok(&["inspect", "--format", "{{json .Config}}", "web"]).await).unwrap();
    assert_eq!(cfg["Cmd"], serde_json::json!(["sleep", "1000"]));
    assert_eq!(
        env.ok(&["inspect", "-f", "{{index .Config.Labels \"tier\"}} {{.HostConfig.Memory}}", "web"]).await,
        "front 67108864\n"
    );
    // Containers first, then images; --type narrows.
    assert_eq!(env.ok(&["inspect", "-f", "{{.Id}}", &bb]).await, image_id);
    let o = env.berth(&["inspect", "--type", "container", &bb]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("No such container"), "{}", err(&o));
    let o = env.berth(&["inspect", "nothing-by-this-name"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("No such object: nothing-by-this-name"), "{}", err(&o));
    // A bad template is an error, not garbage output.
    let o = env.berth(&["inspect", "-f", "{{.State.Status", "web"]).await;
    assert_ne!(o.status.code(), Some(0));

    // top: the container's process with docker's columns.
    let top = env.ok(&["top", "web"]).await;
    let mut lines = top.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "{top}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{top}");
    assert!(rows[0].ends_with("sleep 1000"), "{top}");
    assert_eq!(rows[0].split_whitespace().nth(1).unwrap(), pid.to_string());
    let top = env.ok(&["top", "web", "-o", "pid,comm"]).await;
    assert!(top.lines().nth(1).is_some_and(|l| l.contains("sleep")), "{top}");

    // stats --no-stream: memory under the 64 MiB limit, one process.
    let st = env.ok(&["stats", "--no-stream", "web"]).await;
    let mut lines = st.lines();
    assert!(lines.next().unwrap().starts_with("CONTAINER ID"), "{st}");
    let row = lines.next().unwrap_or_else(|| panic!("no stats row:\n{st}"));
    assert!(row.starts_with(&id[..12]) && row.contains("web"), "{row}");
    assert!(row.contains(" / 64MiB"), "{row}");
    assert!(row.trim_end().ends_with(" 1"), "PIDS should be 1: {row}");
    let j: Value =
        serde_json::from_str(env.ok(&["stats", "--no-stream", "--format", "json", "web"]).await.trim()).unwrap();
    assert_eq!(j["Name"], "web");
    assert!(j["MemUsage"].as_str().unwrap().ends_with("/ 64MiB"), "{j}");
    assert!(j["CPUPerc"].as_str().unwrap().ends_with('%'), "{j}");

    // After a stop: exited with 137 (sleep ignores SIGTERM as PID 1), FinishedAt set.
    env.ok(&["stop", "-t", "1", "web"]).await;
    let s = env
        .ok(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} {{.State.Running}} {{.State.Pid}}", "web"])
        .await;
    assert_eq!(s, "exited 137 false 0\n");
    assert!(is_rfc3339(env.ok(&["inspect", "-f", "{{.State.FinishedAt}}", "web"]).await.trim()));
    let o = env.berth(&["top", "web"]).await;
    assert_ne!(o.status.code(), Some(0), "top of a stopped container: {}", out(&o));
    assert!(err(&o).contains("is not running"), "{}", err(&o));
    env.ok(&["rm", "web"]).await;
}
