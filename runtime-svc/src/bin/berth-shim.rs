//! `berth-shim`: the supervisor of one container (like conmon or containerd-shim).
//!
//! runtime-svc starts it per container run; it detaches (setsid + fork) so it survives
//! runtime-svc being restarted or killed, becomes a child subreaper, owns the container's stdio
//! (pipes, or the pty master it receives from the runtime over `--console-socket`), writes the
//! json-file log (rotated at a size), runs the OCI runtime (`runc run -d`) when told to start and
//! `runc exec -d` for exec sessions, reaps the container's init and exec'd processes, cleans up
//! (runtime delete, rootfs unmount), writes the exit status atomically to `<dir>/exit`, and
//! serves `<dir>/shim.sock` (see `shim_proto`) for start, kill, status, wait, attach and exec.
//!
//! Deliberately small: std and libc only, one thread per pipe and per connection with small
//! stacks, no async runtime; the main thread is the reaper. Linked as a static PIE against
//! glibc (`runtime-svc/build.rs`): one runs per container, and a static shim's resident memory
//! is ~0.5 MB smaller than a dynamic one's. Invocation:
//! `berth-shim --id ID --dir DIR --bundle DIR --rootfs DIR --runtime PATH --runtime-root DIR
//!  --cgroup PATH [--stdin] [--tty] [--log-max-size BYTES] [--log-max-file N]`; it prints
//! `READY <pid>` on stdout once the socket is listening.

#[path = "../shim_proto.rs"]
#[allow(dead_code)]
mod proto;

use proto::Exit;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STACK: usize = 64 * 1024;
/// Output is read in chunks of this size (one frame each).
const CHUNK: usize = 8 * 1024;

struct Args {
    id: String,
    dir: PathBuf,
    bundle: PathBuf,
    rootfs: PathBuf,
    runtime: PathBuf,
    runtime_root: PathBuf,
    cgroup: String,
    stdin: bool,
    tty: bool,
    log_max_size: u64,
    log_max_file: u32,
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

/// Where a session's client frames go: the process's stdin and, with a tty, the pty master
/// (for resizes). Shared by the container's attach connections and by one exec session.
struct Input {
    stdin_w: Mutex<Option<File>>,
    pty: Mutex<Option<File>>,
    /// The last terminal size asked for (applied when the pty arrives).
    size: Mutex<Option<(u16, u16)>>,
    tty: bool,
}

impl Input {
    fn new(stdin_w: Option<File>, tty: bool) -> Input {
        Input { stdin_w: Mutex::new(stdin_w), pty: Mutex::new(None), size: Mutex::new(None), tty }
    }

    fn resize(&self, cols: u16, rows: u16) {
        if cols == 0 || rows == 0 {
            return;
        }
        *self.size.lock().unwrap() = Some((cols, rows));
        if let Some(p) = self.pty.lock().unwrap().as_ref() {
            set_winsize(p, cols, rows);
        }
    }

    /// Installs the pty master: applies the size asked for so far.
    fn set_pty(&self, master: &File) -> io::Result<()> {
        if let Some((c, r)) = *self.size.lock().unwrap() {
            set_winsize(master, c, r);
        }
        *self.pty.lock().unwrap() = Some(master.try_clone()?);
        Ok(())
    }
}

fn set_winsize(f: &File, cols: u16, rows: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

struct Shared {
    args: Args,
    state: Mutex<State>,
    cond: Condvar,
    clients: Mutex<Clients>,
    input: Input,
    /// The container's ends of the stdio pipes, handed to the runtime at start (None with a tty).
    child_stdio: Mutex<Option<(File, File, File)>>,
    log: Mutex<LogFile>,
    /// Output pumps still running, and connections still owing a reply.
    pumps: Mutex<usize>,
    pumps_cond: Condvar,
    pending: Mutex<usize>,
    pending_cond: Condvar,
    reaper: Reaper,
    exec_seq: AtomicU32,
}

/// Attached clients; `exit` is set once they have been sent the exit frame (late attachers get
/// it at once).
struct Clients {
    list: Vec<Client>,
    exit: Option<Exit>,
}

/// Exit statuses of reaped children. The main thread reaps every child (`waitpid(-1)`: the
/// runtime processes, the container's init and exec'd processes, which are reparented to us as
/// the subreaper); threads that started a process wait here for its status.
struct Reaper {
    st: Mutex<ReapState>,
    cond: Condvar,
}

#[derive(Default)]
struct ReapState {
    /// (pid, wait status), oldest first.
    done: Vec<(i32, i32)>,
    /// Pids nobody will wait for (detached exec processes): dropped when reaped.
    ignore: Vec<i32>,
    /// Bumped when a child is spawned, so the reaper knows to call waitpid again.
    gen: u64,
}

impl Reaper {
    /// Tells the reaper a new child exists.
    fn kick(&self) {
        self.st.lock().unwrap().gen += 1;
        self.cond.notify_all();
    }

    /// Blocks until `pid` has been reaped; its wait status.
    fn wait(&self, pid: i32) -> i32 {
        let mut st = self.st.lock().unwrap();
        loop {
            if let Some(i) = st.done.iter().position(|(p, _)| *p == pid) {
                return st.done.remove(i).1;
            }
            st = self.cond.wait(st).unwrap();
        }
    }

    /// Nobody will wait for `pid`.
    fn forget(&self, pid: i32) {
        let mut st = self.st.lock().unwrap();
        if let Some(i) = st.done.iter().position(|(p, _)| *p == pid) {
            st.done.remove(i);
        } else {
            st.ignore.push(pid);
        }
    }

    /// Reaps children until `until` says the awaited one is done (checked before each wait).
    fn run(&self, mut until: impl FnMut(&mut ReapState) -> Option<Exit>) -> Exit {
        loop {
            let gen = {
                let mut st = self.st.lock().unwrap();
                if let Some(e) = until(&mut st) {
                    return e;
                }
                st.gen
            };
            let mut status = 0;
            let r = unsafe { libc::waitpid(-1, &mut status, 0) };
            if r > 0 {
                let mut st = self.st.lock().unwrap();
                if let Some(i) = st.ignore.iter().position(|p| *p == r) {
                    st.ignore.remove(i);
                } else {
                    st.done.push((r, status));
                    // Orphans of the container nobody waits for: keep the list bounded.
                    if st.done.len() > 256 {
                        st.done.remove(0);
                    }
                }
                drop(st);
                self.cond.notify_all();
                continue;
            }
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // No children right now: sleep until one is spawned (or the state changes).
            let st = self.st.lock().unwrap();
            if st.gen == gen {
                let _ = self.cond.wait_timeout(st, Duration::from_secs(1)).unwrap();
            }
        }
    }
}

/// A wait status as an exit code (128+N for signal N).
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
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
        // One malloc arena for all threads, and no per-thread caches of freed chunks: a few
        // hundred KiB less resident memory per shim.
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 * 1024);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
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
    let (mut stdin, mut tty, mut log_max_size, mut log_max_file) = (false, false, 0u64, 1u32);
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
            "--tty" => tty = true,
            "--log-max-size" => log_max_size = val()?.parse().map_err(|_| "bad --log-max-size".to_string())?,
            "--log-max-file" => log_max_file = val()?.parse().map_err(|_| "bad --log-max-file".to_string())?,
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
        tty,
        log_max_size,
        log_max_file: log_max_file.max(1),
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
        libc::dup2(shim_log.as_raw_fd(), 2);
        libc::dup2(devnull.as_raw_fd(), 0);
    }
    drop(shim_log);
    let mut outputs = Vec::new();
    let (child_stdio, in_w) = if args.tty {
        // The runtime makes the pty and hands us its master at start.
        (None, None)
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        outputs.push((out_r, proto::FRAME_STDOUT));
        outputs.push((err_r, proto::FRAME_STDERR));
        let (in_r, in_w) = if args.stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (devnull.try_clone()?, None)
        };
        (Some((in_r, out_w, err_w)), in_w)
    };
    let log = LogFile::open(args.log_max_size, args.log_max_file)?;
    let _ = fs::remove_file("shim.sock");
    let listener = UnixListener::bind("shim.sock")?;
    let pid = std::process::id();
    write_atomic("shim.pid", format!("{pid}\n").as_bytes())?;

    let tty = args.tty;
    let shared = Arc::new(Shared {
        args,
        state: Mutex::new(State::Created),
        cond: Condvar::new(),
        clients: Mutex::new(Clients { list: Vec::new(), exit: None }),
        input: Input::new(in_w, tty),
        child_stdio: Mutex::new(child_stdio),
        log: Mutex::new(log),
        pumps: Mutex::new(outputs.len()),
        pumps_cond: Condvar::new(),
        pending: Mutex::new(0),
        pending_cond: Condvar::new(),
        reaper: Reaper { st: Mutex::new(ReapState::default()), cond: Condvar::new() },
        exec_seq: AtomicU32::new(0),
    });
    for (r, kind) in outputs {
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
    unsafe { libc::dup2(devnull.as_raw_fd(), 1) };
    drop(devnull);

    let exit = supervise(&shared);
    finish(&shared, exit);
    Ok(())
}

fn spawn(f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new().stack_size(STACK).spawn(f) {
        eprintln!("berth-shim: cannot start thread: {e}");
    }
}

/// Reaps children until the container's init has exited (or the start failed); how it ended.
fn supervise(s: &Shared) -> Exit {
    s.reaper.run(|reaped| {
        let st = s.state.lock().unwrap();
        match &*st {
            State::Created | State::Starting => None,
            State::Failed(e) | State::Exited(e) => Some(e.clone()),
            State::Running(pid) => {
                let i = reaped.done.iter().position(|(p, _)| p == pid)?;
                let status = reaped.done.remove(i).1;
                Some(Exit { code: exit_code(status), oom: oom_killed(&s.args.cgroup), error: String::new() })
            }
        }
    })
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
    // Clean up: the runtime's state and cgroup, then the rootfs mount. Nothing reaps children
    // any more, so `status()` may wait for its own child.
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
    // Give WAIT connections (and a START that raced the exit) a moment to deliver their replies.
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

/// Reads one chunk; `None` at EOF (a pty master reports EIO once every slave is closed).
fn read_chunk(r: &mut File, buf: &mut [u8]) -> Option<usize> {
    loop {
        match r.read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
}

/// Copies one of the container's outputs (a pipe or the pty master) into the log and to
/// attached clients.
fn pump(s: Arc<Shared>, mut r: File, kind: u8) {
    let mut buf = vec![0u8; CHUNK];
    while let Some(n) = read_chunk(&mut r, &mut buf) {
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
    let mut reader = BufReader::with_capacity(1024, conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut w = conn;
    let mut words = line.split_whitespace();
    match words.next().unwrap_or("") {
        "START" => {
            // Counted before the state can reach Running, so `finish` (which follows the
            // exit of a container that ends at once) waits for this reply to be written.
            *s.pending.lock().unwrap() += 1;
            let reply = start(s);
            if let Some(d) = start_reply_delay() {
                std::thread::sleep(d);
            }
            let r = w.write_all(reply.as_bytes());
            *s.pending.lock().unwrap() -= 1;
            s.pending_cond.notify_all();
            r
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
        "ATTACH" => {
            let flags = words.next().unwrap_or("-").to_string();
            let size = parse_size(words.next(), words.next());
            attach(s, w, reader, &flags, size)
        }
        "EXEC" => {
            let flags = words.next().unwrap_or("-").to_string();
            let size = parse_size(words.next(), words.next());
            let len: usize = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            exec(s, w, reader, &flags, size, len)
        }
        other => w.write_all(format!("ERR 125 unknown command {other:?}\n").as_bytes()),
    }
}

/// Fault injection for the tests: `BERTH_SHIM_TEST_START_REPLY_DELAY_MS` (inherited from
/// runtime-svc) holds the START reply back this long after the container started, which makes
/// a container that exits at once finish before its START reply is written, every time
/// (`run_basic::containers_that_exit_at_once`). Unset in normal use.
fn start_reply_delay() -> Option<Duration> {
    let ms: u64 = std::env::var("BERTH_SHIM_TEST_START_REPLY_DELAY_MS").ok()?.parse().ok()?;
    Some(Duration::from_millis(ms.min(5_000)))
}

fn parse_size(c: Option<&str>, r: Option<&str>) -> Option<(u16, u16)> {
    let (c, r) = (c?.parse().ok()?, r?.parse().ok()?);
    (c > 0 && r > 0).then_some((c, r))
}

/// A `--console-socket` for the runtime: a listener in our dir and the path to give the
/// runtime (which may change its working directory; long paths go through /proc).
fn console_socket(name: &str) -> io::Result<(UnixListener, String)> {
    let _ = fs::remove_file(name);
    let l = UnixListener::bind(name)?;
    let cwd = std::env::current_dir()?.join(name);
    let path = if cwd.as_os_str().len() < 100 {
        cwd.display().to_string()
    } else {
        format!("/proc/{}/cwd/{name}", std::process::id())
    };
    Ok((l, path))
}

/// Takes the pty master the runtime sent over the console socket (already queued: the runtime
/// has exited).
fn recv_pty(l: &UnixListener) -> io::Result<File> {
    l.set_nonblocking(true)?;
    let (conn, _) = l.accept().map_err(|e| io::Error::other(format!("the runtime sent no pty: {e}")))?;
    let mut data = [0u8; 512];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr().cast(), iov_len: data.len() };
    let mut cbuf = [0u64; 16];
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32);
                return Ok(File::from_raw_fd(fd));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Err(io::Error::other("the runtime sent no pty"))
}

/// Runs the runtime with `args` and the given stdio; its exit status. Spawned children are
/// reaped by the main thread, so wait through the reaper.
fn run_runtime(s: &Shared, args: &[&str], stdio: Option<(File, File, File)>) -> io::Result<i32> {
    let mut cmd = Command::new(&s.args.runtime);
    cmd.arg("--root").arg(&s.args.runtime_root).args(args);
    match stdio {
        Some((i, o, e)) => cmd.stdin(i).stdout(o).stderr(e),
        None => cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()),
    };
    let child = cmd.spawn()?;
    drop(cmd);
    s.reaper.kick();
    Ok(exit_code(s.reaper.wait(child.id() as i32)))
}

/// Runs the OCI runtime once; the reply line for START.
fn start(s: &Arc<Shared>) -> String {
    {
        let mut st = s.state.lock().unwrap();
        if !matches!(*st, State::Created) {
            return "ERR 125 container was already started\n".into();
        }
        *st = State::Starting;
    }
    let outcome = start_inner(s);
    let reply = match &outcome {
        Ok(pid) => format!("OK {pid}\n"),
        Err(e) => format!("ERR {} {}\n", e.code, e.error.replace('\n', " ")),
    };
    *s.state.lock().unwrap() = match outcome {
        Ok(pid) => State::Running(pid),
        Err(e) => State::Failed(e),
    };
    s.cond.notify_all();
    s.reaper.kick();
    reply
}

fn start_inner(s: &Arc<Shared>) -> Result<i32, Exit> {
    let fail = |e: String| Exit { code: 125, oom: false, error: e };
    let stdio = s.child_stdio.lock().unwrap().take();
    let console =
        if s.args.tty { Some(console_socket("console.sock").map_err(|e| fail(e.to_string()))?) } else { None };
    let bundle = s.args.bundle.display().to_string();
    let mut args = vec!["--log", "runc.log", "--log-format", "json", "run", "--detach", "--pid-file", "init.pid"];
    if let Some((_, path)) = &console {
        args.extend(["--console-socket", path.as_str()]);
    }
    args.extend(["--bundle", bundle.as_str(), s.args.id.as_str()]);
    let code =
        run_runtime(s, &args, stdio).map_err(|e| fail(format!("cannot run {}: {e}", s.args.runtime.display())))?;
    if code != 0 {
        let _ = fs::remove_file("console.sock");
        return Err(runtime_error("runc.log"));
    }
    let pid = fs::read_to_string("init.pid")
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
        .ok_or_else(|| fail("the runtime did not report the container's pid".into()))?;
    if let Some((l, _)) = console {
        let _ = fs::remove_file("console.sock");
        let master = recv_pty(&l).map_err(|e| fail(e.to_string()))?;
        s.input.set_pty(&master).map_err(|e| fail(e.to_string()))?;
        if s.args.stdin {
            *s.input.stdin_w.lock().unwrap() = Some(master.try_clone().map_err(|e| fail(e.to_string()))?);
        }
        *s.pumps.lock().unwrap() += 1;
        let sh = s.clone();
        spawn(move || pump(sh, master, proto::FRAME_STDOUT));
    }
    Ok(pid)
}

/// The runtime's last error message (from its json log), classified as docker does (127 not
/// found, 126 not executable, 125 anything else).
fn runtime_error(log: &str) -> Exit {
    let mut msg = String::from("the OCI runtime failed to start the container");
    if let Ok(text) = fs::read_to_string(log) {
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

/// Reads client frames (stdin, close stdin, resize) until the client goes away.
fn client_frames(r: &mut impl Read, input: &Input, want_in: bool) {
    let mut hdr = [0u8; 5];
    let mut data = Vec::new();
    loop {
        if r.read_exact(&mut hdr).is_err() {
            break;
        }
        let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
        if len > proto::MAX_FRAME {
            break;
        }
        data.resize(len, 0);
        if r.read_exact(&mut data).is_err() {
            break;
        }
        match hdr[0] {
            proto::FRAME_STDIN if want_in => {
                let mut g = input.stdin_w.lock().unwrap();
                if let Some(f) = g.as_mut() {
                    if f.write_all(&data).is_err() {
                        *g = None;
                    }
                }
            }
            // A terminal has no EOF of its own: the user types Ctrl-D, which is a byte.
            proto::FRAME_CLOSE_STDIN if want_in && !input.tty => {
                input.stdin_w.lock().unwrap().take();
            }
            proto::FRAME_RESIZE if data.len() == 4 => {
                input.resize(u16::from_be_bytes([data[0], data[1]]), u16::from_be_bytes([data[2], data[3]]));
            }
            _ => {}
        }
    }
}

fn attach(
    s: &Arc<Shared>,
    mut w: UnixStream,
    mut r: BufReader<UnixStream>,
    flags: &str,
    size: Option<(u16, u16)>,
) -> io::Result<()> {
    let (want_in, out, err) = (flags.contains('i'), flags.contains('o'), flags.contains('e'));
    if let Some((c, rows)) = size {
        s.input.resize(c, rows);
    }
    {
        let mut clients = s.clients.lock().unwrap();
        w.write_all(if s.args.tty { b"OK 1\n" } else { b"OK 0\n" })?;
        if let Some(e) = &clients.exit {
            write_frame(&mut w, proto::FRAME_EXIT, e.to_line().as_bytes())?;
            return Ok(());
        }
        // A client that stops reading must not stall the container's output for long.
        w.set_write_timeout(Some(Duration::from_secs(30)))?;
        clients.list.push(Client { sock: w.try_clone()?, out, err });
    }
    client_frames(&mut r, &s.input, want_in);
    Ok(())
}

/// A started exec process: pid, its outputs (with their frame kinds), its input.
type Started = (i32, Vec<(File, u8)>, Input);

/// One exec session: `runc exec -d` of the process in `<len>` bytes of JSON (an OCI
/// `process`), with new pipes or a pty; its output and exit go to this connection only.
fn exec(
    s: &Arc<Shared>,
    mut w: UnixStream,
    mut r: BufReader<UnixStream>,
    flags: &str,
    size: Option<(u16, u16)>,
    len: usize,
) -> io::Result<()> {
    let (want_in, tty, detach) = (flags.contains('i'), flags.contains('t'), flags.contains('d'));
    if len == 0 || len > 1 << 20 {
        return w.write_all(b"ERR 125 bad exec request\n");
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json)?;
    if !matches!(*s.state.lock().unwrap(), State::Running(_)) {
        return w.write_all(b"ERR 125 container is not running\n");
    }
    let n = s.exec_seq.fetch_add(1, Ordering::Relaxed);
    let (pfile, pidfile, logfile, sockname) =
        (format!("exec-{n}.json"), format!("exec-{n}.pid"), format!("exec-{n}.log"), format!("exec-{n}.sock"));
    let cleanup = || {
        for f in [&pfile, &pidfile, &logfile, &sockname] {
            let _ = fs::remove_file(f);
        }
    };
    let result = (|| -> Result<Started, Exit> {
        let fail = |e: io::Error| Exit { code: 125, oom: false, error: e.to_string() };
        fs::write(&pfile, &json).map_err(fail)?;
        let devnull = || File::options().read(true).write(true).open("/dev/null");
        let mut outputs = Vec::new();
        let (stdio, stdin_w, console) = if tty {
            (None, None, Some(console_socket(&sockname).map_err(fail)?))
        } else if detach {
            (Some((devnull().map_err(fail)?, devnull().map_err(fail)?, devnull().map_err(fail)?)), None, None)
        } else {
            let (out_r, out_w) = pipe().map_err(fail)?;
            let (err_r, err_w) = pipe().map_err(fail)?;
            outputs.push((out_r, proto::FRAME_STDOUT));
            outputs.push((err_r, proto::FRAME_STDERR));
            let (in_r, in_w) = if want_in {
                let (a, b) = pipe().map_err(fail)?;
                (a, Some(b))
            } else {
                (devnull().map_err(fail)?, None)
            };
            (Some((in_r, out_w, err_w)), in_w, None)
        };
        let mut args = vec!["--log", logfile.as_str(), "--log-format", "json", "exec", "--detach"];
        args.extend(["--pid-file", pidfile.as_str(), "--process", pfile.as_str()]);
        if let Some((_, path)) = &console {
            args.extend(["--console-socket", path.as_str()]);
        }
        args.push(s.args.id.as_str());
        let code = run_runtime(s, &args, stdio).map_err(fail)?;
        if code != 0 {
            return Err(runtime_error(&logfile));
        }
        let pid = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .ok_or_else(|| fail(io::Error::other("the runtime did not report the process's pid")))?;
        let input = Input::new(if want_in && !detach { stdin_w } else { None }, tty);
        if let Some((c, rows)) = size {
            input.resize(c, rows);
        }
        if let Some((l, _)) = console {
            let master = recv_pty(&l).map_err(fail)?;
            input.set_pty(&master).map_err(fail)?;
            if want_in && !detach {
                *input.stdin_w.lock().unwrap() = Some(master.try_clone().map_err(fail)?);
            }
            outputs.push((master, proto::FRAME_STDOUT));
        }
        Ok((pid, outputs, input))
    })();
    cleanup();
    let (pid, outputs, input) = match result {
        Ok(v) => v,
        Err(e) => return w.write_all(format!("ERR {} {}\n", e.code, e.error.replace('\n', " ")).as_bytes()),
    };
    w.write_all(format!("OK {pid}\n").as_bytes())?;
    if detach {
        s.reaper.forget(pid);
        return Ok(());
    }
    // Output pumps write frames to this connection; the waiter sends the exit frame once the
    // process is reaped and its output drained; this thread reads the client's frames.
    let conn = Arc::new(Mutex::new(Some(w.try_clone()?)));
    let done = Arc::new((Mutex::new(outputs.len()), Condvar::new()));
    for (mut f, kind) in outputs {
        let (conn, done) = (conn.clone(), done.clone());
        spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            while let Some(n) = read_chunk(&mut f, &mut buf) {
                let mut c = conn.lock().unwrap();
                if let Some(sock) = c.as_mut() {
                    if write_frame(sock, kind, &buf[..n]).is_err() {
                        // Detached: keep draining so the process never blocks on its output.
                        *c = None;
                    }
                }
            }
            *done.0.lock().unwrap() -= 1;
            done.1.notify_all();
        });
    }
    {
        let s = s.clone();
        spawn(move || {
            let status = s.reaper.wait(pid);
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut n = done.0.lock().unwrap();
            while *n > 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                n = done.1.wait_timeout(n, left).unwrap().0;
            }
            drop(n);
            let exit = Exit { code: exit_code(status), oom: false, error: String::new() };
            if let Some(mut sock) = conn.lock().unwrap().take() {
                let _ = write_frame(&mut sock, proto::FRAME_EXIT, exit.to_line().as_bytes());
                let _ = sock.shutdown(std::net::Shutdown::Both);
            }
        });
    }
    client_frames(&mut r, &input, want_in);
    Ok(())
}

/// The json-file log: one `{"log","stream","time"}` object per line of output, rotated to
/// `log.json.1` … `log.json.<max_file-1>` when it would exceed `max_size` (0 = never).
struct LogFile {
    file: File,
    size: u64,
    max_size: u64,
    max_file: u32,
    partial: [Vec<u8>; 2],
}

impl LogFile {
    fn open(max_size: u64, max_file: u32) -> io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open("log.json")?;
        let size = file.metadata()?.len();
        Ok(LogFile { file, size, max_size, max_file, partial: [vec![], vec![]] })
    }

    fn write(&mut self, kind: u8, data: &[u8]) {
        let idx = usize::from(kind != proto::FRAME_STDOUT);
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (line, tail) = rest.split_at(nl + 1);
            if self.partial[idx].is_empty() {
                self.entry(idx, line);
            } else {
                let mut full = std::mem::take(&mut self.partial[idx]);
                full.extend_from_slice(line);
                self.entry(idx, &full);
            }
            rest = tail;
        }
        self.partial[idx].extend_from_slice(rest);
        if self.partial[idx].len() >= 16 * 1024 {
            let full = std::mem::take(&mut self.partial[idx]);
            self.entry(idx, &full);
        }
        if self.partial[idx].is_empty() && self.partial[idx].capacity() > 4096 {
            self.partial[idx] = Vec::new();
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
        let mut out = String::with_capacity(line.len() + 80);
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
        if self.max_size > 0 && self.size > 0 && self.size + out.len() as u64 > self.max_size {
            if let Err(e) = self.rotate() {
                eprintln!("berth-shim: rotating the log: {e}");
            }
        }
        if self.file.write_all(out.as_bytes()).is_ok() {
            self.size += out.len() as u64;
        }
    }

    /// log.json.<k> → log.json.<k+1> (the oldest falls off), log.json → log.json.1, new
    /// log.json. With max_file 1 the file is truncated instead.
    fn rotate(&mut self) -> io::Result<()> {
        if self.max_file <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for k in (1..self.max_file - 1).rev() {
            let _ = fs::rename(format!("log.json.{k}"), format!("log.json.{}", k + 1));
        }
        fs::rename("log.json", "log.json.1")?;
        self.file = OpenOptions::new().create(true).append(true).open("log.json")?;
        self.size = 0;
        Ok(())
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
