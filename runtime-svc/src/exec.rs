//! `exec` and the relay shared with `attach`: a new process in a running container, started by
//! the container's shim (`EXEC`, i.e. `runc exec -d` with an OCI `process` made from the
//! bundle's own, so it gets the container's capabilities, rlimits, no_new_privs, user and
//! environment), and the copying of shim frames to and from a client session.

use crate::error::{IoContext, RuntimeError};
use crate::manager::{AttachInput, AttachOutput, Manager};
use crate::shim::{self, AttachConn};
use crate::shim_proto::{self, Exit};
use serde_json::{json, Value};
use std::path::Path;
use tokio::sync::mpsc;

/// What `berth exec` asks for.
#[derive(Clone, Debug, Default)]
pub struct ExecSpec {
    /// argv.
    pub cmd: Vec<String>,
    /// `-e K=V`, overriding the container's.
    pub env: Vec<String>,
    /// `-u` ("" = the container's user).
    pub user: String,
    /// `-w` ("" = the container's working directory).
    pub working_dir: String,
    /// `-t`.
    pub tty: bool,
    /// `-i`.
    pub stdin: bool,
    /// `-d`.
    pub detach: bool,
    /// Initial terminal size (columns, rows).
    pub size: Option<(u16, u16)>,
}

/// Runs `spec` in the running container `what`. Sends `Attached` once the process runs, then
/// its output and `Exit`; with `detach` only `Attached`. A command the runtime cannot start is
/// reported as `Exit` with docker's 126/127 and the runtime's message.
pub async fn exec(
    m: &Manager,
    what: &str,
    spec: ExecSpec,
    input: mpsc::Receiver<AttachInput>,
    output: mpsc::Sender<AttachOutput>,
) -> Result<(), RuntimeError> {
    if spec.cmd.is_empty() {
        return Err(RuntimeError::Invalid("No exec command specified".into()));
    }
    let (rec, dir) = m.record_and_dir(what)?;
    let not_running = || RuntimeError::State(format!("container {} is not running", rec.id));
    if rec.status != crate::container::Status::Running {
        return Err(not_running());
    }
    let process = process_json(&dir, &spec)?;
    let open =
        shim::ExecOpen { process: &process, stdin: spec.stdin, tty: spec.tty, detach: spec.detach, size: spec.size };
    let conn = match shim::exec(&dir, &open).await {
        Ok(Ok((_pid, conn))) => conn,
        Ok(Err(fail)) if fail.message == "container is not running" => return Err(not_running()),
        Ok(Err(fail)) => {
            let _ = output.send(AttachOutput::Attached(rec.id.clone(), spec.tty)).await;
            let error = format!("OCI runtime exec failed: {}", fail.message);
            let _ = output.send(AttachOutput::Exit(Exit { code: fail.code, oom: false, error })).await;
            return Ok(());
        }
        // The shim is gone: the container has just exited.
        Err(_) => return Err(not_running()),
    };
    let _ = output.send(AttachOutput::Attached(rec.id.clone(), spec.tty)).await;
    if spec.detach {
        return Ok(());
    }
    relay(conn, &dir, input, output).await;
    Ok(())
}

/// The OCI `process` for an exec: the container's own (from its bundle) with the command,
/// environment, user, working directory and terminal of the request.
fn process_json(dir: &Path, spec: &ExecSpec) -> Result<Vec<u8>, RuntimeError> {
    let cfg_path = dir.join("bundle").join("config.json");
    let text = std::fs::read(&cfg_path).ctx(|| format!("reading {}", cfg_path.display()))?;
    let cfg: Value = serde_json::from_slice(&text).map_err(|e| RuntimeError::Invalid(format!("bad bundle: {e}")))?;
    let mut p = cfg.get("process").cloned().unwrap_or_else(|| json!({}));
    p["args"] = json!(spec.cmd);
    p["terminal"] = json!(spec.tty);
    let mut env: Vec<String> = p["env"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    for kv in &spec.env {
        let Some((k, _)) = kv.split_once('=') else { continue };
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k));
        env.push(kv.clone());
    }
    if spec.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    p["env"] = json!(env);
    if !spec.working_dir.is_empty() {
        if !spec.working_dir.starts_with('/') {
            return Err(RuntimeError::Invalid(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                spec.working_dir
            )));
        }
        p["cwd"] = json!(spec.working_dir);
    }
    if !spec.user.is_empty() {
        let rootfs = dir.join("rootfs");
        let passwd = crate::manager::read_in_root(&rootfs, "etc/passwd").unwrap_or_default();
        let group = crate::manager::read_in_root(&rootfs, "etc/group").unwrap_or_default();
        let (uid, gid, extra) =
            crate::spec::resolve_user(&spec.user, &passwd, &group).map_err(RuntimeError::Invalid)?;
        let mut user = json!({"uid": uid, "gid": gid});
        if !extra.is_empty() {
            user["additionalGids"] = json!(extra);
        }
        p["user"] = user;
    }
    match spec.size {
        Some((w, h)) if spec.tty => p["consoleSize"] = json!({"width": w, "height": h}),
        _ => {
            if let Some(o) = p.as_object_mut() {
                o.remove("consoleSize");
            }
        }
    }
    serde_json::to_vec(&p).map_err(|e| RuntimeError::Invalid(e.to_string()))
}

/// Copies a session: client input to the shim (stdin, EOF, resizes), shim frames to the client,
/// until the exit frame (sent on as `Exit`) or until the client goes away (a detach: the
/// connection is dropped, the process runs on).
pub async fn relay(
    conn: AttachConn,
    dir: &Path,
    mut input: mpsc::Receiver<AttachInput>,
    output: mpsc::Sender<AttachOutput>,
) {
    let AttachConn { mut reader, mut writer, .. } = conn;
    let input_task = tokio::spawn(async move {
        while let Some(msg) = input.recv().await {
            let r = match msg {
                AttachInput::Stdin(data) => {
                    let mut res = Ok(());
                    for chunk in data.chunks(shim_proto::MAX_FRAME) {
                        res = shim::write_frame(&mut writer, shim_proto::FRAME_STDIN, chunk).await;
                        if res.is_err() {
                            break;
                        }
                    }
                    res
                }
                AttachInput::CloseStdin => shim::write_frame(&mut writer, shim_proto::FRAME_CLOSE_STDIN, &[]).await,
                AttachInput::Resize(w, h) => {
                    let mut b = w.to_be_bytes().to_vec();
                    b.extend_from_slice(&h.to_be_bytes());
                    shim::write_frame(&mut writer, shim_proto::FRAME_RESIZE, &b).await
                }
            };
            if r.is_err() {
                break;
            }
        }
    });
    loop {
        let frame = tokio::select! {
            f = shim::read_frame(&mut reader) => f,
            // The client went away (detached): let go of the shim connection.
            _ = output.closed() => break,
        };
        let sent = match frame {
            Ok(Some((shim_proto::FRAME_STDOUT, d))) => output.send(AttachOutput::Stdout(d)).await,
            Ok(Some((shim_proto::FRAME_STDERR, d))) => output.send(AttachOutput::Stderr(d)).await,
            Ok(Some((shim_proto::FRAME_EXIT, d))) => {
                let exit = Exit::parse(&String::from_utf8_lossy(&d)).unwrap_or(Exit {
                    code: 255,
                    oom: false,
                    error: "bad exit frame".into(),
                });
                let _ = output.send(AttachOutput::Exit(exit)).await;
                break;
            }
            Ok(Some(_)) => Ok(()),
            Ok(None) | Err(_) => {
                // The shim went away without an exit frame (killed?): report what is known.
                let exit = shim::read_exit_file(dir).unwrap_or(Exit {
                    code: 255,
                    oom: false,
                    error: "lost the connection to the container's shim".into(),
                });
                let _ = output.send(AttachOutput::Exit(exit)).await;
                break;
            }
        };
        if sent.is_err() {
            break;
        }
    }
    input_task.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_keeps_the_containers_and_applies_the_request() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bundle")).unwrap();
        let cfg = json!({"process": {
            "terminal": false, "args": ["sh"], "env": ["PATH=/bin", "A=1"], "cwd": "/",
            "user": {"uid": 0, "gid": 0}, "noNewPrivileges": true,
            "capabilities": {"bounding": ["CAP_KILL"]}
        }});
        std::fs::write(dir.path().join("bundle/config.json"), cfg.to_string()).unwrap();
        let spec = ExecSpec {
            cmd: vec!["env".into()],
            env: vec!["A=2".into(), "B=3".into()],
            working_dir: "/tmp".into(),
            tty: true,
            size: Some((100, 30)),
            ..Default::default()
        };
        let p: Value = serde_json::from_slice(&process_json(dir.path(), &spec).unwrap()).unwrap();
        assert_eq!(p["args"], json!(["env"]));
        assert_eq!(p["env"], json!(["PATH=/bin", "A=2", "B=3", "TERM=xterm"]));
        assert_eq!(p["cwd"], "/tmp");
        assert_eq!(p["terminal"], true);
        assert_eq!(p["consoleSize"], json!({"width": 100, "height": 30}));
        assert_eq!(p["noNewPrivileges"], true);
        assert_eq!(p["capabilities"]["bounding"], json!(["CAP_KILL"]));
        let bad = ExecSpec { cmd: vec!["x".into()], working_dir: "rel".into(), ..Default::default() };
        assert!(process_json(dir.path(), &bad).is_err());
    }
}
