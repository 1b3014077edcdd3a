//! Compiled seccomp filters, cached per profile.
//!
//! libcontainer compiles the spec's seccomp profile with libseccomp inside the container's
//! init, on every start: for Docker's default allowlist that is 10–18 ms of CPU on the critical
//! path of `run`. berth-runc instead compiles a profile once (the same translation as
//! libcontainer's `seccomp::initialize_seccomp`, exported with `seccomp_export_bpf`), keeps the
//! BPF program under `<root>/.seccomp/`, and installs it itself in the container's init right
//! before the `execve` of the payload (see `exec::RuncLikeExecutor`), where runc installs it
//! too when no_new_privs is set. The profile handed to libcontainer is then empty.
//!
//! Only the common case is taken over: `noNewPrivileges` true (so installing the filter needs
//! no capability), no filter flags, no `SCMP_ACT_NOTIFY` rules and no `startContainer` hooks
//! (libcontainer runs those after its seccomp step). Anything else is left to libcontainer.
//!
//! A cache entry holds the exact key material (the profile's JSON, the kernel release, the
//! libseccomp and berth-runc versions) before the program, and is used only when that matches,
//! so a hash collision or a stale entry can never install another profile's filter. Entries are
//! written to a temporary file and renamed into place.

use anyhow::{anyhow, bail, Context, Result};
use libcontainer::oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator, Spec};
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::Path;

/// A BPF program ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
pub type Program = Vec<libc::sock_filter>;

/// When berth-runc can install the spec's profile itself: removes it from `spec` and returns
/// the compiled program (from the cache under `root`, or compiled now and cached).
pub fn take_over(root: &Path, spec: &mut Spec) -> Result<Option<Program>> {
    let Some(linux) = spec.linux() else { return Ok(None) };
    let Some(seccomp) = linux.seccomp().clone() else { return Ok(None) };
    let nnp = spec.process().as_ref().and_then(|p| p.no_new_privileges()).unwrap_or(false);
    let flags = seccomp.flags().as_ref().is_some_and(|f| !f.is_empty());
    let notify = seccomp.default_action() == LinuxSeccompAction::ScmpActNotify
        || seccomp.syscalls().iter().flatten().any(|s| s.action() == LinuxSeccompAction::ScmpActNotify);
    let start_hooks = spec.hooks().as_ref().and_then(|h| h.start_container().as_ref()).is_some_and(|h| !h.is_empty());
    if !nnp || flags || notify || start_hooks {
        return Ok(None);
    }
    let prog = cached(root, &seccomp)?;
    let mut linux = linux.clone();
    linux.set_seccomp(None);
    spec.set_linux(Some(linux));
    Ok(Some(prog))
}

/// Installs `prog` in the calling thread (no_new_privs must be set).
pub fn install(prog: &Program) -> std::io::Result<()> {
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_ptr() as *mut libc::sock_filter };
    // SECCOMP_SET_MODE_FILTER, no flags: what libseccomp's seccomp_load does for this profile.
    let r = unsafe { libc::syscall(libc::SYS_seccomp, 1, 0, &fprog as *const libc::sock_fprog) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn key_material(seccomp: &LinuxSeccomp) -> Result<Vec<u8>> {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    unsafe { libc::uname(&mut uts) };
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) }.to_string_lossy().into_owned();
    let lib = libseccomp::ScmpVersion::current().map(|v| format!("{}.{}.{}", v.major, v.minor, v.micro))?;
    let mut k = serde_json::to_vec(seccomp)?;
    k.extend_from_slice(format!("\0{release}\0libseccomp {lib}\0berth-runc {}", env!("CARGO_PKG_VERSION")).as_bytes());
    Ok(k)
}

/// The program from the cache, or compiled and cached.
fn cached(root: &Path, seccomp: &LinuxSeccomp) -> Result<Program> {
    let key = key_material(seccomp)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let dir = root.join(".seccomp");
    let path = dir.join(format!("{:016x}.bpf", h.finish()));
    if let Ok(data) = std::fs::read(&path) {
        if let Some(prog) = parse_entry(&data, &key) {
            return Ok(prog);
        }
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), h.finish()));
    let result = (|| -> Result<Program> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&(key.len() as u32).to_le_bytes())?;
        f.write_all(&key)?;
        compile(seccomp)?.export_bpf(&f).map_err(|e| anyhow!("exporting the seccomp filter: {e}"))?;
        drop(f);
        let data = std::fs::read(&tmp)?;
        let prog = parse_entry(&data, &key).ok_or_else(|| anyhow!("libseccomp exported an invalid filter"))?;
        std::fs::rename(&tmp, &path)?;
        Ok(prog)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.context("compiling the seccomp profile")
}

/// The program of a cache entry whose key material is exactly `key`.
fn parse_entry(data: &[u8], key: &[u8]) -> Option<Program> {
    let n = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    if data.get(4..4 + n)? != key {
        return None;
    }
    let code = &data[4 + n..];
    // BPF_MAXINSNS is 4096 instructions of 8 bytes.
    if code.is_empty() || !code.len().is_multiple_of(8) || code.len() / 8 > 4096 {
        return None;
    }
    Some(
        code.chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// libcontainer's translation of an OCI profile (libcontainer 0.7 `seccomp::initialize_seccomp`),
/// without the load.
fn compile(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default_action = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default_action)?;
    for &a in seccomp.architectures().iter().flatten() {
        ctx.add_arch(arch(a))?;
    }
    ctx.set_ctl_nnp(false)?;
    for syscall in seccomp.syscalls().iter().flatten() {
        let act = action(syscall.action(), syscall.errno_ret())?;
        if act == default_action {
            continue;
        }
        for name in syscall.names() {
            // A name this libseccomp does not know is a syscall the kernel lacks: skipped, as
            // libcontainer does.
            let Ok(sc) = ScmpSyscall::from_name(name) else { continue };
            match syscall.args() {
                Some(args) => {
                    let cmps: Vec<ScmpArgCompare> = args
                        .iter()
                        .map(|a| ScmpArgCompare::new(a.index() as u32, op(a.op(), a.value_two()), a.value()))
                        .collect();
                    let mut seen = HashSet::new();
                    if args.iter().all(|a| seen.insert(a.index())) {
                        ctx.add_rule_conditional(act, sc, &cmps)?;
                    } else {
                        for c in &cmps {
                            ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))?;
                        }
                    }
                }
                None => {
                    ctx.add_rule(act, sc)?;
                }
            }
        }
    }
    Ok(ctx)
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction> {
    let errno = errno.map(|e| e as i32).unwrap_or(libc::EPERM);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => ScmpAction::KillThread,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(errno),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(errno.try_into().context("trace errno")?),
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActNotify => bail!("SCMP_ACT_NOTIFY is left to libcontainer"),
    })
}

fn op(o: LinuxSeccompOperator, datum_b: Option<u64>) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(datum_b.unwrap_or(0)),
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        Arch::ScmpArchParisc => ScmpArch::Parisc,
        Arch::ScmpArchParisc64 => ScmpArch::Parisc64,
        Arch::ScmpArchLoongarch64 => ScmpArch::Loongarch64,
        Arch::ScmpArchM68k => ScmpArch::M68k,
        Arch::ScmpArchSh => ScmpArch::Sh,
        Arch::ScmpArchSheb => ScmpArch::Sheb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(profile: serde_json::Value, nnp: bool) -> Spec {
        let v = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}, "noNewPrivileges": nnp},
            "root": {"path": "rootfs"},
            "linux": {"seccomp": profile},
        });
        serde_json::from_value(v).unwrap()
    }

    fn profile() -> serde_json::Value {
        serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["read", "write", "exit_group", "no_such_syscall_xyz"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]}
            ]
        })
    }

    #[test]
    fn compiles_once_and_reuses_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(profile(), true);
        let p1 = take_over(dir.path(), &mut spec).unwrap().expect("taken over");
        assert!(spec.linux().as_ref().unwrap().seccomp().is_none(), "libcontainer no longer sees the profile");
        let entries: Vec<_> = std::fs::read_dir(dir.path().join(".seccomp")).unwrap().flatten().collect();
        assert_eq!(entries.len(), 1, "one cache entry, no temporary file left");
        let mut spec = spec_with(profile(), true);
        let p2 = take_over(dir.path(), &mut spec).unwrap().expect("taken over");
        assert_eq!(p1.len(), p2.len());
        assert!(p1.iter().zip(&p2).all(|(a, b)| a.code == b.code && a.jt == b.jt && a.jf == b.jf && a.k == b.k));
    }

    #[test]
    fn a_tampered_key_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(profile(), true);
        take_over(dir.path(), &mut spec).unwrap();
        let e = std::fs::read_dir(dir.path().join(".seccomp")).unwrap().flatten().next().unwrap().path();
        let mut data = std::fs::read(&e).unwrap();
        data[10] ^= 0xff;
        std::fs::write(&e, &data).unwrap();
        let seccomp = spec_with(profile(), true).linux().as_ref().unwrap().seccomp().clone().unwrap();
        assert!(parse_entry(&data, &key_material(&seccomp).unwrap()).is_none());
        // And take_over recompiles a good entry in its place.
        let mut spec = spec_with(profile(), true);
        assert!(take_over(dir.path(), &mut spec).unwrap().is_some());
        assert!(parse_entry(&std::fs::read(&e).unwrap(), &key_material(&seccomp).unwrap()).is_some());
    }

    #[test]
    fn without_no_new_privs_libcontainer_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec_with(profile(), false);
        assert!(take_over(dir.path(), &mut spec).unwrap().is_none());
        assert!(spec.linux().as_ref().unwrap().seccomp().is_some());
    }

    #[test]
    fn the_filter_is_enforced() {
        // In a forked child: install a filter that denies getppid with EPERM... via the cached
        // program, then check the syscall fails while an allowed one works.
        let dir = tempfile::tempdir().unwrap();
        let p = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        let mut spec = spec_with(p, true);
        let prog = take_over(dir.path(), &mut spec).unwrap().unwrap();
        match unsafe { libc::fork() } {
            0 => {
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = if install(&prog).is_err() {
                    2
                } else if unsafe { libc::syscall(libc::SYS_getppid) } != -1 {
                    3
                } else if std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
                    4
                } else if unsafe { libc::getpid() } <= 0 {
                    5
                } else {
                    0
                };
                unsafe { libc::_exit(code) };
            }
            pid => {
                let mut st = 0;
                unsafe { libc::waitpid(pid, &mut st, 0) };
                assert!(libc::WIFEXITED(st), "the child exited");
                assert_eq!(libc::WEXITSTATUS(st), 0, "getppid denied in the child (2: install failed, 3: allowed)");
            }
        }
    }
}
