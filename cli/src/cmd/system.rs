//! `berth system info|df|prune|stop` and `berth version`: the state of the services themselves.

use crate::context::{Context, Target};
use crate::output::{human_size, percent, since_unix, Table};
use anyhow::{Context as _, Result};
use berth_common::probe;
use berth_proto::runtime::v1 as rt;
use berth_proto::store::v1 as st;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::Channel;

/// `berth system ...`
#[derive(clap::Subcommand, Debug)]
pub enum SystemCommand {
    /// Show the endpoints, versions and health of each service (starting the local stack if needed).
    Info {
        /// Output format: "table" (default) or "json".
        #[arg(long, short = 'f', default_value = "table", value_parser = ["table", "json"])]
        format: String,
    },
    /// Show store usage.
    Df,
    /// Remove stopped containers and every blob no image, build-cache entry or lease needs.
    Prune {
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Stop the services of the local stack (they start again on next use).
    Stop,
}

pub async fn run(cmd: SystemCommand, ctx: &Context) -> Result<ExitCode> {
    match cmd {
        SystemCommand::Info { format } => info(ctx, format == "json").await,
        SystemCommand::Df => df(ctx).await,
        SystemCommand::Prune { force, dry_run } => prune(ctx, force, dry_run).await,
        SystemCommand::Stop => stop(ctx).await,
    }
}

/// What `system info` and `version` know about one service.
#[derive(Debug, Serialize)]
struct ServiceReport {
    service: String,
    endpoint: String,
    source: String,
    /// "SERVING", "NOT_SERVING", "UNKNOWN", "DOWN" or "NOT RUNNING".
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at_unix: Option<i64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    details: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log: Option<String>,
}

impl ServiceReport {
    fn new(ctx: &Context, t: &Target) -> Self {
        Self {
            service: t.service.binary().to_string(),
            endpoint: t.endpoint.to_string(),
            source: t.source.to_string(),
            status: "DOWN".into(),
            error: None,
            version: None,
            hostname: None,
            pid: None,
            started_at_unix: None,
            details: BTreeMap::new(),
            log: t.autostarts().then(|| ctx.stack.log(t.service).display().to_string()),
        }
    }

    async fn fill(&mut self, ch: Channel) {
        match probe::health(ch.clone(), "").await {
            Ok(h) => self.status = h.to_string(),
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                return;
            }
        }
        match probe::info(ch).await {
            Ok(i) => {
                self.version = Some(i.version);
                self.hostname = Some(i.hostname);
                self.pid = Some(i.pid);
                self.started_at_unix = Some(i.started_at_unix);
                self.details = i.details.into_iter().collect();
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }

    fn print(&self) {
        println!("{}:", self.service);
        let mut rows: Vec<(String, String)> = vec![
            ("Endpoint".into(), format!("{} ({})", self.endpoint, self.source)),
            ("Status".into(), self.status.clone()),
        ];
        if let Some(e) = &self.error {
            rows.push(("Error".into(), e.clone()));
        }
        if let Some(v) = &self.version {
            rows.push(("Version".into(), v.clone()));
        }
        if let (Some(h), Some(p)) = (&self.hostname, self.pid) {
            rows.push(("Host".into(), h.clone()));
            rows.push(("PID".into(), p.to_string()));
        }
        if let Some(s) = self.started_at_unix.filter(|s| *s > 0) {
            rows.push(("Up".into(), since_unix(s)));
        }
        for (k, v) in &self.details {
            rows.push((k.clone(), v.clone()));
        }
        if let Some(l) = &self.log {
            rows.push(("Log".into(), l.clone()));
        }
        print_rows(&rows);
    }
}

/// Prints " Key:   value" lines aligned like `docker info`, continuation lines indented.
fn print_rows(rows: &[(String, String)]) {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    for (k, v) in rows {
        let mut lines = v.lines();
        println!(" {:<w$} {}", format!("{k}:"), lines.next().unwrap_or(""));
        for l in lines {
            println!(" {:<w$} {l}", "");
        }
    }
}

async fn info(ctx: &Context, json: bool) -> Result<ExitCode> {
    let mut reports = Vec::new();
    for t in ctx.targets() {
        let mut r = ServiceReport::new(ctx, t);
        match ctx.channel(t.service).await {
            Ok(ch) => r.fill(ch).await,
            Err(e) => r.error = Some(format!("{e:#}")),
        }
        reports.push(r);
    }
    if json {
        let v = serde_json::json!({
            "client": {"version": berth_common::VERSION},
            "context": ctx.name,
            "root": ctx.stack.root(),
            "config": ctx.config_path,
            "services": reports,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("Client:");
    let mut rows =
        vec![("Version".to_string(), berth_common::VERSION.to_string()), ("Context".into(), ctx.name.clone())];
    if let Some(p) = &ctx.config_path {
        let exists = if p.exists() { "" } else { " (none)" };
        rows.push(("Config".into(), format!("{}{exists}", p.display())));
    }
    if ctx.targets().iter().any(Target::autostarts) {
        rows.push(("Local stack".into(), ctx.stack.root().display().to_string()));
    }
    print_rows(&rows);
    for r in &reports {
        println!();
        r.print();
    }
    Ok(ExitCode::SUCCESS)
}

/// `berth version`: the client's version and that of each reachable service (never starts the
/// local stack).
pub async fn version(ctx: &Context) -> Result<ExitCode> {
    println!("Client:");
    print_rows(&[
        ("Version".into(), berth_common::VERSION.into()),
        ("OS/Arch".into(), format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH)),
        ("Context".into(), ctx.name.clone()),
    ]);
    for t in ctx.targets() {
        let mut r = ServiceReport::new(ctx, t);
        let ch = if t.autostarts() {
            ctx.stack.probe(t.service).await
        } else {
            berth_common::endpoint::connect(&t.endpoint, t.tls.as_ref()).await.ok()
        };
        println!();
        println!("Server: {}", r.service);
        match ch {
            Some(ch) => {
                r.fill(ch).await;
                let mut rows = vec![("Version".into(), r.version.clone().unwrap_or_else(|| "?".into()))];
                rows.push(("Endpoint".into(), r.endpoint.clone()));
                if let Some(e) = r.error {
                    rows.push(("Error".into(), e));
                }
                print_rows(&rows);
            }
            None => {
                let why = if t.autostarts() { "not running (starts on first use)" } else { "not reachable" };
                print_rows(&[("Endpoint".into(), r.endpoint.clone()), ("Status".into(), why.into())]);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn df(ctx: &Context) -> Result<ExitCode> {
    let store = ctx.store().await?;
    let mut gc = st::gc_client::GcClient::new(store.clone());
    let u = gc.usage(st::UsageRequest {}).await.context("store-svc Gc.Usage")?.into_inner();
    let images = st::images_client::ImagesClient::new(store.clone())
        .list(st::ListImagesRequest { prefix: String::new() })
        .await
        .context("store-svc Images.List")?
        .into_inner()
        .images;
    let cache = st::build_cache_client::BuildCacheClient::new(store.clone())
        .list(st::ListCacheRequest {})
        .await
        .context("store-svc BuildCache.List")?
        .into_inner()
        .entries;
    let image_bytes = referenced_bytes(store.clone(), images.iter().filter_map(|i| i.target.clone())).await;
    let cache_bytes = referenced_bytes(store, cache.iter().filter_map(|c| c.target.clone())).await;

    let blob_bytes = u.blob_bytes.max(0) as u64;
    let reclaimable = u.reclaimable_bytes.max(0) as u64;
    let mut t = Table::new(["TYPE", "TOTAL", "SIZE", "RECLAIMABLE"]);
    t.row(["Images".to_string(), images.len().to_string(), human_size(image_bytes), "-".into()]);
    t.row(["Build Cache".to_string(), cache.len().to_string(), human_size(cache_bytes), "-".into()]);
    t.row([
        "Blobs".to_string(),
        u.blobs.to_string(),
        human_size(blob_bytes),
        format!("{} {}", human_size(reclaimable), percent(reclaimable, blob_bytes)),
    ]);
    t.row(["Ingests".to_string(), u.ingests.to_string(), human_size(u.ingest_bytes.max(0) as u64), "-".into()]);
    print!("{t}");
    if !u.backend.is_empty() {
        println!();
        println!("Storage backend: {}", u.backend);
    }
    Ok(ExitCode::SUCCESS)
}

/// Bytes of the distinct blobs the given descriptors reach in the store: an index's manifests
/// that are present, each manifest with its config and layers. Blobs shared between images count
/// once; documents that are missing or unreadable count only what is known of them.
async fn referenced_bytes(store: Channel, roots: impl Iterator<Item = berth_proto::types::v1::Descriptor>) -> u64 {
    use berth_common::image::{is_index, is_manifest, read_blob, ManifestOrIndex, MAX_DOCUMENT_BYTES};
    use berth_common::Digest;
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let mut queue: Vec<(String, String, i64)> = roots.map(|d| (d.media_type, d.digest, d.size)).collect();
    while let Some((media_type, digest, size)) = queue.pop() {
        if sizes.contains_key(&digest) {
            continue;
        }
        if !(media_type.is_empty() || is_index(&media_type) || is_manifest(&media_type)) {
            // A layer or config (e.g. a build-cache entry's result): counted, not read.
            sizes.insert(digest, size.max(0) as u64);
            continue;
        }
        let Ok(parsed) = digest.parse::<Digest>() else { continue };
        let Ok(data) = read_blob(store.clone(), &parsed, MAX_DOCUMENT_BYTES).await else { continue };
        sizes.insert(digest, size.max(0) as u64);
        match ManifestOrIndex::parse(&media_type, &data) {
            Ok(ManifestOrIndex::Index(i)) => {
                queue.extend(i.manifests.into_iter().map(|d| (d.media_type, d.digest.to_string(), d.size)));
            }
            Ok(ManifestOrIndex::Manifest(m)) => {
                for d in std::iter::once(m.config).chain(m.layers) {
                    sizes.entry(d.digest.to_string()).or_insert(d.size.max(0) as u64);
                }
            }
            Err(_) => {}
        }
    }
    sizes.values().sum()
}

async fn prune(ctx: &Context, force: bool, dry_run: bool) -> Result<ExitCode> {
    if !force && !dry_run {
        println!("WARNING! This will remove:");
        println!("  - all stopped containers");
        println!("  - every blob that no image, build-cache entry or lease refers to");
        println!("  - abandoned uploads (ingests) not protected by a lease");
        println!();
        if !confirm("Are you sure you want to continue? [y/N] ")? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let store = ctx.store().await?;

    if !dry_run {
        match ctx.runtime().await {
            Ok(ch) => {
                let removed = rt::runtime_client::RuntimeClient::new(ch)
                    .prune(rt::PruneRequest {})
                    .await
                    .context("runtime-svc Prune")?
                    .into_inner()
                    .removed;
                if !removed.is_empty() {
                    println!("Deleted Containers:");
                    for id in removed {
                        println!("{id}");
                    }
                    println!();
                }
            }
            Err(e) => eprintln!("warning: stopped containers were not pruned: {e:#}"),
        }
    }

    let r = st::gc_client::GcClient::new(store)
        .collect(st::CollectRequest { dry_run })
        .await
        .context("store-svc Gc.Collect")?
        .into_inner();
    let verb = if dry_run { "Would delete" } else { "Deleted" };
    if !r.removed.is_empty() {
        println!("{verb} blobs:");
        for b in &r.removed {
            println!(
                "{}: {} ({})",
                if dry_run { "would delete" } else { "deleted" },
                b.digest,
                human_size(b.size.max(0) as u64)
            );
        }
        println!();
    }
    if !r.removed_ingests.is_empty() {
        println!("{verb} ingests:");
        for i in &r.removed_ingests {
            println!("{i}");
        }
        println!();
    }
    let freed = human_size(r.bytes_freed.max(0) as u64);
    if dry_run {
        println!("Total reclaimable space: {freed} (dry run: nothing was deleted)");
    } else {
        println!("Total reclaimed space: {freed}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks on stdout, reads a line on stdin; only "y"/"yes" confirm (EOF is a no).
fn confirm(question: &str) -> Result<bool> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

async fn stop(ctx: &Context) -> Result<ExitCode> {
    if !ctx.targets().iter().any(Target::autostarts) {
        anyhow::bail!("context {} uses no local stack; berth only stops the services it started", ctx.name);
    }
    let stopped = ctx.stack.stop(Duration::from_secs(30)).await?;
    if stopped.is_empty() {
        println!("The local stack in {} is not running", ctx.stack.root().display());
    }
    for (svc, pid) in stopped {
        println!("Stopped {svc} (pid {pid})");
    }
    Ok(ExitCode::SUCCESS)
}
