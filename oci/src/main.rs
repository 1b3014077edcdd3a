//! `berth-runc`: Berth's built-in OCI runtime. A runc-compatible command line (the subset
//! berth-shim uses) on youki's `libcontainer`, so the shim runs it exactly as it runs runc:
//!
//! ```text
//! berth-runc [--root DIR] [--log FILE] [--log-format json|text] COMMAND …
//!   create  --bundle B [--pid-file F] [--console-socket S] [--no-pivot] ID
//!   start   ID
//!   run     [--detach] --bundle B [--pid-file F] [--console-socket S] [--no-pivot] ID
//!   state   ID
//!   kill    [--all] ID [SIGNAL]
//!   delete  [--force] ID
//!   exec    [--process P] [--detach] [--pid-file F] [--console-socket S] [--tty] [--cwd D]
//!           [--env K=V]… [--user UID[:GID]] ID [CMD…]
//!   ps      ID        (pids of the container's processes)
//! ```
//!
//! Each command runs in its own short-lived process (never inside runtime-svc); the container
//! init is left to the caller's subreaper (the shim), as with `runc run --detach`. Errors are
//! written to the `--log` file as runc writes them (`{"level":"error","msg":…}`), worded like
//! runc's where the shim classifies them (executable not found → 127, permission denied → 126).

mod exec;
mod netns;
mod seccomp;

use anyhow::{anyhow, bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::SyscallType;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Global options (runc's).
struct Global {
    root: PathBuf,
    log: Option<PathBuf>,
    json: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut g = Global { root: PathBuf::from("/run/berth-runc"), log: None, json: false };
    let rest = match parse_global(&args, &mut g) {
        Ok(r) => r,
        Err(e) => fail(&g, &e),
    };
    match run_command(&g, rest) {
        Ok(code) => std::process::exit(code),
        Err(e) => fail(&g, &e),
    }
}

/// Reports `e` to the log file (runc's format) and stderr, and exits 1.
fn fail(g: &Global, e: &anyhow::Error) -> ! {
    let msg = format!("{e:#}");
    if let Some(log) = &g.log {
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
            let line = if g.json {
                let time = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
            } else {
                format!("level=error msg={msg:?}")
            };
            let _ = writeln!(f, "{line}");
        }
    }
    eprintln!("berth-runc: {msg}");
    std::process::exit(1)
}

/// Splits `--flag value` / `--flag=value` options off the front of `args`.
struct Opts<'a> {
    args: &'a [String],
    pos: usize,
}

impl<'a> Opts<'a> {
    fn new(args: &'a [String]) -> Self {
        Opts { args, pos: 0 }
    }

    /// The next option's name and inline value, or None at the first positional argument.
    fn next_flag(&mut self) -> Option<(String, Option<String>)> {
        let a = self.args.get(self.pos)?;
        if a == "--" {
            self.pos += 1;
            return None;
        }
        if !a.starts_with('-') || a == "-" {
            return None;
        }
        self.pos += 1;
        let name = a.trim_start_matches('-');
        Some(match name.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (name.to_string(), None),
        })
    }

    fn value(&mut self, flag: &str, inline: Option<String>) -> Result<String> {
        if let Some(v) = inline {
            return Ok(v);
        }
        let v = self.args.get(self.pos).ok_or_else(|| anyhow!("flag needs an argument: --{flag}"))?;
        self.pos += 1;
        Ok(v.clone())
    }

    fn rest(&self) -> &'a [String] {
        &self.args[self.pos..]
    }
}

fn parse_global<'a>(args: &'a [String], g: &mut Global) -> Result<&'a [String]> {
    let mut o = Opts::new(args);
    while let Some((flag, inline)) = o.next_flag() {
        match flag.as_str() {
            "root" => g.root = PathBuf::from(o.value(&flag, inline)?),
            "log" => g.log = Some(PathBuf::from(o.value(&flag, inline)?)),
            "log-format" => g.json = o.value(&flag, inline)? == "json",
            "debug" | "systemd-cgroup" => {}
            "criu" | "rootless" => {
                o.value(&flag, inline)?;
            }
            "version" | "v" => {
                println!("berth-runc {} (libcontainer 0.7)", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => bail!("unknown global option --{other}"),
        }
    }
    Ok(o.rest())
}

fn run_command(g: &Global, args: &[String]) -> Result<i32> {
    let (cmd, args) = args.split_first().ok_or_else(|| anyhow!("no command given"))?;
    match cmd.as_str() {
        "create" => create(g, args, false),
        "run" => create(g, args, true),
        "start" => {
            let id = one_id(args)?;
            let mut c = load(g, &id)?;
            c.start().with_context(|| format!("starting container {id}"))?;
            Ok(0)
        }
        "state" => {
            let id = one_id(args)?;
            let c = load(g, &id)?;
            println!("{}", serde_json::to_string_pretty(&c.state)?);
            Ok(0)
        }
        "kill" => kill(g, args),
        "delete" => delete(g, args),
        "exec" => exec::exec(g, args),
        "ps" => {
            let id = one_id(args)?;
            let c = load(g, &id)?;
            let pids = container_pids(&c)?;
            println!("{}", serde_json::to_string(&pids)?);
            Ok(0)
        }
        other => bail!("unknown command {other:?}"),
    }
}

/// Takes the lone container ID of a command without options.
fn one_id(args: &[String]) -> Result<String> {
    match args {
        [id] => Ok(id.clone()),
        _ => bail!("expected exactly one container ID, got {args:?}"),
    }
}

/// Loads a container's state, refreshed against the live process.
fn load(g: &Global, id: &str) -> Result<Container> {
    let dir = g.root.join(id);
    if !dir.join("state.json").exists() {
        bail!("container does not exist: {id}");
    }
    let mut c = Container::load(dir).with_context(|| format!("loading container {id}"))?;
    c.refresh_status().with_context(|| format!("refreshing the status of {id}"))?;
    Ok(c)
}

/// `create` and `run`.
fn create(g: &Global, args: &[String], run: bool) -> Result<i32> {
    let mut o = Opts::new(args);
    let mut bundle = PathBuf::from(".");
    let mut pid_file: Option<PathBuf> = None;
    let mut console: Option<PathBuf> = None;
    let mut detach = !run;
    let mut no_pivot = false;
    let mut preserve_fds = 0i32;
    while let Some((flag, inline)) = o.next_flag() {
        match flag.as_str() {
            "bundle" | "b" => bundle = PathBuf::from(o.value(&flag, inline)?),
            "pid-file" => pid_file = Some(PathBuf::from(o.value(&flag, inline)?)),
            "console-socket" => console = Some(PathBuf::from(o.value(&flag, inline)?)),
            "detach" | "d" => detach = true,
            "no-pivot" => no_pivot = true,
            "no-new-keyring" | "no-subreaper" => {}
            "preserve-fds" => preserve_fds = o.value(&flag, inline)?.parse().context("--preserve-fds")?,
            other => bail!("unknown option --{other}"),
        }
    }
    let id = one_id(o.rest())?;
    let bundle = std::fs::canonicalize(&bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let pid_file = pid_file.map(|p| absolute(&p));
    std::fs::create_dir_all(&g.root).with_context(|| format!("creating {}", g.root.display()))?;
    if !run || !detach {
        // `run` in the foreground waits for the init, which must then stay our child.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    // The seccomp profile compiled once and installed by our executor (see `seccomp`); then
    // libcontainer reads a copy of the spec without it from a private bundle dir.
    let private = g.root.join(".bundles").join(&id);
    let (executor, spec_dir) = match private_spec(&g.root, &bundle, &private) {
        Some(prog) => (exec::RuncLikeExecutor::with_seccomp(prog), private.clone()),
        None => (exec::RuncLikeExecutor::default(), bundle.clone()),
    };
    let built = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_executor(executor)
        .with_root_path(&g.root)?
        .with_pid_file(pid_file)?
        .with_console_socket(console)
        .with_preserved_fds(preserve_fds)
        .validate_id()?
        .as_init(&spec_dir)
        .with_systemd(false)
        .with_detach(detach)
        .with_no_pivot(no_pivot)
        .build();
    if spec_dir != bundle {
        let _ = std::fs::remove_dir_all(&private);
    }
    let mut c = built.map_err(|e| anyhow!("{}", exec::describe(&e)))?;
    if spec_dir != bundle {
        // The state names the real bundle (whose config.json, with the profile, is what
        // `exec` reads for the container's seccomp profile and hooks).
        c.state.bundle = bundle.clone();
        c.save().map_err(|e| anyhow!("{}", exec::describe(&e)))?;
    }
    let pid = c.pid().ok_or_else(|| anyhow!("the container has no init pid"))?;
    // runc brings up the loopback interface of a new network namespace; libcontainer does not.
    if let Err(e) = netns::loopback_up(&bundle, pid.as_raw()) {
        let _ = c.delete(true);
        return Err(e.context("bringing up lo in the container's network namespace"));
    }
    if !run {
        return Ok(0);
    }
    c.start().with_context(|| format!("starting container {id}"))?;
    if detach {
        return Ok(0);
    }
    let code = wait_exit(pid.as_raw());
    let _ = c.delete(true);
    Ok(code)
}

/// When berth-runc installs the spec's seccomp profile itself: writes the spec without it to
/// `private/config.json` (the rootfs path made absolute against the real bundle) and returns
/// the compiled program. None (libcontainer does it all) when the profile is not one we take
/// over or anything fails.
fn private_spec(root: &Path, bundle: &Path, private: &Path) -> Option<seccomp::Program> {
    use libcontainer::oci_spec::runtime::Spec;
    let mut spec = Spec::load(bundle.join("config.json")).ok()?;
    let prog = seccomp::take_over(root, &mut spec).ok()??;
    if let Some(r) = spec.root().clone() {
        let mut r = r;
        if r.path().is_relative() {
            r.set_path(bundle.join(r.path()));
        }
        spec.set_root(Some(r));
    }
    let _ = std::fs::remove_dir_all(private);
    std::fs::create_dir_all(private).ok()?;
    if spec.save(private.join("config.json")).is_err() {
        let _ = std::fs::remove_dir_all(private);
        return None;
    }
    Some(prog)
}

/// Waits for a child and returns its exit code as a shell reports it.
fn wait_exit(pid: i32) -> i32 {
    let mut status = 0;
    loop {
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return 255;
        }
    }
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

fn kill(g: &Global, args: &[String]) -> Result<i32> {
    let mut o = Opts::new(args);
    let mut all = false;
    while let Some((flag, _)) = o.next_flag() {
        match flag.as_str() {
            "all" | "a" => all = true,
            other => bail!("unknown option --{other}"),
        }
    }
    let (id, sig) = match o.rest() {
        [id] => (id.clone(), "SIGTERM".to_string()),
        [id, sig] => (id.clone(), sig.clone()),
        other => bail!("usage: kill [--all] ID [SIGNAL], got {other:?}"),
    };
    let signal = Signal::try_from(sig.as_str()).map_err(|_| anyhow!("invalid signal {sig:?}"))?;
    let mut c = load(g, &id)?;
    c.kill(signal, all).with_context(|| format!("killing container {id}"))?;
    Ok(0)
}

fn delete(g: &Global, args: &[String]) -> Result<i32> {
    let mut o = Opts::new(args);
    let mut force = false;
    while let Some((flag, _)) = o.next_flag() {
        match flag.as_str() {
            "force" | "f" => force = true,
            other => bail!("unknown option --{other}"),
        }
    }
    let id = one_id(o.rest())?;
    let dir = g.root.join(&id);
    if !dir.join("state.json").exists() {
        if force {
            // Nothing was ever created (or a create died half-way): only the dir is left.
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(0);
        }
        bail!("container does not exist: {id}");
    }
    let mut c = load(g, &id)?;
    if force && c.status() != ContainerStatus::Stopped {
        // runc delete --force kills everything in the container first.
        let _ = c.kill(Signal::try_from("SIGKILL").expect("SIGKILL"), true);
    }
    c.delete(force).with_context(|| format!("deleting container {id}"))?;
    Ok(0)
}

/// The pids in the container's cgroup.
fn container_pids(c: &Container) -> Result<Vec<i32>> {
    let spec = c.spec().context("reading the container's config")?;
    let cg = spec.cgroup_path;
    let cg = cg.to_string_lossy();
    let cg = cg.trim_start_matches('/');
    for base in ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory", "/sys/fs/cgroup"] {
        let p = Path::new(base).join(cg).join("cgroup.procs");
        if let Ok(text) = std::fs::read_to_string(&p) {
            return Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect());
        }
    }
    Ok(c.pid().map(|p| vec![p.as_raw()]).unwrap_or_default())
}
