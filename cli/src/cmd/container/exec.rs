//! `berth exec`: runs a command in a running container over runtime-svc's Exec stream, as
//! `docker exec` (stdin with -i, a pty with -t, -d, -e, -u, -w, --detach-keys; the process's
//! exit code becomes ours, 126/127 when it cannot be started).

use super::attach::{self, Input, Outcome, Session};
use super::tty;
use super::{client, daemon_err};
use crate::context::Context;
use anyhow::{anyhow, Context as _, Result};
use berth_proto::runtime::v1 as pb;
use std::process::ExitCode;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// `berth exec` options.
#[derive(clap::Args, Debug)]
pub struct ExecOpts {
    /// Detached mode: run the command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to take it from this environment).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long)]
    pub env_file: Vec<std::path::PathBuf>,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Username or UID (format: "<name|uid>[:<group|gid>]").
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// The container (ID, ID prefix or name).
    pub container: String,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

fn exec_req(i: Input) -> pb::ExecRequest {
    use pb::exec_request::Msg;
    pb::ExecRequest {
        msg: Some(match i {
            Input::Stdin(d) => Msg::Stdin(d),
            Input::Close => Msg::CloseStdin(true),
            Input::Resize(w, h) => Msg::Resize(pb::TerminalSize { width: w.into(), height: h.into() }),
        }),
    }
}

/// `K=V` as is; a bare `K` takes this process's value, or is dropped when unset (docker).
fn env_entry(e: &str) -> Option<String> {
    if e.contains('=') {
        return Some(e.to_string());
    }
    std::env::var(e).ok().map(|v| format!("{e}={v}"))
}

/// `berth exec`.
pub async fn exec(ctx: &Context, o: ExecOpts) -> Result<ExitCode> {
    let detach_keys = tty::parse_detach_keys(o.detach_keys.as_deref().unwrap_or(tty::DEFAULT_DETACH_KEYS))?;
    let stdin = o.interactive && !o.detach;
    attach::check_input_tty(stdin, o.tty)?;
    let mut env = Vec::new();
    for f in &o.env_file {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading env file {}", f.display()))?;
        env.extend(
            text.lines().map(str::trim_start).filter(|l| !l.is_empty() && !l.starts_with('#')).filter_map(env_entry),
        );
    }
    env.extend(o.env.iter().filter_map(|e| env_entry(e)));
    let mut rt = client(ctx).await?;
    let (tx, rx) = mpsc::channel::<pb::ExecRequest>(16);
    let open = pb::ExecOpen {
        container: o.container.clone(),
        cmd: o.command.clone(),
        env,
        user: o.user.clone().unwrap_or_default(),
        working_dir: o.workdir.clone().unwrap_or_default(),
        tty: o.tty,
        stdin,
        detach: o.detach,
        size: if o.tty { attach::pb_size() } else { None },
    };
    tx.send(pb::ExecRequest { msg: Some(pb::exec_request::Msg::Open(open)) }).await.ok();
    let mut inbound = rt.exec(ReceiverStream::new(rx)).await.map_err(daemon_err)?.into_inner();
    match inbound.message().await.map_err(daemon_err)? {
        Some(pb::AttachResponse { msg: Some(pb::attach_response::Msg::Attached(_)) }) => {}
        _ => return Err(anyhow!("runtime-svc did not acknowledge the exec")),
    }
    if o.detach {
        // The stream ends here, unless the command could not be started.
        if let Ok(Some(pb::AttachResponse { msg: Some(pb::attach_response::Msg::Exit(e)) })) = inbound.message().await {
            eprintln!("berth: {}", e.error);
            return Ok(ExitCode::from((e.exit_code & 0xff) as u8));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let session = Session { tx: tx.clone(), mk: exec_req, stdin, tty: o.tty, detach_keys, sig_proxy: None };
    let outcome = session.run(&mut inbound).await?;
    drop(tx);
    match outcome {
        Outcome::Detached => {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            attach::finish(0, stdin)
        }
        Outcome::Exited(e) => {
            if !e.error.is_empty() {
                eprintln!("berth: {}", e.error);
            }
            attach::finish(e.exit_code, stdin)
        }
        Outcome::Lost(why) => {
            tty::restore();
            Err(anyhow!("lost the exec stream: {why}"))
        }
    }
}
