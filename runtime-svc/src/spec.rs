//! The OCI runtime bundle's `config.json` for one container, made with oci-spec from the
//! merged container config: Docker's defaults for isolation (namespaces, capabilities, masked
//! and read-only /proc paths, no_new_privs, Docker's seccomp allowlist) plus the user's limits.

use crate::container::{HostSettings, RunSettings};
use oci_spec::runtime::Spec;
use serde_json::json;
use std::path::Path;

/// Docker's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// /proc and /sys paths hidden from the container (Docker's list).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// /proc paths mounted read-only (Docker's list).
pub const READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Everything the spec needs that is not in the container's settings.
pub struct SpecInput<'a> {
    /// The mounted root filesystem.
    pub rootfs: &'a Path,
    /// Container ID.
    pub id: &'a str,
    /// The container's argv (entrypoint + cmd), non-empty.
    pub args: &'a [String],
    /// Resolved user.
    pub uid: u32,
    /// Resolved primary group.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// cgroups path, e.g. "/berth/<id>".
    pub cgroups_path: &'a str,
    /// Files bind-mounted at /etc/hostname and /etc/hosts.
    pub hostname_file: &'a Path,
    /// See above.
    pub hosts_file: &'a Path,
    /// The container's network: a new empty namespace, a namespace to join, or the host's.
    pub network: &'a crate::network::SpecNet,
    /// File bind-mounted at /etc/resolv.conf.
    pub resolv_file: &'a Path,
    /// RLIMIT_NOFILE to give the container (never above the host's hard limit).
    pub nofile: u64,
}

/// Builds the runtime spec.
pub fn build(run: &RunSettings, host: &HostSettings, inp: &SpecInput<'_>) -> Result<Spec, String> {
    let hostname = if run.hostname.is_empty() { inp.id[..12].to_string() } else { run.hostname.clone() };
    let mut env = run.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        env.insert(1.min(env.len()), format!("HOSTNAME={hostname}"));
    }
    if run.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    let cwd = if run.working_dir.is_empty() { "/".to_string() } else { run.working_dir.clone() };
    let caps = DEFAULT_CAPS.to_vec();

    let mut resources = json!({
        "devices": [{"allow": false, "access": "rwm"}],
    });
    if host.memory_bytes > 0 {
        resources["memory"] = json!({"limit": host.memory_bytes});
    }
    if host.nano_cpus > 0 {
        let period: u64 = 100_000;
        let quota = (host.nano_cpus as u128 * period as u128 / 1_000_000_000u128).max(1000) as i64;
        resources["cpu"] = json!({"quota": quota, "period": period});
    }
    if host.pids_limit > 0 {
        resources["pids"] = json!({"limit": host.pids_limit});
    }
    let seccomp = crate::seccomp::default_section(&crate::seccomp::Target::host(&caps));
    let mut namespaces = vec![json!({"type": "pid"})];
    match inp.network {
        crate::network::SpecNet::Empty => namespaces.push(json!({"type": "network"})),
        crate::network::SpecNet::Path(p) => namespaces.push(json!({"type": "network", "path": p})),
        crate::network::SpecNet::Host => {}
    }
    for t in ["ipc", "uts", "mount", "cgroup"] {
        namespaces.push(json!({ "type": t }));
    }
    let spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": run.tty,
            "user": {"uid": inp.uid, "gid": inp.gid, "additionalGids": inp.additional_gids},
            "args": inp.args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": inp.nofile, "soft": inp.nofile}],
            "noNewPrivileges": true,
        },
        "root": {"path": inp.rootfs, "readonly": false},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/etc/hostname", "type": "bind", "source": inp.hostname_file, "options": ["rbind", "rprivate"]},
            {"destination": "/etc/hosts", "type": "bind", "source": inp.hosts_file, "options": ["rbind", "rprivate"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": inp.resolv_file, "options": ["rbind", "rprivate"]},
        ],
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": inp.cgroups_path,
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp,
        },
    });
    let spec: Spec = serde_json::from_value(spec).map_err(|e| format!("building the runtime spec: {e}"))?;
    Ok(spec)
}

/// Serializes the spec as the bundle's config.json.
pub fn to_json(spec: &Spec) -> Result<Vec<u8>, String> {
    serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())
}

/// Resolves docker's `-u` forms ("", "name", "uid", "name:group", "uid:gid") against the
/// container's /etc/passwd and /etc/group text. Returns (uid, gid, supplementary gids).
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<(u32, u32, Vec<u32>), String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let users: Vec<Vec<&str>> =
        passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4).collect();
    let groups: Vec<Vec<&str>> =
        group.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 3).collect();
    let (uid, name, mut gid) = if u.is_empty() {
        (0, "root".to_string(), 0)
    } else if let Ok(n) = u.parse::<u32>() {
        match users.iter().find(|f| f[2] == u) {
            Some(f) => (n, f[0].to_string(), f[3].parse().unwrap_or(n)),
            None => (n, String::new(), 0),
        }
    } else {
        match users.iter().find(|f| f[0] == u) {
            Some(f) => (
                f[2].parse().map_err(|_| format!("bad uid for user {u} in /etc/passwd"))?,
                u.to_string(),
                f[3].parse().unwrap_or(0),
            ),
            None => return Err(format!("unable to find user {u}: no matching entries in passwd file")),
        }
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => match groups.iter().find(|f| f[0] == g) {
                Some(f) => f[2].parse().map_err(|_| format!("bad gid for group {g} in /etc/group"))?,
                None => return Err(format!("unable to find group {g}: no matching entries in group file")),
            },
        };
    }
    let mut extra = Vec::new();
    if !name.is_empty() {
        for f in &groups {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(n) = f[2].parse::<u32>() {
                    if n != gid && !extra.contains(&n) {
                        extra.push(n);
                    }
                }
            }
        }
    }
    Ok((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/false\nnobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nstaff:x:50:www-data\nnogroup:x:65534:\n";

    #[test]
    fn users_resolve_like_docker() {
        assert_eq!(resolve_user("", PASSWD, GROUP).unwrap(), (0, 0, vec![]));
        assert_eq!(resolve_user("www-data", PASSWD, GROUP).unwrap(), (33, 33, vec![50]));
        assert_eq!(resolve_user("1234", PASSWD, GROUP).unwrap(), (1234, 0, vec![]));
        assert_eq!(resolve_user("nobody:nogroup", PASSWD, GROUP).unwrap(), (65534, 65534, vec![]));
        assert_eq!(resolve_user("33:7", PASSWD, GROUP).unwrap(), (33, 7, vec![50]));
        assert!(resolve_user("ghost", PASSWD, GROUP).unwrap_err().contains("unable to find user ghost"));
    }

    #[test]
    fn spec_has_limits_and_isolation() {
        let run = RunSettings { env: vec!["A=1".into()], ..Default::default() };
        let host = HostSettings {
            memory_bytes: 64 << 20,
            nano_cpus: 500_000_000,
            pids_limit: 50,
            auto_remove: false,
            ..Default::default()
        };
        let id = "a".repeat(64);
        let inp = SpecInput {
            rootfs: Path::new("/r"),
            id: &id,
            args: &["sh".to_string()],
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            cgroups_path: "/berth/x",
            hostname_file: Path::new("/h"),
            hosts_file: Path::new("/hh"),
            network: &crate::network::SpecNet::Empty,
            resolv_file: Path::new("/rc"),
            nofile: 1024,
        };
        let spec = build(&run, &host, &inp).unwrap();
        let v: Value = serde_json::from_slice(&to_json(&spec).unwrap()).unwrap();
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], 50);
        assert_eq!(v["linux"]["namespaces"].as_array().unwrap().len(), 6);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["hostname"], "aaaaaaaaaaaa");
        assert!(v["process"]["env"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().starts_with("PATH=")));
    }
}
