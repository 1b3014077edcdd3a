//! `berth run` and `berth create`: turn docker's flags into a Create request, pull the image
//! when the store lacks it, show unpack progress, and for a foreground run join the container's
//! stdio over the Attach stream before starting it, exiting with the container's code.

use super::{attach, client, daemon_err, tty};
use crate::context::Context;
use crate::output::{human_size, parse_size, short_id};
use anyhow::{anyhow, Context as _, Result};
use berth_proto::runtime::v1 as pb;
use pb::runtime_client::RuntimeClient;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
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
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Logging driver (only "json-file").
    #[arg(long)]
    pub log_driver: Option<String>,
    /// Log driver options (max-size=10m, max-file=3).
    #[arg(long)]
    pub log_opt: Vec<String>,
    /// Automatically remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Bind mount a volume: /host:/ctr[:ro], name:/ctr[:ro] or /ctr (anonymous volume).
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=…,target=…[,readonly].
    #[arg(long)]
    pub mount: Vec<String>,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    pub read_only: bool,
    /// Mount a tmpfs directory: /path[:options].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// Restart policy: no, on-failure[:max-retries], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Connect the container to a network: bridge (default), host, none, or a network's name.
    #[arg(long = "network", alias = "net")]
    pub network: Option<String>,
    /// Publish a container's port(s) to the host: [ip:][hostPort:]containerPort[/proto], ports
    /// may be ranges (8080-8081:80-81); no host port means a random one.
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs to a random host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports (80, 53/udp, 7000-7001/tcp) besides the image's EXPOSE.
    #[arg(long = "expose")]
    pub expose: Vec<String>,
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
    /// Attach to STDIN, STDOUT or STDERR (repeatable; default: STDOUT and STDERR, and STDIN
    /// with -i).
    #[arg(short, long = "attach")]
    pub attach: Vec<String>,
    /// Override the key sequence for detaching a container.
    #[arg(long)]
    pub detach_keys: Option<String>,
    #[command(flatten)]
    pub create: CreateOpts,
}

impl CreateOpts {
    fn request(&self) -> Result<pb::CreateRequest> {
        if let Some(d) = self.log_driver.as_deref().filter(|d| *d != "json-file") {
            return Err(anyhow!("logging driver {d:?} is not supported: only json-file"));
        }
        let mut log_opts = HashMap::new();
        for kv in &self.log_opt {
            let (k, v) = kv.split_once('=').ok_or_else(|| anyhow!("invalid log opt {kv:?}: use key=value"))?;
            log_opts.insert(k.to_string(), v.to_string());
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
        let mut req = pb::CreateRequest {
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
                exposed_ports: parse_all(&self.expose, super::port::parse_expose)?,
                ..Default::default()
            }),
            host_config: Some(pb::HostConfig {
                memory_bytes,
                nano_cpus,
                pids_limit: self.pids_limit.unwrap_or(0),
                auto_remove: self.rm,
                network_mode: self.network.clone().unwrap_or_default(),
                port_bindings: parse_all(&self.publish, super::port::parse_publish)?,
                publish_all_ports: self.publish_all,
                binds: self.volume.clone(),
                mounts: self.mount.iter().map(|m| super::storage_flags::parse_mount(m)).collect::<Result<_>>()?,
                readonly_rootfs: self.read_only,
                tmpfs: super::storage_flags::parse_tmpfs(&self.tmpfs),
                restart_policy: self.restart.as_deref().map(super::storage_flags::parse_restart).transpose()?,
                ..Default::default()
            }),
        };
        if let Some(h) = req.host_config.as_mut() {
            h.log_opts = log_opts;
        }
        Ok(req)
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
    let plan = run_plan(&o)?;
    let mut rt = client(ctx).await?;
    let c = create_container(ctx, &mut rt, o.create.request()?).await?;
    if o.detach {
        if let Err(e) = rt.start(pb::StartRequest { container: c.id.clone() }).await {
            return start_failed(&mut rt, &c.id, e, o.create.rm).await;
        }
        println!("{}", c.id);
        return Ok(ExitCode::SUCCESS);
    }
    attach::attach_and_start(&mut rt, &c.id, plan).await
}

/// `berth start -a [-i] CONTAINER`.
pub async fn start_attached(
    ctx: &Context,
    container: &str,
    interactive: bool,
    detach_keys: Option<&str>,
) -> Result<ExitCode> {
    let detach_keys = tty::parse_detach_keys(detach_keys.unwrap_or(tty::DEFAULT_DETACH_KEYS))?;
    let mut rt = client(ctx).await?;
    let c = rt.inspect(pb::InspectRequest { container: container.to_string() }).await.map_err(daemon_err)?;
    let c = c.into_inner().container.unwrap_or_default();
    let cfg = c.config.clone().unwrap_or_default();
    let stdin = interactive && cfg.open_stdin;
    attach::check_input_tty(stdin, cfg.tty)?;
    let plan = attach::Plan { stdin, stdout: true, stderr: true, start: true, rm: false, sig_proxy: true, detach_keys };
    attach::attach_and_start(&mut rt, &c.id, plan).await
}

/// Creates the container, pulling the image first when the store lacks it.
async fn create_container(
    ctx: &Context,
    rt: &mut RuntimeClient<Channel>,
    req: pb::CreateRequest,
) -> Result<pb::Container> {
    match try_create(rt, req.clone()).await {
        Err(e) if e.code() == tonic::Code::NotFound && e.message().starts_with("No such image") => {
            // Pulls while runtime-svc unpacks each layer as it lands (see firstrun.rs).
            super::firstrun::pull_and_unpack(ctx, rt, &req.image).await?;
            try_create(rt, req).await.map_err(daemon_err)
        }
        r => r.map_err(daemon_err),
    }
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
pub(super) async fn start_failed(
    rt: &mut RuntimeClient<Channel>,
    id: &str,
    e: tonic::Status,
    rm: bool,
) -> Result<ExitCode> {
    let code = match rt.inspect(pb::InspectRequest { container: id.to_string() }).await {
        Ok(r) => r.into_inner().container.map(|c| c.exit_code).filter(|c| *c != 0).unwrap_or(125),
        Err(_) => 125,
    };
    eprintln!("berth: Error response from daemon: {}", e.message());
    if rm {
        let _ = rt.remove(pb::RemoveRequest { container: id.to_string(), force: true, volumes: true }).await;
    }
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Which streams a foreground `run` joins (docker's -a/-i/-t rules).
fn run_plan(o: &RunOpts) -> Result<attach::Plan> {
    let detach_keys = tty::parse_detach_keys(o.detach_keys.as_deref().unwrap_or(tty::DEFAULT_DETACH_KEYS))?;
    if o.detach && !o.attach.is_empty() {
        return Err(anyhow!("Conflicting options: -a and -d"));
    }
    let (mut stdin, mut stdout, mut stderr) = (o.create.interactive, true, true);
    if !o.attach.is_empty() {
        (stdin, stdout, stderr) = (false, false, false);
        for a in &o.attach {
            match a.to_ascii_lowercase().as_str() {
                // Without -i the container's stdin stays closed (as docker).
                "stdin" => stdin = o.create.interactive,
                "stdout" => stdout = true,
                "stderr" => stderr = true,
                _ => {
                    return Err(anyhow!(
                        "invalid argument \"{a}\" for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR"
                    ))
                }
            }
        }
    }
    if !o.detach {
        attach::check_input_tty(stdin, o.create.tty)?;
    }
    Ok(attach::Plan { stdin, stdout, stderr, start: true, rm: o.create.rm, sig_proxy: o.sig_proxy, detach_keys })
}

/// Each value of a repeated flag parsed by `parse` (which may expand one value into several,
/// e.g. a port range), in order.
fn parse_all<T>(values: &[String], parse: fn(&str) -> Result<Vec<T>>) -> Result<Vec<T>> {
    let mut out = vec![];
    for v in values {
        out.extend(parse(v)?);
    }
    Ok(out)
}
