//! `berth stats [--no-stream] [-a] [CONTAINER…]`: CPU, memory, network, block I/O and pids of
//! containers, from two samples of their cgroup counters (docker's columns and units).

use super::{client, daemon_err};
use crate::context::Context;
use crate::output::{human_size, short_id, Table};
use anyhow::{anyhow, Result};
use berth_proto::runtime::v1 as pb;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

/// `berth stats` flags.
#[derive(clap::Args, Debug)]
pub struct StatsOpts {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result.
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: "table" (default), "json" (one object per line) or a Go template.
    #[arg(long)]
    pub format: Option<String>,
    /// Containers (default: every running one).
    pub containers: Vec<String>,
}

/// docker's binary sizes ("1.5MiB", "7.629GiB"): four significant digits.
pub fn bytes_size(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut x = b as f64;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    format!("{}{}", sig4(x), units[i])
}

fn sig4(x: f64) -> String {
    if x >= 1000.0 || x == 0.0 {
        return format!("{x:.0}");
    }
    let decimals = (3 - x.log10().floor() as i32).max(0) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// One row of stats, from two samples.
pub struct Row {
    pub id: String,
    pub name: String,
    pub cpu: f64,
    pub mem: u64,
    pub limit: u64,
    pub net: (u64, u64),
    pub blk: (u64, u64),
    pub pids: u64,
}

fn row(prev: Option<&pb::ContainerStats>, s: &pb::ContainerStats) -> Row {
    let cpu = match prev {
        Some(p) if s.running => {
            let cd = s.cpu_usage_nanos.saturating_sub(p.cpu_usage_nanos) as f64;
            let sd = s.system_cpu_nanos.saturating_sub(p.system_cpu_nanos) as f64;
            if sd > 0.0 {
                cd / sd * s.online_cpus.max(1) as f64 * 100.0
            } else {
                0.0
            }
        }
        _ => 0.0,
    };
    Row {
        id: s.id.clone(),
        name: s.name.clone(),
        cpu,
        mem: s.memory_usage_bytes,
        limit: s.memory_limit_bytes,
        net: (s.net_rx_bytes, s.net_tx_bytes),
        blk: (s.block_read_bytes, s.block_write_bytes),
        pids: s.pids,
    }
}

fn mem_pct(r: &Row) -> f64 {
    if r.limit == 0 {
        0.0
    } else {
        r.mem as f64 / r.limit as f64 * 100.0
    }
}

fn render(rows: &[Row], o: &StatsOpts) -> Result<String> {
    let id = |r: &Row| if o.no_trunc { r.id.clone() } else { short_id(&r.id) };
    match o.format.as_deref() {
        None | Some("table") => {
            let mut t = Table::new([
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET I/O",
                "BLOCK I/O",
                "PIDS",
            ]);
            for r in rows {
                t.row([
                    id(r),
                    r.name.clone(),
                    format!("{:.2}%", r.cpu),
                    format!("{} / {}", bytes_size(r.mem), bytes_size(r.limit)),
                    format!("{:.2}%", mem_pct(r)),
                    format!("{} / {}", human_size(r.net.0), human_size(r.net.1)),
                    format!("{} / {}", human_size(r.blk.0), human_size(r.blk.1)),
                    r.pids.to_string(),
                ]);
            }
            Ok(t.to_string())
        }
        Some(f) => {
            let values: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "BlockIO": format!("{} / {}", human_size(r.blk.0), human_size(r.blk.1)),
                        "CPUPerc": format!("{:.2}%", r.cpu),
                        "Container": id(r),
                        "ID": id(r),
                        "MemPerc": format!("{:.2}%", mem_pct(r)),
                        "MemUsage": format!("{} / {}", bytes_size(r.mem), bytes_size(r.limit)),
                        "Name": r.name,
                        "NetIO": format!("{} / {}", human_size(r.net.0), human_size(r.net.1)),
                        "PIDs": r.pids.to_string(),
                    })
                })
                .collect();
            let headers = [
                ("Container", "CONTAINER"),
                ("ID", "CONTAINER ID"),
                ("Name", "NAME"),
                ("CPUPerc", "CPU %"),
                ("MemUsage", "MEM USAGE / LIMIT"),
                ("MemPerc", "MEM %"),
                ("NetIO", "NET I/O"),
                ("BlockIO", "BLOCK I/O"),
                ("PIDs", "PIDS"),
            ];
            crate::gotemplate::render_list(f, &values, &headers).map_err(|e| anyhow!("{e}"))
        }
    }
}

/// Runs `stats`.
pub async fn stats(ctx: &Context, o: StatsOpts) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    let which = if o.containers.is_empty() && o.all {
        rt.list(pb::ListRequest { all: true })
            .await
            .map_err(daemon_err)?
            .into_inner()
            .containers
            .into_iter()
            .map(|c| c.id)
            .collect()
    } else {
        o.containers.clone()
    };
    let sample = |which: Vec<String>| {
        let mut rt = rt.clone();
        async move {
            rt.stats(pb::StatsRequest { containers: which }).await.map(|r| r.into_inner().stats).map_err(daemon_err)
        }
    };
    let mut prev: HashMap<String, pb::ContainerStats> =
        sample(which.clone()).await?.into_iter().map(|s| (s.id.clone(), s)).collect();
    loop {
        tokio::time::sleep(Duration::from_millis(if o.no_stream { 500 } else { 1000 })).await;
        let now = sample(which.clone()).await?;
        let rows: Vec<Row> = now.iter().map(|s| row(prev.get(&s.id), s)).collect();
        let text = render(&rows, &o)?;
        if o.no_stream {
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        print!("\x1b[2J\x1b[H{text}");
        prev = now.into_iter().map(|s| (s.id.clone(), s)).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_like_docker() {
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(1536 * 1024), "1.5MiB");
        assert_eq!(bytes_size(8_192_000_000), "7.629GiB");
        assert_eq!(bytes_size(512 * 1024), "512KiB");
    }
}
