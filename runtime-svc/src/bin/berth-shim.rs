//! `berth-shim`: the supervisor of one container (like conmon or containerd-shim).
//!
//! runtime-svc starts it per container run; it detaches (setsid + fork) so it survives
//! runtime-svc being restarted or killed, becomes a child subreaper, owns the container's stdio
//! pipes, writes the json-file log, runs the OCI runtime (`runc run -d`) when told to start,
//! reaps the container's init, cleans up (runtime delete, rootfs unmount), writes the exit status
//! atomically to `<dir>/exit`, and serves `<dir>/shim.sock` (see `shim_proto`) for start, kill,
//! status, wait and attach.
//!
//! Deliberately small: std and libc only, one thread per pipe and per connection with small
//! stacks, no async runtime. Invocation:
//! `berth-shim --id ID --dir DIR --bundle DIR --rootfs DIR --runtime PATH --runtime-root DIR
//!  --cgroup PATH [--stdin]`; it prints `READY <pid>` on stdout once the socket is listening.

#[path = "../shim_proto.rs"]
#[allow(dead_code)]
mod proto;

use proto::Exit;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STACK: usize = 128 * 1024;

struct Args {
    id: String,
    dir: PathBuf,
    bundle: PathBuf,
    rootfs: PathBuf,
    runtime: PathBuf,
    runtime_root: PathBuf,
    cgroup: String,
    stdin: bool,
}

#[derive(Clone)]
enum State {
    Created,
    Starting,
    Running(i32),
    /// The runtime failed to start the process (kept until the main thread cleans up).
    Failed(Exit),
    Exited(Exit),
}

struct Client {
    sock: UnixStream,
    out: bool,
    err: bool,
}

struct Shared {
    args: Args,
    state: Mutex<State>,
    cond: Condvar,
    clients: Mutex<Clients>,
    stdin_w: Mutex<Option<File>>,
    /// The container's ends of the stdio pipes, handed to the runtime at start.
    child_stdio: Mutex<Option<(File, File, File)>>,
    log: Mutex<LogFile>,
    /// Output pumps still running, and connections still owing a reply.
    pumps: Mutex<usize>,
    pumps_cond: Condvar,
    pending: Mutex<usize>,
    pending_cond: Condvar,
}

/// Attached clients; `exit` is set once they have been sent the exit frame (late attachers get
/// it at once).
struct Clients {
    list: Vec<Client>,
    exit: Option<Exit>,
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-shim: {e}");
            std::process::exit(2);
        }
    };
    // Detach: new session, then fork so the parent (runtime-svc's child) exits at once and we
    // are reparented away from runtime-svc.
    unsafe {
        libc::setsid();
        match libc::fork() {
            -1 => {
                eprintln!("berth-shim: fork: {}", io::Error::last_os_error());
                std::process::exit(1);
            }
            0 => {}
            _ => libc::_exit(0),
        }
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // One malloc arena for all threads: a few hundred KiB less resident memory per shim.
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    if let Err(e) = run(args) {
        eprintln!("berth-shim: {e}");
        println!("ERR {e}");
        std::process::exit(1);
    }
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut id, mut dir, mut bundle, mut rootfs, mut runtime, mut runtime_root, mut cgroup) =
        (None, None, None, None, None, None, None);
    let mut stdin = false;
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--id" => id = Some(val()?),
            "--dir" => dir = Some(val()?),
            "--bundle" => bundle = Some(val()?),
            "--rootfs" => rootfs = Some(val()?),
            "--runtime" => runtime = Some(val()?),
            "--runtime-root" => runtime_root = Some(val()?),
            "--cgroup" => cgroup = Some(val()?),
            "--stdin" => stdin = true,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    let need = |v: Option<String>, n: &str| v.ok_or_else(|| format!("--{n} is required"));
    Ok(Args {
        id: need(id, "id")?,
        dir: need(dir, "dir")?.into(),
        bundle: need(bundle, "bundle")?.into(),
        rootfs: need(rootfs, "rootfs")?.into(),
        runtime: need(runtime, "runtime")?.into(),
        runtime_root: need(runtime_root, "runtime-root")?.into(),
        cgroup: need(cgroup, "cgroup")?,
        stdin,
    })
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    unsafe { Ok((File::from(OwnedFd::from_raw_fd(fds[0])), File::from(OwnedFd::from_raw_fd(fds[1])))) }
}

fn run(args: Args) -> io::Result<()> {
    std::env::set_current_dir(&args.dir)?;
    // Our own diagnostics go to shim.log; stdin/stdout are released once we are ready.
    let shim_log = OpenOptions::new().create(true).append(true).open("shim.log")?;
    let devnull = OpenOptions::new().read(true).write(true).open("/dev/null")?;
    unsafe {
        libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&shim_log), 2);
        libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 0);
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = if args.stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        (devnull.try_clone()?, None)
    };
    let log =
        LogFile { file: OpenOptions::new().create(true).append(true).open("log.json")?, partial: [vec![], vec![]] };
    let _ = fs::remove_file("shim.sock");
    let listener = UnixListener::bind("shim.sock")?;
    let pid = std::process::id();
    write_atomic("shim.pid", format!("{pid}\n").as_bytes())?;

    let shared = Arc::new(Shared {
        args,
        state: Mutex::new(State::Created),
        cond: Condvar::new(),
        clients: Mutex::new(Clients { list: Vec::new(), exit: None }),
        stdin_w: Mutex::new(in_w),
        child_stdio: Mutex::new(Some((in_r, out_w, err_w))),
        log: Mutex::new(log),
        pumps: Mutex::new(2),
        pumps_cond: Condvar::new(),
        pending: Mutex::new(0),
        pending_cond: Condvar::new(),
    });
    for (r, kind) in [(out_r, proto::FRAME_STDOUT), (err_r, proto::FRAME_STDERR)] {
        let s = shared.clone();
        spawn(move || pump(s, r, kind));
    }
    {
        let s = shared.clone();
        spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                spawn(move || {
                    let _ = handle(&s, conn);
                });
            }
        });
    }
    // Tell runtime-svc we are listening, then let go of its pipe.
    {
        let mut so = io::stdout().lock();
        writeln!(so, "READY {pid}")?;
        so.flush()?;
    }
    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), 1) };

    let exit = supervise(&shared);
    finish(&shared, exit);
    Ok(())
}

fn spawn(f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().stack_size(STACK).spawn(f) {
        eprintln!("berth-shim: cannot start thread: {e}");
    }
}

/// Waits for the start, then for the container's init to exit; returns how it ended.
fn supervise(s: &Shared) -> Exit {
    let pid = {
        let mut st = s.state.lock().unwrap();
        loop {
            match &*st {
                State::Created | State::Starting => st = s.cond.wait(st).unwrap(),
                State::Running(pid) => break *pid,
                State::Failed(e) | State::Exited(e) => return e.clone(),
            }
        }
    };
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            // Not our child (should not happen): poll until it is gone.
            while unsafe { libc::kill(pid, 0) } == 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            return Exit { code: 255, oom: false, error: "lost track of the container process".into() };
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    };
    Exit { code, oom: oom_killed(&s.args.cgroup), error: String::new() }
}

/// The cgroup saw an OOM kill (v1 memory.oom_control or v2 memory.events).
fn oom_killed(cgroup: &str) -> bool {
    let cg = cgroup.trim_start_matches('/');
    for p in [
        format!("/sys/fs/cgroup/memory/{cg}/memory.oom_control"),
        format!("/sys/fs/cgroup/{cg}/memory.events"),
        format!("/sys/fs/cgroup/unified/{cg}/memory.events"),
    ] {
        if let Ok(text) = fs::read_to_string(&p) {
            for line in text.lines() {
                if let Some(n) = line.strip_prefix("oom_kill ") {
                    if n.trim().parse::<u64>().unwrap_or(0) > 0 {
                        return true;
                    }
                }
            }
        }
    }
    false
}

fn finish(s: &Shared, exit: Exit) {
    // Let the output pumps drain (the container's processes are gone, so the pipes hit EOF).
    let deadline = Instant::now() + Duration::from_secs(2);
    {
        let mut n = s.pumps.lock().unwrap();
        while *n > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            n = s.pumps_cond.wait_timeout(n, left).unwrap().0;
        }
    }
    s.log.lock().unwrap().flush_partial();
    // Attached clients learn the exit first: they are waiting on it.
    {
        let line = exit.to_line();
        let mut clients = s.clients.lock().unwrap();
        for c in clients.list.iter_mut() {
            let _ = write_frame(&mut c.sock, proto::FRAME_EXIT, line.as_bytes());
            let _ = c.sock.shutdown(std::net::Shutdown::Write);
        }
        clients.list.clear();
        clients.exit = Some(exit.clone());
    }
    // Clean up: the runtime's state and cgroup, then the rootfs mount.
    if !remove_runtime_state(&s.args) {
        let _ = Command::new(&s.args.runtime)
            .arg("--root")
            .arg(&s.args.runtime_root)
            .args(["delete", "--force", &s.args.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Ok(c) = std::ffi::CString::new(s.args.rootfs.as_os_str().as_encoded_bytes()) {
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    if let Err(e) = write_atomic("exit", format!("{}\n", exit.to_line()).as_bytes()) {
        eprintln!("berth-shim: writing exit status: {e}");
    }
    let _ = fs::remove_file("shim.sock");
    let _ = fs::remove_file("shim.pid");
    *s.state.lock().unwrap() = State::Exited(exit);
    s.cond.notify_all();
    // Give WAIT connections a moment to deliver their replies.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut n = s.pending.lock().unwrap();
    while *n > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        n = s.pending_cond.wait_timeout(n, left).unwrap().0;
    }
}

/// What `runc delete` does for a container whose processes are all gone, without starting
/// runc again (it takes tens of milliseconds): remove the (empty) cgroup in every hierarchy and
/// runc's state dir. False when something is still there, so the caller falls back to
/// `runc delete --force`.
fn remove_runtime_state(a: &Args) -> bool {
    let cg = a.cgroup.trim_start_matches('/');
    let mut ok = true;
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup").join(cg)];
    if let Ok(rd) = fs::read_dir("/sys/fs/cgroup") {
        for de in rd.flatten() {
            if de.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                dirs.push(de.path().join(cg));
            }
        }
    }
    for d in dirs {
        for attempt in 0..50 {
            match fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                // Processes of the container still being torn down by the kernel.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 49 => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(_) => {
                    ok = false;
                    break;
                }
            }
        }
    }
    if ok {
        ok = match fs::remove_dir_all(a.runtime_root.join(&a.id)) {
            Ok(()) => true,
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        };
    }
    ok
}

fn write_atomic(path: &str, data: &[u8]) -> io::Result<()> {
    // No fsync: the file only has to outlive runtime-svc, not the host (containers do not
    // survive a reboot either).
    let tmp = format!("{path}.tmp");
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}

fn write_frame(w: &mut impl Write, kind: u8, data: &[u8]) -> io::Result<()> {
    let mut buf = Vec::with_capacity(5 + data.len());
    buf.extend_from_slice(&proto::frame_header(kind, data.len()));
    buf.extend_from_slice(data);
    w.write_all(&buf)
}

/// Copies one of the container's output pipes into the log and to attached clients.
fn pump(s: Arc<Shared>, mut r: File, kind: u8) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let data = &buf[..n];
        s.log.lock().unwrap().write(kind, data);
        let mut clients = s.clients.lock().unwrap();
        clients.list.retain_mut(|c| {
            let wanted = if kind == proto::FRAME_STDOUT { c.out } else { c.err };
            !wanted || write_frame(&mut c.sock, kind, data).is_ok()
        });
    }
    *s.pumps.lock().unwrap() -= 1;
    s.pumps_cond.notify_all();
}

fn handle(s: &Arc<Shared>, conn: UnixStream) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut w = conn;
    let mut words = line.split_whitespace();
    match words.next().unwrap_or("") {
        "START" => {
            let reply = start(s);
            w.write_all(reply.as_bytes())
        }
        "KILL" => {
            let sig: i32 = words.next().and_then(|v| v.parse().ok()).unwrap_or(libc::SIGKILL);
            let st = s.state.lock().unwrap();
            let reply = match &*st {
                State::Running(pid) => {
                    if unsafe { libc::kill(*pid, sig) } == 0 {
                        "OK\n".to_string()
                    } else {
                        format!("ERR 125 {}\n", io::Error::last_os_error())
                    }
                }
                _ => "ERR 125 container is not running\n".to_string(),
            };
            drop(st);
            w.write_all(reply.as_bytes())
        }
        "STATUS" => {
            let st = s.state.lock().unwrap().clone();
            let reply = match st {
                State::Created | State::Starting => "CREATED\n".to_string(),
                State::Running(pid) => format!("RUNNING {pid}\n"),
                State::Failed(_) => "RUNNING 0\n".to_string(),
                State::Exited(e) => format!("{}\n", e.to_line()),
            };
            w.write_all(reply.as_bytes())
        }
        "WAIT" => {
            *s.pending.lock().unwrap() += 1;
            let mut st = s.state.lock().unwrap();
            let exit = loop {
                if let State::Exited(e) = &*st {
                    break e.clone();
                }
                st = s.cond.wait(st).unwrap();
            };
            drop(st);
            let r = w.write_all(format!("{}\n", exit.to_line()).as_bytes());
            *s.pending.lock().unwrap() -= 1;
            s.pending_cond.notify_all();
            r
        }
        "ATTACH" => attach(s, w, reader, words.next().unwrap_or("-")),
        other => w.write_all(format!("ERR 125 unknown command {other:?}\n").as_bytes()),
    }
}

/// Runs the OCI runtime once; the reply line for START.
fn start(s: &Shared) -> String {
    {
        let mut st = s.state.lock().unwrap();
        if !matches!(*st, State::Created) {
            return "ERR 125 container was already started\n".into();
        }
        *st = State::Starting;
    }
    let (stdin, out, err) = s.child_stdio.lock().unwrap().take().expect("stdio is taken once");
    let result = Command::new(&s.args.runtime)
        .arg("--root")
        .arg(&s.args.runtime_root)
        .args(["--log", "runc.log", "--log-format", "json", "run", "--detach", "--pid-file", "init.pid", "--bundle"])
        .arg(&s.args.bundle)
        .arg(&s.args.id)
        .stdin(stdin)
        .stdout(out)
        .stderr(err)
        .status();
    let outcome = match result {
        Ok(st) if st.success() => {
            match fs::read_to_string("init.pid").ok().and_then(|p| p.trim().parse::<i32>().ok()) {
                Some(pid) => Ok(pid),
                None => {
                    Err(Exit { code: 125, oom: false, error: "the runtime did not report the container's pid".into() })
                }
            }
        }
        Ok(_) => Err(runtime_error()),
        Err(e) => Err(Exit { code: 125, oom: false, error: format!("cannot run {}: {e}", s.args.runtime.display()) }),
    };
    let reply = match &outcome {
        Ok(pid) => format!("OK {pid}\n"),
        Err(e) => format!("ERR {} {}\n", e.code, e.error.replace('\n', " ")),
    };
    *s.state.lock().unwrap() = match outcome {
        Ok(pid) => State::Running(pid),
        Err(e) => State::Failed(e),
    };
    s.cond.notify_all();
    reply
}

/// The runtime's last error message, classified as docker does (127 not found, 126 not
/// executable, 125 anything else).
fn runtime_error() -> Exit {
    let mut msg = String::from("the OCI runtime failed to start the container");
    if let Ok(text) = fs::read_to_string("runc.log") {
        for line in text.lines().rev() {
            if line.contains("\"level\":\"error\"") || line.contains("\"level\":\"fatal\"") {
                if let Some(m) = json_field(line, "msg") {
                    msg = m;
                    break;
                }
            }
        }
    }
    let low = msg.to_lowercase();
    let code = if low.contains("executable file not found") || low.contains("no such file or directory") {
        127
    } else if low.contains("permission denied") {
        126
    } else {
        125
    };
    Exit { code, oom: false, error: msg }
}

/// Extracts a string field from one line of JSON (enough for runc's log lines).
fn json_field(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\":\"");
    let start = line.find(&pat)? + pat.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).unwrap_or('?'));
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

fn attach(s: &Arc<Shared>, mut w: UnixStream, mut r: BufReader<UnixStream>, flags: &str) -> io::Result<()> {
    let (want_in, out, err) = (flags.contains('i'), flags.contains('o'), flags.contains('e'));
    {
        let mut clients = s.clients.lock().unwrap();
        w.write_all(b"OK 0\n")?;
        if let Some(e) = &clients.exit {
            write_frame(&mut w, proto::FRAME_EXIT, e.to_line().as_bytes())?;
            return Ok(());
        }
        clients.list.push(Client { sock: w.try_clone()?, out, err });
    }
    // Read client frames (stdin, close, resize) until the client goes away.
    let mut hdr = [0u8; 5];
    loop {
        if r.read_exact(&mut hdr).is_err() {
            break;
        }
        let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
        if len > proto::MAX_FRAME {
            break;
        }
        let mut data = vec![0u8; len];
        if r.read_exact(&mut data).is_err() {
            break;
        }
        match hdr[0] {
            proto::FRAME_STDIN if want_in => {
                let mut g = s.stdin_w.lock().unwrap();
                if let Some(f) = g.as_mut() {
                    if f.write_all(&data).is_err() {
                        *g = None;
                    }
                }
            }
            proto::FRAME_CLOSE_STDIN if want_in => {
                s.stdin_w.lock().unwrap().take();
            }
            _ => {}
        }
    }
    Ok(())
}

/// The json-file log: one `{"log","stream","time"}` object per line of output.
struct LogFile {
    file: File,
    partial: [Vec<u8>; 2],
}

impl LogFile {
    fn write(&mut self, kind: u8, data: &[u8]) {
        let idx = usize::from(kind != proto::FRAME_STDOUT);
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(nl + 1);
            let mut full = std::mem::take(&mut self.partial[idx]);
            full.extend_from_slice(line);
            self.entry(idx, &full);
            rest = tail;
        }
        self.partial[idx].extend_from_slice(rest);
        if self.partial[idx].len() >= 16 * 1024 {
            let full = std::mem::take(&mut self.partial[idx]);
            self.entry(idx, &full);
        }
    }

    fn flush_partial(&mut self) {
        for idx in 0..2 {
            if !self.partial[idx].is_empty() {
                let full = std::mem::take(&mut self.partial[idx]);
                self.entry(idx, &full);
            }
        }
    }

    fn entry(&mut self, idx: usize, line: &[u8]) {
        let mut out = String::with_capacity(line.len() + 64);
        out.push_str("{\"log\":\"");
        for c in String::from_utf8_lossy(line).chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push_str("\",\"stream\":\"");
        out.push_str(if idx == 0 { "stdout" } else { "stderr" });
        out.push_str("\",\"time\":\"");
        out.push_str(&rfc3339_now());
        out.push_str("\"}\n");
        let _ = self.file.write_all(out.as_bytes());
    }
}

/// Now as RFC 3339 UTC with nanoseconds, e.g. 2026-11-22T16:40:00.123456789Z.
fn rfc3339_now() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}
