//! The workload executor (runc's checks and wording for a command that cannot run) and the
//! `exec` command (a new process in a running container).

use crate::{absolute, load, wait_exit, Global, Opts};
use anyhow::{anyhow, bail, Context, Result};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the spec's process like runc: looks the command up in the container's `$PATH` (runc's
/// messages: `exec: "x": executable file not found in $PATH`, `…: permission denied`), then
/// execve's it with the spec's environment (already set by libcontainer).
/// With `seccomp`, installs that compiled profile right before the `execve` (see `seccomp`).
#[derive(Clone, Default)]
pub struct RuncLikeExecutor {
    seccomp: Option<std::sync::Arc<crate::seccomp::Program>>,
}

impl RuncLikeExecutor {
    /// An executor that installs `prog` before running the payload.
    pub fn with_seccomp(prog: crate::seccomp::Program) -> Self {
        RuncLikeExecutor { seccomp: Some(std::sync::Arc::new(prog)) }
    }
}

fn args_of(spec: &Spec) -> Option<&Vec<String>> {
    spec.process().as_ref().and_then(|p| p.args().as_ref()).filter(|a| !a.is_empty())
}

/// Resolves `cmd` as runc (Go's exec.LookPath) does, inside the container's filesystem.
fn look_path(cmd: &str, path_var: &str) -> Result<PathBuf, String> {
    let check = |p: &Path| -> Result<(), std::io::Error> {
        let m = std::fs::metadata(p)?;
        if m.is_dir() || m.permissions().mode() & 0o111 == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok(())
    };
    if cmd.contains('/') {
        return match check(Path::new(cmd)) {
            Ok(()) => Ok(PathBuf::from(cmd)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("exec: \"{cmd}\": stat {cmd}: no such file or directory"))
            }
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => Err(format!("exec: \"{cmd}\": permission denied")),
            Err(e) => Err(format!("exec: \"{cmd}\": {e}")),
        };
    }
    let mut denied = false;
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let p = Path::new(dir).join(cmd);
        match check(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => denied = true,
            Err(_) => {}
        }
    }
    if denied {
        Err(format!("exec: \"{cmd}\": permission denied"))
    } else {
        Err(format!("exec: \"{cmd}\": executable file not found in $PATH"))
    }
}

fn path_var(spec: &Spec) -> String {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().as_ref())
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=").map(str::to_string)))
        .unwrap_or_else(|| DEFAULT_PATH.to_string())
}

impl Executor for RuncLikeExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = args_of(spec).ok_or(ExecutorError::InvalidArg)?;
        let path = look_path(&args[0], &path_var(spec)).map_err(ExecutorError::Other)?;
        let prog = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| ExecutorError::InvalidArg)?;
        let argv: Vec<CString> = args.iter().map(|s| CString::new(s.as_bytes()).unwrap_or_default()).collect();
        let envp: Vec<CString> = std::env::vars_os()
            .map(|(k, v)| {
                let mut b = k.as_encoded_bytes().to_vec();
                b.push(b'=');
                b.extend_from_slice(v.as_encoded_bytes());
                CString::new(b).unwrap_or_default()
            })
            .collect();
        if let Some(filter) = &self.seccomp {
            // Set for the container's init already; an exec'd process of a container whose
            // spec sets it gets it too, as runc does.
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            crate::seccomp::install(filter)
                .map_err(|e| ExecutorError::Other(format!("installing the seccomp filter: {e}")))?;
        }
        let err = nix::unistd::execve(&prog, &argv, &envp).unwrap_err();
        let low = err.desc().to_lowercase();
        Err(ExecutorError::Other(format!("exec: \"{}\": {low}", args[0])))
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let args = args_of(spec)
            .ok_or_else(|| ExecutorValidationError::ArgValidationError("args must not be empty".into()))?;
        look_path(&args[0], &path_var(spec)).map_err(ExecutorValidationError::ArgValidationError)?;
        Ok(())
    }
}

/// A libcontainer error with its sources, one line.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        src = s.source();
    }
    msg
}

/// `exec`: runs a process in a running container.
pub fn exec(g: &Global, args: &[String]) -> Result<i32> {
    let mut o = Opts::new(args);
    let mut process: Option<PathBuf> = None;
    let mut detach = false;
    let mut pid_file: Option<PathBuf> = None;
    let mut console: Option<PathBuf> = None;
    let mut cwd: Option<PathBuf> = None;
    let mut env: HashMap<String, String> = HashMap::new();
    let mut user: Option<(u32, Option<u32>)> = None;
    let mut gids: Vec<u32> = Vec::new();
    let mut caps: Vec<String> = Vec::new();
    let mut no_new_privs = false;
    let mut preserve_fds = 0i32;
    while let Some((flag, inline)) = o.next_flag() {
        match flag.as_str() {
            "process" | "p" => process = Some(absolute(Path::new(&o.value(&flag, inline)?))),
            "detach" | "d" => detach = true,
            "pid-file" => pid_file = Some(absolute(Path::new(&o.value(&flag, inline)?))),
            "console-socket" => console = Some(absolute(Path::new(&o.value(&flag, inline)?))),
            "tty" | "t" => {}
            "cwd" => cwd = Some(PathBuf::from(o.value(&flag, inline)?)),
            "env" | "e" => {
                let kv = o.value(&flag, inline)?;
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                env.insert(k.to_string(), v.to_string());
            }
            "user" | "u" => {
                let u = o.value(&flag, inline)?;
                let (uid, gid) = match u.split_once(':') {
                    Some((a, b)) => (a.parse()?, Some(b.parse()?)),
                    None => (u.parse()?, None),
                };
                user = Some((uid, gid));
            }
            "additional-gids" | "g" => gids.push(o.value(&flag, inline)?.parse()?),
            "cap" | "c" => caps.push(o.value(&flag, inline)?),
            "no-new-privs" => no_new_privs = true,
            "preserve-fds" => preserve_fds = o.value(&flag, inline)?.parse()?,
            "process-label" | "apparmor" => {
                o.value(&flag, inline)?;
            }
            "ignore-paused" => {}
            other => bail!("unknown option --{other}"),
        }
    }
    let (id, command) = o.rest().split_first().ok_or_else(|| anyhow!("exec needs a container ID"))?;
    if process.is_none() && command.is_empty() {
        bail!("exec needs a command or --process");
    }
    let c = load(g, id)?;
    if !c.can_exec() {
        bail!("cannot exec in a container that is not running (status {:?})", c.status());
    }
    // libcontainer 0.7 drops the container's seccomp profile from an exec'd process's spec;
    // runc applies it, and so do we (the same cached program as the container's init).
    let executor = Spec::load(c.bundle().join("config.json"))
        .ok()
        .and_then(|mut spec| crate::seccomp::take_over(&g.root, &mut spec).ok().flatten())
        .map(RuncLikeExecutor::with_seccomp)
        .unwrap_or_default();
    if !detach {
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let mut b = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_executor(executor)
        .with_root_path(&g.root)?
        .with_pid_file(pid_file)?
        .with_console_socket(console)
        .with_preserved_fds(preserve_fds)
        .validate_id()?
        .as_tenant()
        .with_detach(detach)
        .with_process(process)
        .with_cwd(cwd)
        .with_env(env)
        .with_container_args(command.to_vec())
        .with_capabilities(caps)
        .with_additional_gids(gids);
    if no_new_privs {
        b = b.with_no_new_privs(true);
    }
    if let Some((uid, gid)) = user {
        b = b.with_user(Some(uid)).with_group(gid);
    }
    let pid = b.build().map_err(|e| anyhow!("{}", describe(&e))).with_context(|| format!("exec in {id}"))?;
    if detach {
        return Ok(0);
    }
    Ok(wait_exit(pid.as_raw()))
}
