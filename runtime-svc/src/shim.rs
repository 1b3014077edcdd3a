//! runtime-svc's side of the shims: starting one (`berth-shim`, which detaches itself) and
//! talking to it over its socket (`shim_proto`).

use crate::shim_proto::{self, Exit};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// What a shim needs to run one container.
pub struct ShimSpec<'a> {
    /// The `berth-shim` binary.
    pub binary: &'a Path,
    /// Container ID.
    pub id: &'a str,
    /// The container's state dir (shim.sock, exit, log.json live here).
    pub dir: &'a Path,
    /// The OCI bundle dir.
    pub bundle: &'a Path,
    /// The mounted rootfs (unmounted by the shim after the exit).
    pub rootfs: &'a Path,
    /// The OCI runtime binary.
    pub runtime: &'a Path,
    /// The runtime's state root (`runc --root`).
    pub runtime_root: &'a Path,
    /// The container's cgroups path.
    pub cgroup: &'a str,
    /// Give the container a stdin pipe.
    pub stdin: bool,
    /// Give the container a pty (the shim receives its master through `--console-socket`).
    pub tty: bool,
    /// Rotate the json-file log at this size in bytes (0 = never).
    pub log_max_size: u64,
    /// Files kept by rotation, the current one included (at least 1).
    pub log_max_file: u32,
}

/// Starts a shim and waits until its socket listens; returns the shim's pid. Blocking (a
/// fork/exec and a pipe read): call from `spawn_blocking`.
pub fn spawn(s: &ShimSpec<'_>) -> std::io::Result<i32> {
    let mut cmd = Command::new(s.binary);
    cmd.arg("--id")
        .arg(s.id)
        .arg("--dir")
        .arg(s.dir)
        .arg("--bundle")
        .arg(s.bundle)
        .arg("--rootfs")
        .arg(s.rootfs)
        .arg("--runtime")
        .arg(s.runtime)
        .arg("--runtime-root")
        .arg(s.runtime_root)
        .arg("--cgroup")
        .arg(s.cgroup)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if s.stdin {
        cmd.arg("--stdin");
    }
    if s.tty {
        cmd.arg("--tty");
    }
    if s.log_max_size > 0 {
        cmd.arg("--log-max-size").arg(s.log_max_size.to_string());
        cmd.arg("--log-max-file").arg(s.log_max_file.max(1).to_string());
    }
    let mut child = cmd.spawn()?;
    let mut out = String::new();
    let mut stdout = child.stdout.take().expect("piped");
    stdout.read_to_string(&mut out)?;
    let _ = child.wait()?;
    match out.trim().strip_prefix("READY ") {
        Some(pid) => pid.parse().map_err(|_| std::io::Error::other(format!("shim said {out:?}"))),
        None => Err(std::io::Error::other(format!("shim failed to start: {}", out.trim()))),
    }
}

/// The socket path, shortened through /proc/self/fd when the real path is too long for
/// sun_path. The returned guard keeps the directory fd open.
fn socket_path(dir: &Path) -> std::io::Result<(PathBuf, Option<std::fs::File>)> {
    let p = dir.join("shim.sock");
    if p.as_os_str().len() < 100 {
        return Ok((p, None));
    }
    let f = std::fs::File::open(dir)?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    Ok((PathBuf::from(format!("/proc/self/fd/{fd}/shim.sock")), Some(f)))
}

/// Connects to a container's shim.
pub async fn connect(dir: &Path) -> std::io::Result<UnixStream> {
    let (p, _guard) = socket_path(dir)?;
    UnixStream::connect(&p).await
}

/// Sends one command line and returns the reply line (without newline).
pub async fn request(dir: &Path, line: &str) -> std::io::Result<String> {
    let mut s = connect(dir).await?;
    s.write_all(format!("{line}\n").as_bytes()).await?;
    let mut r = BufReader::new(s);
    let mut reply = String::new();
    if r.read_line(&mut reply).await? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "shim closed the connection"));
    }
    Ok(reply.trim_end().to_string())
}

/// The shim's view of the container.
#[derive(Debug)]
pub enum ShimStatus {
    /// Started but the container was not.
    Created,
    /// Running with this init pid.
    Running(i32),
    /// Exited.
    Exited(Exit),
}

/// Asks the shim for the container's status.
pub async fn status(dir: &Path) -> std::io::Result<ShimStatus> {
    let reply = request(dir, "STATUS").await?;
    if reply == "CREATED" {
        return Ok(ShimStatus::Created);
    }
    if let Some(pid) = reply.strip_prefix("RUNNING ") {
        return Ok(ShimStatus::Running(pid.parse().unwrap_or(0)));
    }
    Exit::parse(&reply).map(ShimStatus::Exited).ok_or_else(|| std::io::Error::other(format!("shim said {reply:?}")))
}

/// Blocks until the container exits.
pub async fn wait(dir: &Path) -> std::io::Result<Exit> {
    let reply = match request(dir, "WAIT").await {
        Ok(r) => r,
        // The shim exits right after answering the WAITs it has; one that reached it as it
        // was exiting finds the status in the exit file, written before the socket closed.
        Err(e) => return read_exit_file(dir).ok_or(e),
    };
    Exit::parse(&reply).ok_or_else(|| std::io::Error::other(format!("shim said {reply:?}")))
}

/// Reads the exit status the shim left in `<dir>/exit`, if any.
pub fn read_exit_file(dir: &Path) -> Option<Exit> {
    std::fs::read_to_string(dir.join("exit")).ok().and_then(|s| Exit::parse(s.trim_end()))
}

/// A start failure reported by the shim: docker-style exit code and message.
#[derive(Debug)]
pub struct StartFailure {
    /// 125, 126 or 127.
    pub code: i32,
    /// The runtime's message.
    pub message: String,
}

/// Tells the shim to run the container; returns the init pid.
pub async fn start(dir: &Path) -> std::io::Result<Result<i32, StartFailure>> {
    let reply = match request(dir, "START").await {
        Ok(r) => r,
        // The shim finished before its reply reached us (a container that exits at once):
        // its exit file says whether the start failed or the container ran and exited.
        Err(e) => {
            return match read_exit_file(dir) {
                Some(x) if !x.error.is_empty() && (125..=127).contains(&x.code) => {
                    Ok(Err(StartFailure { code: x.code, message: x.error }))
                }
                Some(_) => Ok(Ok(0)),
                None => Err(e),
            }
        }
    };
    if let Some(pid) = reply.strip_prefix("OK ") {
        return Ok(Ok(pid.parse().unwrap_or(0)));
    }
    let rest = reply.strip_prefix("ERR ").unwrap_or(&reply);
    let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    Ok(Err(StartFailure { code: code.parse().unwrap_or(125), message: msg.to_string() }))
}

/// Sends a signal to the container's init. `Ok(false)` when it is not running.
pub async fn kill(dir: &Path, signal: i32) -> std::io::Result<bool> {
    let reply = request(dir, &format!("KILL {signal}")).await?;
    Ok(reply == "OK")
}

/// One attach (or exec) connection to a shim.
pub struct AttachConn {
    /// Frames from the shim.
    pub reader: BufReader<OwnedReadHalf>,
    /// Frames to the shim.
    pub writer: OwnedWriteHalf,
    /// The process has a pty (its output comes as stdout frames only).
    pub tty: bool,
}

/// Opens an attach connection; `size` (columns, rows) is applied to the pty first.
pub async fn attach(
    dir: &Path,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    size: Option<(u16, u16)>,
) -> std::io::Result<AttachConn> {
    let s = connect(dir).await?;
    let (r, mut w) = s.into_split();
    let mut flags = String::new();
    for (on, c) in [(stdin, 'i'), (stdout, 'o'), (stderr, 'e')] {
        if on {
            flags.push(c);
        }
    }
    if flags.is_empty() {
        flags.push('-');
    }
    let line = match size {
        Some((c, r)) => format!("ATTACH {flags} {c} {r}\n"),
        None => format!("ATTACH {flags}\n"),
    };
    w.write_all(line.as_bytes()).await?;
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let Some(rest) = line.strip_prefix("OK") else {
        return Err(std::io::Error::other(format!("shim refused attach: {}", line.trim())));
    };
    Ok(AttachConn { reader, writer: w, tty: rest.trim() == "1" })
}

/// What an exec session runs (see `EXEC` in `shim_proto`).
pub struct ExecOpen<'a> {
    /// The OCI `process` object, as JSON.
    pub process: &'a [u8],
    /// Give it a stdin pipe (or the pty's input).
    pub stdin: bool,
    /// Give it a pty.
    pub tty: bool,
    /// Do not relay anything: the shim answers and closes.
    pub detach: bool,
    /// Initial terminal size (columns, rows).
    pub size: Option<(u16, u16)>,
}

/// Starts a process in the running container through its shim. `Ok(Err(..))` when the
/// runtime could not start it (docker's 126/127/125 and the runtime's message).
pub async fn exec(dir: &Path, o: &ExecOpen<'_>) -> std::io::Result<Result<(i32, AttachConn), StartFailure>> {
    let s = connect(dir).await?;
    let (r, mut w) = s.into_split();
    let mut flags = String::new();
    for (on, c) in [(o.stdin, 'i'), (o.tty, 't'), (o.detach, 'd')] {
        if on {
            flags.push(c);
        }
    }
    if flags.is_empty() {
        flags.push('-');
    }
    let (c, rows) = o.size.unwrap_or((0, 0));
    let mut msg = format!("EXEC {flags} {c} {rows} {}\n", o.process.len()).into_bytes();
    msg.extend_from_slice(o.process);
    w.write_all(&msg).await?;
    let mut reader = BufReader::new(r);
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "shim closed the connection"));
    }
    let line = line.trim_end();
    if let Some(pid) = line.strip_prefix("OK ") {
        let conn = AttachConn { reader, writer: w, tty: o.tty };
        return Ok(Ok((pid.parse().unwrap_or(0), conn)));
    }
    let rest = line.strip_prefix("ERR ").unwrap_or(line);
    let (code, msg) = rest.split_once(' ').unwrap_or((rest, ""));
    Ok(Err(StartFailure { code: code.parse().unwrap_or(125), message: msg.to_string() }))
}

/// Reads one frame (kind, payload); `None` at EOF.
pub async fn read_frame(r: &mut BufReader<OwnedReadHalf>) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut hdr = [0u8; 5];
    match r.read_exact(&mut hdr).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    if len > shim_proto::MAX_FRAME {
        return Err(std::io::Error::other("frame too large"));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data).await?;
    Ok(Some((hdr[0], data)))
}

/// Writes one frame.
pub async fn write_frame(w: &mut OwnedWriteHalf, kind: u8, data: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(5 + data.len());
    buf.extend_from_slice(&shim_proto::frame_header(kind, data.len()));
    buf.extend_from_slice(data);
    w.write_all(&buf).await
}
