//! The default seccomp profile: Docker's allowlist, kept as data (`default.json`, embedded) and
//! turned into the OCI spec's `linux.seccomp` section for one host architecture, kernel and
//! capability set. Anything the profile does not allow fails with EPERM; clone3 fails with
//! ENOSYS (libcs then fall back to clone, whose namespace flags seccomp can check).

use serde::Deserialize;
use serde_json::{json, Value};

/// The embedded profile.
const DEFAULT_PROFILE: &str = include_str!("default.json");

#[derive(Deserialize)]
struct Profile {
    default_errno: u32,
    architectures: std::collections::BTreeMap<String, Vec<String>>,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    #[serde(default)]
    #[allow(dead_code)]
    comment: String,
    /// Syscalls allowed by this rule.
    #[serde(default)]
    allow: Vec<String>,
    /// Syscalls refused with `errno` by this rule.
    #[serde(default)]
    names: Vec<String>,
    errno: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    unless_caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    not_arches: Vec<String>,
    min_kernel: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Arg {
    index: u32,
    value: u64,
    value_two: Option<u64>,
    op: String,
}

/// Where the profile is applied.
pub struct Target<'a> {
    /// Rust's name of the architecture (`std::env::consts::ARCH`).
    pub arch: &'a str,
    /// Kernel version (major, minor).
    pub kernel: (u32, u32),
    /// The container's capabilities (`CAP_…`).
    pub caps: &'a [&'a str],
}

impl Target<'_> {
    /// This host, for a container with `caps`.
    pub fn host<'a>(caps: &'a [&'a str]) -> Target<'a> {
        Target { arch: std::env::consts::ARCH, kernel: host_kernel(), caps }
    }
}

/// Go's name of an architecture, as the profile's `arches` use it.
fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The running kernel's (major, minor), (0, 0) when unknown.
pub fn host_kernel() -> (u32, u32) {
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return (0, 0);
    }
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned();
    parse_version(&release)
}

fn parse_version(s: &str) -> (u32, u32) {
    let mut it = s.split(|c: char| !c.is_ascii_digit()).filter(|p| !p.is_empty()).map(|p| p.parse().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// The `linux.seccomp` section of the OCI spec for `t`.
pub fn default_section(t: &Target<'_>) -> Value {
    let profile: Profile = serde_json::from_str(DEFAULT_PROFILE).expect("the embedded seccomp profile is valid");
    let garch = go_arch(t.arch);
    let has = |c: &String| t.caps.iter().any(|x| x == c);
    let mut syscalls = Vec::new();
    for r in &profile.rules {
        if !r.caps.iter().all(has) || r.unless_caps.iter().any(has) {
            continue;
        }
        if !r.arches.is_empty() && !r.arches.iter().any(|a| a == garch) {
            continue;
        }
        if r.not_arches.iter().any(|a| a == garch) {
            continue;
        }
        if let Some(k) = &r.min_kernel {
            if t.kernel < parse_version(k) {
                continue;
            }
        }
        let mut s = match r.errno {
            Some(errno) => json!({"names": r.names, "action": "SCMP_ACT_ERRNO", "errnoRet": errno}),
            None => json!({"names": r.allow, "action": "SCMP_ACT_ALLOW"}),
        };
        if !r.args.is_empty() {
            let args: Vec<Value> = r
                .args
                .iter()
                .map(|a| {
                    let mut v = json!({"index": a.index, "value": a.value, "op": a.op});
                    if let Some(two) = a.value_two {
                        v["valueTwo"] = json!(two);
                    }
                    v
                })
                .collect();
            s["args"] = Value::Array(args);
        }
        syscalls.push(s);
    }
    let arches = profile.architectures.get(t.arch).cloned().unwrap_or_default();
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": profile.default_errno,
        "architectures": arches,
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(section: &Value, name: &str) -> Vec<Value> {
        section["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["names"].as_array().unwrap().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    const DOCKER_CAPS: &[&str] = &["CAP_CHOWN", "CAP_SYS_CHROOT", "CAP_KILL"];

    #[test]
    fn default_caps_get_the_allowlist_without_admin_calls() {
        let s = default_section(&Target { arch: "x86_64", kernel: (6, 1), caps: DOCKER_CAPS });
        assert_eq!(s["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(s["defaultErrnoRet"], 1);
        assert_eq!(s["architectures"][0], "SCMP_ARCH_X86_64");
        assert_eq!(allowed(&s, "read").len(), 1);
        assert_eq!(allowed(&s, "arch_prctl").len(), 1);
        assert_eq!(allowed(&s, "chroot").len(), 1, "CAP_SYS_CHROOT is in the set");
        assert_eq!(allowed(&s, "ptrace").len(), 1, "kernel >= 4.8");
        for denied in ["mount", "unshare", "setns", "bpf", "reboot", "init_module", "keyctl", "settimeofday"] {
            assert!(allowed(&s, denied).is_empty(), "{denied} must not be allowed");
        }
        let clone = allowed(&s, "clone");
        assert_eq!(clone.len(), 1);
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["value"], 0x7E02_0000u64);
        let clone3 = allowed(&s, "clone3");
        assert_eq!(clone3[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(clone3[0]["errnoRet"], libc::ENOSYS);
        assert!(allowed(&s, "s390_runtime_instr").is_empty());
        // The section is what oci-spec accepts.
        let _: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(s).unwrap();
    }

    #[test]
    fn conditions_follow_caps_kernel_and_arch() {
        let s = default_section(&Target { arch: "x86_64", kernel: (4, 4), caps: &["CAP_SYS_ADMIN"] });
        assert!(allowed(&s, "ptrace").is_empty(), "old kernel");
        assert!(allowed(&s, "chroot").is_empty(), "no CAP_SYS_CHROOT");
        assert!(allowed(&s, "mount").len() == 1);
        let clone = allowed(&s, "clone");
        assert!(clone.len() == 1 && clone[0].get("args").is_none(), "CAP_SYS_ADMIN may clone namespaces");
        let s = default_section(&Target { arch: "aarch64", kernel: (6, 1), caps: &[] });
        assert!(allowed(&s, "arch_prctl").is_empty());
        assert_eq!(allowed(&s, "cacheflush").len(), 1);
        assert_eq!(parse_version("6.18.0-rc1"), (6, 18));
    }
}
