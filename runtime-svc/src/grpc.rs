//! The `berth.runtime.v1.Runtime` gRPC service: a thin shell over [`Manager`]; the one place
//! where domain errors become gRPC codes.

use crate::container::{HostSettings, Record, Status};
use crate::error::RuntimeError;
use crate::manager::{AttachInput, AttachOpts, AttachOutput, CreateSpec, Manager, Overrides, WaitFor};
use berth_proto::runtime::v1 as pb;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status as GrpcStatus, Streaming};

mod prefetch;
mod storage;

impl From<RuntimeError> for GrpcStatus {
    fn from(e: RuntimeError) -> Self {
        let msg = e.to_string();
        match e {
            RuntimeError::NoSuchContainer(_) | RuntimeError::NoSuchVolume(_) => GrpcStatus::not_found(msg),
            RuntimeError::Ambiguous(_) | RuntimeError::Invalid(_) => GrpcStatus::invalid_argument(msg),
            RuntimeError::NameConflict { .. } => GrpcStatus::already_exists(msg),
            RuntimeError::State(_) => GrpcStatus::failed_precondition(msg),
            RuntimeError::Image(ref ie) => match ie {
                berth_common::image::ImageError::NotFound(_) => GrpcStatus::not_found(msg),
                berth_common::image::ImageError::Reference(_)
                | berth_common::image::ImageError::Ambiguous { .. }
                | berth_common::image::ImageError::NoMatchingPlatform { .. } => GrpcStatus::invalid_argument(msg),
                berth_common::image::ImageError::Store(_) => GrpcStatus::unavailable(msg),
                _ => GrpcStatus::failed_precondition(msg),
            },
            RuntimeError::Snapshot(_) => GrpcStatus::failed_precondition(msg),
            RuntimeError::Start { .. } => GrpcStatus::failed_precondition(msg),
            RuntimeError::Io { .. } | RuntimeError::Shim { .. } => GrpcStatus::internal(msg),
        }
    }
}

/// The service.
pub struct RuntimeService {
    m: Arc<Manager>,
}

impl RuntimeService {
    /// Wraps a manager.
    pub fn new(m: Arc<Manager>) -> Self {
        Self { m }
    }

    /// The tonic server.
    pub fn server(self) -> pb::runtime_server::RuntimeServer<Self> {
        pb::runtime_server::RuntimeServer::new(self)
    }
}

fn to_pb(r: &Record, log_path: &std::path::Path) -> pb::Container {
    let mut c = to_pb_base(r, log_path);
    storage::fill_container(r, &mut c);
    c
}

fn to_pb_base(r: &Record, log_path: &std::path::Path) -> pb::Container {
    pb::Container {
        id: r.id.clone(),
        name: r.name.clone(),
        image: r.image.clone(),
        image_digest: r.image_digest.clone(),
        command: r.run.argv(),
        config: Some(pb::ContainerConfig {
            entrypoint: Some(pb::StringList { values: r.run.entrypoint.clone() }),
            cmd: r.run.cmd.clone(),
            env: r.run.env.clone(),
            working_dir: r.run.working_dir.clone(),
            user: r.run.user.clone(),
            hostname: if r.run.hostname.is_empty() { r.id[..12].to_string() } else { r.run.hostname.clone() },
            open_stdin: r.run.open_stdin,
            tty: r.run.tty,
            stop_signal: r.run.stop_signal.clone(),
            labels: r.run.labels.clone().into_iter().collect(),
            ..Default::default()
        }),
        host_config: Some(pb::HostConfig {
            memory_bytes: r.host.memory_bytes,
            nano_cpus: r.host.nano_cpus,
            pids_limit: r.host.pids_limit,
            auto_remove: r.host.auto_remove,
            log_opts: r.host.log_opts.clone().into_iter().collect(),
            ..Default::default()
        }),
        status: match r.status {
            Status::Created => pb::ContainerStatus::Created,
            Status::Running => pb::ContainerStatus::Running,
            Status::Exited => pb::ContainerStatus::Exited,
            Status::Removing => pb::ContainerStatus::Removing,
        } as i32,
        created_at_unix_nanos: r.created_at,
        started_at_unix_nanos: r.started_at,
        finished_at_unix_nanos: r.finished_at,
        exit_code: r.exit_code,
        pid: r.pid,
        error: r.error.clone(),
        oom_killed: r.oom_killed,
        log_path: log_path.display().to_string(),
        start_count: r.start_count,
        ..crate::network::grpc::container_base(&r.net)
    }
}

fn m_log(m: &Manager, r: &Record) -> std::path::PathBuf {
    m.log_path(&r.id)
}

fn size_of(s: pb::TerminalSize) -> Option<(u16, u16)> {
    (s.width > 0 && s.height > 0).then(|| (s.width.min(u16::MAX as u32) as u16, s.height.min(u16::MAX as u32) as u16))
}

/// Sends attach/exec output to the client until the last message, or until the client is gone
/// (then `out_rx` is dropped, which tells the relay to let go of the shim).
/// Client → container for an Attach or Exec stream: the stdin, close-stdin and resize messages
/// (`input_of` picks them out of the stream's own message type), until either side ends.
fn pump_input<M: Send + 'static>(
    mut inbound: Streaming<M>,
    in_tx: mpsc::Sender<AttachInput>,
    input_of: fn(M) -> Option<AttachInput>,
) {
    tokio::spawn(async move {
        while let Ok(Some(m)) = inbound.message().await {
            let Some(msg) = input_of(m) else { continue };
            if in_tx.send(msg).await.is_err() {
                break;
            }
        }
    });
}

/// Container → client for an Attach or Exec stream: runs `work` (which writes the container's
/// output into the channel whose receiver is `out_rx`) and streams that output, then `work`'s
/// error if it failed.
fn relay_output(
    out_rx: mpsc::Receiver<AttachOutput>,
    work: impl std::future::Future<Output = Result<(), RuntimeError>> + Send + 'static,
) -> Pin<Box<ReceiverStream<Result<pb::AttachResponse, GrpcStatus>>>> {
    let (tx, rx) = mpsc::channel::<Result<pb::AttachResponse, GrpcStatus>>(64);
    let txe = tx.clone();
    tokio::spawn(async move {
        let fwd = tokio::spawn(forward_attach(out_rx, tx));
        if let Err(e) = work.await {
            let _ = txe.send(Err(e.into())).await;
        }
        let _ = fwd.await;
    });
    Box::pin(ReceiverStream::new(rx))
}

async fn forward_attach(
    mut out_rx: mpsc::Receiver<AttachOutput>,
    tx: mpsc::Sender<Result<pb::AttachResponse, GrpcStatus>>,
) {
    use pb::attach_response::Msg;
    loop {
        let o = tokio::select! {
            o = out_rx.recv() => o,
            _ = tx.closed() => None,
        };
        let Some(o) = o else { break };
        let msg = match o {
            AttachOutput::Attached(id, tty) => Msg::Attached(pb::Attached { id, tty }),
            AttachOutput::Stdout(d) => Msg::Stdout(d),
            AttachOutput::Stderr(d) => Msg::Stderr(d),
            AttachOutput::Exit(e) => Msg::Exit(pb::ExitStatus { exit_code: e.code, oom_killed: e.oom, error: e.error }),
        };
        if tx.send(Ok(pb::AttachResponse { msg: Some(msg) })).await.is_err() {
            break;
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send>>;

#[tonic::async_trait]
impl pb::runtime_server::Runtime for RuntimeService {
    type CreateStream = BoxStream<pb::CreateEvent>;
    type AttachStream = BoxStream<pb::AttachResponse>;
    type ExecStream = BoxStream<pb::AttachResponse>;
    type LogsStream = BoxStream<pb::LogsResponse>;
    type PrefetchStream = BoxStream<pb::PrefetchEvent>;

    async fn create(&self, req: Request<pb::CreateRequest>) -> Result<Response<Self::CreateStream>, GrpcStatus> {
        let r = req.into_inner();
        if r.image.is_empty() {
            return Err(GrpcStatus::invalid_argument("an image is required"));
        }
        let c = r.config.unwrap_or_default();
        let h = r.host_config.unwrap_or_default();
        let mut network = crate::network::grpc::request_from_pb(&h)?;
        network.expose = crate::network::grpc::expose_from_pb(&c.exposed_ports)?;
        let mut spec = CreateSpec {
            image: r.image,
            name: r.name,
            overrides: Overrides {
                entrypoint: c.entrypoint.map(|l| l.values),
                cmd: c.cmd,
                env: c.env,
                working_dir: c.working_dir,
                user: c.user,
                hostname: c.hostname,
                open_stdin: c.open_stdin,
                tty: c.tty,
                stop_signal: c.stop_signal,
                labels: c.labels.into_iter().collect(),
            },
            host: HostSettings {
                memory_bytes: h.memory_bytes,
                nano_cpus: h.nano_cpus,
                pids_limit: h.pids_limit,
                auto_remove: h.auto_remove,
                log_opts: h.log_opts.clone().into_iter().collect(),
                ..Default::default()
            },
            network,
        };
        storage::host_from_pb(&h, &mut spec.host)?;
        let (tx, rx) = mpsc::channel::<Result<pb::CreateEvent, GrpcStatus>>(64);
        let m = self.m.clone();
        tokio::spawn(async move {
            let (ptx, mut prx) = mpsc::channel(64);
            let tx2 = tx.clone();
            let fwd = tokio::spawn(async move {
                while let Some(p) = prx.recv().await {
                    let p: crate::manager::LayerProgress = p;
                    let ev = pb::CreateEvent {
                        event: Some(pb::create_event::Event::Layer(pb::LayerProgress {
                            digest: p.digest,
                            status: p.status.to_string(),
                            current: p.current as i64,
                            total: p.total as i64,
                        })),
                    };
                    let _ = tx2.send(Ok(ev)).await;
                }
            });
            let res = m.create(spec, Some(ptx)).await;
            let _ = fwd.await;
            let msg = match res {
                Ok(rec) => {
                    Ok(pb::CreateEvent { event: Some(pb::create_event::Event::Created(to_pb(&rec, &m_log(&m, &rec)))) })
                }
                Err(e) => {
                    tracing::info!(error = %e, "create failed");
                    Err(e.into())
                }
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn start(&self, req: Request<pb::StartRequest>) -> Result<Response<pb::StartResponse>, GrpcStatus> {
        let rec = self.m.start_by_user(&req.into_inner().container).await?;
        Ok(Response::new(pb::StartResponse { container: Some(to_pb(&rec, &m_log(&self.m, &rec))) }))
    }

    async fn stop(&self, req: Request<pb::StopRequest>) -> Result<Response<pb::StopResponse>, GrpcStatus> {
        let r = req.into_inner();
        let t = (r.timeout_seconds >= 0).then(|| Duration::from_secs(r.timeout_seconds as u64));
        let rec = self.m.stop(&r.container, t, &r.signal).await?;
        Ok(Response::new(pb::StopResponse { container: Some(to_pb(&rec, &m_log(&self.m, &rec))) }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Result<Response<pb::KillResponse>, GrpcStatus> {
        let r = req.into_inner();
        self.m.kill(&r.container, &r.signal).await?;
        Ok(Response::new(pb::KillResponse {}))
    }

    async fn remove(&self, req: Request<pb::RemoveRequest>) -> Result<Response<pb::RemoveResponse>, GrpcStatus> {
        let r = req.into_inner();
        let id = self.m.remove_with_volumes(&r.container, r.force, r.volumes).await?;
        Ok(Response::new(pb::RemoveResponse { id }))
    }

    async fn wait(&self, req: Request<pb::WaitRequest>) -> Result<Response<pb::WaitResponse>, GrpcStatus> {
        let r = req.into_inner();
        let cond = match pb::WaitCondition::try_from(r.condition).unwrap_or(pb::WaitCondition::NotRunning) {
            pb::WaitCondition::NotRunning => WaitFor::NotRunning,
            pb::WaitCondition::Removed => WaitFor::Removed,
            pb::WaitCondition::NextExit => WaitFor::NextExit,
        };
        let (exit_code, error) = self.m.wait(&r.container, cond).await?;
        Ok(Response::new(pb::WaitResponse { exit_code, error }))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, GrpcStatus> {
        let all = req.into_inner().all;
        let containers = self.m.list(all).iter().map(|r| to_pb(r, &m_log(&self.m, r))).collect();
        Ok(Response::new(pb::ListResponse { containers }))
    }

    async fn inspect(&self, req: Request<pb::InspectRequest>) -> Result<Response<pb::InspectResponse>, GrpcStatus> {
        let rec = self.m.inspect(&req.into_inner().container)?;
        Ok(Response::new(pb::InspectResponse { container: Some(to_pb(&rec, &m_log(&self.m, &rec))) }))
    }

    async fn prune(&self, _req: Request<pb::PruneRequest>) -> Result<Response<pb::PruneResponse>, GrpcStatus> {
        let removed = self.m.prune().await;
        Ok(Response::new(pb::PruneResponse { removed }))
    }

    async fn attach(
        &self,
        req: Request<Streaming<pb::AttachRequest>>,
    ) -> Result<Response<Self::AttachStream>, GrpcStatus> {
        let mut inbound = req.into_inner();
        let open = match inbound.message().await? {
            Some(pb::AttachRequest { msg: Some(pb::attach_request::Msg::Open(o)) }) => o,
            _ => return Err(GrpcStatus::invalid_argument("the first Attach message must be `open`")),
        };
        let opts = AttachOpts {
            stdin: open.stdin,
            stdout: open.stdout,
            stderr: open.stderr,
            size: open.size.and_then(size_of),
        };
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel::<AttachOutput>(64);
        pump_input(inbound, in_tx, |m| match m.msg? {
            pb::attach_request::Msg::Stdin(d) => Some(AttachInput::Stdin(d)),
            pb::attach_request::Msg::CloseStdin(true) => Some(AttachInput::CloseStdin),
            pb::attach_request::Msg::Resize(s) => Some(AttachInput::Resize(s.width as u16, s.height as u16)),
            _ => None,
        });
        let m = self.m.clone();
        Ok(Response::new(relay_output(out_rx, async move { m.attach(&open.container, opts, in_rx, out_tx).await })))
    }

    async fn exec(&self, req: Request<Streaming<pb::ExecRequest>>) -> Result<Response<Self::ExecStream>, GrpcStatus> {
        let mut inbound = req.into_inner();
        let open = match inbound.message().await? {
            Some(pb::ExecRequest { msg: Some(pb::exec_request::Msg::Open(o)) }) => o,
            _ => return Err(GrpcStatus::invalid_argument("the first Exec message must be `open`")),
        };
        let spec = crate::exec::ExecSpec {
            cmd: open.cmd,
            env: open.env,
            user: open.user,
            working_dir: open.working_dir,
            tty: open.tty,
            stdin: open.stdin,
            detach: open.detach,
            size: open.size.and_then(size_of),
        };
        let (in_tx, in_rx) = mpsc::channel(16);
        let (out_tx, out_rx) = mpsc::channel::<AttachOutput>(64);
        pump_input(inbound, in_tx, |m| match m.msg? {
            pb::exec_request::Msg::Stdin(d) => Some(AttachInput::Stdin(d)),
            pb::exec_request::Msg::CloseStdin(true) => Some(AttachInput::CloseStdin),
            pb::exec_request::Msg::Resize(s) => Some(AttachInput::Resize(s.width as u16, s.height as u16)),
            _ => None,
        });
        let m = self.m.clone();
        Ok(Response::new(relay_output(out_rx, async move {
            crate::exec::exec(&m, &open.container, spec, in_rx, out_tx).await
        })))
    }

    async fn prefetch(
        &self,
        req: Request<Streaming<pb::PrefetchRequest>>,
    ) -> Result<Response<Self::PrefetchStream>, GrpcStatus> {
        Ok(Response::new(prefetch::serve(self.m.clone(), req.into_inner())))
    }

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<Self::LogsStream>, GrpcStatus> {
        let r = req.into_inner();
        let q = crate::logs::LogsQuery {
            follow: r.follow,
            tail: (r.tail >= 0).then_some(r.tail as usize),
            since: r.since_unix_nanos,
            until: r.until_unix_nanos,
            stdout: r.stdout,
            stderr: r.stderr,
        };
        // Unknown containers fail the call itself, not the stream.
        self.m.record_and_dir(&r.container)?;
        let (ltx, mut lrx) = mpsc::channel::<Vec<crate::logs::LogLine>>(8);
        let (tx, rx) = mpsc::channel::<Result<pb::LogsResponse, GrpcStatus>>(8);
        let m = self.m.clone();
        let txe = tx.clone();
        tokio::spawn(async move {
            let fwd = tokio::spawn(async move {
                loop {
                    let batch = tokio::select! {
                        b = lrx.recv() => b,
                        _ = tx.closed() => None,
                    };
                    let Some(batch) = batch else { break };
                    let entries = batch
                        .into_iter()
                        .map(|l| pb::LogEntry { stderr: l.stderr, time_unix_nanos: l.time, line: l.line })
                        .collect();
                    if tx.send(Ok(pb::LogsResponse { entries })).await.is_err() {
                        break;
                    }
                }
            });
            if let Err(e) = crate::logs::logs(m, &r.container, q, ltx).await {
                let _ = txe.send(Err(e.into())).await;
            }
            let _ = fwd.await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn top(&self, req: Request<pb::TopRequest>) -> Result<Response<pb::TopResponse>, GrpcStatus> {
        Ok(Response::new(storage::top(&self.m, req.into_inner()).await?))
    }

    async fn stats(&self, req: Request<pb::StatsRequest>) -> Result<Response<pb::StatsResponse>, GrpcStatus> {
        Ok(Response::new(storage::stats(&self.m, req.into_inner())?))
    }

    async fn create_volume(
        &self,
        req: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, GrpcStatus> {
        Ok(Response::new(storage::create_volume(&self.m, req.into_inner())?))
    }

    async fn list_volumes(
        &self,
        _req: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, GrpcStatus> {
        Ok(Response::new(storage::list_volumes(&self.m)))
    }

    async fn inspect_volume(
        &self,
        req: Request<pb::InspectVolumeRequest>,
    ) -> Result<Response<pb::InspectVolumeResponse>, GrpcStatus> {
        Ok(Response::new(storage::inspect_volume(&self.m, &req.into_inner().name)?))
    }

    async fn remove_volume(
        &self,
        req: Request<pb::RemoveVolumeRequest>,
    ) -> Result<Response<pb::RemoveVolumeResponse>, GrpcStatus> {
        Ok(Response::new(storage::remove_volume(&self.m, &req.into_inner().name)?))
    }

    async fn prune_volumes(
        &self,
        req: Request<pb::PruneVolumesRequest>,
    ) -> Result<Response<pb::PruneVolumesResponse>, GrpcStatus> {
        Ok(Response::new(storage::prune_volumes(&self.m, req.into_inner().all)))
    }
}
