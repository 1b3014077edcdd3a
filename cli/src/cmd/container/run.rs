//! `berth run` and `berth create`: turn docker's flags into a Create request, pull the image
//! when the store lacks it, show unpack progress, and for a foreground run join the container's
//! stdio over the Attach stream before starting it, exiting with the container's code.

use super::{client, daemon_err};
use crate::context::Context;
use crate::output::{human_size, parse_size, short_id};
use anyhow::{anyhow, Context as _, Result};
use berth_proto::runtime::v1 as pb;
use pb::runtime_client::RuntimeClient;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Flags shared by `run` and `create` (docker's names).
#[derive(clap::Args, Debug, Clone)]
pub struct CreateOpts {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to take it from this environment).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container host name.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 64m, 1g).
    #[arg(short, long)]
    pub memory: Option<String>,
    /// Number of CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Tune container pids limit.
    #[arg(long)]
    pub pids_limit: Option<i64>,
    /// Signal to stop the container.
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Set metadata on a container (KEY=VALUE).
    #[arg(short, long = "label")]
    pub label: Vec<String>,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY (not supported yet).
    #[arg(short, long)]
    pub tty: bool,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// The image to run.
    pub image: String,
    /// The command and its arguments (replaces the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `berth run` flags.
#[derive(clap::Args, Debug)]
pub struct RunOpts {
    /// Run the container in the background and print its ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Proxy received signals to the container.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    #[command(flatten)]
    pub create: CreateOpts,
}

impl CreateOpts {
    fn request(&self) -> Result<pb::CreateRequest> {
        if self.tty {
            return Err(anyhow!("-t (a pseudo-TTY) is not supported yet; run without -t"));
        }
        let mut env = Vec::new();
        for f in &self.env_file {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading env file {}", f.display()))?;
            for line in text.lines() {
                let line = line.trim_start();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                env.extend(env_entry(line));
            }
        }
        for e in &self.env {
            env.extend(env_entry(e));
        }
        let mut labels = HashMap::new();
        for l in &self.label {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            labels.insert(k.to_string(), v.to_string());
        }
        let memory_bytes = match &self.memory {
            Some(m) => parse_size(m).map_err(anyhow::Error::msg)? as i64,
            None => 0,
        };
        let nano_cpus = match self.cpus {
            Some(c) if !(0.0..=1024.0).contains(&c) => return Err(anyhow!("invalid --cpus {c}")),
            Some(c) => (c * 1e9) as i64,
            None => 0,
        };
        Ok(pb::CreateRequest {
            image: self.image.clone(),
            name: self.name.clone().unwrap_or_default(),
            config: Some(pb::ContainerConfig {
                entrypoint: self
                    .entrypoint
                    .as_ref()
                    .map(|e| pb::StringList { values: if e.is_empty() { vec![] } else { vec![e.clone()] } }),
                cmd: self.command.clone(),
                env,
                working_dir: self.workdir.clone().unwrap_or_default(),
                user: self.user.clone().unwrap_or_default(),
                hostname: self.hostname.clone().unwrap_or_default(),
                open_stdin: self.interactive,
                tty: self.tty,
                stop_signal: self.stop_signal.clone().unwrap_or_default(),
                labels,
            }),
            host_config: Some(pb::HostConfig {
                memory_bytes,
                nano_cpus,
                pids_limit: self.pids_limit.unwrap_or(0),
                auto_remove: self.rm,
            }),
        })
    }
}

/// `K=V` as is; a bare `K` takes this process's value, or is dropped when unset (docker).
fn env_entry(e: &str) -> Option<String> {
    if e.contains('=') {
        return Some(e.to_string());
    }
    std::env::var(e).ok().map(|v| format!("{e}={v}"))
}

/// `berth create`: prints the new container's full ID.
pub async fn create(ctx: &Context, o: CreateOpts) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    let c = create_container(ctx, &mut rt, o.request()?).await?;
    println!("{}", c.id);
    Ok(ExitCode::SUCCESS)
}

/// `berth run`.
pub async fn run(ctx: &Context, o: RunOpts) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    let c = create_container(ctx, &mut rt, o.create.request()?).await?;
    if o.detach {
        if let Err(e) = rt.start(pb::StartRequest { container: c.id.clone() }).await {
            return start_failed(&mut rt, &c.id, e, o.create.rm).await;
        }
        println!("{}", c.id);
        return Ok(ExitCode::SUCCESS);
    }
    attach_and_start(&mut rt, &c.id, o.create.interactive, true, o.create.rm, o.sig_proxy).await
}

/// `berth start -a [-i] CONTAINER`.
pub async fn start_attached(ctx: &Context, container: &str, interactive: bool) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    let c = rt.inspect(pb::InspectRequest { container: container.to_string() }).await.map_err(daemon_err)?;
    let c = c.into_inner().container.unwrap_or_default();
    attach_and_start(&mut rt, &c.id, interactive, true, false, true).await
}

/// Creates the container, pulling the image first when the store lacks it.
async fn create_container(
    ctx: &Context,
    rt: &mut RuntimeClient<Channel>,
    req: pb::CreateRequest,
) -> Result<pb::Container> {
    match try_create(rt, req.clone()).await {
        Err(e) if e.code() == tonic::Code::NotFound && e.message().starts_with("No such image") => {
            pull(ctx, &req.image).await?;
            try_create(rt, req).await.map_err(daemon_err)
        }
        r => r.map_err(daemon_err),
    }
}

/// Pulls an image through registry-svc (the image commands' `ensure_image`, which says
/// "Unable to find image ... locally" and shows the pull's progress).
async fn pull(ctx: &Context, image: &str) -> Result<()> {
    crate::cmd::image::ensure_image(ctx, image, None).await.map(|_| ())
}

/// Runs Create and renders its layer progress on stderr.
async fn try_create(rt: &mut RuntimeClient<Channel>, req: pb::CreateRequest) -> Result<pb::Container, tonic::Status> {
    let mut stream = rt.create(req).await?.into_inner();
    let tty = std::io::stderr().is_terminal();
    let mut layers: Vec<(String, i64, i64, bool)> = Vec::new();
    let mut drew = false;
    while let Some(ev) = stream.message().await? {
        match ev.event {
            Some(pb::create_event::Event::Layer(p)) => {
                let done = p.status == "done";
                let idx = match layers.iter().position(|l| l.0 == p.digest) {
                    Some(i) => i,
                    None => {
                        if done {
                            // Already unpacked: nothing to show.
                            layers.push((p.digest.clone(), p.total, p.total, true));
                            continue;
                        }
                        layers.push((p.digest.clone(), 0, p.total, false));
                        layers.len() - 1
                    }
                };
                let was_done = layers[idx].3;
                layers[idx] = (p.digest.clone(), p.current, p.total, done);
                if tty {
                    let busy: Vec<&(String, i64, i64, bool)> = layers.iter().filter(|l| !l.3).collect();
                    let cur: i64 = layers.iter().map(|l| l.1).sum();
                    let tot: i64 = layers.iter().map(|l| l.2).sum();
                    eprint!(
                        "\r\x1b[2KUnpacking {} layer(s): {} / {}",
                        busy.len(),
                        human_size(cur.max(0) as u64),
                        human_size(tot.max(0) as u64)
                    );
                    drew = true;
                } else if done && !was_done {
                    eprintln!("{}: Unpacked {}", short_id(&p.digest), human_size(p.total.max(0) as u64));
                }
            }
            Some(pb::create_event::Event::Created(c)) => {
                if drew {
                    eprintln!();
                }
                return Ok(c);
            }
            None => {}
        }
    }
    Err(tonic::Status::internal("runtime-svc ended Create without a result"))
}

/// Reports a failed start the way docker does and returns its exit code (125/126/127).
async fn start_failed(rt: &mut RuntimeClient<Channel>, id: &str, e: tonic::Status, rm: bool) -> Result<ExitCode> {
    let code = match rt.inspect(pb::InspectRequest { container: id.to_string() }).await {
        Ok(r) => r.into_inner().container.map(|c| c.exit_code).filter(|c| *c != 0).unwrap_or(125),
        Err(_) => 125,
    };
    eprintln!("berth: Error response from daemon: {}", e.message());
    if rm {
        let _ = rt.remove(pb::RemoveRequest { container: id.to_string(), force: true }).await;
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Joins the container's stdio (stdout/stderr kept apart, stdin piped with `-i`), starts it,
/// relays until it exits and returns its exit code.
async fn attach_and_start(
    rt: &mut RuntimeClient<Channel>,
    id: &str,
    stdin: bool,
    start: bool,
    rm: bool,
    sig_proxy: bool,
) -> Result<ExitCode> {
    let (tx, rx) = mpsc::channel::<pb::AttachRequest>(16);
    let open = pb::AttachOpen { container: id.to_string(), stdin, stdout: true, stderr: true, size: None };
    tx.send(pb::AttachRequest { msg: Some(pb::attach_request::Msg::Open(open)) }).await.ok();
    let mut inbound = rt.attach(ReceiverStream::new(rx)).await.map_err(daemon_err)?.into_inner();
    match inbound.message().await.map_err(daemon_err)? {
        Some(pb::AttachResponse { msg: Some(pb::attach_response::Msg::Attached(_)) }) => {}
        _ => return Err(anyhow!("runtime-svc did not acknowledge the attach")),
    }
    if start {
        if let Err(e) = rt.start(pb::StartRequest { container: id.to_string() }).await {
            return start_failed(rt, id, e, rm).await;
        }
    }
    if stdin {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ =
                            tx.send(pb::AttachRequest { msg: Some(pb::attach_request::Msg::CloseStdin(true)) }).await;
                        break;
                    }
                    Ok(n) => {
                        let m = pb::AttachRequest { msg: Some(pb::attach_request::Msg::Stdin(buf[..n].to_vec())) };
                        if tx.send(m).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
    if sig_proxy {
        let mut rt2 = rt.clone();
        let id2 = id.to_string();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                };
                let _ = rt2.kill(pb::KillRequest { container: id2.clone(), signal: sig.into() }).await;
            }
        });
    }
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let mut exit: Option<pb::ExitStatus> = None;
    loop {
        match inbound.message().await {
            Ok(Some(m)) => match m.msg {
                Some(pb::attach_response::Msg::Stdout(d)) => {
                    let _ = out.write_all(&d).await;
                    let _ = out.flush().await;
                }
                Some(pb::attach_response::Msg::Stderr(d)) => {
                    let _ = err.write_all(&d).await;
                    let _ = err.flush().await;
                }
                Some(pb::attach_response::Msg::Exit(e)) => {
                    exit = Some(e);
                    break;
                }
                _ => {}
            },
            Ok(None) => break,
            Err(e) => {
                eprintln!("berth: lost the attach stream: {}", e.message());
                break;
            }
        }
    }
    drop(tx);
    let code = match exit {
        Some(e) => e.exit_code,
        None => match rt
            .wait(pb::WaitRequest { container: id.to_string(), condition: pb::WaitCondition::NotRunning as i32 })
            .await
        {
            Ok(w) => w.into_inner().exit_code,
            Err(e) => return Err(daemon_err(e)),
        },
    };
    // Return once runtime-svc has recorded the exit (and removed the container with --rm), so
    // that a `ps` right after shows what happened, as docker's CLI does.
    let cond = if rm { pb::WaitCondition::Removed } else { pb::WaitCondition::NotRunning };
    let _ = rt.wait(pb::WaitRequest { container: id.to_string(), condition: cond as i32 }).await;
    let _ = out.flush().await;
    if stdin {
        // A blocking read of our stdin may still be pending; do not wait for it.
        std::process::exit(code & 0xff);
    }
    Ok(ExitCode::from((code & 0xff) as u8))
}
