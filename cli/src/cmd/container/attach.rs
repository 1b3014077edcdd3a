//! Interactive sessions over runtime-svc's bidirectional streams (Attach, and Exec which has
//! the same shape): stdin relayed (with docker's detach keys on a TTY), stdout and stderr kept
//! apart, the window size at start and on every SIGWINCH, signals proxied without a TTY, raw
//! mode on the client's terminal while the container has a TTY. Also `berth attach` and the
//! attached start of `run`/`start -a`.

use super::tty::{self, Escape, RawMode};
use super::{client, daemon_err};
use crate::context::Context;
use anyhow::{anyhow, Result};
use berth_proto::runtime::v1 as pb;
use pb::runtime_client::RuntimeClient;
use std::io::IsTerminal;
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Client → container, whatever the stream's request type.
pub enum Input {
    /// Stdin bytes.
    Stdin(Vec<u8>),
    /// Stdin ended.
    Close,
    /// New terminal size (columns, rows).
    Resize(u16, u16),
}

/// How a session ended.
pub enum Outcome {
    /// The process exited.
    Exited(pb::ExitStatus),
    /// The user typed the detach keys; the process runs on.
    Detached,
    /// The stream ended without an exit (runtime-svc went away).
    Lost(String),
}

/// What a session relays.
pub struct Session<R> {
    /// Requests to the server.
    pub tx: mpsc::Sender<R>,
    /// Builds a request from an input.
    pub mk: fn(Input) -> R,
    /// Relay our stdin.
    pub stdin: bool,
    /// The process has a pty.
    pub tty: bool,
    /// The detach sequence (empty: none).
    pub detach_keys: Vec<u8>,
    /// Forward SIGINT/SIGTERM to this container (without a TTY, as docker's --sig-proxy).
    pub sig_proxy: Option<(RuntimeClient<Channel>, String)>,
}

/// The terminal size as the proto carries it.
pub fn pb_size() -> Option<pb::TerminalSize> {
    tty::size().map(|(w, h)| pb::TerminalSize { width: w.into(), height: h.into() })
}

/// docker's check: `-it` needs a terminal on stdin.
pub fn check_input_tty(stdin: bool, tty: bool) -> Result<()> {
    if stdin && tty && !std::io::stdin().is_terminal() {
        return Err(anyhow!("the input device is not a TTY"));
    }
    Ok(())
}

impl<R: Send + 'static> Session<R> {
    /// Relays until the exit, a detach or the end of the stream. The terminal is restored
    /// before this returns.
    pub async fn run(self, inbound: &mut tonic::Streaming<pb::AttachResponse>) -> Result<Outcome> {
        let raw = if self.tty && self.stdin { RawMode::enable() } else { None };
        let (detach_tx, mut detach_rx) = mpsc::channel::<()>(1);
        let mut tasks = Vec::new();
        if self.stdin {
            let (tx, mk) = (self.tx.clone(), self.mk);
            let mut esc = Escape::new(if self.tty { self.detach_keys.clone() } else { vec![] });
            tasks.push(tokio::spawn(async move {
                let mut input = tokio::io::stdin();
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match input.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            let _ = tx.send(mk(Input::Close)).await;
                            break;
                        }
                        Ok(n) => {
                            let (data, detach) = esc.feed(&buf[..n]);
                            if !data.is_empty() && tx.send(mk(Input::Stdin(data))).await.is_err() {
                                break;
                            }
                            if detach {
                                let _ = detach_tx.send(()).await;
                                break;
                            }
                        }
                    }
                }
            }));
        }
        if self.tty {
            let (tx, mk) = (self.tx.clone(), self.mk);
            tasks.push(tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut winch) = signal(SignalKind::window_change()) else { return };
                while winch.recv().await.is_some() {
                    if let Some((w, h)) = tty::size() {
                        if tx.send(mk(Input::Resize(w, h))).await.is_err() {
                            break;
                        }
                    }
                }
            }));
        }
        if let (Some((rt, id)), false) = (self.sig_proxy.clone(), self.tty) {
            tasks.push(tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let mut rt = rt;
                let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    return;
                };
                loop {
                    let sig = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    };
                    let _ = rt.kill(pb::KillRequest { container: id.clone(), signal: sig.into() }).await;
                }
            }));
        }
        let mut out = tokio::io::stdout();
        let mut err = tokio::io::stderr();
        let outcome = loop {
            let msg = tokio::select! {
                m = inbound.message() => m,
                // (None: stdin ended without the detach keys; that branch is then disabled.)
                Some(()) = detach_rx.recv() => break Outcome::Detached,
            };
            match msg {
                Ok(Some(m)) => match m.msg {
                    Some(pb::attach_response::Msg::Stdout(d)) => {
                        let _ = out.write_all(&d).await;
                        let _ = out.flush().await;
                    }
                    Some(pb::attach_response::Msg::Stderr(d)) => {
                        let _ = err.write_all(&d).await;
                        let _ = err.flush().await;
                    }
                    Some(pb::attach_response::Msg::Exit(e)) => break Outcome::Exited(e),
                    _ => {}
                },
                Ok(None) => break Outcome::Lost("the stream ended".into()),
                Err(e) => break Outcome::Lost(e.message().to_string()),
            }
        };
        for t in tasks {
            t.abort();
        }
        drop(raw);
        let _ = out.flush().await;
        Ok(outcome)
    }
}

fn attach_req(i: Input) -> pb::AttachRequest {
    use pb::attach_request::Msg;
    pb::AttachRequest {
        msg: Some(match i {
            Input::Stdin(d) => Msg::Stdin(d),
            Input::Close => Msg::CloseStdin(true),
            Input::Resize(w, h) => Msg::Resize(pb::TerminalSize { width: w.into(), height: h.into() }),
        }),
    }
}

/// Which streams an attached run/start/attach joins, and how.
pub struct Plan {
    /// Relay stdin (the container must have been created with -i).
    pub stdin: bool,
    /// Receive stdout.
    pub stdout: bool,
    /// Receive stderr.
    pub stderr: bool,
    /// Start the container once joined (run, start -a).
    pub start: bool,
    /// The container is removed on exit (--rm): wait for that.
    pub rm: bool,
    /// Forward SIGINT/SIGTERM (non-TTY only).
    pub sig_proxy: bool,
    /// Detach sequence.
    pub detach_keys: Vec<u8>,
}

/// Joins the container's stdio, starts it if asked, relays until it exits (or the user
/// detaches) and returns the exit code, as docker's run/start -a/attach.
pub async fn attach_and_start(rt: &mut RuntimeClient<Channel>, id: &str, p: Plan) -> Result<ExitCode> {
    let (tx, rx) = mpsc::channel::<pb::AttachRequest>(16);
    let open = pb::AttachOpen {
        container: id.to_string(),
        stdin: p.stdin,
        stdout: p.stdout,
        stderr: p.stderr,
        size: pb_size(),
    };
    tx.send(pb::AttachRequest { msg: Some(pb::attach_request::Msg::Open(open)) }).await.ok();
    let mut inbound = rt.attach(ReceiverStream::new(rx)).await.map_err(daemon_err)?.into_inner();
    let tty = match inbound.message().await.map_err(daemon_err)? {
        Some(pb::AttachResponse { msg: Some(pb::attach_response::Msg::Attached(a)) }) => a.tty,
        _ => return Err(anyhow!("runtime-svc did not acknowledge the attach")),
    };
    if p.start {
        if let Err(e) = rt.start(pb::StartRequest { container: id.to_string() }).await {
            return super::run::start_failed(rt, id, e, p.rm).await;
        }
    }
    let session = Session {
        tx: tx.clone(),
        mk: attach_req,
        stdin: p.stdin,
        tty,
        detach_keys: p.detach_keys,
        sig_proxy: p.sig_proxy.then(|| (rt.clone(), id.to_string())),
    };
    let outcome = session.run(&mut inbound).await?;
    drop(tx);
    let code = match outcome {
        Outcome::Detached => {
            // Give keystrokes typed just before the detach keys a moment to leave.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            return finish(0, p.stdin);
        }
        Outcome::Exited(e) => {
            if !e.error.is_empty() && !p.start {
                eprintln!("berth: {}", e.error);
            }
            e.exit_code
        }
        Outcome::Lost(why) => {
            eprintln!("berth: lost the attach stream: {why}");
            match rt
                .wait(pb::WaitRequest { container: id.to_string(), condition: pb::WaitCondition::NotRunning as i32 })
                .await
            {
                Ok(w) => w.into_inner().exit_code,
                Err(e) => return Err(daemon_err(e)),
            }
        }
    };
    // Return once runtime-svc has recorded the exit (and removed the container with --rm), so
    // that a `ps` right after shows what happened, as docker's CLI does.
    let cond = if p.rm { pb::WaitCondition::Removed } else { pb::WaitCondition::NotRunning };
    let _ = rt.wait(pb::WaitRequest { container: id.to_string(), condition: cond as i32 }).await;
    finish(code, p.stdin)
}

/// The exit: with stdin relayed a blocking read of it may still be pending, so leave at once
/// (after restoring the terminal).
pub fn finish(code: i32, stdin: bool) -> Result<ExitCode> {
    tty::restore();
    if stdin {
        std::process::exit(code & 0xff);
    }
    Ok(ExitCode::from((code & 0xff) as u8))
}

/// `berth attach` options.
#[derive(clap::Args, Debug)]
pub struct AttachOpts {
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Do not attach STDIN.
    #[arg(long)]
    pub no_stdin: bool,
    /// Proxy all received signals to the process.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// The container (ID, ID prefix or name).
    pub container: String,
}

/// `berth attach CONTAINER`: joins a running container's stdio.
pub async fn attach(ctx: &Context, o: AttachOpts) -> Result<ExitCode> {
    let detach_keys = tty::parse_detach_keys(o.detach_keys.as_deref().unwrap_or(tty::DEFAULT_DETACH_KEYS))?;
    let mut rt = client(ctx).await?;
    let c = rt.inspect(pb::InspectRequest { container: o.container.clone() }).await.map_err(daemon_err)?;
    let c = c.into_inner().container.unwrap_or_default();
    if c.status != pb::ContainerStatus::Running as i32 {
        return Err(anyhow!("You cannot attach to a stopped container, start it first"));
    }
    let cfg = c.config.clone().unwrap_or_default();
    let stdin = cfg.open_stdin && !o.no_stdin;
    check_input_tty(stdin, cfg.tty)?;
    let plan = Plan { stdin, stdout: true, stderr: true, start: false, rm: false, sig_proxy: o.sig_proxy, detach_keys };
    attach_and_start(&mut rt, &c.id, plan).await
}
