//! The containers of this host: create from an image, start under a shim, stop, kill, remove,
//! wait, attach; the state machine (guards in [`Status`]), state saved after every transition,
//! and recovery of running containers from disk when runtime-svc starts.
//!
//! On disk, per container `<root>/containers/<id>/`: `container.json` (the [`Record`]),
//! `bundle/config.json`, `rootfs/` (overlay mount point), `upper/`, `work/`, `hostname`,
//! `hosts`, and the shim's files: `shim.sock`, `shim.pid`, `exit`, `log.json`, `shim.log`,
//! `runc.log`, `init.pid`.

use crate::config::Config;
use crate::container::{now_nanos, random_name, valid_name, HostSettings, Record, RunSettings, Status};
use crate::error::{IoContext, RuntimeError};
use crate::shim::{self, ShimSpec};
use crate::shim_proto::Exit;
use crate::snapshot::{Layer, Snapshotter, StoreLayerSource};
use crate::spec::{self, SpecInput};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The user's overrides of the image config (`docker run` flags).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--entrypoint` (Some(empty) clears it).
    pub entrypoint: Option<Vec<String>>,
    /// Trailing command (replaces Cmd when non-empty).
    pub cmd: Vec<String>,
    /// `-e K=V`.
    pub env: Vec<String>,
    /// `-w`.
    pub working_dir: String,
    /// `-u`.
    pub user: String,
    /// `--hostname`.
    pub hostname: String,
    /// `-i`.
    pub open_stdin: bool,
    /// `-t`.
    pub tty: bool,
    /// `--stop-signal`.
    pub stop_signal: String,
    /// `--label`.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A create request in domain terms.
#[derive(Clone, Debug, Default)]
pub struct CreateSpec {
    /// Image reference or ID.
    pub image: String,
    /// Name ("" = random).
    pub name: String,
    /// Overrides.
    pub overrides: Overrides,
    /// Host settings.
    pub host: HostSettings,
    /// `--network`, `-p`, `-P`.
    pub network: crate::network::NetRequest,
}

/// Layer progress during create.
#[derive(Clone, Debug)]
pub struct LayerProgress {
    /// Layer digest.
    pub digest: String,
    /// "extracting" or "done".
    pub status: &'static str,
    /// Compressed bytes done.
    pub current: u64,
    /// Compressed size.
    pub total: u64,
}

/// What Wait waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// Not running.
    NotRunning,
    /// Removed.
    Removed,
    /// The next exit.
    NextExit,
}

/// Attach: which streams.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttachOpts {
    /// Send stdin.
    pub stdin: bool,
    /// Receive stdout.
    pub stdout: bool,
    /// Receive stderr.
    pub stderr: bool,
    /// Initial terminal size (columns, rows) for a container with a pty.
    pub size: Option<(u16, u16)>,
}

/// Client → container during attach.
#[derive(Debug)]
pub enum AttachInput {
    /// Stdin bytes.
    Stdin(Vec<u8>),
    /// Stdin EOF.
    CloseStdin,
    /// Terminal size.
    Resize(u16, u16),
}

/// Container → client during attach.
#[derive(Debug)]
pub enum AttachOutput {
    /// Joined (full ID; the process has a pty).
    Attached(String, bool),
    /// Stdout bytes.
    Stdout(Vec<u8>),
    /// Stderr bytes.
    Stderr(Vec<u8>),
    /// Exit; last message.
    Exit(Exit),
}

#[derive(Clone, Debug)]
struct Live {
    status: Status,
    /// Bumped every time a new shim is listening (attachers waiting for a start connect then).
    shim_gen: u64,
    /// Attachers waiting for the next shim.
    waiting: usize,
    /// Exits seen so far.
    exits: u64,
    removed: bool,
}

struct Entry {
    id: String,
    dir: PathBuf,
    rec: Mutex<Record>,
    op: tokio::sync::Mutex<()>,
    live: watch::Sender<Live>,
}

impl Entry {
    fn new(rec: Record, dir: PathBuf) -> Arc<Entry> {
        let (live, _) = watch::channel(Live { status: rec.status, shim_gen: 0, waiting: 0, exits: 0, removed: false });
        Arc::new(Entry { id: rec.id.clone(), dir, rec: Mutex::new(rec), op: tokio::sync::Mutex::new(()), live })
    }

    fn record(&self) -> Record {
        self.rec.lock().unwrap().clone()
    }

    /// Applies a change to the record, saves it and publishes the status.
    fn update(&self, f: impl FnOnce(&mut Record)) -> Result<Record, RuntimeError> {
        let rec = {
            let mut r = self.rec.lock().unwrap();
            f(&mut r);
            r.clone()
        };
        let saved = rec.save(&self.dir).ctx(|| format!("saving state of container {}", self.id));
        let status = rec.status;
        self.live.send_modify(|l| l.status = status);
        saved.map(|_| rec)
    }
}

/// The containers of this host.
pub struct Manager {
    root: PathBuf,
    cfg: Config,
    snap: Snapshotter,
    store: tonic::transport::Channel,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    names: tokio::sync::Mutex<()>,
    nofile: u64,
    net: Arc<crate::network::Networks>,
    pub(crate) volumes: crate::volume::Volumes,
}

fn containers_dir(root: &Path) -> PathBuf {
    root.join("containers")
}

impl Manager {
    /// Opens the runtime state under `root`, finding containers (and their shims) again.
    pub async fn open(
        root: PathBuf,
        cfg: Config,
        store: tonic::transport::Channel,
    ) -> Result<Arc<Manager>, RuntimeError> {
        std::fs::create_dir_all(containers_dir(&root)).ctx(|| format!("creating {}", root.display()))?;
        let snap = Snapshotter::open(root.join("snapshots"))?;
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        let nofile = lim.rlim_max.min(1 << 20);
        let net = Arc::new(crate::network::Networks::open(&root, cfg.network.clone())?);
        let volumes = crate::volume::Volumes::open(root.join("volumes"))?;
        let m = Arc::new(Manager {
            root,
            cfg,
            snap,
            store,
            entries: Mutex::new(HashMap::new()),
            names: tokio::sync::Mutex::new(()),
            nofile,
            net,
            volumes,
        });
        m.recover().await?;
        m.restart_on_boot();
        Ok(m)
    }

    /// The networks of this host (`berth network ...`).
    pub fn networks(&self) -> &crate::network::Networks {
        &self.net
    }

    fn runtime_root(&self) -> PathBuf {
        self.root.join(self.cfg.runtime_state_dir())
    }

    pub(crate) fn cgroup_of(&self, id: &str) -> String {
        format!("/{}/{}", self.cfg.cgroup_parent, id)
    }

    async fn recover(self: &Arc<Self>) -> Result<(), RuntimeError> {
        let dir = containers_dir(&self.root);
        let rd = std::fs::read_dir(&dir).ctx(|| format!("reading {}", dir.display()))?;
        for de in rd.flatten() {
            let cdir = de.path();
            let rec = match Record::load(&cdir) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(dir = %cdir.display(), error = %e, "skipping unreadable container state");
                    continue;
                }
            };
            let entry = Entry::new(rec.clone(), cdir.clone());
            self.entries.lock().unwrap().insert(rec.id.clone(), entry.clone());
            match rec.status {
                Status::Running => match shim::status(&cdir).await {
                    Ok(shim::ShimStatus::Running(_)) => {
                        tracing::info!(id = %rec.id, "reconnected to running container's shim");
                        self.net.restore(&rec.id).await;
                        self.spawn_monitor(entry);
                    }
                    Ok(shim::ShimStatus::Exited(exit)) => self.finish_exit(&entry, exit).await,
                    Ok(shim::ShimStatus::Created) => {
                        kill_shim(rec.shim_pid);
                        let _ = entry.update(|r| {
                            r.status = Status::Exited;
                            r.exit_code = 255;
                            r.error = "runtime-svc stopped while the container was starting".into();
                        });
                    }
                    Err(_) => {
                        let exit = shim::read_exit_file(&cdir).unwrap_or_else(|| Exit {
                            code: 255,
                            oom: false,
                            error: "the container's shim is gone".into(),
                        });
                        self.finish_exit(&entry, exit).await;
                    }
                },
                Status::Created | Status::Exited => {
                    if rec.shim_pid > 0 && shim::status(&cdir).await.is_ok() {
                        kill_shim(rec.shim_pid);
                    }
                }
                Status::Removing => {
                    let _ = self.remove_files(&entry).await;
                    self.entries.lock().unwrap().remove(&rec.id);
                }
            }
        }
        let running = self.list(false).into_iter().map(|r| r.id).collect();
        self.net.cleanup_stale(&running).await;
        Ok(())
    }

    /// Every container, newest first; running only unless `all`.
    pub fn list(&self, all: bool) -> Vec<Record> {
        let mut v: Vec<Record> = self
            .entries
            .lock()
            .unwrap()
            .values()
            .map(|e| e.record())
            .filter(|r| all || r.status == Status::Running || r.restarting)
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        v
    }

    fn resolve(&self, what: &str) -> Result<Arc<Entry>, RuntimeError> {
        let entries = self.entries.lock().unwrap();
        if let Some(e) = entries.get(what) {
            return Ok(e.clone());
        }
        if let Some(e) = entries.values().find(|e| e.rec.lock().unwrap().name == what.trim_start_matches('/')) {
            return Ok(e.clone());
        }
        if !what.is_empty() && what.len() < 64 && what.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found: Vec<&Arc<Entry>> = entries.values().filter(|e| e.id.starts_with(what)).collect();
            match found.len() {
                1 => return Ok(found[0].clone()),
                0 => {}
                _ => return Err(RuntimeError::Ambiguous(what.to_string())),
            }
        }
        Err(RuntimeError::NoSuchContainer(what.to_string()))
    }

    /// One container.
    pub fn inspect(&self, what: &str) -> Result<Record, RuntimeError> {
        Ok(self.resolve(what)?.record())
    }

    /// Where a container's json-file log is.
    pub fn log_path(&self, id: &str) -> PathBuf {
        containers_dir(&self.root).join(id).join("log.json")
    }

    /// The snapshotter and the store-svc channel (for [`crate::prefetch`]).
    pub(crate) fn snapshot_parts(&self) -> (&Snapshotter, &tonic::transport::Channel) {
        (&self.snap, &self.store)
    }

    /// Makes a container from an image (fetching and unpacking layers as needed).
    pub async fn create(
        self: &Arc<Self>,
        req: CreateSpec,
        progress: Option<mpsc::Sender<LayerProgress>>,
    ) -> Result<Record, RuntimeError> {
        let mut req = req;
        req.host.log_opts = crate::logs::effective_opts(&self.cfg.log_opts, &req.host.log_opts)?;
        if !req.name.is_empty() && !valid_name(&req.name) {
            return Err(RuntimeError::Invalid(format!(
                "Invalid container name ({}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                req.name
            )));
        }
        if req.host.memory_bytes < 0 || req.host.nano_cpus < 0 || req.host.pids_limit < 0 {
            return Err(RuntimeError::Invalid("resource limits must not be negative".into()));
        }
        if req.host.memory_bytes > 0 && req.host.memory_bytes < 6 * 1024 * 1024 {
            return Err(RuntimeError::Invalid("Minimum memory limit allowed is 6MB".into()));
        }
        let img = berth_common::image::load(self.store.clone(), &req.image, None).await?;
        let run = merge(&img.config.config, &req.overrides);
        let mut net = crate::network::ContainerNet { request: req.network.clone(), ..Default::default() };
        net.request.mode = self.net.resolve_mode(&net.request.mode)?;
        net.exposed = img.config.config.exposed_ports.clone().unwrap_or_default().into_keys().collect();
        for e in &net.request.expose {
            if !net.exposed.contains(e) {
                net.exposed.push(e.clone());
            }
        }
        if run.argv().is_empty() {
            return Err(RuntimeError::Invalid("no command specified".into()));
        }
        let id = crate::container::new_id();
        let dir = containers_dir(&self.root).join(&id);
        // Reserve the name before the (possibly long) unpack.
        let entry = {
            let _g = self.names.lock().await;
            let name = if req.name.is_empty() {
                loop {
                    let n = random_name();
                    if self.name_owner(&n).is_none() {
                        break n;
                    }
                }
            } else {
                if let Some(owner) = self.name_owner(&req.name) {
                    return Err(RuntimeError::NameConflict { name: req.name.clone(), id: owner });
                }
                req.name.clone()
            };
            let image_volumes: Vec<String> =
                img.config.config.volumes.clone().unwrap_or_default().into_keys().collect();
            let mount_points = self.prepare_mounts(&req.host, &image_volumes)?;
            for sub in ["upper", "work", "rootfs", "bundle"] {
                std::fs::create_dir_all(dir.join(sub)).ctx(|| format!("creating {}", dir.display()))?;
            }
            let rec = Record {
                id: id.clone(),
                name,
                image: req.image.clone(),
                image_digest: img.manifest_descriptor.digest.to_string(),
                run,
                host: req.host.clone(),
                lowers: vec![],
                chain_ids: img.chain_ids().iter().map(|d| d.to_string()).collect(),
                status: Status::Created,
                created_at: now_nanos(),
                started_at: 0,
                finished_at: 0,
                exit_code: 0,
                error: String::new(),
                oom_killed: false,
                pid: 0,
                shim_pid: 0,
                start_count: 0,
                net,
                image_id: img.id.to_string(),
                mount_points,
                restart_count: 0,
                restarting: false,
                restart_delay_ms: 0,
                manually_stopped: false,
            };
            let entry = Entry::new(rec, dir.clone());
            self.entries.lock().unwrap().insert(id.clone(), entry.clone());
            entry
        };
        let result = async {
            let layers = Layer::of_image(&img);
            let src = StoreLayerSource::new(self.store.clone());
            let (tx, mut rx) = mpsc::channel(64);
            let forward = async {
                while let Some(p) = rx.recv().await {
                    if let Some(out) = &progress {
                        let p: crate::snapshot::UnpackProgress = p;
                        let _ = out
                            .send(LayerProgress {
                                digest: p.layer.to_string(),
                                status: if p.done { "done" } else { "extracting" },
                                current: p.bytes_done,
                                total: p.bytes_total,
                            })
                            .await;
                    }
                }
            };
            let (lowers, _) = tokio::join!(
                async move {
                    let r = self.snap.prepare(&src, &layers, Some(tx)).await;
                    r
                },
                forward
            );
            let lowers = lowers?;
            entry.update(|r| r.lowers = lowers)
        }
        .await;
        match result {
            Ok(rec) => Ok(rec),
            Err(e) => {
                self.entries.lock().unwrap().remove(&id);
                self.remove_anonymous_volumes(&entry.record().mount_points);
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    fn name_owner(&self, name: &str) -> Option<String> {
        self.entries.lock().unwrap().values().find(|e| e.rec.lock().unwrap().name == name).map(|e| e.id.clone())
    }

    /// Starts a created or exited container; attachers waiting for it are joined first.
    pub async fn start(self: &Arc<Self>, what: &str) -> Result<Record, RuntimeError> {
        let entry = self.resolve(what)?;
        let _op = entry.op.lock().await;
        let rec = entry.record();
        if !rec.status.can_start() {
            return Err(RuntimeError::State(match rec.status {
                Status::Running => format!("container {} is already running", rec.name),
                _ => format!("container {} is being removed", rec.name),
            }));
        }
        let dir = entry.dir.clone();
        for f in ["exit", "init.pid", "runc.log"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let rootfs = dir.join("rootfs");
        let _ = Snapshotter::unmount_rootfs(&rootfs);
        // A --rm container's layer is thrown away at exit: no sync of the disk when it goes.
        if !(rec.host.auto_remove
            && crate::rootfs::mount_volatile(&rec.lowers, &dir.join("upper"), &dir.join("work"), &rootfs))
        {
            self.snap.mount_rootfs(&rec.lowers, &dir.join("upper"), &dir.join("work"), &rootfs)?;
        }
        let started = self.start_mounted(&entry, &rec).await;
        if let Err(e) = &started {
            if !matches!(e, RuntimeError::Start { .. }) {
                let _ = Snapshotter::unmount_rootfs(&rootfs);
                self.net.detach(&rec.id).await;
            }
        }
        started
    }

    async fn start_mounted(self: &Arc<Self>, entry: &Arc<Entry>, rec: &Record) -> Result<Record, RuntimeError> {
        let dir = entry.dir.clone();
        let rootfs = dir.join("rootfs");
        let passwd = read_in_root(&rootfs, "etc/passwd").unwrap_or_default();
        let group = read_in_root(&rootfs, "etc/group").unwrap_or_default();
        let (uid, gid, extra) = spec::resolve_user(&rec.run.user, &passwd, &group).map_err(RuntimeError::Invalid)?;
        // `--network host` without `--hostname` takes the host's name, as docker's.
        let mut run = rec.run.clone();
        if run.hostname.is_empty() && rec.net.request.mode == "host" {
            run.hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        }
        let hostname = if run.hostname.is_empty() { rec.id[..12].to_string() } else { run.hostname.clone() };
        std::fs::write(dir.join("hostname"), format!("{hostname}\n")).ctx(|| "writing hostname".into())?;
        let attached = self.net.attach(&rec.id, &rec.name, &hostname, &rec.net, &dir).await?;
        let cgroup = self.cgroup_of(&rec.id);
        let args = rec.run.argv();
        let inp = SpecInput {
            rootfs: &rootfs,
            id: &rec.id,
            args: &args,
            uid,
            gid,
            additional_gids: extra,
            cgroups_path: &cgroup,
            hostname_file: &dir.join("hostname"),
            hosts_file: &dir.join("hosts"),
            network: &attached.spec,
            resolv_file: &dir.join("resolv.conf"),
            nofile: self.nofile,
        };
        let oci = spec::build(&run, &rec.host, &inp).map_err(RuntimeError::Invalid)?;
        let user_mounts =
            crate::mounts::setup(&rootfs, &rec.mount_points, &self.volumes).map_err(RuntimeError::Invalid)?;
        let oci = crate::mounts::apply(oci, &user_mounts, rec.host.readonly_rootfs).map_err(RuntimeError::Invalid)?;
        let bundle = dir.join("bundle");
        std::fs::write(bundle.join("config.json"), spec::to_json(&oci).map_err(RuntimeError::Invalid)?)
            .ctx(|| "writing config.json".into())?;

        let shim_bin = self.cfg.shim_binary();
        let runtime = self.cfg.runtime_binary();
        let runtime_root = self.runtime_root();
        let (id, d, b, r, stdin) = (rec.id.clone(), dir.clone(), bundle.clone(), rootfs.clone(), rec.run.open_stdin);
        let cg = cgroup.clone();
        let tty = rec.run.tty;
        let (log_max_size, log_max_file) = crate::logs::limits(&rec.host.log_opts)?;
        let shim_pid = tokio::task::spawn_blocking(move || {
            shim::spawn(&ShimSpec {
                binary: &shim_bin,
                id: &id,
                dir: &d,
                bundle: &b,
                rootfs: &r,
                runtime: &runtime,
                runtime_root: &runtime_root,
                cgroup: &cg,
                stdin,
                tty,
                log_max_size,
                log_max_file,
            })
        })
        .await
        .map_err(|e| RuntimeError::Shim { id: rec.id.clone(), reason: e.to_string() })?
        .map_err(|e| RuntimeError::Shim { id: rec.id.clone(), reason: e.to_string() })?;
        entry.update(|r| r.shim_pid = shim_pid)?;

        // Let attachers that wait for this start join the new shim before the process runs.
        entry.live.send_modify(|l| l.shim_gen += 1);
        let mut rx = entry.live.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| l.waiting == 0)).await;

        let shim_err = |e: std::io::Error| RuntimeError::Shim { id: rec.id.clone(), reason: e.to_string() };
        match shim::start(&dir).await.map_err(shim_err)? {
            Ok(pid) => {
                let rec = entry.update(|r| {
                    r.status = Status::Running;
                    r.pid = pid;
                    r.started_at = now_nanos();
                    r.finished_at = 0;
                    r.start_count += 1;
                    r.restarting = false;
                    r.exit_code = 0;
                    r.error.clear();
                    r.oom_killed = false;
                    r.net.endpoint = attached.endpoint.clone();
                })?;
                self.spawn_monitor(entry.clone());
                Ok(rec)
            }
            Err(fail) => {
                let exit = match shim::wait(&dir).await {
                    Ok(e) => e,
                    Err(_) => Exit { code: fail.code, oom: false, error: fail.message.clone() },
                };
                self.finish_exit(entry, exit).await;
                Err(RuntimeError::Start { code: fail.code, message: fail.message })
            }
        }
    }

    fn spawn_monitor(self: &Arc<Self>, entry: Arc<Entry>) {
        let m = self.clone();
        tokio::spawn(async move {
            let exit = loop {
                match shim::wait(&entry.dir).await {
                    Ok(e) => break e,
                    Err(_) => {
                        if let Some(e) = shim::read_exit_file(&entry.dir) {
                            break e;
                        }
                        let pid = entry.rec.lock().unwrap().shim_pid;
                        if pid <= 0 || !process_alive(pid) {
                            // The shim may have written the file just now.
                            break shim::read_exit_file(&entry.dir).unwrap_or(Exit {
                                code: 255,
                                oom: false,
                                error: "the container's shim died".into(),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            m.finish_exit(&entry, exit).await;
        });
    }

    async fn finish_exit(self: &Arc<Self>, entry: &Arc<Entry>, exit: Exit) {
        let _ = Snapshotter::unmount_rootfs(&entry.dir.join("rootfs"));
        self.net.detach(&entry.id).await;
        let res = entry.update(|r| {
            if r.status != Status::Removing {
                r.status = Status::Exited;
            }
            r.exit_code = exit.code;
            r.oom_killed = exit.oom;
            r.error = exit.error.clone();
            r.finished_at = now_nanos();
            r.pid = 0;
            r.shim_pid = 0;
            r.net.endpoint = None;
        });
        entry.live.send_modify(|l| l.exits += 1);
        if let Err(e) = res {
            tracing::warn!(id = %entry.id, error = %e, "could not save exit status");
        }
        self.after_exit(&entry.record());
        let auto = entry.rec.lock().unwrap().host.auto_remove;
        if auto {
            let m = self.clone();
            let id = entry.id.clone();
            tokio::spawn(async move {
                if let Err(e) = m.remove_with_volumes(&id, false, true).await {
                    if !matches!(e, RuntimeError::NoSuchContainer(_)) {
                        tracing::warn!(id = %id, error = %e, "auto-remove failed");
                    }
                }
            });
        }
    }

    /// Stops a running container: stop signal, then SIGKILL after `timeout`.
    pub async fn stop(&self, what: &str, timeout: Option<Duration>, signal: &str) -> Result<Record, RuntimeError> {
        let entry = self.resolve(what)?;
        let _op = entry.op.lock().await;
        // The user stopped it: restart policies leave it alone (and a pending restart is off).
        let rec = entry.update(|r| {
            r.manually_stopped = true;
            r.restarting = false;
        })?;
        if !rec.status.can_kill() {
            return Ok(rec);
        }
        let sig = match (signal, rec.run.stop_signal.as_str()) {
            ("", "") => libc::SIGTERM,
            ("", s) | (s, _) => parse_signal(s)?,
        };
        let timeout = timeout.unwrap_or(Duration::from_secs(self.cfg.stop_timeout_seconds.into()));
        let _ = shim::kill(&entry.dir, sig).await;
        let mut rx = entry.live.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|l| l.status != Status::Running)).await.is_err() {
            let _ = shim::kill(&entry.dir, libc::SIGKILL).await;
            let _ = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|l| l.status != Status::Running)).await;
        }
        Ok(entry.record())
    }

    /// Sends a signal to a running container.
    pub async fn kill(&self, what: &str, signal: &str) -> Result<(), RuntimeError> {
        let entry = self.resolve(what)?;
        let sig = if signal.is_empty() { libc::SIGKILL } else { parse_signal(signal)? };
        let rec = entry.record();
        if !rec.status.can_kill() {
            return Err(RuntimeError::State(format!("Container {} is not running", rec.id)));
        }
        // As docker: a container the user killed is not restarted by its policy.
        let _ = entry.update(|r| r.manually_stopped = true);
        match shim::kill(&entry.dir, sig).await {
            Ok(true) => Ok(()),
            _ => Err(RuntimeError::State(format!("Container {} is not running", rec.id))),
        }
    }

    /// Removes a container (killing it first with `force`).
    pub async fn remove(&self, what: &str, force: bool) -> Result<String, RuntimeError> {
        self.remove_with_volumes(what, force, false).await
    }

    /// Applies a change to a container's record and saves it.
    pub(crate) fn update_record(&self, id: &str, f: impl FnOnce(&mut Record)) -> Result<Record, RuntimeError> {
        self.resolve(id)?.update(f)
    }

    /// Removes a container; with `volumes` also its anonymous volumes (`rm -v`, `--rm`).
    pub async fn remove_with_volumes(&self, what: &str, force: bool, volumes: bool) -> Result<String, RuntimeError> {
        let entry = self.resolve(what)?;
        let _op = entry.op.lock().await;
        let rec = entry.record();
        if rec.status == Status::Running {
            if !force {
                return Err(RuntimeError::State(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    rec.name
                )));
            }
            let _ = shim::kill(&entry.dir, libc::SIGKILL).await;
            let mut rx = entry.live.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|l| l.status != Status::Running)).await;
        }
        if !self.entries.lock().unwrap().contains_key(&entry.id) {
            return Err(RuntimeError::NoSuchContainer(what.to_string()));
        }
        entry.update(|r| r.status = Status::Removing)?;
        self.remove_files(&entry).await?;
        self.entries.lock().unwrap().remove(&entry.id);
        if volumes {
            self.remove_anonymous_volumes(&rec.mount_points);
        }
        entry.live.send_modify(|l| l.removed = true);
        Ok(entry.id.clone())
    }

    async fn remove_files(&self, entry: &Arc<Entry>) -> Result<(), RuntimeError> {
        self.net.detach(&entry.id).await;
        // A shim still cleaning up after the exit: give it a moment.
        let pid = entry.rec.lock().unwrap().shim_pid;
        for _ in 0..50 {
            if !entry.dir.join("shim.sock").exists() || (pid > 0 && !process_alive(pid)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rootfs = entry.dir.join("rootfs");
        let _ = Snapshotter::unmount_rootfs(&rootfs);
        if self.runtime_root().join(&entry.id).exists() {
            let runc = self.cfg.runtime_binary();
            let root = self.runtime_root();
            let id = entry.id.clone();
            let _ = tokio::task::spawn_blocking(move || {
                std::process::Command::new(runc)
                    .arg("--root")
                    .arg(root)
                    .args(["delete", "--force", &id])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status()
            })
            .await;
        }
        let dir = entry.dir.clone();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .map_err(|e| RuntimeError::Io {
                what: "removing container files".into(),
                source: std::io::Error::other(e),
            })?
            .ctx(|| format!("removing {}", entry.dir.display()))
    }

    /// Waits for the condition; returns (exit code, error).
    pub async fn wait(&self, what: &str, cond: WaitFor) -> Result<(i32, String), RuntimeError> {
        let entry = self.resolve(what)?;
        let mut rx = entry.live.subscribe();
        let exits0 = rx.borrow().exits;
        let _ = match cond {
            WaitFor::NotRunning => rx.wait_for(|l| l.status != Status::Running || l.removed).await.map(|_| ()),
            WaitFor::Removed => rx.wait_for(|l| l.removed).await.map(|_| ()),
            WaitFor::NextExit => rx.wait_for(|l| l.exits > exits0 || l.removed).await.map(|_| ()),
        };
        let r = entry.record();
        Ok((r.exit_code, r.error))
    }

    /// Removes every container that is not running.
    pub async fn prune(&self) -> Vec<String> {
        let ids: Vec<String> =
            self.list(true).into_iter().filter(|r| r.status.can_remove() && !r.restarting).map(|r| r.id).collect();
        let mut removed = vec![];
        for id in ids {
            if let Ok(id) = self.remove(&id, false).await {
                removed.push(id);
            }
        }
        match self.prune_snapshots().await {
            Ok(gone) if !gone.is_empty() => tracing::info!(snapshots = gone.len(), "removed unused snapshots"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "unused snapshots were kept: the images in the store could not be read")
            }
        }
        removed
    }

    /// Removes the snapshots that no container of this host and no image in the store uses.
    /// When any image cannot be read, nothing is removed (never guess what is unused).
    pub async fn prune_snapshots(&self) -> Result<Vec<berth_common::Digest>, RuntimeError> {
        let mut keep = std::collections::HashSet::new();
        for rec in self.list(true) {
            keep.extend(rec.chain_ids.iter().filter_map(|c| c.parse().ok()));
        }
        for rec in berth_common::image::list_records(self.store.clone()).await? {
            let img = berth_common::image::load_target(self.store.clone(), Some(rec.name), rec.target, None).await?;
            keep.extend(img.chain_ids());
        }
        Ok(self.snap.prune(&keep)?)
    }

    /// Joins a container's stdio. Sends `Attached` first; for a container that is not
    /// running, joins the shim of its next start (Start waits for that).
    pub async fn attach(
        &self,
        what: &str,
        opts: AttachOpts,
        input: mpsc::Receiver<AttachInput>,
        output: mpsc::Sender<AttachOutput>,
    ) -> Result<(), RuntimeError> {
        let entry = self.resolve(what)?;
        if opts.stdin && !entry.record().run.open_stdin {
            return Err(RuntimeError::Invalid("the container's stdin is not open (create it with -i)".into()));
        }
        let mut rx = entry.live.subscribe();
        let running = rx.borrow().status == Status::Running;
        let conn = if running {
            let _ = output.send(AttachOutput::Attached(entry.id.clone(), entry.record().run.tty)).await;
            shim::attach(&entry.dir, opts.stdin, opts.stdout, opts.stderr, opts.size).await
        } else {
            struct Waiting<'a>(&'a watch::Sender<Live>, bool);
            impl Drop for Waiting<'_> {
                fn drop(&mut self) {
                    if self.1 {
                        self.0.send_modify(|l| l.waiting -= 1);
                    }
                }
            }
            let mut gen0 = 0;
            entry.live.send_modify(|l| {
                l.waiting += 1;
                gen0 = l.shim_gen;
            });
            let mut guard = Waiting(&entry.live, true);
            let _ = output.send(AttachOutput::Attached(entry.id.clone(), entry.record().run.tty)).await;
            if rx.wait_for(|l| l.shim_gen > gen0 || l.removed).await.map(|l| l.removed).unwrap_or(true) {
                return Err(RuntimeError::NoSuchContainer(what.to_string()));
            }
            let c = shim::attach(&entry.dir, opts.stdin, opts.stdout, opts.stderr, opts.size).await;
            guard.1 = false;
            entry.live.send_modify(|l| l.waiting -= 1);
            c
        };
        let conn = conn.map_err(|e| RuntimeError::Shim { id: entry.id.clone(), reason: e.to_string() })?;
        crate::exec::relay(conn, &entry.dir, input, output).await;
        Ok(())
    }

    /// A container's record and state dir (for the exec and logs modules).
    pub fn record_and_dir(&self, what: &str) -> Result<(Record, PathBuf), RuntimeError> {
        let e = self.resolve(what)?;
        Ok((e.record(), e.dir.clone()))
    }
}

/// Merges the image's run config with the user's overrides, as `docker run` does.
pub fn merge(img: &berth_common::image::RunConfig, o: &Overrides) -> RunSettings {
    let (entrypoint, cmd) = match &o.entrypoint {
        Some(ep) => (ep.clone(), o.cmd.clone()),
        None => {
            let ep = img.entrypoint.clone().unwrap_or_default();
            let cmd = if o.cmd.is_empty() { img.cmd.clone().unwrap_or_default() } else { o.cmd.clone() };
            (ep, cmd)
        }
    };
    let mut env: Vec<String> = img.env.clone().unwrap_or_default();
    for kv in &o.env {
        let Some((k, _)) = kv.split_once('=') else { continue };
        env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k) && e != k);
        env.push(kv.clone());
    }
    let pick = |o: &str, i: &Option<String>| if o.is_empty() { i.clone().unwrap_or_default() } else { o.to_string() };
    let mut labels = img.labels.clone().unwrap_or_default();
    labels.extend(o.labels.clone());
    RunSettings {
        entrypoint,
        cmd,
        env,
        working_dir: pick(&o.working_dir, &img.working_dir),
        user: pick(&o.user, &img.user),
        hostname: o.hostname.clone(),
        open_stdin: o.open_stdin,
        tty: o.tty,
        stop_signal: pick(&o.stop_signal, &img.stop_signal),
        labels,
    }
}

/// Parses "SIGTERM", "TERM", "term" or "15".
pub fn parse_signal(s: &str) -> Result<i32, RuntimeError> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(RuntimeError::Invalid(format!("Invalid signal: {s}"))),
    };
    Ok(n)
}

fn process_alive(pid: i32) -> bool {
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Kills a shim left waiting for a start that never came, if the pid still is a berth-shim.
fn kill_shim(pid: i32) {
    if pid <= 0 {
        return;
    }
    let is_shim = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("berth-shim"))
        .unwrap_or(false);
    if is_shim {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Reads a file of the container's rootfs without following symlinks out of it
/// (openat2 with RESOLVE_IN_ROOT). Small files only.
pub(crate) fn read_in_root(root: &Path, rel: &str) -> Option<String> {
    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::FromRawFd;
    let root_c = CString::new(root.as_os_str().as_encoded_bytes()).ok()?;
    let rel_c = CString::new(rel).ok()?;
    unsafe {
        let rootfd = libc::open(root_c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC);
        if rootfd < 0 {
            return None;
        }
        let mut how: libc::open_how = std::mem::zeroed();
        how.flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        let fd = libc::syscall(
            libc::SYS_openat2,
            rootfd,
            rel_c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        ) as i32;
        libc::close(rootfd);
        if fd < 0 {
            return None;
        }
        let f = std::fs::File::from_raw_fd(fd);
        let mut s = String::new();
        f.take(4 << 20).read_to_string(&mut s).ok()?;
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_common::image::RunConfig;

    #[test]
    fn overrides_merge_like_docker_run() {
        let img = RunConfig {
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            entrypoint: Some(vec!["/ep".into()]),
            cmd: Some(vec!["x".into()]),
            working_dir: Some("/w".into()),
            ..Default::default()
        };
        let m = merge(
            &img,
            &Overrides { cmd: vec!["y".into()], env: vec!["A=2".into(), "B=3".into()], ..Default::default() },
        );
        assert_eq!(m.argv(), vec!["/ep", "y"]);
        assert_eq!(m.env, vec!["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(m.working_dir, "/w");
        // --entrypoint resets the image's Cmd.
        let m = merge(&img, &Overrides { entrypoint: Some(vec!["sh".into()]), ..Default::default() });
        assert_eq!(m.argv(), vec!["sh"]);
        let m = merge(&img, &Overrides::default());
        assert_eq!(m.argv(), vec!["/ep", "x"]);
    }

    #[test]
    fn signals_parse() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("kill").unwrap(), 9);
        assert_eq!(parse_signal("10").unwrap(), 10);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn read_in_root_stays_inside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("etc/passwd")).unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\n").unwrap();
        assert_eq!(read_in_root(dir.path(), "etc/group").unwrap(), "root:x:0:\n");
        // The absolute symlink resolves inside the root, where /etc/hostname does not exist.
        assert!(read_in_root(dir.path(), "etc/passwd").is_none());
    }
}
