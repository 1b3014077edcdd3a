//! Container commands: `berth run`, `create`, `ps`, `start`, `stop`, `restart`, `kill`, `rm`,
//! `wait`, `container prune` (and the same under `berth container ...`).
//!
//! Everything goes through runtime-svc's gRPC API; a foreground `run` joins the container's
//! stdio over the Attach stream (so runtime-svc may be on another host).

mod attach;
mod exec;
mod firstrun;
mod logs;
mod port;
mod ps_filter;
mod run;
mod stats;
mod storage_flags;
mod top;
mod tty;

use crate::context::Context;
use crate::output::{ellipsis, human_duration, short_id, Table};
use anyhow::{anyhow, Result};
use berth_proto::runtime::v1 as pb;
use pb::runtime_client::RuntimeClient;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

pub use run::CreateOpts;

/// Container commands (flattened into the top level, as docker's).
#[derive(clap::Subcommand, Debug)]
pub enum ContainerCommand {
    #[command(flatten)]
    Lifecycle(Box<Lifecycle>),
    /// Return low-level information on containers or images.
    Inspect(super::inspect::InspectOpts),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerSub),
}

/// `berth container ...`
#[derive(clap::Subcommand, Debug)]
pub enum ContainerSub {
    #[command(flatten)]
    Lifecycle(Box<Lifecycle>),
    /// List containers.
    Ls(PsOpts),
    /// Display detailed information on one or more containers.
    Inspect(super::inspect::ContainerInspectOpts),
    /// Remove all stopped containers.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// The lifecycle commands, available at the top level and under `container`.
#[derive(clap::Subcommand, Debug)]
pub enum Lifecycle {
    /// Create and run a new container from an image.
    Run(run::RunOpts),
    /// Create a new container.
    Create(CreateOpts),
    /// List containers.
    Ps(PsOpts),
    /// Start one or more stopped containers.
    Start {
        /// Attach stdout/stderr and forward signals.
        #[arg(short, long)]
        attach: bool,
        /// Attach the container's stdin.
        #[arg(short, long)]
        interactive: bool,
        /// Override the key sequence for detaching a container.
        #[arg(long)]
        detach_keys: Option<String>,
        /// Containers (ID, ID prefix or name).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop one or more running containers.
    Stop {
        /// Seconds to wait before killing the container.
        #[arg(short = 't', long = "time", alias = "timeout")]
        time: Option<i32>,
        /// Signal to send (default: the container's stop signal).
        #[arg(short, long)]
        signal: Option<String>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart one or more containers.
    Restart {
        /// Seconds to wait before killing the container.
        #[arg(short = 't', long = "time", alias = "timeout")]
        time: Option<i32>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Kill one or more running containers.
    Kill {
        /// Signal to send.
        #[arg(short, long, default_value = "KILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove one or more containers.
    Rm {
        /// Force the removal of a running container (uses SIGKILL).
        #[arg(short, long)]
        force: bool,
        /// Remove anonymous volumes associated with the container.
        #[arg(short, long)]
        volumes: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List port mappings or a specific mapping for the container.
    Port(port::PortOpts),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(attach::AttachOpts),
    /// Execute a command in a running container.
    Exec(exec::ExecOpts),
    /// Fetch the logs of a container.
    Logs(logs::LogsOpts),
    /// Display the running processes of a container.
    Top(top::TopOpts),
    /// Display a live stream of container(s) resource usage statistics.
    Stats(stats::StatsOpts),
    /// Block until one or more containers stop, then print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
}

/// `berth ps` options.
#[derive(clap::Args, Debug)]
pub struct PsOpts {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
    /// Format output: "table" (default), "json" (one object per line) or a Go template
    /// such as '{{.ID}} {{.Names}}'.
    #[arg(long)]
    format: Option<String>,
    /// Filter output based on conditions provided (id=, name=, status=, label=KEY[=VALUE],
    /// ancestor=IMAGE, exited=CODE); repeat for several (same key: any matches; keys: all).
    #[arg(short, long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long = "last", default_value_t = -1, allow_negative_numbers = true)]
    last: i64,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    latest: bool,
}

pub async fn run(cmd: ContainerCommand, ctx: &Context) -> Result<ExitCode> {
    match cmd {
        ContainerCommand::Lifecycle(l) => lifecycle(*l, ctx).await,
        ContainerCommand::Container(ContainerSub::Lifecycle(l)) => lifecycle(*l, ctx).await,
        ContainerCommand::Container(ContainerSub::Ls(o)) => ps(ctx, o).await,
        ContainerCommand::Inspect(o) => super::inspect::inspect(ctx, o).await,
        ContainerCommand::Container(ContainerSub::Inspect(o)) => super::inspect::container_inspect(ctx, o).await,
        ContainerCommand::Container(ContainerSub::Prune { force }) => prune(ctx, force).await,
    }
}

async fn lifecycle(cmd: Lifecycle, ctx: &Context) -> Result<ExitCode> {
    match cmd {
        Lifecycle::Run(o) => run::run(ctx, o).await,
        Lifecycle::Create(o) => run::create(ctx, o).await,
        Lifecycle::Ps(o) => ps(ctx, o).await,
        Lifecycle::Port(o) => port::port(ctx, o).await,
        Lifecycle::Start { attach, interactive, detach_keys, containers } => {
            if attach || interactive {
                if containers.len() != 1 {
                    return Err(anyhow!("you cannot start and attach multiple containers at once"));
                }
                return run::start_attached(ctx, &containers[0], interactive, detach_keys.as_deref()).await;
            }
            let rt = client(ctx).await?;
            each(&containers, |c| {
                let mut rt = rt.clone();
                async move { rt.start(pb::StartRequest { container: c }).await.map(|_| ()) }
            })
            .await
            .map(code)
        }
        Lifecycle::Stop { time, signal, containers } => {
            let rt = client(ctx).await?;
            each(&containers, |c| {
                let mut rt = rt.clone();
                let signal = signal.clone().unwrap_or_default();
                async move {
                    rt.stop(pb::StopRequest { container: c, timeout_seconds: time.unwrap_or(-1), signal })
                        .await
                        .map(|_| ())
                }
            })
            .await
            .map(code)
        }
        Lifecycle::Restart { time, containers } => {
            let rt = client(ctx).await?;
            each(&containers, |c| {
                let mut rt = rt.clone();
                async move {
                    rt.stop(pb::StopRequest {
                        container: c.clone(),
                        timeout_seconds: time.unwrap_or(-1),
                        signal: String::new(),
                    })
                    .await?;
                    rt.start(pb::StartRequest { container: c }).await.map(|_| ())
                }
            })
            .await
            .map(code)
        }
        Lifecycle::Kill { signal, containers } => {
            let rt = client(ctx).await?;
            each(&containers, |c| {
                let mut rt = rt.clone();
                let signal = signal.clone();
                async move { rt.kill(pb::KillRequest { container: c, signal }).await.map(|_| ()) }
            })
            .await
            .map(code)
        }
        Lifecycle::Rm { force, volumes, containers } => {
            let rt = client(ctx).await?;
            each(&containers, |c| {
                let mut rt = rt.clone();
                async move { rt.remove(pb::RemoveRequest { container: c, force, volumes }).await.map(|_| ()) }
            })
            .await
            .map(code)
        }
        Lifecycle::Attach(o) => attach::attach(ctx, o).await,
        Lifecycle::Exec(o) => exec::exec(ctx, o).await,
        Lifecycle::Top(o) => top::top(ctx, o).await,
        Lifecycle::Stats(o) => stats::stats(ctx, o).await,
        Lifecycle::Logs(o) => logs::logs(ctx, o).await,
        Lifecycle::Wait { containers } => {
            let rt = client(ctx).await?;
            let mut ok = true;
            for c in containers {
                let mut rt = rt.clone();
                match rt.wait(pb::WaitRequest { container: c, condition: pb::WaitCondition::NotRunning as i32 }).await {
                    Ok(r) => println!("{}", r.into_inner().exit_code),
                    Err(e) => {
                        eprintln!("Error response from daemon: {}", e.message());
                        ok = false;
                    }
                }
            }
            Ok(code(ok))
        }
    }
}

fn code(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// A runtime-svc client with generous message limits.
pub(crate) async fn client(ctx: &Context) -> Result<RuntimeClient<Channel>> {
    let ch = ctx.runtime().await?;
    Ok(RuntimeClient::new(ch).max_decoding_message_size(64 << 20))
}

/// Runs `op` for each container (several at once, as docker's CLI does), printing each name
/// in the order given on success and docker's "Error response from daemon" line on failure;
/// true when all succeeded.
async fn each<F, Fut>(containers: &[String], op: F) -> Result<bool>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>>,
{
    use futures::StreamExt;
    let mut results = futures::stream::iter(containers.iter().map(|c| {
        let fut = op(c.clone());
        async move { (c, fut.await) }
    }))
    .buffered(8);
    let mut ok = true;
    while let Some((c, r)) = results.next().await {
        match r {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("Error response from daemon: {}", e.message());
                ok = false;
            }
        }
    }
    Ok(ok)
}

fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn ago(nanos: i64) -> String {
    human_duration(Duration::from_nanos(now_nanos().saturating_sub(nanos).max(0) as u64))
}

/// docker's column headers of `ps --format "table …"` fields.
const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Networks", "NETWORKS"),
];

/// docker's STATUS column: "Created", "Up 5 minutes", "Exited (0) 2 minutes ago".
pub fn status_text(c: &pb::Container) -> String {
    if c.restarting {
        return format!("Restarting ({}) {} ago", c.exit_code, ago(c.finished_at_unix_nanos));
    }
    match pb::ContainerStatus::try_from(c.status).unwrap_or(pb::ContainerStatus::Unspecified) {
        pb::ContainerStatus::Running => format!("Up {}", ago(c.started_at_unix_nanos)),
        pb::ContainerStatus::Exited => format!("Exited ({}) {} ago", c.exit_code, ago(c.finished_at_unix_nanos)),
        pb::ContainerStatus::Removing => "Removal In Progress".into(),
        _ => "Created".into(),
    }
}

/// docker's State: "created", "running", "restarting", "exited", "removing" (`ps --format
/// {{.State}}`, `inspect`'s `.State.Status`).
pub fn state_text(c: &pb::Container) -> &'static str {
    if c.restarting {
        return "restarting";
    }
    match pb::ContainerStatus::try_from(c.status).unwrap_or(pb::ContainerStatus::Unspecified) {
        pb::ContainerStatus::Running => "running",
        pb::ContainerStatus::Exited => "exited",
        pb::ContainerStatus::Removing => "removing",
        _ => "created",
    }
}

/// The COMMAND column: the argv joined by spaces, quoted, cut at 20 characters unless --no-trunc.
fn command_text(c: &pb::Container, no_trunc: bool) -> String {
    let cmd = c.command.join(" ");
    if no_trunc {
        format!("\"{cmd}\"")
    } else {
        format!("\"{}\"", ellipsis(&cmd, 20))
    }
}

async fn ps(ctx: &Context, o: PsOpts) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    let filters = ps_filter::Filters::parse(&o.filter)?;
    let last = if o.latest { 1 } else { o.last };
    let all = o.all || last >= 0 || filters.wants_all();
    let mut list = rt.list(pb::ListRequest { all }).await.map_err(daemon_err)?.into_inner().containers;
    list.retain(|c| filters.matches(c, state_text(c)));
    if last >= 0 {
        list.sort_by_key(|c| std::cmp::Reverse(c.created_at_unix_nanos));
        list.truncate(last as usize);
    }
    let id = |c: &pb::Container| if o.no_trunc { c.id.clone() } else { short_id(&c.id) };
    let mut out = std::io::stdout().lock();
    if o.quiet {
        for c in &list {
            writeln!(out, "{}", id(c))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let format = o.format.as_deref().filter(|f| !f.is_empty());
    match format {
        Some(f) if f != "table" => {
            let mut values = Vec::new();
            for c in &list {
                let labels: Vec<String> = c
                    .config
                    .as_ref()
                    .map(|k| k.labels.iter().map(|(a, b)| format!("{a}={b}")).collect())
                    .unwrap_or_default();
                let v = serde_json::json!({
                    "Command": command_text(c, o.no_trunc),
                    "CreatedAt": created_at(c.created_at_unix_nanos),
                    "ID": id(c),
                    "Image": c.image,
                    "Labels": labels.join(","),
                    "LocalVolumes": "0",
                    "Mounts": "",
                    "Names": c.name,
                    "Networks": c.network,
                    "Ports": port::ports_text(c),
                    "RunningFor": format!("{} ago", ago(c.created_at_unix_nanos)),
                    "Size": "0B",
                    "State": state_text(c),
                    "Status": status_text(c),
                });
                values.push(v);
            }
            if let Some(f) = format {
                let text = crate::gotemplate::render_list(f, &values, PS_HEADERS).map_err(|e| anyhow!("{e}"))?;
                write!(out, "{text}")?;
            }
        }
        _ => {
            let mut t = Table::new(["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]);
            for c in &list {
                t.row([
                    id(c),
                    c.image.clone(),
                    command_text(c, o.no_trunc),
                    format!("{} ago", ago(c.created_at_unix_nanos)),
                    status_text(c),
                    port::ports_text(c),
                    c.name.clone(),
                ]);
            }
            write!(out, "{t}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// "2026-11-22 16:40:00 +0000 UTC", as docker's CreatedAt (in `ps` and `network ls` formats).
pub fn created_at(nanos: i64) -> String {
    let secs = nanos / 1_000_000_000;
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => String::new(),
    }
}

async fn prune(ctx: &Context, force: bool) -> Result<ExitCode> {
    if !force {
        eprint!("WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ");
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let mut rt = client(ctx).await?;
    let removed = rt.prune(pb::PruneRequest {}).await.map_err(daemon_err)?.into_inner().removed;
    if !removed.is_empty() {
        println!("Deleted Containers:");
        for id in &removed {
            println!("{id}");
        }
        println!();
    }
    println!("Total reclaimed space: 0B");
    Ok(ExitCode::SUCCESS)
}

/// docker's wording for an error that came from the daemon.
pub(crate) fn daemon_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("Error response from daemon: {}", s.message())
}
