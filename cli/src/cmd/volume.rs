//! `berth volume create|ls|inspect|rm|prune`: local volumes kept by runtime-svc.

use super::container::{client, daemon_err};
use crate::context::Context;
use crate::output::{human_size, Table};
use anyhow::{anyhow, Result};
use berth_proto::runtime::v1 as pb;
use serde_json::{json, Value};
use std::process::ExitCode;

/// `berth volume ...`
#[derive(clap::Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// Volume driver (only "local").
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Set metadata for a volume (KEY=VALUE).
        #[arg(long = "label")]
        label: Vec<String>,
        /// Name (random when omitted).
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only display volume names.
        #[arg(short, long)]
        quiet: bool,
        /// Format output: "table", "json" or a Go template.
        #[arg(long)]
        format: Option<String>,
    },
    /// Display detailed information on one or more volumes.
    Inspect {
        /// Format output using a Go template.
        #[arg(short, long)]
        format: Option<String>,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove one or more volumes (refused while a container uses them).
    #[command(alias = "remove")]
    Rm {
        /// Accepted for docker compatibility.
        #[arg(short, long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused volumes with -a).
    Prune {
        /// Remove all unused volumes, not just anonymous ones.
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

fn volume_json(v: &pb::Volume) -> Value {
    json!({
        "CreatedAt": crate::cmd::inspect::rfc3339_nanos(v.created_at_unix_nanos - v.created_at_unix_nanos % 1_000_000_000),
        "Driver": v.driver,
        "Labels": if v.labels.is_empty() { Value::Null } else { json!(v.labels) },
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": null,
        "Scope": "local",
    })
}

/// Runs a volume command.
pub async fn run(cmd: VolumeCommand, ctx: &Context) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    match cmd {
        VolumeCommand::Create { driver, label, name } => {
            if driver != "local" {
                return Err(anyhow!("Error response from daemon: plugin \"{driver}\" not found"));
            }
            let labels = label
                .iter()
                .map(|l| {
                    let (k, v) = l.split_once('=').unwrap_or((l, ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            let r = rt
                .create_volume(pb::CreateVolumeRequest { name: name.unwrap_or_default(), labels })
                .await
                .map_err(daemon_err)?;
            println!("{}", r.into_inner().volume.unwrap_or_default().name);
        }
        VolumeCommand::Ls { quiet, format } => {
            let vols = rt.list_volumes(pb::ListVolumesRequest {}).await.map_err(daemon_err)?.into_inner().volumes;
            if quiet {
                for v in &vols {
                    println!("{}", v.name);
                }
                return Ok(ExitCode::SUCCESS);
            }
            match format.as_deref() {
                None | Some("table") => {
                    let mut t = Table::new(["DRIVER", "VOLUME NAME"]);
                    for v in &vols {
                        t.row([v.driver.clone(), v.name.clone()]);
                    }
                    print!("{t}");
                }
                Some("json") => {
                    for v in &vols {
                        let o = json!({
                            "Driver": v.driver, "Labels": "", "Links": "N/A", "Mountpoint": v.mountpoint,
                            "Name": v.name, "Scope": "local", "Size": "N/A", "Availability": "N/A", "Group": "N/A",
                        });
                        println!("{o}");
                    }
                }
                Some(f) => {
                    let values: Vec<Value> = vols.iter().map(volume_json).collect();
                    let headers = [("Name", "VOLUME NAME"), ("Driver", "DRIVER"), ("Mountpoint", "MOUNTPOINT")];
                    print!("{}", crate::gotemplate::render_list(f, &values, &headers).map_err(|e| anyhow!("{e}"))?);
                }
            }
        }
        VolumeCommand::Inspect { format, names } => {
            let mut values = vec![];
            let mut missing = vec![];
            for n in &names {
                match rt.inspect_volume(pb::InspectVolumeRequest { name: n.clone() }).await {
                    Ok(r) => values.push(volume_json(&r.into_inner().volume.unwrap_or_default())),
                    Err(e) if e.code() == tonic::Code::NotFound => missing.push(e.message().to_string()),
                    Err(e) => return Err(daemon_err(e)),
                }
            }
            crate::cmd::inspect::print_values(&values, format.as_deref())?;
            for m in &missing {
                eprintln!("Error response from daemon: {m}");
            }
            if !missing.is_empty() {
                return Ok(ExitCode::from(1));
            }
        }
        VolumeCommand::Rm { force: _, names } => {
            let mut ok = true;
            for n in names {
                match rt.remove_volume(pb::RemoveVolumeRequest { name: n.clone(), force: false }).await {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error response from daemon: {}", e.message());
                        ok = false;
                    }
                }
            }
            if !ok {
                return Ok(ExitCode::from(1));
            }
        }
        VolumeCommand::Prune { all, force } => {
            if !force {
                eprint!(
                    "WARNING! This will remove {} local volumes not used by at least one container.\nAre you sure you want to continue? [y/N] ",
                    if all { "all" } else { "anonymous" }
                );
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                if !matches!(line.trim(), "y" | "Y" | "yes") {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let r = rt.prune_volumes(pb::PruneVolumesRequest { all }).await.map_err(daemon_err)?.into_inner();
            if !r.removed.is_empty() {
                println!("Deleted Volumes:");
                for n in &r.removed {
                    println!("{n}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(r.reclaimed_bytes));
        }
    }
    Ok(ExitCode::SUCCESS)
}
