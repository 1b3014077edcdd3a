//! Image commands: `berth pull`, `images`, `image inspect`, `tag`, `rmi` (and the same under
//! `berth image ...`), plus [`ensure_image`] for `berth run`.
//!
//! Pulls go through registry-svc (which streams blobs into store-svc); everything else reads
//! and writes image records in store-svc; `rmi` asks runtime-svc which containers use an image.

mod progress;

use crate::context::Context;
use crate::output::{human_size, short_id, time_ago_unix, Table};
use anyhow::{anyhow, bail, Context as _, Result};
use berth_common::image::{self as img, Image, ImageError, Platform};
use berth_common::reference::Reference;
use berth_proto::registry::v1 as rpb;
use berth_proto::store::v1 as spb;
use progress::Renderer;
use std::io::IsTerminal;
use std::process::ExitCode;
use tonic::transport::Channel;

/// Image commands (flattened into the top level, as docker's).
#[derive(clap::Subcommand, Debug)]
pub enum ImageCommand {
    /// Download an image from a registry.
    Pull(PullOpts),
    /// List images.
    Images(ImagesOpts),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag {
        /// Source image (name or ID).
        source: String,
        /// New name.
        target: String,
    },
    /// Remove one or more images.
    Rmi(RmiOpts),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageSub),
}

/// `berth image ...`
#[derive(clap::Subcommand, Debug)]
pub enum ImageSub {
    /// Download an image from a registry.
    Pull(PullOpts),
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesOpts),
    /// Display detailed information on one or more images.
    Inspect {
        /// Format output using a Go template (e.g. '{{.Id}}', '{{json .Config}}').
        #[arg(short, long)]
        format: Option<String>,
        /// Images (names or IDs).
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag {
        /// Source image.
        source: String,
        /// New name.
        target: String,
    },
    /// Remove one or more images.
    #[command(alias = "remove")]
    Rm(RmiOpts),
}

/// `pull` options.
#[derive(clap::Args, Debug)]
pub struct PullOpts {
    /// Set platform if server is multi-platform capable (e.g. linux/arm64).
    #[arg(long)]
    pub platform: Option<String>,
    /// Suppress verbose output.
    #[arg(short, long)]
    pub quiet: bool,
    /// Image reference, e.g. busybox or localhost:5000/app:1.
    pub reference: String,
}

/// `images` options.
#[derive(clap::Args, Debug)]
pub struct ImagesOpts {
    /// Show all images (berth has no intermediate images, so this lists the same).
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: "table" (default) or "json" (one JSON object per line).
    #[arg(long)]
    pub format: Option<String>,
    /// Only images of this repository (e.g. busybox), optionally with :tag.
    pub repository: Option<String>,
}

/// `rmi` options.
#[derive(clap::Args, Debug)]
pub struct RmiOpts {
    /// Force removal: untag even if a container uses the image or several tags refer to it.
    #[arg(short, long)]
    pub force: bool,
    /// Images (names or IDs).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// Runs an image command.
pub async fn run(cmd: ImageCommand, ctx: &Context) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Pull(o) | ImageCommand::Image(ImageSub::Pull(o)) => pull_cmd(ctx, o).await,
        ImageCommand::Images(o) | ImageCommand::Image(ImageSub::Ls(o)) => images(ctx, o).await,
        ImageCommand::Tag { source, target } | ImageCommand::Image(ImageSub::Tag { source, target }) => {
            tag(ctx, &source, &target).await
        }
        ImageCommand::Rmi(o) | ImageCommand::Image(ImageSub::Rm(o)) => rmi(ctx, o).await,
        ImageCommand::Image(ImageSub::Inspect { images, format }) => inspect(ctx, &images, format.as_deref()).await,
    }
}

fn parse_ref(s: &str) -> Result<Reference> {
    Reference::parse(s).map_err(|e| anyhow!("{e}"))
}

fn parse_platform(p: Option<&str>) -> Result<Option<Platform>> {
    p.map(|p| Platform::parse(p).map_err(|e| anyhow!(e))).transpose()
}

/// What a pull did.
#[derive(Debug, Clone)]
#[allow(dead_code)] // read by `berth run` through ensure_image's callers
pub struct Pulled {
    /// The record set, e.g. "docker.io/library/busybox:latest".
    pub name: String,
    /// Digest of the manifest or index.
    pub digest: String,
    /// Image ID (config digest).
    pub image_id: String,
    /// Whether anything changed.
    pub updated: bool,
}

/// Pulls through registry-svc, rendering progress; prints docker's summary lines unless quiet.
pub async fn pull(
    ctx: &Context,
    reference: &str,
    platform: Option<&str>,
    quiet: bool,
    to_stderr: bool,
) -> Result<Pulled> {
    pull_observed(ctx, reference, platform, quiet, to_stderr, &mut |_| {}).await
}

/// [`pull`], handing every progress event to `observe` too (`run` unpacks layers as they land).
pub async fn pull_observed(
    ctx: &Context,
    reference: &str,
    platform: Option<&str>,
    quiet: bool,
    to_stderr: bool,
    observe: &mut (dyn FnMut(&rpb::pull_event::Event) + Send),
) -> Result<Pulled> {
    let r = parse_ref(reference)?;
    let plat = parse_platform(platform)?;
    let tty = if to_stderr { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
    let mut ui = Renderer::new(quiet, tty, to_stderr);
    let typed_tag =
        Reference::parse_normalized(reference).map(|p| p.tag().is_some() || p.digest().is_some()).unwrap_or(true);
    if !typed_tag {
        ui.line("Using default tag: latest");
    }
    ui.line(&format!("{}: Pulling from {}", r.tag().map(str::to_string).unwrap_or_else(|| r.object()), r.path()));
    let mut client = rpb::registry_client::RegistryClient::new(ctx.registry().await?);
    let req = rpb::PullRequest { reference: reference.to_string(), platform: plat.as_ref().map(Platform::to_proto) };
    let mut stream = client.pull(req).await.map_err(status_err)?.into_inner();
    let mut done = None;
    loop {
        match stream.message().await {
            Ok(Some(ev)) => match ev.event.inspect(|e| observe(e)) {
                Some(rpb::pull_event::Event::Started(s)) => ui.started(&s),
                Some(rpb::pull_event::Event::Blob(b)) => ui.blob(&b),
                Some(rpb::pull_event::Event::Done(d)) => done = Some(d),
                None => {}
            },
            Ok(None) => break,
            Err(s) => {
                ui.finish();
                return Err(status_err(s));
            }
        }
    }
    ui.finish();
    let d = done.ok_or_else(|| anyhow!("registry-svc ended the pull without a result"))?;
    let digest = d.target.as_ref().map(|t| t.digest.clone()).unwrap_or_default();
    let updated = d.status == rpb::PullStatus::DownloadedNewer as i32;
    let shown = Reference::parse(&d.name).map(|n| n.familiar()).unwrap_or_else(|_| d.name.clone());
    ui.line(&format!("Digest: {digest}"));
    ui.line(&format!("Status: {} for {shown}", if updated { "Downloaded newer image" } else { "Image is up to date" }));
    Ok(Pulled { name: d.name, digest, image_id: d.image_id, updated })
}

async fn pull_cmd(ctx: &Context, o: PullOpts) -> Result<ExitCode> {
    let p = pull(ctx, &o.reference, o.platform.as_deref(), o.quiet, false).await?;
    println!("{}", p.name);
    Ok(ExitCode::SUCCESS)
}

/// For `berth run`: the image from the store, pulled first (progress on stderr, after docker's
/// "Unable to find image 'x' locally") when the store lacks it.
#[allow(dead_code)] // called by `berth run`
pub async fn ensure_image(ctx: &Context, reference: &str, platform: Option<&str>) -> Result<Image> {
    let store = ctx.store().await?;
    let plat = parse_platform(platform)?;
    match img::load(store.clone(), reference, plat.as_ref()).await {
        Ok(i) => return Ok(i),
        Err(ImageError::NotFound(_))
        | Err(ImageError::MissingBlob { .. })
        | Err(ImageError::NoMatchingPlatform { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let r = parse_ref(reference)?;
    eprintln!("Unable to find image '{}' locally", r.familiar());
    let p = pull(ctx, reference, platform, false, true).await?;
    Ok(img::load(store, &p.name, plat.as_ref()).await?)
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    if s.message().is_empty() {
        anyhow!("registry-svc: {:?}", s.code())
    } else {
        anyhow!("{}", s.message())
    }
}

/// One row of `images`.
struct Row {
    repository: String,
    tag: String,
    digest: String,
    id: String,
    created: i64,
    size: i64,
}

fn created_unix(i: &Image) -> i64 {
    i.config
        .created
        .as_deref()
        .and_then(|c| time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok())
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

fn split_name(name: &str) -> (String, String) {
    match Reference::parse_normalized(name) {
        Ok(r) => (r.familiar_name(), r.tag().unwrap_or("<none>").to_string()),
        Err(_) => (name.to_string(), "<none>".to_string()),
    }
}

async fn load_all(store: &Channel) -> Result<Vec<(img::Record, Option<Image>)>> {
    let recs = img::list_records(store.clone()).await?;
    let mut out = Vec::new();
    for rec in recs {
        let i = img::load_target(store.clone(), Some(rec.name.clone()), rec.target.clone(), None).await.ok();
        out.push((rec, i));
    }
    Ok(out)
}

async fn images(ctx: &Context, o: ImagesOpts) -> Result<ExitCode> {
    let store = ctx.store().await?;
    let filter = o.repository.as_deref().map(parse_ref).transpose()?;
    let filter_has_tag =
        o.repository.as_deref().is_some_and(|r| Reference::parse_normalized(r).is_ok_and(|p| p.tag().is_some()));
    let mut rows = Vec::new();
    for (rec, i) in load_all(&store).await? {
        if let Some(f) = &filter {
            let Ok(n) = Reference::parse_normalized(&rec.name) else { continue };
            if n.name() != f.name() || (filter_has_tag && n.tag() != f.tag()) {
                continue;
            }
        }
        let (repository, tag) = split_name(&rec.name);
        let (id, created, size) = match &i {
            Some(i) => (i.id.to_string(), created_unix(i), i.size()),
            None => ("<incomplete>".to_string(), 0, 0),
        };
        rows.push(Row { repository, tag, digest: rec.target.digest.to_string(), id, created, size });
    }
    rows.sort_by(|a, b| b.created.cmp(&a.created).then(a.repository.cmp(&b.repository)).then(a.tag.cmp(&b.tag)));
    if o.quiet {
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            if seen.insert(r.id.clone()) {
                println!("{}", if o.no_trunc { r.id.clone() } else { short_id(&r.id) });
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let format = o.format.as_deref().map(str::trim).filter(|f| !f.is_empty());
    match format {
        Some(f) if f != "table" => {
            let mut values = vec![];
            for r in &rows {
                let v = serde_json::json!({
                    "Containers": "N/A",
                    "CreatedAt": super::container::created_at(r.created.saturating_mul(1_000_000_000)),
                    "CreatedSince": time_ago_unix(r.created),
                    "Digest": r.digest,
                    "ID": if o.no_trunc { r.id.clone() } else { short_id(&r.id) },
                    "Repository": r.repository,
                    "SharedSize": "N/A",
                    "Size": human_size(r.size.max(0) as u64),
                    "Tag": r.tag,
                    "UniqueSize": "N/A",
                    "VirtualSize": human_size(r.size.max(0) as u64),
                });
                values.push(v);
            }
            print!("{}", crate::gotemplate::render_list(f, &values, IMAGES_HEADERS).map_err(|e| anyhow!("{e}"))?);
        }
        _ => {
            let mut headers = vec!["REPOSITORY", "TAG"];
            if o.digests {
                headers.push("DIGEST");
            }
            headers.extend(["IMAGE ID", "CREATED", "SIZE"]);
            let mut t = Table::new(headers);
            for r in &rows {
                let mut cells = vec![r.repository.clone(), r.tag.clone()];
                if o.digests {
                    cells.push(r.digest.clone());
                }
                cells.push(if o.no_trunc { r.id.clone() } else { short_id(&r.id) });
                cells.push(time_ago_unix(r.created));
                cells.push(human_size(r.size.max(0) as u64));
                t.row(cells);
            }
            print!("{t}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// docker's column headers of `images --format "table …"` fields.
const IMAGES_HEADERS: &[(&str, &str)] = &[
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Containers", "CONTAINERS"),
    ("VirtualSize", "VIRTUAL SIZE"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
];

fn created_text(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Docker's `image inspect` JSON for one image.
fn inspect_json(i: &Image, records: &[(img::Record, Option<Image>)]) -> serde_json::Value {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for (rec, other) in records {
        if other.as_ref().is_some_and(|o| o.id == i.id) {
            if let Ok(r) = Reference::parse_normalized(&rec.name) {
                if r.tag().is_some() {
                    tags.push(r.familiar());
                }
                let d = format!("{}@{}", r.familiar_name(), rec.target.digest);
                if !digests.contains(&d) {
                    digests.push(d);
                }
            }
        }
    }
    let c = &i.config.config;
    let config = serde_json::json!({
        "Hostname": "",
        "Domainname": "",
        "User": c.user.clone().unwrap_or_default(),
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "ExposedPorts": c.exposed_ports,
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": c.env,
        "Cmd": c.cmd,
        "Image": "",
        "Volumes": c.volumes,
        "WorkingDir": c.working_dir.clone().unwrap_or_default(),
        "Entrypoint": c.entrypoint,
        "OnBuild": null,
        "Labels": c.labels,
        "StopSignal": c.stop_signal,
    });
    let mut v = serde_json::json!({
        "Id": i.id.to_string(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": "",
        "Created": i.config.created.clone().unwrap_or_default(),
        "DockerVersion": "",
        "Author": i.config.author.clone().unwrap_or_default(),
        "Config": config,
        "Architecture": i.config.architecture,
        "Os": i.config.os,
        "Size": i.size(),
        "RootFS": {"Type": "layers", "Layers": i.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
        "Metadata": {"LastTagTime": created_text(i.record_created_unix.unwrap_or(0))},
        "Descriptor": {"mediaType": i.target.media_type, "digest": i.target.digest.to_string(), "size": i.target.size},
    });
    if let Some(var) = &i.config.variant {
        v["Variant"] = serde_json::Value::String(var.clone());
    }
    v
}

/// Docker's inspect objects of the images found, and the names not found.
pub(crate) async fn inspect_values(ctx: &Context, names: &[String]) -> Result<(Vec<serde_json::Value>, Vec<String>)> {
    let store = ctx.store().await?;
    let records = load_all(&store).await?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        match img::load(store.clone(), n, None).await {
            Ok(i) => out.push(inspect_json(&i, &records)),
            Err(ImageError::NotFound(_)) | Err(ImageError::Reference(_)) => missing.push(n.clone()),
            Err(e) => return Err(anyhow!("{n}: {e}")),
        }
    }
    Ok((out, missing))
}

async fn inspect(ctx: &Context, names: &[String], format: Option<&str>) -> Result<ExitCode> {
    if let Some(f) = format {
        crate::gotemplate::Template::parse(f).map_err(|e| anyhow!("{e}"))?;
    }
    let (out, missing) = inspect_values(ctx, names).await?;
    crate::cmd::inspect::print_values(&out, format)?;
    if !missing.is_empty() {
        for m in &missing {
            eprintln!("Error: No such image: {m}");
        }
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn tag(ctx: &Context, source: &str, target: &str) -> Result<ExitCode> {
    let store = ctx.store().await?;
    let dst = parse_ref(target)?;
    if dst.digest().is_some() {
        bail!("refusing to create a tag with a digest reference: {target}");
    }
    let i = img::load(store.clone(), source, None).await.map_err(|e| match e {
        ImageError::NotFound(_) => anyhow!("No such image: {source}"),
        other => other.into(),
    })?;
    let mut images = spb::images_client::ImagesClient::new(store);
    let image = spb::Image { name: dst.to_string(), target: Some(i.target.to_proto()), ..Default::default() };
    images.put(spb::PutImageRequest { image: Some(image) }).await.map_err(|s| anyhow!("store-svc: {}", s.message()))?;
    Ok(ExitCode::SUCCESS)
}

/// Containers (short ID, running?) that use an image, from runtime-svc; `None` when it cannot
/// be asked.
async fn containers_using(ctx: &Context, i: &Image, names: &[String]) -> Option<Vec<(String, bool)>> {
    use berth_proto::runtime::v1 as rt;
    let ch = tokio::time::timeout(std::time::Duration::from_secs(20), ctx.runtime()).await.ok()?.ok()?;
    let mut c = rt::runtime_client::RuntimeClient::new(ch);
    let list = c.list(rt::ListRequest { all: true }).await.ok()?.into_inner();
    let digests = [i.target.digest.to_string(), i.manifest_descriptor.digest.to_string(), i.id.to_string()];
    Some(
        list.containers
            .into_iter()
            .filter(|k| {
                digests.contains(&k.image_digest)
                    || Reference::parse(&k.image).is_ok_and(|r| names.contains(&r.to_string()))
                    || k.image == i.id.to_string()
                    || (k.image.len() >= 12 && i.id.hex().starts_with(&k.image))
            })
            .map(|k| (short_id(&k.id), k.status == rt::ContainerStatus::Running as i32))
            .collect(),
    )
}

async fn rmi(ctx: &Context, o: RmiOpts) -> Result<ExitCode> {
    let store = ctx.store().await?;
    let mut images = spb::images_client::ImagesClient::new(store.clone());
    let mut failed = false;
    let mut removed_any = false;
    for name in &o.images {
        match rmi_one(ctx, &store, &mut images, name, o.force).await {
            Ok(lines) => {
                removed_any = true;
                for l in lines {
                    println!("{l}");
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("Error response from daemon: {e:#}");
            }
        }
    }
    if removed_any {
        // Blobs no record needs any more go now, as docker deletes layers at rmi.
        let mut gc = spb::gc_client::GcClient::new(store);
        let _ = gc.collect(spb::CollectRequest { dry_run: false }).await;
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn rmi_one(
    ctx: &Context,
    store: &Channel,
    images: &mut spb::images_client::ImagesClient<Channel>,
    name: &str,
    force: bool,
) -> Result<Vec<String>> {
    let i = img::load(store.clone(), name, None).await.map_err(|e| match e {
        ImageError::NotFound(_) => anyhow!("No such image: {name}"),
        other => other.into(),
    })?;
    let records = load_all(store).await?;
    let same: Vec<String> =
        records.iter().filter(|(_, o)| o.as_ref().is_some_and(|o| o.id == i.id)).map(|(r, _)| r.name.clone()).collect();
    // By name: remove that record. By ID: every record of the image.
    let by_name = i.name.as_deref().filter(|n| Reference::parse(name).is_ok_and(|r| &r.to_string() == n));
    let to_remove: Vec<String> = match by_name {
        Some(n) => vec![n.to_string()],
        None => {
            if same.len() > 1 && !force {
                bail!(
                    "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
                    short_id(&i.id.to_string())
                );
            }
            same.clone()
        }
    };
    let last = to_remove.len() == same.len();
    // As docker: a forced untag of an image a running container uses keeps the image.
    let mut keep = false;
    if last {
        match containers_using(ctx, &i, &same).await {
            Some(users) if !users.is_empty() && !force => bail!(
                "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {}",
                users[0].0,
                short_id(&i.id.to_string())
            ),
            Some(users) => keep = users.iter().any(|(_, running)| *running),
            None if !force => eprintln!(
                "Warning: runtime-svc could not be asked which containers use {name}; removing it anyway"
            ),
            _ => {}
        }
    }
    let mut lines = Vec::new();
    for n in &to_remove {
        images
            .delete(spb::DeleteImageRequest { name: n.clone() })
            .await
            .map_err(|s| anyhow!("store-svc: {}", s.message()))
            .with_context(|| format!("untagging {n}"))?;
        let shown = Reference::parse_normalized(n).map(|r| r.familiar()).unwrap_or_else(|_| n.clone());
        lines.push(format!("Untagged: {shown}"));
    }
    if last && !keep {
        lines.push(format!("Deleted: {}", i.id));
    }
    Ok(lines)
}
