//! `top` and `stats`: a running container's processes (its cgroup's members, shown by the
//! host's `ps` as docker does) and raw counters read from its cgroup — cgroup v1 controller
//! directories (this host's "hybrid" layout) or the unified v2 hierarchy.

use crate::container::{now_nanos, Status};
use crate::error::RuntimeError;
use crate::manager::Manager;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One sample of a container's counters.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Full ID.
    pub id: String,
    /// Name.
    pub name: String,
    /// Running.
    pub running: bool,
    /// Cumulative CPU ns of the cgroup.
    pub cpu_ns: u64,
    /// Cumulative CPU ns of the host.
    pub system_ns: u64,
    /// Online CPUs.
    pub cpus: u32,
    /// Memory in use (minus inactive file cache).
    pub mem: u64,
    /// Memory limit (host memory when unlimited).
    pub mem_limit: u64,
    /// Processes.
    pub pids: u64,
    /// Network bytes in.
    pub net_rx: u64,
    /// Network bytes out.
    pub net_tx: u64,
    /// Block bytes read.
    pub blk_read: u64,
    /// Block bytes written.
    pub blk_write: u64,
    /// When, ns since epoch.
    pub at: i64,
}

/// Where a container's cgroup files are.
pub struct Cgroup {
    /// `None` on v1: one directory per controller.
    v2: Option<PathBuf>,
    rel: String,
}

impl Cgroup {
    /// The cgroup `rel` (e.g. "/berth/<id>") on this host's hierarchy.
    pub fn new(rel: &str) -> Cgroup {
        let base = Path::new("/sys/fs/cgroup");
        let rel = rel.trim_start_matches('/').to_string();
        let v2 = base.join("cgroup.controllers").exists().then(|| base.join(&rel));
        Cgroup { v2, rel }
    }

    fn file(&self, controller: &str, name: &str) -> PathBuf {
        match &self.v2 {
            Some(d) => d.join(name),
            None => Path::new("/sys/fs/cgroup").join(controller).join(&self.rel).join(name),
        }
    }

    fn read(&self, controller: &str, name: &str) -> Option<String> {
        std::fs::read_to_string(self.file(controller, name)).ok()
    }

    fn num(&self, controller: &str, name: &str) -> Option<u64> {
        self.read(controller, name)?.trim().parse().ok()
    }

    /// PIDs of the processes in the cgroup.
    pub fn pids(&self) -> HashSet<u32> {
        let ctrls = ["pids", "memory", "cpu", "devices", "freezer"];
        for c in ctrls {
            if let Some(s) = self.read(c, "cgroup.procs") {
                return s.lines().filter_map(|l| l.trim().parse().ok()).collect();
            }
            if self.v2.is_some() {
                break;
            }
        }
        HashSet::new()
    }

    /// Fills the cgroup counters of a sample.
    pub fn sample(&self, s: &mut Sample) {
        let stat_field = |text: &str, key: &str| -> Option<u64> {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        };
        let host_mem = host_memory();
        if self.v2.is_some() {
            s.cpu_ns = self.read("", "cpu.stat").and_then(|t| stat_field(&t, "usage_usec")).unwrap_or(0) * 1000;
            let cur = self.num("", "memory.current").unwrap_or(0);
            let inactive = self.read("", "memory.stat").and_then(|t| stat_field(&t, "inactive_file")).unwrap_or(0);
            s.mem = cur.saturating_sub(inactive);
            s.mem_limit = self.num("", "memory.max").unwrap_or(host_mem).min(host_mem);
            s.pids = self.num("", "pids.current").unwrap_or(0);
            for l in self.read("", "io.stat").unwrap_or_default().lines() {
                for kv in l.split_whitespace().skip(1) {
                    match kv.split_once('=') {
                        Some(("rbytes", v)) => s.blk_read += v.parse::<u64>().unwrap_or(0),
                        Some(("wbytes", v)) => s.blk_write += v.parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        } else {
            s.cpu_ns = self.num("cpuacct", "cpuacct.usage").unwrap_or(0);
            let cur = self.num("memory", "memory.usage_in_bytes").unwrap_or(0);
            let inactive =
                self.read("memory", "memory.stat").and_then(|t| stat_field(&t, "total_inactive_file")).unwrap_or(0);
            s.mem = cur.saturating_sub(inactive);
            s.mem_limit = self.num("memory", "memory.limit_in_bytes").unwrap_or(host_mem).min(host_mem);
            s.pids = self.num("pids", "pids.current").unwrap_or(0);
            let blk = self
                .read("blkio", "blkio.throttle.io_service_bytes_recursive")
                .or_else(|| self.read("blkio", "blkio.throttle.io_service_bytes"))
                .unwrap_or_default();
            for l in blk.lines() {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() == 3 {
                    match f[1] {
                        "Read" => s.blk_read += f[2].parse::<u64>().unwrap_or(0),
                        "Write" => s.blk_write += f[2].parse::<u64>().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The host's memory (MemTotal), bytes.
pub fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse::<u64>().ok()))
        })
        .map(|kb| kb * 1024)
        .unwrap_or(u64::MAX)
}

/// Host CPU time (all CPUs) from /proc/stat, ns.
pub fn system_cpu_ns() -> u64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            t.lines().next().map(|l| l.split_whitespace().skip(1).take(8).filter_map(|v| v.parse::<u64>().ok()).sum())
        })
        .map(|ticks: u64| ticks * (1_000_000_000 / tick))
        .unwrap_or(0)
}

/// Network bytes (rx, tx) of the network namespace `pid` is in, loopback excluded.
pub fn net_bytes(pid: i32) -> (u64, u64) {
    let Ok(t) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else { return (0, 0) };
    let mut rx = 0;
    let mut tx = 0;
    for l in t.lines().skip(2) {
        let Some((iface, rest)) = l.split_once(':') else { continue };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest.split_whitespace().filter_map(|v| v.parse().ok()).collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

/// Splits `ps` output into titles and the rows whose PID is in `pids` (docker's parsing: the
/// last column takes the rest of the line).
pub fn parse_ps(out: &str, pids: &HashSet<u32>) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut lines = out.lines();
    let titles: Vec<String> = lines.next().unwrap_or("").split_whitespace().map(String::from).collect();
    let pid_col = titles.iter().position(|t| t == "PID").ok_or("Couldn't find PID field in ps output")?;
    let mut rows = vec![];
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < titles.len() {
            continue;
        }
        let Ok(pid) = f[pid_col].parse::<u32>() else { continue };
        if !pids.contains(&pid) {
            continue;
        }
        let mut row: Vec<String> = f[..titles.len() - 1].iter().map(|s| s.to_string()).collect();
        row.push(f[titles.len() - 1..].join(" "));
        rows.push(row);
    }
    Ok((titles, rows))
}

impl Manager {
    /// `top`: the container's processes as `ps ARGS` (default `-ef`) shows them.
    pub async fn top(&self, what: &str, args: &[String]) -> Result<(Vec<String>, Vec<Vec<String>>), RuntimeError> {
        let rec = self.inspect(what)?;
        if rec.status != Status::Running {
            return Err(RuntimeError::State(format!("container {} is not running", rec.id)));
        }
        let pids = Cgroup::new(&self.cgroup_of(&rec.id)).pids();
        let args: Vec<String> = if args.is_empty() { vec!["-ef".into()] } else { args.to_vec() };
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(|e| RuntimeError::Invalid(format!("running ps: {e}")))?;
        if !out.status.success() {
            return Err(RuntimeError::Invalid(format!("ps: {}", String::from_utf8_lossy(&out.stderr).trim())));
        }
        parse_ps(&String::from_utf8_lossy(&out.stdout), &pids).map_err(RuntimeError::Invalid)
    }

    /// `stats`: one sample per container (every running one when `which` is empty).
    pub fn stats(&self, which: &[String]) -> Result<Vec<Sample>, RuntimeError> {
        let recs = if which.is_empty() {
            self.list(false)
        } else {
            which.iter().map(|w| self.inspect(w)).collect::<Result<Vec<_>, _>>()?
        };
        let system = system_cpu_ns();
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u32;
        Ok(recs
            .into_iter()
            .map(|r| {
                let mut s = Sample {
                    id: r.id.clone(),
                    name: r.name.clone(),
                    running: r.status == Status::Running,
                    system_ns: system,
                    cpus,
                    at: now_nanos(),
                    ..Default::default()
                };
                if s.running {
                    Cgroup::new(&self.cgroup_of(&r.id)).sample(&mut s);
                    (s.net_rx, s.net_tx) = net_bytes(r.pid);
                }
                s
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_output_is_filtered_by_pid() {
        let out = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                   root           1       0  0 10:00 ?        00:00:01 /sbin/init splash\n\
                   root        4242    4200  0 10:01 ?        00:00:00 sleep 1000\n";
        let pids = HashSet::from([4242]);
        let (t, rows) = parse_ps(out, &pids).unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(rows, vec![vec!["root", "4242", "4200", "0", "10:01", "?", "00:00:00", "sleep 1000"]]);
        assert!(parse_ps("USER COMMAND\n", &pids).is_err());
    }

    #[test]
    fn host_counters_read() {
        assert!(host_memory() > 0 && host_memory() < u64::MAX);
        assert!(system_cpu_ns() > 0);
        let (_rx, _tx) = net_bytes(std::process::id() as i32);
    }
}
